"""Streamlit glue shared by every page: settings widgets, cached training, chart helpers.

Pages are short scripts that read controls, call these helpers and the core, and draw. Nothing
here holds state between sessions except the bounded st.cache_data caches, which return copies.

Settings: every config field becomes one widget keyed "<prefix>_<field>" (e.g. "grpo_lr"). Widgets
are bound to the URL (?grpo_lr=0.01, omitted at the default) and persist for the session, so a
setting survives moving between pages, and other pages read it from st.session_state.
"""
from __future__ import annotations

import functools
import math
import threading
import weakref
from typing import Sequence

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st
import torch

from grpo_core import (ConfigError, GRPOConfig, ProblemConfig, RewardModelConfig, RunResult,
                       SFTConfig, Upstream, band, check_budget, config_fields, field_range,
                       make_problem, reference_metrics, run_many, train_reward_model, train_sft)

from ui import guard  # noqa: E402  (robustness checks; imports this package back, lazily used)

torch.set_num_threads(1)  # tensors are tiny: threads only add overhead, and sessions share the cores

PALETTE = ["#3056d3", "#e8702a", "#1b9e77", "#b8336a", "#7570b3", "#66a61e", "#a6761d", "#666666"]
GRPO_COLOR, SFT_COLOR, RLVR_COLOR, TRUE_COLOR = PALETTE[0], PALETTE[1], PALETTE[2], "#9aa0a6"
FAINT_COLOR = "#a9adb3"
CHART_HEIGHT = 290
MAX_POINTS = 400          # points per line sent to the browser (long runs are thinned)
SEEDS_DEFAULT, SEEDS_MAX = 8, 64
BAND_NOTE = "line: mean over {n} seeds · band: 10th–90th percentile over seeds"

# Widget labels in the field's words; the field name itself is the URL key.
LABELS = {"n_contexts": "contexts C", "vocab_size": "vocabulary size V", "context_dim": "context dim D",
          "pref_scale": "preference sharpness", "steps_per_epoch": "steps per epoch",
          "batch_size": "batch size", "lr": "learning rate", "hidden_dim": "hidden units",
          "batch_pairs": "pairs per step", "prompts": "prompts per iteration",
          "group_size": "group size G", "kl_coef": "KL coefficient β", "clip_eps": "clip range ε",
          "kl_estimator": "KL estimator", "kl_placement": "KL placement", "clip_eps_high": "upper clip range ε_high",
          "dual_clip": "dual-clip constant c", "entropy_coef": "entropy bonus coefficient",
          "ref_reset_every": "reset reference every N iterations",
          "dynamic_sampling": "dynamic sampling: max redraws"}
# The notebook's GRPO knobs; any other GRPOConfig field is a later variant, shown in an expander.
GRPO_CORE = ("iterations", "prompts", "group_size", "lr", "kl_coef", "clip_eps", "epochs", "seed")
UPSTREAM = ((ProblemConfig, "problem", "task"), (SFTConfig, "sft", "SFT"),
            (RewardModelConfig, "rm", "reward model"))


# ---------------------------------------------------------------- page and settings widgets

def page(title: str) -> None:
    st.set_page_config(page_title=f"{title} · GRPO explorer", page_icon="🎯", layout="wide")
    guard.check_url(title)  # robustness: bad URL settings are fixed, with a notice, before any widget
    presentation_mode()


# ---------------------------------------------------------------- presentation mode (?present=1)

PRESENT_CSS = """<style>
[data-testid="stSidebar"], [data-testid="stSidebarCollapsedControl"],
[data-testid="stExpandSidebarButton"], [data-testid="stSidebarNav"] { display: none !important; }
html { font-size: 21px; }
[data-testid="stMainBlockContainer"] { max-width: 100%; padding-left: 2rem; padding-right: 2rem; }
</style>"""


def presentation_mode() -> bool:
    """?present=1: hide the sidebar (charts then take the full width) and enlarge the type, for a projector.

    The flag is kept in the session and put back into the URL, so it survives page switches;
    ?present=0 (or the exit button) turns it off.
    """
    asked = st.query_params.get("present")
    if asked is not None:
        st.session_state["present"] = asked == "1"
    if not st.session_state.get("present", False):
        return False
    if asked != "1":
        st.query_params["present"] = "1"

    def leave():
        st.session_state["present"] = False
        st.query_params.pop("present", None)
    st.html(PRESENT_CSS)
    st.button("✕ Exit presentation mode", key="present_exit", type="tertiary", on_click=leave)
    return True


