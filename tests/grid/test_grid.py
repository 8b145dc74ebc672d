"""Hyperparameter grids (grid/): axes, the chunk plan, per-cell statistics, stop and resume."""
from __future__ import annotations

import json
from pathlib import Path
import numpy as np
import pytest
from grpo_core import GRPOConfig, RLVRConfig, run_many, seed_configs
from grpo_core.config import MAX_WORK_PER_REQUEST, check_budget, request_work
from grpo_core.grid import (MAX_CHUNK_BYTES, CELL_METRICS, GridError, Progress, chunk_plan,
                            grid_from_dict, make_grid, member_bytes, parse_axis,
                            run_grid)


ROOT = Path(__file__).resolve().parents[2]


def test_linear_and_log_axes():
    assert parse_axis("kl_coef=0:0.5:6").values == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
    lr = parse_axis("lr=1e-4:1e-1:4:log")
    assert lr.values == (1e-4, 1e-3, 1e-2, 1e-1) and lr.log and lr.spec == "lr=0.0001:0.1:4:log"
    assert parse_axis("clip_eps=0.2:0.2:1").values == (0.2,)
    assert parse_axis("kl_coef=0:10:16").values[-1] == 10.0   # the range's ends are reachable


def test_whole_number_axes_are_rounded_and_deduplicated():
    assert parse_axis("group_size=2:4:5").values == (2, 3, 4)      # 2, 2.5, 3, 3.5, 4 rounded
    sizes = parse_axis("group_size=2:64:6:log").values
    assert sizes == (2, 4, 8, 16, 32, 64) and all(isinstance(v, int) for v in sizes)
    assert parse_axis("epochs=1:3:3", RLVRConfig).values == (1, 2, 3)


@pytest.mark.parametrize("spec, words", [
    ("lr", "must be field=lo:hi:count"),
    ("lr=1e-4:1e-1", "must be field=lo:hi:count"),
    ("lr=1e-4:1e-1:4:lin", "must be field=lo:hi:count"),
    ("foo=1:2:3", "'foo' is not a setting of GRPOConfig"),
    ("kl_estimator=0:1:2", "not a numeric setting"),
    ("seed=0:4:2", "seed cannot be an axis"),
    ("lr=a:1:3", "lo and hi must be numbers"),
    ("lr=1e-4:1e-1:x", "count must be a whole number"),
    ("lr=1e-4:1e-1:0", "1 to 16, got 0"),
    ("lr=1e-4:1e-1:17", "1 to 16, got 17"),
    ("lr=1e-4:2:4", "the high end must be 1e-05 to 1.0, got 2"),
    ("kl_coef=-1:0.5:4", "the low end must be 0.0 to 10.0, got -1"),
    ("lr=1e-1:1e-4:4", "the low end 0.1 is above the high end 0.0001"),
    ("lr=1e-4:inf:4", "must be a finite number"),
    ("kl_coef=0:0.5:4:log", "a log axis needs a low end above 0"),
    ("group_size=2.5:8:3", "group_size is a whole number"),
    ("lr=1e-4:1e-1:1", "one value needs low end = high end"),
])
def test_bad_axis_specs_name_the_problem(spec, words):
    with pytest.raises(GridError, match=None) as err:
        parse_axis(spec)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_bad_grids():
    lr, kl = parse_axis("lr=1e-3:1e-2:2"), parse_axis("kl_coef=0:0.1:2")
    with pytest.raises(GridError, match="different settings"):
        make_grid("grpo", kl, kl, 2)
    with pytest.raises(GridError, match="seeds must be 1 to 16"):
        make_grid("grpo", lr, kl, 17)
    with pytest.raises(GridError, match="method must be one of grpo, rlvr"):
        make_grid("ppo", lr, kl, 2)
    with pytest.raises(GridError, match=r"cell .*minibatches: must be at most prompts \(8\)"):
        make_grid("grpo", lr, parse_axis("minibatches=1:16:4"), 2)
    with pytest.raises(GridError, match="over the limit"):  # one run alone over the work cap
        make_grid("grpo", parse_axis("iterations=5000:5000:1"), parse_axis("epochs=16:16:1"), 1,
                  GRPOConfig(prompts=64, group_size=64))


