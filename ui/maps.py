"""The Hyperparameter map page's logic: its declared settings (ui.controls), training with
progress and Stop, the heatmap and the links from a cell to its own page.

A map is a grpo_core.grid.Grid: two numeric settings x seeds per cell, trained in the grid's
bounded chunks by the local backend.

Shared between sessions: ``MAPS``, a ui.store.ResultStore of finished maps (at most MAX_MAPS
entries and MAX_MAP_BYTES measured bytes, least recently used out first) with its per-key locks,
so identical maps asked for at the same time train once. A stopped map's finished members live in
the session (st.session_state["map_partial"]), so Stop keeps them and a rerun resumes.
"""
from __future__ import annotations

import dataclasses
import json
import math
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
from ui import controls, store

# Where a method's runs live: its page (relative URL path) and its settings' URL prefix.
METHOD_PAGES = {"grpo": ("GRPO", "grpo"), "rlvr": ("RLVR", "rlvr")}
METRIC_TITLES = {"true_reward": "exact true reward", "kl": "KL to SFT", "correct_prob":
                 "accuracy (probability of the correct token)", "rm_reward": "reward-model reward",
                 "entropy": "entropy"}
# Axis ranges a new field starts with; other fields start from their knob range.
AXIS_DEFAULTS = {"lr": (1e-4, 1e-1, 8, True), "kl_coef": (0.0, 0.5, 8, False)}
DEFAULT_AXES = ("lr", "kl_coef")
ROW_HEIGHT = 34        # pixels per row of the map
MAX_MAPS = 16          # finished maps kept (each a few hundred rows: well under 1 MB)
MAX_MAP_BYTES = 64 * 2**20


def map_nbytes(results) -> int:
    """Measured memory of [GridResult]: its cell and member tables (the grid is a few configs)."""
    return sum(int(r.cells.memory_usage(index=True, deep=True).sum())
               + int(r.members.memory_usage(index=True, deep=True).sum()) + 4096 for r in results)


# Finished maps, shared by sessions: ui.store's bounded store class, with its per-key lock, so
# identical maps asked for at the same time train once. Stopped maps are never stored.
MAPS = store.ResultStore(max_entries=MAX_MAPS, max_bytes=MAX_MAP_BYTES, nbytes=map_nbytes)


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

AXIS_FIELDS = tuple(numeric_fields(GRPOConfig))      # the same numeric settings for every method
assert all(tuple(numeric_fields(t)) == AXIS_FIELDS for t in METHODS.values())
DEFAULT_COUNT = 8


def axis_defaults(cfg_type: type, field: str) -> tuple[float, float, int, bool]:
    if field in AXIS_DEFAULTS:
        return AXIS_DEFAULTS[field]
    meta = {f.name: f.metadata for f in config_fields(cfg_type)}[field]
    return meta["lo"], meta["hi"], DEFAULT_COUNT, bool(meta.get("log"))


def _axis_settings(name: str, default_field: str) -> list[controls.Setting]:
    """One axis's widgets: the field, and per field its range, number of values and spacing
    (keyed by field, so each setting keeps its own range and a link names the field's values)."""
    out = [controls.Setting(f"map_{name}_field", default_field, choices=AXIS_FIELDS, label=f"{name} axis",
                            help="A numeric setting of the method's config.", kind="selectbox")]
    for f in config_fields(GRPOConfig):
        if f.name not in AXIS_FIELDS:
            continue
        lo, hi, count, log = axis_defaults(GRPOConfig, f.name)
        kind = type(f.default)
        bounds = dict(lo=kind(f.metadata["lo"]), hi=kind(f.metadata["hi"]), kind="number", field=f.name)
        out += [controls.Setting(f"map_{name}_lo_{f.name}", kind(lo), label="from", **bounds),
                controls.Setting(f"map_{name}_hi_{f.name}", kind(hi), label="to", **bounds),
                controls.Setting(f"map_{name}_count_{f.name}", count, 1, MAX_AXIS_VALUES, label="values",
                                 kind="slider", help="How many values of the setting the axis takes."),
                controls.Setting(f"map_{name}_log_{f.name}", log, label="log spacing", kind="checkbox")]
    return out


# Every URL-bound widget of the page, declared once (the URL guard and "Reset to defaults" read it).
SETTINGS = (
    controls.Setting("map_method", "grpo", choices=tuple(METHODS), text=str.upper, label="method",
                     kind="selectbox", help="The method whose settings the map varies; every other setting "
                                            "is the method page's (or the shared link's)."),
    *_axis_settings("x", DEFAULT_AXES[0]), *_axis_settings("y", DEFAULT_AXES[1]),
    controls.Setting("map_seeds", DEFAULT_SEEDS, 1, MAX_SEEDS, label="seeds per cell", kind="slider",
                     help="Independent runs per cell; hover a cell for their spread."),
    controls.Setting("map_iterations", DEFAULT_ITERATIONS, 1, 5000, label="iterations", kind="number",
                     help="Iterations of every run (the method page's own iterations are not used)."),
    controls.Setting("map_metric", "true_reward", choices=tuple(CELL_METRICS), text=METRIC_TITLES.get,
                     label="colour by", kind="selectbox"),
)


def page_settings() -> controls.PageSettings:
    """The page's declaration: its widgets, and the settings a shared link brings (the upstream,
    the GRPO and RLVR pages' settings), as on Compare."""
    return controls.PageSettings("Hyperparameter map", SETTINGS, adopted=(
        *controls.upstream_settings(), *controls.shared_run_settings("grpo"),
        *controls.shared_run_settings("rlvr")))


