"""What every engine shares: one RunResult, a batch advanced a few iterations at a time, each
member's last finite state kept when it diverges, and the history table built from one
declaration of its columns.

    trainer = GRPOTrainer(problem, sft, rm_table, configs)   # or SeqTrainer(up, configs), ...
    trainer.advance(50)          # 50 more iterations (fewer at the end)
    partial = trainer.results()  # the runs so far, one RunResult each
    trainer.advance()            # to the end

An engine subclasses ResumableTrainer and implements _iterate (one iteration of every member),
_observe (record the policy the iteration left) and results(). Charts, pins, exports, the grid
and the Ray backend read RunResult alone, whatever engine made it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import pandas as pd
import torch

DIVERGED_ADVICE = "Lower the learning rate or raise the KL coefficient."


@dataclass(frozen=True)
class RunResult:
    """One run of any engine: its config, per-iteration history, final policy and its exact metrics.

    final_logp holds log pi(y | c) of every response y of every context c: (C, V) when a response
    is one token, (C, N) over the N enumerated responses of the sequence task.
    """

    config: Any
    history: pd.DataFrame          # iteration, samples, the engine's exact columns, its batch columns
    final: dict                    # exact metrics of the final policy (mean over contexts)
    per_context: pd.DataFrame      # context, the exact metrics per context
    final_logp: torch.Tensor       # (C, responses)
    state_dict: dict               # the final policy's weights, nn.Sequential(Linear, ReLU, Linear) keys
    status: str = ""               # "" (finished), "stopped" (by request) or "diverged"

    @property
    def completed_iterations(self) -> int:
        return len(self.history)

    @property
    def stopped(self) -> str:
        """Why the run ended before config.iterations, as a sentence ("" if it did not)."""
        n, total = self.completed_iterations, self.config.iterations
        if self.status == "diverged":
            return (f"Stopped after {n} of {total} iterations: the policy's parameters became "
                    f"non-finite. {DIVERGED_ADVICE}")
        return f"Stopped after {n} of {total} iterations." if self.status == "stopped" else ""

    @property
    def nbytes(self) -> int:
        """Measured memory: history, per-context table, final policy and weights."""
        frames = (self.history, self.per_context)
        return (sum(int(f.memory_usage(index=True, deep=True).sum()) for f in frames)
                + self.final_logp.nbytes + sum(t.nbytes for t in self.state_dict.values()) + 1024)


@dataclass(frozen=True)
class HistoryColumns:
    """An engine's history, declared once: exact metrics of the policy after each iteration's
    update, then statistics of the iteration's batch, whose first is the responses it generated
    (the history's cumulative `samples`)."""

    exact: tuple[str, ...]
    batch: tuple[str, ...]

    def frame(self, exact: dict[str, Any], batch: torch.Tensor) -> pd.DataFrame:
        """exact {name: (n,) values} (a missing name is left out), batch (n, len(self.batch))."""
        n = batch.shape[0]
        table = {"iteration": torch.arange(1, n + 1).numpy(),
                 "samples": batch[:, 0].round().long().cumsum(0).numpy()}
        table.update({k: exact[k].numpy() for k in self.exact if k in exact})
        table.update({k: batch[:, j].numpy() for j, k in enumerate(self.batch) if j})
        return pd.DataFrame(table)


def run_status(kept: int, iterations: int, done: int) -> str:
    """A member's status from the iterations it kept, its own iterations and the batch's done."""
    if kept < min(iterations, done):
        return "diverged"
    return "stopped" if kept < iterations else ""


class ResumableTrainer:
    """A batch of runs that is advanced a few iterations at a time (live training, Stop) and
    stopped where it is. A subclass sets `t_max` (the most iterations of a member), calls
    _start_tracking, and implements _iterate, _observe and results."""

    t_max: int
    iteration: int = 0              # iterations done
    end: int = 0                    # where the batch stops (earlier on request or divergence)

    @property
    def total(self) -> int:
        return self.t_max

    @property
    def finished(self) -> bool:
        return self.iteration >= self.end

    def stop(self) -> None:
        """End every run at the current iteration (results keep what is done)."""
        self.end = self.iteration

    def advance(self, n: int | None = None,
                on_iteration: Callable[[int, int], bool | None] | None = None) -> int:
        """Run up to n more iterations (all that remain if None); returns the iterations done.
        on_iteration(done, total) after each one; returning False stops the batch there."""
        target = self.end if n is None else min(self.end, self.iteration + n)
        while self.iteration < target and self.iteration < self.end:
            self._iterate()
            self.iteration += 1
            self._after_iteration()
            self._observe()
            if on_iteration is not None and on_iteration(self.iteration, self.total) is False:
                self.stop()
        return self.iteration

    def _iterate(self) -> None:
        raise NotImplementedError

    def _observe(self) -> None:
        raise NotImplementedError

    def _after_iteration(self) -> None:
        """Work between an iteration's update and the observation of its policy."""

    # ---- divergence: a member whose policy or loss becomes non-finite keeps its last finite state

    def _start_tracking(self, n_members: int, t_max: int, **state: torch.Tensor) -> None:
        """Track `state` (name -> (E, ...) tensor, e.g. theta) for divergence, from iteration 0."""
        self.t_max, self.iteration, self.end = t_max, 0, t_max
        self.first_bad = torch.full((n_members,), t_max + 1)   # first iteration that was not finite
        self.diverged = False
        self.last_finite = {name: value.clone() for name, value in state.items()}

    def _keep_last_finite(self, it: int, all_finite: bool, finite: Callable[[], torch.Tensor],
                          **state: torch.Tensor) -> None:
        """Record iteration it's state; members not finite (finite() (E,) bool, asked only when
        all_finite is False or a member has diverged before) keep their last finite one."""
        if all_finite and not self.diverged:
            for name, value in state.items():
                self.last_finite[name].copy_(value)
            return
        ok = finite()
        self.first_bad = torch.where(~ok & (self.first_bad > it), it, self.first_bad)
        keep = self.first_bad > it
        for name, value in state.items():
            shape = (-1,) + (1,) * (value.dim() - 1)
            self.last_finite[name] = torch.where(keep.view(shape), value, self.last_finite[name])
        self.diverged = True
        if not bool(keep.any()):
            self.end = it

    def _mark_not_finite(self, it: int, bad: torch.Tensor) -> None:
        """Members bad (E,) had a non-finite loss or gradient at iteration it."""
        self.first_bad = torch.where(bad & (self.first_bad > it), it, self.first_bad)
        self.diverged = True

    def _kept_iterations(self, iterations: torch.Tensor) -> torch.Tensor:
        """(E,) iterations each member keeps: its own, up to a stop, before any divergence."""
        return torch.minimum(iterations.clamp_max(self.iteration), self.first_bad - 1)


def result_from_records(config, columns: HistoryColumns, exact: list[dict], records: list, per_context: dict,
                        final_logp: torch.Tensor, state_dict: dict, status: str = "") -> RunResult:
    """A RunResult from one run's records, as a loop that trains one run keeps them (the
    reference implementations): exact[0] the start's metrics then one dict per iteration, records
    one row of batch values per iteration (columns.batch order), per_context {column: (C,)}."""
    history = columns.frame({k: torch.stack([torch.as_tensor(e[k]) for e in exact[1:]]) for k in exact[0]}
                            if records else {},
                            torch.tensor([[float(x) for x in row] for row in records]).view(len(records), -1))
    final = {k: float(exact[-1][k]) for k in columns.exact if k in exact[-1]}
    per_context = {k: v.detach().numpy() if torch.is_tensor(v) else v for k, v in per_context.items()}
    return RunResult(config, history, final, pd.DataFrame(per_context), final_logp,
                     {k: t.detach().clone() for k, t in state_dict.items()}, status)