def test_members_are_cell_major_with_consecutive_seeds():
    grid = make_grid("rlvr", parse_axis("lr=1e-3:1e-2:2", RLVRConfig),
                     parse_axis("group_size=4:8:2", RLVRConfig), 3, RLVRConfig(seed=5), iterations=7)
    configs = grid.configs()
    assert len(configs) == grid.runs == 12
    assert all(type(c) is RLVRConfig and c.iterations == 7 for c in configs)
    assert [(c.lr, c.group_size, c.seed) for c in configs[:6]] == [
        (1e-3, 4, 5), (1e-3, 4, 6), (1e-3, 4, 7), (1e-3, 8, 5), (1e-3, 8, 6), (1e-3, 8, 7)]
    assert grid.member_configs(range(4, 9)) == configs[4:9]
    assert grid_from_dict(json.loads(json.dumps(grid.to_dict()))) == grid


@pytest.mark.parametrize("chunk_runs", [1, 4, 5, 64, 256])
def test_chunk_plan_covers_members_in_whole_cells(chunk_runs):
    grid = make_grid("grpo", parse_axis("lr=1e-3:1e-2:3"), parse_axis("kl_coef=0:0.1:4"), 4)
    plan = chunk_plan(grid, chunk_runs)
    assert [m for chunk in plan for m in chunk] == list(range(grid.runs))
    for chunk in plan:
        assert len(chunk) <= max(chunk_runs, 1)
        if chunk_runs >= grid.seeds:  # whole cells when a cell fits
            assert chunk.start % grid.seeds == 0 and len(chunk) % grid.seeds == 0


def test_chunk_plan_bounds_work_and_memory():
    # 16 runs of 8,192,000 work each: 12 fit in a request, so the work cap splits them.
    heavy = make_grid("grpo", parse_axis("prompts=64:64:1"), parse_axis("group_size=64:64:1"), 16,
                      GRPOConfig(iterations=1000, epochs=2))
    # 256 runs of 5000 iterations: trainer memory splits them, though their work is small.
    big = make_grid("grpo", parse_axis("lr=1e-3:1e-2:4"), parse_axis("kl_coef=0:0.1:4"), 16,
                    GRPOConfig(iterations=5000, epochs=1, prompts=1, group_size=2))
    for grid in (heavy, big):
        configs = grid.configs()
        plan = chunk_plan(grid, 256)
        assert len(plan) > 1
        for chunk in plan:
            members = [configs[m] for m in chunk]
            check_budget(members)   # raises if over MAX_WORK_PER_REQUEST
            assert sum(member_bytes(c) for c in members) <= MAX_CHUNK_BYTES
    assert request_work(heavy.configs()) > MAX_WORK_PER_REQUEST  # the whole grid would not fit


SMALL = dict(method="grpo", x=parse_axis("lr=1e-3:3e-2:2:log"), y=parse_axis("kl_coef=0:0.5:2"),
             seeds=3, iterations=30)


@pytest.fixture(scope="module")
def small_grid():
    return make_grid(**SMALL)


@pytest.fixture(scope="module")
def small_result(small_grid, upstream):
    return run_grid(small_grid, chunk_runs=6, up=upstream)