def _number(s: controls.Setting, step=None):
    """A number widget of s with %g labels (1e-4 stays readable), bound to the URL like Setting.draw."""
    whole = isinstance(s.default, int)
    kind = int if whole else float
    return st.number_input(s.label, min_value=kind(s.lo), max_value=kind(s.hi), value=kind(s.default),
                           step=step or (1 if whole else None), format=None if whole else "%g", key=s.key,
                           help=s.help or None, bind="query-params", persist_state="session")


def _axis_control(page: controls.PageSettings, name: str) -> AxisChoice:
    field = page.draw(f"map_{name}_field")
    c1, c2 = st.columns(2)
    with c1:
        lo = _number(page[f"map_{name}_lo_{field}"])
    with c2:
        hi = _number(page[f"map_{name}_hi_{field}"])
    count = page.draw(f"map_{name}_count_{field}")
    log = page.draw(f"map_{name}_log_{field}")
    return AxisChoice(field, float(lo), float(hi), int(count), bool(log))


def sidebar_controls(page: controls.PageSettings) -> MapChoice:
    """The sidebar's widgets: method, two axes, seeds, iterations and the metric to colour by."""
    method = page.draw("map_method")
    x = _axis_control(page, "x")
    y = _axis_control(page, "y")
    seeds = page.draw("map_seeds")
    iterations = _number(page["map_iterations"], step=50)
    metric = page.draw("map_metric")
    page.reset_button()
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
    # Inset from the cell's edges, so the outline does not merge with its neighbours' into a grid.
    outline = base.transform_filter("datum.beats_sft").mark_rect(
        fill=None, stroke="white", strokeWidth=2.5, width=alt.RelativeBandSize(0.8),
        height=alt.RelativeBandSize(0.72))
    layers = [rect, outline]
    if current is not None and (cell := nearest_cell(grid, current)) is not None:
        marker = pd.DataFrame({"x_label": [_label(cell[0])], "y_label": [_label(cell[1])],
                               "what": ["current page settings"]})
        layers.append(alt.Chart(marker).mark_point(shape="diamond", size=220, filled=True,
                                                   color="#e8702a", stroke="black").encode(
            x=alt.X("x_label:O", sort=x_order), y=alt.Y("y_label:O", sort=y_order),
            tooltip=alt.Tooltip("what:N", title="marker")))
    # A fixed row height (a step, not a total): every y label has room, however many rows.
    return alt.layer(*layers).properties(
        title=alt.TitleParams(f"Final {title} per cell, mean over {grid.seeds} seed(s)",
                              subtitle="white outline: the mean true reward beats SFT · "
                                       "diamond: this method's page settings · click a cell to "
                                       "open it on its own page", anchor="start", subtitleFontSize=13),
        height=alt.Step(ROW_HEIGHT)).configure_axis(labelFontSize=13, titleFontSize=14)


# ---------------------------------------------------------------- training, cached and stoppable

def map_key(grid: Grid) -> str:
    return json.dumps(grid.to_dict(), sort_keys=True)


def train_map(grid: Grid, up, key: str = "map") -> GridResult:
    """The grid's result: from MAPS, or trained here chunk by chunk with a progress bar and a
    Stop button, under the map's lock (another session asking for the same map meanwhile waits
    for this result). Stopping keeps every cell whose seeds all finished (shown, with a button to
    train the rest); the finished members live in the session, so a rerun resumes, not restarts."""
    k = map_key(grid)
    found = MAPS.get(k)
    if found is not None:
        return found[0]
    state = st.session_state.get(f"{key}_partial")
    if state is None or state["key"] != k:
        state = st.session_state[f"{key}_partial"] = {"key": k, "finals": {}, "stopped": False}
    if state["stopped"]:
        st.warning(f"You stopped this map: {len(state['finals'])} of {grid.runs} runs finished; the "
                   "cells whose seeds all finished are shown.")
        if not st.button("Train the rest", key=f"{key}_resume"):
            return result_from_finals(grid, state["finals"], sft_finals(up), stopped=True)
        state["stopped"] = False
    notes: list = []

    def wait():
        if not notes:
            notes.append(st.empty())
        notes[0].info("Another session is training exactly this map; waiting for its result…")

    try:
        (result,) = MAPS.get_or_train(k, lambda: [_train_here(grid, up, key, state)], wait,
                                      keep=lambda results: not results[0].stopped)
    finally:
        if notes:
            notes[0].empty()
    if not result.stopped:
        st.session_state.pop(f"{key}_partial", None)
    return result


def _train_here(grid: Grid, up, key: str, state: dict) -> GridResult:
    """Train the grid's missing members with a progress bar and a Stop button."""
    finals = state["finals"]
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
    return result


def cells_table(result: GridResult, metric: str) -> pd.DataFrame:
    """The finished cells as a table: the two settings, the metric's mean and spread, and the
    other final metrics' means."""
    g, cells = result.grid, result.cells
    table = cells[["x", "y", f"{metric}_mean", f"{metric}_p10", f"{metric}_p90",
                   *[f"{m}_mean" for m in CELL_METRICS if m != metric], "diverged", "beats_sft"]]
    return table.rename(columns={"x": g.x.field, "y": g.y.field})
