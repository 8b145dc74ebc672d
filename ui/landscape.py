"""The Landscape page's helpers: its one training path (a bounded, locked cache of landscape
results), the measured table, the curves, the (KL, true reward) plane and the verdict sentences.

Shared between sessions: ``RESULTS``, a ui.store.ResultStore of LandscapeResults (at most
``MAX_ENTRIES``, measured bytes, one lock per request so identical requests train once);
``VIEWS``, at most ``VIEW_ENTRIES`` LandscapeViews (what the page draws, derived from a result,
keyed like it, shared read-only, least recently used out first); the chart-spec caches of
:func:`kl_plane_chart` (ui.charts.chart_spec) and :func:`frontier` / :func:`kl_placements`
(st.cache_data, 16 entries each).
"""
from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from grpo_core import GRPOConfig, Upstream
from grpo_core.methods import kl as kl_analysis
from grpo_core.methods.landscape import (ALL_METHODS, METHODS, LandscapeResult, kl_frontier, landscape,
                                         landscape_configs, measured_table)
from ui import charts, controls, store
from ui.landscape_text import (optimum_at, placements_sentence, placements_view, plane_sentence,  # noqa: F401
                               when_to_use, winner_sentence)
from ui.charts import chart_spec, chart_title, CHART_HEIGHT

MAX_ENTRIES = 6
# the page's default: every method the "when to use what" rows compare (DPO and GRPO, GRPO + RLVR
# and PPO + RLVR, PPO and GRPO)
DEFAULT_METHODS = ("ppo", "grpo", "rlvr", "ppo_rlvr", "dpo")
# one colour per method, none of them the optima's black and grey
COLORS = {"ppo": "#3056d3", "reinforce": "#e8702a", "rloo": "#1b9e77", "reinforce_pp": "#b8336a",
          "remax": "#7570b3", "grpo": "#66a61e", "rlvr": "#a6761d", "ppo_rlvr": "#e6ab02", "dpo": "#d62728",
          "online_dpo": "#17becf"}


def _nbytes(results: Sequence[LandscapeResult]) -> int:
    total = 0
    for r in results:
        total += sum(int(h.memory_usage(deep=True).sum()) for hs in r.histories.values() for h in hs)
        total += sum(store.result_nbytes(runs) for runs in r.runs.values())
        total += 64 * 1024
    return total


RESULTS = store.ResultStore(max_entries=MAX_ENTRIES, max_bytes=MAX_ENTRIES * 32 * 2**20, nbytes=_nbytes)


def result_key(up: Upstream, methods: Sequence[str], seeds: int, responses: int) -> tuple:
    """The key of a landscape result (and of its view): upstream configs, methods in the table's
    order, seeds, budget."""
    return up.configs, tuple(m for m in ALL_METHODS if m in methods), seeds, responses


def train(up: Upstream, methods: Sequence[str], seeds: int, responses: int) -> LandscapeResult:
    """The landscape of these methods from RESULTS, or trained here (once, however many sessions
    ask at the same time) with a progress indicator. Bad input stops the page with one line."""
    key = result_key(up, methods, seeds, responses)
    methods = key[1]
    controls.combine(landscape_configs, methods, seeds, responses)     # checks input and work cap first

    def run():
        with st.spinner(f"Training {len(methods)} methods × {seeds} seeds, {responses:,} responses each…",
                        show_time=True):
            return [landscape(methods, seeds, responses, up=up)]

    return RESULTS.get_or_train(key, run, keep=lambda r: True)[0]


# ---------------------------------------------------------------- the table

# The measured table in two parts, each narrow enough to read without scrolling: what each
# method reaches, and what it needs.
TABLE_COLUMNS = {
    "label": "method", "true_reward": "final true reward", "band": "10th–90th pct", "kl": "KL to SFT",
    "to_90": "responses to 90% of gain", "seconds_per_1000": "s per 1,000 responses",
}
NEEDS_COLUMNS = {
    "label": "method", "reward_source": "reward source", "advantage": "advantage", "online": "online?",
    "networks": "networks", "trained_params": "parameters trained",
    "responses_per_iteration": "responses / iteration", "reward_queries": "reward queries / iteration",
}