def test_cells_are_the_statistics_of_their_members_runs(small_grid, small_result, upstream):
    # Each chunk is one run_many batch. (Sampling turns last-bit differences between batch shapes
    # into different tokens now and then, so runs are compared in the batch they trained in.)
    configs, finals = small_grid.configs(), {}
    for chunk in chunk_plan(small_grid, 6):
        for m, r in zip(chunk, run_many(upstream, [configs[m] for m in chunk])):
            finals[m] = r
    cells = small_result.cells
    assert len(cells) == 4 and small_result.runs == 12 and not small_result.stopped
    assert small_result.chunks == 2
    for k, (xv, yv) in enumerate(small_grid.cells):
        row = cells.iloc[k]
        assert (row["x"], row["y"]) == (xv, yv)
        runs = [finals[k * 3 + s] for s in range(3)]
        assert [r.config for r in runs] == seed_configs(small_grid.cell_config(xv, yv), 3)
        for name, column in CELL_METRICS.items():
            v = np.array([r.history[column].iloc[-1] for r in runs], dtype=float)
            np.testing.assert_allclose(row[f"{name}_mean"], v.mean(), rtol=0, atol=1e-7)
            np.testing.assert_allclose(row[f"{name}_p10"], np.quantile(v, 0.1), rtol=0, atol=1e-7)
            np.testing.assert_allclose(row[f"{name}_p90"], np.quantile(v, 0.9), rtol=0, atol=1e-7)
        assert row["true_reward_p10"] <= row["true_reward_mean"] <= row["true_reward_p90"]
        assert row["beats_sft"] == (row["true_reward_mean"] > small_result.sft["true_reward"])
    # the axes matter: different cells learned different policies, and no KL penalty drifts further
    assert cells["true_reward_mean"].nunique() == 4
    assert (cells.loc[cells.y == 0.0, "kl_mean"].to_numpy()
            > cells.loc[cells.y == 0.5, "kl_mean"].to_numpy()).all()


def test_stop_keeps_the_finished_cells(small_grid, small_result, upstream):
    seen = []

    def stop_after_first_chunk(p: Progress):
        seen.append(p)
        return False if p.chunks_done == 1 else None

    result = run_grid(small_grid, chunk_runs=6, up=upstream, on_progress=stop_after_first_chunk)
    assert result.stopped and result.chunks == 1 and result.runs == 6
    assert len(result.cells) == 2
    np.testing.assert_array_equal(result.cells.drop(columns="beats_sft").to_numpy(),
                                  small_result.cells.iloc[:2].drop(columns="beats_sft").to_numpy())
    fractions = [p.fraction for p in seen]
    assert fractions == sorted(fractions) and 0 < fractions[0] < 0.5 and fractions[-1] == 0.5

    # resumed from the members it kept: only the second chunk trains, and the map is complete
    kept = {}
    run_grid(small_grid, chunk_runs=6, up=upstream, finals=kept,
             on_progress=lambda p: False if p.chunks_done == 1 else None)
    assert sorted(kept) == list(range(6))
    seen.clear()
    resumed = run_grid(small_grid, chunk_runs=6, up=upstream, finals=kept, on_progress=seen.append)
    assert not resumed.stopped and seen[0].runs_done == 6 and seen[-1].chunks_done == 2
    np.testing.assert_array_equal(resumed.cells.drop(columns="beats_sft").to_numpy(),
                                  small_result.cells.drop(columns="beats_sft").to_numpy())

    # stopped inside the first chunk: no cell has all its seeds, so none is shown
    early = run_grid(small_grid, chunk_runs=6, up=upstream,
                     on_progress=lambda p: False if p.done > 1 else None)
    assert early.stopped and early.runs == 0 and early.cells.empty


def test_member_finals_of_a_run_without_history(upstream):
    import dataclasses
    from grpo_core.grid import member_finals
    (run,) = run_many(upstream, [GRPOConfig(iterations=12, lr=0.01)])
    (full,) = member_finals([run])
    # a run that diverged at its first iteration keeps no history row: its per-context table
    # (exact metrics of its final policy, uniform over contexts) gives the same numbers
    (empty,) = member_finals([dataclasses.replace(run, history=run.history.iloc[:0], status="diverged")])
    for name in CELL_METRICS:
        np.testing.assert_allclose(empty[name], full[name], atol=1e-6)
    assert empty["status"] == "diverged" and full["status"] == "finished"
