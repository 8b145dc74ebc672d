"""Where results come from: the one result store every page trains through, the trainer a page
holds while it trains, and the cached upstream stages (task, SFT policy, reward model).

Shared between sessions (one Python process serves every browser session):

- ``STORE``, a :class:`ResultStore`: finished runs keyed by (upstream configs, run configs), at
  most ``MAX_ENTRIES`` results and ``MAX_BYTES`` bytes (measured), least recently used out first,
  entries older than ``TTL_SECONDS`` dropped. ``get`` hands out a deep copy, so no session can
  change what another sees.
- ``STORE``'s per-key locks, one per request being trained, held weakly (gone when no one waits):
  identical requests from several sessions at once train once, the others wait for the result.
- The st.cache_data caches of :func:`problem`, :func:`sft` and :func:`reward_model` (16 entries
  each; Streamlit hands out copies).

Per session (st.session_state["held_runs"]): for each page at most one :class:`LiveRun` (the
trainer a page is training or watching) and the results of runs the user stopped. They are freed
when the page is left (:func:`release_other_pages`, called by ui.navigation.page), on the live
view's Reset, and a trainer as soon as its run finishes or is stopped (its results are kept).
"""
from __future__ import annotations

import copy
import threading
import time
import weakref
from collections import OrderedDict
from typing import Callable, Hashable, Sequence

import streamlit as st

from grpo_core import (GRPOConfig, GRPOTrainer, ProblemConfig, RewardModelConfig, RunResult, SFTConfig,
                       Upstream, make_problem, train_reward_model, train_sft)
from ui import controls, guard

MAX_ENTRIES = 16
MAX_BYTES = MAX_ENTRIES * guard.MAX_RESULT_BYTES      # 512 MiB
TTL_SECONDS = 3600.0
WAIT_SECONDS = 0.25        # how often a waiting session looks up (and lets a rerun interrupt it)


def result_nbytes(results: Sequence[RunResult]) -> int:
    """Measured memory of results (RunResult.nbytes: histories, per-context tables, final
    policies and weights, whatever engine made them)."""
    return sum(r.nbytes for r in results)


def finished(results: Sequence[RunResult]) -> bool:
    """Whether results are whole runs (diverged ones are: they end the same way every time); runs
    stopped by request or paused are not, and are never stored."""
    return all(r.status != "stopped" for r in results)


class _KeyLock:
    """The lock of one key; a weak reference to it keeps the lock table to the keys in use."""

    def __init__(self):
        self.lock = threading.Lock()


