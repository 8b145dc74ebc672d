"""grpo_core: a small, exact, batched torch implementation of GRPO on a toy task.

    from grpo_core import build_upstream, run_many, GRPOConfig, RLVRConfig
    up = build_upstream()                          # task, SFT policy, reward model (defaults)
    grpo, rlvr = run_many(up, [GRPOConfig(), RLVRConfig()])
    print(grpo.history[["iteration", "true_reward", "kl_ref"]].tail())

No streamlit here: the app, the CLI and notebooks all call the same functions.
"""
from .config import (ConfigError, GRPOConfig, PolicyOptimizationConfig, ProblemConfig, RLVRConfig,
                     RewardModelConfig, SFTConfig, MAX_WORK_PER_REQUEST, check_budget, config_fields,
                     field_range)
from .advantages import ADVANTAGE_ESTIMATORS, group_advantages
from .losses import aggregation_weights, grpo_loss
from .trainer import BATCH_COLUMNS, EXACT_COLUMNS, GRPOTrainer, RunResult, train_grpo
from .metrics import pairwise_accuracy, policy_metrics
from .pipeline import (NotebookReport, Upstream, band, build_upstream, compare_table,
                       notebook_configs, reference_metrics, run_many, run_notebook, seed_configs,
                       sweep_configs)
from .problem import Problem, make_problem
from .reward_model import RewardModelResult, train_reward_model
from .sft import SFTResult, train_sft

__all__ = [name for name in dir() if not name.startswith("_")]
