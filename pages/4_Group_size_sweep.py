"""Group-size sweep: how G trades the noise of the baseline against compute."""
import streamlit as st

from grpo_core import GRPOConfig, sweep_configs
from ui import charts, controls, guard, live, navigation, store, views

SETTINGS = controls.PageSettings("Group size sweep", (
    controls.multiselect("sweep_group_sizes", "group sizes G", (2, 4, 8, 16, 32, 64), (2, 4, 8, 16),
                         help="Each chosen G is trained with every seed; all runs form one batch."),
    controls.seeds("sweep"),
    # group_size is left out: sweep_configs sets each G.
    *controls.config_settings(GRPOConfig, "sweep", defaults={"iterations": 300}, skip=["group_size"]),
    controls.radio("sweep_x", "x-axis", ("iteration", "samples"), "iteration", horizontal=True,
                   text=lambda x: {"samples": "samples generated"}.get(x, x),
                   help="Per iteration, or per response generated (iterations x prompts x G)."),
    controls.slider("sweep_window", "smoothing window", 1, 100, 30,
                    help="Rolling mean over this many iterations, per run.")),
    adopted=controls.upstream_settings())
navigation.page(SETTINGS)
live.adopt_params()
st.title("Group size sweep")
st.markdown("Small groups give a noisy baseline (close to REINFORCE); large groups a better one, "
            "but every iteration costs G samples per prompt.")

with st.sidebar:
    st.header("Sweep settings")
    group_sizes = SETTINGS.draw("sweep_group_sizes")
    n_seeds = SETTINGS.draw("sweep_seeds")
    cfg = SETTINGS.config(GRPOConfig, "sweep", group_size=2)    # a placeholder G: sweep_configs sets each
    SETTINGS.reset_button()
if not group_sizes:
    st.info("Choose at least one group size in the sidebar.")
    st.stop()
group_sizes = sorted(group_sizes)

up = store.stored_upstream()
configs = controls.combine(sweep_configs, cfg, group_sizes, n_seeds)
guard.work_caption(configs)
results = store.train(up, configs, "sweep")
views.show_stopped(results)

left, right = st.columns(2)
with left:
    x_axis = SETTINGS.draw("sweep_x")
with right:
    window = SETTINGS.draw("sweep_window")
st.caption("Samples generated is the fair comparison: G = 16 draws eight times as many responses "
           "per iteration as G = 2, so it should be judged against the same sampling budget.")

runs = {f"G={g}": [r.history for r in results if r.config.group_size == g] for g in group_sizes}
charts.show_grid([
    charts.band_chart(runs, "true_reward", "Expected true reward, exact", y_title="true reward", x=x_axis,
                  window=window, rules=views.reward_rules(up)),
    charts.band_chart(runs, "kl_ref", "KL(policy ‖ SFT reference), exact", y_title="KL (nats)", x=x_axis,
                  window=window),
    charts.band_chart(runs, "zero_std_frac", "Groups with zero reward spread", y_title="fraction",
                  x=x_axis, window=window),
    charts.errorbar_chart(views.final_by_group_size(results), "G", "Final expected true reward by group size",
                      "group size G", "final true reward", rules=views.reward_rules(up),
                      subtitle=f"point: mean over {n_seeds} seeds · bar: 10th–90th percentile"),
])

st.header("Every run")
views.pick_a_run(views.final_table(results, up, with_g=True), results, up, "sweep_table", x=x_axis)

live.share_link(values={**live.upstream_values(up), **live.run_values("sweep", cfg, n_seeds),
                        "sweep_group_sizes": group_sizes, "sweep_x": x_axis, "sweep_window": window})
