"""The loss (losses.py): the hand-written gradient against autograd for every loss knob, KL estimators, clip counts."""
from __future__ import annotations

from tests.helpers import gen

import dataclasses
import pytest
import torch
from grpo_core import (GRPOConfig)
from grpo_core.losses import LossTerms, grpo_logits_grad, grpo_loss
import math
from grpo_core.losses import sampled_kl
from grpo_core.sampling import generator, sample_categorical




def random_batch(seed, n_mem=3, n_ctx=5, vocab=10, prompts=6, group=8, later_epoch=True):
    """A random GRPO batch in float64, with ratios both inside and outside the clip range."""
    g = gen(seed)
    f64 = torch.float64
    logits = torch.randn(n_mem, n_ctx, vocab, generator=g, dtype=f64) * 2
    ref_logp = torch.log_softmax(torch.randn(n_ctx, vocab, generator=g, dtype=f64), -1)
    ctx = torch.randint(0, n_ctx, (n_mem, prompts), generator=g)
    tokens = torch.randint(0, vocab, (n_mem, prompts, group), generator=g)
    index = (ctx.unsqueeze(-1) * vocab + tokens).flatten(1)
    adv = torch.randn(n_mem, prompts * group, generator=g, dtype=f64)
    adv[:, ::7] = 0.0                                                  # zero-std groups exist
    valid = torch.rand(n_mem, prompts * group, generator=g) < 0.9
    adv = torch.where(valid, adv, 0.0)                                 # as advantages() gives padding
    weight = valid / valid.sum(1, keepdim=True).to(f64)
    ctx_weight = torch.zeros(n_mem, n_ctx, dtype=f64).scatter_add_(
        1, ctx, torch.full((n_mem, prompts), 1 / prompts, dtype=f64))
    clip_eps = torch.tensor([0.2, 0.1, 0.3], dtype=f64).repeat(2)[:n_mem]
    new_logp = torch.log_softmax(logits, -1).flatten(1).gather(1, index)
    if later_epoch:  # ratios spread over [0.5, 1.6]
        ratio = 0.5 + 1.1 * torch.rand(n_mem, prompts * group, generator=g, dtype=f64)
        old_logp = new_logp - ratio.log()
    else:
        old_logp = new_logp.clone()
    return dict(logits=logits, ref_logp=ref_logp, index=index, old_logp=old_logp, adv=adv,
                weight=weight, ctx_weight=ctx_weight, clip_eps=clip_eps)


INFO_KEYS = ("policy_loss", "kl", "kl_estimate", "n_clip_low", "n_clip_high")


def check_batch_covers_clip_cases(b, logp, info):
    ratio = torch.exp(logp.flatten(1).gather(1, b["index"]) - b["old_logp"])
    eps = b["clip_eps"].unsqueeze(1)
    adv = b["adv"]
    assert ((adv > 0) & (ratio > 1 + eps)).any() and ((adv < 0) & (ratio < 1 - eps)).any()
    assert ((adv > 0) & (ratio < 1 - eps)).any() and ((adv < 0) & (ratio > 1 + eps)).any()
    assert (info["n_clip_low"] > 0).all() and (info["n_clip_high"] > 0).all()