def stop_with_error(err: Exception) -> None:
    """Show a bad setting as a readable error and end this run of the page (no traceback)."""
    st.error(f"**Invalid setting.** {err}")
    st.stop()


def _defaults(cls, overrides: dict | None = None) -> dict:
    return {f.name: (overrides or {}).get(f.name, f.default) for f in config_fields(cls)}


def _log_grid(lo: float, hi: float, default: float) -> list[float]:
    """1-2-5 steps per decade between lo and hi, plus the default."""
    grid = {float(f"{m * 10.0 ** k:.3g}") for k in range(math.floor(math.log10(lo)), 1 + math.ceil(math.log10(hi)))
            for m in (1, 2, 5)}
    return sorted(v for v in grid | {default} if lo <= v <= hi)


def _widget(cls, f, key: str, default):
    """One widget for config field f, bounded by its metadata, bound to the URL and the session."""
    meta, kind = f.metadata, type(f.default)
    label = "PPO epochs μ" if (f.name == "epochs" and issubclass(cls, GRPOConfig)) else LABELS.get(
        f.name, f.name.replace("_", " "))
    opts = dict(key=key, help=f"{meta['help']} Range: {field_range(cls, f.name)}.",
                bind="query-params", persist_state="session")
    lo, hi = meta.get("lo"), meta.get("hi")
    if meta.get("choices"):
        return st.selectbox(label, meta["choices"], index=list(meta["choices"]).index(default), **opts)
    if kind is int and hi - lo <= 64:
        return st.slider(label, lo, hi, default, **opts)
    if kind is int:
        return st.number_input(label, min_value=lo, max_value=hi, value=default, step=1, **opts)
    if meta.get("log"):
        return st.select_slider(label, _log_grid(lo, hi, default), value=default,
                                format_func=lambda v: f"{v:g}", **opts)
    if hi - lo <= 1:
        return st.slider(label, float(lo), float(hi), float(default), step=0.01, **opts)
    return st.number_input(label, min_value=float(lo), max_value=float(hi), value=float(default),
                           step=0.01, format="%.2f", **opts)


def config_controls(cls, prefix: str, *, defaults: dict | None = None, skip: Sequence[str] = ()) -> dict:
    """A widget per user-settable field of cls in the current container; returns {field: value}.

    For GRPO configs, fields beyond the notebook's (advantage estimators, DAPO, ...) go in an expander.
    """
    chosen = [f for f in config_fields(cls) if f.name not in skip]
    core = [f for f in chosen if not issubclass(cls, GRPOConfig) or f.name in GRPO_CORE]
    extra = [f for f in chosen if f not in core]
    values = {f.name: _widget(cls, f, f"{prefix}_{f.name}", _defaults(cls, defaults)[f.name]) for f in core}
    if extra:
        with st.expander("Variants: advantages, KL, clipping, DAPO"):
            values.update({f.name: _widget(cls, f, f"{prefix}_{f.name}", _defaults(cls, defaults)[f.name])
                           for f in extra})
    return values


def make_config(cls, **values):
    """cls(**values), or an st.error naming the bad field and a clean stop."""
    try:
        return cls(**values)
    except ConfigError as err:
        stop_with_error(err)


def stored_config(cls, prefix: str, defaults: dict | None = None):
    """The config last chosen with config_controls(cls, prefix) in this session (or defaults)."""
    values = {k: st.session_state.get(f"{prefix}_{k}", v) for k, v in _defaults(cls, defaults).items()}
    return make_config(cls, **values)


def seeds_control(prefix: str) -> int:
    return st.slider("seeds", 1, SEEDS_MAX, SEEDS_DEFAULT, key=f"{prefix}_seeds", bind="query-params",
                     persist_state="session",
                     help="Independent runs (seeds seed, seed+1, …) trained together as one batch; "
                          "the charts show their mean and spread.")


