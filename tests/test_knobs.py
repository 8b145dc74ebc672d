"""Every knob of GRPOConfig beyond the notebook's: the formulas against hand computation and
sampling, the hand-written gradient against autograd, and short real runs in which each knob
changes what it should (and nothing when it should not)."""
from __future__ import annotations

import dataclasses
import math

import pandas as pd
import pytest
import torch

from grpo_core import GRPOConfig, RLVRConfig, run_many
from grpo_core.advantages import advantages
from grpo_core.export import to_trl
from grpo_core.losses import LossTerms, grpo_logits_grad, grpo_loss, sampled_kl
from grpo_core.sampling import generator, sample_categorical

F64 = torch.float64


# ---------------------------------------------------------------------------------------------
# Advantage estimators

# Two groups of G = 4: A = [1, 2, 3, 6] (mean 3, deviations -2, -1, 0, 3, sum of squares 14) and
# B = [0, 1, 0, 1] (mean 0.5, deviations -+0.5, sum of squares 1).
REWARDS = torch.tensor([[[1.0, 2.0, 3.0, 6.0], [0.0, 1.0, 0.0, 1.0]]])
S_A, S_B = math.sqrt(14 / 3), math.sqrt(1 / 3)       # Bessel-corrected group stds
# Batch of 8: mean 14/8 = 1.75, squared deviations sum to 27.5, std sqrt(27.5 / 7).
S_BATCH = math.sqrt(27.5 / 7)
DEV = [[-2.0, -1.0, 0.0, 3.0], [-0.5, 0.5, -0.5, 0.5]]
HAND = {
    "grpo": [[-2 / S_A, -1 / S_A, 0.0, 3 / S_A], [-0.5 / S_B, 0.5 / S_B, -0.5 / S_B, 0.5 / S_B]],
    "dr_grpo": DEV,
    "batch_std": [[d / S_BATCH for d in row] for row in DEV],
    # r_i minus the mean of the other three: 1 - 11/3, 2 - 10/3, 3 - 9/3, 6 - 6/3; 0 - 2/3, 1 - 1/3
    "rloo": [[1 - 11 / 3, 2 - 10 / 3, 0.0, 4.0], [-2 / 3, 2 / 3, -2 / 3, 2 / 3]],
    "none": [[1.0, 2.0, 3.0, 6.0], [0.0, 1.0, 0.0, 1.0]],
}


@pytest.mark.parametrize("estimator", list(HAND))
def test_each_estimator_on_a_hand_computed_batch(estimator):
    adv, zero_std = advantages(REWARDS.double(), estimator=estimator)
    torch.testing.assert_close(adv[0], torch.tensor(HAND[estimator], dtype=F64), atol=1e-6, rtol=1e-6)
    assert not zero_std.any()


@pytest.mark.parametrize("estimator", ["grpo", "dr_grpo", "batch_std", "rloo"])
def test_a_group_of_equal_rewards_has_zero_advantages_with_any_baseline(estimator):
    rewards = torch.tensor([[[1.0, 2.0, 3.0, 6.0], [0.7, 0.7, 0.7, 0.7]]])
    adv, zero_std = advantages(rewards, estimator=estimator)
    assert zero_std.tolist() == [[False, True]]
    assert (adv[0, 1] == 0).all() and (adv[0, 0] != 0).any()


def test_rloo_is_the_leave_one_out_formula():
    g = generator(3)
    rewards = torch.randn(3, 4, 7, generator=g, dtype=F64)
    adv, _ = advantages(rewards, estimator="rloo")
    expected = torch.empty_like(rewards)
    for e in range(3):
        for p in range(4):
            for i in range(7):
                others = [rewards[e, p, j] for j in range(7) if j != i]
                expected[e, p, i] = rewards[e, p, i] - sum(others) / len(others)
    torch.testing.assert_close(adv, expected)


# ---------------------------------------------------------------------------------------------
# KL estimators


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


# ---------------------------------------------------------------------------------------------
# Clipping, on a constructed batch


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


# ---------------------------------------------------------------------------------------------
# Hand-written gradient against autograd, every loss knob at once


KNOB_MEMBERS = [GRPOConfig(clip_eps=0.2, clip_eps_high=0.35), GRPOConfig(dual_clip=1.4, clip_eps=0.1),
                GRPOConfig(kl_estimator="k1", kl_coef=0.5), GRPOConfig(kl_estimator="k2", kl_coef=1.0),
                GRPOConfig(kl_estimator="k3", kl_coef=2.0), GRPOConfig(entropy_coef=0.3, kl_coef=0.1)]


