"""Length bias: Dr. GRPO's claims about grpo's loss, tested exactly on the sequence task over seeds."""
import numpy as np
import pandas as pd
import streamlit as st
import torch

from grpo_core import seed_configs
from grpo_core.sequence import SeqGRPOConfig, difficulty_weights, length_changes, sequence_metrics
from ui import charts, controls, live, navigation, seq, views

PAIR = ("grpo", "dr_grpo")
# TRL's loss types, then verl's two aggregations that are not TRL's under another name.
ALL_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "luspo", "cispo", "seq-mean-token-sum",
             "seq-mean-token-sum-norm")
SETTINGS = controls.PageSettings("Length bias", (
    controls.multiselect("lenbias_group_sizes", "group sizes G", (4, 8, 16, 32), (8,),
                         help="Responses per prompt. Each G trains grpo and dr_grpo over every seed."),
    controls.seeds("lenbias", help="Independent runs per loss type and G; the sentences below use "
                                   "their mean and standard error."),
    controls.Setting("lenbias_iterations", 200, 10, 1000, label="iterations", kind="number",
                     help="Training iterations of every run (the sequence engine's default is 200)."),
    controls.toggle("lenbias_all", "every loss type side by side",
                    help="Also train every loss type (TRL's and verl's) at the smallest G: more runs, slower."),
), adopted=tuple(seq.upstream_settings()))
navigation.page(SETTINGS)
st.title("Length bias")
st.markdown(
    "**The claim** (Dr. GRPO, Liu et al., 2025). GRPO's loss averages each response's token losses "
    "over its own length |y|. A wrong answer has a negative advantage, and dividing by |y| makes "
    "each of its tokens cost less the longer it is, so the gradient pushes less against long wrong "
    "answers than short ones: wrong answers drift longer. Dr. GRPO divides by a constant instead "
    "(TRL `loss_type=\"dr_grpo\"`: the token sum over B·L), which should leave E[length | wrong] "
    "alone. Both runs below use the sequence engine's defaults and differ only in the loss type.")

with st.sidebar:
    st.header("Length bias settings")
    group_sizes = sorted(SETTINGS.draw("lenbias_group_sizes"))
    n_seeds = SETTINGS.draw("lenbias_seeds")
    iterations = int(SETTINGS.draw("lenbias_iterations"))
    every_type = SETTINGS.draw("lenbias_all")
    SETTINGS.reset_button()
if not group_sizes:
    st.info("Choose at least one group size in the sidebar.")
    st.stop()

up_configs = seq.stored_upstream_configs()
st.caption("Task and SFT as set on the GRPO on sequences page: " + "; ".join(
    f"{name} {controls.describe(cfg)}" for cfg, (_, _, name) in zip(up_configs, seq.UPSTREAM)) + ".")
configs = [c for g in group_sizes for loss in PAIR
           for c in controls.combine(seed_configs, controls.make_config(
               SeqGRPOConfig, loss_type=loss, group_size=g, iterations=iterations), n_seeds)]
seq.work_caption(up_configs[0], configs)
up, results = seq.train(up_configs, configs, "lenbias")
views.show_stopped(results)
ref = seq.reference(up)
changes = length_changes(results, ref)
stats = changes.groupby(["group_size", "loss_type"]).agg(
    **{f"{k}_{s}": (f"d_{k}", s) for k in ("reward", "length_correct", "length_wrong", "gap")
       for s in ("mean", "sem")}).reset_index()
sem = lambda v: 0.0 if not np.isfinite(v) else float(v)   # one seed: no standard error

