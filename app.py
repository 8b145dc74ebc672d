"""The GRPO explorer: landing page. Run with `streamlit run app.py`."""
import streamlit as st

from grpo_core import GRPOConfig, seed_configs
from ui import charts, controls, navigation, store, views

# The first screen: what the app does (one real run) and where to start; the theory comes below.
FIRST_RUN_ITERATIONS, FIRST_RUN_SEEDS = 200, 4      # the Guided tour's GRPO runs: trained once, shared

navigation.page(controls.PageSettings("Home"))
st.title("The GRPO explorer")
st.markdown(
    "Train **Group Relative Policy Optimization** yourself on a toy language-model task small "
    "enough that every expectation is exact, and see what each knob does.")

picture, start = st.columns([3, 2], gap="large")
with start:
    st.subheader("Where to start")
    st.page_link("pages/0_Guided_tour.py", label="**New to GRPO? Take the Guided tour**", icon=":material/school:")
    st.caption("Six short experiments: predict each result, then reveal it.")
    st.page_link("pages/2_GRPO.py", label="**Know GRPO? Train it**", icon=":material/model_training:")
    st.caption("Every knob, many seeds at once, and a live view of it training.")
    st.caption("Every page is in the sidebar, and listed with a line each at the end of this page.")
with picture:
    up = store.stored_upstream()
    runs = store.train(up, seed_configs(GRPOConfig(iterations=FIRST_RUN_ITERATIONS), FIRST_RUN_SEEDS))
    charts.show(charts.band_chart({f"GRPO ({FIRST_RUN_SEEDS} seeds)": [r.history for r in runs]},
                                  "true_reward", "What you will see: GRPO raising the true reward",
                                  y_title="true reward", rules=views.reward_rules(up), height=200))

st.header("GRPO in one paragraph")
st.markdown(
    "GRPO is PPO **without a critic**. For each prompt $x$ the policy samples a *group* of $G$ "
    "responses $y_1, \\dots, y_G$, a reward function scores them, and each response's advantage "
    "is its reward measured against the rest of its group:")
st.latex(r"A_i \;=\; \frac{r_i - \operatorname{mean}(r_1,\dots,r_G)}{\operatorname{std}(r_1,\dots,r_G) + \varepsilon}")
st.markdown(
    "The policy then takes a few PPO-style clipped steps on those advantages, with a penalty for "
    "drifting away from a frozen reference policy $\\pi_{\\text{ref}}$ (the SFT model):")
st.latex(r"""\mathcal{L}(\theta) \;=\; -\frac{1}{G}\sum_{i=1}^{G}
\min\!\Big(\rho_i A_i,\; \operatorname{clip}(\rho_i,\,1-\epsilon,\,1+\epsilon)\,A_i\Big)
\;+\; \beta\,\mathrm{KL}\big(\pi_\theta \,\|\, \pi_{\text{ref}}\big),
\qquad \rho_i = \frac{\pi_\theta(y_i \mid x)}{\pi_{\theta_{\text{old}}}(y_i \mid x)}""")
st.markdown(
    "If every response in a group gets the same reward, all its advantages are zero: that group "
    "teaches nothing. This is why the group size $G$ matters so much.")

left, right = st.columns(2)
with left:
    st.subheader("How it differs from PPO")
    st.markdown(
        "PPO learns a value network $V(s)$ next to the policy and builds advantages from it (GAE). "
        "GRPO drops that network: the **group mean is the baseline**. One model fewer to train "
        "and hold in memory, at the cost of sampling several responses per prompt.")
    st.page_link("pages/14_Landscape.py", label="PPO and GRPO measured side by side: the Landscape page",
                 icon=":material/landscape:")
with right:
    st.subheader("How it differs from DPO")
    st.markdown(
        "DPO fits the policy to a fixed, offline set of preference pairs, with no sampling and no "
        "reward model. GRPO is **online reinforcement learning**: it samples fresh responses from "
        "the current policy and learns from a reward signal, a reward model or a verifier.")
    st.page_link("pages/14_Landscape.py", label="DPO and GRPO on the same pairs, measured: the Landscape page",
                 icon=":material/landscape:")

st.subheader("The pipeline")
st.markdown(
    "**SFT** (imitate demonstrations) → **reward model** (learn from pairwise comparisons) → "
    "**GRPO** on the reward model, or skip the reward model and use **RLVR**: GRPO with a "
    "*verifiable* reward, 1 when the answer checks out and 0 otherwise, as for maths and code.")
st.markdown(
    "GRPO was introduced in **DeepSeekMath** (Shao et al., 2024). **DeepSeek-R1** (2025) later "
    "used it with verifiable rewards to train reasoning; it did not introduce it.")

st.header("The toy task")
st.markdown(
    "By default there are 5 prompts (contexts) and 10 possible one-token responses. Each context has hidden "
    "*true preferences* over the tokens, and the true reward of a token is its preference; the "
    "correct token is the most preferred one. The policy is a small network from context "
    "embedding to token probabilities. Everything is configurable on the Setup page.")

st.header("What this explorer does better than the notebook")
st.markdown(
    "- **Exact expectations.** A response is one of a few tokens, so expected rewards, KL and "
    "entropy are sums over the tokens, not the reward of one sampled group, which is mostly noise.\n"
    "- **Many seeds, with their spread.** Runs are trained together as one batch; charts show the "
    "mean and a 10th–90th percentile band, so a difference you see is not one lucky seed.\n"
    "- **Exact per-context evaluation** of the final policy, instead of averaging 200 samples.")

st.header("The pages")
for p in navigation.PAGES[1:]:
    st.page_link(p.path, label=f"**{p.label}**: {p.blurb}", icon=p.icon)
st.caption("Settings live in the URL and are kept while you move between pages, so a link "
           "reproduces what you see. The later pages start from the SFT model and reward model "
           "chosen on Setup.")