@pytest.mark.parametrize("seed", [0, 1])
def test_hand_gradient_matches_autograd_for_every_loss_knob(seed):
    g = generator(seed)
    n_mem, n_ctx, vocab, samples = len(KNOB_MEMBERS), 4, 7, 40
    terms = LossTerms.from_configs(KNOB_MEMBERS)
    terms = dataclasses.replace(terms, **{f.name: getattr(terms, f.name).double()
                                          for f in dataclasses.fields(terms)
                                          if getattr(terms, f.name).is_floating_point()})
    logits = (torch.randn(n_mem, n_ctx, vocab, generator=g, dtype=F64) * 2).requires_grad_(True)
    ref_logp = torch.log_softmax(torch.randn(n_ctx, vocab, generator=g, dtype=F64), -1)
    index = torch.randint(0, n_ctx * vocab, (n_mem, samples), generator=g)
    logp = torch.log_softmax(logits, -1)
    ratio = 0.3 + 1.9 * torch.rand(n_mem, samples, generator=g, dtype=F64)   # later epoch: 0.3 to 2.2
    old_logp = logp.detach().flatten(1).gather(1, index) - ratio.log()
    adv = torch.randn(n_mem, samples, generator=g, dtype=F64)
    weight = torch.full((n_mem, samples), 1 / samples, dtype=F64)
    ctx_weight = torch.full((n_mem, n_ctx), 1 / n_ctx, dtype=F64)
    batch = dict(ref_logp=ref_logp, index=index, old_logp=old_logp, adv=adv, weight=weight,
                 ctx_weight=ctx_weight, clip_eps=terms.clip_low.squeeze(1),
                 kl_coef=torch.tensor([c.kl_coef for c in KNOB_MEMBERS], dtype=F64))
    loss, info = grpo_loss(logp, terms=terms, **batch)
    (grad,) = torch.autograd.grad(loss.sum(), logits)
    hand, hand_info = grpo_logits_grad(logp.detach(), terms=terms, **batch)
    torch.testing.assert_close(hand, grad, atol=1e-12, rtol=1e-9)
    for key in ("policy_loss", "kl", "kl_estimate", "n_clip_low", "n_clip_high"):
        torch.testing.assert_close(hand_info[key].double(), info[key].detach().double())
    assert ((adv[1] < 0) & (ratio[1] > 1.4)).any()          # the dual clip really acts


# ---------------------------------------------------------------------------------------------
# Every knob changes what it should: short real runs, all trained as one batch

ITER = 150
KNOB_RUNS = {
    "kl0": GRPOConfig(iterations=ITER, kl_coef=0.0),
    "kl1": GRPOConfig(iterations=ITER, kl_coef=1.0),
    "entropy0": GRPOConfig(iterations=ITER),
    "entropy": GRPOConfig(iterations=ITER, entropy_coef=0.5),
    "rlvr": RLVRConfig(iterations=ITER),
    "rlvr_dynamic": RLVRConfig(iterations=ITER, dynamic_sampling=4),
    "reset": GRPOConfig(iterations=90, ref_reset_every=30),
    "mb1": GRPOConfig(iterations=20, epochs=1),
    "mb4": GRPOConfig(iterations=20, epochs=1, minibatches=4),
    "sym_clip": GRPOConfig(iterations=ITER, lr=0.05, epochs=4),
    "clip_higher": GRPOConfig(iterations=ITER, lr=0.05, epochs=4, clip_eps_high=0.5),
    "dual_off": GRPOConfig(iterations=ITER),
    "dual_on": GRPOConfig(iterations=ITER, dual_clip=3.0),
    "kl_loss": GRPOConfig(iterations=ITER, kl_coef=0.5),
    "kl_reward": GRPOConfig(iterations=ITER, kl_coef=0.5, kl_placement="reward"),
    "adv_grpo": GRPOConfig(iterations=ITER),
    "adv_none": GRPOConfig(iterations=ITER, advantage_estimator="none"),
}


@pytest.fixture(scope="module")
def runs(upstream):
    """Each knob's run and its seed-1 twin, all as one batch: {name: [history seed 0, seed 1]}."""
    names = list(KNOB_RUNS)
    configs = [KNOB_RUNS[n].replace(seed=s) for n in names for s in (0, 1)]
    results = run_many(upstream, configs)
    assert not any(r.stopped for r in results)
    return {n: [results[2 * i].history, results[2 * i + 1].history] for i, n in enumerate(names)}


def final(hists, column):
    return sum(float(h[column].iloc[-1]) for h in hists) / len(hists)


def mean(hists, column):
    return sum(float(h[column].mean()) for h in hists) / len(hists)


