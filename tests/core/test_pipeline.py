"""The workflow (pipeline.py, problem.py): the notebook's settings learn, state dicts, bands, per-context tables."""
from __future__ import annotations

from tests.helpers import sequential

import numpy as np
import pandas as pd
import pytest
import torch
import grpo_core
from grpo_core import (GRPOConfig, ProblemConfig, RLVRConfig,
                       RewardModelConfig, SFTConfig, make_problem, policy_metrics, reference_metrics,
                       run_notebook, train_sft)
from grpo_core import (RunResult, band, compare_table, run_many, seed_configs, sweep_configs)


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


def test_sweep_configs_cover_every_pair():
    configs = sweep_configs(GRPOConfig(seed=4), [2, 8], 3)
    assert [(c.group_size, c.seed) for c in configs] == [(2, 4), (2, 5), (2, 6), (8, 4), (8, 5), (8, 6)]


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
