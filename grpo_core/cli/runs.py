"""The one-token pages as commands: sft, rm, grpo, rlvr, sweep, compare, notebook and bench.

    python -m grpo_core grpo --group-size 16 --kl-coef 0.1 --seeds 8
    python -m grpo_core sweep --group-sizes 2,4,8,16 --json
    python -m grpo_core grpo --clip-eps-high 0.28 --export-trl    # TRL GRPOConfig arguments, no training

GRPO/RLVR settings are unprefixed (--group-size, --kl-coef), upstream ones are prefixed
(--problem-seed, --sft-lr, --rm-steps), and `compare` prefixes its two methods (--grpo-lr, --rlvr-lr).
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

from ..config import (ConfigError, GRPOConfig, ProblemConfig, RLVRConfig, RewardModelConfig,
                      SFTConfig, check_budget, field_range)
from ..pipeline import seed_configs
from .flags import (MAX_SEEDS, Command, Group, UsageError, checked, configs_json, export_output,
                    int_flag, make_config, number, plain, records, stopped_notes, format_table, usage)

MAX_ROUNDS = 20
FINAL_METRICS = ("true_reward", "rm_reward", "kl_ref", "entropy", "correct_prob")

PROBLEM = Group("problem", ProblemConfig, "problem-", "task (ProblemConfig)")
SFT = Group("sft", SFTConfig, "sft-", "supervised fine-tuning (SFTConfig)")
RM = Group("rm", RewardModelConfig, "rm-", "reward model (RewardModelConfig)")
UPSTREAM = (PROBLEM, SFT, RM)
GRPO = Group("grpo", GRPOConfig, "", "GRPO run (GRPOConfig)")
RLVR = Group("rlvr", RLVRConfig, "", "RLVR run (RLVRConfig)")
COMPARE_GRPO = Group("grpo", GRPOConfig, "grpo-", "GRPO runs (GRPOConfig)")
COMPARE_RLVR = Group("rlvr", RLVRConfig, "rlvr-", "RLVR runs (RLVRConfig)")


def upstream(args):
    """The upstream configs from the flags, and a function that builds the upstream from them."""
    from ..pipeline import build_upstream
    problem, sft, rm = (make_config(g, args) for g in UPSTREAM)
    return (problem, sft, rm), lambda: build_upstream(problem, sft, rm)


def final_metrics(results) -> dict:
    """Mean over runs of each exact metric of the final policy."""
    return {m: float(np.mean([r.final[m] for r in results])) for m in FINAL_METRICS}


def _group_sizes(raw: str, base: GRPOConfig) -> list[int]:
    valid = field_range(GRPOConfig, "group_size")
    sizes = []
    for part in raw.split(","):
        value = number(int, part.strip())
        if value is None:
            raise UsageError(f"--group-sizes must be comma-separated numbers, each {valid}, got {raw!r}")
        try:
            sizes.append(base.replace(group_size=value).group_size)
        except ConfigError as e:
            raise usage(e, "--group-sizes", valid) from None
    return sizes


def cmd_sft(args) -> tuple[dict, str]:
    from ..metrics import policy_metrics
    from ..problem import make_problem
    from ..sft import train_sft
    pcfg, scfg = make_config(PROBLEM, args), make_config(SFT, args)
    start = time.perf_counter()
    problem = make_problem(pcfg)
    result = train_sft(problem, scfg)
    seconds = time.perf_counter() - start
    final = {k: plain(v) for k, v in result.history.iloc[-1].items()}
    ctx = policy_metrics(result.logp, problem, per_context=True)
    per_context = pd.DataFrame({"context": range(problem.n_contexts),
                                "correct_token": problem.correct_token.numpy(),
                                **{k: v.numpy() for k, v in ctx.items()},
                                "best": problem.best_reward.numpy()})
    out = {"command": "sft", "config": {"problem": pcfg.to_dict(), "sft": scfg.to_dict()},
           "final": final, "best_reward": float(problem.best_reward.mean()),
           "per_context": records(per_context), "seconds": seconds}
    text = "\n".join([
        f"SFT: {scfg.epochs} epochs x {scfg.steps_per_epoch} steps, batch {scfg.batch_size}",
        f"final loss {final['loss']:.4f}  true_reward {final['true_reward']:.4f} "
        f"(best possible {out['best_reward']:.4f})  kl_true {final['kl_true']:.4f}  "
        f"entropy {final['entropy']:.4f}",
        "", "Per context (exact):", format_table(per_context), "", f"trained in {seconds:.2f}s"])
    return out, text


def cmd_rm(args) -> tuple[dict, str]:
    from ..problem import make_problem
    from ..reward_model import train_reward_model
    pcfg, rcfg = make_config(PROBLEM, args), make_config(RM, args)
    start = time.perf_counter()
    result = train_reward_model(make_problem(pcfg), rcfg)
    seconds = time.perf_counter() - start
    final = {k: plain(v) for k, v in result.history.iloc[-1].items()}
    out = {"command": "rm", "config": {"problem": pcfg.to_dict(), "rm": rcfg.to_dict()},
           "final": final, "seconds": seconds}
    text = "\n".join([
        f"Reward model: {rcfg.steps} steps x {rcfg.batch_pairs} comparisons",
        f"final loss {final['loss']:.4f}  pairwise_accuracy {final['pairwise_accuracy']:.4f} "
        f"(fraction of token pairs ranked as the true reward ranks them)",
        f"trained in {seconds:.2f}s"])
    return out, text


def run_method(args, group: Group, name: str) -> tuple[dict, str]:
    """grpo and rlvr: N seeds of one config, one batch (or, with --export-trl, its TRL settings)."""
    from ..pipeline import compare_table, reference_metrics, run_many
    upstream_cfgs, build = upstream(args)
    cfg = make_config(group, args)
    if args.export_trl:
        return export_output(name, cfg)
    n_seeds = int_flag("--seeds", args.seeds, 1, MAX_SEEDS)
    configs = seed_configs(cfg, n_seeds)
    checked(check_budget, configs)
    start = time.perf_counter()
    up = build()
    results = run_many(up, configs)
    seconds = time.perf_counter() - start
    sft = {k: float(v) for k, v in reference_metrics(up).items() if k in FINAL_METRICS}
    final = final_metrics(results)
    table = compare_table(up, {name: results})
    runs = [{"seed": r.config.seed, "iterations": r.completed_iterations, "stopped": r.stopped,
             **{m: float(r.history[m].iloc[-1]) for m in FINAL_METRICS}} for r in results]
    out = {"command": name, "config": {**configs_json(UPSTREAM, upstream_cfgs), name: cfg.to_dict()},
           "seeds": [c.seed for c in configs], "sft": sft, "final": final, "runs": runs,
           "per_context": records(table), "seconds": seconds}
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
             format_table(pd.DataFrame({"metric": list(final), "sft": [sft[m] for m in final],
                                  name: list(final.values())})),
             "", "Per context, exact expected true reward:", format_table(shown)]
    lines += ["", *stopped_notes(results), f"trained in {seconds:.2f}s"]
    return out, "\n".join(lines)


def cmd_grpo(args):
    return run_method(args, GRPO, "grpo")


def cmd_rlvr(args):
    return run_method(args, RLVR, "rlvr")


def cmd_sweep(args) -> tuple[dict, str]:
    from ..pipeline import run_many, sweep_configs
    upstream_cfgs, build = upstream(args)
    cfg = make_config(GRPO, args)
    n_seeds = int_flag("--seeds", args.seeds, 1, MAX_SEEDS)
    sizes = _group_sizes(args.group_sizes, cfg)
    configs = sweep_configs(cfg, sizes, n_seeds)
    checked(check_budget, configs)
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
    out = {"command": "sweep", "config": {**configs_json(UPSTREAM, upstream_cfgs), "grpo": cfg.to_dict()},
           "group_sizes": sizes, "seeds": n_seeds, "rows": records(table), "seconds": seconds}
    text = "\n".join([
        f"Group-size sweep: G in {', '.join(map(str, sizes))}, {n_seeds} seed(s) each, "
        f"{cfg.iterations} iterations x {cfg.prompts} prompts ({len(configs)} runs in one batch)",
        "true_reward: final exact expected true reward (mean, min, max over seeds); "
        "mean_true_reward: averaged over training (higher = learned sooner); samples: responses per run",
        "", format_table(table), "", *stopped_notes(results), f"trained in {seconds:.2f}s"])
    return out, text


def cmd_compare(args) -> tuple[dict, str]:
    from ..pipeline import compare_table, reference_metrics, run_many
    upstream_cfgs, build = upstream(args)
    grpo_cfg, rlvr_cfg = make_config(COMPARE_GRPO, args), make_config(COMPARE_RLVR, args)
    n_seeds = int_flag("--seeds", args.seeds, 1, MAX_SEEDS)
    grpo_runs = seed_configs(grpo_cfg, n_seeds)
    rlvr_runs = seed_configs(rlvr_cfg, n_seeds)
    checked(check_budget, grpo_runs + rlvr_runs)
    start = time.perf_counter()
    up = build()
    results = run_many(up, grpo_runs + rlvr_runs)
    seconds = time.perf_counter() - start
    grpo, rlvr = results[:n_seeds], results[n_seeds:]
    table = compare_table(up, {"grpo": grpo, "rlvr": rlvr})
    sft = {k: float(v) for k, v in reference_metrics(up).items() if k in FINAL_METRICS}
    final = {"grpo": final_metrics(grpo), "rlvr": final_metrics(rlvr)}
    out = {"command": "compare", "config": {**configs_json(UPSTREAM, upstream_cfgs),
                                            "grpo": grpo_cfg.to_dict(), "rlvr": rlvr_cfg.to_dict()},
           "seeds": n_seeds, "sft": sft, "final": final, "per_context": records(table),
           "seconds": seconds}
    metrics = pd.DataFrame({"metric": list(FINAL_METRICS), "sft": [sft[m] for m in FINAL_METRICS],
                            "grpo": list(final["grpo"].values()), "rlvr": list(final["rlvr"].values())})
    shown = table[["context", "correct_token", "sft", "grpo", "rlvr", "best",
                   "grpo_improved", "rlvr_improved"]].rename(
        columns={"grpo_improved": "grpo_beat_sft", "rlvr_improved": "rlvr_beat_sft"})
    text = "\n".join([
        f"GRPO (reward model) vs RLVR (verifiable reward): {n_seeds} seed(s) each, one batch",
        "", "Final exact metrics (mean over runs):", format_table(metrics),
        "", f"Per context, exact expected true reward (beat_sft: runs out of {n_seeds} above SFT):",
        format_table(shown), "", *stopped_notes(results), f"trained in {seconds:.2f}s"])
    return out, text


def cmd_notebook(args) -> tuple[dict, str]:
    from ..pipeline import run_notebook
    seed = number(int, args.seed)
    try:
        ProblemConfig(seed=seed)  # the notebook's seed drives every stage; same range everywhere
    except ConfigError as e:
        raise usage(e, "--seed", field_range(ProblemConfig, "seed")) from None
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
    from .. import bench
    rounds = int_flag("--rounds", args.rounds, 1, MAX_ROUNDS)
    reference = bench.find_reference(args.reference)
    if args.reference is not None and reference is None:
        raise UsageError(f"--reference: no such file: {args.reference}")
    log = None if args.json else (lambda line: print(line, flush=True))
    return bench.run(rounds, reference, log=log), ""  # the lines were printed as they came


def _sweep_flags(p) -> None:
    p.add_argument("--group-sizes", default="2,4,8,16", metavar="G,G,...",
                   help="Comma-separated group sizes to sweep, each 2 to 64; default 2,4,8,16.")


def _notebook_flags(p) -> None:
    p.add_argument("--seed", default="42", metavar="INT",
                   help=f"Seed of every stage. Range {field_range(ProblemConfig, 'seed')}; default 42.")


def _bench_flags(p) -> None:
    p.add_argument("--reference", default=None, metavar="PATH",
                   help="Seed notebook script to time for reference; default "
                        "../shared/bench/seed_notebook.py if it exists.")
    p.add_argument("--rounds", default="3", metavar="N",
                   help=f"Rounds of the notebook workload (median). Range 1 to {MAX_ROUNDS}; default 3.")


COMMANDS = (
    Command("sft", "Train the SFT policy and show its exact metrics.", cmd_sft, (PROBLEM, SFT)),
    Command("rm", "Train the reward model and show its pairwise accuracy.", cmd_rm, (PROBLEM, RM)),
    Command("grpo", "GRPO on the learned reward model.", cmd_grpo, (*UPSTREAM, GRPO), seeds=1, export=True),
    Command("rlvr", "GRPO with the verifiable reward (RLVR).", cmd_rlvr, (*UPSTREAM, RLVR), seeds=1, export=True),
    Command("sweep", "GRPO at several group sizes, several seeds each.", cmd_sweep, (*UPSTREAM, GRPO),
            seeds=8, skip=frozenset({"group_size"}), extra=_sweep_flags),
    Command("compare", "GRPO vs RLVR, per context, several seeds each.", cmd_compare,
            (*UPSTREAM, COMPARE_GRPO, COMPARE_RLVR), seeds=8),
    Command("notebook", "Replay the tutorial notebook's workflow and compare.", cmd_notebook,
            extra=_notebook_flags, description="Replay the notebook: SFT, reward model, GRPO, group-size "
                                               "sweep and RLVR with its hyperparameters."),
    Command("bench", "Time the core's workloads and print the figures.", cmd_bench, extra=_bench_flags,
            description="Time the notebook workload, a 64-run sweep and one default GRPO run; "
                        "optionally against the seed notebook script."),
)