def test_no_kl_penalty_drifts_further_from_sft(runs):
    assert final(runs["kl0"], "kl_ref") > 2 * final(runs["kl1"], "kl_ref")


def test_entropy_bonus_keeps_entropy_higher(runs):
    assert final(runs["entropy"], "entropy") > 2 * final(runs["entropy0"], "entropy")


def test_dynamic_sampling_leaves_fewer_silent_groups_for_more_samples(runs):
    plain, dynamic = runs["rlvr"], runs["rlvr_dynamic"]
    assert mean(dynamic, "zero_std_frac") < 0.5 * mean(plain, "zero_std_frac")
    per_iteration = lambda h: h.samples.diff().fillna(h.samples.iloc[0])
    for p, d in zip(plain, dynamic):
        assert (per_iteration(p) == 8 * 16).all()
        assert (per_iteration(d) >= 8 * 16).all() and per_iteration(d).mean() > 1.1 * 8 * 16


def test_reference_reset_zeroes_the_batch_kl_but_not_the_kl_to_sft(runs):
    for h in runs["reset"]:
        h = h.set_index("iteration")
        for reset in (30, 60):  # the reset happens before iteration reset + 1 samples
            before, after = h.loc[reset], h.loc[reset + 1]
            assert before.batch_kl > 0.01
            assert after.batch_kl < 0.1 * before.batch_kl
            assert after.kl_ref > 0.8 * before.kl_ref


def test_four_minibatches_take_four_times_the_steps(runs):
    # Adam moves each step by about lr, so four steps per batch travel much further from SFT ...
    assert final(runs["mb4"], "kl_ref") > 3 * final(runs["mb1"], "kl_ref")
    # ... and only later minibatches of a batch see a ratio other than 1 (one epoch): clipping
    # is impossible with one step per batch.
    assert mean(runs["mb1"], "clip_frac") == 0.0


def test_clip_higher_clips_fewer_rising_ratios(runs):
    sym, higher = mean(runs["sym_clip"], "clip_frac_high"), mean(runs["clip_higher"], "clip_frac_high")
    assert sym > 0.002 and higher < 0.6 * sym


def test_dual_clip_is_identical_when_no_ratio_reaches_c(runs):
    for off, on in zip(runs["dual_off"], runs["dual_on"]):
        pd.testing.assert_frame_equal(off, on)


def test_kl_in_the_reward_is_a_different_algorithm(runs):
    loss, reward = runs["kl_loss"][0], runs["kl_reward"][0]
    assert (loss.kl_ref - reward.kl_ref).abs().max() > 1e-3
    assert reward.kl_ref.iloc[-1] > 0


def test_advantage_estimator_none_differs_from_grpo(runs):
    grpo, none = runs["adv_grpo"][0], runs["adv_none"][0]
    assert (grpo.true_reward - none.true_reward).abs().max() > 1e-3
    assert (grpo.adv_abs - none.adv_abs).abs().mean() > 0.05


# ---------------------------------------------------------------------------------------------
# TRL export: only configs TRL accepts, and exact where it claims to be

def trl_rejects(kw: dict) -> str | None:
    """The checks TRL's GRPOConfig.__post_init__ and GRPOTrainer.__init__ make on these arguments
    (one process): why TRL would raise, or None."""
    generation_batch = kw["per_device_train_batch_size"] * kw["steps_per_generation"]
    if generation_batch % kw["num_generations"]:
        return "generation_batch_size not divisible by num_generations"
    if kw.get("sync_ref_model") and kw["beta"] == 0.0:
        return "sync_ref_model=True with beta=0"
    return None


@pytest.mark.parametrize("prompts, group_size, minibatches", [
    (5, 4, 3), (5, 4, 2), (8, 8, 3), (6, 3, 4), (8, 8, 4), (1, 2, 1), (7, 5, 7), (64, 64, 16)])
@pytest.mark.parametrize("kl_coef", [0.0, 0.05])
def test_trl_export_is_accepted_by_trl_and_keeps_the_batch(prompts, group_size, minibatches, kl_coef):
    cfg = GRPOConfig(prompts=prompts, group_size=group_size, minibatches=minibatches, kl_coef=kl_coef,
                     ref_reset_every=10, epochs=2, iterations=30)
    export = to_trl(cfg)
    kw = export.kwargs
    assert trl_rejects(kw) is None
    # one TRL generation batch is one of our iterations: prompts x G samples
    assert kw["per_device_train_batch_size"] * kw["steps_per_generation"] == prompts * group_size
    assert kw["max_steps"] == 30 * 2 * kw["steps_per_generation"]
    assert kw["lr_scheduler_type"] == "constant" and kw["max_grad_norm"] == 0.0
    exact_split = (prompts * group_size) % minibatches == 0
    assert kw["steps_per_generation"] == (minibatches if exact_split else 1)
    assert ("minibatches" in export.unmapped) == (minibatches > 1)
    assert kw.get("sync_ref_model", False) == (kl_coef > 0)
    assert ("ref_reset_every" in export.unmapped) == (kl_coef == 0)
    if kl_coef > 0:
        assert kw["ref_model_sync_steps"] == 10 * 2 * kw["steps_per_generation"]


