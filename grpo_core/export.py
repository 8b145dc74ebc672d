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
    """Map cfg onto TRL GRPOConfig arguments (names as in TRL's current GRPOConfig).

    Only arguments TRL accepts are emitted; a knob that TRL cannot express exactly is listed in
    `unmapped` with why. Checked against TRL's grpo_config.py and grpo_trainer.py (late 2026).
    """
    p, g, m = cfg.prompts, cfg.group_size, cfg.minibatches
    unmapped: dict[str, str] = {}
    if (p * g) % m:
        # TRL splits a generation batch into steps_per_generation equal minibatches of
        # per_device_train_batch_size samples: P x G must be a multiple of the minibatch count.
        unmapped["minibatches"] = (
            f"{m} minibatches do not divide the {p} x {g} = {p * g} samples of a batch: TRL needs "
            f"equal minibatches, so this export takes one optimizer step per epoch on the whole batch")
        m = 1
    elif m > 1:
        # TRL's _prepare_inputs shuffles the generation batch's samples, then splits it.
        unmapped["minibatches"] = (
            f"mapped to steps_per_generation={m}, but not exactly: TRL shuffles the {p * g} samples "
            f"and cuts them into {m} minibatches of {p * g // m}, while here each minibatch holds "
            "whole groups (the prompts p with p x minibatches // prompts equal to its index)")
    steps_per_batch = cfg.epochs * m
    kw = {
        "num_generations": g,
        "per_device_train_batch_size": p * g // m,
        "steps_per_generation": m,
        "num_iterations": cfg.epochs,
        "max_steps": cfg.iterations * steps_per_batch,
        "learning_rate": cfg.lr,
        # TRL's defaults decay the learning rate linearly to 0 and clip gradients at norm 1.0;
        # this explorer's Adam does neither.
        "lr_scheduler_type": "constant",
        "max_grad_norm": 0.0,
        "beta": cfg.kl_coef,
        "epsilon": cfg.clip_eps,
        # One-token responses: with this, every TRL loss_type averages exactly as here (dr_grpo
        # divides by max_completion_length; see losses.aggregation_weights).
        "max_completion_length": 1,
        "seed": cfg.seed,
    }
    if cfg.clip_eps_high:
        kw["epsilon_high"] = cfg.clip_eps_high
    if cfg.dual_clip:
        if cfg.dual_clip >= 1 + cfg.upper_clip_eps:
            # TRL's two-sided GRPO caps the unclipped ratio at delta for every sample; with
            # delta >= 1 + epsilon_high that changes only negative-advantage samples, exactly our
            # dual clip max(obj, c A).
            kw["delta"] = cfg.dual_clip
        else:
            unmapped["dual_clip"] = (
                f"c = {cfg.dual_clip} is below 1 + epsilon_high = {1 + cfg.upper_clip_eps:g}: TRL's "
                "delta caps the ratio of positive-advantage samples too, a different loss; "
                "exact only for c >= 1 + epsilon_high")
    if cfg.advantage_estimator in _SCALE_REWARDS:
        kw["scale_rewards"] = _SCALE_REWARDS[cfg.advantage_estimator]
        # bnpo averages over the minibatch's tokens, as here; TRL's default dapo would divide by
        # the whole generation batch's tokens (a factor 1/minibatches).
        kw["loss_type"] = "dr_grpo" if cfg.advantage_estimator == "dr_grpo" else "bnpo"
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
        # TRL's entropy is that of the policy at each completion token: with one-token responses,
        # the entropy of pi(. | c) averaged over the batch's samples, as here.
        kw["entropy_coef"] = cfg.entropy_coef
    if cfg.ref_reset_every:
        if cfg.kl_coef > 0:
            kw.update(sync_ref_model=True, ref_model_mixup_alpha=1.0,
                      ref_model_sync_steps=cfg.ref_reset_every * steps_per_batch)
        else:
            unmapped["ref_reset_every"] = ("with kl_coef = 0 there is no reference to reset; TRL "
                                           "rejects sync_ref_model=True with beta=0")
    if cfg.dynamic_sampling:
        unmapped["dynamic_sampling"] = "TRL has no DAPO dynamic sampling (verl: filter_groups)"
    if cfg.reward == "verifiable":
        unmapped["reward"] = "pass the verifier as a reward function: GRPOTrainer(reward_funcs=[...])"
    return TRLExport(kw, unmapped)
