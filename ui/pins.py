"""Pinned runs: keep a run's mean curves, change settings, overlay up to MAX_PINS runs; the legend
names what differs between them.

Shared between sessions: nothing; pins live in st.session_state["pins"], at most MAX_PINS.
"""
from __future__ import annotations

from typing import Sequence

import altair as alt
import pandas as pd
import streamlit as st

from grpo_core import GRPOConfig, RLVRConfig, RunResult, Upstream, band
from ui import charts, controls

MAX_PINS = 6
KINDS = {"grpo": (GRPOConfig, "GRPO", "pages/2_GRPO.py"), "rlvr": (RLVRConfig, "RLVR", "pages/3_RLVR.py")}


def _flat(pin: dict) -> dict:
    """A pin's settings keyed by their on-screen labels (upstream ones prefixed by their stage)."""
    cls = KINDS.get(pin["name"].lower(), (GRPOConfig,))[0]
    out = {"method": pin["name"], "seeds": pin["seeds"]}
    out.update({controls.field_label(cls, k): v for k, v in pin["config"].items() if k != "reward"})
    stages = {prefix: (stage_cls, name) for stage_cls, prefix, name in controls.UPSTREAM}
    for section, values in pin["upstream"].items():
        stage_cls, name = stages[section]
        out.update({f"{name} {controls.field_label(stage_cls, k)}": v for k, v in values.items()})
    return out


def pin_labels(pins: Sequence[dict]) -> list[str]:
    """'#n: what differs', naming the settings that differ between the pinned runs."""
    flats = [_flat(p) for p in pins]
    keys = [k for k in dict.fromkeys(k for f in flats for k in f)
            if len({repr(f.get(k)) for f in flats}) > 1]
    fmt = lambda v: f"{v:g}" if isinstance(v, float) else str(v)
    labels = []
    for i, f in enumerate(flats):
        parts = [fmt(f["method"]) if k == "method" else f"{k} {fmt(f.get(k, '–'))}" for k in keys]
        labels.append(f"#{i + 1}" + (": " + ", ".join(parts) if parts else f": {f['method']}"))
    return labels


def pin_button(kind: str, cfg: GRPOConfig, n_seeds: int, up: Upstream,
               results: Sequence[RunResult]) -> None:
    def pin():
        hists = [r.history for r in results]
        mean = {c: band(hists, c)["mean"].to_numpy() for c in ("true_reward", "kl_ref")}
        history = pd.DataFrame({"iteration": band(hists, "true_reward")["iteration"].to_numpy(), **mean})
        pins = st.session_state.setdefault("pins", [])
        pins.append({"name": KINDS[kind][1], "seeds": n_seeds, "config": cfg.to_dict(),
                     "upstream": {s: c.to_dict() for s, c in zip(("problem", "sft", "rm"), up.configs)},
                     "history": history})
        del pins[:-MAX_PINS]
    st.button("Pin this run", icon=":material/push_pin:", key=f"{kind}_pin", on_click=pin,
              help=f"Keep this run's mean curves to compare with others (at most {MAX_PINS}; the "
                   "oldest is dropped).")


def pin_chart(long: pd.DataFrame, runs: Sequence[str], colors: Sequence[str], column: str, title: str,
              y_title: str) -> dict:
    """Each pinned run's mean curve of column, full height; the legend names runs by "#n" only
    (a long label per line would take the plot's height), the full labels are listed under the charts."""
    return alt.Chart(long).mark_line(strokeWidth=2.2).encode(
        x=alt.X("iteration:Q"), y=alt.Y(f"{column}:Q", title=y_title, scale=alt.Scale(zero=False)),
        color=alt.Color("run:N", sort=list(runs), scale=alt.Scale(domain=list(runs), range=list(colors)),
                        legend=alt.Legend(orient="top", direction="horizontal", title=None,
                                          symbolType="stroke", symbolStrokeWidth=3)),
        tooltip=["run:N", "iteration:Q", alt.Tooltip(f"{column}:Q", format=".4f")],
    ).properties(title=charts.chart_title(title, "mean over each pinned run's seeds"),
                 height=charts.CHART_HEIGHT).to_dict(validate=False)


def pins_view(key: str) -> None:
    """Overlay of the pinned runs' exact true reward and KL, legend naming what differs; unpin."""
    pins = st.session_state.get("pins", [])
    if not pins:
        st.caption("Pin runs to overlay their curves here: change a setting, pin again, compare.")
        return
    labels = pin_labels(pins)
    short = [label.split(":")[0] for label in labels]          # "#1": the full label is listed below
    long = pd.concat([charts.thin(p["history"]).assign(run=tag) for p, tag in zip(pins, short)],
                     ignore_index=True)
    colors = charts.PALETTE[:len(labels)]
    charts.show_grid([pin_chart(long, short, colors, "true_reward", "Pinned runs: expected true reward",
                                "true reward"),
                      pin_chart(long, short, colors, "kl_ref", "Pinned runs: KL(policy ‖ SFT)", "KL (nats)")])
    st.markdown("  \n".join(f'<span style="color:{c}">■</span> {label}' for c, label in zip(colors, labels)),
                unsafe_allow_html=True)
    cols = st.columns(min(len(pins), 3))
    for i, label in enumerate(labels):
        cols[i % len(cols)].button(f"✕ unpin {label}", key=f"{key}_unpin_{i}",
                                   on_click=lambda i=i: st.session_state["pins"].pop(i))
