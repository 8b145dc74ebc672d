"""A grid's results: each member's exact final metrics, trained a chunk at a time, reduced per cell
to the mean and 10th / 90th percentiles over seeds."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from ..config import GRPOConfig
from ..pipeline import reference_metrics, run_many
from .plan import Grid

# Final metrics reduced per cell: output name -> RunResult.final metric (exact, of the final
# policy). "kl" is the exact KL to the SFT policy; "correct_prob" the accuracy (mean
# probability of each context's correct token).
CELL_METRICS = {"true_reward": "true_reward", "kl": "kl_ref", "correct_prob": "correct_prob",
                "rm_reward": "rm_reward", "entropy": "entropy"}
QUANTILES = {"p10": 0.1, "p90": 0.9}


def member_finals(results) -> list[dict]:
    """Per RunResult: its exact final metrics (CELL_METRICS names), iterations and status."""
    return [{**{name: r.final[col] for name, col in CELL_METRICS.items()},
             "iterations": int(r.completed_iterations), "status": r.status or "finished"}
            for r in results]


def train_chunk(up, configs: Sequence[GRPOConfig],
                on_iteration: Callable[[int, int], bool | None] | None = None) -> list[dict] | None:
    """One chunk in the batched engine; None when on_iteration stopped it before the end."""
    results = run_many(up, configs, on_iteration)
    if any(r.status == "stopped" for r in results):
        return None
    return member_finals(results)


@dataclass
class Progress:
    """Where a grid is: runs in finished chunks (plus the running chunk's fraction in `done`)."""

    runs_done: int
    runs_total: int
    chunks_done: int
    chunks_total: int
    seconds: float
    done: float = 0.0   # runs, counting the running chunk's finished fraction

    @property
    def fraction(self) -> float:
        return min(1.0, max(self.done, self.runs_done) / self.runs_total)


@dataclass(frozen=True)
class GridResult:
    """A grid's per-cell table (complete cells only), per-member finals and bookkeeping."""

    grid: Grid
    backend: str
    cells: pd.DataFrame
    members: pd.DataFrame
    sft: dict
    seconds: float
    chunks: int
    stopped: bool
    setup_seconds: float = 0.0   # before training: the upstream (local) or connecting to Ray

    @property
    def runs(self) -> int:
        return len(self.members)

    @property
    def run_iterations(self) -> int:
        return int(self.members["iterations"].sum()) if self.runs else 0

    @property
    def run_iterations_per_second(self) -> float:
        """Throughput while training: run-iterations of finished chunks per second after setup."""
        return self.run_iterations / max(self.seconds - self.setup_seconds, 1e-9)

    def to_json(self) -> dict:
        """The CLI's --json object: backend, runs, seconds, cells (x, y and the statistics)."""
        g = self.grid
        return {"backend": self.backend, "runs": self.runs, "seconds": self.seconds,
                "method": g.method, "x": {"field": g.x.field, "values": list(g.x.values)},
                "y": {"field": g.y.field, "values": list(g.y.values)}, "seeds": g.seeds,
                "iterations": g.base.iterations, "chunks": self.chunks, "stopped": self.stopped,
                "setup_seconds": self.setup_seconds, "run_iterations": self.run_iterations,
                "run_iterations_per_second": self.run_iterations_per_second,
                "sft": self.sft, "cells": self.cells.to_dict(orient="records")}


def sft_finals(up) -> dict:
    """The SFT policy's own exact metrics, in CELL_METRICS names: where every run starts."""
    ref = reference_metrics(up)
    return {name: float(ref[col]) for name, col in CELL_METRICS.items()}


def aggregate(grid: Grid, finals: dict[int, dict], sft: dict | None = None) -> pd.DataFrame:
    """Per complete cell (every seed finished): x, y, runs, diverged, and for each metric its
    mean, p10 and p90 over seeds; beats_sft when the mean true reward is above SFT's."""
    rows = []
    for k, (xv, yv) in enumerate(grid.cells):
        members = [finals.get(k * grid.seeds + s) for s in range(grid.seeds)]
        if any(m is None for m in members):
            continue
        row = {"x": xv, "y": yv, "runs": len(members),
               "diverged": sum(m["status"] == "diverged" for m in members)}
        for name in CELL_METRICS:
            v = np.array([m[name] for m in members], dtype=float)
            row[f"{name}_mean"] = float(v.mean())
            for q, at in QUANTILES.items():
                row[f"{name}_{q}"] = float(np.quantile(v, at))
        if sft is not None:
            row["beats_sft"] = bool(row["true_reward_mean"] > sft["true_reward"])
        rows.append(row)
    columns = ["x", "y", "runs", "diverged",
               *[f"{n}_{s}" for n in CELL_METRICS for s in ("mean", *QUANTILES)]]
    return pd.DataFrame(rows, columns=columns + (["beats_sft"] if sft is not None else []))


def _members_frame(grid: Grid, finals: dict[int, dict]) -> pd.DataFrame:
    configs = grid.configs()
    rows = [{"member": i, "cell": i // grid.seeds, "x": getattr(configs[i], grid.x.field),
             "y": getattr(configs[i], grid.y.field), "seed": configs[i].seed, **finals[i]}
            for i in sorted(finals)]
    return pd.DataFrame(rows)


def result_from_finals(grid: Grid, finals: dict[int, dict], sft: dict, backend: str = "local",
                       seconds: float = 0.0, chunks: int = 0, stopped: bool = False,
                       setup_seconds: float = 0.0) -> GridResult:
    """A GridResult from the members finished so far (stopped whenever some are missing)."""
    return GridResult(grid, backend, aggregate(grid, finals, sft), _members_frame(grid, finals),
                      sft, seconds, chunks, stopped or len(finals) < grid.runs, setup_seconds)
