"""Landscape: every method of the notebook's comparison table, trained side by side and measured."""
import streamlit as st

from grpo_core.methods.landscape import ALL_METHODS, METHODS
from ui import charts, controls, landscape as land, navigation, store

BUDGETS = (1000, 2000, 4000, 8000, 16000, 32000)
SETTINGS = controls.PageSettings("Landscape", (
    controls.multiselect("land_methods", "methods", ALL_METHODS, land.DEFAULT_METHODS,
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
up = store.stored_upstream()
view = land.view(up, chosen, n_seeds, responses)    # built once per result; a rerun only draws it

st.header("The table, measured")
st.info(view.winner)
st.dataframe(view.shown, hide_index=True, column_config=land.table_formats())
st.caption(f"{n_seeds} seeds per method. Final true reward: mean over seeds (the band: 10th–90th percentile). "
           "Responses to 90% of gain: when the mean over seeds first reaches SFT + 90% of its final gain. "
           "Seconds: measured on this machine while training, each method's share of its batch in "
           "proportion to its optimizer steps (methods with the same iterations and steps, e.g. PPO, "
           "REINFORCE, RLOO, REINFORCE++, ReMax and GRPO, train as one batch and so show the same time).")
st.subheader("What each method needs")
st.dataframe(view.needs, hide_index=True, column_config=land.table_formats())
st.caption("Networks: held in memory while the policy trains (policy, reference, reward model, critic, as each "
           "method needs them). Online: learns from responses it generates; offline DPO learns from fixed pairs. "
           "Parameters trained: every network the method trains (the reward model counts for the methods that need "
           "one). Reward queries: reward evaluations per iteration, one per response generated.")

st.header("Learning curves")
if view.online_charts:
    charts.show_grid(view.online_charts)
if view.offline_charts:
    st.markdown("Offline DPO generates no responses: its axis is preference pairs consumed.")
    charts.show_grid(view.offline_charts)

st.header("Against the exact KL-regularized optimum")
charts.show(view.plane)
st.markdown(view.plane_text)

st.header("When to use what")
st.table(view.when)

st.header("Which KL does each method really optimize?")
st.markdown(f"With the KL placed differently, exact gradient ascent on E[r_RM] − β·KL-term (β = {view.beta:g}, "
            "exact expected gradients) converges to different policies. The k1 penalty in the reward (PPO-RLHF, "
            "REINFORCE++) targets π_ref·exp(r/β)/Z; the k3 estimator in the loss (GRPO as in DeepSeekMath, TRL) "
            "targets the reverse KL's optimum instead.")
st.table(view.placements_shown)
st.markdown(view.placements_text)
