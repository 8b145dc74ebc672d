"""Gradient noise: how well one GRPO batch's gradient points along the exact policy gradient."""
import streamlit as st

from ui import charts, controls, lab, navigation, store, views
from ui.controls import ADVANTAGE_ESTIMATORS

REWARDS = {"reward_model": "reward model's score", "verifiable": "verifiable 0/1 reward"}
SETTINGS = controls.PageSettings("Gradient noise", (
    controls.radio("noise_reward", "reward", tuple(REWARDS), "reward_model", text=REWARDS.get,
                   help="Score the groups with the learned reward model (GRPO) or the 0/1 verifier (RLVR)."),
    controls.multiselect("noise_group_sizes", "group sizes G", (2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64),
                         (2, 4, 8, 16, 32, 64), help="Responses sampled per prompt."),
    controls.multiselect("noise_estimators", "advantage estimators", tuple(ADVANTAGE_ESTIMATORS),
                         tuple(ADVANTAGE_ESTIMATORS), help="; ".join(
                             f"{name}: {text.split(':')[0]}" for name, text in ADVANTAGE_ESTIMATORS.items()) + "."),
    controls.slider("noise_prompts", "prompts per batch", 1, 64, 8,
                    help="Prompts in each sampled batch, as in training."),
    controls.select_slider("noise_draws", "batches drawn", (64, 128, 256, 512, 1024), 256,
                           help="Independent batches per group size; every estimator sees the same batches.")))
navigation.page(SETTINGS)
st.title("Gradient noise against group size")
st.markdown("Every GRPO step follows a gradient estimated from one batch of sampled groups. Here "
            "that stochastic gradient g (first epoch, no KL, from the SFT policy) is compared with "
            "the exact gradient ∇J of the expected reward J, by their cosine: 1 means the batch "
            "points exactly uphill, 0 means it is as good as a random direction.")

with st.sidebar:
    st.header("Gradient noise settings")
    reward = SETTINGS.draw("noise_reward")
    group_sizes = SETTINGS.draw("noise_group_sizes")
    estimators = SETTINGS.draw("noise_estimators")
    prompts = SETTINGS.draw("noise_prompts")
    draws = SETTINGS.draw("noise_draws")
    SETTINGS.reset_button()
if not group_sizes or not estimators:
    st.info("Choose at least one group size and one estimator in the sidebar.")
    st.stop()
estimators = [e for e in ADVANTAGE_ESTIMATORS if e in estimators]

up = store.stored_upstream()
noise = lab.gradient_noise(up, reward, sorted(group_sizes), estimators, draws, prompts)
charts.show_grid([
    lab.noise_chart(noise, estimators, "cosine", "cos(g, ∇J): one batch against the exact gradient",
                    "cosine", subtitle=f"point: mean over {draws} batches · bar: ± one standard deviation",
                    error="cosine_std"),
    lab.noise_chart(noise, estimators, "relative_norm", "Size of the step direction: |g| / |∇J|",
                    "relative norm", subtitle="mean over batches; the scale Adam largely normalizes away"),
])
st.markdown(
    "Larger groups give a better baseline and more samples, so the cosine rises with G, with "
    "diminishing returns. The cosine ignores scale, so dr_grpo, rloo (dr_grpo × G/(G−1)) and "
    "batch_std (dr_grpo ÷ one number per batch) coincide exactly; only grpo's per-group std and "
    "none's missing baseline change the direction. A baseline removes noise only when it tracks "
    "the reward; with the 0/1 reward on prompts the SFT policy mostly gets right, subtracting the "
    "group mean puts weight on the rare wrong answers and can make the direction worse than no "
    "baseline at all. With small groups, a batch in which every group is silent gives g = 0, "
    "counted as cosine 0.")
same = lab.coinciding(noise, estimators)
if same:
    st.info("On the cosine chart " + "; ".join(" and ".join(g) for g in same)
            + (" coincide" if len(same) == 1 else " coincide, group by group")
            + ": they differ only in scale, so their points sit on each other (each has its own shape, "
              "and they are spread slightly along G).")
best = noise.groupby("group_size")["cosine"].max()
leaders = lambda g: " = ".join(noise[(noise.group_size == g) & (noise.cosine >= best[g] - 1e-9)].estimator)
g_lo, g_hi = min(group_sizes), max(group_sizes)
st.caption(f"With the {REWARDS[reward]}, the best direction at G = {g_lo} comes from {leaders(g_lo)} "
           f"(cosine {best[g_lo]:.3f}), at G = {g_hi} from {leaders(g_hi)} (cosine {best[g_hi]:.3f}).")
wide = noise.pivot(index="group_size", columns="estimator", values="cosine")[estimators].reset_index()
zero = noise[noise.estimator == estimators[0]].set_index("group_size")["zero_grad_frac"]
wide["batches with g = 0"] = zero.loc[wide.group_size].to_numpy()
st.dataframe(wide.rename(columns={"group_size": "G"}), hide_index=True, column_config=views.number_formats(wide))
st.caption("Mean cosine per group size (rows) and estimator (columns); the last column is the "
           f"fraction of batches without any signal for {estimators[0]}.")
lab.exact_note("The exact policy gradient ∇J is a sum over every token here, so the noise of "
               "one batch can be measured against the truth; on a language model ∇J is unknown and "
               "gradient noise can only be compared between batches.")
