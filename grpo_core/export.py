"""Export a GRPOConfig as the equivalent settings of Hugging Face TRL's GRPOConfig.

TRL counts optimizer steps, not iterations: one of our iterations samples prompts x G responses
(one TRL generation batch) and takes epochs x minibatches optimizer steps on it
(num_iterations x steps_per_generation in TRL). Knobs with no TRL equivalent are listed, not
silently dropped.
"""
from __future__ import annotations

from dataclasses import dataclass

from .config import GRPOConfig

# Our advantage estimator -> TRL's scale_rewards (and loss_type where it matters).
_SCALE_REWARDS = {"grpo": "group", "batch_std": "batch", "dr_grpo": "none"}


@dataclass(frozen=True)
class TRLExport:
    """The TRL GRPOConfig keyword arguments, and what could not be mapped (with why)."""

    kwargs: dict
    unmapped: dict[str, str]

    def snippet(self) -> str:
        """Copyable Python: `GRPOConfig(...)` with a comment per knob TRL lacks."""
        lines = ["from trl import GRPOConfig", "", "config = GRPOConfig("]
        lines += [f"    {k}={v!r}," for k, v in self.kwargs.items()]
        lines.append(")")
        if self.unmapped:
            lines += ["", "# Settings of this run with no TRL GRPOConfig equivalent:"]
            lines += [f"#   {k}: {why}" for k, why in self.unmapped.items()]
        return "\n".join(lines)


def to_trl(cfg: GRPOConfig) -> TRLExport:
    """Map cfg onto TRL GRPOConfig arguments (names as in TRL's current GRPOConfig)."""
    steps_per_batch = cfg.epochs * cfg.minibatches
    kw = {
        "num_generations": cfg.group_size,
        "per_device_train_batch_size": cfg.prompts * cfg.group_size // cfg.minibatches,
        "steps_per_generation": cfg.minibatches,
        "num_iterations": cfg.epochs,
        "max_steps": cfg.iterations * steps_per_batch,
        "learning_rate": cfg.lr,
        "beta": cfg.kl_coef,
        "epsilon": cfg.clip_eps,
        "seed": cfg.seed,
    }
    unmapped: dict[str, str] = {}
    if cfg.clip_eps_high:
        kw["epsilon_high"] = cfg.clip_eps_high
    if cfg.dual_clip:
        kw["delta"] = cfg.dual_clip  # two-sided GRPO: the ratio of negative advantages is capped
    if cfg.advantage_estimator in _SCALE_REWARDS:
        kw["scale_rewards"] = _SCALE_REWARDS[cfg.advantage_estimator]
        if cfg.advantage_estimator == "dr_grpo":
            kw["loss_type"] = "dr_grpo"
    else:
        unmapped["advantage_estimator"] = (
            f"{cfg.advantage_estimator!r}: TRL's GRPOTrainer always subtracts the group mean "
            "(use TRL's RLOOTrainer for the leave-one-out baseline)")
    if cfg.kl_coef > 0 and cfg.kl_estimator != "k3":
        unmapped["kl_estimator"] = (f"{cfg.kl_estimator!r}: TRL estimates the KL with k3 on the "
                                    "sampled tokens; 'exact' needs the full distribution")
    if cfg.kl_coef > 0 and cfg.kl_placement == "reward":
        unmapped["kl_placement"] = "'reward': TRL's GRPO puts the KL in the loss (PPOTrainer puts it in the reward)"
    if cfg.entropy_coef:
        unmapped["entropy_coef"] = "TRL has no entropy bonus (verl: entropy_coeff)"
    if cfg.ref_reset_every:
        kw.update(sync_ref_model=True, ref_model_mixup_alpha=1.0,
                  ref_model_sync_steps=cfg.ref_reset_every * steps_per_batch)
    if cfg.dynamic_sampling:
        unmapped["dynamic_sampling"] = "TRL has no DAPO dynamic sampling (verl: filter_groups)"
    if cfg.reward == "verifiable":
        unmapped["reward"] = "pass the verifier as a reward function: GRPOTrainer(reward_funcs=[...])"
    return TRLExport(kw, unmapped)
