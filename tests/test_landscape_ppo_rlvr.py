"""PPO on the verifier ("ppo_rlvr"): the landscape's opt-in method next to GRPO + RLVR. It trains a
critic on the verifier's 0/1 reward (no reward model), spends the same budget as the other online
methods, improves over SFT, and is chosen with --methods (the default list stays the notebook's nine)."""
from __future__ import annotations

import json

import pytest
import torch

from grpo_core import cli
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
        assert not torch.equal(run.final_logp, ppo.final_logp)
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


def test_cli_accepts_ppo_rlvr(capsys):
    assert cli.main(["landscape", "--methods", "ppo_rlvr,rlvr", "--seeds", "2", "--responses", "1280",
                     "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    rows = {m["method"]: m for m in data["methods"]}
    assert list(rows) == ["ppo_rlvr", "rlvr"]
    assert rows["ppo_rlvr"]["responses"] == 1280 and rows["ppo_rlvr"]["networks"] == 3
    assert rows["ppo_rlvr"]["true_reward_p10"] <= rows["ppo_rlvr"]["true_reward"] <= rows["ppo_rlvr"]["true_reward_p90"]


def test_cli_default_is_the_notebooks_table_and_help_names_ppo_rlvr(capsys, monkeypatch):
    monkeypatch.setattr("grpo_core.pipeline.build_upstream", lambda *a, **k: pytest.fail("trained"))
    assert cli.main(["landscape", "--methods", "ppo_rlvr,bogus"]) == 2
    assert "ppo_rlvr" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["landscape", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"default the notebook's table: {', '.join(METHOD_NAMES)}" in help_text
