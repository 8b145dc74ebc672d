"""The local backend: a grid's chunks trained one after another in this process."""
from __future__ import annotations

from typing import Sequence

from ..pipeline import build_upstream
from .plan import Grid
from .results import sft_finals, train_chunk


def run_local(grid: Grid, plan: Sequence[range], on_chunk, on_fraction=None, up=None,
              setup: dict | None = None) -> dict:
    """Train the chunks in order, the upstream built once (or `up`, already built); on_chunk(index,
    finals) as each finishes, on_fraction(runs done) inside chunks; either returning False stops.
    Returns the SFT start's metrics."""
    up = up if up is not None else build_upstream(grid.problem, grid.sft, grid.rm)
    configs, done = grid.configs(), 0
    for i, members in enumerate(plan):
        def tick(it, total, base=done, n=len(members)):
            if on_fraction is not None:
                return on_fraction(base + n * it / max(total, 1))
        finals = train_chunk(up, [configs[m] for m in members], tick)
        if finals is None or on_chunk(i, finals) is False:
            break
        done += len(members)
    return sft_finals(up)
