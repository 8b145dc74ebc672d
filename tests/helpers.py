"""Small helpers several test modules share (plain functions, no fixtures)."""
from __future__ import annotations

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
