"""pass@k: does RLVR sharpen pass@1 at the cost of pass@k?"""
import streamlit as st

from grpo_core import RLVRConfig, seed_configs
from ui import charts, controls, lab, navigation, store, views

AGGRESSIVE = {"passk_lr": 0.05, "passk_kl_coef": 0.0, "passk_group_size": 2}

SETTINGS = controls.PageSettings("Pass at k", (*controls.config_settings(RLVRConfig, "passk"),
                                               controls.seeds("passk", 8, controls.LAB_SEEDS_HELP)))
navigation.page(SETTINGS)
st.title("Pass at k: sharper, or better?")
st.markdown("pass@k is the probability that at least one of k sampled answers is correct. If a "
            "policy answers a prompt correctly with probability p, then pass@k = 1 − (1 − p)^k. RL "
            "with a verifiable reward raises pass@1, but it may do so by concentrating on answers "
            "the model already finds, losing the rare correct answers that large k would catch.")

with st.sidebar:
    st.header("RLVR settings")
    cfg = SETTINGS.config(RLVRConfig, "passk")
    n_seeds = SETTINGS.draw("passk_seeds")
    st.button("Try aggressive RLVR", on_click=lambda: st.session_state.update(AGGRESSIVE),
              help="Learning rate 0.05, no KL penalty, groups of 2: the policy commits before it has "
                   "seen every context's correct answer.")
    SETTINGS.reset_button()

up = store.stored_upstream()
results = store.train(up, controls.combine(seed_configs, cfg, n_seeds))
views.show_stopped(results)

table = lab.pass_at_k_long(up, results)
overall = table[table.context == "overall"].groupby(["policy", "k"])["pass"].mean()
entropy_sft = views.reference(up)["entropy"]
entropy_rl = sum(r.history.entropy.iloc[-1] for r in results) / len(results)
cols = st.columns(3)
for col, k in zip(cols, (1, 64)):
    col.metric(f"pass@{k}, SFT → RLVR", f"{overall['after RLVR', k]:.4f}",
               f"{overall['after RLVR', k] - overall['SFT', k]:+.4f} from {overall['SFT', k]:.4f}",
               help=f"Exact, mean over contexts (and over the {n_seeds} seeds after RLVR).")
cols[2].metric("entropy, SFT → RLVR", f"{entropy_rl:.3f}", f"{entropy_rl - entropy_sft:+.3f} from {entropy_sft:.3f}",
               delta_color="off", help="Exact policy entropy in nats, mean over contexts.")

gain1 = overall["after RLVR", 1] - overall["SFT", 1]
loss64 = overall["SFT", 64] - overall["after RLVR", 64]
if gain1 > 0 and loss64 > 0.005:
    st.warning(f"**Yes, here RL sharpened pass@1 at the cost of pass@k.** pass@1 rose by {gain1:.3f}, "
               f"but pass@64 fell by {loss64:.3f}: in some runs a context collapsed onto a wrong answer, "
               "which no number of samples then recovers.")
elif overall["SFT", 64] > 0.995 and overall["after RLVR", 64] > 0.995:
    st.success(f"**No, not on this problem.** pass@1 changed by {gain1:+.3f}, and pass@64 is about 1 "
               f"before ({overall['SFT', 64]:.4f}) and after ({overall['after RLVR', 64]:.4f}): every "
               "context's correct token was likely enough under SFT to be sampled and reinforced. "
               "Press *Try aggressive RLVR* in the sidebar to see the trade-off appear.")
else:
    st.info(f"pass@1 changed by {gain1:+.3f} and pass@64 by {-loss64:+.3f}.")

charts.show_grid([lab.pass_overall_chart(table, n_seeds), lab.pass_context_chart(table)])
st.subheader("Per context")
summary = lab.pass_table(table, up)
st.dataframe(summary, hide_index=True, column_config=views.number_formats(summary, digits=4))
st.caption("pass@k of a context after RLVR is the mean over seeds; the worst seed shows whether "
           "any run lost that context altogether.")
lab.exact_note(views.pass_at_k_note(overall['after RLVR', 64] - overall['SFT', 64]))
