"""Exact expectations under a policy: sums over the V tokens of each context, no sampling.

For a policy pi (C, V), uniform prompts, true reward R (C, V), reward model r (C, V) and a
reference pi_ref:

    true_reward = 1/C sum_c sum_v pi(v|c) R(c, v)
    rm_reward   = 1/C sum_c sum_v pi(v|c) r(c, v)
    kl_ref      = 1/C sum_c sum_v pi(v|c) [log pi(v|c) - log pi_ref(v|c)]      KL(pi || pi_ref)
    kl_true     = 1/C sum_c sum_v R(c, v) [log R(c, v) - log pi(v|c)]          KL(p_true || pi)
    entropy     = -1/C sum_c sum_v pi(v|c) log pi(v|c)
    correct_prob = 1/C sum_c pi(v*_c | c),  v*_c = argmax_v R(c, v)
"""
from __future__ import annotations

import torch

from .problem import Problem


def policy_metrics(logp: torch.Tensor, problem: Problem, rm_table: torch.Tensor | None = None,
                   ref_logp: torch.Tensor | None = None, per_context: bool = False
                   ) -> dict[str, torch.Tensor]:
    """logp (..., C, V) log-probabilities -> {metric: (...)} (or (..., C) with per_context)."""
    probs = logp.exp()
    true = problem.true_reward
    out = {
        "true_reward": (probs * true).sum(-1),
        "kl_true": (torch.xlogy(true, true) - true * logp).sum(-1),
        "entropy": -(probs * logp).sum(-1),
        "correct_prob": probs.gather(-1, problem.correct_token.view(-1, 1).expand(
            *probs.shape[:-1], 1)).squeeze(-1),
    }
    if rm_table is not None:
        out["rm_reward"] = (probs * rm_table).sum(-1)
    if ref_logp is not None:
        out["kl_ref"] = (probs * (logp - ref_logp)).sum(-1)
    if not per_context:
        out = {k: v.mean(-1) for k, v in out.items()}
    return out


def pairwise_accuracy(scores: torch.Tensor, true_reward: torch.Tensor) -> torch.Tensor:
    """Fraction of token pairs (a, b), a != b, in each context that scores (..., C, V) rank as
    the true rewards do: mean over c, a, b of [sign(s_a - s_b) == sign(R_a - R_b)] -> (...)."""
    ds = scores.unsqueeze(-1) - scores.unsqueeze(-2)
    dt = true_reward.unsqueeze(-1) - true_reward.unsqueeze(-2)
    distinct = dt != 0
    agree = (torch.sign(ds) == torch.sign(dt)) & distinct
    return agree.sum((-1, -2, -3)).float() / distinct.sum().float()
