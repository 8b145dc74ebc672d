"""Token vs sequence ratios: GRPO, GSPO and CISPO off-policy, and where their first steps coincide."""
import pandas as pd
import streamlit as st

from grpo_core import seed_configs
from grpo_core.sequence import SeqGRPOConfig, onpolicy_token_gradients
from ui import charts, controls, live, navigation, seq

METHODS = {"GRPO": dict(loss_type="grpo"),
           "GSPO": dict(loss_type="grpo", importance_sampling_level="sequence"),
           "CISPO": dict(loss_type="cispo")}
SETTINGS = controls.PageSettings("Token vs sequence ratios", (
    controls.select_slider("ratios_epochs", "epochs per batch", (1, 2, 4, 8), 4,
                           help="Optimizer passes over each sampled batch (TRL num_iterations): every "
                                "pass after the first is off-policy, so the importance ratios move."),
    controls.select_slider("ratios_lr", "learning rate", (2e-3, 5e-3, 1e-2, 2e-2, 5e-2), 1e-2, text=controls.g,
                           help="Adam learning rate: larger steps move the ratios further from 1."),
    controls.Setting("ratios_iterations", 100, 10, 1000, label="iterations", kind="number",
                     help="Training iterations of every run."),
    controls.seeds("ratios", default=3),
), adopted=tuple(seq.upstream_settings()))
navigation.page(SETTINGS)
st.title("Token vs sequence ratios")
st.markdown(
    "PPO-style losses weight each token by an importance ratio π/π_old. **GRPO** uses one ratio "
    "per token, clipped to [1 − ε, 1 + ε]. **GSPO** (Zheng et al., 2025) uses one ratio per "
    "response, the geometric mean of its token ratios, and clips whole responses. **CISPO** "
    "(MiniMax-M1, 2025) never drops a token: it caps the ratio as a stop-gradient weight on "
    "log π. The ratios only differ from 1 after the first optimizer step on a batch, so the "
    "runs below take several epochs per batch.")

with st.sidebar:
    st.header("Ratio settings")
    epochs = SETTINGS.draw("ratios_epochs")
    lr = SETTINGS.draw("ratios_lr")
    iterations = int(SETTINGS.draw("ratios_iterations"))
    n_seeds = SETTINGS.draw("ratios_seeds")
    SETTINGS.reset_button()

up_configs = seq.stored_upstream_configs()
configs = [c for kw in METHODS.values() for c in controls.combine(seed_configs, controls.make_config(
    SeqGRPOConfig, epochs=epochs, lr=lr, iterations=iterations, **kw), n_seeds)]
seq.work_caption(up_configs[0], configs)
up, results = seq.train(up_configs, configs, "ratios")
ref = seq.reference(up)
runs = {name: [r.history for r in results[i * n_seeds:(i + 1) * n_seeds]] for i, name in enumerate(METHODS)}

st.header(f"Training with {epochs} epoch{'s' if epochs > 1 else ''} per batch")
charts.show_grid([
    *seq.curve_charts(runs, ref, False, (("reward", "P(correct), exact", "reward"),
                                         ("entropy", "Entropy of the response distribution, exact", "nats"))),
    charts.band_chart(runs, "clip_frac_token", "Clipped tokens (CISPO: capped weights, either sign)", y_title="fraction"),
    charts.band_chart(runs, "clip_frac_seq", "Responses with a clipped token", y_title="fraction"),
    charts.band_chart(runs, "grad_cosine", "cos(batch gradient, exact gradient of the expected reward)",
                      y_title="cosine"),
    charts.band_chart(runs, "grad_norm", "Gradient norm (mean over the iteration's steps)", y_title="‖g‖"),
])
st.caption(seq.CLIP_NOTE)
summary = pd.DataFrame([{
    "method": name, "P(correct) final": pd.Series([h.reward.iloc[-1] for h in hs]).mean(),
    "entropy final": pd.Series([h.entropy.iloc[-1] for h in hs]).mean(),
    "clipped tokens": pd.concat(hs).clip_frac_token.mean(),
    "clipped responses": pd.concat(hs).clip_frac_seq.mean(),
    "cosine to exact gradient": pd.concat(hs).grad_cosine.mean(),
    "cosine std over iterations": pd.concat(hs).grad_cosine.std()} for name, hs in runs.items()])
