"""Training you can watch, stop, share, pin and save: the run pages' glue beyond ui.store.

- watch_or_train(): any engine's runs with the "Watch it train" toggle, then the finished runs,
  which come from ui.store.train (a Stop button ends them where they are). run_view() is the
  one-token run pages' (GRPO, RLVR); ui.seq.run_view the sequence engine's.
- watch_section(): the live view (Play, Pause, Step, Reset) in an st.fragment that re-runs a few
  times a second while playing, each time training one more piece of a ui.store.LiveRun without
  re-running the page. It knows an engine only by its trainer factory, store key and a frame
  function that draws the live charts (token_frame for one-token runs; live_axes keeps their axes
  steady). A finished live run goes into the store, so the static view shows it at once.
- share_link(), downloads, configuration upload: one function each; pins are ui.pins.

Shared between sessions: nothing; per user everything lives in st.session_state (the page's one
LiveRun through ui.store.hold).
"""
from __future__ import annotations

from typing import Callable, Sequence
from urllib.parse import urlencode

import numpy as np
import pandas as pd
import streamlit as st

from grpo_core import ConfigError, GRPOConfig, RunResult, Upstream, config_fields
from grpo_core.experiment import MAX_EXPERIMENT_BYTES, Experiment, experiment_from_json
from ui import charts, controls, guard, lab, pins, store, views
from ui.controls import PageSettings, TICK_SECONDS

UPLOAD_LIMIT = f"{MAX_EXPERIMENT_BYTES // 1024} KiB"     # a saved configuration is a few hundred bytes
KINDS = pins.KINDS


def run_view(page: PageSettings, up: Upstream, configs: Sequence[GRPOConfig], key: str, name: str, color: str,
             second: tuple[str, str, str]) -> list[RunResult]:
    """A one-token run page's training (GRPO, RLVR): the "Watch it train" toggle (live view) and
    the finished runs. second = (history column, chart title, y title) of the live chart beside
    the true reward."""
    configs = tuple(configs)
    guard.work_caption(configs)
    guard.check_request(up.configs, configs)
    return watch_or_train(page, up, configs, key, token_frame(up, configs, name, color, second))


def watch_or_train(page: PageSettings, up, configs: Sequence, key: str, frame: Callable, *,
                   run_key=None, make_trainer: Callable[[], object] | None = None) -> list:
    """Any engine's runs of configs with the "Watch it train" toggle: when on, the live view
    (watch_section), and the page stops there until the live run has finished and is stored;
    then (or with the toggle off) the finished runs from ui.store.train.

    The engine is given as in ui.store.train: its store key and trainer factory (a sequence run's,
    checked by its caller), or neither for one-token GRPO runs. frame(run) draws the live charts.
    """
    configs = tuple(configs)
    shown_key = store.STORE.key(up.configs, configs) if run_key is None else run_key
    if page.draw(f"{key}_watch"):
        st.header("Watch it train")
        watch_section(page, up, configs, key, frame, run_key=shown_key, make_trainer=make_trainer)
        if shown_key not in store.STORE:
            st.caption("Every diagnostic of these runs appears here when the live run finishes.")
            st.stop()
        st.header("The finished runs")
    return store.train(up, configs, key, key=run_key, make_trainer=make_trainer)


def keep_and_share(key: str, cfg: GRPOConfig, n_seeds: int, up: Upstream, results: Sequence[RunResult]) -> None:
    """A run page's closing sections: pinned runs, share/save/load, and the TRL equivalent."""
    st.header("Pinned runs")
    pins.pin_button(key, cfg, n_seeds, up, results)
    pins.pins_view(key)
    save_and_load(key, cfg, n_seeds, up, results)
    lab.trl_export(cfg)


# ---------------------------------------------------------------- watch it train

