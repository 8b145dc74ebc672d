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


class _Scorer:
    """Draws tokens from the policy's (E, C, V) table and scores them, for a block of tries."""

    def __init__(self, layout: BatchLayout, reward_kl: RewardKL, logp, probs, ref_logp, rewards_cv):
        self.layout, self.reward_kl, self.probs, self.rewards_cv = layout, reward_kl, probs, rewards_cv
        self.n_mem, self.vocab = logp.shape[0], logp.shape[-1]
        if reward_kl.any:
            log_ratio = (logp - ref_logp).flatten(-2)
            self.log_ratio = log_ratio.expand(self.n_mem, -1) if log_ratio.dim() == 1 else log_ratio
            if reward_kl.exact:
                self.kl_ctx = (probs * (logp - ref_logp)).sum(-1)                # (E, C)

    def tokens(self, ctx, u_k):
        """Tokens (R, P, G) for contexts ctx and uniforms u_k (R, P, G), rows R = k E (try-major).
        A slot's samples share its context, so each slot's distribution is gathered once,
        (R, P, V); only the flat members' rows, whose samples each have their own context,
        gather per sample, (F, S, V)."""
        probs, n_mem, vocab = self.probs, self.n_mem, self.vocab
        cond = (probs if ctx.shape[0] == n_mem else probs.repeat(ctx.shape[0] // n_mem, 1, 1))
        tokens = sample_categorical(cond.gather(1, ctx[..., 0].unsqueeze(-1).expand(-1, -1, vocab)), u_k)
        if self.layout.any_flat:  # rows f: the block's first try (a flat member has one try: k = 0)
            f = self.layout.flat_rows
            ctx_f = ctx[f].flatten(1)                                       # (F, S)
            rows = probs[f].gather(1, ctx_f.unsqueeze(-1).expand(-1, -1, vocab))
            tokens[f] = sample_categorical(rows, u_k[f].flatten(1).unsqueeze(-1)).view_as(ctx[f])
        return tokens

    def rewards(self, index, sample_ctx):
        """Rewards (E, S') at flat indices index (E, S') of samples at contexts sample_ctx (E, S'),
        with the KL placed in the reward subtracted (exact: KL_c of each sample's context)."""
        rewards = self.rewards_cv.gather(1, index)
        if not self.reward_kl.any:
            return rewards
        return self.reward_kl.penalize(rewards, self.log_ratio, index, lambda: self.kl_ctx.gather(1, sample_ctx()))

    def one_try(self, contexts, u):
        """contexts, u (E, P, G) -> index (E, S), rewards (E, P, G)."""
        ctx = contexts.flatten(1)                                            # (E, S)
        index = ctx * self.vocab + self.tokens(contexts, u).flatten(1)       # (E, S)
        return index, self.rewards(index, lambda: ctx).view_as(contexts)

    def tries(self, slot_ctx, u_k):
        """Index and rewards (k, E, P, G) of a block of tries slot_ctx, u_k (k, E, P, G)."""
        kb, n_mem, shape = slot_ctx.shape[0], self.n_mem, slot_ctx.shape
        tokens = self.tokens(slot_ctx.flatten(0, 1), u_k.flatten(0, 1))      # (k E, P, G)
        index = (slot_ctx.flatten(0, 1) * self.vocab + tokens).view(kb, n_mem, -1)
        by_member = index.transpose(0, 1).flatten(1)                         # (E, k S)
        rewards = self.rewards(by_member, lambda: slot_ctx.transpose(0, 1).flatten(1))
        return index.view(shape), rewards.view(n_mem, kb, -1).transpose(0, 1).reshape(shape)


def sample_groups(layout: BatchLayout, schedule: Schedule, reward_kl: RewardKL, *, logp, rewards_cv,
                  ref_logp, contexts, u, probs=None):
    """Draw each member's groups from the policy and score them.

    logp (E, C, V); rewards_cv (E, C V); contexts and u (K, E, P, G) the members' draws for K
    tries per slot (each sample's context, and its uniform). With dynamic sampling (K > 1), a
    slot takes its first try whose rewards are not all equal, or its last allowed try. With the
    KL placed in the reward, r <- r - beta * k(v) (exact: KL_c). probs: logp.exp(), if computed.
    Returns contexts (E, P, G), index (E, S) flat c V + v, rewards (E, P, G), generated (E,).
    """
    scorer = _Scorer(layout, reward_kl, logp, logp.exp() if probs is None else probs, ref_logp, rewards_cv)
    if u.shape[0] == 1:  # one try per slot (no dynamic sampling): no try dimension at all
        index, rewards = scorer.one_try(contexts[0], u[0])
        return contexts[0], index, rewards, layout.n_samples_float
    return _dynamic_sampling(scorer, layout, schedule, contexts, u)


def _dynamic_sampling(scorer: _Scorer, layout: BatchLayout, schedule: Schedule, contexts, u):
    """DAPO: each slot's first try with signal (sampling.informative_try), or its last allowed
    one. Tries are scored a block at a time (the block sized by bytes), and only until every slot
    has chosen, so the temporaries stay bounded whatever K."""
    k_max, n_mem, p_max, g_max = u.shape[:4]
    block = max(1, min(k_max, TRY_BYTES // (n_mem * p_max * g_max * 8)))
    last = (schedule.tries - 1).view(-1, 1)                                 # (E, 1)
    done = ~layout.valid_p                                                  # slots with no samples
    choice = torch.zeros(n_mem, p_max, dtype=torch.long)
    out_ctx = torch.zeros(n_mem, p_max, g_max, dtype=torch.long)
    out_index = torch.zeros(n_mem, p_max, g_max, dtype=torch.long)
    out_rewards = torch.zeros(n_mem, p_max, g_max)
    for k0 in range(0, k_max, block):
        slot_ctx = contexts[k0:k0 + block]
        index, rewards = scorer.tries(slot_ctx, u[k0:k0 + block])
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
