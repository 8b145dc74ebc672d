"""The one-token engine's rollout: each member's draws, its groups sampled from the policy and
scored, DAPO's dynamic sampling, and the KL penalty when it is placed in the reward.

    contexts, u = draw(gens, configs, layout, start, n_ctx, shape)          # once per chunk
    contexts, index, rewards, generated = sample_groups(layout, schedule, reward_kl, logp=logp, ...)

No gradient flows through the rollout: it only reads the policy's (E, C, V) table.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .config import GRPOConfig
from .layout import BatchLayout, Schedule
from .losses import LossTerms, sampled_kl
from .sampling import draw_iterations, informative_try, sample_categorical

TRY_BYTES = 8 * 2**20    # dynamic sampling: bytes of one int64 (E, P, G) tensor per block of tries


def draw(gens, configs: Sequence[GRPOConfig], layout: BatchLayout, start: int, n_ctx: int, shape):
    """Each member's sample contexts and uniforms (T, K, E, P, G), shape = (T, K, E, P, G), for
    the T iterations from `start` (try k of every member contiguous; K - 1 is the most redraws
    dynamic sampling may need); a member draws only up to its own iteration count. A grouped
    member's prompt p fills its slot's G samples; a flat member's prompts fill the samples in
    order. See sampling.draw_iterations: the draws do not depend on T, so neither the batch nor
    the way the trainer is advanced changes a run's randomness."""
    contexts = torch.zeros(shape, dtype=torch.long)                       # (T, K, E, P, G)
    u = torch.zeros(shape)
    for e, (gen, cfg) in enumerate(zip(gens, configs)):
        n = min(shape[0], cfg.iterations - start)
        if n > 0:
            tries = cfg.dynamic_sampling + 1
            picks, draws = draw_iterations(gen, n, cfg.prompts, tries, cfg.group_size, n_ctx)
            if layout.flat_list[e]:    # one try, one response per prompt: prompt p is sample p
                contexts[:n, 0, e].view(n, -1)[:, :cfg.prompts] = picks[:, :, 0]
                u[:n, 0, e].view(n, -1)[:, :cfg.prompts] = draws[:, :, 0, 0]
            else:
                contexts[:n, :tries, e, :cfg.prompts, :cfg.group_size] = picks.transpose(1, 2).unsqueeze(-1)
                u[:n, :tries, e, :cfg.prompts, :cfg.group_size] = draws.transpose(1, 2)
    return contexts, u


class RewardKL:
    """The KL penalty placed in the reward, r <- r - beta k(v) (PPO-RLHF style), per member:
    beta (E, 1) (0 where the KL is in the loss or off) and the estimator k_code (E, 1) (0 exact:
    KL_c itself). It computes only what its members need: the exact KL_c only if a member places
    it there, one sampled estimator when they all share it."""

    def __init__(self, configs: Sequence[GRPOConfig], terms: LossTerms):
        in_reward = [c.kl_placement == "reward" and c.kl_coef > 0 for c in configs]
        self.beta = torch.tensor([c.kl_coef * r for c, r in zip(configs, in_reward)]).view(-1, 1)
        self.k_code = terms.k_code * torch.tensor(in_reward).view(-1, 1)
        codes = {int(k) for k, r in zip(self.k_code.flatten().tolist(), in_reward) if r}
        self.any = bool((self.beta > 0).any())
        self.exact = 0 in codes
        self.single = next(iter(codes)) if len(codes) == 1 and not self.exact else None
        self.members = None if all(in_reward) else torch.tensor(in_reward).view(-1, 1)   # (E, 1)

    def penalize(self, rewards, log_ratio, index, exact_kl):
        """rewards - beta * k at the samples `index` (E, S) or (k E, S) for the members with the
        KL in the reward; exact_kl() gives KL_c at each sample, called only if needed."""
        k_value, _ = sampled_kl(log_ratio.gather(1, index), self.k_code.clamp_min(1), self.single, False)
        if self.exact:
            k_value = torch.where(self.k_code == 0, exact_kl(), k_value)
            return rewards - self.beta * k_value
        if self.members is None:
            return rewards - self.beta * k_value
        # members without the KL in their reward keep it as it is (beta 0, any estimate)
        return torch.where(self.members, rewards - self.beta * k_value, rewards)


