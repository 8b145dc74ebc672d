"""Unit tests of grpo_core: exact metrics, advantages, gradients, optimizer, configs, and learning.

Every random draw here comes from a torch.Generator owned by the test; the global RNG is only
touched on purpose (inside fork_rng) to show that runs do not depend on it.
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import grpo_core
from grpo_core import (ConfigError, GRPOConfig, MAX_WORK_PER_REQUEST, ProblemConfig, RLVRConfig,
                       RewardModelConfig, SFTConfig, check_budget, config_fields, field_range,
                       group_advantages, make_problem, policy_metrics, reference_metrics,
                       run_notebook, train_grpo, train_sft)
from grpo_core.losses import LossTerms, grpo_logits_grad, grpo_loss
from grpo_core.models import BatchedAdam, PolicyNet, RewardNet

EXACT = ["true_reward", "kl_ref", "entropy", "correct_prob", "rm_reward"]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_all_finite(frame: pd.DataFrame):
    values = frame.select_dtypes("number").to_numpy(dtype=float)
    assert np.isfinite(values).all(), frame[~np.isfinite(values).all(1)]


# ---------------------------------------------------------------------------------------------
# 1. Exact metrics agree with Monte-Carlo estimates


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


# ---------------------------------------------------------------------------------------------
# 2. Group-relative advantages


def test_advantages_have_zero_mean_and_unit_std_per_group():
    rewards = torch.randn(3, 4, 8, generator=gen(0), dtype=torch.float64) * 5 + 2
    adv, zero_std = group_advantages(rewards)
    assert adv.shape == rewards.shape and not zero_std.any()
    std = rewards.std(-1, keepdim=True)          # Bessel's correction, as torch.std
    torch.testing.assert_close(adv.mean(-1), torch.zeros(3, 4, dtype=torch.float64), atol=1e-12, rtol=0)
    # std of A is std / (std + eps): 1 up to the eps in the denominator
    torch.testing.assert_close(adv.std(-1, keepdim=True), std / (std + 1e-8), atol=1e-12, rtol=0)
    torch.testing.assert_close(adv.std(-1), torch.ones(3, 4, dtype=torch.float64), atol=1e-7, rtol=0)
    torch.testing.assert_close(adv, (rewards - rewards.mean(-1, keepdim=True)) / (std + 1e-8))


def test_masked_advantages_match_the_sub_group():
    rewards = torch.rand(3, 5, 8, generator=gen(1))
    sizes = [(5, 8), (3, 4), (2, 2)]            # (prompts, group_size) of each member
    valid = torch.zeros(3, 5, 8, dtype=torch.bool)
    for e, (p, g) in enumerate(sizes):
        valid[e, :p, :g] = True
    adv, zero_std = group_advantages(rewards, valid)
    assert (adv[~valid] == 0).all()
    for e, (p, g) in enumerate(sizes):
        solo, solo_zero = group_advantages(rewards[e:e + 1, :p, :g])
        torch.testing.assert_close(adv[e:e + 1, :p, :g], solo, atol=1e-5, rtol=1e-5)
        assert torch.equal(zero_std[e:e + 1, :p], solo_zero)
    assert torch.isfinite(adv).all()


def constant_values():
    """Reward values for constant groups: hand-picked ones and random ones, float32."""
    picked = torch.tensor([0.1, 0.9, 0.37, 12.34, 0.0, 1.0, -3.3, 123.456])
    return torch.cat([picked, torch.rand(40, generator=gen(11)) * 10 - 5])


@pytest.mark.parametrize("group_size", [3, 6, 7, 8, 16])
def test_equal_rewards_give_exactly_zero_advantages(group_size):
    values = constant_values()
    n = len(values)
    # n members, 2 prompts: prompt 0 has constant rewards, prompt 1 random ones
    rewards = torch.rand(n, 2, group_size, generator=gen(2))
    rewards[:, 0] = values.view(-1, 1)
    adv, zero_std = group_advantages(rewards)
    assert (adv[:, 0] == 0).all() and not torch.isnan(adv).any()
    assert zero_std[:, 0].all() and not zero_std[:, 1].any()
    assert (adv[:, 1].abs().sum(-1) > 0).all()

    # the same with a mask: the valid part of each group is constant, the padding is not
    padded = torch.rand(n, 2, group_size + 3, generator=gen(3)) * 100
    padded[:, :, :group_size] = rewards
    valid = torch.ones_like(padded, dtype=torch.bool)
    valid[:, :, group_size:] = False
    adv, zero_std = group_advantages(padded, valid)
    assert (adv[:, 0] == 0).all() and (adv[~valid] == 0).all() and not torch.isnan(adv).any()
    assert zero_std[:, 0].all() and not zero_std[:, 1].any()


def test_round_off_case_is_real():
    """Guard for the test above: these constant groups do leave float round-off in r - mean for
    the usual ways of computing the mean, so an implementation must not rely on r - mean == 0.
    With the notebook's formula (r - r.mean()) / (r.std() + 1e-8) they get nonzero advantages."""
    values = constant_values()
    for mean in (lambda r: r.mean(-1, keepdim=True), lambda r: r.sum(-1, keepdim=True) / r.shape[-1],
                 lambda r: r.cumsum(-1)[..., -1:] / r.shape[-1]):
        hits = 0
        for g in (3, 6, 7, 8, 16):
            r = values.view(-1, 1).expand(-1, g)
            hits += int(((r - mean(r)) != 0).any(-1).sum())
        assert hits > 0
    r = torch.full((8,), 0.1)
    assert ((r - r.mean()) / (r.std() + 1e-8)).abs().max() > 0.1