def watch_section(page: PageSettings, up, configs: Sequence, key: str, frame: Callable, *,
                  run_key=None, make_trainer: Callable[[], object] | None = None) -> None:
    """Play / Pause / Step / Reset a live run of configs, its charts redrawn as it trains.

    The engine: make_trainer() makes its resumable trainer (grpo_core.trainer.ResumableTrainer:
    GRPOTrainer when None, SeqTrainer for sequences) and run_key is where its results are stored
    (ui.store.LiveRun's defaults when None). frame(run) draws the charts of the held
    store.LiveRun, or of nothing trained yet (None). The LiveRun is made on the first Play or
    Step and is the page's one held run; Reset frees it, and so does leaving the page.
    """
    configs = tuple(configs)
    run_name, playing_key = f"{key}_live", f"{key}_playing"
    run_key = store.STORE.key(up.configs, configs) if run_key is None else run_key
    if store.held_run(run_name, run_key) is None:
        st.session_state[playing_key] = False
    chunk = page.draw(f"{key}_chunk")
    ticking = bool(st.session_state.get(playing_key))

    def live() -> store.LiveRun:
        """The held live run of these settings, made when first needed."""
        return store.held_run(run_name, run_key) or store.hold(run_name, store.LiveRun(
            up, configs, key=run_key, trainer=make_trainer() if make_trainer is not None else None))

    def play():
        st.session_state[playing_key] = not st.session_state.get(playing_key, False)
        if st.session_state[playing_key]:
            live()          # held from now on: a rerun that finds no live run of these settings stops playing

    def step():
        st.session_state[playing_key] = False
        live().advance(chunk)

    def reset():
        store.release(run_name)
        st.session_state[playing_key] = False

    @st.fragment(run_every=TICK_SECONDS if ticking else None)
    def panel():
        run = store.held_run(run_name, run_key)
        playing = bool(st.session_state.get(playing_key)) and not (run is not None and run.finished)
        if playing and playing == ticking:
            run = live()
            run.advance(chunk)
        done = run.done if run is not None else 0
        total = run.total if run is not None else max(c.iterations for c in configs)
        finished = run is not None and run.finished
        cols = st.columns([1, 1, 1, 5])
        cols[0].button("Pause" if playing else "Play", key=f"{key}_play", on_click=play,
                       icon=":material/pause:" if playing else ":material/play_arrow:",
                       disabled=finished, type="primary", width="stretch")
        cols[1].button("Step", key=f"{key}_step", on_click=step, disabled=finished,
                       help=f"Train {chunk} iterations, then pause.", width="stretch")
        cols[2].button("Reset", key=f"{key}_reset", on_click=reset, width="stretch",
                       help="Throw the live run away and start again from the SFT policy.")
        state = "finished" if finished else "playing" if playing else "paused" if done else "ready"
        cols[3].markdown(f"Live iteration **{done}** of {total} · {state}")
        st.progress(done / total)
        if not done:
            st.info("Press Play (or Step) to train from the SFT policy and watch it learn.")
        frame(run if done else None)
        stored_now = False
        if finished and not run.stopped and run_key not in store.STORE:    # (again, if it was evicted)
            stored_now = store.STORE.put(run_key, run.results())
        if playing != ticking or stored_now:
            st.session_state[playing_key] = playing
            # Start or stop the timer; a finished run (also one Step finished) shows the full view.
            st.rerun(scope="app")

    panel()


def live_axes(run: store.LiveRun, results: Sequence) -> Callable[..., dict]:
    """axes(column, extra=()) -> band_chart's x_max and y_range for a live chart of column: the
    whole run on x from the first frame; on y the range held so far (kept in the run), widened
    only when the curve (or an extra value, e.g. a reference line) leaves it (charts.grow_range)."""
    def axes(column: str, extra: Sequence[float] = ()) -> dict:
        values = [*(v for r in results for v in r.history[column].to_numpy()), *extra]
        run.y_ranges[column] = charts.grow_range(run.y_ranges.get(column), values)
        return dict(x_max=run.total, y_range=run.y_ranges[column])
    return axes


def token_frame(up: Upstream, configs: Sequence[GRPOConfig], name: str, color: str,
                second: tuple[str, str, str]) -> Callable:
    """The one-token live charts: true reward, second[0], KL and entropy over seeds, then the
    first seed's policy per context (the SFT policy before anything is trained)."""
    def frame(run: store.LiveRun | None) -> None:
        if run is not None:
            results = run.results()
            runs = {f"{name}, live ({len(results)} seeds)": [r.history for r in results]}
            rules = views.reward_rules(up)
            axes = live_axes(run, results)
            charts.show_grid([
                charts.band_chart(runs, "true_reward", "Expected true reward, exact", y_title="true reward",
                                  rules=rules, colors=[color], **axes("true_reward", rules.values())),
                charts.band_chart(runs, second[0], second[1], y_title=second[2], colors=[color],
                                  **axes(second[0])),
                charts.band_chart(runs, "kl_ref", "KL(policy ‖ SFT reference), exact", y_title="KL (nats)",
                                  colors=[color], **axes("kl_ref", [0.0])),
                charts.band_chart(runs, "entropy", "Policy entropy, exact", y_title="entropy (nats)",
                                  colors=[color], **axes("entropy"))])
            policy = results[0].final_logp.exp().numpy()
        else:
            policy = up.sft.logp.exp().numpy()
        charts.show(charts.context_bars(
            {f"{name} policy now": policy, "SFT reference": up.sft.logp.exp().numpy(),
             "true preference": up.problem.true_reward.numpy()}, up.problem.correct_token.numpy(),
            f"Policy of seed {configs[0].seed} after {run.done if run is not None else 0} iterations, per context",
            "★ marks each context's correct (best) token", colors=[color, charts.SFT_COLOR, charts.TRUE_COLOR]))
    return frame