@pytest.mark.parametrize("kl", [0.0, 0.05, 2.0])
@pytest.mark.parametrize("later_epoch", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grpo_logits_grad_matches_autograd(seed, later_epoch, kl):
    b = random_batch(seed, later_epoch=later_epoch)
    logits = b.pop("logits").requires_grad_(True)
    kl_coef = torch.full((3,), kl, dtype=torch.float64)
    logp = torch.log_softmax(logits, -1)
    loss, info = grpo_loss(logp, kl_coef=kl_coef, **b)
    (grad,) = torch.autograd.grad(loss.sum(), logits)
    if later_epoch:  # the batch exercises both clip sides, and unclipped samples out of range
        check_batch_covers_clip_cases(b, logp.detach(), info)
    else:
        assert (info["n_clip_low"] == 0).all() and (info["n_clip_high"] == 0).all()

    for use_kl, in_step in ([(True, None), (False, b["weight"] > 0)] if kl == 0 else [(True, b["weight"] > 0)]):
        dlogits, hand = grpo_logits_grad(logp.detach(), kl_coef=kl_coef, first_epoch=not later_epoch,
                                         use_kl=use_kl, in_step=in_step, **b)
        torch.testing.assert_close(dlogits, grad, atol=1e-12, rtol=1e-9)
        for key in INFO_KEYS:
            torch.testing.assert_close(hand[key].double(), info[key].detach().double())
    if not later_epoch:  # at ratio 1 the general (not first-epoch) path gives the same gradient
        dlogits, _ = grpo_logits_grad(logp.detach(), kl_coef=kl_coef, first_epoch=False, **b)
        torch.testing.assert_close(dlogits, grad, atol=1e-12, rtol=1e-9)


LOSS_VARIANTS = {  # each member with its own loss settings
    "sampled_kl": [GRPOConfig(kl_estimator="k1", kl_coef=0.3), GRPOConfig(kl_estimator="k2", kl_coef=1.0),
                   GRPOConfig(kl_estimator="k3", kl_coef=2.0)],
    "mixed_kl": [GRPOConfig(kl_coef=0.5), GRPOConfig(kl_estimator="k3", kl_coef=0.5),
                 GRPOConfig(kl_coef=0.0)],
    "clips": [GRPOConfig(clip_eps=0.2, clip_eps_high=0.28), GRPOConfig(clip_eps=0.1, dual_clip=1.3),
              GRPOConfig(clip_eps=0.3, dual_clip=1.5, clip_eps_high=0.4)],
    "entropy": [GRPOConfig(entropy_coef=0.1), GRPOConfig(entropy_coef=0.0, kl_estimator="k1"),
                GRPOConfig(entropy_coef=0.5, dual_clip=1.2, kl_coef=0.0)],
    # six members, one knob each, in one batch
    "every_knob": [GRPOConfig(clip_eps=0.2, clip_eps_high=0.35), GRPOConfig(dual_clip=1.4, clip_eps=0.1),
                   GRPOConfig(kl_estimator="k1", kl_coef=0.5), GRPOConfig(kl_estimator="k2", kl_coef=1.0),
                   GRPOConfig(kl_estimator="k3", kl_coef=2.0), GRPOConfig(entropy_coef=0.3, kl_coef=0.1)],
}


@pytest.mark.parametrize("later_epoch", [False, True])
@pytest.mark.parametrize("case", list(LOSS_VARIANTS))
def test_grpo_logits_grad_matches_autograd_for_loss_variants(case, later_epoch):
    configs = LOSS_VARIANTS[case]
    terms = LossTerms.from_configs(configs)
    terms = dataclasses.replace(terms, **{  # float64, to compare gradients tightly
        f.name: getattr(terms, f.name).double() for f in dataclasses.fields(terms)
        if getattr(terms, f.name).is_floating_point()})
    b = random_batch(10 + len(case), n_mem=len(configs), later_epoch=later_epoch)
    b["clip_eps"] = terms.clip_low.squeeze(1)
    kl_coef = torch.tensor([c.kl_coef for c in configs], dtype=torch.float64)
    logits = b.pop("logits").requires_grad_(True)
    logp = torch.log_softmax(logits, -1)
    loss, info = grpo_loss(logp, kl_coef=kl_coef, terms=terms, **b)
    (grad,) = torch.autograd.grad(loss.sum(), logits)
    if case == "clips" and later_epoch:  # some samples really hit the dual clip
        ratio = torch.exp(logp.detach().flatten(1).gather(1, b["index"]) - b["old_logp"])
        assert ((b["adv"] < 0) & (ratio > terms.dual_clip) & (terms.dual_clip > 0)).any()
    dlogits, hand = grpo_logits_grad(logp.detach(), kl_coef=kl_coef, first_epoch=not later_epoch,
                                     use_kl=bool((kl_coef > 0).any()), terms=terms, **b)
    torch.testing.assert_close(dlogits, grad, atol=1e-12, rtol=1e-9)
    for key in INFO_KEYS:
        torch.testing.assert_close(hand[key].double(), info[key].detach().double())


F64 = torch.float64


def kl_samples(k: int, n: int = 200_000):
    """Tokens v ~ pi of a fixed pair (pi, pi_ref) over 6 tokens; returns (k-estimates at the
    samples, exact KL(pi || pi_ref), pi, log ratio per token)."""
    g = generator(11)
    logp = torch.log_softmax(torch.randn(6, generator=g, dtype=F64) * 1.5, -1)
    ref_logp = torch.log_softmax(torch.randn(6, generator=g, dtype=F64) * 1.5, -1)
    tokens = sample_categorical(logp.exp(), torch.rand(n, generator=g, dtype=F64))
    log_ratio = (logp - ref_logp)[tokens]
    value, _ = sampled_kl(log_ratio.view(1, -1), torch.tensor([[k]]))
    exact = float((logp.exp() * (logp - ref_logp)).sum())
    return value[0], exact, logp.exp(), logp - ref_logp


@pytest.mark.parametrize("k", [1, 3])
def test_k1_and_k3_are_unbiased_estimates_of_the_kl(k):
    value, exact, _, _ = kl_samples(k)
    se = float(value.std()) / math.sqrt(len(value))
    assert abs(float(value.mean()) - exact) < 4 * se, (float(value.mean()), exact, se)
    if k == 3:
        assert (value >= 0).all()                           # k3 is never negative, unlike k1
    else:
        assert (value < 0).any()


def test_k2_is_biased_and_matches_its_own_expectation():
    value, exact, probs, log_ratio = kl_samples(2)
    se = float(value.std()) / math.sqrt(len(value))
    own = float((probs * 0.5 * log_ratio.square()).sum())   # E_pi[(log ratio)^2 / 2]
    assert abs(float(value.mean()) - own) < 4 * se
    assert abs(float(value.mean()) - exact) > 10 * se, "k2 should be visibly biased for this pair"


@pytest.mark.parametrize("k", [1, 2, 3])
def test_sampled_kl_derivatives_match_autograd(k):
    log_ratio = torch.linspace(-3, 3, 25, dtype=F64).view(1, -1).requires_grad_(True)
    value, deriv = sampled_kl(log_ratio, torch.tensor([[k]]))
    (grad,) = torch.autograd.grad(value.sum(), log_ratio)
    torch.testing.assert_close(deriv, grad)


def constructed_batch(ratios, adv):
    """One member, one context, one sample per token with the given ratios pi/pi_old and advantages."""
    n = len(ratios)
    logp = torch.log_softmax(torch.linspace(0, 1, n, dtype=F64), -1).view(1, 1, n)
    index = torch.arange(n).view(1, n)
    old_logp = logp.flatten(1) - torch.tensor(ratios, dtype=F64).log().view(1, n)
    return dict(logp=logp, ref_logp=logp[0].clone(), index=index, old_logp=old_logp,
                adv=torch.tensor(adv, dtype=F64).view(1, n), weight=torch.full((1, n), 1 / n, dtype=F64),
                ctx_weight=torch.ones(1, 1, dtype=F64))


def terms_of(cfg: GRPOConfig) -> LossTerms:
    terms = LossTerms.from_configs([cfg])
    return dataclasses.replace(terms, **{f.name: getattr(terms, f.name).double()
                                         for f in dataclasses.fields(terms)
                                         if getattr(terms, f.name).is_floating_point()})


# ratio 1.5 with A > 0: clipped high; 0.5 with A < 0: clipped low; 1.1 with A > 0 and 0.9 with
# A < 0 inside the range; 0.5 with A > 0 and 1.5 with A < 0: outside, but min() keeps the
# unclipped (worse) term, so not clipped; 1.5 with A = 0: no signal, never counted.
CLIP_RATIOS = [1.5, 0.5, 1.1, 0.9, 0.5, 1.5, 1.5]


CLIP_ADV = [1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 0.0]


@pytest.mark.parametrize("cfg, low, high", [
    (GRPOConfig(clip_eps=0.2), 1, 1),
    (GRPOConfig(clip_eps=0.2, clip_eps_high=0.6), 1, 0),     # clip-higher lets 1.5 through
    (GRPOConfig(clip_eps=0.6), 0, 0),
])
def test_clip_counts_on_a_constructed_batch(cfg, low, high):
    b = constructed_batch(CLIP_RATIOS, CLIP_ADV)
    terms = terms_of(cfg)
    zeros = torch.zeros(1, dtype=F64)
    _, info = grpo_loss(clip_eps=zeros, kl_coef=zeros, terms=terms, **b)
    _, hand = grpo_logits_grad(clip_eps=zeros, kl_coef=zeros, use_kl=False, terms=terms, **b)
    for result in (info, hand):
        assert int(result["n_clip_low"]) == low and int(result["n_clip_high"]) == high


def test_dual_clip_changes_nothing_below_c_and_bounds_the_loss_above():
    zeros = torch.zeros(1, dtype=F64)
    plain, dual = terms_of(GRPOConfig()), terms_of(GRPOConfig(dual_clip=3.0))
    b = constructed_batch(CLIP_RATIOS, CLIP_ADV)                     # every ratio below c = 3
    for key in ("loss", "grad"):
        out = [grpo_loss(clip_eps=zeros, kl_coef=zeros, terms=t, **b)[0] if key == "loss" else
               grpo_logits_grad(clip_eps=zeros, kl_coef=zeros, use_kl=False, terms=t, **b)[0]
               for t in (plain, dual)]
        torch.testing.assert_close(out[0], out[1], atol=0, rtol=0)
    # A negative advantage at ratio 50: the PPO loss grows with the ratio; the dual clip caps the
    # sample's objective at c * A and stops its gradient.
    b = constructed_batch([50.0, 1.0], [-1.0, 1.0])
    loss_plain, _ = grpo_loss(clip_eps=zeros, kl_coef=zeros, terms=plain, **b)
    loss_dual, _ = grpo_loss(clip_eps=zeros, kl_coef=zeros, terms=dual, **b)
    torch.testing.assert_close(loss_plain, torch.tensor([(50.0 - 1.0) / 2], dtype=F64))
    torch.testing.assert_close(loss_dual, torch.tensor([(3.0 - 1.0) / 2], dtype=F64))
    grad, _ = grpo_logits_grad(clip_eps=zeros, kl_coef=zeros, use_kl=False, terms=dual, **b)
    only_second, _ = grpo_logits_grad(clip_eps=zeros, kl_coef=zeros, use_kl=False, terms=dual,
                                      **{**b, "adv": b["adv"] * torch.tensor([[0.0, 1.0]], dtype=F64)})
    torch.testing.assert_close(grad, only_second)