# ---------------------------------------------------------------------------------------------
# 3. Hand-written gradients against autograd


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
    weight = valid / valid.sum(1, keepdim=True).to(f64)
    ctx_weight = torch.zeros(n_mem, n_ctx, dtype=f64).scatter_add_(
        1, ctx, torch.full((n_mem, prompts), 1 / prompts, dtype=f64))
    clip_eps = torch.tensor([0.2, 0.1, 0.3], dtype=f64)[:n_mem]
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

    for use_kl in ([True, False] if kl == 0 else [True]):
        dlogits, hand = grpo_logits_grad(logp.detach(), kl_coef=kl_coef, first_epoch=not later_epoch,
                                         use_kl=use_kl, **b)
        torch.testing.assert_close(dlogits, grad, atol=1e-12, rtol=1e-9)
        for key in INFO_KEYS:
            torch.testing.assert_close(hand[key].double(), info[key].detach().double())
    if not later_epoch:  # at ratio 1 the general (not first-epoch) path gives the same gradient
        dlogits, _ = grpo_logits_grad(logp.detach(), kl_coef=kl_coef, first_epoch=False, **b)
        torch.testing.assert_close(dlogits, grad, atol=1e-12, rtol=1e-9)


LOSS_VARIANTS = {  # three members per case, each with its own loss settings
    "sampled_kl": [GRPOConfig(kl_estimator="k1", kl_coef=0.3), GRPOConfig(kl_estimator="k2", kl_coef=1.0),
                   GRPOConfig(kl_estimator="k3", kl_coef=2.0)],
    "mixed_kl": [GRPOConfig(kl_coef=0.5), GRPOConfig(kl_estimator="k3", kl_coef=0.5),
                 GRPOConfig(kl_coef=0.0)],
    "clips": [GRPOConfig(clip_eps=0.2, clip_eps_high=0.28), GRPOConfig(clip_eps=0.1, dual_clip=1.3),
              GRPOConfig(clip_eps=0.3, dual_clip=1.5, clip_eps_high=0.4)],
    "entropy": [GRPOConfig(entropy_coef=0.1), GRPOConfig(entropy_coef=0.0, kl_estimator="k1"),
                GRPOConfig(entropy_coef=0.5, dual_clip=1.2, kl_coef=0.0)],
}


@pytest.mark.parametrize("later_epoch", [False, True])
@pytest.mark.parametrize("case", list(LOSS_VARIANTS))
def test_grpo_logits_grad_matches_autograd_for_loss_variants(case, later_epoch):
    configs = LOSS_VARIANTS[case]
    terms = LossTerms.from_configs(configs)
    terms = dataclasses.replace(terms, **{  # float64, to compare gradients tightly
        f.name: getattr(terms, f.name).double() for f in dataclasses.fields(terms)
        if getattr(terms, f.name).is_floating_point()})
    b = random_batch(10 + len(case), later_epoch=later_epoch)
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


