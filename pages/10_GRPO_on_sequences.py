"""GRPO on sequences: GRPO on responses of several tokens, every knob, exact length curves over seeds."""
import streamlit as st

from grpo_core import seed_configs
from grpo_core.sequence import SeqGRPOConfig, sample_responses_text, top_responses
from grpo_core.reference import sequence as reference
from ui import charts, code, controls, lab, live, navigation, seq, views

SETTINGS = controls.PageSettings("GRPO on sequences", (*seq.run_settings("seq"), *controls.live_settings("seq"),
                                                         *seq.upstream_settings()))
navigation.page(SETTINGS)
st.title("GRPO on sequences")
st.markdown(
    "Here a response is a sequence: up to L tokens over a small alphabet, ended by an end token "
    "or cut off at L. The verifier checks one answer token (the first content token by default); "
    "the rest is free text. Every response of every context is enumerated, so the reward, the "
    "length, the length of right and of wrong answers, the truncation probability, the entropy "
    "and the KL below are exact sums over all responses, not samples. How the per-token losses "
    "are averaged over responses of different lengths is the loss type (TRL `loss_type`).")

with st.sidebar:
    st.header("GRPO on sequences settings")
    cfg = SETTINGS.config(SeqGRPOConfig, "seq")
    n_seeds = SETTINGS.draw("seq_seeds")
    show_runs = SETTINGS.draw("seq_show_runs")
    up_configs = seq.upstream_controls(SETTINGS)
    SETTINGS.reset_button()

configs = controls.combine(seed_configs, cfg, n_seeds)
seq.work_caption(up_configs[0], configs)
up, results = seq.run_view(SETTINGS, up_configs, configs, "seq", show_runs)
views.show_stopped(results)
ref = seq.reference(up)
task = up.task
st.caption(f"Task: {task.n_contexts} contexts, alphabet {task.config.alphabet_size} letters, "
           f"L = {task.config.max_length}, {task.responses.n:,} responses per context; "
           f"SFT starts at P(correct) {ref['reward']:.3f} and E|y| {ref['length']:.2f}.")
seq.summary(results, ref)

runs = {seq.run_label(configs): [r.history for r in results]}
charts.show_grid(seq.curve_charts(runs, ref, show_runs, seq.curve_columns(configs)))
with st.expander("Batch diagnostics: clipping, gradient direction, zero-signal groups"):
    charts.show_grid(seq.curve_charts(runs, ref, show_runs, seq.BATCH_CURVES))
    st.caption(seq.CLIP_NOTE)

st.header("What the policy writes")
seeds = [r.config.seed for r in results]
seed = st.selectbox("seed to inspect", seeds, key="seq_view_seed",
                    help="Which run's final policy to show as text.")
run = results[seeds.index(seed)]
st.markdown("Letters are content tokens, `.` the end token, `…` a response cut off at L. "
            "The answer is the " + ("first" if task.config.answer_rule == "first" else "last") +
            " letter; each context's answer letter is in the per-context table.")
left, right = st.columns(2)
with left:
    st.subheader("Most likely responses")
    top = top_responses(run.final_logp, task, k=3).merge(
        top_responses(up.sft.seq_logp, task, k=3)[["context", "rank", "response", "prob"]],
        on=["context", "rank"], suffixes=("", "_sft"))
    st.dataframe(top.rename(columns={"response_sft": "SFT response", "prob_sft": "SFT prob"}),
                 hide_index=True, column_config=views.number_formats(top))
with right:
    st.subheader("Sampled responses")
    drawn = sample_responses_text(run.final_logp, task, 4, seed=seed)
    st.dataframe(drawn, hide_index=True)
per_context = run.per_context.assign(answer=lambda d: d.answer.map(lambda a: "abcdefgh"[int(a)]))
st.dataframe(per_context[["context", "answer", "reward", "length", "length_correct", "length_wrong",
                          "p_truncated", "entropy", "kl_ref"]], hide_index=True,
             column_config=views.number_formats(per_context))
st.caption(f"Per context, exact, under seed {seed}'s final policy.")

code.code_section(reference, cfg)

st.header("Share")
live.share_link(())
lab.trl_export(cfg, up_configs[0])