st.dataframe(summary, hide_index=True, column_config={c: st.column_config.NumberColumn(format="%.4f")
                                                      for c in summary.columns if c != "method"})
most = summary.loc[summary["clipped tokens"].idxmax()]
best = summary.loc[summary["cosine to exact gradient"].idxmax()]
st.markdown(f"Over {iterations} iterations and {n_seeds} seeds, **{most.method}** clipped the most tokens "
            f"({most['clipped tokens']:.4f} of them) and **{best.method}**'s batch gradients pointed "
            f"closest to the exact gradient (mean cosine {best['cosine to exact gradient']:.4f}). "
            "The cosine's spread measures how noisy each step's direction is.")

st.header("The first step on a batch: which losses are the same")
st.markdown(
    "On the first optimizer step on a batch the policy is the one that sampled it, every ratio is "
    "1 and no clip is active. Then GSPO's gradient equals GRPO's exactly, and LUSPO's equals "
    "Dr. GRPO's times the constant L (the maximum length); CISPO's equals DAPO's. Below, one "
    "batch drawn from the SFT policy, the gradient of each loss with respect to every sampled "
    "token's log-probability (which fixes the gradient of any network's weights):")
pairs = {"GSPO vs GRPO": (dict(importance_sampling_level="sequence"), dict()),
         "LUSPO vs Dr. GRPO": (dict(loss_type="luspo", importance_sampling_level="sequence"),
                               dict(loss_type="dr_grpo")),
         "CISPO vs DAPO": (dict(loss_type="cispo"), dict(loss_type="dapo")),
         "Dr. GRPO vs GRPO": (dict(loss_type="dr_grpo"), dict())}
pair_configs = [SeqGRPOConfig(**kw) for a, b in pairs.values() for kw in (a, b)]
grads, mask = onpolicy_token_gradients(up, pair_configs)
rows = []
for i, name in enumerate(pairs):
    a, b = grads[2 * i][mask > 0], grads[2 * i + 1][mask > 0]
    used = b.abs() > 0
    ratio = a[used] / b[used]
    rows.append({"pair": name, "max |a − b|": float((a - b).abs().max()), "max |b|": float(b.abs().max()),
                 "min a / b": float(ratio.min()), "max a / b": float(ratio.max())})
table = pd.DataFrame(rows)
st.dataframe(table, hide_index=True, column_config={c: st.column_config.NumberColumn(format="%.6g")
                                                    for c in table.columns if c != "pair"})
same = lambda r: r["max |a − b|"] <= 1e-6 * r["max |b|"]
const = lambda r: r["max a / b"] - r["min a / b"] <= 1e-5 * abs(r["max a / b"])
verdicts = []
for r in rows:
    if same(r):
        verdicts.append(f"**{r['pair']}**: equal on every token (largest difference {r['max |a − b|']:.2g}).")
    elif const(r):
        verdicts.append(f"**{r['pair']}**: proportional on every token, factor {r['min a / b']:.4g}.")
    else:
        verdicts.append(f"**{r['pair']}**: not proportional: the ratio runs from {r['min a / b']:.3g} "
                        f"to {r['max a / b']:.3g} across tokens.")
st.markdown("\n".join(f"- {v}" for v in verdicts))
st.caption(f"L = {up.task.config.max_length}. Dr. GRPO vs GRPO is the contrast: GRPO's 1/|y| makes the "
           "factor depend on each response's length, so the two differ in direction, not just size.")

st.header("Share")
live.share_link(())