def table_view(t: pd.DataFrame) -> pd.DataFrame:
    """measured_table's outcome as the page shows it: final reward, its spread, KL, speed."""
    view = t.assign(band=[f"{lo:.3f} – {hi:.3f}" for lo, hi in zip(t.true_reward_p10, t.true_reward_p90)],
                    to_90=[("—" if math.isnan(v) else f"{v:,.0f}" + ("" if on else " pairs"))
                           for v, on in zip(t.to_90, t.online)],
                    seconds_per_1000=["— (no responses)" if math.isnan(v) else f"{v:.3f}" for v in t.seconds_per_1000])
    return view[list(TABLE_COLUMNS)].rename(columns=TABLE_COLUMNS)


def needs_view(t: pd.DataFrame) -> pd.DataFrame:
    """What each method needs, in the notebook table's words next to measured counts."""
    view = t.assign(online=t.online.map({True: "yes", False: "no"}))
    return view[list(NEEDS_COLUMNS)].rename(columns=NEEDS_COLUMNS)


def table_formats() -> dict:
    f = lambda fmt: st.column_config.NumberColumn(format=fmt)
    return {"final true reward": f("%.3f"), "KL to SFT": f("%.3f"), "parameters trained": f("%d")}


# ---------------------------------------------------------------- curves

def groups(res: LandscapeResult, methods: Sequence[str]) -> dict[str, list[pd.DataFrame]]:
    return {METHODS[m].label: res.histories[m] for m in methods}


def colors(methods: Sequence[str]) -> list[str]:
    return [COLORS[m] for m in methods]


# ---------------------------------------------------------------- the (KL, true reward) plane

@st.cache_data(max_entries=16, show_spinner=False)
def _frontier(problem_cfg, sft_cfg, rm_cfg, _up: Upstream) -> pd.DataFrame:
    ref = _up.sft.logp.exp()
    return kl_frontier(ref, _up.rm.scores, _up.problem.true_reward, np.geomspace(1e-3, 1e2, 80))


def frontier(up: Upstream) -> pd.DataFrame:
    """The exact optima pi_ref exp(r/beta)/Z of the true reward and of the reward model, over beta."""
    return _frontier(*up.configs, _up=up)


def final_points(res: LandscapeResult, methods: Sequence[str]) -> pd.DataFrame:
    """One row per method and seed: its final KL to SFT and exact true reward."""
    rows = [{"method": METHODS[m].label, "seed": i, "kl": float(h["kl_ref"].iloc[-1]),
             "true_reward": float(h["true_reward"].iloc[-1])}
            for m in methods for i, h in enumerate(res.histories[m])]
    return pd.DataFrame(rows)


