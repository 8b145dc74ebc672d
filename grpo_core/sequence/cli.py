"""`python -m grpo_core seq`: sequence GRPO from the command line, flags built from the configs.

    python -m grpo_core seq --loss-type dr_grpo --seeds 8 --json
    python -m grpo_core seq --reward reward_model --rm-length-bias 1.0
    python -m grpo_core seq --loss-type dapo --mask-truncated true --export-trl   # TRL settings, no training

Run settings are unprefixed (--loss-type, --importance-sampling-level, --mask-truncated true);
upstream ones are prefixed (--task-max-length, --sft-steps, --rm-length-bias). grpo_core/cli.py
only registers this subcommand (add_parser, run).
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

from ..cli import (Group, UsageError, _int_flag, _plain, _records, make_config, _help, MAX_SEEDS,
                   add_export_flag, export_output)
from ..config import ConfigError, config_fields
from .config import (SeqGRPOConfig, SeqRewardModelConfig, SeqSFTConfig, SeqTaskConfig,
                     check_seq_budget)

TASK = Group("task", SeqTaskConfig, "task-", "sequence task (SeqTaskConfig)")
SFT = Group("sft", SeqSFTConfig, "sft-", "supervised fine-tuning (SeqSFTConfig)")
RM = Group("rm", SeqRewardModelConfig, "rm-", "reward model, for --reward reward_model (SeqRewardModelConfig)")
RUN = Group("seq", SeqGRPOConfig, "", "sequence GRPO run (SeqGRPOConfig)")
GROUPS = (TASK, SFT, RM, RUN)
HELP = "GRPO on multi-token responses: loss aggregation, GSPO, CISPO, overlong handling, exact length metrics."
SHOWN = ("reward", "length", "length_correct", "length_wrong", "p_truncated", "kl_ref", "entropy")
TRUE, FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def add_parser(sub) -> None:
    """Register `seq` on the subparsers of grpo_core.cli.build_parser."""
    p = sub.add_parser("seq", help=HELP, description=HELP)
    for group in GROUPS:
        arg_group = p.add_argument_group(group.title)
        for f in config_fields(group.cls):
            choices = f.metadata.get("choices")
            if isinstance(f.default, bool):
                metavar, text = "{true,false}", f"{f.metadata['help']} Default {str(f.default).lower()}."
            else:
                metavar = "{" + ",".join(choices) + "}" if choices else type(f.default).__name__.upper()
                text = _help(group, f)
            arg_group.add_argument(group.flag(f.name), dest=group.dest(f.name), default=None,
                                   metavar=metavar, help=text.replace("%", "%%") if isinstance(f.default, bool) else text)
    p.add_argument("--seeds", default="1", metavar="N",
                   help=f"Runs with seeds seed .. seed+N-1, trained as one batch. Range 1 to {MAX_SEEDS}; default 1.")
    p.add_argument("--json", action="store_true", help="Print one JSON object instead of tables.")
    add_export_flag(p)


def _config(group: Group, args):
    """make_config, with true/false parsed for boolean fields."""
    overrides = {}
    for f in config_fields(group.cls):
        if isinstance(f.default, bool):
            raw = getattr(args, group.dest(f.name), None)
            if raw is None:
                continue
            if raw.lower() not in TRUE | FALSE:
                raise UsageError(f"{group.flag(f.name)} must be true or false, got {raw!r}")
            overrides[f.name] = raw.lower() in TRUE
            setattr(args, group.dest(f.name), None)
    return make_config(group, args, **overrides)


def mean_history(results) -> pd.DataFrame:
    """Per-iteration mean over runs of every history column (runs that stopped early drop out)."""
    return pd.concat([r.history for r in results]).groupby("iteration", as_index=False).mean()


def run(args) -> tuple[dict, str]:
    from .metrics import sequence_metrics
    from .trainer import build_seq_upstream, train_seq
    task_cfg, sft_cfg, rm_cfg, cfg = (_config(g, args) for g in GROUPS)
    if args.export_trl:
        out, text = export_output("seq", cfg, task_cfg)
        return {**out, "task": task_cfg.to_dict()}, text
    n_seeds = _int_flag("--seeds", args.seeds, 1, MAX_SEEDS)
    try:
        configs = [cfg.replace(seed=cfg.seed + i) for i in range(n_seeds)]
    except ConfigError as e:
        raise UsageError(f"--seed + --seeds - 1 {str(e).split(': ', 1)[1]}") from None
    try:
        check_seq_budget(configs, task_cfg)
    except ConfigError as e:
        raise UsageError(str(e).split(": ", 1)[1]) from None
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
           "sft": sft, "history": _records(history), "final": final,
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
