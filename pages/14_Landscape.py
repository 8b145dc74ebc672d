"""Landscape: every method of the notebook's comparison table, trained side by side and measured."""
import pandas as pd
import streamlit as st

from grpo_core import GRPOConfig
from grpo_core.methods.landscape import METHOD_NAMES, METHODS, measured_table
from ui import charts, controls, landscape as land, navigation, store

BUDGETS = (1000, 2000, 4000, 8000, 16000, 32000)
SETTINGS = controls.PageSettings("Landscape", (
    controls.multiselect("land_methods", "methods", METHOD_NAMES, ("grpo", "rloo", "rlvr", "dpo"),
                         text=lambda m: METHODS[m].label,
                         help="Every method starts from the same SFT policy; all seeds of a method train as one batch."),
    controls.select_slider("land_responses", "responses generated per run", BUDGETS, 4000,
                           help="Every online method generates this many responses per run; its iterations are "
                                "this budget divided by its responses per iteration. Offline DPO generates none.",
                           text=lambda v: f"{v:,}"),
    controls.seeds("land", help=controls.LAB_SEEDS_HELP)))
navigation.page(SETTINGS)
st.title("The landscape of methods")
st.markdown("The notebook's comparison table, measured: every method trains from the same SFT policy on the "
            "same task, several seeds each, and every reward below is exact (a sum over the tokens).")

with st.sidebar:
    st.header("Landscape settings")
    chosen = SETTINGS.draw("land_methods")
    responses = SETTINGS.draw("land_responses")
    n_seeds = SETTINGS.draw("land_seeds")
    SETTINGS.reset_button()
if not chosen:
    st.info("Choose at least one method in the sidebar.")
    st.stop()
methods = [m for m in METHOD_NAMES if m in chosen]

up = store.stored_upstream()
res = land.train(up, methods, n_seeds, responses)
table = measured_table(res)

st.header("The table, measured")
st.info(land.winner_sentence(table, res.sft))
st.dataframe(land.table_view(table), hide_index=True, column_config=land.table_formats())
st.caption(f"{n_seeds} seeds per method. Final true reward: mean over seeds (the band: 10th–90th percentile). "
           "Networks in memory: policy, reference, reward model, critic as each method needs them; parameters "
           "trained: every network the method trains (the reward model counts for the methods that need one). "
           "Seconds: measured on this machine while training, each method's share of its batch. "
           "Responses to 90% of gain: when the mean over seeds first reaches SFT + 90% of its final gain.")

st.header("Learning curves")
online = [m for m in methods if METHODS[m].online]
offline = [m for m in methods if not METHODS[m].online]
rules = {"best achievable": res.best, "SFT": res.sft}
if online:
    g, c = land.groups(res, online), land.colors(online)
    charts.show_grid([
        charts.band_chart(g, "true_reward", "Exact true reward", y_title="true reward", x="responses",
                          rules=rules, colors=c),
        charts.band_chart(g, "kl_ref", "KL(policy ‖ SFT)", y_title="KL (nats)", x="responses", colors=c)])
if offline:
    st.markdown("Offline DPO generates no responses: its axis is preference pairs consumed.")
    g, c = land.groups(res, offline), land.colors(offline)
    charts.show_grid([
        charts.band_chart(g, "true_reward", "DPO: exact true reward", y_title="true reward", x="pairs",
                          rules=rules, colors=c),
        charts.band_chart(g, "kl_ref", "DPO: KL(policy ‖ SFT)", y_title="KL (nats)", x="pairs", colors=c)])

st.header("Against the exact KL-regularized optimum")
front = land.frontier(up)
points = land.final_points(res, methods)
charts.show(land.kl_plane_chart(points, front, [METHODS[m].label for m in methods], land.colors(methods),
                                res.best, res.sft))
gaps = {METHODS[m].label: land.optimum_at(front, "true reward", row.kl) - row.true_reward
        for m, row in zip(table.method, table.itertuples())}
closest = min(gaps, key=gaps.get)
above = [METHODS[m].label for m, row in zip(table.method, table.itertuples())
         if row.true_reward > land.optimum_at(front, "reward model", row.kl)]
st.markdown(f"No policy at a given KL can beat the solid line. **{closest}** ends closest to it: "
            f"{gaps[closest]:.3f} below the optimum of the true reward at its own KL; the farthest, "
            f"**{max(gaps, key=gaps.get)}**, is {max(gaps.values()):.3f} below. The dashed line is the true reward "
            "of the reward model's exact optimum: what perfectly optimizing the reward model would give at each KL. "
            f"{len(above)} of {len(gaps)} methods end above it"
            + (f" ({', '.join(above)})" if above else "") + ".")

st.header("When to use what")
rows = land.when_to_use(table, res.sft)
st.table(pd.DataFrame(rows, columns=["situation", "the notebook's advice", "measured here"]).set_index("situation"))

st.header("Which KL does each method really optimize?")
beta = GRPOConfig().kl_coef
st.markdown(f"With the KL placed differently, exact gradient ascent on E[r_RM] − β·KL-term (β = {beta:g}, exact "
            "expected gradients) converges to different policies. The k1 penalty in the reward (PPO-RLHF, "
            "REINFORCE++) targets π_ref·exp(r/β)/Z; the k3 estimator in the loss (GRPO as in DeepSeekMath, TRL) "
            "targets the reverse KL's optimum instead.")
fixed = land.kl_placements(up, beta)
fixed = fixed[[c for c in fixed.columns if c != "what it is"] + ["what it is"]]
st.dataframe(fixed, hide_index=True, column_config={c: st.column_config.NumberColumn(format="%.4f")
                                                    for c in fixed.columns if fixed[c].dtype.kind == "f"})
by = fixed.set_index("placement")
k3, k1r = by.loc["k3_loss"], by.loc["k1_reward"]
st.markdown(f"k3 in the loss follows the gradient of **{k3['its expected gradient is that of']}** and converges to the "
            f"{k3['converges to']}: KL {k3['KL(π ‖ π_ref) there']:.4f}, true reward {k3['true reward there']:.4f}. "
            f"k1 in the reward follows **{k1r['its expected gradient is that of']}** and converges to "
            f"{k1r['converges to']}: KL {k1r['KL(π ‖ π_ref) there']:.4f}, true reward {k1r['true reward there']:.4f}. "
            "k1 in the loss has zero expected gradient: it leaves the policy free to chase the reward's argmax.")
