"""The Ray backend of a grid: each chunk of a grid is one Ray task running the same batched engine.

A task is sent the grid as plain dicts and its member indices (never tensors), rebuilds the
upstream (task, SFT, reward model) from their configs, trains its members with run_many and
returns their final metrics. Ray retries a task whose worker dies (max_retries), and a retried
chunk trains the same members in the same batch, so the grid completes with the same results.

Ray is optional (requirements-ray.txt): only this module imports it, and only when called.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Callable, Sequence

from ..config import ProblemConfig, RewardModelConfig, SFTConfig
from ..pipeline import build_upstream
from .plan import GridError, grid_from_dict
from .results import sft_finals, train_chunk

# Tasks retried after their worker dies (a crash, a lost node, the OOM killer).
MAX_RETRIES = 3
LOCAL_NUM_CPUS = 2
# Upstreams a worker process keeps (a worker runs many chunks of the same grid).
_UPSTREAMS: dict[str, object] = {}
_MAX_UPSTREAMS = 2


def _import_ray():
    try:
        import ray
    except ImportError:
        raise GridError("--backend ray needs Ray: pip install -r requirements-ray.txt") from None
    return ray


def _upstream(upstream: dict):
    """This worker's upstream for these configs, built on first use (it is deterministic)."""
    key = json.dumps(upstream, sort_keys=True)
    if key not in _UPSTREAMS:
        if len(_UPSTREAMS) >= _MAX_UPSTREAMS:
            _UPSTREAMS.pop(next(iter(_UPSTREAMS)))
        _UPSTREAMS[key] = build_upstream(ProblemConfig.from_dict(upstream["problem"]),
                                         SFTConfig.from_dict(upstream["sft"]),
                                         RewardModelConfig.from_dict(upstream["rm"]))
    return _UPSTREAMS[key]


def train_chunk_task(grid: dict, start: int, stop: int, crash_dir: str | None = None):
    """Members start .. stop - 1 of the grid: (their final metrics, the SFT start's metrics).

    crash_dir (fault-injection for tests): on a chunk's first attempt, leave a marker file there
    and kill this worker process, as a crash would; the retried attempt finds it and trains.
    """
    import torch
    torch.set_num_threads(1)  # as the CLI and app train: the tensors are tiny
    if crash_dir is not None:
        marker = Path(crash_dir) / f"chunk-{start}"
        if not marker.exists():
            marker.touch()
            os._exit(1)
    g = grid_from_dict(grid)
    up = _upstream({"problem": grid["problem"], "sft": grid["sft"], "rm": grid["rm"]})
    return train_chunk(up, g.member_configs(range(start, stop))), sft_finals(up)


def _probe(address: str, timeout: float = 5.0) -> None:
    """Fail fast on an unreachable HOST:PORT (Ray itself retries its GCS for minutes)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" or a form Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise GridError(f"could not connect to Ray at {address}: {e.strerror or e}") from None


def connect(address: str | None = None, num_cpus: int = LOCAL_NUM_CPUS) -> bool:
    """Connect this process to Ray unless it already is: to `address` if given, else to a new
    local instance with num_cpus CPUs. True when this call connected (so the caller shuts down)."""
    ray = _import_ray()
    if ray.is_initialized():
        return False
    # Ship the grpo_core package to the workers, so a cluster needs only the dependencies installed.
    runtime_env = {"py_modules": [str(Path(__file__).resolve().parents[1])], "excludes": ["__pycache__"]}
    kwargs = dict(runtime_env=runtime_env, include_dashboard=False, log_to_driver=False,
                  logging_level="warning")
    if address:
        _probe(address)
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=num_cpus, **kwargs)
    except Exception as e:  # a wrong address or an unreachable cluster: one line, not a traceback
        raise GridError(f"could not connect to Ray{' at ' + address if address else ''}: "
                        f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return True


def run_ray(grid, plan: Sequence[range], on_chunk: Callable, address: str | None = None,
            num_cpus: int = LOCAL_NUM_CPUS, max_retries: int = MAX_RETRIES,
            crash_dir: str | None = None, setup: dict | None = None, on_fraction=None, up=None) -> dict | None:
    """Train every chunk of `plan` as a Ray task; on_chunk(index, finals) as each finishes.

    Uses the Ray instance this process is already connected to; else connects to `address`
    (an existing cluster, e.g. "ray://head:10001" or "auto"); else starts a local instance with
    num_cpus CPUs and shuts it down at the end. The grpo_core package is shipped to the workers
    (runtime_env py_modules); the cluster needs torch, numpy and pandas installed. Returns the
    SFT start's metrics (from any finished task), or None if none finished. setup["seconds"]
    receives the time taken to connect. (on_fraction and up are the local backend's: the
    workers build their own upstream and report whole chunks.)
    """
    ray = _import_ray()
    start = time.perf_counter()
    started = connect(address, num_cpus)
    if setup is not None:
        setup["seconds"] = time.perf_counter() - start
    try:
        task = ray.remote(num_cpus=1, max_retries=max_retries)(train_chunk_task)
        grid_ref = ray.put(grid.to_dict())
        pending = {task.remote(grid_ref, chunk.start, chunk.stop, crash_dir): i
                   for i, chunk in enumerate(plan)}
        sft = None
        while pending:
            (ready,), _ = ray.wait(list(pending), num_returns=1)
            index = pending.pop(ready)
            try:
                finals, sft = ray.get(ready)
            except ray.exceptions.RayError as e:  # retries exhausted, or the task raised
                for ref in pending:
                    ray.cancel(ref, force=True)
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise GridError(f"chunk {index + 1} of {len(plan)} failed after {max_retries} "
                                f"retries: {type(e).__name__}: {first}") from None
            if on_chunk(index, finals) is False:
                for ref in pending:
                    ray.cancel(ref, force=True)
                break
        return sft
    finally:
        if started:
            ray.shutdown()
