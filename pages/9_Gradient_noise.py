"""Gradient noise: how well one GRPO batch's gradient points along the exact policy gradient."""
import streamlit as st

import ui
from grpo_core.config import ADVANTAGE_ESTIMATORS
from ui import lab

GROUP_SIZES = [2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64]
DEFAULT_GS = [2, 4, 8, 16, 32, 64]
REWARDS = {"reward_model": "reward model's score", "verifiable": "verifiable 0/1 reward"}

ui.page("Gradient noise")
st.title("Gradient noise against group size")
st.markdown("Every GRPO step follows a gradient estimated from one batch of sampled groups. Here "
            "that stochastic gradient g (first epoch, no KL, from the SFT policy) is compared with "
            "the exact gradient ∇J of the expected reward J, by their cosine: 1 means the batch "
            "points exactly uphill, 0 means it is as good as a random direction.")

with st.sidebar:
    st.header("Gradient noise settings")
    reward = st.radio("reward", list(REWARDS), format_func=REWARDS.get, key="noise_reward",
                      bind="query-params", persist_state="session",
                      help="Score the groups with the learned reward model (GRPO) or the 0/1 verifier (RLVR).")
    group_sizes = st.multiselect("group sizes G", GROUP_SIZES, default=DEFAULT_GS, key="noise_group_sizes",
                                 bind="query-params", persist_state="session",
                                 help="Responses sampled per prompt.")
    estimators = st.multiselect("advantage estimators", list(ADVANTAGE_ESTIMATORS),
                                default=list(ADVANTAGE_ESTIMATORS), key="noise_estimators",
                                bind="query-params", persist_state="session",
                                help="grpo: group mean and std; dr_grpo: group mean only; batch_std: "
                                     "group mean, batch std; rloo: leave-one-out mean; none: no baseline.")
    prompts = st.slider("prompts per batch", 1, 64, 8, key="noise_prompts", bind="query-params",
                        persist_state="session", help="Prompts in each sampled batch, as in training.")
    draws = st.select_slider("batches drawn", [64, 128, 256, 512, 1024], value=256, key="noise_draws",
                             bind="query-params", persist_state="session",
                             help="Independent batches per group size; every estimator sees the same batches.")
    ui.reset_button([], {"noise_reward": "reward_model", "noise_group_sizes": DEFAULT_GS,
                         "noise_estimators": list(ADVANTAGE_ESTIMATORS), "noise_prompts": 8, "noise_draws": 256})
if not group_sizes or not estimators:
    st.info("Choose at least one group size and one estimator in the sidebar.")
    st.stop()
estimators = [e for e in ADVANTAGE_ESTIMATORS if e in estimators]

up = ui.stored_upstream()
noise = lab.gradient_noise(up, reward, sorted(group_sizes), estimators, draws, prompts)
ui.show_grid([
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
best = noise.groupby("group_size")["cosine"].max()
leaders = lambda g: " = ".join(noise[(noise.group_size == g) & (noise.cosine >= best[g] - 1e-9)].estimator)
g_lo, g_hi = min(group_sizes), max(group_sizes)
st.caption(f"With the {REWARDS[reward]}, the best direction at G = {g_lo} comes from {leaders(g_lo)} "
           f"(cosine {best[g_lo]:.3f}), at G = {g_hi} from {leaders(g_hi)} (cosine {best[g_hi]:.3f}).")
wide = noise.pivot(index="group_size", columns="estimator", values="cosine")[estimators].reset_index()
zero = noise[noise.estimator == estimators[0]].set_index("group_size")["zero_grad_frac"]
wide["batches with g = 0"] = zero.loc[wide.group_size].to_numpy()
st.dataframe(wide.rename(columns={"group_size": "G"}), hide_index=True, column_config=ui.number_formats(wide))
st.caption("Mean cosine per group size (rows) and estimator (columns); the last column is the "
           f"fraction of batches without any signal for {estimators[0]}.")
lab.exact_note("The exact policy gradient ∇J is a sum over every token here, so the noise of "
               "one batch can be measured against the truth; on a language model ∇J is unknown and "
               "gradient noise can only be compared between batches.")
