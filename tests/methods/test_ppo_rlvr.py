"""PPO with its critic on the verifier (ppo_rlvr): opt-in, learns, same budget, no reward model."""
from __future__ import annotations

import pytest
from grpo_core.methods.landscape import ALL_METHODS, METHOD_NAMES, landscape, param_counts
from grpo_core.methods.ppo import PPOConfig


RESPONSES = 4000


@pytest.fixture(scope="module")
def res(upstream):
    return landscape(["ppo", "rlvr", "ppo_rlvr"], seeds=4, responses=RESPONSES, up=upstream)


def test_ppo_rlvr_is_opt_in():
    assert "ppo_rlvr" in ALL_METHODS and "ppo_rlvr" not in METHOD_NAMES
    assert [m for m in ALL_METHODS if m in METHOD_NAMES] == list(METHOD_NAMES)   # the table's order kept


def test_ppo_rlvr_trains_a_critic_on_the_verifier_and_beats_sft(res, upstream):
    t = res.table.set_index("method")
    row = t.loc["ppo_rlvr"]
    assert row.true_reward > res.sft + 0.01                         # mean over the 4 seeds
    assert row.improved >= 3
    for run, ppo in zip(res.runs["ppo_rlvr"], res.runs["ppo"]):
        assert run.config.reward == "verifiable" and run.config.advantage_estimator == "critic"
        assert run.config == ppo.config.replace(reward="verifiable")    # PPO (RLHF) but for the reward
        # the verifier, not the reward model: far more mass on the correct token (0.9995 vs 0.83)
        assert run.per_context["correct_prob"].mean() > ppo.per_context["correct_prob"].mean() + 0.1
    # the verifier rewards only the correct token: every seed puts more probability there
    finals = [h["correct_prob"].iloc[-1] for h in res.histories["ppo_rlvr"]]
    starts = [h["correct_prob"].iloc[0] for h in res.histories["ppo_rlvr"]]
    assert min(f - s for f, s in zip(finals, starts)) > 0.05, (starts, finals)


def test_ppo_rlvr_spends_the_same_budget_and_holds_no_reward_model(res, upstream):
    t = res.table.set_index("method")
    per_iteration = PPOConfig().prompts * PPOConfig().group_size
    assert t.loc["ppo_rlvr", "responses"] == (RESPONSES // per_iteration) * per_iteration == t.loc["ppo", "responses"]
    assert abs(t.loc["ppo_rlvr", "responses"] - t.loc["rlvr", "responses"]) < per_iteration
    counts = param_counts(upstream, PPOConfig().critic_hidden)
    assert t.loc["ppo_rlvr", "networks"] == 3 and t.loc["ppo", "networks"] == 4
    assert t.loc["ppo_rlvr", "trained_params"] == counts["policy"] + counts["critic"]
    assert t.loc["ppo_rlvr", "reward_source"] == t.loc["rlvr", "reward_source"]
