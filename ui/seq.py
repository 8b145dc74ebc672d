"""Streamlit glue of the sequence lab pages (GRPO on sequences, Length bias, Token vs sequence ratios, Entropy collapse):
their settings, the cached sequence upstream (task, SFT, reward model), training through the one
result store with a Stop button, and their charts and tables.

The algorithms live in grpo_core.sequence; this module only declares widgets, caches, trains
through ui.store and draws.

Shared between sessions: the st.cache_data caches of :func:`upstream` and :func:`reference`
(8 entries each; Streamlit hands out copies); results live in ui.store.STORE (bounded, locked).
Per session: the page's one ui.store.LiveRun (of a SeqTrainer) while it trains or is watched
(ui.live.watch_section), through ui.store.hold; freed on Reset and when the page is left.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import pandas as pd
import streamlit as st

from grpo_core import MAX_WORK_PER_REQUEST, config_fields
from grpo_core.config import ConfigError
from grpo_core import RunResult
from grpo_core.sequence import (METRICS, SeqGRPOConfig, SeqRewardModelConfig,
                                SeqSFTConfig, SeqTaskConfig, SeqTrainer, SeqUpstream,
                                build_seq_upstream, sequence_metrics)
from grpo_core.sequence.config import check_seq_budget
from ui import charts, controls, guard, live, store
from ui.controls import Setting

# The knobs every sequence run shows; the rest of SeqGRPOConfig goes in the variants expander.
SEQ_CORE = ("iterations", "prompts", "group_size", "lr", "kl_coef", "clip_eps", "epochs", "seed",
            "loss_type", "importance_sampling_level")
UPSTREAM = ((SeqTaskConfig, "seqtask", "task"), (SeqSFTConfig, "seqsft", "SFT"),
            (SeqRewardModelConfig, "seqrm", "reward model"))
SEQ_COLOR = charts.PALETTE[0]


# ---------------------------------------------------------------- settings

def config_settings(cls, prefix: str, core: Sequence[str] | None = None) -> list[Setting]:
    """ui.controls.config_settings for a sequence config, booleans as checkboxes; with core, the
    fields not in it go in the variants group (the expander)."""
    bools = [f for f in config_fields(cls) if isinstance(f.default, bool)]
    out = controls.config_settings(cls, prefix, skip=[f.name for f in bools])
    out += [Setting(f"{prefix}_{f.name}", f.default, label=f.name.replace("_", " "), kind="checkbox",
                    help=f.metadata["help"], field=f.name) for f in bools]
    if core is not None:
        out = [dataclasses.replace(s, group="" if s.field in core else "variants") for s in out]
    return out


def upstream_settings() -> list[Setting]:
    """Task, SFT and reward-model settings of the sequence pages (shared by all of them)."""
    return [s for cls, prefix, _ in UPSTREAM for s in config_settings(cls, prefix)]


def run_settings(prefix: str = "seq") -> list[Setting]:
    return [*config_settings(SeqGRPOConfig, prefix, SEQ_CORE), controls.seeds(prefix),
            controls.toggle(f"{prefix}_show_runs", "show individual runs", kind="checkbox",
                            help="Draw every seed's curve faintly behind the mean.")]


def upstream_controls(page: controls.PageSettings) -> tuple:
    """The task / SFT / reward-model widgets in a sidebar expander; returns their three configs."""
    with st.expander("Task, SFT and reward model"):
        out = []
        for cls, prefix, name in UPSTREAM:
            st.markdown(f"**{name}**")
            values = {s.field: page.draw(s.key) for s in page.settings
                      if s.field and s.key == f"{prefix}_{s.field}"}
            out.append(controls.make_config(cls, **values))
    return tuple(out)


def stored_upstream_configs() -> tuple:
    """The sequence task, SFT and reward-model configs last chosen in this session (or defaults)."""
    return tuple(controls.stored_config(cls, prefix) for cls, prefix, _ in UPSTREAM)


# ---------------------------------------------------------------- upstream and reference

@st.cache_data(max_entries=8, show_spinner="Training the sequence SFT policy…")
def _upstream(task_cfg: SeqTaskConfig, sft_cfg: SeqSFTConfig, rm_cfg: SeqRewardModelConfig | None):
    return build_seq_upstream(task_cfg, sft_cfg, rm_cfg)


def upstream(up_configs: tuple, needs_rm: bool) -> SeqUpstream:
    """The task and SFT policy (and the reward model when a run trains on it), cached."""
    task_cfg, sft_cfg, rm_cfg = up_configs
    try:
        return _upstream(task_cfg, sft_cfg, rm_cfg if needs_rm else None)
    except ConfigError as err:
        controls.stop_with_error(err)


def reference(up: SeqUpstream) -> dict[str, float]:
    """Exact METRICS of the SFT policy, where every run starts."""
    rm = up.rm.scores if up.rm is not None else None
    values = sequence_metrics(up.sft.seq_logp, up.task, up.sft.seq_logp, rm)
    return {k: float(v) for k, v in values.items()}


# ---------------------------------------------------------------- caps

HISTORY_BYTES_PER_ITERATION = 8 * (2 + len(METRICS) + 8)      # iteration, samples, exact, batch columns
RUN_OVERHEAD_BYTES = 4096


def result_bytes(task_cfg: SeqTaskConfig, configs: Sequence[SeqGRPOConfig]) -> int:
    """An upper estimate of the results' size: histories, final policy over responses, weights."""
    per_run = 4 * task_cfg.n_contexts * task_cfg.responses + 64 * 1024 + RUN_OVERHEAD_BYTES
    return sum(HISTORY_BYTES_PER_ITERATION * c.iterations + per_run for c in configs)