# ---------------------------------------------------------------- sharing, saving, loading

SETTINGS = {**{prefix: cls for cls, prefix, _ in controls.UPSTREAM}, **controls.RUN_KINDS}
UPSTREAM_PREFIXES = ("problem", "sft", "rm")


def adopt_params(prefixes: Sequence[str] = UPSTREAM_PREFIXES) -> None:
    """Take settings of other pages (e.g. Setup's problem_*, sft_*, rm_*) from a shared link's URL.

    Their widgets live on other pages, so on this page nothing else reads them from the URL. The
    URL has already been checked (and corrected) by ui.navigation.page(); the values are read with
    the same parser. A group whose values do not make a valid config is ignored (its defaults stay).
    """
    for prefix in prefixes:
        cls = SETTINGS[prefix]
        settings = (controls.shared_run_settings(prefix) if prefix in KINDS
                    else controls.config_settings(cls, prefix))
        given = {s.key: s.from_url(st.query_params[s.key])
                 for s in settings if s.key in st.query_params}
        given = {k: v for k, v in given.items() if v is not None}
        values = {k[len(prefix) + 1:]: v for k, v in given.items() if k != f"{prefix}_seeds"}
        try:
            cls(**{**controls.field_defaults(cls), **values})
        except ConfigError:
            continue
        for key, value in given.items():
            st.session_state.setdefault(key, value)


def run_values(prefix: str, cfg: GRPOConfig, n_seeds: int | None = None) -> dict:
    """{widget key: value} of a run config (and its number of seeds) under prefix, for share_url."""
    values = {f"{prefix}_{k}": v for k, v in cfg.to_dict().items()}
    if n_seeds is not None:
        values[f"{prefix}_seeds"] = n_seeds
    return values


def upstream_values(up: Upstream) -> dict:
    """{widget key: value} of the task, SFT and reward-model configs the results were trained on."""
    return {k: v for prefix, c in zip(UPSTREAM_PREFIXES, up.configs) for k, v in run_values(prefix, c).items()}


def share_url(prefixes: Sequence[str] = UPSTREAM_PREFIXES, values: dict | None = None) -> str:
    """The app's URL for this page and the settings its results were computed from.

    Built from values ({widget key: value}: the configs the page trained on) and, for the page's
    other settings, from this run's widget values; never from the browser's URL, which lags the
    widgets when they change quickly (each change rewrites it a rerun late). Every setting the page
    declares, and the other pages' settings it depends on (prefixes), appear where they differ
    from their defaults, written as the URL guard reads them.
    """
    values = values or {}
    page = st.session_state.get("page_settings")
    declared = [*page.settings, *page.adopted] if page is not None else []
    for prefix in prefixes:
        declared += (controls.shared_run_settings(prefix) if prefix in KINDS
                     else controls.config_settings(SETTINGS[prefix], prefix))
    params: dict = {}
    for s in {s.key: s for s in declared}.values():
        value = values[s.key] if s.key in values else st.session_state.get(s.key, s.default)
        text = s.to_url(value)
        if text is not None:
            params[s.key] = text
    if st.session_state.get("present"):
        params["present"] = "1"
    base = (st.context.url or "").split("?")[0]
    return base + ("?" + urlencode(params, doseq=True) if params else "")


def share_link(prefixes: Sequence[str] = UPSTREAM_PREFIXES, values: dict | None = None) -> None:
    """'Copy link to this experiment': the full URL in a code box (its copy button copies it)."""
    st.markdown(":material/link: **Copy link to this experiment** (the copy button is at the right "
                "of the box)")
    st.code(share_url(prefixes, values), language=None, wrap_lines=True)


