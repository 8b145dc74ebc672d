"""`python -m grpo_core grid`: the JSON contract and one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
import pytest


ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "grpo_core", "grid", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=300)


def test_cli_json_contract():
    out = run_cli("--method", "rlvr", "--x", "lr=1e-3:1e-2:2:log", "--y", "group_size=4:8:2",
                  "--seeds", "2", "--iterations", "20", "--chunk-runs", "4", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["backend"] == "local" and data["runs"] == 8 and data["seconds"] > 0
    assert data["method"] == "rlvr" and data["chunks"] == 2
    assert [(c["x"], c["y"]) for c in data["cells"]] == [(0.001, 4), (0.001, 8), (0.01, 4), (0.01, 8)]
    for cell in data["cells"]:
        assert {"x", "y", "true_reward_mean", "true_reward_p10", "true_reward_p90", "kl_mean",
                "correct_prob_mean", "rm_reward_mean", "entropy_mean"} <= set(cell)
        assert 0 <= cell["true_reward_p10"] <= cell["true_reward_mean"] <= cell["true_reward_p90"] <= 1
    assert "chunk 1/2 done" in out.stderr and "chunk 2/2 done: 8/8 runs" in out.stderr


@pytest.mark.parametrize("args, message", [
    (["--x", "lr=1e-4:1e-1", "--y", "kl_coef=0:0.5:8"], "--x: axis 'lr=1e-4:1e-1' must be field=lo:hi:count[:log], e.g. lr=1e-4:1e-1:8:log"),
    (["--x", "lr=1e-4:1e-1:8:log", "--y", "beta=0:0.5:8"], "--y: 'beta' is not a setting of GRPOConfig"),
    (["--x", "lr=0.5:1e-1:8", "--y", "kl_coef=0:0.5:8"], "--x: lr: the low end 0.5 is above the high end 0.1"),
    (["--x", "lr=1e-4:1e-1:8:log", "--y", "kl_coef=0:0.5:99"], "--y: kl_coef: the number of values must be 1 to 16, got 99"),
    (["--x", "lr=1e-4:1e-1:8:log", "--y", "kl_coef=0:0.5:8", "--seeds", "0"], "--seeds must be 1 to 16, got 0"),
    (["--x", "lr=1e-4:1e-1:8:log", "--y", "kl_coef=0:0.5:8", "--address", "auto"], "--address needs --backend ray"),
    (["--x", "lr=1e-4:1e-1:2:log", "--y", "kl_coef=0:0.5:2", "--backend", "ray", "--address",
      "127.0.0.1:1"], "could not connect to Ray at 127.0.0.1:1"),
])
def test_cli_bad_specs_exit_2_with_one_line(args, message):
    out = run_cli(*args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}") and out.stdout == ""
