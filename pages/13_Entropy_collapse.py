"""Entropy collapse and clip-higher: a task whose correct answer starts rare, symmetric clip vs DAPO's."""
import numpy as np
import pandas as pd
import streamlit as st

from grpo_core import seed_configs
from grpo_core.sequence import SeqGRPOConfig, first_reaching
from ui import charts, controls, live, navigation, seq

SETTINGS = controls.PageSettings("Entropy collapse", (
    controls.Setting("entropy_clip_high", 0.28, 0.0, 1.0, label="clip-higher ε_high", kind="slider",
                     help="DAPO's upper clip range (the symmetric run uses ε = 0.2 on both sides)."),
    controls.Setting("entropy_difficulty", 1.0, 0.0, 1.0, label="task difficulty", kind="slider",
                     help="How often the SFT demonstrations are wrong: at 1 the correct answer starts rarest."),
    controls.select_slider("entropy_epochs", "epochs per batch", (1, 2, 4, 8), 4,
                           help="Passes over each batch; clipping acts only once the ratios move (epoch 2 on)."),
    controls.select_slider("entropy_lr", "learning rate", (2e-3, 5e-3, 1e-2, 2e-2), 5e-3, text=controls.g,
                           help="Adam learning rate of every run."),
    controls.Setting("entropy_iterations", 80, 10, 1000, label="iterations", kind="number",
                     help="Training iterations of every run."),
    controls.Setting("entropy_threshold", 0.9, 0.3, 0.99, label="discovered at P(correct) ≥", kind="slider",
                     help="A run has discovered the answer once its exact P(correct) reaches this."),
    controls.seeds("entropy", default=3),
), adopted=tuple(seq.upstream_settings()))
navigation.page(SETTINGS)
st.title("Entropy collapse and clip-higher")
st.markdown(
    "DAPO's argument (Yu et al., 2025): with a symmetric clip [1 − ε, 1 + ε], a token the policy rarely writes can grow by at most a "
    "factor 1 + ε per batch, while likely tokens are only held back from falling: the policy "
    "sharpens onto what it already does and its entropy collapses before it finds rarer answers. "
    "Clip-higher raises the upper bound only (ε_high > ε). Here the SFT "
    "demonstrations are mostly wrong, so the correct answer starts rare, and each run is timed "
    "to the iteration at which it finds it.")

with st.sidebar:
    st.header("Entropy settings")
    clip_high = SETTINGS.draw("entropy_clip_high")
    difficulty = SETTINGS.draw("entropy_difficulty")
    epochs = SETTINGS.draw("entropy_epochs")
    lr = SETTINGS.draw("entropy_lr")
    iterations = int(SETTINGS.draw("entropy_iterations"))
    threshold = SETTINGS.draw("entropy_threshold")
    n_seeds = SETTINGS.draw("entropy_seeds")
    SETTINGS.reset_button()

task_cfg, sft_cfg, rm_cfg = seq.stored_upstream_configs()
up_configs = (controls.combine(task_cfg.replace, difficulty=difficulty), sft_cfg, rm_cfg)
variants = {"symmetric clip (ε = 0.2)": 0.0, f"clip-higher (ε_high = {clip_high:g})": clip_high}
configs = [c for h in variants.values() for c in controls.combine(seed_configs, controls.make_config(
    SeqGRPOConfig, epochs=epochs, lr=lr, iterations=iterations, clip_eps_high=h), n_seeds)]
seq.work_caption(up_configs[0], configs)
up, results = seq.train(up_configs, configs, "entropy")
ref = seq.reference(up)
st.caption(f"Task difficulty {difficulty:g}: the SFT policy starts at P(correct) {ref['reward']:.3f} "
           f"and entropy {ref['entropy']:.3f} nats per response.")
runs = {name: [r.history for r in results[i * n_seeds:(i + 1) * n_seeds]] for i, name in enumerate(variants)}
charts.show_grid([
    *seq.curve_charts(runs, ref, False, (("reward", "P(correct), exact", "reward"),
                                         ("entropy", "Entropy of the response distribution, exact", "nats"))),
    charts.band_chart(runs, "clip_frac_token", "Clipped tokens", y_title="fraction"),
    charts.band_chart(runs, "kl_ref", "KL(policy ‖ SFT), exact", y_title="nats"),
])
rows = []
for name, hs in runs.items():
    times = [first_reaching(h, "reward", threshold) for h in hs]
    rows.append({"clip": name, "seeds that discovered": int(np.isfinite(times).sum()),
                 "mean iterations to discovery": float(np.nanmean(times)) if np.isfinite(times).any() else float("nan"),
                 "final entropy": float(np.mean([h.entropy.iloc[-1] for h in hs])),
                 "lowest entropy": float(np.mean([h.entropy.min() for h in hs])),
                 "final P(correct)": float(np.mean([h.reward.iloc[-1] for h in hs]))})
table = pd.DataFrame(rows)
st.dataframe(table, hide_index=True, column_config={c: st.column_config.NumberColumn(format="%.3f")
                                                    for c in table.columns if table[c].dtype.kind == "f"})
sym, hi = rows
when = lambda r: (f"{r['seeds that discovered']} of {n_seeds} seeds reached P(correct) ≥ {threshold:g}"
                  + (f", after {r['mean iterations to discovery']:.1f} iterations on average"
                     if r["seeds that discovered"] else ""))
faster = (hi["seeds that discovered"], -np.nan_to_num(hi["mean iterations to discovery"], nan=np.inf)) > \
         (sym["seeds that discovered"], -np.nan_to_num(sym["mean iterations to discovery"], nan=np.inf))
more_entropy = hi["final entropy"] > sym["final entropy"]
st.markdown("\n".join([
    f"- Symmetric clip: {when(sym)}; clip-higher: {when(hi)}.",
    f"- Clip-higher discovered the answer sooner: **{'yes' if faster else 'no'}** on this task.",
    f"- Clip-higher kept more entropy: **{'yes' if more_entropy else 'no'}** (final "
    f"{hi['final entropy']:.3f} against {sym['final entropy']:.3f} nats per response, from "
    f"{ref['entropy']:.3f} at SFT).",
]))
st.caption("Entropy here is over whole responses, so it includes the free text after the answer; "
           "with one epoch per batch every ratio is 1 and the two clips train identically.")

st.header("Share")
live.share_link(())
