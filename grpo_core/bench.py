"""Timing figures for `python -m grpo_core bench`: printed, never asserted (machines are noisy).

Ours: the notebook workload (median of rounds), a 64-run group-size sweep as one batch, one cold
default GRPO run, the full landscape (every method x 8 seeds, cold), one cold default sequence
run and the sequence engine's speed against a notebook-style per-sample loop
(grpo_core.sequence.bench), the default hyperparameter map, the process's peak RSS, and
peak_request_mb: the most any single request the caps allow adds to a process's peak RSS (each of
PEAK_REQUESTS trained in its own subprocess). Reference, when the seed notebook script is found:
it runs as a subprocess with `python -u` and each stdout line is timestamped as it arrives, which
gives its total compute time and the time of its group-size sweep alone.
"""
from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from .config import MAX_WORK_PER_REQUEST, GRPOConfig, ProblemConfig, request_work
from .pipeline import build_upstream, run_many, run_notebook, sweep_configs

SWEEP_GROUP_SIZES = (2, 4, 8, 16)
LANDSCAPE_ROUNDS = 3          # interleaved (default GRPO run, landscape) pairs
SWEEP_SEEDS = 16
SWEEP_ITERATIONS = 300
DEFAULT_REFERENCE = Path("..") / "shared" / "bench" / "seed_notebook.py"
# The seed notebook prints these around its group-size sweep cells.
SWEEP_START, SWEEP_END = "Group size G=2", "Correct tokens per context:"


def find_reference(path: str | None = None) -> Path | None:
    """The seed notebook script: `path` if given, else ../shared/bench/seed_notebook.py from the cwd."""
    candidate = Path(path) if path is not None else Path.cwd() / DEFAULT_REFERENCE
    return candidate.resolve() if candidate.is_file() else None


def notebook_seconds(rounds: int) -> list[float]:
    """compute_seconds of run_notebook, once per round."""
    return [run_notebook().compute_seconds for _ in range(rounds)]


def sweep64_seconds() -> float:
    """G in 2, 4, 8, 16 x 16 seeds at 300 iterations: 64 runs in one run_many call (upstream ready)."""
    up = build_upstream()
    configs = sweep_configs(GRPOConfig(iterations=SWEEP_ITERATIONS), SWEEP_GROUP_SIZES, SWEEP_SEEDS)
    start = time.perf_counter()
    run_many(up, configs)
    return time.perf_counter() - start


def grpo_default_seconds() -> float:
    """One default GRPO run from nothing: task, SFT and reward model are built too, none reused."""
    start = time.perf_counter()
    run_many(build_upstream(), [GRPOConfig()])
    return time.perf_counter() - start


def landscape_seconds() -> float:
    """Every landscape method x 8 seeds at defaults, from nothing (upstream built too, none reused)."""
    from .methods.landscape import landscape
    start = time.perf_counter()
    landscape(seeds=8)
    return time.perf_counter() - start


def map_default_seconds() -> float:
    """The default hyperparameter map from nothing: upstream built, then lr x kl_coef, 8 x 8 cells
    x 4 seeds x 300 iterations (256 runs) in the grid's bounded chunks, reduced per cell."""
    from .grid import default_map, run_grid
    start = time.perf_counter()
    run_grid(default_map())
    return time.perf_counter() - start


