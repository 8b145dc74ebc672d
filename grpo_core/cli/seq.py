"""`python -m grpo_core seq`: sequence GRPO from the command line, flags built from the configs.

    python -m grpo_core seq --loss-type dr_grpo --seeds 8 --json
    python -m grpo_core seq --reward reward_model --rm-length-bias 1.0
    python -m grpo_core seq --loss-type dapo --mask-truncated true --export-trl   # TRL settings, no training

Run settings are unprefixed (--loss-type, --importance-sampling-level, --mask-truncated true);
upstream ones are prefixed (--task-max-length, --sft-steps, --rm-length-bias).
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

from ..pipeline import seed_configs
from ..sequence.config import (SeqGRPOConfig, SeqRewardModelConfig, SeqSFTConfig, SeqTaskConfig,
                               check_seq_budget)
from ..sequence.metrics import sequence_metrics
from ..sequence.trainer import train_seq
from ..sequence.upstream import build_seq_upstream
from .flags import MAX_SEEDS, Command, Group, checked, export_output, int_flag, make_config, records

TASK = Group("task", SeqTaskConfig, "task-", "sequence task (SeqTaskConfig)")
SFT = Group("sft", SeqSFTConfig, "sft-", "supervised fine-tuning (SeqSFTConfig)")
RM = Group("rm", SeqRewardModelConfig, "rm-", "reward model, for --reward reward_model (SeqRewardModelConfig)")
RUN = Group("seq", SeqGRPOConfig, "", "sequence GRPO run (SeqGRPOConfig)")
GROUPS = (TASK, SFT, RM, RUN)
SHOWN = ("reward", "length", "length_correct", "length_wrong", "p_truncated", "kl_ref", "entropy")


def mean_history(results) -> pd.DataFrame:
    """Per-iteration mean over runs of every history column (runs that stopped early drop out)."""
    return pd.concat([r.history for r in results]).groupby("iteration", as_index=False).mean()


def cmd_seq(args) -> tuple[dict, str]:
    task_cfg, sft_cfg, rm_cfg, cfg = (make_config(g, args) for g in GROUPS)
    if args.export_trl:
        out, text = export_output("seq", cfg, task_cfg)
        return {**out, "task": task_cfg.to_dict()}, text
    n_seeds = int_flag("--seeds", args.seeds, 1, MAX_SEEDS)
    configs = seed_configs(cfg, n_seeds)
    checked(check_seq_budget, configs, task_cfg)
    start = time.perf_counter()
    up = build_seq_upstream(task_cfg, sft_cfg, rm_cfg if cfg.reward == "reward_model" else None)
    results = train_seq(up, configs)
    seconds = time.perf_counter() - start
    rm_scores = up.rm.scores if up.rm is not None else None
    sft = {k: float(v) for k, v in sequence_metrics(up.sft.seq_logp, up.task, up.sft.seq_logp, rm_scores).items()}
    history = mean_history(results)
    final = {k: float(np.mean([r.final[k] for r in results])) for k in results[0].final}
    out = {"command": "seq",
           "config": {g.key: c.to_dict() for g, c in zip(GROUPS, (task_cfg, sft_cfg, rm_cfg, cfg))},
           "seeds": [c.seed for c in configs], "responses_per_context": up.task.responses.n,
           "sft": sft, "history": records(history), "final": final,
           "runs": [{"seed": r.config.seed, "iterations": r.completed_iterations, "status": r.status,
                     **r.final} for r in results],
           "seconds": seconds}
    shown = [k for k in SHOWN] + (["rm_reward"] if rm_scores is not None else [])
    every = max(1, len(history) // 10)
    thin = history.iloc[list(range(every - 1, len(history), every))][["iteration", *shown, "grad_cosine"]]
    text = "\n".join([
        f"Sequence GRPO: {n_seeds} run(s), loss_type {cfg.loss_type}, importance_sampling_level "
        f"{cfg.importance_sampling_level}, advantage {cfg.advantage_estimator}; {cfg.iterations} "
        f"iterations x {cfg.prompts} prompts x G={cfg.group_size}; {up.task.responses.n:,} responses "
        f"per context (alphabet {task_cfg.alphabet_size}, L {task_cfg.max_length}), all exact",
        "", "Final exact metrics (mean over runs) vs the SFT reference:",
        pd.DataFrame({"metric": shown, "sft": [sft[k] for k in shown],
                      "final": [final[k] for k in shown]}).to_string(index=False, float_format=lambda x: f"{x:.4f}"),
        "", "History (mean over runs):", thin.to_string(index=False, float_format=lambda x: f"{x:.4f}"),
        "", *[f"seed {r.config.seed}: {r.status}" for r in results if r.status],
        f"trained in {seconds:.2f}s"])
    return out, text


COMMANDS = (
    Command("seq", "GRPO on multi-token responses: loss aggregation, GSPO, CISPO, overlong handling, "
            "exact length metrics.", cmd_seq, GROUPS, seeds=1, export=True),
)
