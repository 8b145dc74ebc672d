"""A grid's plan: its two axes, its cells x seeds of one method's config, and the bounded chunks
of members a backend trains (chunk_plan depends on the grid alone).

Members are laid out cell-major: cell k's seeds are members k*S .. k*S + S - 1.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..config import (MAX_WORK_PER_REQUEST, ConfigError, GRPOConfig, ProblemConfig, RewardModelConfig,
                      RLVRConfig, SFTConfig, check_budget, config_fields, field_range, request_work)
from ..pipeline import seed_configs

METHODS: dict[str, type] = {"grpo": GRPOConfig, "rlvr": RLVRConfig}
MAX_AXIS_VALUES = 16
MAX_SEEDS = 16
# Members per chunk: big enough that batching pays (a batch of 64 runs costs a small multiple
# of one run), small enough that 2 workers share the default map's 256 runs.
CHUNK_RUNS = 64
# A chunk's trainer holds, per member and iteration, batch statistics (12 float32), exact metrics
# (5 float32) and at the end a history row (~88 bytes pickled, see ui.guard): ~160 bytes.
TRAINER_BYTES_PER_ITERATION = 160
MAX_CHUNK_BYTES = 64 * 2**20
# The default map (page and bench): learning rate x KL coefficient, 8 x 8 cells x 4 seeds x 300
# iterations = 256 runs.
DEFAULT_X, DEFAULT_Y = "lr=1e-4:1e-1:8:log", "kl_coef=0:0.5:8"
DEFAULT_SEEDS, DEFAULT_ITERATIONS = 4, 300


class GridError(ValueError):
    """A bad axis, grid or seed count; the message is one line naming what to change."""


# ---------------------------------------------------------------- axes

@dataclass(frozen=True)
class Axis:
    """One swept setting: `count` values of `field` from lo to hi (evenly, or evenly in log)."""

    field: str
    lo: float
    hi: float
    count: int
    log: bool = False
    values: tuple = ()

    @property
    def spec(self) -> str:
        """The axis in the CLI's syntax, field=lo:hi:count[:log]."""
        return f"{self.field}={self.lo:g}:{self.hi:g}:{self.count}" + (":log" if self.log else "")


def numeric_fields(cfg_type: type) -> list[str]:
    """Fields of cfg_type that can be an axis: numbers with a range (not seed: seeds are per cell)."""
    return [f.name for f in config_fields(cfg_type)
            if type(f.default) in (int, float) and not f.metadata.get("choices")
            and f.metadata.get("lo") is not None and f.name != "seed"]


def _round(value: float) -> float:
    """Six significant digits: geomspace's values read as 0.000268270, not 0.00026826957952797."""
    return float(f"{value:.6g}")