st.header("Does E[length | wrong] grow under grpo and not under dr_grpo?")
for g in group_sizes:
    s = {loss: stats[(stats.group_size == g) & (stats.loss_type == loss)].iloc[0] for loss in PAIR}
    grpo, dr = s["grpo"], s["dr_grpo"]
    runs = {f"{loss}, G = {g}": [r.history.assign(gap=r.history.length_wrong - r.history.length_correct)
                                  for r in results if r.config.loss_type == loss and r.config.group_size == g]
            for loss in PAIR}
    charts.show_grid([
        *seq.curve_charts(runs, ref, False, (("length_wrong", f"E[length | wrong], G = {g}", "tokens"),
                                             ("length_correct", f"E[length | correct], G = {g}", "tokens"))),
        charts.band_chart(runs, "gap", f"Wrong minus right: E[|y| | wrong] − E[|y| | correct], G = {g}",
                          y_title="tokens", rules={"SFT start": ref["length_wrong"] - ref["length_correct"]}),
        *seq.curve_charts(runs, ref, False, (("reward", f"P(correct), G = {g}", "reward"),))])
    rows = changes[changes.group_size == g].pivot(index="seed", columns="loss_type", values="d_length_wrong")
    paired = rows["grpo"] - rows["dr_grpo"]           # the same seed draws the same first batch
    paired_err = 2 * sem(paired.sem())
    # A verdict beyond the seed noise, or "not shown" when the paired difference is within it.
    first = ("holds" if paired.mean() > paired_err else
             "does not hold" if paired.mean() < -paired_err else "not shown")
    dr_err = 2 * sem(dr.length_wrong_sem)
    dr_grew = dr.length_wrong_mean - dr_err > 0
    lines = [
        f"At G = {g}, from the SFT start {ref['length_wrong']:.3f}, E[length | wrong] changed by "
        f"**{grpo.length_wrong_mean:+.3f}** under grpo and **{dr.length_wrong_mean:+.3f}** under dr_grpo "
        f"(mean over {n_seeds} seeds).",
        f"Claim 1, grpo lengthens wrong answers more than dr_grpo: **{first}** "
        f"here: grpo minus dr_grpo, seed by seed, is {paired.mean():+.3f} ± {paired_err:.3f} "
        "(± 2 standard errors" + (", so more than the seed noise)." if first != "not shown"
                                  else "; within the seed noise: more seeds would tell).")
        if len(paired) > 1 else "Claim 1, grpo lengthens wrong answers more than dr_grpo: "
        f"**not shown** with one seed ({paired.mean():+.3f}; add seeds to measure the noise).",
        f"Claim 2, under dr_grpo E[length | wrong] does not grow: "
        + (f"**does not hold** here: it grew by {dr.length_wrong_mean:+.3f} ± {dr_err:.3f} (± 2 standard "
           "errors over seeds)." if dr_grew else
           f"**holds** within the seed noise here: its change {dr.length_wrong_mean:+.3f} ± {dr_err:.3f} "
           "(± 2 standard errors over seeds) is not distinguishable from no change."),
        f"The gap between wrong and right answers opened by {grpo.gap_mean:+.3f} under grpo and "
        f"{dr.gap_mean:+.3f} under dr_grpo.",
    ]
    if dr.length_wrong_mean > 0 and dr.length_correct_mean > 0.5 * dr.length_wrong_mean:
        less = abs(dr.gap_mean) < abs(grpo.gap_mean)
        lines.append(
            f"Why E[length | wrong] rose under dr_grpo at all: it lengthened right answers too "
            f"({dr.length_correct_mean:+.3f}), a drift of every response rather than a bias against wrong "
            f"ones. The gap, which is what the 1/|y| normalization biases, moved "
            f"{'less' if less else 'at least as much'} under dr_grpo ({dr.gap_mean:+.3f}) "
            f"{'than' if less else 'as'} under grpo ({grpo.gap_mean:+.3f}).")
    st.markdown("\n".join(f"- {line}" for line in lines))
if len(group_sizes) > 1:
    dr_rows = stats[stats.loss_type == "dr_grpo"]
    st.markdown("Across group sizes, dr_grpo's change in E[length | wrong] was " + ", ".join(
        f"{v:+.3f} at G = {g}" for g, v in zip(dr_rows.group_size, dr_rows.length_wrong_mean))
        + "; grpo's " + ", ".join(f"{v:+.3f} at G = {g}" for g, v in zip(
            stats[stats.loss_type == "grpo"].group_size, stats[stats.loss_type == "grpo"].length_wrong_mean)) + ".")
else:
    st.caption("The sequence engine's authors trace a drift common to every response's length to "
               "sampling noise in the free text after the answer: add G = 16 in the sidebar to test "
               "whether dr_grpo's E[length | wrong] still moves with larger groups.")
table = stats.rename(columns=lambda c: c.replace("_mean", " (mean Δ)").replace("_sem", " (s.e.)"))
st.dataframe(table, hide_index=True, column_config=views.number_formats(table))
st.caption("Change from the SFT policy to each run's final policy, exact; mean and standard error over seeds.")

