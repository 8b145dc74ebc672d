"""Chart builders and their cached Vega-Lite specs, the palette, and drawing charts on a page.

Every builder decorated with :func:`chart_spec` returns a spec dict, cached on its arguments:
a page rerun whose results came from the store rebuilds no chart.

Shared between sessions: the chart_spec caches (st.cache_data, at most 128 specs of ~100 kB per
builder; Streamlit hands out copies). Nothing else: the rest is constants.
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from grpo_core import band

# Same order as .streamlit/config.toml's chartCategoricalColors: the policy being trained, the SFT
# reference, RLVR, then other series.
PALETTE = ["#3056d3", "#e8702a", "#1b9e77", "#b8336a", "#7570b3", "#66a61e", "#a6761d", "#666666"]
GRPO_COLOR, SFT_COLOR, RLVR_COLOR, TRUE_COLOR = PALETTE[0], PALETTE[1], PALETTE[2], "#9aa0a6"
FAINT_COLOR = "#a9adb3"
CHART_HEIGHT = 230        # the plot's own height: titles, axes and legends come on top (show())
MAX_POINTS = 400          # points per line sent to the browser (long runs are thinned)
BAND_NOTE = "line: mean over {n} seeds · band: 10th–90th percentile over seeds"


def thin(df: pd.DataFrame, max_points: int = MAX_POINTS) -> pd.DataFrame:
    """Every k-th row (and the last) so that a line has at most about max_points points."""
    step = math.ceil(len(df) / max_points)
    return df if step <= 1 else df.iloc[sorted(set(range(0, len(df), step)) | {len(df) - 1})]


def smooth(history: pd.DataFrame, column: str, x: str = "iteration", window: int = 1) -> pd.DataFrame:
    """[x, column] with column replaced by its trailing rolling mean over `window` rows."""
    out = history[[x, column]].copy()
    out[column] = out[column].rolling(window, min_periods=1).mean()
    return out


def chart_title(text: str, subtitle: str | list[str] = "") -> alt.TitleParams:
    return alt.TitleParams(text, subtitle=subtitle or alt.Undefined, anchor="start")


def _rule_layers(rules: dict[str, float] | None) -> list:
    if not rules:
        return []
    df = pd.DataFrame({"label": list(rules), "y": list(rules.values())})
    rule = alt.Chart(df).mark_rule(strokeDash=[5, 4], color="#555", strokeWidth=1.2).encode(
        y="y:Q", tooltip=["label:N", alt.Tooltip("y:Q", format=".3f")])
    # Labels sit at the right end, above their line: runs start at the SFT line on the left.
    text = alt.Chart(df).mark_text(align="right", baseline="bottom", dx=-4, dy=-2, color="#444",
                                   fontSize=11).encode(y="y:Q", x=alt.value({"expr": "width"}), text="label:N")
    return [rule, text]


def _x_title(x: str) -> str:
    return {"iteration": "iteration", "samples": "samples generated (responses)"}.get(x, x)


def _frame_digest(df: pd.DataFrame):
    """What identifies a history for the chart caches: its columns and raw values (hashing these
    bytes is ~100x faster than Streamlit's default content hash of a DataFrame)."""
    values = df.to_numpy()
    return tuple(df.columns), values.tobytes() if values.dtype != object else repr(values.tolist())


def chart_spec(build):
    """Cache a chart builder's Vega-Lite spec (a dict) on its arguments, histories by a fast
    digest: a page rerun whose results came from the cache then rebuilds no chart, which is
    where most of a cached rerun's time went. At most 128 specs of ~100 kB per chart kind."""
    @st.cache_data(max_entries=128, show_spinner=False, hash_funcs={pd.DataFrame: _frame_digest})
    @functools.wraps(build)
    def cached(*args, **kwargs) -> dict:
        chart = build(*args, **kwargs)
        return chart if isinstance(chart, dict) else chart.to_dict(validate=False)
    return cached


def arrow_datasets(spec: dict) -> dict:
    """spec with its named datasets already in Arrow IPC bytes, the form st.vega_lite_chart sends
    (it converts record lists on every call, bytes it passes on): for specs kept across reruns,
    whose conversion is then paid once."""
    if not spec.get("datasets"):
        return spec
    from streamlit import dataframe_util
    return {**spec, "datasets": {name: data if isinstance(data, bytes) else
                                 dataframe_util.convert_anything_to_arrow_bytes(data)
                                 for name, data in spec["datasets"].items()}}


def faint_window(n: int) -> int:
    """Iterations per rolling window of a noisy per-iteration metric: about 1/25 of the run, at least 5."""
    return max(5, n // 25)


def faint_band(history: pd.DataFrame, column: str, x: str = "iteration", window: int = 1) -> pd.DataFrame:
    """[x, mean, lo, hi]: the rolling mean and 10th/90th percentiles of a noisy metric over
    faint_window(len(history)) rows (after the page's own smoothing window)."""
    values = smooth(history, column, x, window)
    w = faint_window(len(values))
    rolling = values[column].rolling(w, min_periods=1, center=True)
    return pd.DataFrame({x: values[x].to_numpy(), "mean": rolling.mean().to_numpy(),
                         "lo": rolling.quantile(0.1).to_numpy(), "hi": rolling.quantile(0.9).to_numpy()})


def grow_range(held: tuple[float, float] | None, values: Sequence[float],
               headroom: float = 0.5) -> tuple[float, float]:
    """The y range a live chart keeps while its run trains.

    `held` (the range shown so far) while it contains every value; otherwise each side the values
    left is pushed out past them by `headroom` x their span, so the axis changes a handful of times
    per run instead of every frame, and never shrinks. A range of non-negative values (KL,
    entropy) does not extend below 0.
    """
    vals = np.asarray(values, dtype=float)
    vals = vals[np.isfinite(vals)]
    if not len(vals):
        return held if held is not None else (0.0, 1.0)
    lo, hi = float(vals.min()), float(vals.max())
    if held is not None and held[0] <= lo and hi <= held[1]:
        return held
    span = max(hi - lo, 0.05 * max(abs(lo), abs(hi)), 1e-3)
    new_lo = lo - headroom * span if held is None or lo < held[0] else held[0]
    new_hi = hi + headroom * span if held is None or hi > held[1] else held[1]
    if lo >= 0:
        new_lo = max(new_lo, 0.0)
    return (new_lo, new_hi)


@chart_spec
def band_chart(groups: dict[str, Sequence[pd.DataFrame]], column: str, title: str, *,
               y_title: str | None = None, x: str = "iteration", rules: dict[str, float] | None = None,
               show_runs: bool = False, faint: tuple[str, pd.DataFrame, str] | None = None,
               window: int = 1, colors: Sequence[str] | None = None, height: int = CHART_HEIGHT,
               x_max: float | None = None, y_range: tuple[float, float] | None = None):
    """Mean line and 10th-90th percentile band of history[column] over each group's runs, as a
    Vega-Lite spec (dict). Cached on its arguments (histories hashed by content), so a page's
    rerun with unchanged results rebuilds no chart: most of a cached rerun's time was Altair.

    groups {label: [history]}; rules {label: y} dashed reference lines; faint = (label, history,
    its column): one extra thin grey line (e.g. the notebook's noisy metric); window: rolling mean;
    x_max fixes the x axis to [0, x_max] (a live run's total); y_range, when given, is the y axis
    (a live run's held range from grow_range), so the curve moves, not the frame.
    """
    colors = list(colors or PALETTE)[:len(groups)]
    domain, rng = list(groups), list(colors)
    bands, runs = [], []
    for label, hists in groups.items():
        smoothed = [smooth(h, column, x, window) for h in hists]
        bands.append(thin(band(smoothed, column, x=x)).assign(series=label))
        if show_runs:
            runs += [thin(h).assign(series=label, run=i) for i, h in enumerate(smoothed)]
    bands = pd.concat(bands, ignore_index=True)
    if faint is not None:
        domain.append(faint[0])
        rng.append(FAINT_COLOR)
    color = alt.Color("series:N", scale=alt.Scale(domain=domain, range=rng),
                      legend=alt.Legend(orient="bottom", title=None, labelLimit=400, symbolType="stroke",
                                        symbolStrokeWidth=3, symbolOpacity=1))
    runs = pd.concat(runs, ignore_index=True) if runs else None
    # The y range fits the runs, the reference lines and the faint noisy metric's band.
    shown = [bands[["lo", "hi"]].to_numpy().ravel(), list((rules or {}).values())]
    if faint is not None:
        noisy = faint_band(faint[1], faint[2], x, window)
        shown.append(noisy[["lo", "hi"]].to_numpy().ravel())
    if runs is not None:
        shown.append(runs[column].to_numpy())
    shown = np.concatenate([np.asarray(v, dtype=float) for v in shown])
    lo, hi = float(np.nanmin(shown)), float(np.nanmax(shown))
    pad = 0.06 * (hi - lo) if hi > lo else 0.05 * max(abs(hi), 1e-3)
    domain_y = [lo - pad, hi + pad] if y_range is None else [float(y_range[0]), float(y_range[1])]
    y_scale = alt.Scale(domain=domain_y, zero=False, nice=False)
    y_title = y_title or column
    # x_max: a live run's last iteration, so the axis stays put and the curve, not the frame, moves.
    xq = alt.X(f"{x}:Q", title=_x_title(x),
               scale=alt.Scale(domain=[0, x_max], nice=False) if x_max else alt.Undefined)
    layers = []
    if faint is not None:
        # The noisy metric as a light band (its rolling 10th-90th percentile) around its rolling
        # mean: drawn point by point, every iteration's jump made a wall of vertical lines.
        f = thin(noisy.assign(series=faint[0]))
        layers.append(alt.Chart(f).mark_area(opacity=0.18, color=FAINT_COLOR).encode(
            x=xq, y=alt.Y("lo:Q", title=y_title, scale=y_scale), y2="hi:Q"))
        layers.append(alt.Chart(f).mark_line(strokeWidth=1.2, strokeDash=[4, 3]).encode(
            x=xq, y=alt.Y("mean:Q", title=y_title, scale=y_scale), color=color,
            tooltip=["series:N", alt.Tooltip(f"{x}:Q"), alt.Tooltip("mean:Q", title="rolling mean", format=".4f")]))
    n_max = int(bands["n"].max())
    if n_max > 1:
        layers.append(alt.Chart(bands).mark_area(opacity=0.2).encode(
            x=xq, y=alt.Y("lo:Q", title=y_title, scale=y_scale), y2="hi:Q", color=color))
    if runs is not None:
        n_runs = runs.groupby("series")["run"].nunique().max()
        layers.append(alt.Chart(runs).mark_line(strokeWidth=0.7, opacity=min(0.3, 4 / n_runs)).encode(
            x=xq, y=alt.Y(f"{column}:Q", title=y_title, scale=y_scale), color=color, detail="run:N"))
    layers.append(alt.Chart(bands).mark_line(strokeWidth=2.2).encode(
        x=xq, y=alt.Y("mean:Q", title=y_title, scale=y_scale), color=color,
        tooltip=["series:N", alt.Tooltip(f"{x}:Q"), alt.Tooltip("mean:Q", format=".4f"),
                 alt.Tooltip("lo:Q", title="10th pct", format=".4f"),
                 alt.Tooltip("hi:Q", title="90th pct", format=".4f")]))
    subtitle = [BAND_NOTE.format(n=n_max)] if n_max > 1 else []
    if faint is not None:
        subtitle.append(f"grey: the noisy metric's rolling mean (dashed) and 10–90% band, "
                        f"{faint_window(len(faint[1]))}-iteration window")
    if window > 1:
        subtitle.append(f"each run smoothed by a rolling mean over {window} iterations")
    return alt.layer(*layers, *_rule_layers(rules)).properties(
        title=chart_title(title, subtitle), height=height + 14 * max(0, len(subtitle) - 1))


@chart_spec
def lines_chart(df: pd.DataFrame, x: str, columns: dict[str, str], title: str, y_title: str, *,
                rules: dict[str, float] | None = None, x_title: str | None = None,
                colors: Sequence[str] | None = None, height: int = CHART_HEIGHT):
    """One line per column of df ({column: legend label}) against x."""
    long = thin(df)[[x, *columns]].melt(x, var_name="series", value_name="value")
    long["series"] = long["series"].map(columns)
    line = alt.Chart(long).mark_line(strokeWidth=2).encode(
        x=alt.X(f"{x}:Q", title=x_title or x), y=alt.Y("value:Q", title=y_title, scale=alt.Scale(zero=False)),
        color=alt.Color("series:N", scale=alt.Scale(domain=list(columns.values()),
                                                    range=list(colors or PALETTE)[:len(columns)]),
                        legend=alt.Legend(orient="bottom", title=None) if len(columns) > 1 else None),
        tooltip=["series:N", f"{x}:Q", alt.Tooltip("value:Q", format=".4f")])
    return alt.layer(line, *_rule_layers(rules)).properties(title=chart_title(title), height=height)


@chart_spec
def heatmap(table: np.ndarray, title: str, value_title: str, *, scheme: str = "blues",
            outline: np.ndarray | None = None, subtitle: str = "", fmt: str = ".2f"):
    """A context x token heatmap of table (C, V); outline (C,) marks one token per context."""
    n_ctx, vocab = table.shape
    df = pd.DataFrame([{"context": c, "token": v, "value": float(table[c, v]),
                        "marked": outline is not None and int(outline[c]) == v}
                       for c in range(n_ctx) for v in range(vocab)])
    base = alt.Chart(df).encode(x=alt.X("token:O", title="token", axis=alt.Axis(labelAngle=0)),
                                y=alt.Y("context:O", title="context"))
    layers = [base.mark_rect().encode(
        color=alt.Color("value:Q", scale=alt.Scale(scheme=scheme), title=value_title),
        tooltip=["context:O", "token:O", alt.Tooltip("value:Q", title=value_title, format=".3f")])]
    if outline is not None:
        layers.append(base.transform_filter("datum.marked").mark_rect(
            fill=None, stroke="#111", strokeWidth=2.5))
    if vocab <= 16:
        mid = float(table.min() + 0.55 * (table.max() - table.min()))
        layers.append(base.mark_text(fontSize=10).encode(
            text=alt.Text("value:Q", format=fmt),
            color=alt.condition(f"datum.value > {mid}", alt.value("white"), alt.value("#222"))))
    return alt.layer(*layers).properties(title=chart_title(title, subtitle), height=32 * n_ctx + 130)


@chart_spec
def context_bars(policies: dict[str, np.ndarray], correct_token: np.ndarray, title: str,
                 subtitle: str = "", colors: Sequence[str] | None = None):
    """For each context a panel with one bar per token per policy ({name: probs (C, V)}).

    The correct (best) token of each context is starred.
    """
    names = list(policies)
    n_ctx, vocab = next(iter(policies.values())).shape
    df = pd.DataFrame([{"context": c, "token": v, "policy": name, "probability": float(p[c, v]),
                        "correct": int(correct_token[c]) == v}
                       for name, p in policies.items() for c in range(n_ctx) for v in range(vocab)])
    width = max(150, vocab * (len(names) * 4 + 3))
    columns = max(1, min(n_ctx, 900 // (width + 25)))
    bars = alt.Chart().mark_bar().encode(
        x=alt.X("token:O", title="token", axis=alt.Axis(labelAngle=0)),
        xOffset=alt.XOffset("policy:N", sort=names),
        y=alt.Y("probability:Q", title="probability"),
        color=alt.Color("policy:N", sort=names, scale=alt.Scale(
            domain=names, range=list(colors or PALETTE)[:len(names)]),
            legend=alt.Legend(orient="bottom", title=None)),
        tooltip=["context:O", "token:O", "policy:N", alt.Tooltip("probability:Q", format=".3f")])
    star = alt.Chart().transform_filter("datum.correct").transform_aggregate(
        top="max(probability)", groupby=["context", "token"]).mark_text(
        text="★", dy=-8, fontSize=13, color="#111").encode(x="token:O", y="top:Q")
    return alt.layer(bars, star, data=df).properties(width=width, height=150).facet(
        facet=alt.Facet("context:O", title=None, header=alt.Header(labelExpr="'context ' + datum.value",
                                                                     labelFontSize=12)),
        columns=columns).properties(title=chart_title(title, subtitle))


@chart_spec
def errorbar_chart(df: pd.DataFrame, x: str, title: str, x_title: str, y_title: str, *,
                   rules: dict[str, float] | None = None, color: str = GRPO_COLOR, subtitle: str = ""):
    """Points at df.mean with error bars from df.lo to df.hi, x ordinal."""
    base = alt.Chart(df).encode(x=alt.X(f"{x}:O", title=x_title, axis=alt.Axis(labelAngle=0)))
    bars = base.mark_errorbar(ticks=True, color=color, thickness=1.6).encode(
        y=alt.Y("lo:Q", title=y_title, scale=alt.Scale(zero=False)), y2="hi:Q")
    points = base.mark_point(filled=True, size=70, color=color).encode(
        y="mean:Q", tooltip=[f"{x}:O", alt.Tooltip("mean:Q", format=".4f"),
                             alt.Tooltip("lo:Q", title="10th pct", format=".4f"),
                             alt.Tooltip("hi:Q", title="90th pct", format=".4f")])
    return alt.layer(bars, points, *_rule_layers(rules)).properties(
        title=chart_title(title, subtitle), height=CHART_HEIGHT)


@chart_spec
def compare_chart(table: pd.DataFrame, names: dict[str, str]):
    """Per context grouped bars: SFT, each method's mean (with its min-max over seeds), the best."""
    rows = []
    for _, t in table.iterrows():
        rows.append({"context": t.context, "policy": "SFT", "reward": t.sft, "lo": t.sft, "hi": t.sft})
        rows += [{"context": t.context, "policy": label, "reward": t[key], "lo": t[f"{key}_min"],
                  "hi": t[f"{key}_max"]} for key, label in names.items()]
        rows.append({"context": t.context, "policy": "best achievable", "reward": t.best, "lo": t.best,
                     "hi": t.best})
    df = pd.DataFrame(rows)
    order = ["SFT", *names.values(), "best achievable"]
    colors = [SFT_COLOR, GRPO_COLOR, RLVR_COLOR][:len(order) - 1] + [TRUE_COLOR]
    x = alt.X("context:N", sort=list(table["context"]), title="context", axis=alt.Axis(labelAngle=0))
    offset = alt.XOffset("policy:N", sort=order)
    bars = alt.Chart(df).mark_bar().encode(
        x=x, xOffset=offset, y=alt.Y("reward:Q", title="expected true reward"),
        color=alt.Color("policy:N", sort=order, scale=alt.Scale(domain=order, range=colors),
                        legend=alt.Legend(orient="bottom", title=None)),
        tooltip=["context:N", "policy:N", alt.Tooltip("reward:Q", format=".3f"),
                 alt.Tooltip("lo:Q", title="min over seeds", format=".3f"),
                 alt.Tooltip("hi:Q", title="max over seeds", format=".3f")])
    spread = alt.Chart(df).mark_rule(color="#111", strokeWidth=3, strokeCap="round").encode(
        x=x, xOffset=offset, y="lo:Q", y2="hi:Q")
    return alt.layer(bars, spread).properties(
        title=chart_title("Exact expected true reward per context", "bars: mean over seeds · black lines: "
                     "min–max over seeds"), height=CHART_HEIGHT + 40)


# Presentation mode: charts taller and their type larger, for a projector.
PRESENT_CHART_SCALE = 1.45
PRESENT_CHART_CONFIG = {"font": '"Source Sans", sans-serif', "range": {"category": PALETTE},
                        "view": {"stroke": None},
                        "axis": {"labelFontSize": 16, "titleFontSize": 18, "titleFontWeight": "normal",
                                 "gridColor": "#e6e9ef", "domainColor": "#c4c8d0", "labelColor": "#555",
                                 "titleColor": "#444"},
                        "legend": {"labelFontSize": 16, "symbolSize": 160},
                        "title": {"fontSize": 22, "subtitleFontSize": 16, "anchor": "start"},
                        "text": {"fontSize": 15}}


def show(chart) -> None:
    """An Altair chart or a Vega-Lite spec dict (or a sentence, shown instead). Specs come from the project's own chart code, so
    Altair's JSON-schema validation (much of a page's rerun time) is skipped."""
    if isinstance(chart, str):          # a sentence in place of a chart that would show nothing
        st.info(chart)
        return
    spec = chart if isinstance(chart, dict) else chart.to_dict(validate=False)
    if "autosize" not in spec and "facet" not in spec:
        # The height is the plot's: with Streamlit's default ("fit") the title, axes and legends are
        # cut from it, and a chart with a long legend kept only a sliver of plot.
        spec = {**spec, "autosize": {"type": "fit-x", "contains": "padding"}}
    if st.session_state.get("present"):
        # Streamlit's chart theme sets its own font sizes over the spec's, so presentation mode
        # draws without it, with the enlarged type (and the app's font and palette) given here.
        spec = {**spec, "config": {**spec.get("config", {}), **PRESENT_CHART_CONFIG}}
        if isinstance(spec.get("height"), (int, float)):
            spec["height"] = int(spec["height"] * PRESENT_CHART_SCALE)
        st.vega_lite_chart(spec, width="stretch", theme=None)
        return
    st.vega_lite_chart(spec, width="stretch")


def show_grid(charts: Sequence, columns: int = 2) -> None:
    """Charts in rows of `columns`."""
    for start in range(0, len(charts), columns):
        for col, chart in zip(st.columns(columns), charts[start:start + columns]):
            with col:
                show(chart)