def run_controls(cls, prefix: str, title: str):
    """The sidebar of a run page (GRPO, RLVR): every config field, seeds, individual runs and a
    reset button. Returns (config, number of seeds, show individual runs)."""
    with st.sidebar:
        st.header(f"{title} settings")
        cfg = make_config(cls, **config_controls(cls, prefix))
        n_seeds = seeds_control(prefix)
        show_runs = st.checkbox("show individual runs", key=f"{prefix}_show_runs", bind="query-params",
                                persist_state="session", help="Draw every seed's curve faintly behind the mean.")
        reset_button([(cls, prefix, None)], {f"{prefix}_seeds": SEEDS_DEFAULT, f"{prefix}_show_runs": False})
    return cfg, n_seeds, show_runs


def stored_seeds(prefix: str) -> int:
    return int(st.session_state.get(f"{prefix}_seeds", SEEDS_DEFAULT))


def reset_button(groups: Sequence[tuple], extra: dict | None = None) -> None:
    """A button that puts every widget of groups [(cls, prefix, defaults or None)] and the extra
    {key: default} widgets back to their defaults."""
    def reset():
        for cls, prefix, defaults in groups:
            for name, value in _defaults(cls, defaults).items():
                st.session_state[f"{prefix}_{name}"] = value
        st.session_state.update(extra or {})
    st.button("Reset to defaults", on_click=reset, help="Put every setting on this page back to its default.")


# ---------------------------------------------------------------- cached stages

@st.cache_data(max_entries=16, show_spinner=False)
def problem(cfg: ProblemConfig):
    return make_problem(cfg)


@st.cache_data(max_entries=16, show_spinner="Training the SFT policy…")
def sft(problem_cfg: ProblemConfig, sft_cfg: SFTConfig):
    return train_sft(problem(problem_cfg), sft_cfg)


@st.cache_data(max_entries=16, show_spinner="Training the reward model…")
def reward_model(problem_cfg: ProblemConfig, rm_cfg: RewardModelConfig):
    return train_reward_model(problem(problem_cfg), rm_cfg)


def upstream(problem_cfg: ProblemConfig, sft_cfg: SFTConfig, rm_cfg: RewardModelConfig) -> Upstream:
    """Task, SFT and reward model, each from its own cache: an RM change does not retrain SFT."""
    return Upstream(problem(problem_cfg), sft(problem_cfg, sft_cfg), reward_model(problem_cfg, rm_cfg))


def upstream_configs() -> tuple:
    """The (problem, SFT, reward model) configs chosen on the Setup page, or the defaults."""
    return tuple(stored_config(cls, prefix) for cls, prefix, _ in UPSTREAM)


def stored_upstream() -> Upstream:
    """The upstream chosen on Setup, with a one-line caption saying which it is."""
    configs = upstream_configs()
    parts = [f"{name} {describe(cfg)}" for cfg, (_, _, name) in zip(configs, UPSTREAM)]
    st.caption("Starting point, as set on the Setup page: " + "; ".join(parts) + ".")
    return upstream(*configs)


def describe(cfg, defaults: dict | None = None) -> str:
    """The settings of cfg that differ from the defaults, e.g. 'lr=0.01, seed=3', or 'defaults'."""
    base = _defaults(type(cfg), defaults)
    changed = [f"{k}={v:g}" for k, v in cfg.to_dict().items() if k in base and v != base[k]]
    return ", ".join(changed) if changed else "defaults"


class _NotCached(Exception):
    """Raised by a probe of _train's cache that finds nothing (exceptions are never cached)."""


