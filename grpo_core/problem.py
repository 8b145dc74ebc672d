"""The toy task: C contexts, a vocabulary of V tokens, and hidden true preferences.

A response is a single token. The true reward of token v in context c is its true preference

    true_reward[c, v] = softmax(scale * z[c])[v],    z[c, v] ~ N(0, 1),

and the verifiable reward is 1 for the context's best token (argmax of the true preferences),
0 otherwise. Because C x V is tiny, every expectation under a policy is an exact sum.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import ProblemConfig


@dataclass(frozen=True)
class Problem:
    """A sampled instance of the toy task. Tensors are float32 and never modified in place."""

    config: ProblemConfig
    contexts: torch.Tensor        # (C, D) context embeddings
    true_reward: torch.Tensor     # (C, V) true preferences; each row sums to 1
    correct_token: torch.Tensor   # (C,) argmax of the true preferences (int64)

    @property
    def n_contexts(self) -> int:
        return self.contexts.shape[0]

    @property
    def vocab_size(self) -> int:
        return self.true_reward.shape[1]

    @property
    def verifiable_reward(self) -> torch.Tensor:
        """(C, V) binary reward: 1 at the correct token of each context."""
        return torch.nn.functional.one_hot(self.correct_token, self.vocab_size).to(self.true_reward.dtype)

    @property
    def best_reward(self) -> torch.Tensor:
        """(C,) the best achievable expected true reward per context: max_v true_reward[c, v]."""
        return self.true_reward.max(dim=-1).values


def make_problem(cfg: ProblemConfig = ProblemConfig()) -> Problem:
    """Draw the task from its own generator (the notebook's draws, for the notebook's seed)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    contexts = torch.randn(cfg.n_contexts, cfg.context_dim, generator=gen)
    scores = torch.randn(cfg.n_contexts, cfg.vocab_size, generator=gen)
    true_reward = torch.softmax(scores * cfg.pref_scale, dim=-1)
    return Problem(cfg, contexts, true_reward, true_reward.argmax(dim=-1))
