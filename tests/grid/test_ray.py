"""The Ray backend of grid.py on a local Ray instance (2 CPUs, started once for the module):
every cell equals the local backend's, a worker killed mid-grid is retried to the same results,
and the CLI's --backend ray starts and stops its own instance.

Ray comes from requirements-ray.txt, which `make test` installs: if it is missing, these fail.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray  # not importorskip: make test installs requirements-ray.txt, so a missing Ray is a failure

from grpo_core.grid import GridError, make_grid, parse_axis, run_grid
from grpo_core.grid.ray_backend import connect

pytestmark = pytest.mark.slow   # a local Ray instance takes seconds to start

ROOT = Path(__file__).resolve().parents[2]
TOL = 1e-6
GRID = dict(method="grpo", x=parse_axis("lr=1e-3:3e-2:3:log"), y=parse_axis("kl_coef=0:0.5:2"),
            seeds=2, iterations=25)
CHUNK_RUNS = 6   # 12 runs in 2 chunks: one for each of the 2 workers


@pytest.fixture(scope="module")
def local_ray():
    assert connect(num_cpus=2), "a Ray instance was already running in the test process"
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def local_result(upstream):
    return run_grid(make_grid(**GRID), "local", chunk_runs=CHUNK_RUNS, up=upstream)


def assert_same_cells(a: pd.DataFrame, b: pd.DataFrame):
    assert list(a.columns) == list(b.columns) and len(a) == len(b) > 0
    assert (a[["x", "y", "runs", "diverged", "beats_sft"]] == b[["x", "y", "runs", "diverged", "beats_sft"]]).all().all()
    numeric = [c for c in a.columns if c.endswith(("_mean", "_p10", "_p90"))]
    diff = np.abs(a[numeric].to_numpy() - b[numeric].to_numpy()).max()
    assert diff <= TOL, diff


def test_ray_equals_local_for_every_cell(local_ray, local_result):
    chunks = []
    result = run_grid(make_grid(**GRID), "ray", chunk_runs=CHUNK_RUNS,
                      on_progress=lambda p: chunks.append(p.chunks_done))
    assert result.backend == "ray" and result.runs == 12 and not result.stopped
    assert sorted(chunks) == [1, 2]   # progress as each chunk finished
    assert_same_cells(result.cells, local_result.cells)
    assert result.sft == local_result.sft


def test_killed_worker_is_retried_and_the_grid_completes(local_ray, local_result, tmp_path):
    # Each chunk's first attempt leaves a marker and kills its worker process (os._exit).
    result = run_grid(make_grid(**GRID), "ray", chunk_runs=CHUNK_RUNS, crash_dir=str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chunk-0", "chunk-6"]
    assert result.runs == 12 and not result.stopped
    assert_same_cells(result.cells, local_result.cells)
    # without retries the same crash fails the grid, with a one-line message
    again = tmp_path / "again"
    again.mkdir()
    with pytest.raises(GridError, match="chunk 1 of 1 failed after 0 retries") as err:
        run_grid(make_grid(**{**GRID, "x": parse_axis("lr=1e-3:1e-3:1")}), "ray", chunk_runs=CHUNK_RUNS,
                 crash_dir=str(again), max_retries=0)
    assert "\n" not in str(err.value) and "died" in str(err.value).lower()
    assert [p.name for p in again.iterdir()] == ["chunk-0"]


def test_cli_ray_backend_starts_its_own_instance(upstream, tmp_path):
    args = ["--method", "rlvr", "--x", "lr=1e-3:1e-2:2:log", "--y", "group_size=4:8:2",
            "--seeds", "2", "--iterations", "15", "--chunk-runs", "2", "--json"]
    outs = {backend: subprocess.run([sys.executable, "-m", "grpo_core", "grid", *args,
                                     "--backend", backend], cwd=ROOT, text=True,
                                    capture_output=True, timeout=600)
            for backend in ("ray", "local")}
    for out in outs.values():
        assert out.returncode == 0, out.stderr
    ray_out, local_out = (json.loads(outs[b].stdout) for b in ("ray", "local"))
    assert ray_out["backend"] == "ray" and ray_out["runs"] == 8 and ray_out["chunks"] == 4
    assert "chunk 4/4 done: 8/8 runs" in outs["ray"].stderr
    assert_same_cells(pd.DataFrame(ray_out["cells"]), pd.DataFrame(local_out["cells"]))