if every_type:
    st.header("Every loss type side by side")
    g0 = group_sizes[0]
    all_configs = [c for loss in ALL_TYPES for c in controls.combine(seed_configs, controls.make_config(
        SeqGRPOConfig, loss_type=loss, group_size=g0, iterations=iterations,
        importance_sampling_level="sequence" if loss == "luspo" else "token"), n_seeds)]
    seq.work_caption(up_configs[0], all_configs)
    _, all_results = seq.train(up_configs, all_configs, "lenbias_all")
    all_changes = length_changes(all_results, ref)
    by_type = all_changes.groupby("loss_type", sort=False)[
        ["d_reward", "d_length", "d_length_correct", "d_length_wrong", "d_gap"]].mean().reset_index()
    runs = {loss: [r.history for r in all_results if r.config.loss_type == loss] for loss in ALL_TYPES}
    charts.show_grid(seq.curve_charts(runs, ref, False, (("length_wrong", f"E[length | wrong], G = {g0}", "tokens"),
                                                         ("length_correct", f"E[length | correct], G = {g0}", "tokens"))))
    st.dataframe(by_type, hide_index=True, column_config=views.number_formats(by_type))
    most, least = by_type.loc[by_type.d_length_wrong.idxmax()], by_type.loc[by_type.d_length_wrong.idxmin()]
    st.markdown(f"Wrong answers grew most under **{most.loss_type}** ({most.d_length_wrong:+.3f}) and "
                f"least under **{least.loss_type}** ({least.d_length_wrong:+.3f}), mean over {n_seeds} seeds "
                f"at G = {g0}. luspo runs with sequence-level ratios (it needs them).")

st.header("The difficulty bias of std normalization, exactly")
st.markdown(
    "Dr. GRPO's second point: dividing a group's advantages by its reward std weights contexts by "
    "difficulty. With 0/1 rewards and success rate p, a context's expected gradient is scaled by "
    "1 / sqrt(p (1 − p)): contexts the policy nearly always or nearly never gets right count most. "
    "At a finite G the weight is an exact sum over the number of right answers k ~ Binomial(G, p); a "
    "group with no spread carries no signal either way.")
g0 = group_sizes[0]
p_sft = sequence_metrics(up.sft.seq_logp, up.task, up.sft.seq_logp, per_context=True)["reward"]
finals = [r for r in results if r.config.loss_type == "grpo" and r.config.group_size == g0]
start = difficulty_weights(p_sft, g0)
end = difficulty_weights(torch.tensor(np.mean([r.per_context["reward"].to_numpy() for r in finals], axis=0)), g0)
weights = pd.DataFrame({"context": start.context, "p (SFT)": start.p, "weight (SFT)": start.weight_G,
                        "p (after grpo)": end.p, "weight (after grpo)": end.weight_G,
                        "1/sqrt(p(1−p)) after grpo": end.population_weight})
curve = difficulty_weights(torch.linspace(0.02, 0.98, 49), g0)
left, right = st.columns(2)
with left:
    charts.show(charts.lines_chart(curve, "p", {"population_weight": "1/sqrt(p(1−p))",
                                                "weight_G": f"exact at G = {g0}"},
                                   "Weight std normalization puts on a context", "weight (dr_grpo = 1)",
                                   x_title="success rate p of the context"))
with right:
    st.dataframe(weights, hide_index=True, column_config=views.number_formats(weights))
    st.caption(f"grpo's weight per context at G = {g0}, exact, under the SFT policy and under the final "
               f"grpo policies (p averaged over the {len(finals)} seeds).")


def spread(p_col: str, w_col: str) -> str:
    hi, lo = weights.loc[weights[w_col].idxmax()], weights.loc[weights[w_col].idxmin()]
    return (f"context {int(hi.context)} (p = {hi[p_col]:.3f}) gets **{hi[w_col] / lo[w_col]:.2f}×** the "
            f"weight of context {int(lo.context)} (p = {lo[p_col]:.3f})")


ratio = lambda col: float(weights[col].max() / weights[col].min())
st.markdown(f"Under the SFT policy, {spread('p (SFT)', 'weight (SFT)')}; after grpo training, "
            f"{spread('p (after grpo)', 'weight (after grpo)')}. dr_grpo weights every context's signal "
            f"the same. The population formula 1/sqrt(p(1−p)) would put the final contexts "
            f"{ratio('1/sqrt(p(1−p)) after grpo'):.2f}× apart; at G = {g0} they are "
            f"{ratio('weight (after grpo)'):.2f}× apart, because a group with any spread has a std of at "
            f"least sqrt(1/G) = {(1 / g0) ** 0.5:.3f}, which caps the weight at "
            f"{(g0 ** 0.5):.2f}. The cap is sqrt(G): raise G and the weights spread further apart.")

st.header("Share")
live.share_link(())