def test_trl_export_of_p5_g4_m3_says_why_it_drops_the_minibatches():
    export = to_trl(GRPOConfig(prompts=5, group_size=4, minibatches=3))
    assert export.kwargs["per_device_train_batch_size"] == 20 and export.kwargs["steps_per_generation"] == 1
    assert "do not divide the 5 x 4 = 20 samples" in export.unmapped["minibatches"]


def trl_two_sided_loss(ratio, adv, eps_low, eps_high, delta):
    """TRL's per-token loss for loss_type grpo/bnpo/dr_grpo/dapo (grpo_trainer.py _compute_loss)."""
    coef_2 = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
    coef_1 = torch.clamp(ratio, max=delta)
    return -torch.minimum(coef_1 * adv, coef_2 * adv)


@pytest.mark.parametrize("dual_clip, exact", [(3.0, True), (1.35, True), (1.25, False), (1.1, False)])
def test_trl_delta_equals_the_dual_clip_only_from_one_plus_epsilon_high(dual_clip, exact):
    cfg = GRPOConfig(clip_eps=0.2, clip_eps_high=0.3, dual_clip=dual_clip)
    export = to_trl(cfg)
    assert ("delta" in export.kwargs) == exact and ("dual_clip" in export.unmapped) == (not exact)
    ratios = torch.linspace(0.3, 4.0, 75, dtype=F64).repeat(2)
    adv = torch.cat([torch.ones(75), -torch.ones(75)]).to(F64)
    zeros = torch.zeros(1, dtype=F64)
    terms = terms_of(cfg)
    ours, _ = grpo_loss(clip_eps=zeros, kl_coef=zeros, terms=terms,
                        **constructed_batch(ratios.tolist(), adv.tolist()))
    theirs = trl_two_sided_loss(ratios, adv, terms.clip_low.item(), terms.clip_high.item(),
                                terms.dual_clip.item()).mean()
    assert bool(abs(ours[0] - theirs) < 1e-9) == exact


def test_trl_export_lists_the_entropy_bonus_and_maps_the_loss_aggregation():
    export = to_trl(GRPOConfig(entropy_coef=0.02))
    kw = export.kwargs
    # TRL's GRPOConfig has no entropy bonus (only top_entropy_quantile, a token mask): listed, not passed
    assert "entropy_coef" not in kw and "no entropy bonus" in export.unmapped["entropy_coef"]
    assert kw["loss_type"] == "bnpo" and kw["max_completion_length"] == 1
    assert to_trl(GRPOConfig(advantage_estimator="dr_grpo")).kwargs["loss_type"] == "dr_grpo"
    assert "entropy_coef" not in to_trl(GRPOConfig()).unmapped


def test_the_estimator_registry_is_the_one_list_everyone_reads():
    from dataclasses import fields
    from grpo_core import ADVANTAGE_ESTIMATORS, cli
    from grpo_core.analysis import gradient_noise
    meta = {f.name: f.metadata for f in fields(GRPOConfig)}["advantage_estimator"]
    assert tuple(meta["choices"]) == tuple(ADVANTAGE_ESTIMATORS)
    for name, text in ADVANTAGE_ESTIMATORS.items():
        assert f"{name} = {text}" in meta["help"]
        adv, _ = advantages(torch.tensor([[[0.0, 1.0, 3.0]]]), estimator=name)   # each one runs
        assert adv.shape == (1, 1, 3)
    sub = cli.build_parser()._subparsers._group_actions[0].choices["grpo"]
    flag = next(a for a in sub._actions if "--advantage-estimator" in a.option_strings)
    assert flag.metavar == "{" + ",".join(ADVANTAGE_ESTIMATORS) + "}"
    import inspect
    assert inspect.signature(gradient_noise).parameters["estimators"].default == tuple(ADVANTAGE_ESTIMATORS)


# ---------------------------------------------------------------------------------------------
# One declaration per knob: PolicyOptimizationConfig, shared by both engines

