"""--export-trl on grpo, rlvr and seq: the settings, no training; bad input is one line."""
from __future__ import annotations

import json
from grpo_core import cli
from grpo_core.sequence import SeqTaskConfig


TASK = SeqTaskConfig(max_length=5)


def test_cli_seq_export_trl_prints_the_settings_without_training(capsys):
    assert cli.main(["seq", "--loss-type", "token-mean", "--clip-eps-high", "0.28",
                     "--task-max-length", "4", "--export-trl", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["command"] == "seq" and out["export"] == "trl" and "history" not in out
    assert out["kwargs"]["loss_type"] == "bnpo" and out["kwargs"]["epsilon_high"] == 0.28
    assert out["kwargs"]["max_completion_length"] == 4 == out["task"]["max_length"]
    assert out["config"]["loss_type"] == "token-mean"
    assert cli.main(["seq", "--loss-type", "seq-mean-token-sum-norm", "--export-trl"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("from trl import GRPOConfig") and "loss_type='dr_grpo'" in text
    assert "#   loss_type: TRL has no loss_type 'seq-mean-token-sum-norm'" in text
    assert "bf16=False,  # the explorer trains in float32" in text


def test_cli_grpo_export_trl_and_bad_input(capsys):
    assert cli.main(["rlvr", "--export-trl", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["command"] == "rlvr" and out["kwargs"]["num_generations"] == 16 and "reward" in out["unmapped"]
    assert cli.main(["seq", "--loss-type", "luspo", "--export-trl"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --importance-sampling-level must be one of token, sequence: luspo needs "
        "importance_sampling_level = sequence (its loss scales each response's one sequence loss by |y|)")
