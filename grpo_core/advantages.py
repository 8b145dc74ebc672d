"""Advantage estimators: how a group's rewards become the per-sample weights of the policy gradient.

ADVANTAGE_ESTIMATORS is the one registry of names and help texts: config.py takes the choices and
the help of GRPOConfig.advantage_estimator from it, and the CLI, the app's widgets, the URL guard
and the Gradient-noise page read it from there. Formulas, for a group of n valid rewards r_1..r_n
(stds Bessel-corrected, over n - 1):

    grpo       A_i = (r_i - mean_g r) / (std_g r + eps)                  DeepSeekMath GRPO
    dr_grpo    A_i = r_i - mean_g r                                      Dr. GRPO
    batch_std  A_i = (r_i - mean_g r) / (std r over the whole batch + eps)
    rloo       A_i = r_i - (sum_g r - r_i) / (n - 1)  = n/(n-1) (r_i - mean_g r)   RLOO
    none       A_i = r_i                                                  plain REINFORCE

and the landscape's methods (METHOD_ESTIMATORS), whose baseline is not the group's, so a group
of equal rewards still carries signal:

    reinforce_pp  A = whiten_batch(r)                                     REINFORCE++
    remax      A_i = r_i - r(greedy response to the prompt)               ReMax
    critic     A = whiten_batch(r - V(c))                                 PPO (GAE, one step)

with whiten_batch(x) = (x - mean) / sqrt(var + 1e-8) over the member's valid samples (var
Bessel-corrected), as TRL's masked_whiten; remax and critic take their baseline from the trainer.

This module imports nothing from the rest of grpo_core, so config.py can read it.
"""
from __future__ import annotations

import functools

import torch

# Added to the std before dividing. TRL divides by (std + 1e-4) (grpo_trainer.py,
# `advantages / (std_rewards + 1e-4)`); we keep the notebook's 1e-8. Groups whose rewards are all
# equal get exactly 0 either way (see advantages()), so eps only matters for nearly equal rewards.
ADV_EPS = 1e-8

# name -> help text (what the baseline and the scale are, and where the name comes from), in the
# order the widgets list them. The formulas are in the module docstring and in advantages().
ADVANTAGE_ESTIMATORS: dict[str, str] = {
    "grpo": "group mean and std (DeepSeekMath GRPO; TRL's default)",
    "dr_grpo": "group mean only (Dr. GRPO; TRL scale_rewards='none')",
    "batch_std": "group mean, std over the whole batch (TRL scale_rewards='batch')",
    "rloo": "leave-one-out mean of the other responses (RLOO, Ahmadian et al. 2024)",
    "none": "no baseline, A = r (plain REINFORCE)",
}

# Estimators of the landscape's other methods (methods/ppo.py): not offered on GRPOConfig, only
# set by those methods' own configs. remax and critic take a per-prompt baseline from the trainer.
METHOD_ESTIMATORS: dict[str, str] = {
    "reinforce_pp": "no group baseline, rewards whitened over the member's whole batch "
                    "(REINFORCE++, Hu 2025; with the KL in the reward)",
    "remax": "the reward of the greedy response to the prompt, one extra response per prompt "
             "(ReMax, Li et al. 2023)",
    "critic": "a learned critic V(c), whitened over the batch: GAE for one-token responses "
              "(PPO-RLHF, InstructGPT; TRL PPOTrainer)",
}
ALL_ESTIMATORS = {**ADVANTAGE_ESTIMATORS, **METHOD_ESTIMATORS}
BASELINE_ESTIMATORS = ("remax", "critic")
WHITEN_EPS = 1e-8       # TRL's masked_whiten: (x - mean) * rsqrt(var + 1e-8)

# The help of GRPOConfig.advantage_estimator, for its widget, CLI flag and URL setting.
ESTIMATOR_HELP = "Baseline and scale of the advantage: " + "; ".join(
    f"{name} = {text}" for name, text in ADVANTAGE_ESTIMATORS.items()) + "."


def _total(x: torch.Tensor, dims: int = 1) -> torch.Tensor:
    """Sum over the last `dims` dimensions, accumulated strictly in order (a cumulative sum).

    Zeros padded in for the entries of a smaller group leave an in-order sum bit-for-bit
    unchanged, whereas torch.sum's vectorized order depends on the padded length. This is what
    keeps a member of a batch with larger groups on exactly its solo trajectory.
    """
    return x.flatten(-dims).cumsum(-1)[..., -1:].unflatten(-1, (1,) * dims)


