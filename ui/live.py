"""Training you can watch, stop, share, pin and save: the run pages' glue beyond ui/__init__.py.

- LiveRun wraps the core's GRPOTrainer, which trains a batch of runs a piece at a time; the
  pieces add up to exactly the one-go run, so a finished LiveRun fills ui.train's cache and the
  static view then shows it at once.
- train(): the static many-seed view's run, trained in pieces with a progress bar and a Stop
  button; stopping keeps the finished iterations.
- watch_section(): the live view (Play, Pause, Step, Reset) in an st.fragment that re-runs a few
  times a second while playing, each time training one more piece, without re-running the page.
- share_link(), downloads, configuration upload, pins: one function each.

Everything per user lives in st.session_state; the only module state is constants.
"""
from __future__ import annotations

from typing import Sequence
from urllib.parse import urlencode

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

import ui
from ui import guard, lab
from grpo_core import (ConfigError, GRPOConfig, GRPOTrainer, RLVRConfig, RunResult, Upstream, band,
                       config_fields)
from grpo_core.experiment import MAX_EXPERIMENT_BYTES, Experiment, experiment_from_json

TICK_SECONDS = 0.3          # the live view trains a piece and redraws this often while playing
CHUNKS = [1, 5, 10, 25, 50, 100]
CHUNK_DEFAULT = 10
MAX_PINS = 6
KINDS = {"grpo": (GRPOConfig, "GRPO", "pages/2_GRPO.py"), "rlvr": (RLVRConfig, "RLVR", "pages/3_RLVR.py")}


# ---------------------------------------------------------------- a run advanced in pieces

class LiveRun:
    """A batch of runs trained a piece at a time with GRPOTrainer, kept in the session."""

    def __init__(self, up: Upstream, configs: Sequence[GRPOConfig]):
        self.up, self.configs = up, tuple(configs)
        self.key = (up.configs, self.configs)
        self.trainer = GRPOTrainer(up.problem, up.sft, up.rm.scores, self.configs)
        self.cached = False
        self.stopped = False        # by request (Stop); a diverged run is not "stopped"
        self._results: list[RunResult] | None = None

    @property
    def done(self) -> int:
        return self.trainer.iteration

    @property
    def total(self) -> int:
        return self.trainer.total

    @property
    def finished(self) -> bool:
        return self.trainer.finished

    def advance(self, n: int) -> None:
        """Train n more iterations (fewer at the end)."""
        self.trainer.advance(n)
        self._results = None

    def stop(self) -> None:
        self.stopped = self.stopped or not self.finished
        self.trainer.stop()
        self._results = None

    def results(self) -> list[RunResult]:
        """The runs so far: full histories and current policies."""
        if self._results is None:
            self._results = self.trainer.results()
        return self._results


# ---------------------------------------------------------------- the static run, stoppable

def is_cached(up: Upstream, configs: Sequence[GRPOConfig]) -> bool:
    return ui.cached_runs(up, configs) is not None


def train(up: Upstream, configs: Sequence[GRPOConfig], key: str) -> list[RunResult]:
    """ui.train(up, configs), but a run that is not cached trains in pieces with a progress bar
    and a Stop button; stopping keeps the finished iterations (and the results say so).
    Sessions asking for the same runs at once train them once: the others wait for the result."""
    configs = tuple(configs)
    ui.check_request(up, configs)
    cached = ui.cached_runs(up, configs)
    if cached is not None:
        return cached
    holder = ui.training_lock(up, configs)
    if not holder.lock.acquire(blocking=False):
        note = st.empty()
        while not holder.lock.acquire(timeout=0.25):   # st calls let a rerun interrupt the wait
            note.info("Another session is training exactly these runs; waiting for its result…")
        note.empty()
    try:
        cached = ui.cached_runs(up, configs)
        return cached if cached is not None else _train_in_pieces(up, configs, key)
    finally:
        holder.lock.release()