def test_grpo_config_field_order_is_the_ui_url_and_cli_order():
    from grpo_core.config import PolicyOptimizationConfig
    shared = [f.name for f in dataclasses.fields(PolicyOptimizationConfig)]
    # the widgets, URL keys and CLI flags follow this order: it must not move
    assert [f.name for f in dataclasses.fields(GRPOConfig)] == shared + ["reward"] == [
        "iterations", "prompts", "group_size", "lr", "kl_coef", "clip_eps", "epochs", "seed",
        "advantage_estimator", "kl_estimator", "kl_placement", "clip_eps_high", "dual_clip",
        "minibatches", "entropy_coef", "ref_reset_every", "dynamic_sampling", "reward"]


# The sequence engine's own wording, where its knob means something per token.
SEQ_OWN_HELP = {"kl_coef", "kl_estimator", "kl_placement", "entropy_coef"}


def test_both_engines_read_one_declaration_of_each_shared_knob():
    from grpo_core.config import PolicyOptimizationConfig
    from grpo_core.sequence import SeqGRPOConfig
    base = {f.name: f for f in dataclasses.fields(PolicyOptimizationConfig)}
    for cls in (GRPOConfig, RLVRConfig, SeqGRPOConfig):
        own = {f.name: f for f in dataclasses.fields(cls)}
        for name, f in base.items():
            meta, inherited = own[name].metadata, f.metadata
            assert {k: meta[k] for k in ("lo", "hi", "choices", "log")} == \
                {k: inherited[k] for k in ("lo", "hi", "choices", "log")}, (cls, name)
            if not (cls is SeqGRPOConfig and name in SEQ_OWN_HELP):
                assert meta["help"] == inherited["help"], (cls, name)
    seq = {f.name: f.metadata["help"] for f in dataclasses.fields(SeqGRPOConfig)}
    assert all("per-token" in seq[name].lower() for name in SEQ_OWN_HELP)
    assert not issubclass(SeqGRPOConfig, GRPOConfig) and not isinstance(SeqGRPOConfig(), GRPOConfig)
    assert isinstance(SeqGRPOConfig(), PolicyOptimizationConfig) and isinstance(GRPOConfig(), PolicyOptimizationConfig)


def test_each_engine_keeps_its_defaults():
    from grpo_core.sequence import SeqGRPOConfig
    one, seq = GRPOConfig(), SeqGRPOConfig()
    assert (one.iterations, one.lr, one.kl_coef, one.epochs, one.kl_estimator) == (500, 1e-3, 0.05, 2, "exact")
    assert (seq.iterations, seq.lr, seq.kl_coef, seq.epochs, seq.kl_estimator) == (200, 2e-3, 0.0, 1, "k3")
    assert (RLVRConfig().group_size, RLVRConfig().epochs, RLVRConfig().reward) == (16, 1, "verifiable")
    for cfg in (one, seq):
        assert cfg.samples_per_iteration == 64 and cfg.upper_clip_eps == 0.2
        assert cfg.replace(clip_eps_high=0.28).upper_clip_eps == 0.28


@pytest.mark.parametrize("changes, field_name", [
    (dict(prompts=2, minibatches=3), "minibatches"), (dict(dual_clip=0.5), "dual_clip"),
    (dict(dual_clip=1.0), "dual_clip")])
def test_the_shared_checks_hold_for_both_engines(changes, field_name):
    from grpo_core.config import ConfigError
    from grpo_core.sequence import SeqGRPOConfig
    for cls in (GRPOConfig, SeqGRPOConfig):
        with pytest.raises(ConfigError) as err:
            cls(**changes)
        assert err.value.field_name == field_name
    with pytest.raises(ConfigError, match="luspo needs"):      # the sequence engine's own check still runs
        SeqGRPOConfig(loss_type="luspo", importance_sampling_level="token")


def test_knob_default_reuses_the_base_declaration():
    from grpo_core.config import PolicyOptimizationConfig, knob_default
    lr = knob_default(PolicyOptimizationConfig, "lr", 2e-3)
    base = {f.name: f for f in dataclasses.fields(PolicyOptimizationConfig)}["lr"]
    assert lr.default == 2e-3 and dict(lr.metadata) == dict(base.metadata)
    wider = knob_default(PolicyOptimizationConfig, "group_size", 1, lo=1)
    assert wider.metadata["lo"] == 1 and wider.metadata["help"] == dict(
        (f.name, f.metadata) for f in dataclasses.fields(PolicyOptimizationConfig))["group_size"]["help"]
    with pytest.raises(TypeError, match="no field 'learning_rate'"):
        knob_default(PolicyOptimizationConfig, "learning_rate", 1e-3)
    with pytest.raises(TypeError, match="unknown setting 'hlep'"):
        knob_default(PolicyOptimizationConfig, "lr", 1e-3, hlep="typo")
