"""The Hyperparameter map page's logic: controls, training with progress and Stop, the heatmap
and the links from a cell to its own page. Depends only on streamlit, altair, pandas and grpo_core;
the page script passes in what it takes from the rest of ui (the method page's stored config,
the upstream, the log sliders' values).

A map is a grpo_core.grid.Grid: two numeric settings x seeds per cell, trained in the grid's
bounded chunks by the local backend; finished maps are kept in a bounded cache shared by sessions.
"""
from __future__ import annotations

import dataclasses
import json
import math
import threading
from collections import OrderedDict
from typing import Callable, Sequence
from urllib.parse import urlencode

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from grpo_core import ConfigError, GRPOConfig, check_budget, config_fields
from grpo_core.grid import (CELL_METRICS, Axis, DEFAULT_ITERATIONS, DEFAULT_SEEDS, MAX_AXIS_VALUES,
                            MAX_SEEDS, METHODS, Grid, GridError, GridResult, make_axis,
                            make_grid, numeric_fields, result_from_finals, run_grid, sft_finals)

# Where a method's runs live: its page (relative URL path) and its settings' URL prefix.
METHOD_PAGES = {"grpo": ("GRPO", "grpo"), "rlvr": ("RLVR", "rlvr")}
METRIC_TITLES = {"true_reward": "exact true reward", "kl": "KL to SFT", "correct_prob":
                 "accuracy (probability of the correct token)", "rm_reward": "reward-model reward",
                 "entropy": "entropy"}
# Axis ranges a new field starts with; other fields start from their knob range.
AXIS_DEFAULTS = {"lr": (1e-4, 1e-1, 8, True), "kl_coef": (0.0, 0.5, 8, False)}
DEFAULT_AXES = ("lr", "kl_coef")
MAX_MAPS = 16          # finished maps kept (each a few hundred rows: well under 1 MB)
_MAPS: OrderedDict[str, GridResult] = OrderedDict()
_MAPS_LOCK = threading.Lock()


@dataclasses.dataclass(frozen=True)
class AxisChoice:
    field: str
    lo: float
    hi: float
    count: int
    log: bool


@dataclasses.dataclass(frozen=True)
class MapChoice:
    """What the sidebar asked for."""

    method: str
    x: AxisChoice
    y: AxisChoice
    seeds: int
    iterations: int
    metric: str


# ---------------------------------------------------------------- controls

def axis_defaults(cfg_type: type, field: str) -> tuple[float, float, int, bool]:
    if field in AXIS_DEFAULTS:
        return AXIS_DEFAULTS[field]
    meta = {f.name: f.metadata for f in config_fields(cfg_type)}[field]
    return meta["lo"], meta["hi"], 8, bool(meta.get("log"))


def _axis_control(cfg_type: type, name: str, default_field: str, exclude: str | None) -> AxisChoice:
    options = [f for f in numeric_fields(cfg_type) if f != exclude]
    index = options.index(default_field) if default_field in options else 0
    field = st.selectbox(f"{name} axis", options, index=index, key=f"map_{name}_field",
                         help="A numeric setting of the method's config.")
    lo, hi, count, log = axis_defaults(cfg_type, field)
    meta = {f.name: f.metadata for f in config_fields(cfg_type)}[field]
    whole = type({f.name: f.default for f in config_fields(cfg_type)}[field]) is int
    kind = int if whole else float
    fmt = None if whole else "%g"
    c1, c2 = st.columns(2)
    lo = c1.number_input("from", kind(meta["lo"]), kind(meta["hi"]), kind(lo), format=fmt,
                         key=f"map_{name}_lo_{field}")
    hi = c2.number_input("to", kind(meta["lo"]), kind(meta["hi"]), kind(hi), format=fmt,
                         key=f"map_{name}_hi_{field}")
    count = st.slider("values", 1, MAX_AXIS_VALUES, count, key=f"map_{name}_count_{field}")
    log = st.checkbox("log spacing", log, key=f"map_{name}_log_{field}")
    return AxisChoice(field, float(lo), float(hi), int(count), bool(log))


