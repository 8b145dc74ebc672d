"""RLVR: GRPO with a verifiable reward, no reward model."""
import streamlit as st

import ui
from grpo_core import RLVRConfig, seed_configs
from ui import live

ui.page("RLVR")
live.follow_upload()
live.adopt_params()
st.title("RLVR: GRPO with a verifiable reward")
st.markdown("The reward is 1 when the sampled token is the context's correct token and 0 otherwise, "
            "as a maths checker or a unit test would give. No reward model is involved, so nothing "
            "can mislead the policy; but a group in which every answer is wrong (or every answer "
            "right) has zero spread and teaches nothing.")

cfg, n_seeds, show_runs = ui.run_controls(RLVRConfig, "rlvr", "RLVR")

up = ui.stored_upstream()
configs = seed_configs(cfg, n_seeds)
results = live.run_view(up, configs, "rlvr", "RLVR", ui.RLVR_COLOR,
                     ("correct_prob", "Accuracy: probability of the correct token, exact", "P(correct token)"))
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
ui.more_diagnostics(runs, show_runs, colors=colors)

st.header("Correct token per context")
table = ui.correct_prob_table(results, up)
st.dataframe(table, hide_index=True, column_config=ui.number_formats(table))
st.caption("RLVR learns only from groups holding both a right and a wrong answer: where SFT rarely "
           "samples the correct token such groups are rare, and that context moves slowly.")

st.header("The final policy, context by context")
ui.final_policy_view(results, up, "RLVR", "rlvr", ui.RLVR_COLOR)

live.keep_and_share("rlvr", cfg, n_seeds, up, results)
