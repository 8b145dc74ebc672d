"""Setup: the toy task, the SFT policy and the reward model that GRPO starts from."""
import streamlit as st

from grpo_core import ProblemConfig, RewardModelConfig, SFTConfig
from ui import charts, controls, navigation, store, views

SETTINGS = controls.PageSettings("Setup", controls.upstream_settings())
navigation.page(SETTINGS)
st.title("Setup: task, SFT policy, reward model")
st.markdown("Everything GRPO starts from. The settings here are used by every later page.")

with st.sidebar:
    st.header("Task")
    problem_cfg = SETTINGS.config(ProblemConfig, "problem")
    with st.expander("SFT", expanded=True):
        sft_cfg = SETTINGS.config(SFTConfig, "sft")
    with st.expander("Reward model", expanded=True):
        rm_cfg = SETTINGS.config(RewardModelConfig, "rm")
    SETTINGS.reset_button()

up = store.upstream(problem_cfg, sft_cfg, rm_cfg)
problem, sft, rm = up.problem, up.sft, up.rm
correct = problem.correct_token.numpy()

st.header("1. The task")
charts.show(charts.heatmap(problem.true_reward.numpy(), "True preferences (the true reward of each token)",
                   "true reward", outline=correct, subtitle="outlined: each context's correct (best) token"))

st.header("2. Supervised fine-tuning")
st.markdown("The policy imitates tokens sampled from the true preferences. It becomes GRPO's "
            "starting point and its frozen reference.")
charts.show_grid([
    charts.lines_chart(sft.history, "epoch", {"loss": "cross-entropy"}, "SFT loss per epoch", "loss"),
    charts.lines_chart(sft.history, "epoch", {"true_reward": "SFT policy"}, "Exact expected true reward",
                   "true reward", rules={"best achievable": float(problem.best_reward.mean())}),
    charts.lines_chart(sft.history, "epoch", {"kl_true": "KL(true ‖ SFT)"}, "KL(true preferences ‖ SFT), exact",
                   "KL (nats)"),
], columns=3)
charts.show(charts.context_bars({"SFT policy": sft.logp.exp().numpy(), "true preference": problem.true_reward.numpy()},
                        correct, "SFT policy against the true preferences",
                        "★ marks each context's correct token", colors=[charts.SFT_COLOR, charts.TRUE_COLOR]))

st.header("3. The reward model")
st.markdown("A Bradley–Terry model learns a score per (context, token) from simulated pairwise "
            "comparisons. GRPO only ever sees these scores, never the truth.")
charts.show_grid([
    charts.lines_chart(rm.history, "step", {"loss": "Bradley–Terry loss"}, "Reward-model loss", "loss"),
    charts.lines_chart(rm.history, "step", {"pairwise_accuracy": "reward model"}, "Pairwise accuracy",
                   "accuracy", rules={"chance": 0.5}),
])
left, right = st.columns(2)
with left:
    charts.show(charts.heatmap(problem.true_reward.numpy(), "True reward", "true reward", outline=correct,
                       subtitle="outlined: correct token"))
with right:
    charts.show(charts.heatmap(rm.scores.numpy(), "Learned reward-model score", "score", scheme="purples",
                       outline=rm.scores.argmax(-1).numpy(), subtitle="outlined: the reward model's top token"))
st.caption(f"The reward model ranks {rm.pairwise_accuracy:.0%} of same-context token pairs as the "
           "truth does. Scores are only meaningful within a context (shifting a row changes nothing).")

st.subheader("Correct tokens, and whether the reward model agrees")
table = views.token_table(up)
st.dataframe(table, hide_index=True, column_config=views.number_formats(table))
wrong = table[table["reward model's top token"] != table["correct token"]]
if len(wrong):
    st.warning("In context " + ", ".join(
        f"{c} the reward model prefers token {top} to the correct token {ok}" for c, top, ok in
        zip(wrong["context"], wrong["reward model's top token"], wrong["correct token"]))
        + ". GRPO maximizes the reward model, so there it will push the policy toward the wrong "
        "token; RLVR, rewarded by a verifier, will not.")
else:
    st.success("The reward model's top token is the correct one in every context.")