@pytest.mark.parametrize("n_mem", [1, 4])
def test_policy_net_backward_matches_autograd(n_mem):
    g = gen(3)
    net = PolicyNet(context_dim=8, hidden_dim=16, vocab_size=10)
    theta = torch.stack([net.init(g) for _ in range(n_mem)]).double().requires_grad_(True)
    contexts = torch.randn(5, 8, generator=g, dtype=torch.float64)
    upstream_grad = torch.randn(n_mem, 5, 10, generator=g, dtype=torch.float64)
    x1 = net.inputs(contexts, n_mem)
    logits, _ = net.forward(net.layout.views(theta), x1)
    (expected,) = torch.autograd.grad((logits * upstream_grad).sum(), theta)
    with torch.no_grad():
        params = net.layout.views(theta.detach())
        _, h1 = net.forward(params, x1)
        got = net.backward(params, x1, h1, upstream_grad)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-10)
    # logits() is the same function as forward, and agrees with the nn.Sequential it loads into
    seq = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 10)).double()
    seq.load_state_dict(net.state_dict(theta[-1]))
    torch.testing.assert_close(net.logits(theta.detach(), contexts)[-1], seq(contexts).detach())
    torch.testing.assert_close(net.from_state_dict(net.state_dict(theta[0])), theta[0].detach().float())


