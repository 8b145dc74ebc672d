"""Hyperparameter map: where does a setting work? Two settings x seeds per cell, one bounded batch."""
import streamlit as st

from grpo_core import config_fields
from grpo_core.grid import METHODS, GridError
from ui import charts, controls, live, maps, navigation, store

SETTINGS = maps.page_settings()
navigation.page(SETTINGS)
live.adopt_params(live.SETTINGS)   # a shared link's settings: the upstream, the GRPO and RLVR pages'
st.title("Hyperparameter map")
st.markdown("After *what does this knob do?* comes *where does it work?* Pick two settings and a "
            "range for each: every cell of the grid trains several seeds, and is coloured by an "
            "exact final metric. Every other setting is the method page's.")

with st.sidebar:
    st.header("Map settings")
    choice = maps.sidebar_controls(SETTINGS)
prefix = maps.METHOD_PAGES[choice.method][1]
base = controls.stored_config(METHODS[choice.method], prefix)   # the method page's settings or the link's


def widget_values(field, axis):
    """The axis's values as the method page's widget shows them: a log slider's 1-2-5 values,
    a float slider's 0.01 steps; so clicking a cell opens exactly that cell."""
    f = {f.name: f for f in config_fields(METHODS[choice.method])}[field]
    if f.metadata.get("log"):
        choices = controls.log_grid(f.metadata["lo"], f.metadata["hi"], f.default)
        return maps.slider_values(axis.lo, axis.hi, len(axis.values), choices)
    if isinstance(f.default, float):
        return tuple(round(v, 2) for v in axis.values)
    return axis.values


try:
    grid = maps.build_map(choice, base, controls.upstream_configs(), widget_values)
except GridError as err:
    st.error(str(err))
    st.stop()
st.caption(f"{len(grid.x.values)} × {len(grid.y.values)} cells × {grid.seeds} seeds = {grid.runs} "
           f"runs of {grid.base.iterations} iterations, trained in bounded chunks.")
up = store.stored_upstream()
result = maps.train_map(grid, up)
if result.cells.empty:
    st.info("No cell has all its seeds finished yet.")
    st.stop()
charts.show(maps.heatmap_chart(result, choice.metric, current=base))
st.caption(f"SFT, where every run starts: exact true reward {result.sft['true_reward']:.4f}. "
           f"{int(result.cells['beats_sft'].sum())} of {len(result.cells)} cells beat it on average.")
with st.expander("The cells as a table"):
    st.dataframe(maps.cells_table(result, choice.metric), hide_index=True)