# Robustness: at most 16 entries of at most guard.MAX_RESULT_BYTES (32 MiB) each, see ui/guard.py.
@st.cache_data(max_entries=16, ttl=3600, show_spinner=False)
def _train(problem_cfg, sft_cfg, rm_cfg, configs: tuple, _up: Upstream,
           _results: list[RunResult] | None = None, _probe: bool = False) -> list[RunResult]:
    """Keyed on the configs only. _probe: raise _NotCached instead of training (a cache miss);
    _results: runs trained elsewhere (in pieces, see ui/live.py), to be remembered under this key."""
    if _probe:
        raise _NotCached
    if _results is not None:
        return _results
    # The progress bar is created here so that a cache hit replays it (already finished, then gone).
    bar = st.progress(0.0, text=f"Training {len(configs)} runs as one batch…")
    every = max(1, max(c.iterations for c in configs) // 50)

    def on_iteration(done: int, total: int):
        if done % every == 0 or done == total:
            bar.progress(done / total, text=f"Training {len(configs)} runs as one batch: "
                                            f"iteration {done} of {total}")

    results = run_many(_up, list(configs), on_iteration)
    bar.empty()
    return results


def cached_runs(up: Upstream, configs: Sequence[GRPOConfig]) -> list[RunResult] | None:
    """The cached result of these runs (a copy), or None if nobody has trained them yet."""
    try:
        return _train(*up.configs, tuple(configs), _up=up, _probe=True)
    except _NotCached:
        return None


def remember_runs(up: Upstream, configs: Sequence[GRPOConfig], results: list[RunResult]) -> None:
    """Put runs finished outside train() (live, in pieces) where train() will find them."""
    _train(*up.configs, tuple(configs), _up=up, _results=results)


class _KeyLock:
    """A lock for one training key; weakly held, so the table only has keys in use."""

    def __init__(self):
        self.lock = threading.Lock()


_TRAINING_LOCKS: "weakref.WeakValueDictionary[str, _KeyLock]" = weakref.WeakValueDictionary()
_TRAINING_LOCKS_GUARD = threading.Lock()


def training_lock(up: Upstream, configs: Sequence[GRPOConfig]) -> _KeyLock:
    """The process-wide lock of these runs: sessions asking for the same runs at once train them
    once (st.cache_data does this for train(); ui/live.py's stoppable training needs it too)."""
    key = repr((up.configs, tuple(configs)))            # frozen dataclasses: a stable key
    with _TRAINING_LOCKS_GUARD:
        holder = _TRAINING_LOCKS.get(key)
        if holder is None:
            holder = _TRAINING_LOCKS[key] = _KeyLock()
    return holder


def train(up: Upstream, configs: Sequence[GRPOConfig]) -> list[RunResult]:
    """All configs as one batched run_many call, cached on (upstream configs, run configs)."""
    configs = tuple(configs)
    check_request(up, configs)
    return _train(*up.configs, configs, _up=up)


def check_request(up: Upstream, configs: Sequence[GRPOConfig]) -> None:
    """Stop the page with a readable error if the request is over the work or size caps."""
    try:
        check_budget(configs)
        guard.check_result_size(up.configs, configs)  # robustness: bounds the cache in bytes
    except ConfigError as err:
        stop_with_error(err)


def show_stopped(results: Sequence[RunResult]) -> None:
    stopped = [r for r in results if r.stopped]
    if stopped:
        seeds = ", ".join(str(r.config.seed) for r in stopped)
        st.warning(f"Seed(s) {seeds}: {stopped[0].stopped}")


def reference(up: Upstream) -> dict[str, float]:
    """Exact metrics of the SFT policy (where every run starts)."""
    return {k: float(v) for k, v in reference_metrics(up).items()}


def reward_rules(up: Upstream) -> dict[str, float]:
    return {"SFT start": reference(up)["true_reward"], "best achievable": float(up.problem.best_reward.mean())}


def summary(results: Sequence[RunResult], up: Upstream, correct: bool = False) -> None:
    """A row of headline numbers: final exact true reward against SFT and the best, KL, P(correct)."""
    ref = reference(up)
    final = pd.DataFrame([r.history.iloc[-1] for r in results])
    n = len(results)
    cols = st.columns(4)
    cols[0].metric(f"final true reward (mean of {n})", f"{final.true_reward.mean():.3f}",
                   f"{final.true_reward.mean() - ref['true_reward']:+.3f} vs SFT",
                   help="Exact expected true reward of the final policy, averaged over contexts and seeds.")
    cols[1].metric("best achievable", f"{float(up.problem.best_reward.mean()):.3f}",
                   help="Always picking each context's best token.")
    cols[2].metric("final KL(policy ‖ SFT)", f"{final.kl_ref.mean():.3f}",
                   help="Exact KL divergence of the final policy from the frozen reference, in nats.")
    cols[3].metric("final P(correct token)", f"{final.correct_prob.mean():.3f}",
                   f"{final.correct_prob.mean() - ref['correct_prob']:+.3f} vs SFT",
                   help="Exact probability of each context's best token, averaged over contexts.")


# ---------------------------------------------------------------- charts

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


@chart_spec
def band_chart(groups: dict[str, Sequence[pd.DataFrame]], column: str, title: str, *,
               y_title: str | None = None, x: str = "iteration", rules: dict[str, float] | None = None,
               show_runs: bool = False, faint: tuple[str, pd.DataFrame, str] | None = None,
               window: int = 1, colors: Sequence[str] | None = None, height: int = CHART_HEIGHT):
    """Mean line and 10th-90th percentile band of history[column] over each group's runs, as a
    Vega-Lite spec (dict). Cached on its arguments (histories hashed by content), so a page's
    rerun with unchanged results rebuilds no chart: most of a cached rerun's time was Altair.

    groups {label: [history]}; rules {label: y} dashed reference lines; faint = (label, history,
    its column): one extra thin grey line (e.g. the notebook's noisy metric); window: rolling mean.
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
    # The y range fits the runs and the reference lines; the faint noisy line is clipped to it.
    shown = [bands[["lo", "hi"]].to_numpy().ravel(), list((rules or {}).values())]
    if runs is not None:
        shown.append(runs[column].to_numpy())
    shown = np.concatenate([np.asarray(v, dtype=float) for v in shown])
    lo, hi = float(np.nanmin(shown)), float(np.nanmax(shown))
    pad = 0.06 * (hi - lo) if hi > lo else 0.05 * max(abs(hi), 1e-3)
    y_scale = alt.Scale(domain=[lo - pad, hi + pad], zero=False, nice=False)
    y_title = y_title or column
    xq = alt.X(f"{x}:Q", title=_x_title(x))
    layers = []
    if faint is not None:
        label, history, faint_column = faint
        f = thin(smooth(history, faint_column, x, window), 1000).assign(series=label)
        layers.append(alt.Chart(f).mark_line(strokeWidth=0.8, opacity=0.55, clip=True).encode(
            x=xq, y=alt.Y(f"{faint_column}:Q", title=y_title, scale=y_scale), color=color))
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


# Presentation mode: charts taller and their type larger, for a projector.
PRESENT_CHART_SCALE = 1.45
PRESENT_CHART_CONFIG = {"axis": {"labelFontSize": 15, "titleFontSize": 16},
                        "legend": {"labelFontSize": 15}, "title": {"fontSize": 20, "subtitleFontSize": 14},
                        "text": {"fontSize": 15}}


def show(chart) -> None:
    """An Altair chart or a Vega-Lite spec dict. Specs come from the project's own chart code, so
    Altair's JSON-schema validation (much of a page's rerun time) is skipped."""
    spec = chart if isinstance(chart, dict) else chart.to_dict(validate=False)
    if st.session_state.get("present"):
        spec = {**spec, "config": {**spec.get("config", {}), **PRESENT_CHART_CONFIG}}
        if isinstance(spec.get("height"), (int, float)):
            spec["height"] = int(spec["height"] * PRESENT_CHART_SCALE)
    st.vega_lite_chart(spec, width="stretch")


def show_grid(charts: Sequence, columns: int = 2) -> None:
    """Charts in rows of `columns`."""
    for start in range(0, len(charts), columns):
        for col, chart in zip(st.columns(columns), charts[start:start + columns]):
            with col:
                show(chart)


# ---------------------------------------------------------------- views shared by pages

def diagnostics(groups: dict[str, Sequence[pd.DataFrame]], show_runs: bool, **kw) -> list:
    """The four training diagnostics every run page shows, as band charts."""
    return [
        band_chart(groups, "kl_ref", "KL(policy ‖ SFT reference), exact", y_title="KL (nats)",
                   show_runs=show_runs, **kw),
        band_chart(groups, "entropy", "Policy entropy, exact", y_title="entropy (nats)",
                   show_runs=show_runs, **kw),
        band_chart(groups, "adv_abs", "Mean |advantage| in the batch", y_title="mean |A|",
                   show_runs=show_runs, **kw),
        band_chart(groups, "zero_std_frac", "Groups with zero reward spread (no signal)",
                   y_title="fraction", show_runs=show_runs, **kw),
    ]


def more_diagnostics(groups: dict[str, Sequence[pd.DataFrame]], show_runs: bool, **kw) -> None:
    """Clip fractions, the KL estimate the loss uses next to the exact batch KL, gradient norm."""
    with st.expander("More diagnostics: clipping, the KL estimate, gradient norm"):
        show_grid([
            band_chart(groups, "clip_frac_low", "Clipped low: A < 0 and ratio < 1 - ε",
                       y_title="fraction of samples", show_runs=show_runs, **kw),
            band_chart(groups, "clip_frac_high", "Clipped high: A > 0 and ratio > 1 + ε_high",
                       y_title="fraction of samples", show_runs=show_runs, **kw),
            band_chart(groups, "kl_estimate", "KL as the loss estimates it (chosen estimator)",
                       y_title="KL (nats)", show_runs=show_runs, **kw),
            band_chart(groups, "batch_kl", "KL to the current reference, exact, on the batch's contexts",
                       y_title="KL (nats)", show_runs=show_runs, **kw),
            band_chart(groups, "grad_norm", "Gradient norm (mean over the iteration's steps)",
                       y_title="‖g‖", show_runs=show_runs, **kw),
            band_chart(groups, "policy_loss", "Clipped surrogate loss", y_title="loss",
                       show_runs=show_runs, **kw)])
        st.caption("With the notebook's learning rate the ratio barely leaves [1 - ε, 1 + ε], so "
                   "clipping is rare; raise the learning rate or the PPO epochs to see it act.")


def pick_a_run(table: pd.DataFrame, results: Sequence[RunResult], up: Upstream, key: str,
               x: str = "iteration") -> None:
    """A table with one row per run (in the order of results); selecting a row draws that run's
    curves on their own, so an odd seed can be looked at alone."""
    st.markdown("Select a row to see that run's curves on their own.")
    event = st.dataframe(table, hide_index=True, column_config=number_formats(table), on_select="rerun",
                         selection_mode="single-row", key=key, height=280)
    if event.selection.rows and event.selection.rows[0] < len(results):
        run = results[event.selection.rows[0]]
        name = "RLVR" if run.config.reward == "verifiable" else "GRPO"
        one = {f"{name}, G={run.config.group_size}, seed {run.config.seed}": [run.history]}
        show_grid([
            band_chart(one, "true_reward", "Expected true reward", y_title="true reward", x=x,
                       rules=reward_rules(up)),
            band_chart(one, "kl_ref", "KL(policy ‖ SFT reference)", y_title="KL (nats)", x=x),
            band_chart(one, "entropy", "Entropy", y_title="entropy (nats)", x=x),
        ], columns=3)


def final_policy_view(results: Sequence[RunResult], up: Upstream, name: str, prefix: str,
                      color: str) -> None:
    """Per-context bars of one chosen seed's final policy against the SFT reference and the truth."""
    seeds = [r.config.seed for r in results]
    seed = st.selectbox("seed to inspect", seeds, key=f"{prefix}_view_seed",
                        help="Which run's final policy to show, context by context.")
    run = results[seeds.index(seed)]
    show(context_bars({f"{name} policy": run.final_logp.exp().numpy(),
                       "SFT reference": up.sft.logp.exp().numpy(),
                       "true preference": up.problem.true_reward.numpy()},
                      up.problem.correct_token.numpy(), f"Final policy of seed {seed}, per context",
                      "★ marks each context's correct (best) token",
                      colors=[color, SFT_COLOR, TRUE_COLOR]))


