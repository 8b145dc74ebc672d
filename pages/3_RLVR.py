"""RLVR: GRPO with a verifiable reward, no reward model."""
import streamlit as st

import ui
from grpo_core import RLVRConfig, seed_configs
from ui import guard, lab, live

ui.page("RLVR")
live.follow_upload()
live.adopt_params()
st.title("RLVR: GRPO with a verifiable reward")
st.markdown("The reward is 1 when the sampled token is the context's correct token and 0 otherwise, "
            "as a maths checker or a unit test would give. No reward model is involved, so nothing "
            "can mislead the policy; but a group in which every answer is wrong (or every answer "
            "right) has zero spread and teaches nothing.")

with st.sidebar:
    st.header("RLVR settings")
    cfg = ui.make_config(RLVRConfig, **ui.config_controls(RLVRConfig, "rlvr"))
    n_seeds = ui.seeds_control("rlvr")
    show_runs = st.checkbox("show individual runs", key="rlvr_show_runs", bind="query-params",
                            persist_state="session", help="Draw every seed's curve faintly behind the mean.")
    ui.reset_button([(RLVRConfig, "rlvr", None)], {"rlvr_seeds": ui.SEEDS_DEFAULT, "rlvr_show_runs": False})

up = ui.stored_upstream()
configs = seed_configs(cfg, n_seeds)
guard.work_caption(configs)
watch = st.toggle("▶ Watch it train", key="rlvr_watch", bind="query-params", persist_state="session",
                  help="Train these settings live, step by step, instead of showing the finished runs.")
if watch:
    st.header("Watch it train")
    live.watch_section(up, configs, "rlvr", "RLVR", ui.RLVR_COLOR,
                       ("correct_prob", "Accuracy: probability of the correct token, exact", "P(correct token)"))
    if not live.is_cached(up, configs):
        st.caption("Every diagnostic of these runs appears here when the live run finishes.")
        st.stop()
    st.header("The finished runs")

results = live.train(up, configs, "rlvr")
ui.show_stopped(results)
ui.summary(results, up)

runs = {f"RLVR ({n_seeds} seeds)": [r.history for r in results]}
colors = [ui.RLVR_COLOR]
ui.show_grid([
    ui.band_chart(runs, "correct_prob", "Accuracy: probability of the correct token, exact",
                  y_title="P(correct token)", show_runs=show_runs, colors=colors,
                  rules={"SFT start": ui.reference(up)["correct_prob"]},
                  faint=(f"sampled batch accuracy (seed {cfg.seed})", results[0].history, "batch_reward")),
    ui.band_chart(runs, "true_reward", "Expected true reward, exact", y_title="true reward",
                  rules=ui.reward_rules(up), show_runs=show_runs, colors=colors),
])
st.caption("The notebook plots the fraction of correct samples in each batch (grey): an unbiased "
           "but noisy estimate of the exact accuracy drawn as the line.")
ui.show_grid(ui.diagnostics(runs, show_runs, colors=colors))

st.header("Correct token per context")
table = ui.correct_prob_table(results, up)
st.dataframe(table, hide_index=True, column_config=ui.number_formats(table))
st.caption("RLVR learns only from groups holding both a right and a wrong answer: where SFT rarely "
           "samples the correct token such groups are rare, and that context moves slowly.")

st.header("The final policy, context by context")
ui.final_policy_view(results, up, "RLVR", "rlvr", ui.RLVR_COLOR)

st.header("Pinned runs")
live.pin_button("rlvr", cfg, n_seeds, up, results)
live.pins_view("rlvr")

live.save_and_load("rlvr", cfg, n_seeds, up, results)
lab.trl_export(cfg)
