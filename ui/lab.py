"""Streamlit glue of the algorithm-lab pages (reward hacking, zero-signal groups, pass@k, gradient
noise) and the TRL export expander: cached exact analyses, their tables and charts.

The analyses themselves live in grpo_core.analysis; this module only caches them per upstream and
turns their DataFrames into charts.

Shared between sessions: the st.cache_data caches of the hacking curves and the gradient-noise
table (16 entries each; Streamlit hands out copies), and the chart specs (ui.charts.chart_spec).
"""
from __future__ import annotations

from typing import Sequence

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st
import torch

from grpo_core import RunResult, Upstream
from grpo_core.analysis import (beta_for_kl, best_of_n, gradient_noise as _gradient_noise,
                                kl_regularized_frontier, pass_at_k_table, zero_signal_probability,
                                zero_signal_table)
from grpo_core.export import to_trl
from ui.charts import (CHART_HEIGHT, PALETTE, RLVR_COLOR, SFT_COLOR, chart_spec, chart_title, thin)
from ui.views import reference

BON_LABEL, OPT_LABEL = "best-of-n", "optimum π*"
BON_COLOR, OPT_COLOR = "#111111", "#8c8c8c"
SFT_DASH = [5, 3]


def _legend() -> alt.Legend:
    return alt.Legend(orient="bottom", title=None, labelLimit=400, symbolType="stroke",
                      symbolStrokeWidth=3, symbolOpacity=1, columns=4)


def exact_note(text: str) -> None:
    """What only an exact toy can show on this page, in one or two sentences."""
    st.info(f"**Only an exact toy shows this.** {text}", icon=":material/science:")


# ---------------------------------------------------------------- TRL export

def trl_export(cfg, task=None) -> None:
    """An expander with the TRL GRPOConfig equivalent of cfg (a sequence run's with its task), and
    the knobs TRL lacks."""
    export = to_trl(cfg, task)
    with st.expander("Use these settings in TRL"):
        st.markdown("The same run as Hugging Face TRL `GRPOConfig` arguments. One iteration here is "
                    "one TRL generation batch (prompts × G completions) followed by epochs × "
                    "minibatches optimizer steps, so `max_steps` counts those steps.")
        st.code(export.snippet(), language="python", wrap_lines=True)
        if export.unmapped:
            st.markdown("**No TRL equivalent:**\n" + "\n".join(
                f"- `{name}`: {why}" for name, why in export.unmapped.items()))


# ---------------------------------------------------------------- reward hacking

@st.cache_data(max_entries=16, show_spinner=False)
def _hacking_curves(problem_cfg, sft_cfg, rm_cfg, _up: Upstream):
    ref, proxy, true = _up.sft.logp.exp(), _up.rm.scores, _up.problem.true_reward
    bon = best_of_n(ref, proxy, true, range(1, 65))
    frontier = kl_regularized_frontier(ref, proxy, true, np.geomspace(1e-4, 1e2, 100))
    return bon, frontier