def history_csv(results: Sequence[RunResult]) -> str:
    """Every seed's history, one row per (seed, iteration), seed first."""
    table = pd.concat([r.history.assign(seed=r.config.seed) for r in results], ignore_index=True)
    return table[["seed", *[c for c in table.columns if c != "seed"]]].to_csv(index=False)


def experiment(kind: str, cfg: GRPOConfig, n_seeds: int, up: Upstream) -> Experiment:
    problem, sft, rm = up.configs
    return Experiment(kind, n_seeds, problem, sft, rm, cfg)


def _snap(cls, name: str, value):
    """A loaded value as its widget can show it: log sliders only offer their 1-2-5 grid."""
    f = {f.name: f for f in config_fields(cls)}[name]
    if f.metadata.get("log"):
        grid = controls.log_grid(f.metadata["lo"], f.metadata["hi"], f.default)
        return min(grid, key=lambda g: abs(np.log(g) - np.log(value)))
    return value


def _apply_upload(key: str) -> None:
    """on_change of the uploader: validate the file, then set every widget it names."""
    upload = st.session_state.get(f"{key}_upload")
    st.session_state.pop(f"{key}_upload_message", None)
    if upload is None:
        return
    data = upload.getvalue()
    if len(data) > MAX_EXPERIMENT_BYTES:
        st.session_state[f"{key}_upload_message"] = (
            "error", f"Could not load {upload.name}: it is {len(data):,} bytes, over the limit of "
                     f"{UPLOAD_LIMIT} ({MAX_EXPERIMENT_BYTES:,} bytes).")
        return
    try:
        exp = experiment_from_json(data)
    except ConfigError as err:
        st.session_state[f"{key}_upload_message"] = ("error", f"Could not load {upload.name}: {err}")
        return
    snapped = []
    for prefix, part in (("problem", exp.problem), ("sft", exp.sft), ("rm", exp.reward_model),
                         (exp.kind, exp.run)):
        for name, value in part.to_dict().items():
            if name == "reward":
                continue
            shown = _snap(type(part), name, value)
            if shown != value:
                snapped.append(f"{controls.field_label(type(part), name)} {value:g} → {shown:g}")
            st.session_state[f"{prefix}_{name}"] = shown
    st.session_state[f"{exp.kind}_seeds"] = exp.seeds
    text = f"Loaded {upload.name}: {KINDS[exp.kind][1]}, {exp.seeds} seeds."
    if snapped:
        text += " Rounded to the sliders' steps: " + "; ".join(snapped) + "."
    st.session_state[f"{key}_upload_message"] = ("success", text)
    if exp.kind != key:
        st.session_state["live_switch_to"] = KINDS[exp.kind][2]


def save_and_load(kind: str, cfg: GRPOConfig, n_seeds: int, up: Upstream,
                  results: Sequence[RunResult]) -> None:
    """Share link, CSV and JSON downloads, and the configuration uploader, side by side."""
    st.header("Share, save and load")
    share_link(values={**upstream_values(up), **run_values(kind, cfg, n_seeds)})
    left, right = st.columns(2)
    with left:
        st.download_button("History as CSV (every seed)", data=lambda: history_csv(results),
                           icon=":material/download:", file_name=f"{kind}_history.csv", mime="text/csv", on_click="ignore",
                           key=f"{kind}_csv", help="One row per seed and iteration: every exact and batch metric.")
        st.download_button("Configuration as JSON", data=experiment(kind, cfg, n_seeds, up).to_json(),
                           icon=":material/download:", file_name=f"{kind}_experiment.json", mime="application/json",
                           on_click="ignore", key=f"{kind}_json",
                           help="Every setting (task, SFT, reward model, this run, seeds): load it "
                                "here to reproduce this result, or run it with the CLI.")
    with right:
        st.file_uploader(f"Load a configuration (JSON, at most {UPLOAD_LIMIT})", type="json",
                         key=f"{kind}_upload", max_upload_size=1, on_change=_apply_upload, args=(kind,),
                         help="A file saved with the button on the left. It sets every setting it names.")
        # The box itself says 1MB, Streamlit's smallest limit; larger files than ours are refused on load.
        st.caption(f"The limit is {UPLOAD_LIMIT} per file, not the 1MB the box shows: a larger file is refused.")
        message = st.session_state.get(f"{kind}_upload_message")
        if message:
            (st.error if message[0] == "error" else st.success)(message[1])


def follow_upload() -> None:
    """Call early on a run page: go to the page a loaded configuration belongs to."""
    target = st.session_state.pop("live_switch_to", None)
    if target:
        st.switch_page(target)