def make_axis(cfg_type: type, field: str, lo: float, hi: float, count: int,
              log: bool = False) -> Axis:
    """A validated axis: field must be a numeric setting of cfg_type, lo <= hi inside its range,
    count 1 to MAX_AXIS_VALUES (1 only when lo = hi), lo > 0 on a log axis. Whole-number fields
    take the rounded values, duplicates dropped (so the axis may have fewer than count values)."""
    name = cfg_type.__name__
    fields = {f.name: f for f in config_fields(cfg_type)}
    if field == "seed":
        raise GridError("seed cannot be an axis: each cell already runs several seeds")
    if field not in fields:
        raise GridError(f"{field!r} is not a setting of {name}; choose one of "
                        + ", ".join(numeric_fields(cfg_type)))
    if field not in numeric_fields(cfg_type):
        raise GridError(f"{field} is not a numeric setting; choose one of "
                        + ", ".join(numeric_fields(cfg_type)))
    meta, kind = fields[field].metadata, type(fields[field].default)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_AXIS_VALUES:
        raise GridError(f"{field}: the number of values must be 1 to {MAX_AXIS_VALUES}, got {count!r}")
    for what, v in (("low end", lo), ("high end", hi)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise GridError(f"{field}: the {what} must be a finite number, got {v!r}")
        if not meta["lo"] <= v <= meta["hi"]:
            raise GridError(f"{field}: the {what} must be {field_range(cfg_type, field)}, got {v:g}")
        if kind is int and v != int(v):
            raise GridError(f"{field} is a whole number: the {what} must be whole, got {v:g}")
    if lo > hi:
        raise GridError(f"{field}: the low end {lo:g} is above the high end {hi:g}")
    if count == 1 and lo != hi:
        raise GridError(f"{field}: one value needs low end = high end, got {lo:g} and {hi:g}")
    if log and lo <= 0:
        raise GridError(f"{field}: a log axis needs a low end above 0, got {lo:g}")
    raw = np.geomspace(lo, hi, count) if log else np.linspace(lo, hi, count)
    if kind is int:
        values = tuple(dict.fromkeys(int(round(v)) for v in raw))
    else:
        values = tuple(dict.fromkeys(min(max(_round(v), meta["lo"]), meta["hi"]) for v in raw))
    return Axis(field, float(lo), float(hi), count, bool(log), values)


def parse_axis(spec: str, cfg_type: type = GRPOConfig) -> Axis:
    """Parse `field=lo:hi:count[:log]` (e.g. lr=1e-4:1e-1:8:log) into a validated Axis."""
    form = "field=lo:hi:count[:log]"
    if not isinstance(spec, str) or "=" not in spec:
        raise GridError(f"axis {spec!r} must be {form}, e.g. lr=1e-4:1e-1:8:log")
    field, _, rest = spec.partition("=")
    parts = rest.split(":")
    if len(parts) not in (3, 4) or (len(parts) == 4 and parts[3].strip().lower() != "log"):
        raise GridError(f"axis {spec!r} must be {form}, e.g. lr=1e-4:1e-1:8:log")
    try:
        lo, hi = float(parts[0]), float(parts[1])
    except ValueError:
        raise GridError(f"axis {spec!r}: lo and hi must be numbers") from None
    try:
        count = int(parts[2])
    except ValueError:
        raise GridError(f"axis {spec!r}: count must be a whole number 1 to {MAX_AXIS_VALUES}") from None
    return make_axis(cfg_type, field.strip(), lo, hi, count, len(parts) == 4)


# ---------------------------------------------------------------- the grid

@dataclass(frozen=True)
class Grid:
    """Every (x value, y value) cell x seeds of one method's config, from one upstream."""

    method: str
    base: GRPOConfig
    x: Axis
    y: Axis
    seeds: int
    problem: ProblemConfig = ProblemConfig()
    sft: SFTConfig = SFTConfig()
    rm: RewardModelConfig = RewardModelConfig()

    @property
    def cells(self) -> list[tuple]:
        """(x value, y value) of each cell, x major."""
        return [(xv, yv) for xv in self.x.values for yv in self.y.values]

    @property
    def runs(self) -> int:
        return len(self.cells) * self.seeds

    def cell_config(self, xv, yv) -> GRPOConfig:
        return self.base.replace(**{self.x.field: xv, self.y.field: yv})

    def configs(self) -> list[GRPOConfig]:
        """All members, cell-major: cell k's seeds are members k*seeds .. k*seeds + seeds - 1."""
        return [c for xv, yv in self.cells for c in seed_configs(self.cell_config(xv, yv), self.seeds)]

    def member_configs(self, members: Sequence[int]) -> list[GRPOConfig]:
        """The configs of some members (by index in configs()), without building the others."""
        cells = self.cells
        return [self.cell_config(*cells[m // self.seeds]).replace(seed=self.base.seed + m % self.seeds)
                for m in members]

    @property
    def upstream_dicts(self) -> dict:
        return {"problem": self.problem.to_dict(), "sft": self.sft.to_dict(), "rm": self.rm.to_dict()}

    def to_dict(self) -> dict:
        """Plain values that identify the grid (a cache key; what Ray tasks are sent)."""
        return {"method": self.method, "base": self.base.to_dict(),
                "x": dataclasses.asdict(self.x), "y": dataclasses.asdict(self.y),
                "seeds": self.seeds, **self.upstream_dicts}


def grid_from_dict(data: dict) -> Grid:
    """The inverse of Grid.to_dict (what a Ray task rebuilds its members from)."""
    cfg_type = METHODS[data["method"]]
    axis = lambda d: Axis(**{**d, "values": tuple(d["values"])})
    return Grid(data["method"], cfg_type.from_dict(data["base"]), axis(data["x"]), axis(data["y"]),
                data["seeds"], ProblemConfig.from_dict(data["problem"]),
                SFTConfig.from_dict(data["sft"]), RewardModelConfig.from_dict(data["rm"]))


def make_grid(method: str, x: Axis, y: Axis, seeds: int, base: GRPOConfig | None = None,
              iterations: int | None = None, problem: ProblemConfig = ProblemConfig(),
              sft: SFTConfig = SFTConfig(), rm: RewardModelConfig = RewardModelConfig()) -> Grid:
    """A validated grid: every cell's config is built (so cross-field rules such as minibatches
    <= prompts are checked) and each single run is within the per-request work limit."""
    if method not in METHODS:
        raise GridError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    cfg_type = METHODS[method]
    base = cfg_type() if base is None else base
    if type(base) is not cfg_type:
        raise GridError(f"the base config of method {method} must be a {cfg_type.__name__}")
    if x.field == y.field:
        raise GridError(f"the two axes must be different settings, both are {x.field}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= MAX_SEEDS:
        raise GridError(f"seeds must be 1 to {MAX_SEEDS}, got {seeds!r}")
    if iterations is not None:
        try:
            base = base.replace(iterations=iterations)
        except ConfigError as e:
            raise GridError(str(e)) from None
    if base.seed + seeds - 1 > 2**31 - 1:
        raise GridError(f"seed + seeds - 1 must be at most {2**31 - 1}")
    grid = Grid(method, base, x, y, seeds, problem, sft, rm)
    for xv, yv in grid.cells:
        try:
            cfg = grid.cell_config(xv, yv)
            check_budget([cfg])
        except ConfigError as e:
            raise GridError(f"cell {x.field}={xv:g}, {y.field}={yv:g}: {e}") from None
    return grid


def default_map(method: str = "grpo") -> Grid:
    """The default map: lr 1e-4 to 1e-1 (log) x kl_coef 0 to 0.5, 8 x 8 cells x 4 seeds x 300
    iterations."""
    cfg_type = METHODS[method]
    return make_grid(method, parse_axis(DEFAULT_X, cfg_type), parse_axis(DEFAULT_Y, cfg_type),
                     DEFAULT_SEEDS, iterations=DEFAULT_ITERATIONS)


def grid_work(grid: Grid) -> int:
    """Work of the whole grid in the units of MAX_WORK_PER_REQUEST."""
    return request_work(grid.configs())


def member_bytes(cfg: GRPOConfig) -> int:
    return cfg.iterations * TRAINER_BYTES_PER_ITERATION


def chunk_plan(grid: Grid, chunk_runs: int = CHUNK_RUNS) -> list[range]:
    """Member index ranges, in order, each at most chunk_runs members (rounded down to whole
    cells when a cell fits), MAX_WORK_PER_REQUEST work and MAX_CHUNK_BYTES of trainer memory.
    Depends on the grid alone, so every backend trains the same batches."""
    if chunk_runs >= grid.seeds:
        chunk_runs -= chunk_runs % grid.seeds
    configs, plan, start, work, size = grid.configs(), [], 0, 0, 0
    for i, cfg in enumerate(configs):
        w, b = request_work([cfg]), member_bytes(cfg)
        if i > start and (i - start >= chunk_runs or work + w > MAX_WORK_PER_REQUEST
                          or size + b > MAX_CHUNK_BYTES):
            plan.append(range(start, i))
            start, work, size = i, 0, 0
        work, size = work + w, size + b
    plan.append(range(start, len(configs)))
    return plan