def controls() -> MapChoice:
    """The sidebar's widgets (session-only, not in the URL): method, two axes, seeds, iterations
    and the metric to colour by."""
    method = st.selectbox("method", list(METHODS), key="map_method",
                          format_func=lambda m: m.upper(),
                          help="The method whose settings the map varies; every other setting is "
                               "the method page's (or the shared link's).")
    cfg_type = METHODS[method]
    x = _axis_control(cfg_type, "x", DEFAULT_AXES[0], None)
    y = _axis_control(cfg_type, "y", DEFAULT_AXES[1] if x.field != DEFAULT_AXES[1] else DEFAULT_AXES[0],
                      x.field)
    seeds = st.slider("seeds per cell", 1, MAX_SEEDS, DEFAULT_SEEDS, key="map_seeds",
                      help="Independent runs per cell; hover a cell for their spread.")
    iterations = st.number_input("iterations", 1, 5000, DEFAULT_ITERATIONS, step=50, key="map_iterations")
    metric = st.selectbox("colour by", list(CELL_METRICS), key="map_metric",
                          format_func=METRIC_TITLES.get)
    return MapChoice(method, x, y, int(seeds), int(iterations), metric)


def slider_values(lo: float, hi: float, count: int, choices: Sequence[float]) -> tuple:
    """`count` of a log slider's values (`choices`) from lo to hi, evenly spaced in their order:
    then every cell is a setting its method page can show, and its link opens exactly it."""
    inside = sorted(c for c in choices if lo <= c <= hi) or [min(choices, key=lambda c: abs(
        math.log(c) - math.log(lo)))]
    if count >= len(inside):
        return tuple(inside)
    return tuple(dict.fromkeys(inside[round(i)] for i in np.linspace(0, len(inside) - 1, count)))


def build_map(choice: MapChoice, base: GRPOConfig, upstream_configs: tuple,
              widget_values: Callable[[str, Axis], tuple] | None = None) -> Grid:
    """The Grid the choice asks for, from the method page's config `base` (raises GridError).
    widget_values(field, axis): the axis's values as the method page's widget can show them
    (a log slider's values, a slider's step), so a cell's link opens exactly that cell."""
    cfg_type = METHODS[choice.method]
    axes = []
    for a in (choice.x, choice.y):
        axis = make_axis(cfg_type, a.field, a.lo, a.hi, a.count, a.log)
        if widget_values is not None:
            axis = dataclasses.replace(axis, values=tuple(dict.fromkeys(widget_values(a.field, axis))))
        axes.append(axis)
    grid = make_grid(choice.method, axes[0], axes[1], choice.seeds, base, choice.iterations,
                     *upstream_configs)
    try:
        check_budget(grid.configs())
    except ConfigError as e:
        raise GridError(f"the map {e}".replace("iterations: ", "")) from None
    return grid


# ---------------------------------------------------------------- links