def request_work(task_cfg: SeqTaskConfig, configs: Sequence[SeqGRPOConfig]) -> int:
    """What check_seq_budget bounds: iterations x epochs x samples x (1 + redraws) x max_length."""
    return sum(c.iterations * c.epochs * c.samples_per_iteration * (1 + c.dynamic_sampling)
               * task_cfg.max_length for c in configs)


def check_request(task_cfg: SeqTaskConfig, configs: Sequence[SeqGRPOConfig]) -> None:
    """Stop the page with a one-line error if the request is over the work, table or size caps."""
    try:
        check_seq_budget(configs, task_cfg)
        size = result_bytes(task_cfg, configs)
        if size > guard.MAX_RESULT_BYTES:
            raise ConfigError("iterations", f"the results of these {len(configs)} runs would take about "
                              f"{size / 2**20:,.0f} MiB, over the limit of "
                              f"{guard.MAX_RESULT_BYTES / 2**20:,.0f} MiB; lower the iterations or seeds")
    except ConfigError as err:
        controls.stop_with_error(err)


def work_caption(task_cfg: SeqTaskConfig, configs: Sequence[SeqGRPOConfig]) -> None:
    st.caption(f"This request: {request_work(task_cfg, configs):,} of {MAX_WORK_PER_REQUEST:,} work "
               "units (iterations × epochs × prompts × group size × (1 + redraws) × max_length, "
               "summed over runs).")


# ---------------------------------------------------------------- training through the store

def store_key(up_configs: tuple, needs_rm: bool, configs: Sequence[SeqGRPOConfig]) -> tuple:
    task_cfg, sft_cfg, rm_cfg = up_configs
    return store.STORE.key(("sequence", task_cfg, sft_cfg, rm_cfg if needs_rm else None), configs)


def _request(up_configs: tuple, configs: tuple) -> tuple[SeqUpstream, tuple]:
    """(upstream, store key) of a request, once it is checked against the caps."""
    needs_rm = any(c.reward == "reward_model" for c in configs)
    check_request(up_configs[0], configs)
    return upstream(up_configs, needs_rm), store_key(up_configs, needs_rm, configs)


def train(up_configs: tuple, configs: Sequence[SeqGRPOConfig], name: str | None = None
          ) -> tuple[SeqUpstream, list[RunResult]]:
    """(upstream, the runs of configs) from ui.store.STORE, or trained here with a progress bar,
    once however many sessions ask at the same time. With a name, a Stop button ends training
    where it is (the finished iterations are shown, not stored), as ui.store.train does."""
    configs = tuple(configs)
    up, key = _request(up_configs, configs)
    return up, store.train(up, configs, name, key=key, make_trainer=lambda: SeqTrainer(up, configs))


