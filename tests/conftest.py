"""Shared fixtures: the repository root on sys.path, and one default Upstream per test session."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from grpo_core import Upstream, build_upstream  # noqa: E402

# One intra-op thread, as the app and the CLI use: the tensors are tiny, so extra threads only add
# overhead (on this shared 2-core machine they make the suite ~10x slower). Thread count can change
# results in the last float bit, so tests compare runs made in this same process, never stored values.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def upstream() -> Upstream:
    """The default task (the notebook's, seed 42), its SFT policy and reward model: built once."""
    return build_upstream()
