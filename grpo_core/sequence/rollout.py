"""The sequence engine's rollout: whole responses drawn from the policy, scored by the verifier or
the reward model (with DAPO's soft overlong punishment and, placed there, the summed per-token KL),
and DAPO's dynamic sampling with the one-token engine's rule (sampling.informative_try).

Sampling reads the policy over every response, pi(y | c) (E, C, N), and draws by inverse CDF:
the same distribution as drawing token by token. No gradient flows through the rollout.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..layout import BatchLayout, Schedule
from ..sampling import informative_try
from .config import SeqGRPOConfig
from .losses import KL_CODES, token_kl
from .policy import sample_responses
from .task import Responses


def overlong_penalty(length: torch.Tensor, max_length: int, buffer: int, factor: float) -> torch.Tensor:
    """DAPO's soft overlong punishment (N,): 0 up to L - buffer, then linearly down to -factor at L."""
    if buffer <= 0:
        return torch.zeros_like(length, dtype=torch.get_default_dtype())
    start = max_length - buffer
    return torch.where(length > start, (start - length.to(torch.get_default_dtype())) / buffer * factor, 0.0)


def reward_tables(up, configs: Sequence[SeqGRPOConfig]) -> torch.Tensor:
    """(E, C, N) the reward each member trains on: verifier or reward model, plus overlong penalty."""
    rows = []
    for c in configs:
        if c.reward == "reward_model":
            if up.rm is None:
                raise ValueError("a run with reward='reward_model' needs the reward model (rm_cfg)")
            base = up.rm.scores
        else:
            base = up.task.correct
        rows.append(base + overlong_penalty(up.task.responses.length, up.task.config.max_length,
                                            c.overlong_buffer, c.overlong_factor))
    return torch.stack(rows)


class SeqRewardKL:
    """The summed per-token KL placed in the reward, r <- r - beta sum_t kl_t: beta (E, 1) (0 where
    it is in the loss or off) and each member's estimator k_code (E, 1, 1) (0: exact)."""

    def __init__(self, configs: Sequence[SeqGRPOConfig]):
        self.beta = torch.tensor([c.kl_coef * (c.kl_placement == "reward") for c in configs]).view(-1, 1)
        self.k_code = torch.tensor([KL_CODES[c.kl_estimator] for c in configs]).view(-1, 1, 1)
        self.any = bool((self.beta > 0).any())
        self.exact = bool(((self.k_code == 0) & (self.beta.view(-1, 1, 1) > 0)).any())


def gather_tokens(table: torch.Tensor, index: torch.Tensor, shape) -> torch.Tensor:
    """Entries of a (C, K) or (E, C, K) table at flat indices index (E, S L) -> shape (E, S, L)."""
    if table.dim() == 3:
        return table.flatten(1).gather(1, index).view(shape)
    return table.flatten().gather(0, index.flatten()).view(shape)


def token_index(responses: Responses, ctx: torch.Tensor, resp: torch.Tensor) -> torch.Tensor:
    """Flat index (E, S L) of every sampled token into the (E, C K) tables; padding points at
    entry 0 and is masked wherever it could matter."""
    return (ctx.unsqueeze(-1) * responses.table_size + responses.token_index[resp]).flatten(1)


def row_values(table: torch.Tensor, ref_table: torch.Tensor, vocab: int):
    """Exact KL(pi || pi_ref) and entropy of every next-token distribution (E, C, K / V)."""
    logp = table.unflatten(-1, (-1, vocab))
    ref = ref_table.unflatten(-1, (-1, vocab))
    p = logp.exp()
    return (p * (logp - ref)).sum(-1), -(p * logp).sum(-1)


def at_tokens(rows: torch.Tensor, responses: Responses, ctx, resp, vocab: int) -> torch.Tensor:
    """Per-prefix values rows (E, C, K / V) at the sampled responses' tokens -> (E, S, L)."""
    n_mem, n_ctx, n_rows = rows.shape
    index = ctx.unsqueeze(-1) * n_rows + responses.token_index[resp] // vocab
    return rows.reshape(n_mem, -1).gather(1, index.flatten(1)).view_as(index) * responses.mask[resp]


def sample_groups(layout: BatchLayout, schedule: Schedule, reward_kl: SeqRewardKL, responses: Responses, *,
                  seq_logp, table, ref_table, rewards_cn, prompts, u, vocab: int):
    """Draw and score each member's groups: ctx, resp, rewards (E, S) and generated samples (E,).

    seq_logp (E, C, N) and table (E, C, K) the current policy; prompts (E, P, K) and u (E, P, K, G)
    the iteration's draws for K tries per prompt slot. With dynamic sampling a slot keeps its
    first try whose rewards are not all equal, or its last allowed try."""
    n_mem, p, g, k = layout.n, layout.p_max, layout.g_max, schedule.k_max
    big_l = responses.max_length
    ctx = prompts.unsqueeze(-1).expand(-1, -1, -1, g).flatten(1)        # (E, P K G)
    resp = sample_responses(seq_logp.detach().exp(), ctx, u.flatten(1))
    rewards = rewards_cn.flatten(1).gather(1, ctx * responses.n + resp)
    if reward_kl.any:
        index, shape = token_index(responses, ctx, resp), (n_mem, -1, big_l)
        exact_rows = (at_tokens(row_values(table, ref_table, vocab)[0], responses, ctx, resp, vocab)
                      if reward_kl.exact else None)
        kl = token_kl(gather_tokens(table, index, shape), gather_tokens(ref_table, index, shape),
                      reward_kl.k_code, exact_rows)
        rewards = rewards - reward_kl.beta * (kl * responses.mask[resp]).sum(-1)
    if k == 1:
        return ctx, resp, rewards, layout.n_samples.to(rewards.dtype)
    by_try = rewards.view(n_mem, p, k, g).permute(2, 0, 1, 3)                # (K, E, P, G)
    choice, _ = informative_try(by_try, layout.valid, 0, (schedule.tries - 1).view(-1, 1))
    pick = lambda t: t.view(n_mem, p, k, g).gather(
        2, choice.view(n_mem, p, 1, 1).expand(-1, -1, 1, g)).flatten(1)
    generated = ((choice + 1) * layout.valid.sum(-1)).sum(1).to(rewards.dtype)
    return pick(ctx), pick(resp), pick(rewards), generated
