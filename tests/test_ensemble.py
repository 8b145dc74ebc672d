"""Batched runs: each member of one train_grpo call equals its solo run; spread bands; comparisons."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from grpo_core import (GRPOConfig, RLVRConfig, RunResult, band, compare_table, policy_metrics,
                       run_many, seed_configs, sweep_configs)

ATOL = 1e-5


def assert_same_run(together: RunResult, alone: RunResult):
    assert together.config == alone.config
    assert list(together.history.columns) == list(alone.history.columns)
    assert len(together.history) == len(alone.history) == together.config.iterations
    pd.testing.assert_frame_equal(together.history, alone.history, check_exact=False,
                                  atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(together.final_logp, alone.final_logp, atol=ATOL, rtol=1e-4)
    pd.testing.assert_frame_equal(together.per_context, alone.per_context, check_exact=False,
                                  atol=ATOL, rtol=1e-4)
    assert together.stopped == alone.stopped == ""


MIXED = [GRPOConfig(seed=7, iterations=60), GRPOConfig(seed=3, iterations=60, group_size=4),
         RLVRConfig(seed=7, iterations=40),
         GRPOConfig(seed=11, iterations=60, prompts=3, lr=3e-3, epochs=3, clip_eps=0.1, kl_coef=0.0)]


def test_mixed_members_equal_their_solo_runs(upstream):
    together = run_many(upstream, MIXED)
    assert len(together) == len(MIXED)
    for cfg, run in zip(MIXED, together):
        (alone,) = run_many(upstream, [cfg])
        assert_same_run(run, alone)
    # the members really are different runs
    assert not np.allclose(together[0].history["true_reward"], together[1].history["true_reward"])


def test_seed_is_the_same_alone_and_among_sixteen(upstream):
    configs = seed_configs(GRPOConfig(seed=0, iterations=60), 16)
    assert [c.seed for c in configs] == list(range(16))
    together = run_many(upstream, configs)
    (alone,) = run_many(upstream, [GRPOConfig(seed=7, iterations=60)])
    assert together[7].config == alone.config
    assert_same_run(together[7], alone)
    finals = torch.stack([r.final_logp for r in together])
    assert len({tuple(f.flatten().tolist()) for f in finals}) == 16   # sixteen distinct runs


# Members that differ in the loss and sampling options: minibatches, dynamic sampling,
# advantage estimators, KL estimators and placement, reference resets, clip variants.
OPTIONS = [
    GRPOConfig(seed=5, iterations=40, minibatches=2, advantage_estimator="rloo"),
    GRPOConfig(seed=6, iterations=50, dynamic_sampling=3, kl_estimator="k3", group_size=4),
    GRPOConfig(seed=7, iterations=30, kl_placement="reward", ref_reset_every=10, prompts=4,
               minibatches=4, kl_coef=0.2),
    RLVRConfig(seed=8, iterations=45, advantage_estimator="dr_grpo", clip_eps_high=0.3,
               dual_clip=2.0, entropy_coef=0.01, epochs=2),
    GRPOConfig(seed=9, iterations=35, advantage_estimator="batch_std", kl_estimator="k2",
               lr=5e-3, epochs=3),
    RLVRConfig(seed=10, iterations=25, advantage_estimator="none", kl_coef=0.0, group_size=8),
]


def test_members_with_different_options_equal_their_solo_runs(upstream):
    together = run_many(upstream, OPTIONS)
    for cfg, run in zip(OPTIONS, together):
        (alone,) = run_many(upstream, [cfg])
        assert_same_run(run, alone)


def test_sweep_configs_cover_every_pair():
    configs = sweep_configs(GRPOConfig(seed=4), [2, 8], 3)
    assert [(c.group_size, c.seed) for c in configs] == [(2, 4), (2, 5), (2, 6), (8, 4), (8, 5), (8, 6)]


# ---------------------------------------------------------------------------------------------
# The spread band


def frame(values, start=1, column="true_reward"):
    return pd.DataFrame({"iteration": np.arange(start, start + len(values)), column: values})


def test_band_of_three_runs():
    runs = [frame([1.0] * 4), frame([2.0] * 4), frame([3.0] * 4)]
    out = band(runs, "true_reward")
    assert list(out.columns) == ["iteration", "mean", "lo", "hi", "n"]
    np.testing.assert_array_equal(out["iteration"], [1, 2, 3, 4])
    np.testing.assert_allclose(out["mean"], 2.0)
    # quantiles interpolate linearly between order statistics: q = 0.1 -> 1 + 0.1 * (3 - 1) = 1.2
    np.testing.assert_allclose(out["lo"], 1.2)
    np.testing.assert_allclose(out["hi"], 2.8)
    np.testing.assert_array_equal(out["n"], 3)
    wide = band(runs, "true_reward", lo=0.0, hi=0.5)
    np.testing.assert_allclose(wide["lo"], 1.0)
    np.testing.assert_allclose(wide["hi"], 2.0)


def test_band_of_runs_of_different_lengths():
    runs = [frame([0.0, 1.0, 2.0]), frame([4.0, 5.0, 6.0, 7.0, 8.0]), frame([10.0, 20.0, 30.0, 40.0])]
    out = band(runs, "true_reward")
    np.testing.assert_array_equal(out["iteration"], [1, 2, 3, 4, 5])
    np.testing.assert_array_equal(out["n"], [3, 3, 3, 2, 1])
    np.testing.assert_allclose(out["mean"], [14 / 3, 26 / 3, 38 / 3, 47 / 2, 8.0])
    # three values a <= b <= c: q10 = a + 0.2 (b - a), q90 = b + 0.8 (c - b);
    # two values a <= b: q10 = a + 0.1 (b - a); one value: itself
    np.testing.assert_allclose(out["lo"], [0.8, 1.8, 2.8, 7 + 0.1 * 33, 8.0])
    np.testing.assert_allclose(out["hi"], [8.8, 17.0, 25.2, 7 + 0.9 * 33, 8.0])


def test_band_along_samples():
    runs = [frame([1.0, 3.0]).assign(samples=[64, 128]), frame([3.0, 5.0]).assign(samples=[64, 128])]
    out = band(runs, "true_reward", x="samples")
    np.testing.assert_array_equal(out["samples"], [64, 128])
    np.testing.assert_allclose(out["mean"], [2.0, 4.0])


# ---------------------------------------------------------------------------------------------
# compare_table


def fake_run(upstream, deltas):
    """A RunResult whose per-context true reward is the SFT policy's plus `deltas`."""
    sft = policy_metrics(upstream.sft.logp, upstream.problem, per_context=True)["true_reward"].numpy()
    per_context = pd.DataFrame({"context": range(5), "true_reward": sft + np.asarray(deltas)})
    return RunResult(GRPOConfig(), pd.DataFrame(), {}, per_context, upstream.sft.logp, {})