def peak_rss_mb() -> float:
    """Peak resident memory of this process (ru_maxrss is KB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


# The largest requests the caps allow (work = iterations x epochs x prompts x G x (1 + redraws)
# summed over runs, at most MAX_WORK_PER_REQUEST; at most 64 seeds; the pages' multi-setting
# requests: 7 KL coefficients or 11 group sizes x 64 seeds). name -> (task, runs).
_BIG = dict(prompts=64, group_size=64, epochs=1)
_BIG_TASK = dict(n_contexts=12, vocab_size=32, context_dim=32)
PEAK_REQUESTS = {
    "seeds64_G64_P64_redraws16": ({}, [dict(_BIG, iterations=20, dynamic_sampling=16)] * 64),
    "seeds64_G64_P64_381it": ({}, [dict(_BIG, iterations=381)] * 64),
    "seeds64_5000it": ({}, [dict(_BIG, prompts=8, group_size=39, iterations=5000)] * 64),
    "seeds64_minibatches16_epochs16": ({}, [dict(_BIG, epochs=16, minibatches=16, iterations=23)] * 64),
    "big_task_seeds64_redraws16": (_BIG_TASK, [dict(_BIG, iterations=20, dynamic_sampling=16)] * 64),
    "big_task_kl_in_reward_redraws16": (_BIG_TASK, [dict(_BIG, iterations=20, dynamic_sampling=16,
                                                         kl_placement="reward", kl_estimator="k3")] * 64),
    "kl7_x_seeds64_G64_P64": ({}, [dict(_BIG, iterations=54, kl_coef=k)
                                   for k in (0.0, 0.001, 0.01, 0.05, 0.2, 1.0, 5.0) for _ in range(64)]),
    "groups11_x_seeds64_P64": ({}, [dict(_BIG, group_size=g, iterations=111)
                                    for g in (2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64) for _ in range(64)]),
}


def _rss_mb(field: str) -> float | None:
    """VmRSS or VmHWM (peak) of this process from /proc, in MB; None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _measure_request(name: str) -> dict:
    """In this (fresh) process: build the upstream, reset the peak RSS, train the request.
    Returns rss_before_mb, peak_mb and added_mb (peak - before)."""
    import torch
    torch.set_num_threads(1)  # as the app and the CLI run
    problem, runs = PEAK_REQUESTS[name]
    up = build_upstream(ProblemConfig(**problem))
    configs = [GRPOConfig(**run).replace(seed=i % 64) for i, run in enumerate(runs)]
    assert request_work(configs) <= MAX_WORK_PER_REQUEST, name
    try:  # "5" resets the peak RSS (VmHWM) to the current RSS
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _rss_mb("VmRSS")
    except OSError:
        before = None
    if before is None:
        before = peak_rss_mb()
    start = time.perf_counter()
    results = run_many(up, configs)
    seconds = time.perf_counter() - start
    peak = _rss_mb("VmHWM") or peak_rss_mb()
    del results
    return {"request": name, "runs": len(configs), "work": request_work(configs),
            "rss_before_mb": before, "peak_mb": peak, "added_mb": peak - before, "seconds": seconds}


def request_peaks(names=None, log: Callable[[str], None] | None = None) -> list[dict]:
    """Each request of PEAK_REQUESTS (or `names`) trained in its own subprocess: its figures."""
    out = []
    for name in names or PEAK_REQUESTS:
        code = f"import json, grpo_core.bench as b; print(json.dumps(b._measure_request({name!r})))"
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parents[1])
        if proc.returncode != 0:
            raise RuntimeError(f"peak request {name} failed: {proc.stderr.strip().splitlines()[-1:]}")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        out.append(row)
        if log:
            log(f"request {name}: {row['runs']} runs, work {row['work']:,}: RSS {row['rss_before_mb']:.0f} "
                f"-> peak {row['peak_mb']:.0f} MB (+{row['added_mb']:.0f} MB) in {row['seconds']:.1f}s")
    return out