def hacking_curves(up: Upstream) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(best_of_n for n = 1..64, kl_regularized_frontier over beta) of the reward model's scores,
    from the SFT policy; both with a sqrt_kl column."""
    bon, frontier = _hacking_curves(*up.configs, _up=up)
    return bon.assign(sqrt_kl=np.sqrt(bon.kl.clip(lower=0))), frontier.assign(
        sqrt_kl=np.sqrt(frontier.kl.clip(lower=0)))


def coef_label(beta: float) -> str:
    return f"β = {beta:g}"


def trajectories(by_coef: dict[float, Sequence[RunResult]], up: Upstream) -> pd.DataFrame:
    """Per KL coefficient, the mean over seeds of kl_ref, true_reward and rm_reward at each
    iteration (iteration 0: the SFT start), with sqrt_kl = sqrt(mean kl_ref)."""
    ref = reference(up)
    start = {"iteration": 0, "kl_ref": 0.0, "true_reward": ref["true_reward"], "rm_reward": ref["rm_reward"]}
    frames = []
    for beta, runs in by_coef.items():
        hist = pd.concat([r.history[list(start)] for r in runs]).groupby("iteration").mean().reset_index()
        hist = pd.concat([pd.DataFrame([start]), hist], ignore_index=True)
        frames.append(thin(hist).assign(series=coef_label(beta), kl_coef=beta))
    out = pd.concat(frames, ignore_index=True)
    return out.assign(sqrt_kl=np.sqrt(out.kl_ref.clip(lower=0)))


RUN_SHAPES = ["circle", "square", "triangle-up", "diamond", "cross", "triangle-down", "wedge"]
RUN_DASHES = [[1, 0], [8, 3], [2, 2], [10, 3, 2, 3], [4, 4], [1, 3], [12, 2]]


@chart_spec
def hacking_chart(traj: pd.DataFrame, bon: pd.DataFrame, frontier: pd.DataFrame, reward: str,
                  title: str, y_title: str, rules: dict[str, float] | None = None):
    """Reward against sqrt(KL(policy || SFT)): GRPO trajectories (one line per KL coefficient),
    best-of-n and the KL-regularized optimum. reward: 'true_reward' or 'rm_reward'."""
    curve_col = "true_reward" if reward == "true_reward" else "proxy_reward"
    series = list(dict.fromkeys(traj.series))
    domain = series + [BON_LABEL, OPT_LABEL]
    colors = list(PALETTE[:len(series)]) + [BON_COLOR, OPT_COLOR]
    color = alt.Color("series:N", scale=alt.Scale(domain=domain, range=colors), legend=_legend())
    x = alt.X("sqrt_kl:Q", title="√KL(policy ‖ SFT)  (√nats)")
    y = alt.Y("y:Q", title=y_title, scale=alt.Scale(zero=False))
    fmt = lambda name, f=".3f": alt.Tooltip(f"{name}:Q", format=f)
    opt = alt.Chart(frontier.assign(y=frontier[curve_col], series=OPT_LABEL)).mark_line(
        strokeDash=[6, 4], strokeWidth=2).encode(
        x=x, y=y, color=color, order="beta:Q",
        tooltip=["series:N", fmt("beta", ".4g"), fmt("kl"), fmt("y")])
    bon_df = bon.assign(y=bon[curve_col], series=BON_LABEL)
    bon_line = alt.Chart(bon_df).mark_line(strokeWidth=1.6).encode(x=x, y=y, color=color, order="n:Q")
    bon_pts = alt.Chart(bon_df[bon_df.n.isin([1, 2, 4, 8, 16, 32, 64])]).mark_point(
        filled=True, size=40).encode(x=x, y=y, color=color,
                                     tooltip=["series:N", "n:Q", fmt("kl"), fmt("y")])
    bon_text = alt.Chart(bon_df[bon_df.n.isin([2, 4, 16, 64])]).mark_text(
        dy=-9, fontSize=10, color=BON_COLOR).encode(x=x, y=y, text=alt.Text("n:Q", format="d"))
    t = traj.assign(y=traj[reward])
    # The β lines often overlap: each has its own dash pattern and point shape, and its label at its end.
    shapes = alt.Shape("series:N", scale=alt.Scale(domain=series, range=RUN_SHAPES[:len(series)]), legend=None)
    dashes = alt.StrokeDash("series:N", scale=alt.Scale(domain=series, range=RUN_DASHES[:len(series)]),
                            legend=None)
    runs = alt.Chart(t).mark_line(strokeWidth=2.2).encode(
        x=x, y=y, color=color, strokeDash=dashes, order="iteration:Q",
        tooltip=["series:N", "iteration:Q", fmt("kl_ref"), fmt("y")])
    marks = alt.Chart(t.groupby("series", group_keys=False).apply(lambda d: d.iloc[::max(1, len(d) // 6)])).mark_point(
        size=55, filled=True, opacity=0.9).encode(x=x, y=y, color=color, shape=shapes)
    end_rows = t.groupby("series").tail(1).copy()
    end_rows["dy"] = [(-12 if i % 2 == 0 else 14) for i in range(len(end_rows))]   # alternate above/below
    ends = alt.Chart(end_rows).mark_point(size=110, filled=True, stroke="white", strokeWidth=0.8).encode(
        x=x, y=y, color=color, shape=shapes, tooltip=["series:N", "iteration:Q", fmt("kl_ref"), fmt("y")])
    labels = [alt.Chart(end_rows[end_rows.dy == dy]).mark_text(dy=dy, fontSize=11, fontWeight="bold").encode(
        x=x, y=y, color=alt.Color("series:N", scale=alt.Scale(domain=domain, range=colors), legend=None),
        text="series:N") for dy in sorted(set(end_rows.dy))]
    layers = [opt, bon_line, bon_pts, bon_text, runs, marks, ends, *labels]
    if rules:
        df = pd.DataFrame({"label": list(rules), "y": list(rules.values())})
        layers += [alt.Chart(df).mark_rule(strokeDash=[2, 3], color="#555").encode(y="y:Q"),
                   alt.Chart(df).mark_text(align="right", baseline="bottom", dx=-4, dy=-2, color="#444",
                                           fontSize=11).encode(y="y:Q", x=alt.value({"expr": "width"}),
                                                               text="label:N")]
    return alt.layer(*layers).properties(
        title=chart_title(title, ["GRPO runs by β: mean over seeds from SFT, labelled at the end",
                             "black: best-of-n, n = 1…64 · grey dashed: optimum π* ∝ π_ref·exp(r/β) as β varies"]),
        height=CHART_HEIGHT + 60)


def effective_beta_table(by_coef: dict[float, Sequence[RunResult]], up: Upstream,
                         frontier: pd.DataFrame) -> pd.DataFrame:
    """Per KL coefficient: final KL and rewards (means over seeds), the peak true reward, the beta
    whose exact optimum has the final KL, and the optimum's true reward at that KL."""
    ref, proxy = up.sft.logp.exp(), up.rm.scores
    rows = []
    for beta, runs in by_coef.items():
        final = pd.DataFrame([r.history.iloc[-1] for r in runs]).mean(numeric_only=True)
        mean_curve = pd.concat([r.history[["iteration", "true_reward"]] for r in runs]).groupby("iteration").mean()
        eff = beta_for_kl(ref, proxy, float(final.kl_ref))
        opt_true = float(np.interp(final.kl_ref, frontier.kl[::-1], frontier.true_reward[::-1]))
        # Short headers: nine columns must fit the page's width (the caption under the table spells them out).
        rows.append({"β": beta, "final KL": final.kl_ref,
                     "final true": final.true_reward, "final RM": final.rm_reward,
                     "peak true": float(mean_curve.true_reward.max()),
                     "peak at": int(mean_curve.true_reward.idxmax()),
                     "β of the optimum with this KL": eff,
                     "β ÷ optimum's": f"{beta / eff:.1f}×" if beta > 0 else "no penalty",
                     "optimum's true": opt_true})
    return pd.DataFrame(rows)