def token_table(up: Upstream) -> pd.DataFrame:
    """Per context: the correct token, the reward model's top token, whether they agree, SFT's odds."""
    correct = up.problem.correct_token.numpy()
    rm_top = up.rm.scores.argmax(-1).numpy()
    sft_probs = up.sft.logp.exp().numpy()
    return pd.DataFrame({
        "context": range(len(correct)), "correct token": correct,
        "true reward of it": up.problem.best_reward.numpy(),
        "reward model's top token": rm_top,
        "agree": np.where(rm_top == correct, "✓", "✗ GRPO will chase the wrong token"),
        "SFT P(correct)": sft_probs[np.arange(len(correct)), correct],
    })


def correct_prob_table(results: Sequence[RunResult], up: Upstream) -> pd.DataFrame:
    """Per context: the correct token, SFT's probability of it and the final one over seeds."""
    probs = np.stack([r.per_context["correct_prob"].to_numpy() for r in results])   # (R, C)
    sft_probs = reference_metrics(up, per_context=True)["correct_prob"]
    return pd.DataFrame({"context": range(probs.shape[1]), "correct token": up.problem.correct_token.numpy(),
                         "SFT P(correct)": sft_probs, "final P(correct), mean": probs.mean(0),
                         "min over seeds": probs.min(0), "max over seeds": probs.max(0)})


