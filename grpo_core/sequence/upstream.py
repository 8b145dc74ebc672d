"""What every sequence run starts from: the task, the SFT policy (the frozen reference) and,
when a run trains on it, the reward model."""
from __future__ import annotations

from dataclasses import dataclass

from .config import SeqRewardModelConfig, SeqSFTConfig, SeqTaskConfig
from .policy import SeqRewardModelResult, SeqSFTResult, train_reward_model, train_sft
from .task import SeqTask, make_task


@dataclass(frozen=True)
class SeqUpstream:
    """The task, the SFT policy (the frozen reference) and the reward model (None if not needed)."""

    task: SeqTask
    sft: SeqSFTResult
    rm: SeqRewardModelResult | None


def build_seq_upstream(task_cfg: SeqTaskConfig = SeqTaskConfig(), sft_cfg: SeqSFTConfig = SeqSFTConfig(),
                       rm_cfg: SeqRewardModelConfig | None = None) -> SeqUpstream:
    """Draw the task and train SFT; the reward model too when rm_cfg is given."""
    task = make_task(task_cfg)
    return SeqUpstream(task, train_sft(task, sft_cfg),
                       None if rm_cfg is None else train_reward_model(task, rm_cfg))