def reward_std(up: Upstream) -> float:
    """Mean over contexts of the reward model's standard deviation under the SFT policy: the
    scale GRPO divides rewards by at the start."""
    probs, r = up.sft.logp.exp().double(), up.rm.scores.double()
    mean = (probs * r).sum(-1, keepdim=True)
    return float(((probs * (r - mean).square()).sum(-1)).sqrt().mean())


# ---------------------------------------------------------------- zero-signal groups

GROUP_SIZES = [2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64]


def correct_probs(probs: torch.Tensor, up: Upstream) -> torch.Tensor:
    """probs (..., C, V) -> P(correct token) (..., C)."""
    idx = up.problem.correct_token.view(-1, 1).expand(*probs.shape[:-1], 1)
    return probs.gather(-1, idx).squeeze(-1)


def zero_signal_long(up: Upstream, results: Sequence[RunResult], group_sizes=GROUP_SIZES) -> pd.DataFrame:
    """Exact P(no signal) per context and overall against G, for the SFT policy and the final
    RLVR policies (mean over seeds): long DataFrame context, G, probability, policy."""
    reward = up.problem.verifiable_reward
    sft = zero_signal_table(up.sft.logp.exp(), reward, group_sizes)
    after = pd.concat([zero_signal_table(r.final_logp.exp(), reward, group_sizes) for r in results])
    after = after.groupby("context", sort=False).mean().reset_index()
    frames = [t.melt("context", var_name="G", value_name="probability").assign(policy=name)
              for name, t in (("SFT start", sft), ("after RLVR", after))]
    return pd.concat(frames, ignore_index=True).astype({"G": int})


