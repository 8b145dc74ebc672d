"""GRPO on the learned reward model, over many seeds at once."""
import streamlit as st

from grpo_core import GRPOConfig, seed_configs
from grpo_core.reference import grpo as reference
from ui import charts, code, controls, live, navigation, store, views

SETTINGS = controls.PageSettings("GRPO", controls.run_settings("grpo"), adopted=controls.upstream_settings())
navigation.page(SETTINGS)
live.follow_upload()
live.adopt_params()
st.title("GRPO on the learned reward model")
st.markdown("Each iteration samples a group of G responses per prompt, scores them with the reward "
            "model, normalizes the rewards within each group and takes clipped policy steps.")

cfg, n_seeds, show_runs = controls.run_controls(SETTINGS, GRPOConfig, "grpo", "GRPO")

up = store.stored_upstream()
configs = controls.combine(seed_configs, cfg, n_seeds)
results = live.run_view(SETTINGS, up, configs, "grpo", "GRPO", charts.GRPO_COLOR,
                        ("rm_reward", "Expected reward-model reward, exact", "RM score"))
views.show_stopped(results)
views.summary(results, up)

runs = {f"GRPO ({n_seeds} seeds)": [r.history for r in results]}
charts.show_grid([
    charts.band_chart(runs, "true_reward", "Expected true reward, exact", y_title="true reward",
                  rules=views.reward_rules(up), show_runs=show_runs),
    charts.band_chart(runs, "rm_reward", "Expected reward-model reward, exact", y_title="RM score",
                  show_runs=show_runs, faint=(f"one group, seed {cfg.seed} (notebook's metric)",
                                              results[0].history, "first_group_reward")),
])
st.caption("The notebook tracks the reward of a single sampled group per iteration (grey: the band "
           "its values fill and their rolling mean, dashed), which is mostly sampling noise around the "
           "exact line; the blue line is the exact expectation over all tokens.")
charts.show_grid(views.diagnostics(runs, show_runs))
views.more_diagnostics(runs, show_runs)

st.header("The final policy, context by context")
views.final_policy_view(results, up, "GRPO", "grpo", charts.GRPO_COLOR)
st.caption("Where the reward model's top token is not the correct one (see Setup), GRPO moves "
           "probability onto the reward model's favourite instead.")

code.code_section(reference, cfg)
live.keep_and_share("grpo", cfg, n_seeds, up, results)
