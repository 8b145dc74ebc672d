"""Random draws that belong to one run: explicit generators, inverse-CDF sampling."""
from __future__ import annotations

import torch


def generator(seed: int) -> torch.Generator:
    """A CPU generator owned by one run; the process-wide RNG is never touched."""
    return torch.Generator().manual_seed(int(seed))


def sample_categorical(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draws: probs (..., V), u (..., K) uniform in [0, 1) -> tokens (..., K) int64.

    token = #{v : cdf[v] <= u}, the first v whose cumulative probability exceeds u. Drawing the
    uniforms separately from the distribution makes a run's randomness depend only on its own
    generator, never on what else is computed in the same batch.
    """
    tokens = torch.searchsorted(probs.cumsum(-1), u, right=True)
    return tokens.clamp_max_(probs.shape[-1] - 1)


def draw_iterations(gen: torch.Generator, n_iterations: int, prompts: int, tries: int,
                    group_size: int, n_contexts: int):
    """One run's randomness for n_iterations iterations in one generator call:
    -> prompts (T, P, K) int64 in [0, n_contexts), uniforms (T, P, K, G) for sample_categorical.

    Each iteration consumes P K (1 + G) uniforms in a fixed order (the P K prompt draws, then the
    P K G response draws; prompt = floor(u C)), and a CPU generator's uniforms come out in sequence
    whatever the size of the call, so T iterations drawn at once equal T drawn one by one. How a
    run's iterations are chunked (by memory, by the batch it is in, by live steps) therefore never
    changes its randomness.
    """
    per = prompts * tries
    u = torch.rand(n_iterations, per * (1 + group_size), generator=gen)
    picks = (u[:, :per] * n_contexts).long().clamp_max_(n_contexts - 1)
    return picks.view(n_iterations, prompts, tries), u[:, per:].view(n_iterations, prompts, tries, group_size)


def informative_try(rewards: torch.Tensor, valid: torch.Tensor, k0: int, last: torch.Tensor):
    """DAPO dynamic sampling: which try each prompt slot keeps.

    rewards (k, E, P, G) of tries k0 .. k0 + k - 1 of every slot, valid (E, P, G), last (E, 1)
    each member's last allowed try. A slot keeps its first try whose valid rewards are not all
    equal (a group with signal), or else its last allowed try. Returns (first (E, P): that try's
    index within this block, found (E, P): whether the block holds it). Both engines use it.
    """
    hi = torch.where(valid, rewards, -torch.inf).amax(-1)
    lo = torch.where(valid, rewards, torch.inf).amin(-1)
    k = torch.arange(k0, k0 + rewards.shape[0]).view(-1, 1, 1)
    ok = (k <= last) & ((hi > lo) | (k == last))                            # (k, E, P)
    return ok.int().argmax(0), ok.any(0)