@chart_spec
def kl_plane_chart(points: pd.DataFrame, front: pd.DataFrame, label_order: list, color_range: list,
                   best: float, sft: float):
    """Every method's final (KL, true reward), one dot per seed and a diamond for the mean, against
    the exact optima of the true reward (solid) and of the reward model (dashed)."""
    opt = front.assign(series=front.target.map({"true reward": "optimum of the true reward",
                                                "reward model": "optimum of the reward model"}))
    domain = label_order + ["optimum of the true reward", "optimum of the reward model"]
    # legend symbols opaque and without outline (the dots' 0.5 opacity and the dashed line's dash made
    # them faint, and the reward model's optimum a dashed ring)
    color = alt.Color("series:N", scale=alt.Scale(domain=domain, range=color_range + ["#222222", "#999999"]),
                      legend=alt.Legend(orient="bottom", title=None, labelLimit=300, symbolOpacity=1,
                                        symbolStrokeWidth=0))
    kl_max = float(points.kl.max()) * 1.3 + 1e-3
    opt = opt[opt.kl <= kl_max]
    x = alt.X("kl:Q", title="KL(policy ‖ SFT)  (nats)", scale=alt.Scale(domain=[0, kl_max]))
    y = alt.Y("true_reward:Q", title="exact true reward", scale=alt.Scale(zero=False))
    lines = alt.Chart(opt).mark_line(strokeWidth=2).encode(
        x=x, y=y, color=color, order="beta:Q",
        strokeDash=alt.StrokeDash("series:N", scale=alt.Scale(
            domain=["optimum of the true reward", "optimum of the reward model"], range=[[1, 0], [6, 4]]),
            legend=None),
        tooltip=["series:N", alt.Tooltip("beta:Q", format=".4g"), alt.Tooltip("kl:Q", format=".3f"),
                 alt.Tooltip("true_reward:Q", format=".3f")])
    pts = points.assign(series=points.method)
    dots = alt.Chart(pts).mark_circle(size=30, opacity=0.5).encode(x=x, y=y, color=color)
    means = pts.groupby("series", as_index=False)[["kl", "true_reward"]].mean()
    diamonds = alt.Chart(means).mark_point(shape="diamond", size=140, filled=True, stroke="black",
                                           strokeWidth=0.6).encode(
        x=x, y=y, color=color, tooltip=["series:N", alt.Tooltip("kl:Q", format=".3f"),
                                        alt.Tooltip("true_reward:Q", format=".3f")])
    rules = pd.DataFrame({"y": [best, sft], "label": ["best achievable", "SFT"]})
    rule = alt.Chart(rules).mark_rule(strokeDash=[2, 3], color="#555").encode(y="y:Q")
    text = alt.Chart(rules).mark_text(align="right", baseline="bottom", dx=-4, dy=-2, color="#444",
                                      fontSize=11).encode(y="y:Q", x=alt.value({"expr": "width"}), text="label:N")
    return alt.layer(lines, dots, diamonds, rule, text).properties(
        title=chart_title("Final policies on the (KL, true reward) plane",
                          ["dots: one per seed · ◆: mean over seeds",
                           "solid: optimum π_ref·exp(r/β)/Z of the true reward · dashed: of the reward model"]),
        height=CHART_HEIGHT + 80)


# ---------------------------------------------------------------- which KL each placement optimizes

TARGETS = {"KL(pi || pi_ref)": "π_ref·exp(r/β)/Z (forward KL)", "KL(pi_ref || pi)": "reverse-KL optimum",
           "nothing (zero on average)": "the reward's argmax (no KL at all)"}


@st.cache_data(max_entries=16, show_spinner=False)
def _placements(problem_cfg, sft_cfg, rm_cfg, beta: float, _up: Upstream) -> pd.DataFrame:
    import torch
    ref_logp = _up.sft.logp.double()
    reward, true = _up.rm.scores.double(), _up.problem.true_reward.double()
    forward = torch.log_softmax(ref_logp + reward / beta, -1)
    optima = {"KL(pi || pi_ref)": forward,
              "KL(pi_ref || pi)": kl_analysis.reverse_kl_optimum(reward, ref_logp, beta),
              "nothing (zero on average)": torch.log_softmax(reward * 1e6, -1).clamp(min=-700)}
    # which KL each placement's expected gradient follows, evaluated at a policy away from pi_ref
    table = kl_analysis.kl_placement_table(forward.float(), ref_logp.float())
    rows = []
    for row in table.itertuples():
        logp = optima.get(row.optimizes)
        target = TARGETS.get(row.optimizes, row.optimizes)
        probs = None if logp is None else logp.exp()
        rows.append({"placement": row.placement, "what it is": row.help,
                     "its expected gradient is that of": row.optimizes,
                     "cosine with ∇KL(π‖π_ref)": row.cosine_forward,
                     "converges to": target,
                     "KL(π ‖ π_ref) there": float("nan") if probs is None else
                     float((probs * (logp - ref_logp)).sum(-1).mean()),
                     "true reward there": float("nan") if probs is None else float((probs * true).sum(-1).mean()),
                     "reward-model score there": float("nan") if probs is None else
                     float((probs * reward).sum(-1).mean())})
    return pd.DataFrame(rows)


