"""`python -m grpo_core grid`: a hyperparameter map from the command line, here or on Ray.

    python -m grpo_core grid --method grpo --x lr=1e-4:1e-1:8:log --y kl_coef=0:0.5:8 --seeds 4 \
        [--iterations N] [--backend local|ray] [--address ADDR] [--json]

Every other setting of the method and of the upstream takes its usual flag (--group-size,
--problem-seed, ...). Bad axes, ranges or counts end with one `error: ...` line and status 2.
"""
from __future__ import annotations

import sys

from ..config import ConfigError
from ..grid import BACKENDS, CHUNK_RUNS, MAX_SEEDS as GRID_MAX_SEEDS, METHODS, GridError, make_grid, parse_axis, run_grid
from .flags import Command, Group, UsageError, int_flag, make_config, format_table
from .runs import GRPO, UPSTREAM

DEFAULT_SEEDS = 4
MAX_CHUNK_RUNS = 256


def _flags(p) -> None:
    p.add_argument("--method", default="grpo", choices=list(METHODS),
                   help="Which method's config the grid varies; default grpo.")
    for axis in ("x", "y"):
        p.add_argument(f"--{axis}", required=True, metavar="FIELD=LO:HI:COUNT[:log]",
                       help=f"The {axis} axis: COUNT values (1 to 16) of a numeric setting from LO "
                            "to HI, evenly spaced or (with :log) evenly in log, e.g. "
                            "lr=1e-4:1e-1:8:log or kl_coef=0:0.5:8.")
    p.add_argument("--backend", default="local", choices=tuple(BACKENDS),
                   help="local: chunks one after another in this process; ray: each chunk a Ray "
                        "task. Default local.")
    p.add_argument("--address", default=None, metavar="ADDR",
                   help="Ray only: an existing cluster to connect to (e.g. auto or "
                        "ray://head:10001); default: start a local Ray instance with 2 CPUs.")
    p.add_argument("--chunk-runs", default=str(CHUNK_RUNS), metavar="N",
                   help=f"Runs per chunk (one batch, one Ray task); cells are kept whole when they "
                        f"fit. Range 1 to {MAX_CHUNK_RUNS}; default {CHUNK_RUNS}.")


def cmd_grid(args) -> tuple[dict, str]:
    cfg_type = METHODS[args.method]
    method_group = Group(GRPO.key, cfg_type, GRPO.prefix, GRPO.title)  # same flags, method's class
    problem, sft, rm = (make_config(g, args) for g in UPSTREAM)
    base = make_config(method_group, args)
    seeds = int_flag("--seeds", args.seeds, 1, GRID_MAX_SEEDS)
    chunk_runs = int_flag("--chunk-runs", args.chunk_runs, 1, MAX_CHUNK_RUNS)
    axes = {}
    for name in ("x", "y"):
        try:
            axes[name] = parse_axis(getattr(args, name), cfg_type)
        except GridError as e:
            raise UsageError(f"--{name}: {e}") from None
    if args.address is not None and args.backend != "ray":
        raise UsageError("--address needs --backend ray")
    try:
        grid = make_grid(args.method, axes["x"], axes["y"], seeds, base, None, problem, sft, rm)
    except (GridError, ConfigError) as e:
        raise UsageError(str(e)) from None

    last = {"chunks": 0}

    def progress(p):
        if p.chunks_done != last["chunks"]:  # report as chunks finish, not every iteration
            last["chunks"] = p.chunks_done
            print(f"chunk {p.chunks_done}/{p.chunks_total} done: {p.runs_done}/{p.runs_total} "
                  f"runs, {p.seconds:.1f}s", file=sys.stderr, flush=True)

    options = {"address": args.address} if args.backend == "ray" else {}
    try:
        result = run_grid(grid, args.backend, progress, chunk_runs, **options)
    except GridError as e:
        raise UsageError(str(e)) from None
    out = result.to_json()
    cells = result.cells
    x, y = grid.x.field, grid.y.field
    pivot = cells.pivot(index="x", columns="y", values="true_reward_mean")
    pivot.index.name, pivot.columns.name = x, y
    shown = cells[["x", "y", "true_reward_mean", "true_reward_p10", "true_reward_p90", "kl_mean",
                   "correct_prob_mean", "beats_sft"]].rename(columns={"x": x, "y": y})
    text = "\n".join([
        f"Hyperparameter map ({args.method}): {x} x {y} = {len(grid.x.values)} x "
        f"{len(grid.y.values)} cells x {seeds} seed(s) = {grid.runs} runs of "
        f"{grid.base.iterations} iterations, {result.chunks} chunk(s) on {args.backend}",
        f"SFT start: true_reward {result.sft['true_reward']:.4f}", "",
        f"Final exact true reward, mean over seeds (rows {x}, columns {y}):",
        pivot.to_string(float_format=lambda v: f"{v:.4f}"), "",
        "Per cell (p10, p90: spread over seeds; kl: exact KL to SFT; correct_prob: accuracy):",
        format_table(shown), "",
        *(["stopped before the end: only cells whose seeds all finished are shown"]
          if result.stopped else []),
        f"trained in {result.seconds:.2f}s ({result.runs} runs)"])
    return out, text


COMMANDS = (
    Command("grid", "A hyperparameter map: two settings x seeds per cell, here or on a Ray cluster.",
            cmd_grid, (*UPSTREAM, GRPO), seeds=DEFAULT_SEEDS, max_seeds=GRID_MAX_SEEDS,
            seeds_help="Runs per cell, seeds seed .. seed+N-1.", extra=_flags),
)
