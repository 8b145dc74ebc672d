"""Sequence-engine figures for `python -m grpo_core bench` (printed, never asserted)."""
from __future__ import annotations

import time

from .config import SeqGRPOConfig
from .naive import naive_train
from .trainer import build_seq_upstream, train_seq

NAIVE_ITERATIONS = 20  # the naive loop's cost per iteration is constant: time a few, scale up
PAGE_SEEDS = 8         # the GRPO on sequences page's default number of seeds (ui.controls.SEEDS_DEFAULT)


def seq_default_seconds(seeds: int = PAGE_SEEDS) -> float:
    """The GRPO on sequences page's default run from nothing: the default config x `seeds` seeds
    (0 .. seeds-1) as one batch, task and SFT built too (upstream included)."""
    from ..pipeline import seed_configs
    start = time.perf_counter()
    train_seq(build_seq_upstream(), seed_configs(SeqGRPOConfig(), seeds))
    return time.perf_counter() - start


def seq_naive_ratio() -> dict:
    """The engine against the notebook-style per-sample loop on the default config, same upstream.

    Engine: the whole default run (with its exact metrics every iteration). Naive: NAIVE_ITERATIONS
    iterations timed, scaled to the default's iterations (its per-iteration cost is constant)."""
    up = build_seq_upstream()
    cfg = SeqGRPOConfig()
    start = time.perf_counter()
    train_seq(up, [cfg])
    engine = time.perf_counter() - start
    start = time.perf_counter()
    naive_train(up, cfg, iterations=NAIVE_ITERATIONS)
    naive = (time.perf_counter() - start) * cfg.iterations / NAIVE_ITERATIONS
    return {"seq_engine_seconds": engine, "seq_naive_seconds": naive, "seq_naive_ratio": naive / engine}