def final_table(results: Sequence[RunResult], up: Upstream, with_g: bool = False) -> pd.DataFrame:
    """One row per run: its seed (and G), final exact true reward, KL, entropy."""
    sft_reward = reference(up)["true_reward"]
    rows = []
    for r in results:
        last = r.history.iloc[-1]
        rows.append({**({"G": r.config.group_size} if with_g else {}), "seed": r.config.seed,
                     "final true reward": last.true_reward, "final KL": last.kl_ref,
                     "final entropy": last.entropy, "beats SFT": "✓" if last.true_reward > sft_reward else "✗"})
    return pd.DataFrame(rows)


def seed_table(methods: dict[str, Sequence[RunResult]], up: Upstream) -> pd.DataFrame:
    """final_table of each method's runs, stacked, with a method column first."""
    return pd.concat([final_table(results, up).assign(method=name) for name, results in methods.items()],
                     ignore_index=True).pipe(lambda t: t[["method", *t.columns[:-1]]])


def final_by_group_size(results: Sequence[RunResult]) -> pd.DataFrame:
    """G, mean, lo, hi: final exact true reward over each group size's seeds (10th-90th pct)."""
    final = pd.DataFrame({"G": [r.config.group_size for r in results],
                          "reward": [r.history["true_reward"].iloc[-1] for r in results]})
    return final.groupby("G")["reward"].agg(
        mean="mean", lo=lambda v: v.quantile(0.1), hi=lambda v: v.quantile(0.9)).reset_index()


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
    spread = alt.Chart(df).mark_rule(color="#111", strokeWidth=1.5).encode(
        x=x, xOffset=offset, y="lo:Q", y2="hi:Q")
    return alt.layer(bars, spread).properties(
        title=chart_title("Exact expected true reward per context", "bars: mean over seeds · black lines: "
                     "min–max over seeds"), height=CHART_HEIGHT + 40)