def kl_placements(up: Upstream, beta: float) -> pd.DataFrame:
    """Per KL placement: which KL its expected gradient follows (kl.kl_placement_table at the
    forward optimum, a policy away from pi_ref) and the exact optimum it therefore converges to
    for E[r_RM] - beta * that KL, with that optimum's KL to SFT, true reward and reward-model score."""
    return _placements(*up.configs, beta, _up=up)


# ---------------------------------------------------------------- the page's view of one result

@dataclass(frozen=True)
class LandscapeView:
    """Everything the page draws from one landscape result: tables, sentences and chart specs.
    Shared read-only between sessions (VIEWS): never change one in place."""

    table: pd.DataFrame          # measured_table
    shown: pd.DataFrame          # table_view: what each method reaches
    needs: pd.DataFrame          # needs_view: what it needs
    winner: str
    online_charts: list          # Vega-Lite specs (datasets in Arrow): true reward and KL against responses
    offline_charts: list         # the same against preference pairs (offline DPO)
    plane: dict                  # kl_plane_chart
    plane_text: str
    when: pd.DataFrame           # when_to_use, indexed by situation
    beta: float                  # the KL coefficient of the placements
    placements: pd.DataFrame     # kl_placements
    placements_shown: pd.DataFrame   # placements_view
    placements_text: str


def _curves(res: LandscapeResult, methods: Sequence[str], rules: dict, x: str, prefix: str = "") -> list:
    g, c = groups(res, methods), colors(methods)
    return [charts.arrow_datasets(charts.band_chart(g, "true_reward", f"{prefix}Exact true reward",
                                                    y_title="true reward", x=x, rules=rules, colors=c)),
            charts.arrow_datasets(charts.band_chart(g, "kl_ref", f"{prefix}KL(policy ‖ SFT)", y_title="KL (nats)",
                                                    x=x, colors=c))]


def build_view(res: LandscapeResult, up: Upstream) -> LandscapeView:
    """The page's view of res (its methods in the table's order)."""
    methods = list(res.histories)
    table = measured_table(res)
    online = [m for m in methods if METHODS[m].online]
    offline = [m for m in methods if not METHODS[m].online]
    rules = {"best achievable": res.best, "SFT": res.sft}
    front = frontier(up)
    beta = GRPOConfig().kl_coef
    fixed = kl_placements(up, beta)
    when = pd.DataFrame(when_to_use(table, res.sft),
                        columns=["situation", "the notebook's advice", "measured here"]).set_index("situation")
    return LandscapeView(
        table=table, shown=table_view(table), needs=needs_view(table), winner=winner_sentence(table, res.sft),
        online_charts=_curves(res, online, rules, "responses") if online else [],
        offline_charts=_curves(res, offline, rules, "pairs", "DPO: ") if offline else [],
        plane=charts.arrow_datasets(kl_plane_chart(final_points(res, methods), front,
                                                   [METHODS[m].label for m in methods], colors(methods),
                                                   res.best, res.sft)),
        plane_text=plane_sentence(table, front), when=when, beta=beta,
        placements=fixed, placements_shown=placements_view(fixed), placements_text=placements_sentence(fixed))


VIEW_ENTRIES = 16
VIEWS: OrderedDict[tuple, LandscapeView] = OrderedDict()
_views_lock = threading.Lock()


def view(up: Upstream, methods: Sequence[str], seeds: int, responses: int) -> LandscapeView:
    """The page's view of the landscape of these settings. A rerun with settings seen before gets
    it from VIEWS (keyed like RESULTS, no copy, no hashing of results, no chart rebuilt); otherwise
    the result comes from train (RESULTS, or trained) and its view is built once and kept."""
    key = result_key(up, methods, seeds, responses)
    with _views_lock:
        found = VIEWS.get(key)
        if found is not None:
            VIEWS.move_to_end(key)
            return found
    made = build_view(train(up, methods, seeds, responses), up)
    with _views_lock:
        VIEWS[key] = made
        while len(VIEWS) > VIEW_ENTRIES:
            VIEWS.popitem(last=False)
    return made
