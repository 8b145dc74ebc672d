"""An experiment: every setting needed to reproduce a page's result, as one JSON document.

    {"kind": "grpo", "seeds": 8, "problem": {...}, "sft": {...}, "reward_model": {...},
     "run": {...GRPOConfig fields...}}

Loading validates everything against the config dataclasses and rejects, with a message naming the
field, wrong types, unknown or malformed fields and oversized documents. Missing fields take their
defaults, so a hand-written file may name only what it changes. Nothing is ever unpickled.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from .config import (ConfigError, GRPOConfig, ProblemConfig, RLVRConfig, RewardModelConfig,
                     SFTConfig, check_budget, offset_seed)

MAX_EXPERIMENT_BYTES = 64 * 1024
MAX_SEEDS = 64
KINDS = {"grpo": GRPOConfig, "rlvr": RLVRConfig}
_SECTIONS = {"problem": ProblemConfig, "sft": SFTConfig, "reward_model": RewardModelConfig}


@dataclass(frozen=True)
class Experiment:
    kind: str = "grpo"
    seeds: int = 1
    problem: ProblemConfig = field(default_factory=ProblemConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig)
    run: GRPOConfig = field(default_factory=GRPOConfig)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "seeds": self.seeds, "problem": self.problem.to_dict(),
                "sft": self.sft.to_dict(), "reward_model": self.reward_model.to_dict(),
                "run": {k: v for k, v in self.run.to_dict().items() if k != "reward"}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def experiment_from_dict(data) -> Experiment:
    """Validate a parsed document; raise ConfigError naming the offending field."""
    if not isinstance(data, dict):
        raise ConfigError("experiment", f"expected a JSON object, got {type(data).__name__}")
    extra = sorted(set(data) - {"kind", "seeds", "run", *_SECTIONS})
    if extra:
        raise ConfigError(extra[0], "unknown field (expected kind, seeds, problem, sft, "
                          "reward_model, run)")
    kind = data.get("kind", "grpo")
    if not isinstance(kind, str) or kind not in KINDS:
        raise ConfigError("kind", f"must be one of {', '.join(KINDS)}, got {kind!r}")
    seeds = data.get("seeds", 1)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= MAX_SEEDS:
        raise ConfigError("seeds", f"must be a whole number from 1 to {MAX_SEEDS}, got {seeds!r}")
    parts = {}
    for name, cls in [*_SECTIONS.items(), ("run", KINDS[kind])]:
        section = data.get(name, {})
        if not isinstance(section, dict):
            raise ConfigError(name, f"expected an object of settings, got {type(section).__name__}")
        try:
            parts[name] = cls.from_dict(section)
        except ConfigError as err:
            raise ConfigError(f"{name}.{err.field_name}", err.detail) from None
    run = parts["run"]
    check_budget([run.replace(seed=offset_seed(run.seed, i)) for i in range(seeds)])
    return Experiment(kind, seeds, parts["problem"], parts["sft"], parts["reward_model"], run)


def experiment_from_json(text: str | bytes) -> Experiment:
    """Parse and validate an uploaded or hand-written experiment document."""
    if len(text) > MAX_EXPERIMENT_BYTES:
        raise ConfigError("file", f"is {len(text):,} bytes; the limit is {MAX_EXPERIMENT_BYTES:,}")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError("file", "is not UTF-8 text") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError("file", f"is not valid JSON ({err.msg} at line {err.lineno}, "
                          f"column {err.colno})") from None
    except (ValueError, RecursionError) as err:  # e.g. an integer of 5000 digits, deep nesting
        raise ConfigError("file", f"is not usable JSON ({type(err).__name__}: "
                          f"{str(err)[:80] or 'nested too deeply'})") from None
    return experiment_from_dict(data)
