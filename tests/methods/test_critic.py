"""PPO's critic: the clipped value loss's gradient against autograd, padding of smaller critics,
and convergence of V(c) to the exact E_pi[r | c] under a fixed policy."""
from __future__ import annotations

import pytest
import torch

from grpo_core.methods.critic import Critic, train_critic, value_loss_grad
from grpo_core.sampling import generator


@pytest.mark.parametrize("clip", [0.0, 0.05])
def test_value_loss_grad_matches_autograd(clip):
    g = generator(4)
    n_mem, n_ctx, n = 3, 5, 40
    values = torch.randn(n_mem, n_ctx, generator=g, dtype=torch.float64).requires_grad_()
    ctx = torch.randint(0, n_ctx, (n_mem, n), generator=g)
    returns = torch.randn(n_mem, n, generator=g, dtype=torch.float64)
    old = values.detach().gather(1, ctx) + 0.1 * torch.randn(n_mem, n, generator=g, dtype=torch.float64)
    weight = torch.full((n_mem, n), 1.0 / n, dtype=torch.float64)
    coef = torch.tensor([[0.1], [1.0], [0.5]], dtype=torch.float64)
    clip_t = torch.full((n_mem, 1), clip, dtype=torch.float64)
    v = values.gather(1, ctx)
    if clip > 0:  # TRL's formula, written out
        clipped = torch.clamp(v, old - clip, old + clip)
        per = torch.maximum((v - returns) ** 2, (clipped - returns) ** 2)
    else:
        per = (v - returns) ** 2
    ref = (coef.squeeze(1) * 0.5 * (per * weight).sum(1))
    auto, = torch.autograd.grad(ref.sum(), values)
    loss, dvalues, frac = value_loss_grad(values.detach(), ctx, returns, old, weight, coef, clip_t)
    torch.testing.assert_close(loss, ref.detach())
    torch.testing.assert_close(dvalues, auto)
    if clip > 0:
        assert 0 < float(frac.mean()) < 1      # both branches occur in this batch
    else:
        assert float(frac.max()) == 0


def test_smaller_critics_are_padded_without_changing_them(upstream):
    contexts = upstream.problem.contexts
    g = generator(0)
    both = Critic.create(contexts, [8, 16], [1e-2, 1e-2], [0.1, 0.1], [0.2, 0.2], [3, 4])
    solo = Critic.create(contexts, [8], [1e-2], [0.1], [0.2], [3])
    torch.testing.assert_close(both.values()[0], solo.values()[0])
    for _ in range(50):
        ctx = torch.randint(0, 5, (1, 32), generator=g)
        returns = torch.randn(1, 32, generator=g)
        weight = torch.full((1, 32), 1 / 32)
        old_b, old_s = both.values().detach().gather(1, ctx.expand(2, -1)), solo.values().detach().gather(1, ctx)
        both.step(ctx.expand(2, -1), returns.expand(2, -1), old_b, weight.expand(2, -1))
        solo.step(ctx, returns, old_s, weight)
    torch.testing.assert_close(both.values()[0], solo.values()[0], atol=1e-5, rtol=1e-5)
    padded = both.net.layout.views(both.theta)["layer1"][0, :, 8:]
    assert float(padded.abs().max()) == 0       # the padding units never moved


def test_critic_converges_to_the_exact_expected_reward_per_context(upstream):
    """Under the fixed SFT policy and the reward model's scores, V(c) converges to E_pi[r | c]:
    its average over the last iterations is within 0.01 of it in every context (the targets span
    0.4), for each of two seeds, with TRL's value clip on; untrained it is far off."""
    hist, target = train_critic(upstream.problem.contexts, upstream.sft.logp, upstream.rm.scores,
                                iterations=1000, prompts=64, seeds=[0, 1], lr=3e-3)
    assert float(target.max() - target.min()) > 0.3
    assert float((hist[0] - target).abs().max()) > 0.1
    averaged = hist[-300:].mean(0)
    assert float((averaged - target).abs().max()) < 0.01
    assert float((hist[-1] - target).abs().max()) < 0.06
