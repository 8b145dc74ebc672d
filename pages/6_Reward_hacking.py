"""Reward hacking: GRPO's proxy and true reward against the distance it travels from SFT."""
import streamlit as st

import ui
from grpo_core import GRPOConfig, seed_configs
from ui import lab

KL_COEFS, DEFAULT_COEFS = [0.0, 0.001, 0.01, 0.05, 0.2, 1.0, 5.0], [0.0, 0.01, 0.05, 0.2, 1.0]

ui.page("Reward hacking")
st.title("Reward hacking")
st.markdown("GRPO maximizes the reward model's score (the *proxy*), never the true reward (the *gold* "
            "reward). Plotting both against how far the policy moves from SFT, measured as "
            "√KL(policy ‖ SFT) as in Gao et al. (2022), shows where optimizing the proxy stops "
            "paying off.")

with st.sidebar:
    st.header("Reward hacking settings")
    kl_coefs = st.multiselect(
        "KL coefficients β", KL_COEFS, default=DEFAULT_COEFS, key="hack_kl_coefs", bind="query-params",
        persist_state="session", format_func=lambda b: f"{b:g}",
        help="One GRPO run per coefficient and seed, all trained as one batch.")
    cfg = ui.make_config(GRPOConfig, kl_coef=0.0, **ui.config_controls(GRPOConfig, "hack", skip=["kl_coef"]))
    n_seeds = lab.seeds_control("hack")
    ui.reset_button([(GRPOConfig, "hack", None)], {"hack_kl_coefs": DEFAULT_COEFS, "hack_seeds": 4})
if not kl_coefs:
    st.info("Choose at least one KL coefficient in the sidebar.")
    st.stop()
kl_coefs = sorted(kl_coefs)

up = ui.stored_upstream()
results = ui.train(up, [c for b in kl_coefs for c in seed_configs(cfg.replace(kl_coef=b), n_seeds)])
ui.show_stopped(results)
by_coef = {b: [r for r in results if r.config.kl_coef == b] for b in kl_coefs}

bon, frontier = lab.hacking_curves(up)
traj = lab.trajectories(by_coef, up)
ui.show_grid([
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
st.dataframe(table, hide_index=True, column_config=ui.number_formats(table))
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
