"""Configuration: one frozen dataclass per stage of the pipeline.

Every field is declared with :func:`knob`, which records its valid range and a one-sentence help
text. The app's widgets, the CLI's flags, validation and cache keys are all derived from these
dataclasses, so a setting exists in exactly one place.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from .advantages import ADVANTAGE_ESTIMATORS as _ESTIMATOR_REGISTRY, ESTIMATOR_HELP

C = TypeVar("C")

# A cap on the work one request may ask for (iterations x epochs x prompts x group size x seeds):
# it keeps a single request on a shared host to seconds, not minutes, of CPU.
MAX_WORK_PER_REQUEST = 100_000_000
# SFT and reward-model training: at most this many steps, and steps x hidden units.
MAX_PRETRAIN_STEPS = 10_000
MAX_PRETRAIN_WORK = 1_000_000


SEED_MODULUS = 2**31   # every seed field takes 0 .. 2**31 - 1


def offset_seed(seed: int, k: int) -> int:
    """The k-th seed after `seed`, wrapping past 2**31 - 1 to 0, so every seed a widget accepts
    works with every number of seeds."""
    return (int(seed) + int(k)) % SEED_MODULUS


def knob(default, lo=None, hi=None, help: str = "", choices=None, log: bool = False):
    """A config field with its valid range [lo, hi] (or choices) and a one-sentence help text."""
    meta = {"lo": lo, "hi": hi, "help": help, "choices": choices, "log": log}
    return field(default=default, metadata=meta)


_KEEP = object()


def knob_default(base: type, name: str, default: Any = _KEEP, **changes):
    """Redeclare base's field `name` in a subclass with a new default, reusing the base's range,
    choices and help; `changes` (help, lo, hi, choices, log) replace only what they name.

        lr: float = knob_default(PolicyOptimizationConfig, "lr", 2e-3)
    """
    inherited = {f.name: f for f in fields(base)}
    if name not in inherited:
        raise TypeError(f"{base.__name__} has no field {name!r}")
    unknown = sorted(set(changes) - {"lo", "hi", "help", "choices", "log"})
    if unknown:
        raise TypeError(f"knob_default: unknown setting {unknown[0]!r}")
    f = inherited[name]
    return field(default=f.default if default is _KEEP else default, metadata={**f.metadata, **changes})


class ConfigError(ValueError):
    """A config value is out of range or of the wrong type: `field_name` names the field (or
    what to change), `detail` says what is wrong; str() is "field_name: detail"."""

    def __init__(self, name: str, detail: str):
        super().__init__(f"{name}: {detail}")
        self.field_name, self.detail = name, detail


def field_range(cfg_type: type, name: str) -> str:
    """Human-readable valid range of one field, e.g. '2 to 64' or 'one of a, b'."""
    meta = {f.name: f.metadata for f in fields(cfg_type)}[name]
    if meta.get("choices"):
        return "one of " + ", ".join(map(str, meta["choices"]))
    return f"{meta['lo']} to {meta['hi']}"


def _check_field(cfg_type: type, f: dataclasses.Field, value: Any) -> Any:
    """Return `value` coerced to the field's type, or raise ConfigError naming the field and
    its valid range."""
    kind = type(f.default)
    meta = f.metadata
    valid = field_range(cfg_type, f.name) if (meta.get("choices") or meta.get("lo") is not None) else ""

    def bad(expected: str):
        if meta.get("choices"):
            raise ConfigError(f.name, f"must be {valid}, got {value!r}")
        raise ConfigError(f.name, f"must be {expected}{' from ' + valid if valid else ''}, got {value!r}")

    if kind is bool:
        if not isinstance(value, bool):
            bad("true or false")
        return value
    if kind is int:
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value) or value != int(value)):
            bad("a whole number")
        value = int(value)
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            bad("a finite number")
        value = float(value)
    elif kind is str and not isinstance(value, str):
        bad("text")
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(f.name, f"must be {valid}, got {value!r}")
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and not (lo <= value <= hi):
        raise ConfigError(f.name, f"must be {valid}, got {value!r}")
    return value


class _Validated:
    """Mixin: validate every field on construction, and round-trip through plain dicts."""

    def __post_init__(self):
        for f in fields(self):
            object.__setattr__(self, f.name, _check_field(type(self), f, getattr(self, f.name)))
        self.check()

    def check(self) -> None:
        """Checks across fields; raise ConfigError naming the field to change."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls: type[C], data: dict, *, strict: bool = True) -> C:
        """Build from a dict; with strict, unknown keys are an error naming them."""
        if not isinstance(data, dict):
            raise ConfigError(cls.__name__, f"expected an object of settings, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        extra = sorted(set(data) - names)
        if strict and extra:
            raise ConfigError(extra[0], f"unknown setting for {cls.__name__}")
        return cls(**{k: v for k, v in data.items() if k in names})

    def replace(self: C, **changes) -> C:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class ProblemConfig(_Validated):
    """The hidden toy task: contexts with random embeddings and true preferences over tokens."""

    n_contexts: int = knob(5, 2, 12, "Number of distinct prompts (contexts) in the toy task.")
    vocab_size: int = knob(10, 2, 32, "Number of tokens a response can be (each response is one token).")
    context_dim: int = knob(8, 2, 32, "Size of each context's random embedding vector.")
    pref_scale: float = knob(2.0, 0.1, 10.0, "Sharpness of the true preferences: softmax(scale x Gaussian scores).")
    seed: int = knob(42, 0, 2**31 - 1, "Seed of the hidden task (embeddings and true preferences).")


@dataclass(frozen=True)
class SFTConfig(_Validated):
    """Supervised fine-tuning: cross-entropy on tokens sampled from the true preferences."""

    epochs: int = knob(100, 1, 500, "Outer passes of SFT training (each has steps_per_epoch steps).")
    steps_per_epoch: int = knob(20, 1, 100, "Adam steps per SFT epoch.")
    batch_size: int = knob(32, 1, 1024, "Demonstrations (context, token) per SFT step.")
    lr: float = knob(1e-2, 1e-5, 1.0, "Adam learning rate of SFT.", log=True)
    hidden_dim: int = knob(32, 4, 256, "Hidden units of the policy network (one ReLU layer).")
    seed: int = knob(42, 0, 2**31 - 1, "Seed of SFT's initialization and data sampling.")

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def check(self) -> None:
        # Each step costs about the same whatever the batch (it is drawn up front), more with
        # hidden units: bound steps and steps x hidden units to keep SFT to seconds.
        if self.steps > MAX_PRETRAIN_STEPS:
            raise ConfigError("epochs", f"epochs x steps per epoch = {self.steps:,} is over the "
                              f"limit of {MAX_PRETRAIN_STEPS:,} steps")
        if self.steps * self.hidden_dim > MAX_PRETRAIN_WORK:
            raise ConfigError("hidden_dim", f"steps x hidden units = {self.steps * self.hidden_dim:,} "
                              f"is over the limit of {MAX_PRETRAIN_WORK:,}")


@dataclass(frozen=True)
class RewardModelConfig(_Validated):
    """Bradley-Terry reward model trained on simulated pairwise comparisons."""

    steps: int = knob(200, 1, 5000, "Adam steps of reward-model training.")
    batch_pairs: int = knob(64, 1, 2048, "Pairwise comparisons per reward-model step.")
    lr: float = knob(1e-3, 1e-5, 1.0, "Adam learning rate of the reward model.", log=True)
    hidden_dim: int = knob(32, 4, 256, "Hidden units (and token-embedding size) of the reward model.")
    seed: int = knob(42, 0, 2**31 - 1, "Seed of the reward model's initialization and comparison data.")

    def check(self) -> None:
        if self.steps * self.hidden_dim > MAX_PRETRAIN_WORK:
            raise ConfigError("hidden_dim", f"steps x hidden units = {self.steps * self.hidden_dim:,} "
                              f"is over the limit of {MAX_PRETRAIN_WORK:,}")


ADVANTAGE_ESTIMATORS = tuple(_ESTIMATOR_REGISTRY)  # names only; help texts in advantages.py
KL_ESTIMATORS = ("exact", "k1", "k2", "k3")
KL_PLACEMENTS = ("loss", "reward")
REWARDS = ("reward_model", "verifiable")


@dataclass(frozen=True)
class PolicyOptimizationConfig(_Validated):
    """The policy-optimization knobs every engine shares (the one-token GRPOConfig, the sequence
    engine's SeqGRPOConfig): sampling, clipped steps, KL, advantages, DAPO and reference resets.

    Each knob is declared here once, with one range and one help text; the defaults are the
    one-token engine's, and an engine states its own with :func:`knob_default`. Field order is the
    order of the widgets, URL keys and CLI flags.
    """

    iterations: int = knob(500, 1, 5000, "Training iterations; each samples a fresh batch of groups.")
    prompts: int = knob(8, 1, 64, "Prompts sampled per iteration (with replacement).")
    group_size: int = knob(8, 2, 64, "Responses sampled per prompt (G); the group's mean is the baseline.")
    lr: float = knob(1e-3, 1e-5, 1.0, "Adam learning rate of the policy.", log=True)
    kl_coef: float = knob(0.05, 0.0, 10.0, "Weight beta of the KL penalty to the reference policy; 0 drops the reference (TRL beta).")
    clip_eps: float = knob(0.2, 0.01, 1.0, "PPO clip range: the probability ratio is clipped to [1 - eps, 1 + eps] (TRL epsilon).")
    epochs: int = knob(2, 1, 16, "Passes over each sampled batch (PPO epochs, mu; TRL num_iterations).")
    seed: int = knob(0, 0, 2**31 - 1, "Seed of this run's sampling (prompts and responses).")
    advantage_estimator: str = knob("grpo", choices=ADVANTAGE_ESTIMATORS, help=ESTIMATOR_HELP)
    kl_estimator: str = knob(
        "exact", choices=KL_ESTIMATORS,
        help="How the KL is estimated: exact sum over tokens, or from the sampled token with k1 = "
             "log(pi/pi_ref), k2 = (log ratio)^2 / 2, or k3 = pi_ref/pi - log(pi_ref/pi) - 1 "
             "(DeepSeekMath, TRL).")
    kl_placement: str = knob(
        "loss", choices=KL_PLACEMENTS,
        help="Where the KL penalty goes: added to the loss (GRPO, TRL) or subtracted from the "
             "reward before advantages (PPO-RLHF style).")
    clip_eps_high: float = knob(
        0.0, 0.0, 1.0, "Upper clip range if different from clip_eps (DAPO clip-higher; TRL "
        "epsilon_high); 0 means equal to clip_eps.")
    dual_clip: float = knob(
        0.0, 0.0, 10.0, "Dual-clip constant c > 1 that bounds the loss of negative-advantage "
        "samples by c * A (Ye et al. 2020; verl clip_ratio_c); 0 turns it off.")
    minibatches: int = knob(
        1, 1, 16, "Minibatches each epoch splits the batch's prompts into, one optimizer step "
        "each (TRL steps_per_generation).")
    entropy_coef: float = knob(
        0.0, 0.0, 1.0, "Weight of an entropy bonus on the sampled contexts (verl entropy_coeff); "
        "0 turns it off.")
    ref_reset_every: int = knob(
        0, 0, 5000, "Reset the reference policy to the current one every N iterations, as "
        "DeepSeek-R1's training did (TRL sync_ref_model); 0 never resets.")
    dynamic_sampling: int = knob(
        0, 0, 16, "DAPO dynamic sampling: a prompt slot whose group's rewards are all equal is "
        "redrawn (new prompt, new group) up to this many times, the redraws counting as generated "
        "samples; 0 turns it off.")

    @property
    def samples_per_iteration(self) -> int:
        return self.prompts * self.group_size

    @property
    def upper_clip_eps(self) -> float:
        return self.clip_eps_high or self.clip_eps

    def check(self) -> None:
        if self.minibatches > self.prompts:
            raise ConfigError("minibatches", f"must be at most prompts ({self.prompts}), "
                              f"got {self.minibatches}")
        if 0 < self.dual_clip <= 1:
            raise ConfigError("dual_clip", f"must be 0 (off) or above 1, got {self.dual_clip}")


@dataclass(frozen=True)
class GRPOConfig(PolicyOptimizationConfig):
    """GRPO on the learned reward model: group-normalized advantages, clipped steps, KL penalty."""

    reward: str = field(default="reward_model", metadata={"choices": REWARDS})


@dataclass(frozen=True)
class RLVRConfig(GRPOConfig):
    """GRPO with a verifiable reward: 1 for the context's best token, 0 otherwise."""

    group_size: int = knob_default(GRPOConfig, "group_size", 16)
    epochs: int = knob_default(GRPOConfig, "epochs", 1)

    reward: str = knob_default(GRPOConfig, "reward", "verifiable")


def config_fields(cfg_type: type) -> list[dataclasses.Field]:
    """The user-settable fields of a config class (those declared with knob)."""
    return [f for f in fields(cfg_type) if "help" in f.metadata]


def request_work(configs) -> int:
    """Work of a batch of runs: the sum of iterations x epochs x prompts x group size (x the
    redraws dynamic sampling may make)."""
    return sum(c.iterations * c.epochs * c.prompts * c.group_size * (1 + c.dynamic_sampling)
               for c in configs)


def check_budget(configs) -> None:
    """Raise ConfigError when a batch of runs asks for more than MAX_WORK_PER_REQUEST."""
    total = request_work(configs)
    if total > MAX_WORK_PER_REQUEST:
        raise ConfigError(
            "iterations", f"iterations x epochs x prompts x group size x seeds = {total:,} is over "
            f"the limit of {MAX_WORK_PER_REQUEST:,} per request; lower one of them")