def context_order(n_ctx: int) -> list[str]:
    return [str(c) for c in range(n_ctx)] + ["overall"]


@chart_spec
def per_context_g_chart(df: pd.DataFrame, policy: str, title: str, y_title: str, x_title: str,
                        marked_g: int | None = None, subtitle: str = ""):
    """One line per context (and a thick black 'overall') of df[df.policy == policy] against x
    (column 'G' or 'k'), log2 x axis."""
    xcol = "G" if "G" in df.columns else "k"
    d = df[df.policy == policy]
    order = list(dict.fromkeys(d.context))
    colors = [PALETTE[i % len(PALETTE)] for i in range(len(order) - 1)] + ["#000000"]
    color = alt.Color("context:N", sort=order, scale=alt.Scale(domain=order, range=colors),
                      legend=alt.Legend(orient="bottom", title="context", symbolType="stroke"))
    x = alt.X(f"{xcol}:Q", title=x_title, scale=alt.Scale(type="log", base=2),
              axis=alt.Axis(values=[1, 2, 4, 8, 16, 32, 64]))
    value = "probability" if "probability" in d.columns else "pass"
    y = alt.Y(f"{value}:Q", title=y_title, scale=alt.Scale(domain=[0, 1]))
    line = alt.Chart(d).mark_line(point=alt.OverlayMarkDef(size=18)).encode(
        x=x, y=y, color=color,
        strokeWidth=alt.condition("datum.context == 'overall'", alt.value(3.2), alt.value(1.6)),
        tooltip=["context:N", f"{xcol}:Q", alt.Tooltip(f"{value}:Q", format=".4f")])
    layers = [line]
    if marked_g:
        layers.append(alt.Chart(pd.DataFrame({xcol: [marked_g], "label": [f"G = {marked_g} (this run)"]}))
                      .mark_rule(strokeDash=[4, 3], color="#555").encode(x=f"{xcol}:Q"))
    return alt.layer(*layers).properties(title=chart_title(title, subtitle), height=CHART_HEIGHT)


def zero_signal_expected(p: torch.Tensor, group_size: int, redraws: int = 0) -> tuple[float, float]:
    """For success probabilities p (C,) under uniform prompts: (expected fraction of kept groups
    with no signal, expected groups drawn per kept group) when a group with no signal is replaced
    by a fresh prompt and group up to `redraws` times (DAPO dynamic sampling, as grpo_core does it).
    With f = mean_c [p_c^G + (1 - p_c)^G]: f^(redraws + 1) and sum_{k=0..redraws} f^k."""
    f = float(zero_signal_probability(p, [group_size])[..., 0].mean())
    return f ** (redraws + 1), sum(f ** k for k in range(redraws + 1))


def with_bound(history: pd.DataFrame, group_size: int) -> pd.DataFrame:
    """history plus 'bound' = pbar^G + (1 - pbar)^G of the mean P(correct) pbar of the policy that
    sampled each batch (the previous row's; Jensen: a lower bound on the exact mean over contexts)."""
    pbar = history.correct_prob.shift(1)
    out = history.copy()
    out["bound"] = pbar.pow(group_size) + (1 - pbar).pow(group_size)
    return out.iloc[1:]


# ---------------------------------------------------------------- pass@k

KS = list(range(1, 65))


def pass_at_k_long(up: Upstream, results: Sequence[RunResult], ks=KS) -> pd.DataFrame:
    """Exact pass@k per context and overall for the SFT policy and each run's final policy:
    long DataFrame context, k, pass, policy ('SFT' or 'after RLVR'), seed (-1 for SFT)."""
    correct = up.problem.correct_token
    tables = [(-1, "SFT", pass_at_k_table(up.sft.logp.exp(), correct, ks))]
    tables += [(r.config.seed, "after RLVR", pass_at_k_table(r.final_logp.exp(), correct, ks)) for r in results]
    return pd.concat([t.melt("context", var_name="k", value_name="pass").assign(policy=name, seed=seed)
                      for seed, name, t in tables], ignore_index=True).astype({"k": int})