class ResultStore:
    """Results by key, bounded in count and bytes, with a lock per key.

    get() and put() copy, so callers never share objects with the store or with each other;
    get_or_train() trains a missing key once however many threads ask for it at the same time.
    """

    def __init__(self, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES,
                 ttl: float = TTL_SECONDS, clock: Callable[[], float] = time.monotonic,
                 nbytes: Callable[[Sequence], int] = result_nbytes):
        self.max_entries, self.max_bytes, self.ttl = max_entries, max_bytes, ttl
        self._clock, self._nbytes = clock, nbytes
        self._entries: OrderedDict[Hashable, tuple[list, int, float]] = OrderedDict()  # value, bytes, time
        self._bytes = 0
        self._guard = threading.Lock()
        self._locks: weakref.WeakValueDictionary[Hashable, _KeyLock] = weakref.WeakValueDictionary()

    @staticmethod
    def key(upstream_configs: tuple, configs: Sequence[GRPOConfig]) -> tuple:
        """The key of these runs: frozen config dataclasses, so equal settings make equal keys."""
        return tuple(upstream_configs), tuple(configs)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def _drop(self, key) -> None:
        _, size, _ = self._entries.pop(key)
        self._bytes -= size

    def _lookup(self, key):
        """The stored value (not a copy) or None; call with self._guard held."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._clock() - entry[2] > self.ttl:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def __contains__(self, key) -> bool:
        with self._guard:
            return self._lookup(key) is not None

    def get(self, key) -> list | None:
        """A copy of the results stored under key, or None."""
        with self._guard:
            value = self._lookup(key)
        return None if value is None else copy.deepcopy(value)

    def put(self, key, results: Sequence) -> bool:
        """Store a copy of results under key, evicting the least recently used entries to stay
        within both bounds. A result larger than the whole store is not stored (returns False)."""
        size = self._nbytes(results)
        if size > self.max_bytes:
            return False
        value = copy.deepcopy(list(results))
        with self._guard:
            if key in self._entries:
                self._drop(key)
            self._entries[key] = (value, size, self._clock())
            self._bytes += size
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                self._drop(next(iter(self._entries)))
        return True

    def lock(self, key) -> _KeyLock:
        """The process-wide lock of key (the same object for as long as anyone holds it)."""
        with self._guard:
            holder = self._locks.get(key)
            if holder is None:
                holder = self._locks[key] = _KeyLock()
        return holder

    def get_or_train(self, key, train: Callable[[], list], wait: Callable[[], None] | None = None,
                     keep: Callable[[Sequence], bool] = finished) -> list:
        """The results under key; if there are none, train() them (under key's lock, so a thread
        asking for the same key meanwhile waits, calling wait() every WAIT_SECONDS, and then gets
        a copy) and store them if keep(results)."""
        found = self.get(key)
        if found is not None:
            return found
        holder = self.lock(key)
        if not holder.lock.acquire(blocking=False):
            while not holder.lock.acquire(timeout=WAIT_SECONDS):
                if wait is not None:
                    wait()
        try:
            found = self.get(key)
            if found is not None:
                return found
            results = train()
            if keep(results):
                self.put(key, results)
            return results
        finally:
            holder.lock.release()


STORE = ResultStore()


# ---------------------------------------------------------------- a run trained in pieces

class LiveRun:
    """A batch of runs trained a piece at a time: the core's GRPOTrainer by default, or any
    trainer with the same protocol (advance, stop, results, iteration, total, finished), e.g. the
    sequence engine's SeqTrainer with its own store key.

    The pieces add up to exactly the one-go run. Once the run finishes or is stopped the trainer
    (weights, optimizer state, buffers) is dropped and only the results are kept.
    """

    def __init__(self, up, configs: Sequence, *, key=None, trainer=None):
        self.configs = tuple(configs)
        self.key = STORE.key(up.configs, self.configs) if key is None else key
        self.trainer = (GRPOTrainer(up.problem, up.sft, up.rm.scores, self.configs)
                        if trainer is None else trainer)
        self.total = self.trainer.total
        self.stopped = False        # by request (Stop); a diverged run is not "stopped"
        self._done = 0
        self._results: list[RunResult] | None = None
        self.y_ranges: dict[str, tuple[float, float]] = {}   # the live charts' y axes (charts.grow_range)

    @property
    def done(self) -> int:
        return self.trainer.iteration if self.trainer is not None else self._done

    @property
    def finished(self) -> bool:
        return self.trainer is None or self.trainer.finished

    def advance(self, n: int) -> None:
        """Train n more iterations (fewer at the end)."""
        if self.trainer is None:
            return
        self.trainer.advance(n)
        self._results = None
        if self.trainer.finished:
            self._drop_trainer()

    def stop(self) -> None:
        if self.trainer is None:
            return
        self.stopped = not self.trainer.finished
        self.trainer.stop()
        self._drop_trainer()

    def _drop_trainer(self) -> None:
        self._results, self._done = self.trainer.results(), self.trainer.iteration
        self.trainer = None

    def results(self) -> list[RunResult]:
        """The runs so far: full histories and current policies."""
        if self._results is None:
            self._results = self.trainer.results()
        return self._results


# ---------------------------------------------------------------- what a session holds

HELD = "held_runs"      # session key: {page title: {"run": LiveRun | None, "stopped": {name: LiveRun}}}


def _held() -> dict:
    page = st.session_state.get("page", "")
    return st.session_state.setdefault(HELD, {}).setdefault(page, {"run": None, "stopped": {}})


def held_run(name: str, key) -> LiveRun | None:
    """This page's LiveRun called name, if it is of these runs (key)."""
    run = _held()["run"]
    return run if run is not None and run.name == name and run.key == key else None


def hold(name: str, run: LiveRun) -> LiveRun:
    """Make run this page's one LiveRun (any other of the page is dropped)."""
    run.name = name
    _held()["run"] = run
    return run


def held_stopped() -> dict:
    """{name: run} of this page's runs the user stopped (results only), for trainers beyond
    GRPOTrainer that follow :func:`train`'s Stop protocol (ui.seq)."""
    return _held()["stopped"]


