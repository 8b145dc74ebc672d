"""The sequence engine: GRPO on responses of several tokens, trained and measured exactly.

    from grpo_core.sequence import SeqGRPOConfig, run_seq
    up, (grpo, dr) = run_seq([SeqGRPOConfig(loss_type="grpo"), SeqGRPOConfig(loss_type="dr_grpo")])
    print(grpo.history[["iteration", "reward", "length_correct", "length_wrong"]].tail())

Every response of every context is enumerated (task.py), so expected reward, KL, entropy and
the length statistics are exact sums each iteration (metrics.py); the losses and their
aggregations follow TRL and verl (losses.py); the trainer is batched over members (trainer.py).
"""
from .config import (IMPORTANCE_LEVELS, LOSS_TYPES, SeqGRPOConfig, SeqRewardModelConfig,
                     SeqSFTConfig, SeqTaskConfig)
from .losses import AGGREGATIONS, aggregate, per_token_loss
from .onpolicy import onpolicy_token_gradients
from .metrics import (METRICS, difficulty_weights, first_reaching, length_changes, sample_responses_text, sequence_metrics,
                      top_responses)
from .policy import SeqPolicyNet, train_reward_model, train_sft
from .task import SeqTask, enumerate_responses, make_task
from .trainer import BATCH_COLUMNS, SeqTrainer, run_seq, train_seq
from .upstream import SeqUpstream, build_seq_upstream

__all__ = [name for name in dir() if not name.startswith("_")]