def time_reference(script: Path) -> dict:
    """Run the seed notebook script, timestamping its stdout lines as they arrive.

    Returns compute_seconds (the line it prints), sweep_seconds (from its "Group size G=2" line to
    its "Correct tokens per context:" line), wall_seconds and returncode; missing figures are None.
    """
    found = {"compute_seconds": None, "sweep_seconds": None}
    sweep_start = None
    start = time.perf_counter()
    with subprocess.Popen([sys.executable, "-u", str(script)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, cwd=script.parent) as proc:
        for line in proc.stdout:
            now, line = time.perf_counter(), line.strip()
            if line.startswith(SWEEP_START):
                sweep_start = now
            elif line == SWEEP_END and sweep_start is not None:
                found["sweep_seconds"] = now - sweep_start
            elif line.startswith("compute_seconds:"):
                try:
                    found["compute_seconds"] = float(line.split(":", 1)[1])
                except ValueError:
                    pass
    return {**found, "wall_seconds": time.perf_counter() - start, "returncode": proc.returncode,
            "script": str(script)}


def run(rounds: int = 3, reference: Path | None = None,
        log: Callable[[str], None] | None = None) -> dict:
    """Measure everything; `log` receives human-readable lines as figures come in.

    The last lines logged are `name: value`, one per figure, in the order the figures are
    measured (see the end of this function). landscape_ratio is landscape_seconds over
    grpo_default_seconds of the same run (target under 3), each the best of LANDSCAPE_ROUNDS
    interleaved rounds.
    """
    say = log or (lambda line: None)
    rounds_s = notebook_seconds(rounds)
    figures = {"notebook_seconds": statistics.median(rounds_s)}
    say(f"notebook workload (run_notebook): rounds "
        f"{', '.join(f'{s:.3f}s' for s in rounds_s)} -> median {figures['notebook_seconds']:.3f}s")
    figures["sweep64_seconds"] = sweep64_seconds()
    say(f"sweep: G in {', '.join(map(str, SWEEP_GROUP_SIZES))} x {SWEEP_SEEDS} seeds, "
        f"{SWEEP_ITERATIONS} iterations ({len(SWEEP_GROUP_SIZES) * SWEEP_SEEDS} runs, one batch): "
        f"{figures['sweep64_seconds']:.3f}s")
    # The landscape is compared with the default GRPO run measured right next to it, in
    # LANDSCAPE_ROUNDS interleaved pairs; each figure is its best round, so that a slow moment of
    # a shared machine does not land on one side of the ratio only.
    pairs = [(grpo_default_seconds(), landscape_seconds()) for _ in range(LANDSCAPE_ROUNDS)]
    figures["grpo_default_seconds"] = min(g for g, _ in pairs)
    say(f"default GRPO run, cold (task + SFT + reward model + 500 iterations): "
        f"{figures['grpo_default_seconds']:.3f}s (best of {LANDSCAPE_ROUNDS}: "
        f"{', '.join(f'{g:.3f}s' for g, _ in pairs)})")
    figures["landscape_seconds"] = min(s for _, s in pairs)
    figures["landscape_ratio"] = figures["landscape_seconds"] / figures["grpo_default_seconds"]
    say(f"full landscape, cold (upstream + every method x 8 seeds at defaults): "
        f"{figures['landscape_seconds']:.3f}s = {figures['landscape_ratio']:.2f} x the default "
        f"GRPO run (target under 3; best of {LANDSCAPE_ROUNDS}, each landscape against the GRPO run "
        f"before it: {', '.join(f'{s / g:.2f}' for g, s in pairs)})")
    from .sequence import bench as seq_bench
    figures["seq_default_seconds"] = seq_bench.seq_default_seconds()
    say(f"the sequence page's default run, cold (task + SFT + {seq_bench.PAGE_SEEDS} seeds x 200 "
        f"iterations, exact metrics each): {figures['seq_default_seconds']:.3f}s (goal under 2)")
    seq = seq_bench.seq_naive_ratio()
    figures["seq_naive_ratio"] = seq["seq_naive_ratio"]
    say(f"sequence engine {seq['seq_engine_seconds']:.3f}s vs notebook-style per-sample loop "
        f"{seq['seq_naive_seconds']:.1f}s (scaled from {seq_bench.NAIVE_ITERATIONS} iterations)")
    figures["map_default_seconds"] = map_default_seconds()
    say(f"default hyperparameter map, cold (upstream + lr x kl_coef, 8 x 8 cells x 4 seeds x 300 "
        f"iterations = 256 runs): {figures['map_default_seconds']:.3f}s")
    figures["peak_rss_mb"] = peak_rss_mb()
    peaks = request_peaks(log=say)
    figures["peak_request_mb"] = max(row["added_mb"] for row in peaks)

    result = {**figures, "notebook_rounds": rounds_s, "request_peaks": peaks, "reference": None}
    if reference is None:
        say("reference: seed notebook script not found (pass --reference PATH); skipped")
    else:
        say(f"reference: running {reference} with python -u (takes a while) ...")
        ref = time_reference(reference)
        result["reference"] = ref
        if ref["returncode"] != 0:
            say(f"reference: exited with status {ref['returncode']}")
        say(f"reference compute_seconds: {_fmt(ref['compute_seconds'])}")
        say(f"reference group-size sweep seconds (4 runs, G=2..16): {_fmt(ref['sweep_seconds'])}")
        if ref["compute_seconds"]:
            result["speedup"] = ref["compute_seconds"] / figures["notebook_seconds"]
            say(f"speed-up, seed notebook compute / ours: {result['speedup']:.1f}x")
        if ref["sweep_seconds"]:
            result["sweep_ratio"] = figures["sweep64_seconds"] / ref["sweep_seconds"]
            say(f"sweep64_seconds / seed's 4-run sweep seconds: {result['sweep_ratio']:.4f} "
                f"(target <= 0.25)")
    say(f"notebook_seconds: {figures['notebook_seconds']:.3f}")
    say(f"sweep64_seconds: {figures['sweep64_seconds']:.3f}")
    say(f"grpo_default_seconds: {figures['grpo_default_seconds']:.3f}")
    say(f"landscape_seconds: {figures['landscape_seconds']:.3f}")
    say(f"landscape_ratio: {figures['landscape_ratio']:.2f}")
    say(f"seq_default_seconds: {figures['seq_default_seconds']:.3f}")
    say(f"seq_naive_ratio: {figures['seq_naive_ratio']:.1f}")
    say(f"map_default_seconds: {figures['map_default_seconds']:.3f}")
    say(f"peak_rss_mb: {figures['peak_rss_mb']:.1f}")
    say(f"peak_request_mb: {figures['peak_request_mb']:.1f}")
    return result


def _fmt(seconds: float | None) -> str:
    return "not found in its output" if seconds is None else f"{seconds:.3f}"