def _url_value(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def cell_url(grid: Grid, xv, yv, page: str | None = None, prefix: str | None = None) -> str:
    """Relative link to the method's page with this cell's settings (and its seeds): the page's
    settings are URL parameters <prefix>_<field>, given where they differ from the defaults, and
    the upstream's (problem_, sft_, rm_) likewise."""
    page_default, prefix_default = METHOD_PAGES[grid.method]
    page, prefix = page or page_default, prefix or prefix_default
    cfg = grid.cell_config(xv, yv)
    params = {}
    for f in config_fields(type(cfg)):
        value = getattr(cfg, f.name)
        if value != f.default:
            params[f"{prefix}_{f.name}"] = _url_value(value)
    params[f"{prefix}_seeds"] = str(grid.seeds)
    for name, up_cfg in (("problem", grid.problem), ("sft", grid.sft), ("rm", grid.rm)):
        for f in config_fields(type(up_cfg)):
            value = getattr(up_cfg, f.name)
            if value != f.default:
                params[f"{name}_{f.name}"] = _url_value(value)
    return f"{page}?{urlencode(params)}"


# ---------------------------------------------------------------- the chart

def _label(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def heatmap_frame(result: GridResult, metric: str) -> pd.DataFrame:
    """One row per finished cell: x, y, their labels, the metric's mean/p10/p90, beats_sft, url."""
    cells, grid = result.cells, result.grid
    return pd.DataFrame({
        "x": cells["x"], "y": cells["y"],
        "x_label": [_label(v) for v in cells["x"]], "y_label": [_label(v) for v in cells["y"]],
        "mean": cells[f"{metric}_mean"], "p10": cells[f"{metric}_p10"], "p90": cells[f"{metric}_p90"],
        "runs": cells["runs"], "diverged": cells["diverged"], "beats_sft": cells["beats_sft"],
        "url": [cell_url(grid, xv, yv) for xv, yv in zip(cells["x"], cells["y"])]})


def nearest_cell(grid: Grid, current: GRPOConfig) -> tuple | None:
    """The cell nearest to the current page settings (in log distance on log axes), if they lie
    within both axes' ranges."""
    picked = []
    for axis in (grid.x, grid.y):
        v = getattr(current, axis.field)
        if not min(axis.values) <= v <= max(axis.values):
            return None
        scale = (lambda t: math.log(t)) if axis.log and min(axis.values) > 0 else (lambda t: t)
        picked.append(min(axis.values, key=lambda a: abs(scale(a) - scale(v))))
    return tuple(picked)


def heatmap_chart(result: GridResult, metric: str, current: GRPOConfig | None = None) -> alt.LayerChart:
    """The map: a cell per (x, y) coloured by the seeds' mean of `metric`, its 10th-90th
    percentile over seeds on hover, a white outline where the mean true reward beats SFT, a
    marker at the current page settings; clicking a cell opens its own page."""
    grid = result.grid
    df = heatmap_frame(result, metric)
    x_order = [_label(v) for v in grid.x.values]
    y_order = [_label(v) for v in reversed(grid.y.values)]     # larger y at the top
    title = METRIC_TITLES[metric]
    base = alt.Chart(df).encode(
        x=alt.X("x_label:O", sort=x_order, title=grid.x.field + (" (log)" if grid.x.log else ""),
                axis=alt.Axis(labelAngle=0)),
        y=alt.Y("y_label:O", sort=y_order, title=grid.y.field + (" (log)" if grid.y.log else "")))
    rect = base.mark_rect().encode(
        color=alt.Color("mean:Q", title=f"{title}, mean", scale=alt.Scale(scheme="viridis")),
        href="url:N",
        tooltip=[alt.Tooltip("x:Q", title=grid.x.field, format="g"),
                 alt.Tooltip("y:Q", title=grid.y.field, format="g"),
                 alt.Tooltip("mean:Q", title=f"{title}, mean over seeds", format=".4f"),
                 alt.Tooltip("p10:Q", title="10th percentile over seeds", format=".4f"),
                 alt.Tooltip("p90:Q", title="90th percentile over seeds", format=".4f"),
                 alt.Tooltip("runs:Q", title="seeds"), alt.Tooltip("diverged:Q", title="diverged"),
                 alt.Tooltip("beats_sft:N", title="mean true reward beats SFT")])
    outline = base.transform_filter("datum.beats_sft").mark_rect(
        fill=None, stroke="white", strokeWidth=2)
    layers = [rect, outline]
    if current is not None and (cell := nearest_cell(grid, current)) is not None:
        marker = pd.DataFrame({"x_label": [_label(cell[0])], "y_label": [_label(cell[1])],
                               "what": ["current page settings"]})
        layers.append(alt.Chart(marker).mark_point(shape="diamond", size=140, filled=True,
                                                   color="#e8702a", stroke="black").encode(
            x=alt.X("x_label:O", sort=x_order), y=alt.Y("y_label:O", sort=y_order),
            tooltip=alt.Tooltip("what:N", title="marker")))
    n_y = len(grid.y.values)
    return alt.layer(*layers).properties(
        title=alt.TitleParams(f"Final {title} per cell, mean over {grid.seeds} seed(s)",
                              subtitle="white outline: the mean true reward beats SFT · "
                                       "diamond: this method's page settings · click a cell to "
                                       "open it on its own page", anchor="start"),
        height=max(160, 34 * n_y))


# ---------------------------------------------------------------- training, cached and stoppable

def map_key(grid: Grid) -> str:
    return json.dumps(grid.to_dict(), sort_keys=True)


def cached_map(grid: Grid) -> GridResult | None:
    with _MAPS_LOCK:
        key = map_key(grid)
        if key in _MAPS:
            _MAPS.move_to_end(key)
            return _MAPS[key]
    return None


def remember_map(result: GridResult) -> None:
    with _MAPS_LOCK:
        _MAPS[map_key(result.grid)] = result
        while len(_MAPS) > MAX_MAPS:
            _MAPS.popitem(last=False)


def train_map(grid: Grid, up, key: str = "map") -> GridResult:
    """The grid's result: from the cache, or trained here chunk by chunk with a progress bar and
    a Stop button. Stopping keeps every cell whose seeds all finished (shown, with a button to
    train the rest); the finished members live in the session, so a rerun resumes, not restarts."""
    cached = cached_map(grid)
    if cached is not None:
        return cached
    k = map_key(grid)
    state = st.session_state.get(f"{key}_partial")
    if state is None or state["key"] != k:
        state = st.session_state[f"{key}_partial"] = {"key": k, "finals": {}, "stopped": False}
    finals = state["finals"]
    if state["stopped"]:
        st.warning(f"You stopped this map: {len(finals)} of {grid.runs} runs finished; the cells "
                   "whose seeds all finished are shown.")
        if not st.button("Train the rest", key=f"{key}_resume"):
            return result_from_finals(grid, finals, sft_finals(up), stopped=True)
        state["stopped"] = False
    holder = st.empty()
    with holder.container():
        bar = st.progress(len(finals) / grid.runs)
        # A click reruns the page, interrupting the training at its next progress update; the
        # members finished so far are in the session, so the rerun shows them.
        if st.button("Stop", key=f"{key}_stop", help="Stop training and keep the finished cells."):
            state["stopped"] = True
            holder.empty()
            st.rerun()
    shown = {"fraction": -1.0}

    def progress(p):
        if p.fraction - shown["fraction"] >= 0.01 or p.chunks_done == p.chunks_total:
            shown["fraction"] = p.fraction
            bar.progress(p.fraction, text=f"Training {grid.runs} runs in {p.chunks_total} "
                                          f"chunk(s): {p.runs_done} finished, chunk "
                                          f"{min(p.chunks_done + 1, p.chunks_total)} of "
                                          f"{p.chunks_total} running")

    result = run_grid(grid, "local", on_progress=progress, up=up, finals=finals)
    holder.empty()
    if not result.stopped:
        remember_map(result)
        del st.session_state[f"{key}_partial"]
    return result


def cells_table(result: GridResult, metric: str) -> pd.DataFrame:
    """The finished cells as a table: the two settings, the metric's mean and spread, and the
    other final metrics' means."""
    g, cells = result.grid, result.cells
    table = cells[["x", "y", f"{metric}_mean", f"{metric}_p10", f"{metric}_p90",
                   *[f"{m}_mean" for m in CELL_METRICS if m != metric], "diverged", "beats_sft"]]
    return table.rename(columns={"x": g.x.field, "y": g.y.field})
