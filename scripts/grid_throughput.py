"""Throughput of hyperparameter maps, in run-iterations per second, here and on a local Ray instance.

    .venv/bin/python scripts/grid_throughput.py [--num-cpus 2] [--rounds 2]

Trains the default map (lr x kl_coef, 8 x 8 cells x 4 seeds x 300 iterations = 256 runs, 76,800
run-iterations) with the local backend (upstream built once beforehand), then on a local Ray
instance with --num-cpus CPUs: once cold (each worker imports torch and builds the upstream) and
then warm. Prints `name: value` lines; the README's cluster estimate is made from them.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from grpo_core import build_upstream  # noqa: E402
from grpo_core.grid import default_map, run_grid  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    grid = default_map()
    up = build_upstream(grid.problem, grid.sft, grid.rm)
    local = [run_grid(grid, "local", up=up) for _ in range(args.rounds)]
    best = max(local, key=lambda r: r.run_iterations_per_second)
    print(f"local_seconds: {best.seconds:.3f}")
    print(f"local_run_iterations_per_second: {best.run_iterations_per_second:.0f}")

    import ray
    from grpo_core.grid.ray_backend import connect
    start = time.perf_counter()
    connect(num_cpus=args.num_cpus)
    print(f"ray_start_seconds: {time.perf_counter() - start:.3f}")
    try:
        cold = run_grid(grid, "ray")
        print(f"ray_cold_seconds: {cold.seconds:.3f}")
        warm = [run_grid(grid, "ray") for _ in range(args.rounds)]
        best = max(warm, key=lambda r: r.run_iterations_per_second)
        print(f"ray_warm_seconds: {best.seconds:.3f}")
        print(f"ray_run_iterations_per_second: {best.run_iterations_per_second:.0f}")
        same = max(abs(a - b) for a, b in zip(cold.cells["true_reward_mean"], local[0].cells["true_reward_mean"]))
        print(f"ray_vs_local_max_abs_difference: {same:.3g}")
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
