"""The whole workflow, stage by stage: task -> SFT -> reward model -> GRPO / RLVR / sweeps.

`Upstream` bundles what every policy-optimization run starts from. Runs of any mix of configs
(seeds, group sizes, GRPO and RLVR) go through :func:`run_many`, which trains them as one batch.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from .config import GRPOConfig, ProblemConfig, RLVRConfig, RewardModelConfig, SFTConfig, offset_seed
from .trainer import RunResult, train_grpo
from .metrics import policy_metrics
from .problem import Problem, make_problem
from .reward_model import RewardModelResult, train_reward_model
from .sft import SFTResult, train_sft


@dataclass(frozen=True)
class Upstream:
    """The task, the SFT policy (also the frozen reference) and the reward model."""

    problem: Problem
    sft: SFTResult
    rm: RewardModelResult

    @property
    def configs(self) -> tuple[ProblemConfig, SFTConfig, RewardModelConfig]:
        return self.problem.config, self.sft.config, self.rm.config


def build_upstream(problem_cfg: ProblemConfig = ProblemConfig(), sft_cfg: SFTConfig = SFTConfig(),
                   rm_cfg: RewardModelConfig = RewardModelConfig()) -> Upstream:
    problem = make_problem(problem_cfg)
    return Upstream(problem, train_sft(problem, sft_cfg), train_reward_model(problem, rm_cfg))


def run_many(up: Upstream, configs: Sequence[GRPOConfig],
             on_iteration: Callable[[int, int], bool | None] | None = None) -> list[RunResult]:
    """Train any mix of GRPO and RLVR configs together from the same upstream; one result each."""
    return train_grpo(up.problem, up.sft, up.rm.scores, configs, on_iteration)


def seed_configs(cfg: GRPOConfig, n_seeds: int) -> list[GRPOConfig]:
    """n_seeds copies of cfg with seeds cfg.seed, cfg.seed + 1, ... (mod 2**31: after the largest
    seed, 2**31 - 1, comes 0)."""
    return [cfg.replace(seed=offset_seed(cfg.seed, i)) for i in range(n_seeds)]


def sweep_configs(cfg: GRPOConfig, group_sizes: Sequence[int], n_seeds: int) -> list[GRPOConfig]:
    """Every (group size, seed) pair, group size major."""
    return [c for g in group_sizes for c in seed_configs(cfg.replace(group_size=int(g)), n_seeds)]


def reference_metrics(up: Upstream, per_context: bool = False) -> dict[str, np.ndarray]:
    """Exact metrics of the SFT (reference) policy itself: where every run starts."""
    out = policy_metrics(up.sft.logp, up.problem, up.rm.scores, up.sft.logp, per_context)
    return {k: v.numpy() for k, v in out.items()}


def band(histories: Sequence[pd.DataFrame], column: str, x: str = "iteration",
         lo: float = 0.1, hi: float = 0.9) -> pd.DataFrame:
    """Mean and [lo, hi] quantiles of `column` across runs at each x (runs aligned on x).

    Returns columns x, mean, lo, hi, n (how many runs reached that x).
    """
    frames = [h[[x, column]].set_index(x)[column] for h in histories]
    wide = pd.concat(frames, axis=1)
    return pd.DataFrame({x: wide.index.to_numpy(), "mean": wide.mean(axis=1).to_numpy(),
                         "lo": wide.quantile(lo, axis=1).to_numpy(),
                         "hi": wide.quantile(hi, axis=1).to_numpy(),
                         "n": wide.count(axis=1).to_numpy()})


def compare_table(up: Upstream, runs: dict[str, Sequence[RunResult]]) -> pd.DataFrame:
    """Per-context exact expected true reward: SFT, each method (mean over its runs), the best.

    For each method also its spread over runs (min and max) and how many runs beat SFT in that
    context. The last row, 'overall', averages the contexts (prompts are uniform).
    """
    sft = up.sft
    sft_ctx = policy_metrics(sft.logp, up.problem, per_context=True)["true_reward"].numpy()
    table = pd.DataFrame({"context": [str(c) for c in range(up.problem.n_contexts)],
                          "correct_token": up.problem.correct_token.numpy(), "sft": sft_ctx})
    for name, results in runs.items():
        per_run = np.stack([r.per_context["true_reward"].to_numpy() for r in results])  # (R, C)
        table[name] = per_run.mean(0)
        table[f"{name}_min"] = per_run.min(0)
        table[f"{name}_max"] = per_run.max(0)
        table[f"{name}_improved"] = (per_run > sft_ctx).sum(0)
        table[f"{name}_runs"] = len(results)
    table["best"] = up.problem.best_reward.numpy()
    overall = {c: table[c].mean() for c in table.columns if c not in ("context", "correct_token")}
    for name, results in runs.items():
        overall[f"{name}_improved"] = sum(
            r.per_context["true_reward"].mean() > sft_ctx.mean() for r in results)
        overall[f"{name}_runs"] = len(results)
    overall.update(context="overall", correct_token=-1)
    return pd.concat([table, pd.DataFrame([overall])], ignore_index=True)


NOTEBOOK_SWEEP = (2, 4, 8, 16)


@dataclass(frozen=True)
class NotebookReport:
    up: Upstream
    grpo: RunResult
    sweep: list[RunResult]
    rlvr: RunResult
    compute_seconds: float

    def table(self) -> pd.DataFrame:
        """context, sft, grpo, rlvr, best: exact expected true reward, plus the overall row."""
        t = compare_table(self.up, {"grpo": [self.grpo], "rlvr": [self.rlvr]})
        return t[["context", "sft", "grpo", "rlvr", "best"]]

    @property
    def rlvr_accuracy(self) -> float:
        """Mean over contexts of the RLVR policy's probability of the correct token."""
        return float(self.rlvr.per_context["correct_prob"].mean())


def notebook_configs(seed: int = 42):
    """The notebook's hyperparameters; one seed drives every stage, as its global seed did."""
    grpo = GRPOConfig(iterations=500, prompts=8, group_size=8, lr=1e-3, kl_coef=0.05,
                      clip_eps=0.2, epochs=2, seed=seed)
    return {
        "problem": ProblemConfig(seed=seed), "sft": SFTConfig(seed=seed),
        "rm": RewardModelConfig(seed=seed), "grpo": grpo,
        "sweep": [grpo.replace(iterations=300, group_size=g) for g in NOTEBOOK_SWEEP],
        "rlvr": RLVRConfig(iterations=500, prompts=8, group_size=16, lr=1e-3, kl_coef=0.05,
                           clip_eps=0.2, epochs=1, seed=seed),
    }


def run_notebook(seed: int = 42) -> NotebookReport:
    """The notebook's whole workflow. GRPO, the group-size sweep and RLVR are independent once
    SFT and the reward model exist, so they train together as one batch of six runs."""
    start = time.perf_counter()
    cfg = notebook_configs(seed)
    up = build_upstream(cfg["problem"], cfg["sft"], cfg["rm"])
    results = run_many(up, [cfg["grpo"], *cfg["sweep"], cfg["rlvr"]])
    return NotebookReport(up, results[0], results[1:-1], results[-1], time.perf_counter() - start)
