"""Guided tour: the story of GRPO in six short steps, each a small experiment to predict first."""
import numpy as np
import streamlit as st

from grpo_core import GRPOConfig, RLVRConfig, compare_table, seed_configs
from ui import charts, controls, navigation, store, views

TOUR_ITERATIONS, TOUR_SEEDS = 200, 4

navigation.page(controls.PageSettings("Guided tour"))
st.title("Guided tour")
st.markdown("Six short steps from the toy task to what a wrong reward model costs. In each, "
            "**predict first**, then press Reveal: a small experiment runs (about a second) and "
            "says whether your prediction held. The pages in the sidebar go deeper.")
up = store.stored_upstream()
problem, correct = up.problem, up.problem.correct_token.numpy()
rm_top = up.rm.scores.argmax(-1).numpy()
wrong = [int(c) for c in np.flatnonzero(rm_top != correct)]


def tour_runs():
    """Every run the tour shows, trained as one small batch (cached, shared by the steps)."""
    grpo = GRPOConfig(iterations=TOUR_ITERATIONS)
    configs = (seed_configs(grpo, TOUR_SEEDS) + seed_configs(grpo.replace(group_size=2), TOUR_SEEDS)
               + seed_configs(RLVRConfig(iterations=TOUR_ITERATIONS), TOUR_SEEDS))
    results = store.train(up, configs)
    return {"G=8": results[:TOUR_SEEDS], "G=2": results[TOUR_SEEDS:2 * TOUR_SEEDS],
            "rlvr": results[2 * TOUR_SEEDS:]}


def final(results, column: str) -> float:
    return float(np.mean([r.history[column].iloc[-1] for r in results]))


def step(n: int, title: str, text: str, question: str, options: list[str], reveal, show=None) -> None:
    """One step: the idea (and show(), a picture of it), a prediction, and on Reveal the
    experiment with a verdict. reveal() draws the experiment and returns the index of the
    option that turned out true.
    """
    st.header(f"{n}. {title}")
    st.markdown(text)
    if show is not None:
        show()
    shown = f"tour_{n}_shown"
    guess = st.radio(question, options, index=None, key=f"tour_{n}_guess",
                     on_change=lambda: st.session_state.pop(shown, None))
    if st.button("Reveal", key=f"tour_{n}_reveal", disabled=guess is None,
                 help="Choose a prediction first."):
        st.session_state[shown] = True
    if st.session_state.get(shown) and guess is not None:
        actual = reveal()
        if options.index(guess) == actual:
            st.success(f"Your prediction held: {options[actual]}.")
        else:
            st.warning(f"Not this time: the answer is “{options[actual]}”.")


def reveal_task():
    sft_probs = up.sft.logp.exp().numpy()
    charts.show(charts.context_bars({"SFT policy": sft_probs, "true preference": problem.true_reward.numpy()},
                            correct, "SFT policy against the true preferences",
                            "★ marks each context's correct token", colors=[charts.SFT_COLOR, charts.TRUE_COLOR]))
    sft_p = float(sft_probs[np.arange(len(correct)), correct].mean())
    true_p = float(problem.best_reward.mean())
    st.markdown(f"SFT gives the correct token probability **{sft_p:.2f}** on average; the true "
                f"preferences give it {true_p:.2f}. Imitation copies the preferences, spread and all.")
    return 1 if sft_p > 0.9 else 2 if sft_p < 1.5 / problem.vocab_size else 0


step(1, "The toy task and SFT",
     f"There are {problem.n_contexts} prompts (contexts) and {problem.vocab_size} one-token answers. "
     "Each context hides *true preferences* over the tokens; a token's true reward is its "
     "preference and the **correct** token is the most preferred. Supervised fine-tuning (SFT) "
     "trains a small policy network on tokens *sampled* from those preferences.",
     "After SFT, how often does the policy pick each context's correct token?",
     ["about as often as the true preferences do", "almost always", "no more often than any other token"],
     reveal_task,
     lambda: charts.show(charts.heatmap(problem.true_reward.numpy(), "The hidden true preferences", "true reward",
                                outline=correct, subtitle="outlined: each context's correct token")))


def reveal_rm():
    table = views.token_table(up)
    st.dataframe(table, hide_index=True, column_config=views.number_formats(table))
    st.markdown(f"The reward model orders {up.rm.pairwise_accuracy:.0%} of token pairs as the truth does."
                + (f" In context {', '.join(map(str, wrong))} its favourite is not the correct token."
                   if wrong else " Its favourite is the correct token everywhere."))
    return 1 if wrong else 0


step(2, "The reward model, and where it is wrong",
     "GRPO never sees the true reward. A reward model learns a score per (context, token) from "
     "a few thousand noisy pairwise comparisons (which of two tokens is preferred). Close "
     "preferences are hard to tell apart from noisy comparisons.",
     "Does the reward model rank the correct token first in every context?",
     ["yes, in every context", "no, it is wrong somewhere"], reveal_rm)