def test_compare_table_counts_and_means_on_fake_runs(upstream):
    grpo = [fake_run(upstream, [0.01, -0.01, 0.02, 0.0, -0.03]),
            fake_run(upstream, [0.02, 0.01, -0.01, 0.0, -0.03]),
            fake_run(upstream, [-0.01, 0.01, 0.03, 0.0, 0.001])]
    rlvr = [fake_run(upstream, [0.05, 0.05, 0.05, -0.05, 0.0])]
    table = compare_table(upstream, {"grpo": grpo, "rlvr": rlvr})
    assert list(table["context"]) == ["0", "1", "2", "3", "4", "overall"]
    ctx = table.iloc[:5]
    # by construction: context 0: runs 1, 2 beat SFT; 1: runs 2, 3; 2: runs 1, 3; 3: none; 4: run 3
    assert list(ctx["grpo_improved"]) == [2, 2, 2, 0, 1]
    assert list(ctx["rlvr_improved"]) == [1, 1, 1, 0, 0]
    assert (table["grpo_runs"] == 3).all() and (table["rlvr_runs"] == 1).all()
    np.testing.assert_array_equal(ctx["correct_token"], upstream.problem.correct_token.numpy())
    sft = ctx["sft"].to_numpy()
    np.testing.assert_allclose(ctx["grpo"], sft + np.array([0.02, 0.01, 0.04, 0.0, -0.059]) / 3,
                               atol=1e-6)
    np.testing.assert_allclose(ctx["grpo_min"], sft + [-0.01, -0.01, -0.01, 0.0, -0.03], atol=1e-6)
    np.testing.assert_allclose(ctx["grpo_max"], sft + [0.02, 0.01, 0.03, 0.0, 0.001], atol=1e-6)
    overall = table.iloc[5]
    for col in ("sft", "grpo", "rlvr", "best"):
        assert overall[col] == pytest.approx(ctx[col].mean(), abs=1e-9)
    # overall: a run improves when its mean over contexts beats SFT's (only run 3: -0.01, -0.01, +0.031)
    assert overall["grpo_improved"] == 1
    assert overall["rlvr_improved"] == 1


