"""Hyperparameter maps: a grid over two config fields, several seeds per cell, trained in bounded
chunks by a backend and reduced to per-cell statistics.

    grid = make_grid("grpo", parse_axis("lr=1e-4:1e-1:8:log", GRPOConfig),
                     parse_axis("kl_coef=0:0.5:8", GRPOConfig), seeds=4, iterations=300)
    result = run_grid(grid)             # 8 x 8 cells x 4 seeds = 256 runs
    result.cells                        # x, y, true_reward_mean, true_reward_p10, ..., kl_mean, ...

plan.py holds the axes, the grid and its chunk plan (which depends on the grid alone);
results.py the per-member finals and the per-cell reduction; each backend (local.py, this
process; ray_backend.py, Ray tasks) trains exactly the plan's chunks with the same batched
engine, so a member's result cannot depend on the backend.
"""
from __future__ import annotations

import time
from typing import Callable

from ..pipeline import build_upstream
from .local import run_local
from .plan import (CHUNK_RUNS, DEFAULT_ITERATIONS, DEFAULT_SEEDS, DEFAULT_X, DEFAULT_Y, MAX_AXIS_VALUES,
                   MAX_CHUNK_BYTES, MAX_SEEDS, METHODS, TRAINER_BYTES_PER_ITERATION, Axis, Grid,
                   GridError, chunk_plan, default_map, grid_from_dict, grid_work, make_axis, make_grid,
                   member_bytes, numeric_fields, parse_axis)
from .ray_backend import run_ray
from .results import (CELL_METRICS, QUANTILES, GridResult, Progress, aggregate, member_finals,
                      result_from_finals, sft_finals, train_chunk)

# A backend trains a plan's chunks: backend(grid, plan, on_chunk, on_fraction=, up=, setup=,
# **options) calls on_chunk(index, finals) as each chunk finishes (in any order) and
# on_fraction(runs done) if it can report inside chunks (either returning False stops), puts the
# seconds it took to get ready in setup["seconds"], and returns the SFT start's metrics (or None).
BACKENDS: dict[str, Callable] = {"local": run_local, "ray": run_ray}


def run_grid(grid: Grid, backend: str = "local", on_progress: Callable[[Progress], bool | None] | None = None,
             chunk_runs: int = CHUNK_RUNS, up=None, finals: dict[int, dict] | None = None,
             **backend_options) -> GridResult:
    """Train the grid chunk by chunk on `backend` (a name in BACKENDS) and reduce it per cell.

    on_progress(Progress) is called as chunks finish (and, locally, inside chunks); returning
    False stops the grid, keeping every cell whose seeds all finished. `up` (local only): an
    Upstream already built from grid.problem, grid.sft and grid.rm. `finals`: a dict that receives
    each finished member's final metrics as its chunk finishes (so a caller interrupted mid-grid
    keeps them); chunks whose members it already holds are not trained again (resume).
    """
    if backend not in BACKENDS:
        raise GridError(f"backend must be {' or '.join(BACKENDS)}, got {backend!r}")
    start = time.perf_counter()
    full_plan = chunk_plan(grid, chunk_runs)
    finals = {} if finals is None else finals
    plan = [chunk for chunk in full_plan if any(m not in finals for m in chunk)]
    state = {"chunks": len(full_plan) - len(plan), "runs": len(finals), "stopped": False}

    def report(done=None):
        if on_progress is None:
            return None
        p = Progress(state["runs"], grid.runs, state["chunks"], len(full_plan),
                     time.perf_counter() - start, state["runs"] if done is None else done)
        if on_progress(p) is False:
            state["stopped"] = True
            return False
        return None

    def on_chunk(index, chunk_finals):
        for m, f in zip(plan[index], chunk_finals):
            finals[m] = f
        state["chunks"] += 1
        state["runs"] = len(finals)
        return report()

    setup = {"seconds": 0.0}
    if backend == "local" or not plan:   # nothing left to train: no cluster to connect to
        if up is None:
            up = build_upstream(grid.problem, grid.sft, grid.rm)
        setup["seconds"] = time.perf_counter() - start
        base = len(finals)
        sft = run_local(grid, plan, on_chunk, lambda done: report(base + done), up=up)
    else:
        sft = BACKENDS[backend](grid, plan, on_chunk, setup=setup, **backend_options)
    if sft is None:  # no chunk finished: the SFT start is still worth reporting
        sft = sft_finals(build_upstream(grid.problem, grid.sft, grid.rm))
    return result_from_finals(grid, finals, sft, backend, time.perf_counter() - start,
                              state["chunks"], state["stopped"], setup["seconds"])
