"""Command line: the app's pages as subcommands, with flags generated from the config dataclasses.

    python -m grpo_core grpo --group-size 16 --kl-coef 0.1 --seeds 8
    python -m grpo_core sweep --group-sizes 2,4,8,16 --json
    python -m grpo_core notebook
    python -m grpo_core grid --x lr=1e-4:1e-1:8:log --y kl_coef=0:0.5:8 --seeds 4 [--backend ray]
    python -m grpo_core grpo --clip-eps-high 0.28 --export-trl    # TRL GRPOConfig arguments, no training

Flags come from config_fields(cls): GRPO/RLVR settings are unprefixed (--group-size, --kl-coef),
upstream ones are prefixed (--problem-seed, --sft-lr, --rm-steps), and `compare` prefixes its two
methods (--grpo-lr, --rlvr-lr). Values are range-checked by constructing the config itself, so a
range is defined once, in config.py. Bad input ends with one `error: ...` line and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .config import (ConfigError, GRPOConfig, ProblemConfig, RLVRConfig, RewardModelConfig,
                     SFTConfig, check_budget, config_fields, field_range)

MAX_SEEDS = 64
MAX_ROUNDS = 20
FINAL_METRICS = ("true_reward", "rm_reward", "kl_ref", "entropy", "correct_prob")


class UsageError(Exception):
    """Bad input from the command line; its message is the whole error line (without 'error: ')."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block), so every bad input reads the same way."""

    def error(self, message):
        raise UsageError(message)


@dataclass(frozen=True)
class Group:
    """One config dataclass on the command line: its key in the output and its flag prefix."""

    key: str
    cls: type
    prefix: str = ""
    title: str = ""

    def flag(self, name: str) -> str:
        return "--" + self.prefix + name.replace("_", "-")

    def dest(self, name: str) -> str:
        return f"{self.key}__{name}"


PROBLEM = Group("problem", ProblemConfig, "problem-", "task (ProblemConfig)")
SFT = Group("sft", SFTConfig, "sft-", "supervised fine-tuning (SFTConfig)")
RM = Group("rm", RewardModelConfig, "rm-", "reward model (RewardModelConfig)")
UPSTREAM = (PROBLEM, SFT, RM)
GRPO = Group("grpo", GRPOConfig, "", "GRPO run (GRPOConfig)")
RLVR = Group("rlvr", RLVRConfig, "", "RLVR run (RLVRConfig)")
COMPARE_GRPO = Group("grpo", GRPOConfig, "grpo-", "GRPO runs (GRPOConfig)")
COMPARE_RLVR = Group("rlvr", RLVRConfig, "rlvr-", "RLVR runs (RLVRConfig)")

COMMANDS = {  # name -> (help, config groups, default --seeds or None)
    "sft": ("Train the SFT policy and show its exact metrics.", (PROBLEM, SFT), None),
    "rm": ("Train the reward model and show its pairwise accuracy.", (PROBLEM, RM), None),
    "grpo": ("GRPO on the learned reward model.", (*UPSTREAM, GRPO), 1),
    "rlvr": ("GRPO with the verifiable reward (RLVR).", (*UPSTREAM, RLVR), 1),
    "sweep": ("GRPO at several group sizes, several seeds each.", (*UPSTREAM, GRPO), 8),
    "compare": ("GRPO vs RLVR, per context, several seeds each.",
                (*UPSTREAM, COMPARE_GRPO, COMPARE_RLVR), 8),
    "landscape": ("Every method (PPO, REINFORCE, RLOO, GRPO, RLVR, DPO, ...) side by side, "
                  "several seeds each, on one response budget.", UPSTREAM, 8),
}
SKIP = {"sweep": {"group_size"}}  # sweep takes --group-sizes instead


def _help(group: Group, f) -> str:
    text = f"{f.metadata['help']} Range {field_range(group.cls, f.name)}; default {f.default}."
    return text.replace("%", "%%")


