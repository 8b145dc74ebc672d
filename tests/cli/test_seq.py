"""`python -m grpo_core seq`: JSON output, every flag mapped to its field, one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from grpo_core import cli
from grpo_core.sequence import LOSS_TYPES
from grpo_core.cli import seq as seq_cli
from grpo_core.cli.flags import make_config

ROOT = Path(__file__).resolve().parents[2]
FIELDS = ("iteration", "reward", "length", "length_correct", "length_wrong", "kl_ref", "entropy")


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "grpo_core", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=timeout)


def test_seq_json_has_history_and_final_mean_over_seeds():
    proc = run_cli("seq", "--iterations", "30", "--seeds", "2", "--loss-type", "dr_grpo", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["config"]["seq"]["loss_type"] == "dr_grpo" and out["seeds"] == [0, 1]
    assert len(out["history"]) == 30
    assert [r["iteration"] for r in out["history"]] == list(range(1, 31))
    for record in (out["history"][-1], out["final"]):
        assert set(FIELDS[1:]) <= set(record)
    assert set(FIELDS) <= set(out["history"][0])
    runs = out["runs"]
    assert out["final"]["reward"] == pytest.approx(sum(r["reward"] for r in runs) / 2)
    assert out["history"][-1]["length_wrong"] == pytest.approx(out["final"]["length_wrong"])
    assert out["final"]["reward"] > out["sft"]["reward"]


def test_seq_plain_text_and_every_loss_type_accepted():
    parser = cli.build_parser()
    for name in LOSS_TYPES:
        level = ["--importance-sampling-level", "sequence"] if name == "luspo" else []
        args = parser.parse_args(["seq", "--loss-type", name, *level])
        assert make_config(seq_cli.RUN, args).loss_type == name
    proc = run_cli("seq", "--iterations", "5", "--reward", "reward_model", "--rm-steps", "20")
    assert proc.returncode == 0, proc.stderr
    assert "Final exact metrics" in proc.stdout and "rm_reward" in proc.stdout


@pytest.mark.parametrize("args, start", [
    (["--loss-type", "token"], "error: --loss-type must be one of grpo, bnpo"),
    (["--loss-type", "luspo"], "error: --importance-sampling-level must be"),
    (["--mask-truncated", "maybe"], "error: --mask-truncated must be true or false"),
    (["--task-max-length", "9"], "error: --task-max-length must be 2 to 8"),
    (["--task-alphabet-size", "6", "--task-max-length", "8"], "error: --task-max-length"),
    (["--seeds", "0"], "error: --seeds must be 1 to"),
    (["--group-size", "x"], "error: --group-size must be 2 to 64"),
    (["--iterations", "5000", "--group-size", "64", "--prompts", "64", "--seeds", "8"], "error: iterations x"),
    (["--no-such-flag"], "error: unrecognized arguments"),
])
def test_bad_seq_flags_are_one_line_exit_2(args, start, capsys):
    assert cli.main(["seq", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1 and captured.err.startswith(start), captured.err
