"""Compare: SFT, GRPO and RLVR side by side, context by context."""
import streamlit as st

from grpo_core import GRPOConfig, RLVRConfig, compare_table, seed_configs
from ui import charts, controls, guard, live, navigation, store, views

navigation.page(controls.PageSettings("Compare", adopted=(
    *controls.upstream_settings(), *controls.shared_run_settings("grpo"), *controls.shared_run_settings("rlvr"))))
live.adopt_params(live.SETTINGS)
st.title("Compare SFT, GRPO and RLVR")

grpo_cfg, rlvr_cfg = controls.stored_config(GRPOConfig, "grpo"), controls.stored_config(RLVRConfig, "rlvr")
grpo_seeds, rlvr_seeds = controls.stored_seeds("grpo"), controls.stored_seeds("rlvr")
st.markdown("Both methods start from the same SFT policy and use the settings chosen on their pages.")
st.caption(f"GRPO: {controls.describe(grpo_cfg)}, {grpo_seeds} seeds · RLVR: {controls.describe(rlvr_cfg)}, "
           f"{rlvr_seeds} seeds (change them on the GRPO and RLVR pages).")
up = store.stored_upstream()
grpo_configs = controls.combine(seed_configs, grpo_cfg, grpo_seeds)
rlvr_configs = controls.combine(seed_configs, rlvr_cfg, rlvr_seeds)
guard.work_caption(grpo_configs, rlvr_configs)
grpo = store.train(up, grpo_configs, "compare_grpo")
rlvr = store.train(up, rlvr_configs, "compare_rlvr")
views.show_stopped(grpo + rlvr)

names = {"grpo": "GRPO", "rlvr": "RLVR"}
table = compare_table(up, {"grpo": grpo, "rlvr": rlvr})
st.info(views.compare_notice(table, up))
charts.show(charts.compare_chart(table, names))

st.header("Per context")
view = views.compare_view(table, names)
st.dataframe(view, hide_index=True, column_config=views.number_formats(view))
st.caption("Exact expected true reward of each final policy. Spread: min – max over seeds. "
           "Beats SFT: ✓ when the mean does, and how many seeds do.")

st.header("Per seed")
views.pick_a_run(views.seed_table({"GRPO": grpo, "RLVR": rlvr}, up), grpo + rlvr, up, "compare_table")

live.share_link(live.SETTINGS, {**live.upstream_values(up), **live.run_values("grpo", grpo_cfg, grpo_seeds),
                                 **live.run_values("rlvr", rlvr_cfg, rlvr_seeds)})
