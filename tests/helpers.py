"""Small helpers several test modules share (plain functions, no fixtures)."""
from __future__ import annotations

import contextlib
import threading

import numpy as np
import pandas as pd
import torch
from torch import nn

# The exact metrics every one-token run records after each iteration.
EXACT = ["true_reward", "kl_ref", "entropy", "correct_prob", "rm_reward"]
F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_all_finite(frame: pd.DataFrame):
    values = frame.select_dtypes("number").to_numpy(dtype=float)
    assert np.isfinite(values).all(), frame[~np.isfinite(values).all(1)]


def sequential(sd):
    """nn.Sequential(Linear, ReLU, Linear) holding a state dict of a policy (one-token or sequence)."""
    d, h, v = sd["0.weight"].shape[1], sd["0.weight"].shape[0], sd["2.weight"].shape[0]
    module = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, v))
    module.load_state_dict(sd)
    return module


@contextlib.contextmanager
def float64():
    """Build and train in float64 (torch's default dtype, restored afterwards): the engines then
    run in float64 end to end, so two ways of computing the same run (the batched engine's
    hand-written gradients and a reference's autograd) can be compared without float32 round-off,
    which Adam's first steps amplify (they divide near-zero gradient components by their own size)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def assert_histories_close(got: pd.DataFrame, want: pd.DataFrame, atol: float, rtol: float = 0.0):
    """Same columns, same iterations, every value within atol + rtol |want| (NaN where NaN)."""
    assert list(got.columns) == list(want.columns) and len(got) == len(want)
    pd.testing.assert_frame_equal(got, want, check_exact=False, atol=atol, rtol=rtol, check_dtype=False)


def assert_same_run(got, want, atol: float = 1e-5):
    """Two RunResults of one config (the reference's and the engine's): status, history, final
    policy over every response, weights and final exact metrics, each within atol."""
    assert got.status == want.status and list(got.per_context.columns) == list(want.per_context.columns)
    assert_histories_close(got.history, want.history, atol=atol)
    torch.testing.assert_close(got.final_logp, want.final_logp, atol=atol, rtol=0)
    assert got.state_dict.keys() == want.state_dict.keys()
    for key, value in want.state_dict.items():
        torch.testing.assert_close(got.state_dict[key], value, atol=atol, rtol=0)
    assert all(abs(got.final[k] - v) <= atol or (v != v and got.final[k] != got.final[k])
               for k, v in want.final.items())


def at_once(request, n: int = 2, timeout: float = 120) -> list:
    """request(i) for i in 0 .. n-1, each in its own thread, all released together; their results."""
    results, start = [None] * n, threading.Barrier(n)

    def run(i):
        start.wait()
        results[i] = request(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    return results