def compare_notice(table: pd.DataFrame, up: Upstream) -> str:
    """One or two sentences on what to notice in a GRPO vs RLVR compare_table."""
    ctx, overall = table.iloc[:-1], table.iloc[-1]
    rm_wrong = {str(c) for c, (top, ok) in enumerate(zip(up.rm.scores.argmax(-1).tolist(),
                                                         up.problem.correct_token.tolist())) if top != ok}
    text = (f"Overall, GRPO takes the expected true reward from {overall.sft:.3f} (SFT) to "
            f"{overall.grpo:.3f} and RLVR to {overall.rlvr:.3f}; the best achievable is {overall.best:.3f}.")
    for key, name in (("grpo", "GRPO"), ("rlvr", "RLVR")):
        worse = [c for c, m, s in zip(ctx.context, ctx[key], ctx.sft) if m < s]
        misled = [c for c in worse if c in rm_wrong] if key == "grpo" else []
        if worse:
            text += f" {name} ends below SFT in context {', '.join(worse)}"
            text += (f": where the reward model's top token is not the correct one ({', '.join(misled)}), "
                     "GRPO faithfully optimizes the wrong target." if misled else ".")
    if rm_wrong and not any(c for c in rm_wrong if float(ctx.grpo[ctx.context == c].iloc[0])
                            < float(ctx.sft[ctx.context == c].iloc[0])):
        text += (f" The reward model is wrong about context {', '.join(sorted(rm_wrong))}, yet GRPO "
                 "did not lose reward there with these settings.")
    return text


def number_formats(df: pd.DataFrame, digits: int = 3) -> dict:
    """st.column_config for every float column of df: fixed decimals."""
    return {c: st.column_config.NumberColumn(format=f"%.{digits}f") for c in df.columns
            if pd.api.types.is_float_dtype(df[c])}


def compare_view(table: pd.DataFrame, names: dict[str, str]) -> pd.DataFrame:
    """compare_table output as a display table: mean, min–max spread and how many seeds beat SFT."""
    out = pd.DataFrame({"context": table["context"],
                        "correct token": table["correct_token"].map(lambda t: "" if t < 0 else str(t)),
                        "SFT": table["sft"]})
    for key, label in names.items():
        out[label] = table[key]
        out[f"{label} spread"] = [f"{lo:.3f} – {hi:.3f}" for lo, hi in zip(table[f"{key}_min"], table[f"{key}_max"])]
        out[f"{label} beats SFT"] = [f"{'✓' if m > s else '✗'} {k}/{n}" for m, s, k, n in zip(
            table[key], table["sft"], table[f"{key}_improved"], table[f"{key}_runs"])]
    out["best"] = table["best"]
    return out

