"""'Which KL does each method really optimize?': each stated fact checked against autograd of the
exact KLs and against Monte Carlo over sampled tokens with the trainer's own estimators."""
from __future__ import annotations

import pytest
import torch

from grpo_core.losses import KL_CODES, sampled_kl
from grpo_core.methods.dpo import dpo_optimum
from grpo_core.methods.kl import (PLACEMENTS, expected_gradient, expected_value, fixed_point,
                                  kl_forward, kl_placement_table, kl_reverse)
from grpo_core.sampling import generator, sample_categorical


def policies(seed, n_ctx=5, vocab=10):
    g = generator(seed)
    logits = torch.randn(n_ctx, vocab, generator=g, dtype=torch.float64)
    ref = torch.log_softmax(torch.randn(n_ctx, vocab, generator=g, dtype=torch.float64), -1)
    return logits, ref


def autograd_of(fn, logits):
    z = logits.clone().requires_grad_()
    grad, = torch.autograd.grad(fn(torch.log_softmax(z, -1)).sum(), z)
    return grad


@pytest.mark.parametrize("seed", [0, 1])
def test_expected_gradients_are_the_stated_kls(seed):
    logits, ref = policies(seed)
    logp = torch.log_softmax(logits, -1)
    forward = autograd_of(lambda lp: kl_forward(lp, ref), logits)
    reverse = autograd_of(lambda lp: kl_reverse(lp, ref), logits)
    assert float((forward - reverse).norm()) > 0.1 * float(forward.norm())  # they do differ here
    torch.testing.assert_close(expected_gradient(logp, ref, "exact_loss"), forward)
    torch.testing.assert_close(expected_gradient(logp, ref, "k2_loss"), forward)
    torch.testing.assert_close(expected_gradient(logp, ref, "k1_reward"), forward)
    torch.testing.assert_close(expected_gradient(logp, ref, "k3_loss"), reverse)
    torch.testing.assert_close(expected_gradient(logp, ref, "k1_loss"), torch.zeros_like(logp))
    # values: k1 and k3 are unbiased for KL(pi || pi_ref); k2 is not
    torch.testing.assert_close(expected_value(logp, ref, "k1_loss"), kl_forward(logp, ref))
    torch.testing.assert_close(expected_value(logp, ref, "k3_loss"), kl_forward(logp, ref))
    assert float((expected_value(logp, ref, "k2_loss") - kl_forward(logp, ref)).abs().max()) > 1e-3
    table = kl_placement_table(logp, ref).set_index("placement")
    assert table.loc["k3_loss", "optimizes"] == "KL(pi_ref || pi)"
    assert table.loc["k1_loss", "optimizes"].startswith("nothing")
    for p in ("exact_loss", "k2_loss", "k1_reward"):
        assert table.loc[p, "optimizes"] == "KL(pi || pi_ref)"
    assert table.loc["k3_loss", "cosine_forward"] < 0.999


@pytest.mark.parametrize("placement", [p for p in PLACEMENTS if p != "exact_loss"])
def test_expected_gradients_match_monte_carlo(placement):
    """Sample y ~ pi, evaluate the trainer's estimator at y and let autograd differentiate the mean
    with the samples held fixed: it converges to the exact expected gradient."""
    logits, ref = policies(3)
    n = 400_000
    logp0 = torch.log_softmax(logits, -1)
    u = torch.rand(logits.shape[0], n, generator=generator(11), dtype=torch.float64)
    tokens = sample_categorical(logp0.exp(), u)                                # (C, n)
    z = logits.clone().requires_grad_()
    logp = torch.log_softmax(z, -1)
    at = logp.gather(1, tokens)
    log_ratio = at - ref.gather(1, tokens)
    if placement == "k1_reward":   # REINFORCE on the penalty: score function times its value
        loss = (log_ratio.detach() * at).mean(1)
    else:
        loss, _ = sampled_kl(log_ratio, torch.tensor(KL_CODES[placement[:2]]))
        loss = loss.mean(1)
    mc, = torch.autograd.grad(loss.sum(), z)
    exact = expected_gradient(logp0, ref, placement)
    scale = float(expected_gradient(logp0, ref, "exact_loss").abs().max())
    assert float((mc - exact).abs().max()) < 0.03 * scale
    # the sampled value's mean, too
    value, _ = sampled_kl(log_ratio.detach(), torch.tensor(KL_CODES[placement[:2]]))
    torch.testing.assert_close(value.mean(1), expected_value(logp0, ref, placement), atol=0.02, rtol=0.02)


def test_fixed_points_of_each_placement():
    """With a reward r and weight beta: the forward-KL placements settle at pi_ref exp(r/beta)/Z;
    k3 in the loss settles elsewhere, where pi (beta - r + E_pi r) = beta pi_ref (reverse KL)."""
    logits, ref = policies(5)
    reward = torch.rand(ref.shape, generator=generator(6), dtype=torch.float64)
    beta = 0.2
    gibbs = dpo_optimum(ref, reward, beta)
    for placement in ("exact_loss", "k2_loss", "k1_reward"):
        torch.testing.assert_close(fixed_point(reward, ref, beta, placement), gibbs,
                                   atol=1e-7, rtol=0)
    k3 = fixed_point(reward, ref, beta, "k3_loss", steps=20000)
    pi, pi_ref = k3.exp(), ref.exp()
    mean_r = (pi * reward).sum(-1, keepdim=True)
    torch.testing.assert_close(pi * (beta - reward + mean_r), beta * pi_ref, atol=1e-8, rtol=0)
    assert float((k3.exp() - gibbs.exp()).abs().max()) > 0.01
    # k1 in the loss is no penalty on average: the policy keeps climbing the reward
    k1 = fixed_point(reward, ref, beta, "k1_loss")
    assert float((k1.exp() * reward).sum(-1).mean()) > float((gibbs.exp() * reward).sum(-1).mean())