def release(name: str) -> None:
    """Drop this page's LiveRun if it is called name, and any stopped results called name."""
    held = _held()
    if held["run"] is not None and held["run"].name == name:
        held["run"] = None
    held["stopped"].pop(name, None)


def release_other_pages(page: str) -> None:
    """Free everything the session holds for pages other than `page` (called as a page starts)."""
    held = st.session_state.get(HELD, {})
    for other in [p for p in held if p != page]:
        del held[other]


# ---------------------------------------------------------------- the one training path

def train(up: Upstream, configs: Sequence[GRPOConfig], name: str | None = None, *,
          key=None, make_trainer: Callable[[], object] | None = None) -> list[RunResult]:
    """The runs of configs from STORE, or trained here with a progress bar, once however many
    sessions ask at the same time (the others wait for the result).

    With a name, training can be stopped: a Stop button ends it where it is, and the finished
    iterations are shown (they are not stored) with a button to train to the end.
    Another engine (the sequence engine) passes its own store key and trainer factory, having
    checked its request itself; by default configs are GRPO runs, checked against the caps here.
    """
    configs = tuple(configs)
    if key is None:
        guard.check_request(up.configs, configs)
        key = STORE.key(up.configs, configs)
    if name is not None:
        stopped = _held()["stopped"].get(name)
        if stopped is not None and stopped.key == key:
            st.warning("You stopped this run; what it finished is shown below.")
            if not st.button("Train it to the end", key=f"{name}_restart"):
                return stopped.results()
        _held()["stopped"].pop(name, None)
    notes: list = []

    def wait():
        if not notes:
            notes.append(st.empty())
        notes[0].info("Another session is training exactly these runs; waiting for its result…")

    try:
        return STORE.get_or_train(key, lambda: _train_here(up, key, configs, name, make_trainer), wait)
    finally:
        if notes:
            notes[0].empty()


def _train_here(up: Upstream, key, configs: tuple, name: str | None,
                make_trainer: Callable[[], object] | None) -> list[RunResult]:
    """Train configs in pieces with a progress bar (and a Stop button when named)."""
    run = held_run(name, key) if name else None
    if run is None:
        run = LiveRun(up, configs, key=key, trainer=make_trainer() if make_trainer else None)
        if name:
            hold(name, run)
    holder = st.empty()
    with holder.container():
        bar = st.progress(run.done / run.total, text=f"Training {len(configs)} runs as one batch…")
        # A click interrupts the loop below at its next progress update; the rerun that follows
        # finds the run where it was (held in the session) and stops it there.
        if name and st.button("Stop", key=f"{name}_stop", help="Stop training now and keep the "
                              "iterations finished so far."):
            run.stop()
    every = max(1, run.total // 50)
    while not run.finished:
        run.advance(every)
        bar.progress(run.done / run.total, text=f"Training {len(configs)} runs as one batch: "
                                                f"iteration {run.done} of {run.total}")
    holder.empty()
    if name:
        release(name)
        if run.stopped:
            _held()["stopped"][name] = run       # results only: the trainer is gone
    return run.results()


# ---------------------------------------------------------------- cached upstream stages

@st.cache_data(max_entries=16, show_spinner=False)
def problem(cfg: ProblemConfig):
    return make_problem(cfg)


@st.cache_data(max_entries=16, show_spinner="Training the SFT policy…")
def sft(problem_cfg: ProblemConfig, sft_cfg: SFTConfig):
    return train_sft(problem(problem_cfg), sft_cfg)


@st.cache_data(max_entries=16, show_spinner="Training the reward model…")
def reward_model(problem_cfg: ProblemConfig, rm_cfg: RewardModelConfig):
    return train_reward_model(problem(problem_cfg), rm_cfg)


def upstream(problem_cfg: ProblemConfig, sft_cfg: SFTConfig, rm_cfg: RewardModelConfig) -> Upstream:
    """Task, SFT and reward model, each from its own cache: an RM change does not retrain SFT."""
    return Upstream(problem(problem_cfg), sft(problem_cfg, sft_cfg), reward_model(problem_cfg, rm_cfg))


def stored_upstream() -> Upstream:
    """The upstream chosen on Setup, with a one-line caption saying which it is."""
    configs = controls.upstream_configs()
    parts = [f"{name} {controls.describe(cfg)}" for cfg, (_, _, name) in zip(configs, controls.UPSTREAM)]
    st.caption("Starting point, as set on the Setup page: " + "; ".join(parts) + ".")
    return upstream(*configs)
