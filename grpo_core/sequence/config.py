"""Configuration of the sequence engine: the task, SFT, the reward model and a GRPO run.

Every field is declared with grpo_core.config.knob, so the CLI's flags and the pages' widgets come
from these dataclasses, as for the one-token engine; the knobs both engines share are declared once,
in grpo_core.config.PolicyOptimizationConfig, which SeqGRPOConfig extends.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import (MAX_WORK_PER_REQUEST, ConfigError, PolicyOptimizationConfig,
                      _Validated, knob, knob_default)

# TRL's loss_type names, then verl's loss_agg_mode names (see losses.AGGREGATIONS).
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "luspo", "cispo",
              "token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")
IMPORTANCE_LEVELS = ("token", "sequence")
ANSWER_RULES = ("first", "last")
SEQ_REWARDS = ("verifiable", "reward_model")
# Enumerated responses per context are sum_{k<L} A^k + A^L; beyond this the exact sums get slow.
MAX_RESPONSES = 20_000


def n_responses(alphabet_size: int, max_length: int) -> int:
    """Distinct responses per context: k < L content tokens then the end token, or L tokens cut off."""
    return sum(alphabet_size ** k for k in range(max_length)) + alphabet_size ** max_length


@dataclass(frozen=True)
class SeqTaskConfig(_Validated):
    """The enumerable multi-token task: contexts, an alphabet, a maximum length, a hidden answer."""

    n_contexts: int = knob(5, 1, 12, "Number of distinct prompts (contexts).")
    alphabet_size: int = knob(3, 2, 6, "Content tokens a response is written with (plus the end token).")
    max_length: int = knob(6, 2, 8, "L: most tokens in a response, the end token included; a response "
                           "still going after L tokens is truncated (TRL max_completion_length).")
    context_dim: int = knob(8, 2, 32, "Size of each context's random embedding vector.")
    answer_rule: str = knob("first", choices=ANSWER_RULES,
                            help="Where the answer is: the first content token (answer, then free "
                                 "text) or the last one before the end token (text, then answer).")
    difficulty: float = knob(0.6, 0.0, 1.0, "How often demonstrations are wrong: context c's "
                             "demonstrations answer correctly with probability 1 - difficulty x u_c, "
                             "u_c ~ U(0.5, 1).")
    seed: int = knob(7, 0, 2**31 - 1, "Seed of the hidden task (embeddings, answers, difficulty).")

    @property
    def responses(self) -> int:
        return n_responses(self.alphabet_size, self.max_length)

    def check(self) -> None:
        if self.responses > MAX_RESPONSES:
            raise ConfigError("max_length", f"alphabet_size^max_length gives {self.responses:,} "
                              f"responses per context, over the limit of {MAX_RESPONSES:,}")


@dataclass(frozen=True)
class SeqSFTConfig(_Validated):
    """Supervised fine-tuning on demonstrations with a spread of lengths: it makes the reference."""

    steps: int = knob(300, 1, 5000, "Adam steps of SFT.")
    batch_size: int = knob(64, 1, 1024, "Demonstrations per SFT step.")
    lr: float = knob(1e-2, 1e-5, 1.0, "Adam learning rate of SFT.", log=True)
    hidden_dim: int = knob(32, 4, 128, "Hidden units of the policy network (one ReLU layer).")
    seed: int = knob(0, 0, 2**31 - 1, "Seed of SFT's initialization and demonstrations.")


@dataclass(frozen=True)
class SeqRewardModelConfig(_Validated):
    """Bradley-Terry reward model over whole responses, trained on simulated comparisons."""

    steps: int = knob(200, 1, 5000, "Adam steps of reward-model training.")
    batch_pairs: int = knob(64, 1, 1024, "Pairwise comparisons per step.")
    lr: float = knob(1e-2, 1e-5, 1.0, "Adam learning rate of the reward model.", log=True)
    hidden_dim: int = knob(32, 4, 128, "Hidden units of the reward model.")
    label_scale: float = knob(4.0, 0.0, 20.0, "How strongly the simulated labelers prefer the correct "
                              "response: P(a > b) = sigmoid(scale (ok_a - ok_b) + bias (|a| - |b|)).")
    length_bias: float = knob(0.5, -5.0, 5.0, "How much the simulated labelers prefer longer responses, "
                              "per token (the spurious feature a policy can hack).")
    seed: int = knob(0, 0, 2**31 - 1, "Seed of the reward model's initialization and comparisons.")


@dataclass(frozen=True)
class SeqGRPOConfig(PolicyOptimizationConfig):
    """GRPO on sequences: group advantages, per-token clipped surrogate, a loss aggregation.

    The shared knobs (and their checks) are PolicyOptimizationConfig's; here only the sequence
    engine's defaults, the per-token meaning of the KL and entropy terms, and its own knobs.
    """

    iterations: int = knob_default(PolicyOptimizationConfig, "iterations", 200)
    lr: float = knob_default(PolicyOptimizationConfig, "lr", 2e-3)
    kl_coef: float = knob_default(PolicyOptimizationConfig, "kl_coef", 0.0,
                                  help="Weight beta of the per-token KL to the reference; 0 drops "
                                       "the reference (TRL beta).")
    epochs: int = knob_default(PolicyOptimizationConfig, "epochs", 1)
    kl_estimator: str = knob_default(PolicyOptimizationConfig, "kl_estimator", "k3",
                                     help="Per-token KL: exact over the next-token distribution at "
                                          "the sampled prefix, or k1, k2, k3 of the sampled token "
                                          "(TRL: k3).")
    kl_placement: str = knob_default(PolicyOptimizationConfig, "kl_placement",
                                     help="KL added to the per-token loss (GRPO, TRL) or its sum over "
                                          "the response subtracted from the reward (PPO-RLHF).")
    entropy_coef: float = knob_default(PolicyOptimizationConfig, "entropy_coef",
                                       help="Weight of a per-token entropy bonus, aggregated like "
                                            "the loss (verl entropy_coeff); 0 turns it off.")

    loss_type: str = knob("grpo", choices=LOSS_TYPES,
                          help="How per-token losses are aggregated (TRL loss_type; verl "
                               "loss_agg_mode names too): grpo = token mean per response then mean; "
                               "bnpo = token mean over the minibatch; dr_grpo = token sum / (B L); "
                               "dapo = token sum / tokens in the whole batch; luspo = mean of "
                               "|y| x sequence loss; cispo = clipped stop-gradient weight x log-prob.")
    importance_sampling_level: str = knob("token", choices=IMPORTANCE_LEVELS,
                                          help="Ratio per token, or one per response: the "
                                               "geometric mean of its token ratios (GSPO).")
    cispo_cap: float = knob(5.0, 1.0, 100.0, "CISPO's cap on the importance weight, min(ratio, cap) "
                            "(TRL uses epsilon_high as this cap and recommends 5).")
    mask_truncated: bool = knob(False, help="Drop truncated responses (no end token within L) "
                                "from the loss (TRL mask_truncated_completions; DAPO overlong filtering).")
    overlong_buffer: int = knob(0, 0, 8, "DAPO soft overlong punishment: the last C tokens before L "
                                "cost (L - C - |y|) / C x factor each; 0 turns it off.")
    overlong_factor: float = knob(1.0, 0.0, 10.0, "Scale of the soft overlong punishment (DAPO "
                                  "overlong_penalty_factor).")
    reward: str = knob("verifiable", choices=SEQ_REWARDS,
                       help="What is trained on: the 0/1 verifier, or the learned Bradley-Terry "
                            "reward model (which can reward length).")

    def check(self) -> None:
        super().check()
        if self.loss_type == "luspo" and self.importance_sampling_level != "sequence":
            raise ConfigError("importance_sampling_level", "luspo needs importance_sampling_level "
                              "= sequence (its loss scales each response's one sequence loss by |y|)")


# Members x contexts x responses: the size of the exact tables a batch keeps (~10 float32 copies).
MAX_TABLE_ENTRIES = 4_000_000


def check_seq_budget(configs, task: SeqTaskConfig) -> None:
    """Bound the work of a batch of runs (iterations x epochs x samples x max_length, summed) and
    its memory (members x contexts x responses)."""
    entries = len(configs) * task.n_contexts * task.responses
    if entries > MAX_TABLE_ENTRIES:
        raise ConfigError("seeds", f"runs x contexts x responses per context = {entries:,} is over "
                          f"the limit of {MAX_TABLE_ENTRIES:,}; use fewer runs or a shorter max_length")
    total = sum(c.iterations * c.epochs * c.samples_per_iteration * (1 + c.dynamic_sampling)
                * task.max_length for c in configs)
    if total > MAX_WORK_PER_REQUEST:
        raise ConfigError("iterations", f"iterations x epochs x prompts x group size x max_length x "
                          f"seeds = {total:,} is over the limit of {MAX_WORK_PER_REQUEST:,}; lower one")
