"""`python -m grpo_core landscape`: the JSON contract, ppo_rlvr on request, bad input before any work."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
import pytest
import torch
from grpo_core import cli
from grpo_core.methods.landscape import (METHOD_NAMES)


ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "grpo_core", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=300)


def test_cli_landscape_json():
    out = run_cli("landscape", "--methods", "grpo,dpo,rloo", "--seeds", "2", "--responses", "1280", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert [m["method"] for m in data["methods"]] == ["grpo", "dpo", "rloo"]
    assert 0 < data["sft"] < data["best"] <= 1
    grpo = data["methods"][0]
    assert grpo["responses"] == 1280 and grpo["networks"] == 3
    for m in data["methods"]:
        assert m["true_reward_p10"] <= m["true_reward"] <= m["true_reward_p90"]
        assert m["seconds"] > 0 and m["kl"] >= 0


@pytest.mark.parametrize("args, start", [
    (["landscape", "--methods", "grpo,bogus"], "error: --methods must be comma-separated names"),
    (["landscape", "--responses", "10"], "error: --responses 10 responses give 0 iterations"),
    (["landscape", "--seeds", "0"], "error: --seeds must be 1 to"),
    (["landscape", "--dpo-data", "x"], "error: argument --dpo-data: invalid choice"),
])
def test_cli_landscape_bad_input_is_one_line_before_any_work(args, start, capsys, monkeypatch):
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    monkeypatch.setattr("grpo_core.pipeline.build_upstream", lambda *a, **k: pytest.fail("trained"))
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith(start), err


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
