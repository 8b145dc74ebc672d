"""Zero-signal groups: how often a group of 0/1 rewards teaches nothing, and DAPO dynamic sampling."""
import streamlit as st

from grpo_core import RLVRConfig, seed_configs
from ui import charts, controls, lab, navigation, store, views

SETTINGS = controls.PageSettings("Zero signal groups", (
    *controls.config_settings(RLVRConfig, "zero", skip=["dynamic_sampling"]),
    controls.slider("zero_redraws", "dynamic sampling: max redraws", 1, 16, 4,
                    help="The comparison run redraws a group whose rewards are all equal up to this many "
                         "times (DAPO dynamic sampling); the redraws count as samples."),
    controls.seeds("zero", 4, controls.LAB_SEEDS_HELP)))
navigation.page(SETTINGS)
st.title("Zero-signal groups")
st.markdown("With a 0/1 verifiable reward, a group in which every answer is right, or every answer "
            "wrong, has no spread: all its advantages are 0 and it teaches nothing. If the policy "
            "answers a prompt correctly with probability p, a group of G answers is such a group with "
            "probability")
st.latex(r"P(\text{no signal}) \;=\; p^G + (1-p)^G")

with st.sidebar:
    st.header("RLVR settings")
    cfg = SETTINGS.config(RLVRConfig, "zero")
    redraws = SETTINGS.draw("zero_redraws")
    n_seeds = SETTINGS.draw("zero_seeds")
    SETTINGS.reset_button()

up = store.stored_upstream()
dynamic = controls.combine(cfg.replace, dynamic_sampling=redraws)
results = store.train(up, controls.combine(lambda: seed_configs(cfg, n_seeds) + seed_configs(dynamic, n_seeds)))
views.show_stopped(results)
plain, redrawn = results[:n_seeds], results[n_seeds:]

st.header("Per context, before and after training")
table = lab.zero_signal_long(up, plain)
charts.show_grid([
    lab.per_context_g_chart(table, "SFT start", "P(no signal) of the SFT policy, exact", "P(no signal)",
                            "group size G", marked_g=cfg.group_size, subtitle="dashed: this run's G"),
    lab.per_context_g_chart(table, "after RLVR", "P(no signal) after RLVR, exact", "P(no signal)",
                            "group size G", marked_g=cfg.group_size,
                            subtitle=f"mean over {n_seeds} seeds of the final policies"),
])
st.caption("A context the policy already answers well (p near 1) gives no signal even with large "
           "groups. After RLVR every context is there: training removes its own signal.")

st.header("During training, with and without dynamic sampling")
p_sft = lab.correct_probs(up.sft.logp.exp(), up)
start_plain, _ = lab.zero_signal_expected(p_sft, cfg.group_size)
start_dyn, draws = lab.zero_signal_expected(p_sft, cfg.group_size, redraws)
samples = {name: sum(r.history.samples.iloc[-1] / len(r.history) for r in runs) / len(runs)
           for name, runs in (("plain", plain), ("dynamic", redrawn))}
cols = st.columns(4)
cols[0].metric("silent groups at the start", f"{start_plain:.3f}",
               help=f"Exact, G = {cfg.group_size}: the mean over contexts of $p^G + (1-p)^G$ for the SFT policy.")
cols[1].metric(f"… with up to {redraws} redraws", f"{start_dyn:.4f}",
               help="Exact: a kept group is silent only if every try was, f^(redraws + 1), with f "
                    "the value on the left (each try draws a fresh prompt).")
cols[2].metric("samples per iteration, plain", f"{samples['plain']:.0f}")
cols[3].metric("… with dynamic sampling", f"{samples['dynamic']:.0f}",
               f"{samples['dynamic'] / samples['plain']:.2f}× plain over the run", delta_color="off",
               help=f"Mean over the run. At the start the exact cost is {draws:.2f}× plain: redrawn "
                    "groups are generated and scored, then thrown away.")

plain_label, dyn_label = "plain", f"dynamic sampling ({redraws} redraws)"
bound_label = "bound from p̄"
groups = {plain_label: [r.history.assign(value=r.history.zero_std_frac) for r in plain],
          dyn_label: [r.history.assign(value=r.history.zero_std_frac) for r in redrawn],
          bound_label: [lab.with_bound(r.history, cfg.group_size).assign(value=lambda h: h.bound)
                        for r in plain]}
accuracy = {"plain": [r.history for r in plain], f"dynamic sampling ({redraws} redraws)": [r.history for r in redrawn]}
colors = [charts.RLVR_COLOR, charts.PALETTE[4], charts.FAINT_COLOR]
charts.show_grid([
    charts.band_chart(groups, "value", "Groups with no signal in each batch", y_title="fraction of groups",
                  window=10, colors=colors,
                  rules={"exact at the start, plain": start_plain}),
    charts.band_chart(accuracy, "correct_prob", "Accuracy per sample generated, exact", y_title="P(correct token)",
                  x="samples", colors=colors[:2], rules={"SFT start": views.reference(up)["correct_prob"]}),
])
st.markdown(
    "The measured fractions start at the exact value and climb as the policy becomes sure of "
    "itself. The grey line (bound from $\\bar p$) uses only the mean accuracy $\\bar p$, which the history "
    "records: $\\bar p^G + (1 - \\bar p)^G$. Since $p^G + (1 - p)^G$ is convex in $p$, it underestimates "
    "the mean over contexts: loosely while the contexts differ, tightly once they all approach p = 1. Dynamic "
    "sampling replaces a silent group by a fresh prompt and group (DAPO over-samples prompts and "
    "keeps those with signal), so its batches stay informative and lean towards the prompts that "
    "still teach; the redraws are paid for in samples, so judge it on the right, per sample "
    "generated, not per iteration.")
lab.exact_note("Here p is known exactly for every prompt at every step, so the probability of a "
               "silent group is a formula, not a count; on real prompts p is unknown and only the "
               "measured fraction exists.")
