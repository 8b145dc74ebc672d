"""The landscape runner (methods/landscape.py): its contract, members equal solo runs, every method learns."""
from __future__ import annotations

import json
from pathlib import Path
import numpy as np
import pytest
import torch
from grpo_core.config import ConfigError
from grpo_core.methods.dpo import train_dpo, train_online_dpo
from grpo_core.methods.landscape import (DEFAULT_RESPONSES, METHOD_NAMES, METHODS, landscape,
                                         landscape_configs, param_counts)
from grpo_core.methods.ppo import PPOConfig, responses_per_iteration
from grpo_core.pipeline import run_many


ROOT = Path(__file__).resolve().parents[2]


SMALL = 64 * 40      # 40 iterations of GRPO


@pytest.fixture(scope="module")
def small(upstream):
    return landscape(METHOD_NAMES, seeds=2, responses=SMALL, up=upstream)


@pytest.fixture(scope="module")
def defaults(upstream):
    return landscape(METHOD_NAMES, seeds=8, up=upstream)


def test_table_and_histories_follow_the_contract(small, upstream):
    t = small.table.set_index("method")
    assert list(t.index) == list(METHOD_NAMES)
    counts = param_counts(upstream, PPOConfig().critic_hidden)
    for m in METHOD_NAMES:
        spec, row, hists = METHODS[m], t.loc[m], small.histories[m]
        assert len(hists) == 2 and row["seeds"] == 2
        finals = [h["true_reward"].iloc[-1] for h in hists]
        assert row["true_reward"] == pytest.approx(np.mean(finals))
        assert row["true_reward_p10"] <= row["true_reward"] <= row["true_reward_p90"]
        assert row["kl"] == pytest.approx(np.mean([h["kl_ref"].iloc[-1] for h in hists]))
        assert row["networks"] == len(spec.networks)
        assert row["trained_params"] == sum(counts[n] for n in spec.networks if n != "reference")
        for h in hists:
            assert {"iteration", "responses", "true_reward", "kl_ref"} <= set(h.columns)
            assert np.isfinite(h["true_reward"]).all()
        # the histories' last rows are the runs' exact final policies
        for r, h in zip(small.runs[m], hists):
            assert float(r.per_context["true_reward"].mean()) == pytest.approx(h["true_reward"].iloc[-1], abs=1e-6)
        band = small.band(m)
        assert len(band) == len(hists[0]) and (band["n"] == 2).all()
    # budgets: every online method generates exactly the budget (whole iterations of it)
    for m in METHOD_NAMES:
        cfg = small.runs[m][0].config
        if METHODS[m].online:
            per = cfg.samples_per_iteration if m == "online_dpo" else responses_per_iteration(cfg)
            assert t.loc[m, "responses"] == (SMALL // per) * per == t.loc[m, "iterations"] * per
    assert t.loc["grpo", "responses"] == SMALL
    assert t.loc["ppo", "trained_params"] > t.loc["grpo", "trained_params"] > t.loc["dpo", "trained_params"]
    assert t.loc["ppo", "networks"] == 4 and t.loc["grpo", "networks"] == 3 and t.loc["dpo", "networks"] == 2
    # PPO and REINFORCE++ answer each prompt once; ReMax's greedy responses are counted
    assert (small.runs["ppo"][0].config.prompts, small.runs["ppo"][0].config.group_size) == (64, 1)
    remax = small.runs["remax"][0]
    assert remax.history["samples"].diff().dropna().eq(8 * 7 + 8).all()
    assert t.loc["dpo", "responses"] == 0            # trained on the reward model's pairs
    assert t.loc["dpo", "iterations"] == 5 * upstream.rm.config.steps
    assert small.sft == pytest.approx(float(upstream.sft.history["true_reward"].iloc[-1]), abs=1e-6)
    assert small.best == pytest.approx(float(upstream.problem.best_reward.mean()))
    data = json.loads(json.dumps(small.to_json()))
    for row in data["methods"]:
        assert {"method", "true_reward", "true_reward_p10", "true_reward_p90", "kl", "responses",
                "seconds", "networks", "trained_params"} <= set(row)


def test_members_equal_the_same_method_trained_alone(small, upstream):
    """Each method's seed-1 run, trained alone, is the landscape's member (float tolerance)."""
    for m in METHOD_NAMES:
        member = small.runs[m][1]
        cfg = member.config
        engine = METHODS[m].engine
        if engine == "grpo":
            solo = run_many(upstream, [cfg])[0]
        elif engine == "dpo":
            solo = train_dpo(upstream.problem, upstream.sft, upstream.rm.config, [cfg], upstream.rm.scores)[0]
        else:
            solo = train_online_dpo(upstream.problem, upstream.sft, upstream.rm.scores, [cfg])[0]
        torch.testing.assert_close(solo.final_logp, member.final_logp, atol=1e-5, rtol=1e-5, msg=m)
        np.testing.assert_allclose(solo.history["true_reward"], member.history["true_reward"], atol=1e-5)


def test_every_method_improves_over_sft_at_defaults(defaults):
    """At defaults, 8 seeds each: every method's mean final true reward is above SFT's."""
    t = defaults.table.set_index("method")
    for m in METHOD_NAMES:
        assert t.loc[m, "true_reward"] > defaults.sft + 0.01, m
        assert t.loc[m, "true_reward"] <= defaults.best + 1e-6, m
    assert (t["responses"][[m for m in METHOD_NAMES if METHODS[m].online]] == DEFAULT_RESPONSES).all()


def test_bad_settings_name_what_to_change():
    with pytest.raises(ConfigError, match="methods"):
        landscape_configs(["grpo", "nope"])
    with pytest.raises(ConfigError, match="seeds"):
        landscape_configs(["grpo"], seeds=0)
    with pytest.raises(ConfigError, match="responses"):
        landscape_configs(["grpo"], responses=10)
