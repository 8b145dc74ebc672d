"""RLVR: GRPO with a verifiable reward, no reward model."""
import streamlit as st

from grpo_core import RLVRConfig, seed_configs
from grpo_core.reference import grpo as reference
from ui import charts, code, controls, live, navigation, store, views

SETTINGS = controls.PageSettings("RLVR", controls.run_settings("rlvr"), adopted=controls.upstream_settings())
navigation.page(SETTINGS)
live.follow_upload()
live.adopt_params()
st.title("RLVR: GRPO with a verifiable reward")
st.markdown("The reward is 1 when the sampled token is the context's correct token and 0 otherwise, "
            "as a maths checker or a unit test would give. No reward model is involved, so nothing "
            "can mislead the policy; but a group in which every answer is wrong (or every answer "
            "right) has zero spread and teaches nothing.")

cfg, n_seeds, show_runs = controls.run_controls(SETTINGS, RLVRConfig, "rlvr", "RLVR")

up = store.stored_upstream()
configs = controls.combine(seed_configs, cfg, n_seeds)
results = live.run_view(SETTINGS, up, configs, "rlvr", "RLVR", charts.RLVR_COLOR,
                        ("correct_prob", "Accuracy: probability of the correct token, exact", "P(correct token)"))
views.show_stopped(results)
views.summary(results, up)

runs = {f"RLVR ({n_seeds} seeds)": [r.history for r in results]}
colors = [charts.RLVR_COLOR]
charts.show_grid([
    charts.band_chart(runs, "correct_prob", "Accuracy: probability of the correct token, exact",
                  y_title="P(correct token)", show_runs=show_runs, colors=colors,
                  rules={"SFT start": views.reference(up)["correct_prob"]},
                  faint=(f"sampled batch accuracy (seed {cfg.seed})", results[0].history, "batch_reward")),
    charts.band_chart(runs, "true_reward", "Expected true reward, exact", y_title="true reward",
                  rules=views.reward_rules(up), show_runs=show_runs, colors=colors),
])
st.caption("The notebook plots the fraction of correct samples in each batch (grey: the band its "
           "values fill and their rolling mean, dashed): an unbiased but noisy estimate of the exact "
           "accuracy drawn as the line.")
charts.show_grid(views.diagnostics(runs, show_runs, colors=colors))
views.more_diagnostics(runs, show_runs, colors=colors)

st.header("Correct token per context")
table = views.correct_prob_table(results, up)
st.dataframe(table, hide_index=True, column_config=views.number_formats(table))
st.caption("RLVR learns only from groups holding both a right and a wrong answer: where SFT rarely "
           "samples the correct token such groups are rare, and that context moves slowly.")

st.header("The final policy, context by context")
views.final_policy_view(results, up, "RLVR", "rlvr", charts.RLVR_COLOR)

code.code_section(reference, cfg)
live.keep_and_share("rlvr", cfg, n_seeds, up, results)
