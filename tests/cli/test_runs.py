"""The command line, run as a user runs it: `python -m grpo_core ...` in a subprocess.

Flag generation and range mapping are also checked in-process for every config field (cheap),
since a subprocess per field would take minutes.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from grpo_core import cli
from grpo_core.cli import flags, runs
from grpo_core.config import ConfigError, config_fields, field_range

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "grpo_core", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=timeout)


def numbers(value):
    """Every number inside a JSON value."""
    if isinstance(value, dict):
        return [n for v in value.values() for n in numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in numbers(v)]
    return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


def test_help_lists_every_subcommand():
    out = run_cli("--help")
    assert out.returncode == 0
    for name in ("sft", "rm", "grpo", "rlvr", "sweep", "compare", "notebook", "bench"):
        assert f"    {name} " in out.stdout, name


def test_grpo_help_has_generated_flags_with_ranges():
    sub = cli.build_parser()._subparsers._group_actions[0].choices
    text = " ".join(sub["grpo"].format_help().split())  # argparse wraps help lines
    for flag in ("--group-size", "--kl-coef", "--clip-eps", "--problem-seed", "--sft-lr",
                 "--rm-steps", "--seeds", "--json"):
        assert flag in text, flag
    assert "Range 2 to 64; default 8." in text  # group_size, from the dataclass metadata
    compare = " ".join(sub["compare"].format_help().split())
    assert "--grpo-group-size" in compare and "--rlvr-group-size" in compare
    assert "--group-sizes" in sub["sweep"].format_help()


def test_grpo_json():
    out = run_cli("grpo", "--iterations", "20", "--group-size", "4", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert {"config", "seeds", "sft", "final", "runs", "per_context", "seconds"} <= set(data)
    assert data["config"]["grpo"]["iterations"] == 20
    assert data["config"]["grpo"]["group_size"] == 4
    assert data["seeds"] == [0] and len(data["runs"]) == 1
    assert set(runs.FINAL_METRICS) <= set(data["final"])
    assert [row["context"] for row in data["per_context"]] == ["0", "1", "2", "3", "4", "overall"]
    assert all(math.isfinite(n) for n in numbers(data))
    assert 0 < data["final"]["true_reward"] <= data["per_context"][-1]["best"]


def test_the_largest_seed_with_several_seeds_wraps_to_zero():
    out = run_cli("grpo", "--seed", "2147483647", "--seeds", "3", "--iterations", "3", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["seeds"] == [2147483647, 0, 1]


@pytest.mark.parametrize("args, flag, valid", [
    (["grpo", "--group-size", "1"], "--group-size", "2 to 64"),
    (["grpo", "--lr", "abc"], "--lr", "1e-05 to 1.0"),
    (["rlvr", "--seeds", "0"], "--seeds", "1 to 64"),
])
def test_bad_flag_is_one_line_naming_flag_and_range(args, flag, valid):
    out = run_cli(*args)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"error: {flag} ") and valid in lines[0]
    assert "Traceback" not in out.stderr and out.stdout == ""


@pytest.mark.parametrize("args, start", [
    (["sweep", "--group-sizes", "2,1"], "error: --group-sizes must be 2 to 64"),
    (["sweep", "--group-sizes", "2,x"], "error: --group-sizes must be"),
    (["compare", "--rlvr-kl-coef", "-1"], "error: --rlvr-kl-coef must be 0.0 to 10.0"),
    (["grpo", "--group-size", "2.5"], "error: --group-size must be a whole number from 2 to 64"),
    (["grpo", "--advantage-estimator", "x"], "error: --advantage-estimator must be one of"),
    (["notebook", "--seed", "-1"], "error: --seed must be 0 to"),
    (["bench", "--rounds", "0"], "error: --rounds must be 1 to"),
    (["grpo", "--iterations", "5000", "--prompts", "64", "--group-size", "64", "--seeds", "64"],
     "error: iterations x epochs x prompts x group size"),
    (["grpo", "--no-such-flag"], "error: unrecognized arguments"),
])
def test_main_rejects_bad_input_before_any_work(args, start, capsys, monkeypatch):
    """In-process (cheap): main returns 2 and writes one error line, without training anything."""
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # leave this process as it was
    for name in ("run_many", "run_notebook", "build_upstream"):
        monkeypatch.setattr(f"grpo_core.pipeline.{name}", lambda *a, **k: pytest.fail("trained"))
    assert cli.main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1 and captured.err.startswith(start)


def test_every_config_flag_of_every_command_maps_to_its_field():
    """One flag builder for every command (seq and grid included): each generated flag sets its
    field (true/false for a bool); a bad value names that flag and its range."""
    parser = cli.build_parser()
    for command in cli.COMMANDS.values():
        required = ["--x", "lr=1e-3:1e-2:2", "--y", "kl_coef=0:0.1:2"] if command.name == "grid" else []
        parse = lambda *given: parser.parse_args([command.name, *required, *given])
        for group in command.groups:
            for f in config_fields(group.cls):
                if f.name in command.skip:
                    continue
                flag = group.flag(f.name)
                if isinstance(f.default, bool):
                    assert getattr(flags.make_config(group, parse(flag, "true")), f.name) is True, flag
                    assert getattr(flags.make_config(group, parse(flag, "off")), f.name) is False, flag
                    with pytest.raises(flags.UsageError, match=f"^{flag} must be true or false"):
                        flags.make_config(group, parse(flag, "maybe"))
                    continue
                choices, hi = f.metadata["choices"], f.metadata["hi"]
                good = choices[-1] if choices else hi
                try:
                    cfg = flags.make_config(group, parse(flag, str(good)))
                except flags.UsageError:  # a cross-field rule (e.g. minibatches <= prompts)
                    with pytest.raises(ConfigError):
                        group.cls(**{f.name: good})
                else:
                    assert getattr(cfg, f.name) == good, flag
                bad = "not-a-choice" if choices else str(hi * 2 + 1)
                with pytest.raises(flags.UsageError) as err:
                    flags.make_config(group, parse(flag, bad))
                assert str(err.value).startswith(f"{flag} must be {field_range(group.cls, f.name)}")


def test_notebook_json():
    out = run_cli("notebook", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert [c["context"] for c in data["contexts"]] == [0, 1, 2, 3, 4]
    for row in data["contexts"] + [data["overall"]]:
        assert set(row) >= {"sft", "grpo", "rlvr", "best"}
        for method in ("sft", "grpo", "rlvr"):
            assert row["best"] >= row[method] - 1e-6
    assert data["rlvr_accuracy"] >= 0.95
    assert data["compute_seconds"] > 0


def test_notebook_plain_ends_with_compute_seconds():
    out = run_cli("notebook")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[-1].startswith("compute_seconds: ")
    assert float(lines[-1].split(":")[1]) > 0
    assert any(line.split()[:1] == ["overall"] for line in lines)


def test_sweep_json():
    out = run_cli("sweep", "--iterations", "10", "--seeds", "2", "--group-sizes", "2,4", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["group_sizes"] == [2, 4] and data["seeds"] == 2
    assert [row["group_size"] for row in data["rows"]] == [2, 4]
    assert [row["runs"] for row in data["rows"]] == [2, 2]
    assert [row["samples"] for row in data["rows"]] == [10 * 8 * 2, 10 * 8 * 4]
    assert all(math.isfinite(n) for n in numbers(data))


def test_compare_json():
    out = run_cli("compare", "--grpo-iterations", "10", "--rlvr-iterations", "12", "--seeds", "2",
                  "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    grpo, rlvr = data["config"]["grpo"], data["config"]["rlvr"]
    assert (grpo["reward"], grpo["iterations"], grpo["group_size"]) == ("reward_model", 10, 8)
    assert (rlvr["reward"], rlvr["iterations"], rlvr["group_size"]) == ("verifiable", 12, 16)
    assert {row["grpo_runs"] for row in data["per_context"]} == {2}