def _train_in_pieces(up: Upstream, configs: tuple, key: str) -> list[RunResult]:
    state_key = f"{key}_run"
    run = st.session_state.get(state_key)
    if run is None or run.key != (up.configs, configs):
        run = st.session_state[state_key] = LiveRun(up, configs)
    if run.stopped:
        st.warning("You stopped this run; what it finished is shown below.")
        if st.button("Train it to the end", key=f"{key}_restart"):
            run = st.session_state[state_key] = LiveRun(up, configs)
    holder = st.empty()
    with holder.container():
        bar = st.progress(run.done / run.total)
        # A click interrupts the loop below at its next progress update; the rerun that follows
        # finds the run where it was (in the session) and stops it there.
        if st.button("Stop", key=f"{key}_stop", help="Stop training now and keep the iterations "
                     "finished so far."):
            run.stop()
    every = max(1, run.total // 50)
    while not run.finished:
        run.advance(every)
        bar.progress(run.done / run.total, text=f"Training {len(configs)} runs as one batch: "
                                                f"iteration {run.done} of {run.total}")
    holder.empty()
    results = run.results()
    if not run.stopped:
        ui.remember_runs(up, configs, results)
        del st.session_state[state_key]
    return results


def run_view(up: Upstream, configs: Sequence[GRPOConfig], key: str, name: str, color: str,
             second: tuple[str, str, str]) -> list[RunResult]:
    """A run page's training: the "Watch it train" toggle (live view) and the finished runs.
    Stops the page while a live run is still going (its diagnostics come when it finishes)."""
    guard.work_caption(configs)
    watch = st.toggle("▶ Watch it train", key=f"{key}_watch", bind="query-params", persist_state="session",
                      help="Train these settings live, step by step, instead of showing the finished runs.")
    if watch:
        st.header("Watch it train")
        watch_section(up, configs, key, name, color, second)
        if not is_cached(up, configs):
            st.caption("Every diagnostic of these runs appears here when the live run finishes.")
            st.stop()
        st.header("The finished runs")
    return train(up, configs, key)


def keep_and_share(key: str, cfg: GRPOConfig, n_seeds: int, up: Upstream, results: Sequence[RunResult]) -> None:
    """A run page's closing sections: pinned runs, share/save/load, and the TRL equivalent."""
    st.header("Pinned runs")
    pin_button(key, cfg, n_seeds, up, results)
    pins_view(key)
    save_and_load(key, cfg, n_seeds, up, results)
    lab.trl_export(cfg)


# ---------------------------------------------------------------- watch it train

def watch_section(up: Upstream, configs: Sequence[GRPOConfig], key: str, name: str, color: str,
                  second: tuple[str, str, str]) -> None:
    """Play / Pause / Step / Reset a live run of configs, its charts redrawn as it trains.

    second = (history column, chart title, y title) of the chart beside the true reward.
    """
    configs = tuple(configs)
    run_key, playing_key = f"{key}_live", f"{key}_playing"
    run = st.session_state.get(run_key)
    if run is None or run.key != (up.configs, configs):
        st.session_state[run_key] = LiveRun(up, configs)
        st.session_state[playing_key] = False
    chunk = st.select_slider("iterations per step", CHUNKS, value=CHUNK_DEFAULT, key=f"{key}_chunk",
                             bind="query-params", persist_state="session",
                             help="How many iterations Step trains, and Play trains per frame "
                                  f"(a frame every {TICK_SECONDS:g} s).")
    ticking = bool(st.session_state.get(playing_key))

    def play():
        st.session_state[playing_key] = not st.session_state.get(playing_key, False)

    def step():
        st.session_state[playing_key] = False
        st.session_state[run_key].advance(chunk)

    def reset():
        st.session_state[run_key] = LiveRun(up, configs)
        st.session_state[playing_key] = False

    @st.fragment(run_every=TICK_SECONDS if ticking else None)
    def panel():
        live = st.session_state[run_key]
        playing = bool(st.session_state.get(playing_key)) and not live.finished
        if playing and playing == ticking:
            live.advance(chunk)
        cols = st.columns([1, 1, 1, 5])
        cols[0].button("Pause" if playing else "Play", key=f"{key}_play", on_click=play,
                       icon=":material/pause:" if playing else ":material/play_arrow:",
                       disabled=live.finished, type="primary", width="stretch")
        cols[1].button("Step", key=f"{key}_step", on_click=step, disabled=live.finished,
                       help=f"Train {chunk} iterations, then pause.", width="stretch")
        cols[2].button("Reset", key=f"{key}_reset", on_click=reset, width="stretch",
                       help="Throw the live run away and start again from the SFT policy.")
        state = ("finished" if live.finished else "playing" if playing
                 else "paused" if live.done else "ready")
        cols[3].markdown(f"Live iteration **{live.done}** of {live.total} · {state}")
        st.progress(live.done / live.total)
        results = live.results()
        seed = configs[0].seed
        if live.done:
            runs = {f"{name}, live ({len(results)} seeds)": [r.history for r in results]}
            ui.show_grid([
                ui.band_chart(runs, "true_reward", "Expected true reward, exact", y_title="true reward",
                              rules=ui.reward_rules(up), colors=[color]),
                ui.band_chart(runs, second[0], second[1], y_title=second[2], colors=[color]),
                ui.band_chart(runs, "kl_ref", "KL(policy ‖ SFT reference), exact", y_title="KL (nats)",
                              colors=[color]),
                ui.band_chart(runs, "entropy", "Policy entropy, exact", y_title="entropy (nats)",
                              colors=[color])])
            policy = results[0].final_logp.exp().numpy()
        else:
            st.info("Press Play (or Step) to train from the SFT policy and watch it learn.")
            policy = up.sft.logp.exp().numpy()
        ui.show(ui.context_bars({f"{name} policy now": policy, "SFT reference": up.sft.logp.exp().numpy(),
                                 "true preference": up.problem.true_reward.numpy()},
                                up.problem.correct_token.numpy(),
                                f"Policy of seed {seed} after {live.done} iterations, per context",
                                "★ marks each context's correct (best) token",
                                colors=[color, ui.SFT_COLOR, ui.TRUE_COLOR]))
        if live.finished and not live.stopped and not live.cached:
            ui.remember_runs(up, configs, results)
            live.cached = True
        if playing != ticking:
            st.session_state[playing_key] = playing
            st.rerun(scope="app")   # start or stop the timer; a finished run shows the full view

    panel()


# ---------------------------------------------------------------- sharing, saving, loading

SETTINGS = {**{prefix: cls for cls, prefix, _ in ui.UPSTREAM}, "grpo": GRPOConfig, "rlvr": RLVRConfig}
UPSTREAM_PREFIXES = ("problem", "sft", "rm")


def adopt_params(prefixes: Sequence[str] = UPSTREAM_PREFIXES) -> None:
    """Take settings of other pages (e.g. Setup's problem_*, sft_*, rm_*) from a shared link's URL.

    Their widgets live on other pages, so on this page nothing else reads them from the URL. The
    URL has already been checked (and corrected) by ui.page(); the values are read with the same
    parser. A group whose values do not make a valid config is ignored (its defaults stay).
    """
    for prefix in prefixes:
        cls = SETTINGS[prefix]
        settings = guard.config_settings(cls, prefix)
        if prefix in KINDS:
            settings.append(guard.seeds_setting(prefix))
        given = {s.key: guard.url_value(s, st.query_params[s.key])
                 for s in settings if s.key in st.query_params}
        given = {k: v for k, v in given.items() if v is not None}
        values = {k[len(prefix) + 1:]: v for k, v in given.items() if k != f"{prefix}_seeds"}
        try:
            cls(**{**ui._defaults(cls), **values})
        except ConfigError:
            continue
        for key, value in given.items():
            st.session_state.setdefault(key, value)


def share_url(prefixes: Sequence[str] = UPSTREAM_PREFIXES) -> str:
    """The app's URL for this page: its own settings (already in the URL) and the other pages'
    settings it depends on (prefixes) where they differ from the defaults."""
    params = dict(st.query_params.to_dict())
    for prefix in prefixes:
        defaults = {**ui._defaults(SETTINGS[prefix])}
        if prefix in KINDS:
            defaults["seeds"] = ui.SEEDS_DEFAULT
        for name, default in defaults.items():
            value = st.session_state.get(f"{prefix}_{name}", default)
            if value != default:
                params.setdefault(f"{prefix}_{name}", f"{value:g}" if isinstance(value, float) else str(value))
    base = (st.context.url or "").split("?")[0]
    return base + ("?" + urlencode(params) if params else "")


def share_link(prefixes: Sequence[str] = UPSTREAM_PREFIXES) -> None:
    """'Copy link to this experiment': the full URL in a code box (its copy button copies it)."""
    st.markdown(":material/link: **Copy link to this experiment** (the copy button is at the right "
                "of the box)")
    st.code(share_url(prefixes), language=None, wrap_lines=True)


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
        grid = ui._log_grid(f.metadata["lo"], f.metadata["hi"], f.default)
        return min(grid, key=lambda g: abs(np.log(g) - np.log(value)))
    return value


def _apply_upload(key: str) -> None:
    """on_change of the uploader: validate the file, then set every widget it names."""
    upload = st.session_state.get(f"{key}_upload")
    st.session_state.pop(f"{key}_upload_message", None)
    if upload is None:
        return
    try:
        exp = experiment_from_json(upload.getvalue())
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
                snapped.append(f"{prefix}.{name} {value:g} → {shown:g}")
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
    share_link()
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
        st.file_uploader("Load a configuration (JSON)", type="json", key=f"{kind}_upload",
                         max_upload_size=1, on_change=_apply_upload, args=(kind,),
                         help=f"A file saved with the button on the left (at most "
                              f"{MAX_EXPERIMENT_BYTES // 1024} KB). It sets every setting it names.")
        message = st.session_state.get(f"{kind}_upload_message")
        if message:
            (st.error if message[0] == "error" else st.success)(message[1])


def follow_upload() -> None:
    """Call early on a run page: go to the page a loaded configuration belongs to."""
    target = st.session_state.pop("live_switch_to", None)
    if target:
        st.switch_page(target)


# ---------------------------------------------------------------- pins

def _flat(pin: dict) -> dict:
    out = {"method": pin["name"], "seeds": pin["seeds"]}
    out.update({k: v for k, v in pin["config"].items() if k != "reward"})
    for section, values in pin["upstream"].items():
        out.update({f"{section}.{k}": v for k, v in values.items()})
    return out


def pin_labels(pins: Sequence[dict]) -> list[str]:
    """'#n: what differs', naming the settings that differ between the pinned runs."""
    flats = [_flat(p) for p in pins]
    keys = [k for k in dict.fromkeys(k for f in flats for k in f)
            if len({repr(f.get(k)) for f in flats}) > 1]
    fmt = lambda v: f"{v:g}" if isinstance(v, float) else str(v)
    labels = []
    for i, f in enumerate(flats):
        parts = [fmt(f["method"]) if k == "method" else f"{k}={fmt(f.get(k, '–'))}" for k in keys]
        labels.append(f"#{i + 1}" + (": " + ", ".join(parts) if parts else f": {f['method']}"))
    return labels


def pin_button(kind: str, cfg: GRPOConfig, n_seeds: int, up: Upstream,
               results: Sequence[RunResult]) -> None:
    def pin():
        hists = [r.history for r in results]
        mean = {c: band(hists, c)["mean"].to_numpy() for c in ("true_reward", "kl_ref")}
        history = pd.DataFrame({"iteration": band(hists, "true_reward")["iteration"].to_numpy(), **mean})
        pins = st.session_state.setdefault("pins", [])
        pins.append({"name": KINDS[kind][1], "seeds": n_seeds, "config": cfg.to_dict(),
                     "upstream": {s: c.to_dict() for s, c in zip(("problem", "sft", "rm"), up.configs)},
                     "history": history})
        del pins[:-MAX_PINS]
    st.button("Pin this run", icon=":material/push_pin:", key=f"{kind}_pin", on_click=pin,
              help=f"Keep this run's mean curves to compare with others (at most {MAX_PINS}; the "
                   "oldest is dropped).")


def pins_view(key: str) -> None:
    """Overlay of the pinned runs' exact true reward and KL, legend naming what differs; unpin."""
    pins = st.session_state.get("pins", [])
    if not pins:
        st.caption("Pin runs to overlay their curves here: change a setting, pin again, compare.")
        return
    labels = pin_labels(pins)
    long = pd.concat([ui.thin(p["history"]).assign(run=label) for p, label in zip(pins, labels)],
                     ignore_index=True)

    def chart(column, title, y_title):
        return alt.Chart(long).mark_line(strokeWidth=2).encode(
            x=alt.X("iteration:Q"), y=alt.Y(f"{column}:Q", title=y_title, scale=alt.Scale(zero=False)),
            color=alt.Color("run:N", sort=labels, scale=alt.Scale(domain=labels, range=ui.PALETTE[:len(labels)]),
                            legend=alt.Legend(orient="bottom", title=None, columns=1, labelLimit=700)),
            tooltip=["run:N", "iteration:Q", alt.Tooltip(f"{column}:Q", format=".4f")],
        ).properties(title=ui.chart_title(title, "mean over each pinned run's seeds"),
                     height=ui.CHART_HEIGHT)

    ui.show_grid([chart("true_reward", "Pinned runs: expected true reward", "true reward"),
                  chart("kl_ref", "Pinned runs: KL(policy ‖ SFT)", "KL (nats)")])
    cols = st.columns(min(len(pins), 3))
    for i, label in enumerate(labels):
        cols[i % len(cols)].button(f"✕ unpin {label}", key=f"{key}_unpin_{i}",
                                   on_click=lambda i=i: st.session_state["pins"].pop(i))