def sample_groups(layout: BatchLayout, schedule: Schedule, reward_kl: RewardKL, *, logp, rewards_cv,
                  ref_logp, contexts, u, probs=None):
    """Draw each member's groups from the policy and score them.

    logp (E, C, V); rewards_cv (E, C V); contexts and u (K, E, P, G) the members' draws for K
    tries per slot (each sample's context, and its uniform). With dynamic sampling (K > 1), a
    slot takes its first try whose rewards are not all equal, or its last allowed try; tries are
    scored in blocks of at most TRY_BYTES, and only until every slot has chosen. With the KL
    placed in the reward, r <- r - beta * k(v) (exact: KL_c). probs: logp.exp(), if computed.
    Returns contexts (E, P, G), index (E, S) flat c V + v, rewards (E, P, G), generated (E,).
    """
    n_mem, vocab = logp.shape[0], logp.shape[-1]
    k_max, p_max, g_max = u.shape[0], u.shape[2], u.shape[3]
    if probs is None:
        probs = logp.exp()
    if reward_kl.any:
        log_ratio = (logp - ref_logp).flatten(-2)
        if log_ratio.dim() == 1:
            log_ratio = log_ratio.expand(n_mem, -1)
        if reward_kl.exact:
            kl_ctx = (probs * (logp - ref_logp)).sum(-1)                    # (E, C)

    def draw_tokens(ctx, u_k):
        """Tokens (R, P, G) for contexts ctx and uniforms u_k (R, P, G), rows R = k E (try-major).
        A slot's samples share its context, so each slot's distribution is gathered once,
        (R, P, V); only the flat members' rows, whose samples each have their own context,
        gather per sample, (F, S, V)."""
        cond = (probs if ctx.shape[0] == n_mem else probs.repeat(ctx.shape[0] // n_mem, 1, 1))
        tokens = sample_categorical(cond.gather(1, ctx[..., 0].unsqueeze(-1).expand(-1, -1, vocab)), u_k)
        if layout.any_flat:  # rows f: the block's first try (a flat member has one try: k = 0)
            f = layout.flat_rows
            ctx_f = ctx[f].flatten(1)                                       # (F, S)
            rows = probs[f].gather(1, ctx_f.unsqueeze(-1).expand(-1, -1, vocab))
            tokens[f] = sample_categorical(rows, u_k[f].flatten(1).unsqueeze(-1)).view_as(ctx[f])
        return tokens

    def score(slot_ctx, u_k):
        """Contexts, index and rewards (k, E, P, G) of a block of tries (k, E, P, G)."""
        kb = slot_ctx.shape[0]
        tokens = draw_tokens(slot_ctx.flatten(0, 1), u_k.flatten(0, 1))      # (k E, P, G)
        index = (slot_ctx.flatten(0, 1) * vocab + tokens).view(kb, n_mem, p_max * g_max)
        by_member = index.transpose(0, 1).flatten(1)                         # (E, k S)
        rewards = rewards_cv.gather(1, by_member)
        if reward_kl.any:
            rewards = reward_kl.penalize(rewards, log_ratio, by_member, lambda: kl_ctx.gather(
                1, slot_ctx.transpose(0, 1).flatten(1)))
        rewards = rewards.view(n_mem, kb, -1).transpose(0, 1)
        return index.view(kb, n_mem, p_max, g_max), rewards.reshape(kb, n_mem, p_max, g_max)

    if k_max == 1:  # one try per slot (no dynamic sampling): no try dimension at all
        ctx = contexts[0].flatten(1)                                        # (E, S)
        index = ctx * vocab + draw_tokens(contexts[0], u[0]).flatten(1)     # (E, S)
        rewards = rewards_cv.gather(1, index)
        if reward_kl.any:
            rewards = reward_kl.penalize(rewards, log_ratio, index, lambda: kl_ctx.gather(1, ctx))
        return contexts[0], index, rewards.view(n_mem, p_max, g_max), layout.n_samples_float

    # Tries are scored a block at a time (the block sized by bytes), and only until every slot
    # has chosen, so the temporaries stay bounded whatever K.
    block = max(1, min(k_max, TRY_BYTES // (n_mem * p_max * g_max * 8)))
    last = (schedule.tries - 1).view(-1, 1)                                 # (E, 1)
    done = ~layout.valid_p                                                  # slots with no samples
    choice = torch.zeros(n_mem, p_max, dtype=torch.long)
    out_ctx = torch.zeros(n_mem, p_max, g_max, dtype=torch.long)
    out_index = torch.zeros(n_mem, p_max, g_max, dtype=torch.long)
    out_rewards = torch.zeros(n_mem, p_max, g_max)
    for k0 in range(0, k_max, block):
        k1 = min(k0 + block, k_max)
        slot_ctx = contexts[k0:k1]
        index, rewards = score(slot_ctx, u[k0:k1])
        first, found = informative_try(rewards, layout.valid, k0, last)
        take = (~done & found).unsqueeze(-1)
        pick = lambda t: t.gather(0, first.view(1, n_mem, p_max, 1).expand(1, *t.shape[1:])).squeeze(0)
        out_ctx = torch.where(take, pick(slot_ctx), out_ctx)
        out_index = torch.where(take, pick(index), out_index)
        out_rewards = torch.where(take, pick(rewards), out_rewards)
        choice = torch.where(take.squeeze(-1), k0 + first, choice)
        done = done | take.squeeze(-1)
        if bool(done.all()):
            break
    generated = ((choice + 1) * layout.valid.sum(-1)).sum(1).to(out_rewards.dtype)
    return out_ctx, out_index.flatten(1), out_rewards, generated