def test_reward_net_scores_equal_the_concat_formulation(upstream):
    d, h, v = 8, 32, 10
    net = RewardNet(context_dim=d, hidden_dim=h, vocab_size=v)
    contexts = upstream.problem.contexts
    thetas = torch.stack([net.init(gen(4)), upstream.rm.state_dict["theta"]])
    scores = net.scores(thetas, contexts)                                   # (2, C, V)
    for e in range(2):
        p = {k: t[e] for k, t in net.layout.views(thetas).items()}
        embed = nn.Embedding(v, h)
        mlp = nn.Sequential(nn.Linear(d + h, h), nn.ReLU(), nn.Linear(h, 1))
        with torch.no_grad():
            embed.weight.copy_(p["embed"])
            mlp[0].weight.copy_(torch.cat([p["wx"].T, p["we"].T], dim=1))    # acts on [x_c, e_v]
            mlp[0].bias.copy_(p["b1"])
            mlp[2].weight.copy_(p["w2"].unsqueeze(0))
            mlp[2].bias.copy_(p["b2"])
            ctx_ids = torch.arange(5).repeat_interleave(v)
            tok_ids = torch.arange(v).repeat(5)
            notebook = mlp(torch.cat([contexts[ctx_ids], embed(tok_ids)], -1)).squeeze(-1)
        torch.testing.assert_close(scores[e].detach(), notebook.view(5, v), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scores[1], upstream.rm.scores, atol=1e-6, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# 4. BatchedAdam against torch.optim.Adam


def test_batched_adam_equals_torch_adam():
    g = gen(5)
    start = torch.randn(3, 20, generator=g)
    lrs = torch.tensor([1e-2, 1e-3, 0.3])
    for lr_vec in (lrs[:1], torch.full((3,), 1e-2), lrs):  # one member; shared lr; per-member lr
        theta = start[:len(lr_vec)].clone()
        opt = BatchedAdam(theta, lr_vec)
        solo = [nn.Parameter(start[e].clone()) for e in range(len(lr_vec))]
        ref = [torch.optim.Adam([p], lr=float(lr)) for p, lr in zip(solo, lr_vec)]
        for _ in range(50):
            grad = torch.randn(len(lr_vec), 20, generator=g) * 3
            opt.step(grad)
            for e, (p, o) in enumerate(zip(solo, ref)):
                p.grad = grad[e].clone()
                o.step()
        assert not torch.allclose(theta, start[:len(lr_vec)], atol=1e-3)   # it did move
        for e, p in enumerate(solo):   # float32: equal up to round-off accumulated over 50 steps
            torch.testing.assert_close(theta[e], p.detach(), atol=1e-5, rtol=1e-5)
            state = ref[e].state[p]
            torch.testing.assert_close(opt.m[e], state["exp_avg"], atol=1e-7, rtol=1e-6)
            torch.testing.assert_close(opt.v[e], state["exp_avg_sq"], atol=1e-7, rtol=1e-6)


def test_batched_adam_inactive_members_stand_still():
    g = gen(6)
    start = torch.randn(3, 12, generator=g)
    lrs = torch.tensor([1e-2, 3e-3, 1e-1])
    theta = start.clone()
    opt = BatchedAdam(theta, lrs)
    solo = [nn.Parameter(start[e].clone()) for e in range(3)]
    ref = [torch.optim.Adam([p], lr=float(lr)) for p, lr in zip(solo, lrs)]
    alone = [start[e:e + 1].clone() for e in range(3)]           # each member's own BatchedAdam
    alone_opt = [BatchedAdam(alone[e], lrs[e:e + 1]) for e in range(3)]
    for step in range(60):
        grad = torch.randn(3, 12, generator=g)
        # all active for the first steps (the fast path), then masks; member 1 sits out often
        active = None if step < 5 else torch.tensor([step % 3 != 0, step % 2 == 0, True])
        before = (theta.clone(), opt.m.clone(), opt.v.clone())
        opt.step(grad, active)
        act = torch.ones(3, dtype=torch.bool) if active is None else active
        for e in range(3):
            if act[e]:
                solo[e].grad = grad[e].clone()
                ref[e].step()
                alone_opt[e].step(grad[e:e + 1])
            else:  # bit for bit unchanged
                assert torch.equal(theta[e], before[0][e])
                assert torch.equal(opt.m[e], before[1][e]) and torch.equal(opt.v[e], before[2][e])
    for e in range(3):
        torch.testing.assert_close(theta[e], solo[e].detach(), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(opt.v[e], ref[e].state[solo[e]]["exp_avg_sq"], atol=1e-7, rtol=1e-6)
        assert int(opt.t[e]) == int(ref[e].state[solo[e]]["step"])
        # the masked path does the solo path's float operations: bit for bit the same
        assert torch.equal(theta[e], alone[e][0]), e


# ---------------------------------------------------------------------------------------------
# 5. Reproducibility


def test_same_config_same_history_regardless_of_global_rng(upstream):
    configs = [GRPOConfig(seed=5, iterations=40), RLVRConfig(seed=5, iterations=30)]
    with torch.random.fork_rng():      # the global RNG is restored afterwards
        first = train_grpo(upstream.problem, upstream.sft, upstream.rm.scores, configs)
        torch.rand(17)
        torch.manual_seed(123)
        torch.rand(3)
        second = train_grpo(upstream.problem, upstream.sft, upstream.rm.scores, configs)
        torch.manual_seed(999)
        small = dict(sft=SFTConfig(epochs=3), rm=RewardModelConfig(steps=30))
        up_a = grpo_core.build_upstream(ProblemConfig(), small["sft"], small["rm"])
        torch.rand(5)
        up_b = grpo_core.build_upstream(ProblemConfig(), small["sft"], small["rm"])
    for a, b in zip(first, second):
        assert a.history.equals(b.history)
        assert torch.equal(a.final_logp, b.final_logp)
        assert a.per_context.equals(b.per_context)
        assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert up_a.sft.history.equals(up_b.sft.history) and torch.equal(up_a.sft.logp, up_b.sft.logp)
    assert up_a.rm.history.equals(up_b.rm.history) and torch.equal(up_a.rm.scores, up_b.rm.scores)


def test_different_seeds_differ(upstream):
    a, b = train_grpo(upstream.problem, upstream.sft, upstream.rm.scores,
                      [GRPOConfig(seed=0, iterations=20), GRPOConfig(seed=1, iterations=20)])
    assert not a.history.equals(b.history)


# ---------------------------------------------------------------------------------------------
# 6. Learning on the notebook's settings, and 7. state dicts


@pytest.fixture(scope="module")
def notebook():
    return run_notebook(42)


def test_notebook_configs_are_the_notebooks():
    cfg = grpo_core.notebook_configs(42)
    g = cfg["grpo"]
    assert (g.iterations, g.prompts, g.group_size, g.lr, g.kl_coef, g.clip_eps, g.epochs) == (
        500, 8, 8, 1e-3, 0.05, 0.2, 2)
    assert [c.group_size for c in cfg["sweep"]] == [2, 4, 8, 16]
    assert all(c.iterations == 300 for c in cfg["sweep"])
    r = cfg["rlvr"]
    assert (r.reward, r.group_size, r.epochs, r.iterations) == ("verifiable", 16, 1, 500)
    assert cfg["sft"] == SFTConfig() and cfg["rm"] == RewardModelConfig()


@pytest.mark.slow
def test_grpo_improves_true_reward_over_sft(notebook):
    sft = reference_metrics(notebook.up)
    grpo_true = notebook.grpo.per_context["true_reward"].mean()
    assert grpo_true > sft["true_reward"] + 0.01
    assert notebook.grpo.history["rm_reward"].iloc[-1] > sft["rm_reward"]  # it optimized its reward
    assert len(notebook.grpo.history) == 500 and notebook.grpo.stopped == ""


@pytest.mark.slow
def test_rlvr_reaches_the_correct_token(notebook):
    assert notebook.rlvr_accuracy >= 0.95
    assert notebook.rlvr.history["correct_prob"].iloc[-1] >= 0.95
    # it started from the SFT policy's accuracy, well below
    assert reference_metrics(notebook.up)["correct_prob"] < 0.9


@pytest.mark.slow
def test_best_bounds_every_method_per_context(notebook):
    """The table's best is max_v R(c, v), each method's entry is its policy's exact expected true
    reward sum_v pi(v|c) R(c, v) (recomputed here from the final policy, in float64), and RLVR,
    which learns the best token, comes close to that bound."""
    problem = notebook.up.problem
    reward = problem.true_reward.double()                                  # (C, V)
    best = reward.max(-1).values.numpy()
    table = notebook.table()
    per_ctx = table[table.context != "overall"]
    np.testing.assert_allclose(per_ctx["best"].to_numpy(), best, rtol=1e-6)
    for name, run in [("grpo", notebook.grpo), ("rlvr", notebook.rlvr)] + [(None, r) for r in notebook.sweep]:
        exact = (run.final_logp.double().exp() * reward).sum(-1).numpy()   # (C,)
        np.testing.assert_allclose(run.per_context["true_reward"].to_numpy(), exact, atol=1e-6)
        if name:
            np.testing.assert_allclose(per_ctx[name].to_numpy(), exact, atol=1e-6)
        assert (exact <= best + 1e-9).all()
        np.testing.assert_array_equal(run.per_context["best"].to_numpy(), problem.best_reward.numpy())
    rlvr = (notebook.rlvr.final_logp.double().exp() * reward).sum(-1).numpy()
    sft = (notebook.up.sft.logp.double().exp() * reward).sum(-1).numpy()
    assert (best - rlvr).mean() < 0.25 * (best - sft).mean()             # the bound is nearly reached


@pytest.mark.slow
def test_grpo_kl_is_positive_and_finite(notebook):
    kl = notebook.grpo.per_context["kl_ref"]
    assert np.isfinite(kl).all() and kl.mean() > 0 and (kl >= -1e-6).all()
    assert np.isfinite(notebook.grpo.history["kl_ref"]).all()
    assert notebook.grpo.history["kl_ref"].iloc[-1] > 0


@pytest.mark.slow
def test_sft_and_reward_model_learn(notebook):
    up = notebook.up
    hist = up.sft.history
    assert len(hist) == 100
    late = hist.iloc[-10:]
    assert late["true_reward"].mean() > hist["true_reward"].iloc[0]
    assert late["kl_true"].mean() < hist["kl_true"].iloc[0] / 2
    # imitating p_true perfectly gives true reward sum_v p(v)^2: SFT gets close to it
    p = up.problem.true_reward
    imitation = float((p * p).sum(-1).mean())
    assert abs(hist["true_reward"].iloc[-1] - imitation) < 0.03
    # and is far from the untrained network (one SFT step)
    barely = train_sft(up.problem, SFTConfig(epochs=1, steps_per_epoch=1))
    assert hist["true_reward"].iloc[-1] > barely.history["true_reward"].iloc[0] + 0.2
    assert up.rm.pairwise_accuracy > 0.6
    assert up.rm.pairwise_accuracy > up.rm.history["pairwise_accuracy"].iloc[0]


@pytest.mark.slow
def test_notebook_upstream_equals_default_upstream(notebook, upstream):
    assert torch.equal(notebook.up.sft.logp, upstream.sft.logp)
    assert torch.equal(notebook.up.rm.scores, upstream.rm.scores)


def sequential(sd):
    d, h, v = sd["0.weight"].shape[1], sd["0.weight"].shape[0], sd["2.weight"].shape[0]
    module = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, v))
    module.load_state_dict(sd)
    return module