@chart_spec
def pass_overall_chart(df: pd.DataFrame, n_seeds: int):
    """Overall pass@k against k: SFT, and the mean over seeds after RLVR with its min-max band."""
    d = df[df.context == "overall"].groupby(["policy", "k"])["pass"].agg(
        mean="mean", lo="min", hi="max").reset_index()
    order, colors = ["SFT", "after RLVR"], [SFT_COLOR, RLVR_COLOR]
    color = alt.Color("policy:N", sort=order, scale=alt.Scale(domain=order, range=colors), legend=_legend())
    x = alt.X("k:Q", title="k (samples per problem)", scale=alt.Scale(type="log", base=2),
              axis=alt.Axis(values=[1, 2, 4, 8, 16, 32, 64]))
    band = alt.Chart(d).mark_area(opacity=0.2).encode(x=x, y="lo:Q", y2="hi:Q", color=color)
    line = alt.Chart(d).mark_line(strokeWidth=2.4).encode(
        x=x, y=alt.Y("mean:Q", title="pass@k", scale=alt.Scale(zero=False)), color=color,
        tooltip=["policy:N", "k:Q", alt.Tooltip("mean:Q", format=".4f"),
                 alt.Tooltip("lo:Q", title="min over seeds", format=".4f"),
                 alt.Tooltip("hi:Q", title="max over seeds", format=".4f")])
    return alt.layer(band, line).properties(
        title=chart_title("pass@k = 1 − (1 − p)^k, mean over contexts, exact",
                     f"after RLVR: mean over {n_seeds} seeds · band: min–max over seeds"),
        height=CHART_HEIGHT)


@chart_spec
def pass_context_chart(df: pd.DataFrame):
    """Per-context pass@k against k: SFT dashed, mean over seeds after RLVR solid."""
    d = df[df.context != "overall"].groupby(["policy", "context", "k"], sort=False)["pass"].mean().reset_index()
    order = list(dict.fromkeys(d.context))
    colors = [PALETTE[i % len(PALETTE)] for i in range(len(order))]
    return alt.Chart(d).mark_line(strokeWidth=1.8).encode(
        x=alt.X("k:Q", title="k (samples per problem)", scale=alt.Scale(type="log", base=2),
                axis=alt.Axis(values=[1, 2, 4, 8, 16, 32, 64])),
        y=alt.Y("pass:Q", title="pass@k", scale=alt.Scale(zero=False)),
        color=alt.Color("context:N", sort=order, scale=alt.Scale(domain=order, range=colors),
                        legend=alt.Legend(orient="bottom", title="context", symbolType="stroke")),
        strokeDash=alt.StrokeDash("policy:N", sort=["after RLVR", "SFT"],
                                  scale=alt.Scale(domain=["after RLVR", "SFT"], range=[[1, 0], SFT_DASH]),
                                  legend=alt.Legend(orient="bottom", title=None)),
        detail="policy:N",
        tooltip=["context:N", "policy:N", "k:Q", alt.Tooltip("pass:Q", format=".4f")],
    ).properties(title=chart_title("pass@k per context, exact", "dashed: SFT · solid: after RLVR (mean over seeds)"),
                 height=CHART_HEIGHT)


def pass_table(df: pd.DataFrame, up: Upstream, ks=(1, 8, 64)) -> pd.DataFrame:
    """Per context (and overall): pass@k for a few k, SFT against after RLVR (mean and min over seeds)."""
    wide = df[df.k.isin(ks)]
    sft = wide[wide.policy == "SFT"].pivot(index="context", columns="k", values="pass")
    after = wide[wide.policy == "after RLVR"].groupby(["context", "k"])["pass"]
    mean, low = after.mean().unstack(), after.min().unstack()
    order = list(dict.fromkeys(df.context))
    out = pd.DataFrame({"context": order})
    for k in ks:
        out[f"SFT pass@{k}"] = sft.loc[order, k].to_numpy()
        out[f"RLVR pass@{k}"] = mean.loc[order, k].to_numpy()
        out[f"RLVR pass@{k}, worst seed"] = low.loc[order, k].to_numpy()
    return out