def whiten(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(x - mean) / sqrt(var + 1e-8) over each member's valid entries (E, P, G); var unbiased."""
    n = valid.sum((-1, -2), keepdim=True).clamp_min(2)
    dev = torch.where(valid, x - _total(torch.where(valid, x, 0.0), 2) / n, 0.0)
    return dev * torch.rsqrt(_total(dev.square(), 2) / (n - 1) + WHITEN_EPS)


def advantages(rewards: torch.Tensor, valid: torch.Tensor | None = None,
               estimator: str = "grpo", eps: float = ADV_EPS, baseline: torch.Tensor | None = None):
    """rewards (E, P, G), valid (E, P, G) bool or None -> (advantages (E, P, G), zero_std (E, P)).
    baseline (E, P) or (E, P, G): the per-prompt (or per-sample) baseline of remax and critic
    (the greedy reward, or V(c)).

    estimator is one of ADVANTAGE_ESTIMATORS (n = valid group size, stds Bessel-corrected):
        grpo       (r - mean_g) / (std_g + eps)
        dr_grpo    r - mean_g
        batch_std  (r - mean_g) / (std over the member's whole batch + eps)
        rloo       r_i - (sum_g r - r_i) / (n - 1)
        none       r
    Every estimator gives 0 to invalid entries; those with a baseline give exactly 0 to a group
    whose rewards are all equal (it carries no signal; float round-off would otherwise remain).
    """
    _check(estimator)
    if valid is None:
        valid = torch.ones_like(rewards, dtype=torch.bool)
    masked, zero_std = _masked(rewards, valid)
    return _advantages(rewards, valid, estimator, eps, baseline, masked, zero_std)


def _check(estimator: str) -> None:
    if estimator not in ALL_ESTIMATORS:
        raise ValueError(f"unknown advantage estimator {estimator!r}; "
                         f"one of {', '.join(ALL_ESTIMATORS)}")


def _masked(rewards: torch.Tensor, valid: torch.Tensor):
    """What every estimator starts from: rewards with 0 at invalid entries (E, P, G), and which
    groups' valid rewards are all equal (E, P, 1)."""
    hi = torch.where(valid, rewards, -torch.inf).amax(-1, keepdim=True)
    lo = torch.where(valid, rewards, torch.inf).amin(-1, keepdim=True)
    return torch.where(valid, rewards, 0.0), hi <= lo


def _advantages(rewards, valid, estimator, eps, baseline, masked, zero_std):
    """advantages() given _masked's (masked, zero_std)."""
    if estimator == "none":
        return masked, zero_std.squeeze(-1)
    if estimator in METHOD_ESTIMATORS:
        if estimator in BASELINE_ESTIMATORS:
            if baseline is None:
                raise ValueError(f"the {estimator} estimator needs a per-prompt baseline")
            rewards = rewards - (baseline if baseline.dim() == rewards.dim() else baseline.unsqueeze(-1))
        adv = rewards if estimator == "remax" else whiten(rewards, valid)
        return torch.where(valid, adv, 0.0), zero_std.squeeze(-1)
    n = valid.sum(-1, keepdim=True).clamp_min(2)
    total = _total(masked)
    if estimator == "rloo":
        adv = masked - (total - masked) / (n - 1)
    else:
        dev = torch.where(valid, rewards - total / n, 0.0)
        if estimator == "grpo":
            adv = dev / ((_total(dev.square()) / (n - 1)).sqrt() + eps)
        elif estimator == "batch_std":
            n_b = valid.sum((-1, -2), keepdim=True).clamp_min(2)
            dev_b = torch.where(valid, rewards - _total(masked, 2) / n_b, 0.0)
            adv = dev / ((_total(dev_b.square(), 2) / (n_b - 1)).sqrt() + eps)
        else:
            adv = dev
    return torch.where(zero_std | ~valid, 0.0, adv), zero_std.squeeze(-1)


def group_advantages(rewards: torch.Tensor, valid: torch.Tensor | None = None, eps: float = ADV_EPS):
    """rewards (E, P, G), valid (E, P, G) bool or None (all valid)
    -> (advantages (E, P, G), zero_std (E, P) bool).

        A_pg = (r_pg - mean_g r_pg) / (std_g r_pg + eps),   std with Bessel's correction (G - 1).

    A group whose rewards are all equal carries no signal: its advantages are exactly 0 (the
    formula would otherwise divide float round-off by eps). Invalid entries get advantage 0.
    """
    return advantages(rewards, valid, "grpo", eps)


def member_advantages(estimators, rewards: torch.Tensor, valid: torch.Tensor,
                      baseline: torch.Tensor | None = None):
    """Advantages (E, P, G) with each member's own estimator (estimators: E names), and the
    zero-std flags (E, P). baseline (E, P, G): the remax and critic members' baselines, 0 on the
    other members' rows; then reinforce_pp's whiten(r) is critic's whiten(r - 0), one computation."""
    if baseline is not None:
        estimators = ["critic" if k == "reinforce_pp" else k for k in estimators]
    kinds = _kinds(tuple(estimators))
    masked, zero_std = _masked(rewards, valid)        # shared by every estimator
    for kind, _ in kinds:
        _check(kind)
    (first, _), *others = kinds
    adv, zero_std_p = _advantages(rewards, valid, first, ADV_EPS, baseline, masked, zero_std)
    for kind, use in others:
        other, _ = _advantages(rewards, valid, kind, ADV_EPS, baseline, masked, zero_std)
        adv = torch.where(use, other, adv)
    return adv, zero_std_p


@functools.lru_cache(maxsize=64)
def _kinds(estimators: tuple) -> list:
    """The distinct estimators, sorted, each with its members' mask (E, 1, 1) (built once per
    batch's estimator list, not every iteration)."""
    return [(kind, torch.tensor([k == kind for k in estimators]).view(-1, 1, 1))
            for kind in sorted(set(estimators))]
