"""Random draws that belong to one run: explicit generators, inverse-CDF sampling."""
from __future__ import annotations

import torch


def generator(seed: int) -> torch.Generator:
    """A CPU generator owned by one run; the process-wide RNG is never touched."""
    return torch.Generator().manual_seed(int(seed))


def sample_categorical(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draws: probs (..., V), u (..., K) uniform in [0, 1) -> tokens (..., K) int64.

    token = #{v : cdf[v] <= u}, the first v whose cumulative probability exceeds u. Drawing the
    uniforms separately from the distribution makes a run's randomness depend only on its own
    generator, never on what else is computed in the same batch.
    """
    tokens = torch.searchsorted(probs.cumsum(-1), u, right=True)
    return tokens.clamp_max_(probs.shape[-1] - 1)