EXPORT_HELP = ("Print the run's settings as Hugging Face TRL GRPOConfig arguments (and the knobs "
               "TRL lacks) instead of training.")


def add_export_flag(p) -> None:
    p.add_argument("--export-trl", action="store_true", help=EXPORT_HELP)


def export_output(command: str, cfg, task=None) -> tuple[dict, str]:
    """--export-trl: the TRL GRPOConfig equivalent of cfg (see export.to_trl), as JSON or Python."""
    from .export import to_trl
    export = to_trl(cfg, task)
    return {"command": command, "export": "trl", "config": cfg.to_dict(), **export.to_dict()}, export.snippet()


def build_parser() -> Parser:
    parser = Parser(prog="python -m grpo_core",
                    description="Train and compare GRPO on the toy task from the command line.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (text, groups, seeds) in COMMANDS.items():
        p = sub.add_parser(name, help=text, description=text)
        for group in groups:
            arg_group = p.add_argument_group(group.title)
            for f in config_fields(group.cls):
                if f.name in SKIP.get(name, ()):
                    continue
                choices = f.metadata.get("choices")
                metavar = "{" + ",".join(choices) + "}" if choices else type(f.default).__name__.upper()
                arg_group.add_argument(group.flag(f.name), dest=group.dest(f.name), default=None,
                                       metavar=metavar, help=_help(group, f))
        if seeds is not None:
            p.add_argument("--seeds", default=str(seeds), metavar="N",
                           help=f"Runs with seeds seed .. seed+N-1 (wrapping past 2147483647 to 0), "
                                f"trained as one batch. "
                                f"Range 1 to {MAX_SEEDS}; default {seeds}.")
        if name == "landscape":
            from .methods.dpo import DPO_DATA
            from .methods.landscape import ALL_METHODS, DEFAULT_RESPONSES, METHOD_NAMES
            p.add_argument("--methods", default=",".join(METHOD_NAMES), metavar="M,M,...",
                           help=f"Comma-separated methods, among {', '.join(ALL_METHODS)}; "
                                f"default the notebook's table: {', '.join(METHOD_NAMES)} "
                                f"(ppo_rlvr, PPO on the verifier, on request).")
            p.add_argument("--responses", default=str(DEFAULT_RESPONSES), metavar="BUDGET",
                           help=f"Responses each online run generates (its iterations are this over "
                                f"its responses per iteration); default {DEFAULT_RESPONSES} "
                                f"(GRPO's 500 x 8 x 8).")
            p.add_argument("--dpo-data", default=DPO_DATA[0], choices=DPO_DATA,
                           help="Offline DPO's pairs: the reward model's own (default) or pairs "
                                "sampled from the reference policy.")
        if name == "sweep":
            p.add_argument("--group-sizes", default="2,4,8,16", metavar="G,G,...",
                           help="Comma-separated group sizes to sweep, each 2 to 64; default 2,4,8,16.")
        if name in ("grpo", "rlvr"):
            add_export_flag(p)
        p.add_argument("--json", action="store_true", help="Print one JSON object instead of tables.")
    p = sub.add_parser("notebook", help="Replay the tutorial notebook's workflow and compare.",
                       description="Replay the notebook: SFT, reward model, GRPO, group-size "
                                   "sweep and RLVR with its hyperparameters.")
    p.add_argument("--seed", default="42", metavar="INT",
                   help=f"Seed of every stage. Range {field_range(ProblemConfig, 'seed')}; default 42.")
    p.add_argument("--json", action="store_true", help="Print one JSON object instead of tables.")
    from .grid_cli import add_grid_parser
    add_grid_parser(sub)
    p = sub.add_parser("bench", help="Time the core's workloads and print the figures.",
                       description="Time the notebook workload, a 64-run sweep and one default "
                                   "GRPO run; optionally against the seed notebook script.")
    p.add_argument("--reference", default=None, metavar="PATH",
                   help="Seed notebook script to time for reference; default "
                        "../shared/bench/seed_notebook.py if it exists.")
    p.add_argument("--rounds", default="3", metavar="N",
                   help=f"Rounds of the notebook workload (median). Range 1 to {MAX_ROUNDS}; default 3.")
    p.add_argument("--json", action="store_true", help="Print one JSON object instead of lines.")
    from .sequence.cli import add_parser as add_seq_parser
    add_seq_parser(sub)
    return parser


# ---- turning flags into configs ---------------------------------------------------------------

def _number(kind: type, raw: str):
    """Parse a flag's text as the field's kind; None when it is not a number."""
    try:
        return int(raw) if kind is int else float(raw)
    except ValueError:
        try:
            return float(raw)  # "1e3" for an int field; the config checks it is whole
        except ValueError:
            return None


def _range_error(flag: str, detail: str, valid: str) -> UsageError:
    """One message naming the flag and its valid range, whatever the config said."""
    if detail.startswith("must be"):
        return UsageError(f"{flag} {detail}")
    return UsageError(f"{flag} must be {valid}: {detail}")


def make_config(group: Group, args: argparse.Namespace, **overrides):
    """Build group.cls from the flags the user gave (others keep the dataclass defaults)."""
    values, flags = {}, {}
    for f in config_fields(group.cls):
        raw = getattr(args, group.dest(f.name), None)
        flags[f.name] = group.flag(f.name)
        if raw is None:
            continue
        kind = type(f.default)
        value = raw if kind is str else _number(kind, raw)
        if value is None:
            raise UsageError(f"{group.flag(f.name)} must be {field_range(group.cls, f.name)}, "
                             f"got {raw!r}")
        values[f.name] = value
    values.update(overrides)
    try:
        return group.cls(**values)
    except ConfigError as e:
        detail = str(e).split(": ", 1)[1]
        raise _range_error(flags.get(e.field_name, e.field_name), detail,
                           field_range(group.cls, e.field_name)) from None


def _int_flag(flag: str, raw: str, lo: int, hi: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not lo <= value <= hi:
        raise UsageError(f"{flag} must be {lo} to {hi}, got {raw if value is not None else repr(raw)}")
    return value


def _group_sizes(raw: str, base: GRPOConfig) -> list[int]:
    valid = field_range(GRPOConfig, "group_size")
    sizes = []
    for part in raw.split(","):
        value = _number(int, part.strip())
        if value is None:
            raise UsageError(f"--group-sizes must be comma-separated numbers, each {valid}, got {raw!r}")
        try:
            sizes.append(base.replace(group_size=value).group_size)
        except ConfigError as e:
            raise _range_error("--group-sizes", str(e).split(": ", 1)[1], valid) from None
    return sizes


def _seeded(cfg: GRPOConfig, n_seeds: int) -> list[GRPOConfig]:
    """n_seeds copies of cfg with consecutive seeds (mod 2**31, so any valid seed works)."""
    from .pipeline import seed_configs
    return seed_configs(cfg, n_seeds)


def _budget(configs) -> None:
    try:
        check_budget(configs)
    except ConfigError as e:
        raise UsageError(str(e).split(": ", 1)[1]) from None


# ---- output helpers -----------------------------------------------------------------------------

def _plain(value):
    """JSON-safe Python value: numpy scalars to Python, non-finite floats to None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.generic,)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _records(df: pd.DataFrame) -> list[dict]:
    return [_plain(row) for row in df.to_dict(orient="records")]


def _table(df: pd.DataFrame) -> str:
    if "correct_token" in df:  # compare_table marks the overall row's token as -1
        df = df.assign(correct_token=[str(t) if t >= 0 else "" for t in df["correct_token"]])
    return df.to_string(index=False, float_format=lambda x: f"{x:.4f}")


def _configs(groups, configs) -> dict:
    return {g.key: c.to_dict() for g, c in zip(groups, configs)}


def _upstream(args):
    from .pipeline import build_upstream
    problem, sft, rm = (make_config(g, args) for g in UPSTREAM)
    return (problem, sft, rm), lambda: build_upstream(problem, sft, rm)


def _final(results) -> dict:
    """Mean over runs of each exact metric at the last iteration."""
    return {m: float(np.mean([r.history[m].iloc[-1] for r in results])) for m in FINAL_METRICS}


def _stopped_notes(results) -> list[str]:
    return [f"seed {r.config.seed}: {r.stopped}" for r in results if r.stopped]


# ---- subcommands --------------------------------------------------------------------------------

def cmd_sft(args) -> tuple[dict, str]:
    from .metrics import policy_metrics
    from .problem import make_problem
    from .sft import train_sft
    pcfg, scfg = make_config(PROBLEM, args), make_config(SFT, args)
    start = time.perf_counter()
    problem = make_problem(pcfg)
    result = train_sft(problem, scfg)
    seconds = time.perf_counter() - start
    final = {k: _plain(v) for k, v in result.history.iloc[-1].items()}
    ctx = policy_metrics(result.logp, problem, per_context=True)
    per_context = pd.DataFrame({"context": range(problem.n_contexts),
                                "correct_token": problem.correct_token.numpy(),
                                **{k: v.numpy() for k, v in ctx.items()},
                                "best": problem.best_reward.numpy()})
    out = {"command": "sft", "config": {"problem": pcfg.to_dict(), "sft": scfg.to_dict()},
           "final": final, "best_reward": float(problem.best_reward.mean()),
           "per_context": _records(per_context), "seconds": seconds}
    text = "\n".join([
        f"SFT: {scfg.epochs} epochs x {scfg.steps_per_epoch} steps, batch {scfg.batch_size}",
        f"final loss {final['loss']:.4f}  true_reward {final['true_reward']:.4f} "
        f"(best possible {out['best_reward']:.4f})  kl_true {final['kl_true']:.4f}  "
        f"entropy {final['entropy']:.4f}",
        "", "Per context (exact):", _table(per_context), "", f"trained in {seconds:.2f}s"])
    return out, text


def cmd_rm(args) -> tuple[dict, str]:
    from .problem import make_problem
    from .reward_model import train_reward_model
    pcfg, rcfg = make_config(PROBLEM, args), make_config(RM, args)
    start = time.perf_counter()
    result = train_reward_model(make_problem(pcfg), rcfg)
    seconds = time.perf_counter() - start
    final = {k: _plain(v) for k, v in result.history.iloc[-1].items()}
    out = {"command": "rm", "config": {"problem": pcfg.to_dict(), "rm": rcfg.to_dict()},
           "final": final, "seconds": seconds}
    text = "\n".join([
        f"Reward model: {rcfg.steps} steps x {rcfg.batch_pairs} comparisons",
        f"final loss {final['loss']:.4f}  pairwise_accuracy {final['pairwise_accuracy']:.4f} "
        f"(fraction of token pairs ranked as the true reward ranks them)",
        f"trained in {seconds:.2f}s"])
    return out, text


def _run_method(args, group: Group, name: str) -> tuple[dict, str]:
    """grpo and rlvr: N seeds of one config, one batch (or, with --export-trl, its TRL settings)."""
    from .pipeline import compare_table, reference_metrics, run_many
    upstream_cfgs, build = _upstream(args)
    cfg = make_config(group, args)
    if args.export_trl:
        return export_output(name, cfg)
    n_seeds = _int_flag("--seeds", args.seeds, 1, MAX_SEEDS)
    configs = _seeded(cfg, n_seeds)
    _budget(configs)
    start = time.perf_counter()
    up = build()
    results = run_many(up, configs)
    seconds = time.perf_counter() - start
    sft = {k: float(v) for k, v in reference_metrics(up).items() if k in FINAL_METRICS}
    final = _final(results)
    table = compare_table(up, {name: results})
    runs = [{"seed": r.config.seed, "iterations": r.completed_iterations, "stopped": r.stopped,
             **{m: float(r.history[m].iloc[-1]) for m in FINAL_METRICS}} for r in results]
    out = {"command": name, "config": {**_configs(UPSTREAM, upstream_cfgs), name: cfg.to_dict()},
           "seeds": [c.seed for c in configs], "sft": sft, "final": final, "runs": runs,
           "per_context": _records(table), "seconds": seconds}
    cols = ["context", "correct_token", "sft", name]
    if n_seeds > 1:
        cols += [f"{name}_min", f"{name}_max", f"{name}_improved"]
    cols.append("best")
    shown = table[cols].rename(columns={f"{name}_improved": "beat_sft"})
    label = name.upper()
    lines = [f"{label}: {n_seeds} run(s), seeds {configs[0].seed}..{configs[-1].seed}; "
             f"{cfg.iterations} iterations x {cfg.prompts} prompts x G={cfg.group_size}, "
             f"{cfg.epochs} epoch(s), lr {cfg.lr:g}, kl_coef {cfg.kl_coef:g}, clip_eps {cfg.clip_eps:g}",
             "", "Final exact metrics (mean over runs) vs the SFT start:",
             _table(pd.DataFrame({"metric": list(final), "sft": [sft[m] for m in final],
                                  name: list(final.values())})),
             "", "Per context, exact expected true reward:", _table(shown)]
    lines += ["", *_stopped_notes(results), f"trained in {seconds:.2f}s"]
    return out, "\n".join(lines)


def cmd_grpo(args):
    return _run_method(args, GRPO, "grpo")


def cmd_rlvr(args):
    return _run_method(args, RLVR, "rlvr")


def cmd_sweep(args) -> tuple[dict, str]:
    from .pipeline import run_many, sweep_configs
    upstream_cfgs, build = _upstream(args)
    cfg = make_config(GRPO, args)
    n_seeds = _int_flag("--seeds", args.seeds, 1, MAX_SEEDS)
    sizes = _group_sizes(args.group_sizes, cfg)
    configs = sweep_configs(cfg, sizes, n_seeds)
    _budget(configs)
    start = time.perf_counter()
    results = run_many(build(), configs)
    seconds = time.perf_counter() - start
    rows = []
    for g in sizes:
        runs = [r for r in results if r.config.group_size == g]
        final = np.array([r.history["true_reward"].iloc[-1] for r in runs])
        rows.append({"group_size": g, "runs": len(runs),
                     "samples": int(runs[0].history["samples"].iloc[-1]),
                     "true_reward": final.mean(), "true_reward_min": final.min(),
                     "true_reward_max": final.max(),
                     "mean_true_reward": float(np.mean([r.history["true_reward"].mean() for r in runs])),
                     "kl_ref": float(np.mean([r.history["kl_ref"].iloc[-1] for r in runs]))})
    table = pd.DataFrame(rows)
    out = {"command": "sweep", "config": {**_configs(UPSTREAM, upstream_cfgs), "grpo": cfg.to_dict()},
           "group_sizes": sizes, "seeds": n_seeds, "rows": _records(table), "seconds": seconds}
    text = "\n".join([
        f"Group-size sweep: G in {', '.join(map(str, sizes))}, {n_seeds} seed(s) each, "
        f"{cfg.iterations} iterations x {cfg.prompts} prompts ({len(configs)} runs in one batch)",
        "true_reward: final exact expected true reward (mean, min, max over seeds); "
        "mean_true_reward: averaged over training (higher = learned sooner); samples: responses per run",
        "", _table(table), "", *_stopped_notes(results), f"trained in {seconds:.2f}s"])
    return out, text


def cmd_compare(args) -> tuple[dict, str]:
    from .pipeline import compare_table, reference_metrics, run_many
    upstream_cfgs, build = _upstream(args)
    grpo_cfg, rlvr_cfg = make_config(COMPARE_GRPO, args), make_config(COMPARE_RLVR, args)
    n_seeds = _int_flag("--seeds", args.seeds, 1, MAX_SEEDS)
    grpo_runs = _seeded(grpo_cfg, n_seeds)
    rlvr_runs = _seeded(rlvr_cfg, n_seeds)
    _budget(grpo_runs + rlvr_runs)
    start = time.perf_counter()
    up = build()
    results = run_many(up, grpo_runs + rlvr_runs)
    seconds = time.perf_counter() - start
    grpo, rlvr = results[:n_seeds], results[n_seeds:]
    table = compare_table(up, {"grpo": grpo, "rlvr": rlvr})
    sft = {k: float(v) for k, v in reference_metrics(up).items() if k in FINAL_METRICS}
    final = {"grpo": _final(grpo), "rlvr": _final(rlvr)}
    out = {"command": "compare", "config": {**_configs(UPSTREAM, upstream_cfgs),
                                            "grpo": grpo_cfg.to_dict(), "rlvr": rlvr_cfg.to_dict()},
           "seeds": n_seeds, "sft": sft, "final": final, "per_context": _records(table),
           "seconds": seconds}
    metrics = pd.DataFrame({"metric": list(FINAL_METRICS), "sft": [sft[m] for m in FINAL_METRICS],
                            "grpo": list(final["grpo"].values()), "rlvr": list(final["rlvr"].values())})
    shown = table[["context", "correct_token", "sft", "grpo", "rlvr", "best",
                   "grpo_improved", "rlvr_improved"]].rename(
        columns={"grpo_improved": "grpo_beat_sft", "rlvr_improved": "rlvr_beat_sft"})
    text = "\n".join([
        f"GRPO (reward model) vs RLVR (verifiable reward): {n_seeds} seed(s) each, one batch",
        "", "Final exact metrics (mean over runs):", _table(metrics),
        "", f"Per context, exact expected true reward (beat_sft: runs out of {n_seeds} above SFT):",
        _table(shown), "", *_stopped_notes(results), f"trained in {seconds:.2f}s"])
    return out, text


def cmd_landscape(args) -> tuple[dict, str]:
    from .methods.landscape import ALL_METHODS, DEFAULT_RESPONSES, landscape, landscape_configs
    upstream_cfgs, build = _upstream(args)
    n_seeds = _int_flag("--seeds", args.seeds, 1, MAX_SEEDS)
    responses = _int_flag("--responses", args.responses, 1, 10 * DEFAULT_RESPONSES)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown or not methods:
        raise UsageError(f"--methods must be comma-separated names among {', '.join(ALL_METHODS)}, "
                         f"got {args.methods!r}")
    try:  # every setting is checked before any training
        landscape_configs(methods, n_seeds, responses, args.dpo_data)
    except ConfigError as e:
        flag = {"iterations": "responses"}.get(e.field_name, e.field_name)
        raise UsageError(f"--{flag} {str(e).split(': ', 1)[1]}") from None
    start = time.perf_counter()
    up = build()
    upstream_seconds = time.perf_counter() - start
    res = landscape(methods, n_seeds, responses, up, args.dpo_data)
    out = {"command": "landscape", "config": _configs(UPSTREAM, upstream_cfgs),
           "seeds": n_seeds, "budget": responses, **res.to_json()}
    out["seconds"] = {**out["seconds"], "upstream": upstream_seconds,
                      "total": out["seconds"]["total"] + upstream_seconds}
    shown = res.table.assign(true_reward_range=[f"[{a:.4f}, {b:.4f}]" for a, b in zip(
        res.table["true_reward_p10"], res.table["true_reward_p90"])])
    shown = shown[["label", "true_reward", "true_reward_range", "improved", "kl", "responses",
                   "iterations", "seconds", "networks", "trained_params"]].rename(
        columns={"true_reward_range": "p10_p90", "improved": "beat_sft"})
    text = "\n".join([
        f"The full landscape: {n_seeds} seed(s) per method, {responses:,} responses per online run",
        "true_reward: final exact expected true reward (mean over seeds, and its 10th-90th "
        "percentiles); kl: exact KL(pi || pi_ref); beat_sft: seeds above the SFT start; "
        "seconds: each method's share of its batch", "",
        _table(shown), "",
        f"SFT (start): {res.sft:.4f}   best achievable: {res.best:.4f}",
        f"trained in {out['seconds']['total']:.2f}s (upstream {upstream_seconds:.2f}s)"])
    return out, text


def cmd_notebook(args) -> tuple[dict, str]:
    from .pipeline import run_notebook
    seed = _number(int, args.seed)
    try:
        ProblemConfig(seed=seed)  # the notebook's seed drives every stage; same range everywhere
    except ConfigError as e:
        raise _range_error("--seed", str(e).split(": ", 1)[1], field_range(ProblemConfig, "seed"))
    report = run_notebook(seed)
    table = report.table()
    keys = ["sft", "grpo", "rlvr", "best"]
    contexts = [{"context": int(row["context"]), **{k: float(row[k]) for k in keys}}
                for _, row in table.iloc[:-1].iterrows()]
    overall = {k: float(table.iloc[-1][k]) for k in keys}
    out = {"contexts": contexts, "overall": overall, "rlvr_accuracy": report.rlvr_accuracy,
           "compute_seconds": report.compute_seconds}
    lines = [f"Notebook workflow (seed {seed}): exact expected true reward per context", "",
             f"{'context':>8}  {'SFT':>7}  {'GRPO':>7}  {'RLVR':>7}  {'best':>7}  GRPO>SFT",
             "-" * 52]
    for name, row in [(str(c["context"]), c) for c in contexts] + [("overall", overall)]:
        mark = "✓" if row["grpo"] > row["sft"] else "✗"
        lines.append(f"{name:>8}  {row['sft']:7.4f}  {row['grpo']:7.4f}  {row['rlvr']:7.4f}  "
                     f"{row['best']:7.4f}  {mark}")
    lines += ["", f"RLVR accuracy (mean probability of the correct token): {report.rlvr_accuracy:.4f}",
              f"compute_seconds: {report.compute_seconds:.3f}"]
    return out, "\n".join(lines)


def cmd_bench(args) -> tuple[dict, str]:
    from . import bench
    rounds = _int_flag("--rounds", args.rounds, 1, MAX_ROUNDS)
    reference = bench.find_reference(args.reference)
    if args.reference is not None and reference is None:
        raise UsageError(f"--reference: no such file: {args.reference}")
    log = None if args.json else (lambda line: print(line, flush=True))
    return bench.run(rounds, reference, log=log), ""  # the lines were printed as they came


def cmd_grid(args) -> tuple[dict, str]:
    from .grid_cli import cmd_grid as run
    return run(args)


COMMAND_FUNCS = {"sft": cmd_sft, "rm": cmd_rm, "grpo": cmd_grpo, "rlvr": cmd_rlvr,
                 "sweep": cmd_sweep, "compare": cmd_compare, "landscape": cmd_landscape,
                 "notebook": cmd_notebook, "bench": cmd_bench, "grid": cmd_grid}


def cmd_seq(args) -> tuple[dict, str]:
    from .sequence.cli import run
    return run(args)


COMMAND_FUNCS["seq"] = cmd_seq


def main(argv=None) -> int:
    import torch
    torch.set_num_threads(1)  # tiny tensors: waking extra threads costs more than it saves
    try:
        args = build_parser().parse_args(argv)
        out, text = COMMAND_FUNCS[args.command](args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ConfigError as e:  # a range the flags could not check up front
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    try:
        if args.json:
            print(json.dumps(_plain(out)))
        elif text:
            print(text)
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. piped into `head`: the reader left, which is not an error
        sys.stdout = open(os.devnull, "w")
    return 0