def test_compare_table_on_real_runs(upstream):
    grpo = run_many(upstream, seed_configs(GRPOConfig(iterations=60, lr=5e-3), 3))
    rlvr = run_many(upstream, seed_configs(RLVRConfig(iterations=60, lr=5e-3), 2))
    table = compare_table(upstream, {"grpo": grpo, "rlvr": rlvr})
    ctx, overall = table.iloc[:5], table.iloc[5]
    sft = ctx["sft"].to_numpy()
    per_run = np.stack([r.per_context["true_reward"].to_numpy() for r in grpo])
    np.testing.assert_array_equal(ctx["grpo_improved"], (per_run > sft).sum(0))
    np.testing.assert_allclose(ctx["grpo"], per_run.mean(0), rtol=1e-6)
    assert overall["grpo_improved"] == sum(r.per_context["true_reward"].mean() > sft.mean() for r in grpo)
    for col in ("sft", "grpo", "rlvr", "best"):
        assert overall[col] == pytest.approx(ctx[col].mean(), rel=1e-6)
    for col in ("sft", "grpo", "grpo_max", "rlvr", "rlvr_max"):
        assert (table["best"] >= table[col] - 1e-6).all(), col
    assert (ctx["grpo_min"] <= ctx["grpo"] + 1e-7).all() and (ctx["grpo"] <= ctx["grpo_max"] + 1e-7).all()


@pytest.mark.parametrize("configs", [
    # the second member takes one step per batch, the first two: the second's values at the step
    # it sits out overflow (k3 after a step of lr 1) and must not count
    [GRPOConfig(iterations=1, prompts=1, group_size=2, lr=1.0, kl_coef=0.0, clip_eps=1.0, epochs=2),
     GRPOConfig(iterations=1, prompts=1, group_size=2, lr=1.0, kl_coef=1.0, clip_eps=1.0, epochs=1,
                kl_estimator="k3")],
    # a member with no KL penalty but kl_estimator k3, next to one with a KL: it estimates nothing
    [RLVRConfig(iterations=12, prompts=4, group_size=9, lr=0.15, kl_coef=1e-300, clip_eps=0.05, epochs=3,
                seed=4048318, advantage_estimator="none", kl_estimator="k3", clip_eps_high=0.97,
                dual_clip=6.5, minibatches=3, ref_reset_every=3),
     GRPOConfig(iterations=12)],
])
def test_a_batchmate_cannot_make_a_member_diverge(upstream, configs):
    together = run_many(upstream, configs)
    for cfg, run in zip(configs, together):
        (alone,) = run_many(upstream, [cfg])
        assert alone.status == run.status == "" and len(run.history) == cfg.iterations
        assert_same_run(run, alone)
