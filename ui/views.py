"""Views the pages share: headline metrics, diagnostics, tables of runs and policies.

Shared between sessions: nothing here (the charts it draws are cached in ui.charts).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import streamlit as st

from grpo_core import RunResult, Upstream, reference_metrics
from ui.charts import SFT_COLOR, TRUE_COLOR, band_chart, context_bars, show, show_grid


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


def zero_or_chart(groups: dict[str, Sequence[pd.DataFrame]], column: str, title: str, **kw):
    """band_chart of column, or, when every run's column is 0 at every iteration, a sentence saying
    so (a flat line at 0 with ±0.00005 ticks says nothing a reader can use)."""
    if all((h[column] == 0).all() for hists in groups.values() for h in hists):
        n = sum(len(hists) for hists in groups.values())
        return (f"**{title}**: 0 at every iteration of all {n} runs: no sample was clipped this way.")
    return band_chart(groups, column, title, **kw)


def more_diagnostics(groups: dict[str, Sequence[pd.DataFrame]], show_runs: bool, **kw) -> None:
    """Clip fractions, the KL estimate the loss uses next to the exact batch KL, gradient norm."""
    with st.expander("More diagnostics: clipping, the KL estimate, gradient norm"):
        show_grid([
            zero_or_chart(groups, "clip_frac_low", "Clipped low: A < 0 and ratio < 1 - ε",
                          y_title="fraction of samples", show_runs=show_runs, **kw),
            zero_or_chart(groups, "clip_frac_high", "Clipped high: A > 0 and ratio > 1 + ε_high",
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
            text += (f": in {'context' if len(misled) == 1 else 'contexts'} {', '.join(misled)} the reward "
                     "model's top token is not the correct one, and GRPO faithfully optimizes the wrong "
                     "target." if misled else ".")
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


# ---------------------------------------------------------------- sentences computed from results

def pass_at_k_note(change64: float) -> str:
    """The pass@k page's closing note, naming the change of pass@64 that the page's metric shows
    (after RLVR − SFT, mean over contexts and seeds, written as the metric writes it)."""
    shown = f"{change64:+.4f}"
    change = (f"the drop at k = 64 shown above, {shown}, is real" if shown.startswith("-") and shown != "-0.0000"
              else f"the change at k = 64 shown above, {shown}, is exact too")
    return ("pass@k is usually estimated from n samples per problem with an unbiased estimator; "
            f"here p is exact, so pass@k is exact for every k at once, and {change}, not sampling noise.")


def which_is_higher(a: Sequence[float], b: Sequence[float]) -> str:
    """'a', 'b' or 'same': which seeds' mean is higher, 'same' when the difference of the means is
    within two standard errors of it (sqrt(var_a/n_a + var_b/n_b), sample variances), i.e. the
    seeds cannot tell them apart."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = a.mean() - b.mean()
    se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)) if min(len(a), len(b)) > 1 else 0.0
    if abs(diff) <= 2 * se or abs(diff) < 1e-9:
        return "same"
    return "a" if diff > 0 else "b"
