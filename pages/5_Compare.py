"""Compare: SFT, GRPO and RLVR side by side, context by context."""
import streamlit as st

import ui
from grpo_core import GRPOConfig, RLVRConfig, compare_table, seed_configs
from ui import guard, live

ui.page("Compare")
live.adopt_params(live.SETTINGS)
st.title("Compare SFT, GRPO and RLVR")

grpo_cfg, rlvr_cfg = ui.stored_config(GRPOConfig, "grpo"), ui.stored_config(RLVRConfig, "rlvr")
grpo_seeds, rlvr_seeds = ui.stored_seeds("grpo"), ui.stored_seeds("rlvr")
st.markdown("Both methods start from the same SFT policy and use the settings chosen on their pages.")
st.caption(f"GRPO: {ui.describe(grpo_cfg)}, {grpo_seeds} seeds · RLVR: {ui.describe(rlvr_cfg)}, "
           f"{rlvr_seeds} seeds (change them on the GRPO and RLVR pages).")
up = ui.stored_upstream()
guard.work_caption(seed_configs(grpo_cfg, grpo_seeds), seed_configs(rlvr_cfg, rlvr_seeds))
grpo = live.train(up, seed_configs(grpo_cfg, grpo_seeds), "compare_grpo")
rlvr = live.train(up, seed_configs(rlvr_cfg, rlvr_seeds), "compare_rlvr")
ui.show_stopped(grpo + rlvr)

names = {"grpo": "GRPO", "rlvr": "RLVR"}
table = compare_table(up, {"grpo": grpo, "rlvr": rlvr})
st.info(ui.compare_notice(table, up))
ui.show(ui.compare_chart(table, names))

st.header("Per context")
view = ui.compare_view(table, names)
st.dataframe(view, hide_index=True, column_config=ui.number_formats(view))
st.caption("Exact expected true reward of each final policy. Spread: min – max over seeds. "
           "Beats SFT: ✓ when the mean does, and how many seeds do.")

st.header("Per seed")
ui.pick_a_run(ui.seed_table({"GRPO": grpo, "RLVR": rlvr}, up), grpo + rlvr, up, "compare_table")

live.share_link(live.SETTINGS)
