"""Exact metrics (metrics.py) against Monte-Carlo estimates."""
from __future__ import annotations

from tests.helpers import gen

import torch
from grpo_core import (GRPOConfig, policy_metrics, train_grpo)




def monte_carlo_check(logp, problem, rm_table, ref_logp, n=200_000, seed=0):
    """Compare policy_metrics(per_context=True) with sample means of n tokens per context."""
    exact = policy_metrics(logp, problem, rm_table, ref_logp, per_context=True)
    logp64 = logp.double()
    probs = logp64.exp()
    per_token = {  # f(c, v) whose expectation under pi(. | c) each metric is
        "true_reward": problem.true_reward.double(),
        "rm_reward": rm_table.double(),
        "correct_prob": problem.verifiable_reward.double(),
        "entropy": -logp64,
        "kl_ref": logp64 - ref_logp.double(),
    }
    tokens = torch.multinomial(probs, n, replacement=True, generator=gen(seed))     # (C, n)
    for name, f in per_token.items():
        sample_mean = f.gather(1, tokens).mean(1)
        # standard error from the exact variance of f under pi (robust when pi is near-deterministic)
        var = (probs * f.square()).sum(1) - (probs * f).sum(1).square()
        se = (var.clamp_min(0) / n).sqrt()
        err = (sample_mean - exact[name].double()).abs()
        assert (err <= 4 * se + 1e-5).all(), (name, err, se)
    # KL(p_true || pi): sample tokens from the true preferences instead
    true = problem.true_reward.double()
    tokens = torch.multinomial(true, n, replacement=True, generator=gen(seed + 1))
    f = true.log() - logp64
    sample_mean = f.gather(1, tokens).mean(1)
    var = (true * f.square()).sum(1) - (true * f).sum(1).square()
    err = (sample_mean - exact["kl_true"].double()).abs()
    assert (err <= 4 * (var / n).sqrt() + 1e-5).all(), ("kl_true", err)
    # the aggregate is the mean over (uniform) contexts
    overall = policy_metrics(logp, problem, rm_table, ref_logp)
    for name, v in exact.items():
        torch.testing.assert_close(overall[name], v.mean(-1))


def test_exact_metrics_match_monte_carlo_for_sft_policy(upstream):
    monte_carlo_check(upstream.sft.logp, upstream.problem, upstream.rm.scores, upstream.sft.logp)


def test_exact_metrics_match_monte_carlo_for_trained_grpo_policy(upstream):
    (run,) = train_grpo(upstream.problem, upstream.sft, upstream.rm.scores,
                        [GRPOConfig(iterations=100, lr=1e-2, seed=1)])
    assert run.per_context["kl_ref"].mean() > 0.05  # the policy really moved away from SFT
    monte_carlo_check(run.final_logp, upstream.problem, upstream.rm.scores, upstream.sft.logp, seed=5)
