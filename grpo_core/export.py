"""Export a run's config as the equivalent settings of Hugging Face TRL's GRPOConfig: the one-token
engine's GRPOConfig, or the sequence engine's SeqGRPOConfig with its SeqTaskConfig.

TRL counts optimizer steps, not iterations: one of our iterations samples prompts x G responses
(one TRL generation batch) and takes epochs x minibatches optimizer steps on it
(num_iterations x steps_per_generation in TRL). Both engines share these knobs
(PolicyOptimizationConfig), so they share their mapping; the sequence engine adds its loss_type,
importance_sampling_level, truncation masking and max_completion_length. Knobs with no exact TRL
equivalent are listed, not silently dropped.

Checked by TRL 1.16 itself (tests/core/test_trl.py, with requirements-trl.txt): trl.GRPOConfig
accepts every exported config and reads each field back, and GRPOTrainer._compute_loss gives the
sequence engine's loss and gradient on the same batch. TRL's defaults the explorer does not
share are exported explicitly (bf16, use_bias_correction_kl, the scheduler, gradient clipping).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .advantages import METHOD_ESTIMATORS
from .config import GRPOConfig, PolicyOptimizationConfig
from .sequence.config import SeqGRPOConfig, SeqTaskConfig

# Our advantage estimator -> TRL's scale_rewards (and loss_type where it matters).
_SCALE_REWARDS = {"grpo": "group", "batch_std": "batch", "dr_grpo": "none"}
# TRL GRPOConfig.loss_type's values.
TRL_LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo")
# The sequence engine's loss_type -> TRL's: TRL's names are themselves; verl's loss_agg_mode names go
# to the TRL name with the same aggregation (sequence/losses.py), or None where TRL has none.
SEQ_LOSS_TYPES_TO_TRL = {
    "grpo": "grpo", "bnpo": "bnpo", "dr_grpo": "dr_grpo", "dapo": "dapo", "luspo": "luspo",
    "cispo": "cispo", "seq-mean-token-mean": "grpo", "token-mean": "bnpo",
    "seq-mean-token-sum": "luspo", "seq-mean-token-sum-norm": None}
# TRL's loss types whose entropy bonus is ours: TRL always takes the token mean of the entropy
# over the step's tokens, the explorer aggregates it like the loss (dapo / cispo: over the batch's
# tokens per minibatch, the same when there is one minibatch).
ENTROPY_EXACT = ("bnpo",)
# Methods the GRPO trainer trains here that TRL's GRPOTrainer cannot (one response per prompt,
# or a baseline from outside the group), and where TRL or verl has them.
METHOD_TRAINERS = {"critic": "PPO: TRL's PPOTrainer (trl.experimental.ppo) or verl adv_estimator=gae",
                   "reinforce_pp": "REINFORCE++: verl adv_estimator=reinforce_plus_plus",
                   "remax": "ReMax: verl adv_estimator=remax"}


@dataclass(frozen=True)
class TRLExport:
    """The TRL GRPOConfig keyword arguments, and what could not be mapped (with why)."""

    kwargs: dict
    unmapped: dict[str, str]
    why: dict = field(default_factory=dict)     # argument -> why it is exported (a TRL default differs)

    def snippet(self) -> str:
        """Copyable Python: `GRPOConfig(...)` with a comment per knob TRL lacks."""
        lines = ["from trl import GRPOConfig", "", "config = GRPOConfig("]
        lines += [f"    {k}={v!r},{f'  # {self.why[k]}' if k in self.why else ''}" for k, v in self.kwargs.items()]
        lines.append(")")
        if self.unmapped:
            lines += ["", "# Settings of this run with no exact TRL GRPOConfig equivalent:"]
            lines += [f"#   {k}: {why}" for k, why in self.unmapped.items()]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"kwargs": dict(self.kwargs), "unmapped": dict(self.unmapped)}


def to_trl(cfg: PolicyOptimizationConfig, task: SeqTaskConfig | None = None) -> TRLExport:
    """Map cfg onto TRL GRPOConfig arguments (names as in TRL's current GRPOConfig).

    A GRPOConfig (one-token responses) needs nothing else; a SeqGRPOConfig needs its task, whose
    max_length is TRL's max_completion_length. Only arguments TRL accepts are emitted; a knob that
    TRL cannot express exactly is listed in `unmapped` with why.
    """
    if isinstance(cfg, SeqGRPOConfig):
        if not isinstance(task, SeqTaskConfig):
            raise TypeError("a SeqGRPOConfig exports with its SeqTaskConfig: TRL's "
                            "max_completion_length is the task's max_length")
        return _seq_to_trl(cfg, task)
    if not isinstance(cfg, GRPOConfig):
        raise TypeError(f"no TRL export for {type(cfg).__name__}")
    if cfg.advantage_estimator in METHOD_ESTIMATORS:
        raise ValueError(f"no TRL GRPOConfig trains {type(cfg).__name__}: TRL's GRPOTrainer needs a group of at "
                         "least 2 responses per prompt and takes its baseline from the group; for "
                         f"{METHOD_TRAINERS[cfg.advantage_estimator]}")
    # One-token responses: with max_completion_length 1, every TRL loss_type averages exactly as
    # here (dr_grpo divides by max_completion_length; see losses.aggregation_weights).
    kw, unmapped = _shared(cfg, max_completion_length=1)
    if cfg.advantage_estimator in _SCALE_REWARDS:
        # bnpo averages over the minibatch's tokens, as here; TRL's default dapo would divide by
        # the whole generation batch's tokens (a factor 1/minibatches).
        kw["loss_type"] = "dr_grpo" if cfg.advantage_estimator == "dr_grpo" else "bnpo"
    return TRLExport(kw, unmapped, dict(WHY))


# The TRL defaults this explorer does not share, exported explicitly (argument -> why).
WHY = {"bf16": "the explorer trains in float32; TRL's default is bf16 mixed precision where the hardware has it",
       "use_bias_correction_kl": "k3 as is, as the explorer trains it; TRL's default multiplies it by the ratio",
       "lr_scheduler_type": "a constant learning rate, as here (TRL's default decays it linearly to 0)",
       "max_grad_norm": "no gradient clipping, as here (TRL's default clips at norm 1.0)"}


def _shared(cfg: PolicyOptimizationConfig, max_completion_length: int) -> tuple[dict, dict[str, str]]:
    """The mapping of the knobs both engines share: batch and steps, learning rate, clipping, KL,
    advantages, entropy, reference resets, dynamic sampling, reward."""
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
        "bf16": False,
        "beta": cfg.kl_coef,
        "use_bias_correction_kl": False,
        "epsilon": cfg.clip_eps,
        "max_completion_length": max_completion_length,
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
    return kw, unmapped


def _seq_to_trl(cfg: SeqGRPOConfig, task: SeqTaskConfig) -> TRLExport:
    """The shared mapping, then the sequence engine's loss: loss_type, ratio level, truncation."""
    big_l = task.max_length
    kw, unmapped = _shared(cfg, max_completion_length=big_l)
    trl_loss = SEQ_LOSS_TYPES_TO_TRL[cfg.loss_type]
    if trl_loss is None:
        b = kw["per_device_train_batch_size"]
        unmapped["loss_type"] = (
            f"TRL has no loss_type {cfg.loss_type!r} (verl's loss_agg_mode): exported as the closest, "
            f"dr_grpo (token sum / (B L)), which is this loss divided by the constant B = {b}, so "
            "Adam takes the same steps up to its epsilon")
        trl_loss = "dr_grpo"
    if trl_loss == "luspo" and cfg.importance_sampling_level != "sequence":
        unmapped["importance_sampling_level"] = (
            "'token' with luspo (verl's seq-mean-token-sum: 1/B sum_s sum_t l): TRL computes exactly this "
            "but warns that luspo is meant for importance_sampling_level='sequence'")
    if cfg.entropy_coef and trl_loss not in ENTROPY_EXACT and not (trl_loss in ("dapo", "cispo") and
                                                                    kw["steps_per_generation"] == 1):
        unmapped["entropy_coef"] = (
            f"exported, but not exact with loss_type {trl_loss}: TRL adds the token mean of the entropy over "
            "the step's tokens, the explorer aggregates the per-token entropy like the loss")
    kw["loss_type"] = trl_loss
    kw["importance_sampling_level"] = cfg.importance_sampling_level
    kw["mask_truncated_completions"] = cfg.mask_truncated
    if cfg.loss_type == "cispo":
        # TRL's cispo weight is min(ratio, epsilon_high): epsilon_high is the cap, not 1 + eps.
        kw["epsilon_high"] = cfg.cispo_cap
        kw.pop("delta", None)
        unmapped.pop("dual_clip", None)
        if cfg.dual_clip:
            unmapped["dual_clip"] = "no effect with loss_type cispo (here and in TRL: its weight is only capped)"
    if cfg.overlong_buffer:
        weight = "" if cfg.overlong_factor == 1 else f", with reward_weights giving it {cfg.overlong_factor:g}"
        unmapped["overlong_buffer"] = (
            "TRL's GRPOConfig has no overlong buffer: DAPO's soft overlong punishment is a reward "
            f"function there, trl.rewards.get_soft_overlong_punishment(max_completion_len={big_l}, "
            f"soft_punish_cache={cfg.overlong_buffer}), added to reward_funcs{weight}")
    return TRLExport(kw, unmapped, dict(WHY))
