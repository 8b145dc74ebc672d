"""Configs of the landscape's other online methods, all trained by the GRPO engine as members:

    PPO (RLHF)    one response per prompt, a learned critic V(c), A = whiten(r - beta k1 - V(c)),
                  clipped surrogate, KL in the reward (InstructGPT; TRL PPOTrainer)
    REINFORCE++   one response per prompt, A = whiten(r - beta k1) over the batch (Hu 2025)
    ReMax         A = r - r(greedy response), one extra (greedy) response per prompt (Li et al. 2023)

For one-token responses GAE has no next state: A = r - V(c) and the return is r, whatever gamma
and lambda (see critic.py). Budgets: PPO and REINFORCE++ sample 64 prompts x 1 response per
iteration and ReMax 8 prompts x (7 sampled + 1 greedy): each generates GRPO's 8 x 8 = 64.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..advantages import ALL_ESTIMATORS
from ..config import GRPOConfig, knob, knob_default

ESTIMATOR_NAMES = tuple(ALL_ESTIMATORS)
_HELP = "Baseline and scale of the advantage: " + "; ".join(
    f"{name} = {text}" for name, text in ALL_ESTIMATORS.items()) + "."


@dataclass(frozen=True)
class ReinforcePPConfig(GRPOConfig):
    """REINFORCE++: one response per prompt, rewards (KL in them) whitened over the batch."""

    prompts: int = knob_default(GRPOConfig, "prompts", 64, help="Prompts sampled per iteration (with "
                                "replacement), one response each by default (64 = GRPO's 8 prompts "
                                "x 8 responses).")
    group_size: int = knob_default(GRPOConfig, "group_size", 1, lo=1, help="Responses sampled per "
                                   "prompt; 1 in REINFORCE++ and PPO.")
    advantage_estimator: str = knob_default(GRPOConfig, "advantage_estimator", "reinforce_pp",
                                            choices=ESTIMATOR_NAMES, help=_HELP)
    kl_estimator: str = knob_default(
        GRPOConfig, "kl_estimator", "k1",
        help="How the KL is estimated: exact sum over tokens, or from the sampled token with k1 = "
             "log(pi/pi_ref) (InstructGPT, TRL PPO), k2 or k3.")
    kl_placement: str = knob_default(
        GRPOConfig, "kl_placement", "reward",
        help="Where the KL penalty goes: subtracted from the reward before advantages (PPO-RLHF, "
             "REINFORCE++) or added to the loss.")


@dataclass(frozen=True)
class PPOConfig(ReinforcePPConfig):
    """PPO (RLHF): a learned critic V(c) as the baseline, whitened advantages, KL in the reward."""

    advantage_estimator: str = knob_default(ReinforcePPConfig, "advantage_estimator", "critic")
    critic_hidden: int = knob(16, 4, 256, "Hidden units of the critic V(c), a network of its own.")
    critic_lr: float = knob(1e-2, 1e-5, 1.0, "Adam learning rate of the critic (its own optimizer).",
                            log=True)
    vf_coef: float = knob(0.1, 0.0, 10.0, "Weight of the value loss (TRL vf_coef); with the critic's "
                          "own Adam it scales the loss, which moves a step only through Adam's epsilon.")
    cliprange_value: float = knob(0.2, 0.0, 10.0, "Value clip: V may move at most this far from its "
                                  "value at sampling time per batch (TRL cliprange_value); 0 is off.")


@dataclass(frozen=True)
class ReMaxConfig(GRPOConfig):
    """ReMax: the greedy response's reward as the baseline; 8 prompts x (7 sampled + 1 greedy)."""

    group_size: int = knob_default(GRPOConfig, "group_size", 7, lo=1, help="Responses sampled per "
                                   "prompt, besides the greedy one (7 + 1 greedy = GRPO's 8).")
    advantage_estimator: str = knob_default(GRPOConfig, "advantage_estimator", "remax",
                                            choices=ESTIMATOR_NAMES, help=_HELP)

    @property
    def samples_per_iteration(self) -> int:
        return self.prompts * (self.group_size + 1)


def remax_config(seed: int = 0, **changes) -> ReMaxConfig:
    return ReMaxConfig(seed=seed, **changes)


def responses_per_iteration(cfg: GRPOConfig) -> int:
    """Responses a config generates per iteration, counting ReMax's greedy response."""
    return cfg.prompts * (cfg.group_size + (cfg.advantage_estimator == "remax"))