# ---------------------------------------------------------------- gradient noise

@st.cache_data(max_entries=16, show_spinner="Sampling gradients…")
def _noise(problem_cfg, sft_cfg, rm_cfg, reward: str, group_sizes: tuple, estimators: tuple,
           draws: int, prompts: int, _up: Upstream) -> pd.DataFrame:
    table = _up.rm.scores if reward == "reward_model" else _up.problem.verifiable_reward
    return _gradient_noise(_up, table, list(group_sizes), list(estimators), draws, prompts)


def gradient_noise(up: Upstream, reward: str, group_sizes: Sequence[int], estimators: Sequence[str],
                   draws: int, prompts: int) -> pd.DataFrame:
    """analysis.gradient_noise of the SFT policy, cached on the upstream configs and the settings."""
    return _noise(*up.configs, reward, tuple(group_sizes), tuple(estimators), int(draws), int(prompts),
                  _up=up)


def coinciding(df: pd.DataFrame, estimators: Sequence[str], column: str = "cosine") -> list[list[str]]:
    """Groups (of two or more) of estimators whose column is the same at every G, to 1e-9."""
    wide = df.pivot(index="group_size", columns="estimator", values=column)
    groups: list[list[str]] = []
    for e in estimators:
        for g in groups:
            if np.allclose(wide[e], wide[g[0]], atol=1e-9, rtol=0):
                g.append(e)
                break
        else:
            groups.append([e])
    return [g for g in groups if len(g) > 1]


@chart_spec
def noise_chart(df: pd.DataFrame, estimators: Sequence[str], column: str, title: str, y_title: str,
                subtitle: str = "", error: str | None = None):
    """df[column] against G (log2 x), one line per estimator; error bars +- df[error] if given.
    Estimators are spread slightly along x so that equal values stay visible."""
    order = list(estimators)
    spread = {e: 2 ** (0.05 * (i - (len(order) - 1) / 2)) for i, e in enumerate(order)}
    d = df.assign(x=df.group_size * df.estimator.map(spread), y=df[column])
    if error:
        d = d.assign(lo=d.y - d[error], hi=d.y + d[error])
    color = alt.Color("estimator:N", sort=order, scale=alt.Scale(domain=order, range=PALETTE[:len(order)]),
                      legend=alt.Legend(orient="bottom", title="advantage estimator", symbolOpacity=1))
    x = alt.X("x:Q", title="group size G", scale=alt.Scale(type="log", base=2),
              axis=alt.Axis(values=[2, 4, 8, 16, 32, 64]))
    tips = ["estimator:N", alt.Tooltip("group_size:Q", title="G"), alt.Tooltip("y:Q", title=y_title, format=".3f")]
    if error:
        tips.append(alt.Tooltip(f"{error}:Q", format=".3f"))
    # Coinciding estimators stay visible: each has its own point shape and dash pattern.
    shape = alt.Shape("estimator:N", sort=order, scale=alt.Scale(domain=order, range=RUN_SHAPES[:len(order)]))
    dash = alt.StrokeDash("estimator:N", sort=order, scale=alt.Scale(domain=order, range=RUN_DASHES[:len(order)]))
    y = alt.Y("y:Q", title=y_title, scale=alt.Scale(domain=[0, 1]) if error else alt.Scale(zero=False))
    layers = [alt.Chart(d).mark_line(strokeWidth=2).encode(x=x, y=y, color=color, strokeDash=dash),
              alt.Chart(d).mark_point(filled=True, size=60).encode(x=x, y=y, color=color, shape=shape,
                                                                   tooltip=tips)]
    if error:
        layers.insert(0, alt.Chart(d).mark_rule(strokeWidth=1, opacity=0.35).encode(
            x=x, y="lo:Q", y2="hi:Q", color=color))
    return alt.layer(*layers).properties(title=chart_title(title, subtitle), height=CHART_HEIGHT)
