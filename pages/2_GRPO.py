"""GRPO on the learned reward model, over many seeds at once."""
import streamlit as st

import ui
from grpo_core import GRPOConfig, seed_configs
from ui import live

ui.page("GRPO")
live.follow_upload()
live.adopt_params()
st.title("GRPO on the learned reward model")
st.markdown("Each iteration samples a group of G responses per prompt, scores them with the reward "
            "model, normalizes the rewards within each group and takes clipped policy steps.")

cfg, n_seeds, show_runs = ui.run_controls(GRPOConfig, "grpo", "GRPO")

up = ui.stored_upstream()
configs = seed_configs(cfg, n_seeds)
results = live.run_view(up, configs, "grpo", "GRPO", ui.GRPO_COLOR,
                     ("rm_reward", "Expected reward-model reward, exact", "RM score"))
ui.show_stopped(results)
ui.summary(results, up)

runs = {f"GRPO ({n_seeds} seeds)": [r.history for r in results]}
ui.show_grid([
    ui.band_chart(runs, "true_reward", "Expected true reward, exact", y_title="true reward",
                  rules=ui.reward_rules(up), show_runs=show_runs),
    ui.band_chart(runs, "rm_reward", "Expected reward-model reward, exact", y_title="RM score",
                  show_runs=show_runs, faint=(f"one group, seed {cfg.seed} (notebook's metric)",
                                              results[0].history, "first_group_reward")),
])
st.caption("The notebook tracks the reward of a single sampled group per iteration (grey), which is "
           "mostly sampling noise; the lines here are exact expectations over all tokens.")
ui.show_grid(ui.diagnostics(runs, show_runs))
ui.more_diagnostics(runs, show_runs)

st.header("The final policy, context by context")
ui.final_policy_view(results, up, "GRPO", "grpo", ui.GRPO_COLOR)
st.caption("Where the reward model's top token is not the correct one (see Setup), GRPO moves "
           "probability onto the reward model's favourite instead.")

live.keep_and_share("grpo", cfg, n_seeds, up, results)