def reveal_grpo():
    runs = tour_runs()
    hists = {f"GRPO, G=8 ({TOUR_SEEDS} seeds)": [r.history for r in runs["G=8"]]}
    charts.show(charts.band_chart(hists, "true_reward", "Expected true reward, exact", y_title="true reward",
                          rules=views.reward_rules(up)))
    gain = final(runs["G=8"], "true_reward") - views.reference(up)["true_reward"]
    st.markdown(f"After {TOUR_ITERATIONS} iterations the true reward moved by **{gain:+.3f}** from SFT.")
    return 0 if gain > 0.005 else 2 if gain < -0.005 else 1


step(3, "GRPO: the group is the baseline",
     "For each prompt GRPO samples a **group** of G answers, scores them with the reward model "
     "and gives each answer the advantage *(its reward − the group mean) / the group's std*. "
     "Better-than-the-group answers become more likely, worse ones less: no value network needed. "
     "A KL penalty keeps the policy near SFT.",
     f"After {TOUR_ITERATIONS} iterations (G = 8), the expected **true** reward is …",
     ["higher than SFT's", "about the same", "lower than SFT's"], reveal_grpo)


def reveal_g2():
    runs = tour_runs()
    hists = {f"G={g[2:]}": [r.history for r in runs[g]] for g in ("G=2", "G=8")}
    charts.show_grid([charts.band_chart(hists, "true_reward", "Expected true reward", y_title="true reward",
                                rules=views.reward_rules(up)),
                  charts.band_chart(hists, "zero_std_frac", "Groups with zero reward spread", y_title="fraction")])
    g2, g8 = final(runs["G=2"], "true_reward"), final(runs["G=8"], "true_reward")
    higher = views.which_is_higher([r.history.true_reward.iloc[-1] for r in runs["G=2"]],
                                   [r.history.true_reward.iloc[-1] for r in runs["G=8"]])
    verdict = {"a": "G = 2 ends higher", "b": "G = 8 ends higher",
               "same": f"the difference is within the spread of the {TOUR_SEEDS} seeds: about the same"}[higher]
    st.markdown(f"Final true reward: G = 2 **{g2:.3f}**, G = 8 **{g8:.3f}**; {verdict}. With two answers the "
                "baseline is the other answer: the advantage is just ±1 (or 0 when both are the "
                "same token, a group that teaches nothing). G = 8 also draws four times as many "
                "samples per iteration; the sweep page compares them per sample.")
    return {"a": 0, "b": 1, "same": 2}[higher]


step(4, "What happens with G = 2",
     "The group size G is GRPO's main knob. With G = 2 each answer is judged only against one other.",
     f"Per iteration, which group size raises the true reward more in {TOUR_ITERATIONS} iterations?",
     ["G = 2", "G = 8", "about the same"], reveal_g2)


def reveal_rlvr():
    runs = tour_runs()
    hists = {"GRPO (reward model)": [r.history for r in runs["G=8"]],
             "RLVR (verifier)": [r.history for r in runs["rlvr"]]}
    charts.show(charts.band_chart(hists, "correct_prob", "Probability of the correct token, exact",
                          y_title="P(correct token)", colors=[charts.GRPO_COLOR, charts.RLVR_COLOR],
                          rules={"SFT start": views.reference(up)["correct_prob"]}))
    grpo, rlvr = final(runs["G=8"], "correct_prob"), final(runs["rlvr"], "correct_prob")
    st.markdown(f"Final P(correct): GRPO **{grpo:.3f}**, RLVR **{rlvr:.3f}**.")
    return 0 if rlvr > grpo else 1


step(5, "RLVR: a verifier instead of a reward model",
     "With a *verifiable* reward (1 for the correct token, 0 otherwise, like a maths checker) there "
     "is no reward model to be wrong. But a group where every answer is wrong (or every answer "
     "right) has zero spread and teaches nothing, so RLVR uses bigger groups (G = 16).",
     f"After {TOUR_ITERATIONS} iterations, which gives the correct token more probability?",
     ["RLVR", "GRPO on the reward model"], reveal_rlvr)


def reveal_cost():
    runs = tour_runs()
    table = compare_table(up, {"grpo": runs["G=8"], "rlvr": runs["rlvr"]})
    charts.show(charts.compare_chart(table, {"grpo": "GRPO", "rlvr": "RLVR"}))
    ctx = table.iloc[:-1]
    where = wrong or [int(c) for c in ctx.context]
    lost = [c for c in where if ctx.grpo.iloc[c] < ctx.sft.iloc[c]]
    st.markdown(views.compare_notice(table, up))
    return 0 if lost else 1


context_text = (f"context {', '.join(map(str, wrong))}" if wrong else "any context")
step(6, "What the reward model's mistakes cost",
     "GRPO maximizes whatever the reward model says. Where its favourite token is not the correct "
     "one, optimizing harder means moving probability onto the wrong token.",
     f"In {context_text}, does GRPO end with *less* true reward than SFT had?",
     ["yes, it loses reward there", "no, it still gains"], reveal_cost)

st.header("Where next")
st.markdown("Change the reward model or the task on **Setup**, watch a run train live on **GRPO** "
            "or **RLVR**, and compare group sizes per sample on **Group size sweep**.")
