"""Hyperparameter map: where does a setting work? Two settings x seeds per cell, one bounded batch."""
import streamlit as st

import ui
from grpo_core import config_fields
from grpo_core.grid import METHODS, GridError
from ui import maps

ui.page("Hyperparameter map")
st.title("Hyperparameter map")
st.markdown("After *what does this knob do?* comes *where does it work?* Pick two settings and a "
            "range for each: every cell of the grid trains several seeds, and is coloured by an "
            "exact final metric. Every other setting is the method page's.")

with st.sidebar:
    choice = maps.controls()
prefix = maps.METHOD_PAGES[choice.method][1]
base = ui.stored_config(METHODS[choice.method], prefix)   # the method page's settings or the link's


def log_choices(field):
    """The values the method page's log slider offers for `field` (None if it has none)."""
    meta = {f.name: f for f in config_fields(METHODS[choice.method])}[field]
    return ui._log_grid(meta.metadata["lo"], meta.metadata["hi"], meta.default) if meta.metadata.get("log") else None


try:
    grid = maps.build_map(choice, base, ui.upstream_configs(), log_choices)
except GridError as err:
    st.error(str(err))
    st.stop()
st.caption(f"{len(grid.x.values)} × {len(grid.y.values)} cells × {grid.seeds} seeds = {grid.runs} "
           f"runs of {grid.base.iterations} iterations, trained in bounded chunks.")
up = ui.stored_upstream()
result = maps.train_map(grid, up)
if result.cells.empty:
    st.info("No cell has all its seeds finished yet.")
    st.stop()
ui.show(maps.heatmap_chart(result, choice.metric, current=base))
st.caption(f"SFT, where every run starts: exact true reward {result.sft['true_reward']:.4f}. "
           f"{int(result.cells['beats_sft'].sum())} of {len(result.cells)} cells beat it on average.")
with st.expander("The cells as a table"):
    st.dataframe(maps.cells_table(result, choice.metric), hide_index=True)
