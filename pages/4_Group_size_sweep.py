"""Group-size sweep: how G trades the noise of the baseline against compute."""
import streamlit as st

import ui
from grpo_core import GRPOConfig, sweep_configs
from ui import guard, live

GROUP_SIZES, SWEEP_DEFAULTS = [2, 4, 8, 16, 32, 64], {"iterations": 300}

ui.page("Group size sweep")
live.adopt_params()
st.title("Group size sweep")
st.markdown("Small groups give a noisy baseline (close to REINFORCE); large groups a better one, "
            "but every iteration costs G samples per prompt.")

with st.sidebar:
    st.header("Sweep settings")
    group_sizes = st.multiselect("group sizes G", GROUP_SIZES, default=[2, 4, 8, 16], key="sweep_group_sizes",
                                 bind="query-params", persist_state="session",
                                 help="Each chosen G is trained with every seed; all runs form one batch.")
    n_seeds = ui.seeds_control("sweep")
    # group_size is a placeholder: sweep_configs sets each G.
    cfg = ui.make_config(GRPOConfig, group_size=2, **ui.config_controls(
        GRPOConfig, "sweep", defaults=SWEEP_DEFAULTS, skip=["group_size"]))
    ui.reset_button([(GRPOConfig, "sweep", SWEEP_DEFAULTS)],
                    {"sweep_group_sizes": [2, 4, 8, 16], "sweep_seeds": ui.SEEDS_DEFAULT})
if not group_sizes:
    st.info("Choose at least one group size in the sidebar.")
    st.stop()
group_sizes = sorted(group_sizes)

up = ui.stored_upstream()
guard.work_caption(sweep_configs(cfg, group_sizes, n_seeds))
results = live.train(up, sweep_configs(cfg, group_sizes, n_seeds), "sweep")
ui.show_stopped(results)

left, right = st.columns(2)
x_axis = left.radio("x-axis", ["iteration", "samples"], horizontal=True, key="sweep_x", bind="query-params",
                    persist_state="session", format_func=lambda x: {"samples": "samples generated"}.get(x, x),
                    help="Per iteration, or per response generated (iterations x prompts x G).")
window = right.slider("smoothing window", 1, 100, 30, key="sweep_window", bind="query-params",
                      persist_state="session", help="Rolling mean over this many iterations, per run.")
st.caption("Samples generated is the fair comparison: G = 16 draws eight times as many responses "
           "per iteration as G = 2, so it should be judged against the same sampling budget.")

runs = {f"G={g}": [r.history for r in results if r.config.group_size == g] for g in group_sizes}
ui.show_grid([
    ui.band_chart(runs, "true_reward", "Expected true reward, exact", y_title="true reward", x=x_axis,
                  window=window, rules=ui.reward_rules(up)),
    ui.band_chart(runs, "kl_ref", "KL(policy ‖ SFT reference), exact", y_title="KL (nats)", x=x_axis,
                  window=window),
    ui.band_chart(runs, "zero_std_frac", "Groups with zero reward spread", y_title="fraction",
                  x=x_axis, window=window),
    ui.errorbar_chart(ui.final_by_group_size(results), "G", "Final expected true reward by group size",
                      "group size G", "final true reward", rules=ui.reward_rules(up),
                      subtitle=f"point: mean over {n_seeds} seeds · bar: 10th–90th percentile"),
])

st.header("Every run")
ui.pick_a_run(ui.final_table(results, up, with_g=True), results, up, "sweep_table", x=x_axis)

live.share_link()
