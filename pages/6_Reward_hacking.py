"""Reward hacking: GRPO's proxy and true reward against the distance it travels from SFT."""
import streamlit as st

from grpo_core import GRPOConfig, seed_configs
from ui import charts, controls, lab, navigation, store, views

SETTINGS = controls.PageSettings("Reward hacking", (
    controls.multiselect("hack_kl_coefs", "KL coefficients β", (0.0, 0.001, 0.01, 0.05, 0.2, 1.0, 5.0),
                         (0.0, 0.01, 0.05, 0.2, 1.0), text=controls.g,
                         help="One GRPO run per coefficient and seed, all trained as one batch."),
    *controls.config_settings(GRPOConfig, "hack", skip=["kl_coef"]),
    controls.seeds("hack", 4, controls.LAB_SEEDS_HELP)))
navigation.page(SETTINGS)
st.title("Reward hacking")
st.markdown("GRPO maximizes the reward model's score (the *proxy*), never the true reward (the *gold* "
            "reward). Plotting both against how far the policy moves from SFT, measured as "
            "√KL(policy ‖ SFT) as in Gao et al. (2022), shows where optimizing the proxy stops "
            "paying off.")

with st.sidebar:
    st.header("Reward hacking settings")
    kl_coefs = SETTINGS.draw("hack_kl_coefs")
    cfg = SETTINGS.config(GRPOConfig, "hack", kl_coef=0.0)
    n_seeds = SETTINGS.draw("hack_seeds")
    SETTINGS.reset_button()
if not kl_coefs:
    st.info("Choose at least one KL coefficient in the sidebar.")
    st.stop()
kl_coefs = sorted(kl_coefs)

up = store.stored_upstream()
results = store.train(up, controls.combine(
    lambda: [c for b in kl_coefs for c in seed_configs(cfg.replace(kl_coef=b), n_seeds)]))
views.show_stopped(results)
by_coef = {b: [r for r in results if r.config.kl_coef == b] for b in kl_coefs}

bon, frontier = lab.hacking_curves(up)
traj = lab.trajectories(by_coef, up)
charts.show_grid([
    lab.hacking_chart(traj, bon, frontier, "true_reward", "Gold: expected true reward, exact",
                      "true reward", rules={"best achievable": float(up.problem.best_reward.mean())}),
    lab.hacking_chart(traj, bon, frontier, "rm_reward", "Proxy: expected reward-model score, exact",
                      "reward-model score"),
])
st.markdown(
    "**What to look at.** The proxy (right) only rises as the policy moves away from SFT, while the "
    "gold reward (left) rises, peaks and falls: past that point GRPO is exploiting the reward "
    "model's mistakes. Best-of-n (black, n = 1…64) and the exact optimum π* ∝ π_ref·exp(r/β) of the "
    "reward model (grey) trace the same hump; no policy at a given KL can score more proxy reward "
    "than the grey line, so the training curves approach it from below. The KL coefficient decides "
    "where on that curve each run stops.")

table = lab.effective_beta_table(by_coef, up, frontier)
st.subheader("Which β GRPO really optimizes")
st.dataframe(table, hide_index=True, column_config=views.number_formats(table))
st.caption("Per KL coefficient β, means over seeds: the final KL, true and reward-model rewards; the "
           "peak true reward and the iteration it came at; the β whose exact optimum π* has the same "
           "KL, the configured β divided by it, and that optimum's true reward.")
sigma = lab.reward_std(up)
st.markdown(
    f"GRPO divides each group's rewards by their standard deviation, so β weighs the KL against "
    f"rewards in units of that spread, not of the reward model's score. Under the SFT policy the "
    f"score spreads by about σ = {sigma:.3f} per context, so β = 0.05 acts roughly like "
    f"β·σ = {0.05 * sigma:.4f} on raw scores, and less as groups grow more alike. The column "
    "*β of the optimum with this KL* reads the effective β off the exact frontier: the β whose "
    "optimum π* ends at the same KL as GRPO did.")
lab.exact_note("Best-of-n's KL and rewards and the optimum π* for every β are exact sums over "
               "the tokens here; on a language model both can only be estimated by sampling, and "
               "the optimum not at all.")