@pytest.mark.slow
def test_state_dicts_load_into_nn_sequential(notebook):
    contexts = notebook.up.problem.contexts
    with torch.no_grad():
        for run in [notebook.grpo, notebook.rlvr, *notebook.sweep]:
            logp = torch.log_softmax(sequential(run.state_dict)(contexts), -1)
            torch.testing.assert_close(logp, run.final_logp, atol=1e-5, rtol=1e-5)
        sft = notebook.up.sft
        logp = torch.log_softmax(sequential(sft.state_dict)(contexts), -1)
        torch.testing.assert_close(logp, sft.logp, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(notebook.grpo.final_logp, sft.logp, atol=1e-3)


# ---------------------------------------------------------------------------------------------
# 8. The problem


def test_make_problem_is_the_notebooks_task():
    problem = make_problem(ProblemConfig())
    g = torch.Generator().manual_seed(42)
    contexts = torch.randn(5, 8, generator=g)
    prefs = torch.softmax(2 * torch.randn(5, 10, generator=g), dim=-1)
    assert torch.equal(problem.contexts, contexts)
    assert torch.equal(problem.true_reward, prefs)
    torch.testing.assert_close(problem.true_reward.sum(-1), torch.ones(5))
    assert torch.equal(problem.correct_token, prefs.argmax(-1))
    assert problem.correct_token.dtype == torch.int64
    assert torch.equal(problem.best_reward, prefs.max(-1).values)
    onehot = problem.verifiable_reward
    assert torch.equal(onehot.sum(-1), torch.ones(5))
    assert torch.equal(onehot.argmax(-1), problem.correct_token)
    # the notebook drew from the global generator seeded 42: the same numbers
    with torch.random.fork_rng():
        torch.manual_seed(42)
        assert torch.equal(torch.randn(5, 8), contexts)


def test_make_problem_other_shapes():
    cfg = ProblemConfig(n_contexts=3, vocab_size=4, context_dim=2, pref_scale=0.5, seed=1)
    problem = make_problem(cfg)
    assert problem.contexts.shape == (3, 2) and problem.true_reward.shape == (3, 4)
    assert (problem.n_contexts, problem.vocab_size) == (3, 4)
    torch.testing.assert_close(problem.true_reward.sum(-1), torch.ones(3))
    assert not torch.equal(make_problem(cfg.replace(seed=2)).contexts, problem.contexts)


# ---------------------------------------------------------------------------------------------
# 9. Config validation

CONFIG_CLASSES = [ProblemConfig, SFTConfig, RewardModelConfig, GRPOConfig, RLVRConfig]
KNOBS = [(cls, f) for cls in CONFIG_CLASSES for f in config_fields(cls)]


COMPANIONS = {"minibatches": {"prompts": 64}}   # values other fields need for a field's extremes


@pytest.mark.parametrize("cls,f", KNOBS, ids=[f"{c.__name__}.{f.name}" for c, f in KNOBS])
def test_out_of_range_values_raise_naming_field_and_range(cls, f):
    rng = field_range(cls, f.name)
    other = COMPANIONS.get(f.name, {})
    if f.metadata.get("choices"):
        for choice in f.metadata["choices"]:
            assert getattr(cls(**{f.name: choice}), f.name) == choice
        bad_values = ["no_such_" + f.name, ""]
        assert rng == "one of " + ", ".join(f.metadata["choices"])
    else:
        lo, hi = f.metadata["lo"], f.metadata["hi"]
        cls(**other, **{f.name: lo})          # the bounds themselves are valid
        cls(**other, **{f.name: hi})
        assert rng == f"{lo} to {hi}"
        bad_values = [lo - 1, hi + 1] + ([lo / 2] if isinstance(lo, float) and lo > 0 else [])
    for bad in bad_values:
        with pytest.raises(ConfigError) as info:
            cls(**other, **{f.name: bad})
        message = str(info.value)
        assert message.startswith(f"{f.name}:") and rng in message, message
        assert info.value.field_name == f.name


def test_cross_field_checks_name_the_field():
    with pytest.raises(ConfigError) as info:
        GRPOConfig(prompts=4, minibatches=5)
    assert info.value.field_name == "minibatches" and "4" in str(info.value)
    GRPOConfig(prompts=4, minibatches=4)
    for bad in (0.5, 1.0):
        with pytest.raises(ConfigError, match="dual_clip"):
            GRPOConfig(dual_clip=bad)
    assert GRPOConfig(dual_clip=1.01).dual_clip == 1.01


WRONG_TYPES = [(GRPOConfig, "group_size", "8"), (GRPOConfig, "group_size", True),
               (GRPOConfig, "iterations", 2.5), (GRPOConfig, "lr", float("nan")),
               (GRPOConfig, "kl_coef", float("inf")), (GRPOConfig, "clip_eps", float("-inf")),
               (GRPOConfig, "lr", "0.01"), (SFTConfig, "epochs", None), (ProblemConfig, "seed", False),
               (RewardModelConfig, "lr", True)]


@pytest.mark.parametrize("cls,name,bad", WRONG_TYPES)
def test_wrong_types_raise_naming_the_field(cls, name, bad):
    with pytest.raises(ConfigError) as info:
        cls(**{name: bad})
    assert str(info.value).startswith(f"{name}:") and info.value.field_name == name


@pytest.mark.parametrize("cls,name,bad", WRONG_TYPES[:5])
def test_wrong_type_messages_name_the_range(cls, name, bad):
    with pytest.raises(ConfigError) as info:
        cls(**{name: bad})
    assert field_range(cls, name) in str(info.value)


def test_numbers_are_coerced_to_the_fields_type():
    cfg = GRPOConfig(group_size=8.0, lr=1)
    assert type(cfg.group_size) is int and type(cfg.lr) is float
    with pytest.raises(ConfigError, match="reward"):
        GRPOConfig(reward="human")


def test_from_dict_rejects_unknown_keys_and_round_trips():
    with pytest.raises(ConfigError) as info:
        GRPOConfig.from_dict({"group_size": 4, "groupsize": 8})
    assert "groupsize" in str(info.value)
    assert GRPOConfig.from_dict({"group_size": 4, "groupsize": 8}, strict=False).group_size == 4
    with pytest.raises(ConfigError):
        GRPOConfig.from_dict([("group_size", 4)])
    with pytest.raises(ConfigError, match="group_size"):
        GRPOConfig.from_dict({"group_size": 65})
    for cfg in [ProblemConfig(n_contexts=7, pref_scale=0.5), SFTConfig(lr=3e-3, epochs=7),
                RewardModelConfig(steps=99), GRPOConfig(kl_coef=0.0, clip_eps=0.5, seed=9),
                RLVRConfig(group_size=4, lr=2e-3)]:
        back = type(cfg).from_dict(cfg.to_dict())
        assert back == cfg and type(back) is type(cfg)
        assert type(cfg).from_dict(json.loads(cfg.to_json())) == cfg
    assert RLVRConfig.from_dict(RLVRConfig().to_dict()).reward == "verifiable"


def test_check_budget_rejects_an_oversized_request(upstream):
    big = GRPOConfig(iterations=5000, prompts=64, group_size=64, epochs=16)
    with pytest.raises(ConfigError) as info:
        check_budget([big])
    assert f"{MAX_WORK_PER_REQUEST:,}" in str(info.value)
    # many seeds of an individually fine config add up
    ok = GRPOConfig(iterations=5000, prompts=64, group_size=64, epochs=4)   # 8.2e7 work
    check_budget([ok])
    with pytest.raises(ConfigError):
        check_budget([ok, ok])
    with pytest.raises(ConfigError):  # train_grpo checks before doing any work
        train_grpo(upstream.problem, upstream.sft, upstream.rm.scores, [big])


# ---------------------------------------------------------------------------------------------
# 10. Divergence


def test_aggressive_run_on_huge_rewards_stays_finite(upstream):
    table = 1e6 * torch.rand(5, 10, generator=gen(7))
    cfg = GRPOConfig(lr=1.0, kl_coef=0.0, clip_eps=1.0, epochs=16, iterations=40)
    runs = train_grpo(upstream.problem, upstream.sft, table, [cfg.replace(seed=s) for s in range(2)])
    for run in runs:
        assert_all_finite(run.history)
        assert torch.isfinite(run.final_logp).all()
        if run.stopped:
            assert len(run.history) < cfg.iterations
        else:
            assert len(run.history) == cfg.iterations
        # the policy this violent run ends with is a proper distribution
        torch.testing.assert_close(run.final_logp.exp().sum(-1), torch.ones(5))


def test_a_diverging_member_stops_at_its_last_finite_iteration(upstream):
    """Force divergence: a NaN reward on one token; sampling it poisons that member's update."""
    sft_probs = upstream.sft.logp.exp()
    c, v = divmod(int((sft_probs - 0.005).abs().argmin()), 10)  # a token of probability ~0.5%
    table = upstream.rm.scores.clone()
    table[c, v] = float("nan")
    configs = [GRPOConfig(seed=0, iterations=120), RLVRConfig(seed=0, iterations=50)]
    bad, rlvr = train_grpo(upstream.problem, upstream.sft, table, configs)
    assert bad.stopped and "non-finite" in bad.stopped, bad.stopped
    n = len(bad.history)
    assert 0 < n < 120 and f"after {n} of 120" in bad.stopped
    assert_all_finite(bad.history.drop(columns="rm_reward"))   # the NaN is in the reward table
    assert torch.isfinite(bad.final_logp).all()
    assert all(torch.isfinite(t).all() for t in bad.state_dict.values())
    # the final policy is the one after the last kept iteration
    final = policy_metrics(bad.final_logp, upstream.problem, ref_logp=upstream.sft.logp)
    assert float(final["true_reward"]) == pytest.approx(bad.history["true_reward"].iloc[-1], abs=1e-6)
    with torch.no_grad():
        logp = torch.log_softmax(sequential(bad.state_dict)(upstream.problem.contexts), -1)
    torch.testing.assert_close(logp, bad.final_logp, atol=1e-5, rtol=1e-5)
    # the other member of the batch is untouched
    (solo,) = train_grpo(upstream.problem, upstream.sft, table, configs[1:])
    assert rlvr.stopped == "" and len(rlvr.history) == 50
    pd.testing.assert_frame_equal(rlvr.history, solo.history, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# 11. Stopping by request


def test_on_iteration_false_stops_every_run(upstream):
    configs = [GRPOConfig(seed=2, iterations=30), RLVRConfig(seed=2, iterations=30),
               GRPOConfig(seed=3, iterations=8, group_size=4)]
    args = (upstream.problem, upstream.sft, upstream.rm.scores, configs)
    calls = []

    def stop_at_12(done, total):
        calls.append((done, total))
        return done < 12

    stopped = train_grpo(*args, on_iteration=stop_at_12)
    assert calls == [(i, 30) for i in range(1, 13)]
    full = train_grpo(*args, on_iteration=lambda done, total: None)
    for s, f in zip(stopped[:2], full[:2]):
        assert len(s.history) == 12
        assert "12" in s.stopped and "30" in s.stopped
        pd.testing.assert_frame_equal(s.history, f.history.iloc[:12], check_exact=True)
    # a member that finished before the stop is complete and not marked stopped
    short_s, short_f = stopped[2], full[2]
    assert short_s.stopped == "" and len(short_s.history) == 8
    assert short_s.history.equals(short_f.history)
    assert torch.equal(short_s.final_logp, short_f.final_logp)
    # the stopped result's policy is the one after its last kept iteration
    for s in stopped[:2]:
        final = policy_metrics(s.final_logp, upstream.problem, upstream.rm.scores, upstream.sft.logp)
        for k in EXACT:
            assert float(final[k]) == pytest.approx(s.history[k].iloc[-1], abs=1e-6)