def run_view(page: controls.PageSettings, up_configs: tuple, configs: Sequence[SeqGRPOConfig], key: str,
             show_runs: bool = False) -> tuple[SeqUpstream, list[RunResult]]:
    """train() with the "Watch it train" toggle of the one-token run pages (ui.live.watch_or_train):
    when on, the live view trains configs a piece at a time and redraws curve_charts over the
    partial histories; the finished runs follow once the live run has finished (it is stored
    under the same key, so they are the very runs train() gives)."""
    configs = tuple(configs)
    up, run_key = _request(up_configs, configs)
    ref, columns, label = reference(up), curve_columns(configs), run_label(configs, live=True)

    def frame(run: store.LiveRun | None) -> None:
        if run is None:
            return
        results = run.results()
        charts.show_grid(curve_charts({label: [r.history for r in results]}, ref, show_runs,
                                      columns, colors=[SEQ_COLOR], axes=live.live_axes(run, results)))

    results = live.watch_or_train(page, up, configs, key, frame, run_key=run_key,
                                  make_trainer=lambda: SeqTrainer(up, configs))
    return up, results


# ---------------------------------------------------------------- views

CURVES = (("reward", "Expected reward (P(correct)), exact", "reward"),
          ("length", "Expected length E|y|, exact", "tokens"),
          ("length_correct", "E[length | correct], exact", "tokens"),
          ("length_wrong", "E[length | wrong], exact", "tokens"),
          ("p_truncated", "P(truncated at L), exact", "probability"),
          ("entropy", "Entropy of the response distribution, exact", "nats per response"),
          ("kl_ref", "KL(policy ‖ SFT) over whole responses, exact", "nats per response"))
CLIP_NOTE = ("A token counts as clipped when the clip stopped its ratio: above 1 + ε with A > 0 or below 1 − ε "
             "with A < 0 (TRL's clip_ratio/region_mean). With loss_type cispo, when the cap bounded its "
             "weight, whatever the advantage's sign; TRL's cispo_clip_ratio counts A > 0 only.")
BATCH_CURVES = (("clip_frac_token", "Clipped tokens (fraction of the batch's tokens)", "fraction"),
                ("clip_frac_seq", "Responses with a clipped token", "fraction"),
                ("grad_cosine", "cos(batch gradient, exact gradient)", "cosine"),
                ("zero_std_frac", "Groups with zero reward spread", "fraction"),
                ("grad_norm", "Gradient norm", "‖g‖"),
                ("batch_length", "Mean sampled length in the batch", "tokens"))


def curve_columns(configs: Sequence[SeqGRPOConfig]) -> list[tuple[str, str, str]]:
    """The exact curves of these runs: CURVES, with the reward model's score when one trains on it."""
    columns = list(CURVES)
    if any(c.reward == "reward_model" for c in configs):
        columns.insert(1, ("rm_reward", "Expected reward-model score, exact", "RM score"))
    return columns


def run_label(configs: Sequence[SeqGRPOConfig], live: bool = False) -> str:
    """The legend's name of a page's runs (the seeds of one config): loss type, ratios, seeds."""
    cfg = configs[0]
    return (f"{cfg.loss_type}, {cfg.importance_sampling_level} ratios{', live' if live else ''} "
            f"({len(configs)} seeds)")


def curve_charts(groups: dict[str, Sequence[pd.DataFrame]], ref: dict[str, float], show_runs: bool,
                 columns: Sequence[tuple[str, str, str]] = CURVES, colors=None,
                 axes: Callable[..., dict] | None = None) -> list:
    """One band chart per (column, title, y title), with the SFT start as a dashed line.
    axes(column, extra values) gives a live chart's fixed x and held y range (ui.live.live_axes)."""
    out = []
    for column, title, y_title in columns:
        rules = {"SFT start": ref[column]} if column in ref and ref[column] == ref[column] else None
        fixed = axes(column, list(rules.values()) if rules else []) if axes is not None else {}
        out.append(charts.band_chart(groups, column, title, y_title=y_title, rules=rules,
                                     show_runs=show_runs, colors=colors, **fixed))
    return out


def summary(results: Sequence[RunResult], ref: dict[str, float]) -> None:
    """Headline numbers: final reward, length, length | wrong and KL (mean over seeds) vs SFT."""
    final = pd.DataFrame([r.final for r in results])
    cols = st.columns(4)
    for col, (key, label) in zip(cols, (("reward", "final P(correct)"), ("length", "final E|y|"),
                                        ("length_wrong", "final E[|y| | wrong]"), ("kl_ref", "final KL to SFT"))):
        value = float(final[key].mean())
        col.metric(f"{label} (mean of {len(results)})", f"{value:.3f}", f"{value - ref[key]:+.3f} vs SFT",
                   delta_color="off" if key != "reward" else "normal")
