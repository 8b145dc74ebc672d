"""Bradley-Terry reward model trained on simulated pairwise comparisons.

Each step draws B comparisons (c, a, b) with tokens a, b ~ U(V), and a label y = 1 (a preferred)
with the Bradley-Terry probability of the true rewards R:

    P(a > b | c) = sigmoid(R(c, a) - R(c, b)),
    L_BT(phi) = -1/B sum [ y log sigmoid(r(c,a) - r(c,b)) + (1 - y) log sigmoid(r(c,b) - r(c,a)) ].

The true rewards are probabilities in [0, 1], so these labels are only mildly informative: the
learned model ranks tokens imperfectly, which is what GRPO then exploits (see the Setup page).
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F

from .config import ProblemConfig, RewardModelConfig
from .metrics import pairwise_accuracy
from .models import BatchedAdam, RewardNet
from .problem import Problem
from .sampling import generator


@dataclass(frozen=True)
class RewardModelResult:
    """A trained reward model: per-step history, weights and its (C, V) score table."""

    problem_config: ProblemConfig
    config: RewardModelConfig
    history: pd.DataFrame      # one row per step: step, loss, pairwise_accuracy
    state_dict: dict           # flat parameters under "theta", with the layout's shapes
    scores: torch.Tensor       # (C, V) r(c, v)

    @property
    def pairwise_accuracy(self) -> float:
        """Fraction of same-context token pairs the model ranks as the true rewards do."""
        return float(self.history["pairwise_accuracy"].iloc[-1])


@dataclass(frozen=True)
class Comparisons:
    """The simulated preference data: (steps, B) contexts, tokens a and b, and labels y = 1[a > b]."""

    ctx: torch.Tensor
    tok_a: torch.Tensor
    tok_b: torch.Tensor
    label: torch.Tensor

    @property
    def chosen(self) -> torch.Tensor:
        """(steps, B) the preferred token of each pair."""
        return torch.where(self.label > 0, self.tok_a, self.tok_b)

    @property
    def rejected(self) -> torch.Tensor:
        return torch.where(self.label > 0, self.tok_b, self.tok_a)


def _draw_comparisons(problem: Problem, cfg: RewardModelConfig, gen: torch.Generator):
    """(steps, B) contexts and tokens a, b ~ U, labels y ~ Bernoulli(sigmoid(R(c,a) - R(c,b)))."""
    n_ctx, vocab, batch = problem.n_contexts, problem.vocab_size, cfg.batch_pairs
    ctx = torch.randint(0, n_ctx, (cfg.steps, batch), generator=gen)
    tok_a = torch.randint(0, vocab, (cfg.steps, batch), generator=gen)
    tok_b = torch.randint(0, vocab, (cfg.steps, batch), generator=gen)
    true = problem.true_reward
    p_a = torch.sigmoid(true[ctx, tok_a] - true[ctx, tok_b])
    label = (torch.rand(cfg.steps, batch, generator=gen) < p_a).float()
    return ctx, tok_a, tok_b, label


def comparison_data(problem: Problem, cfg: RewardModelConfig = RewardModelConfig()) -> Comparisons:
    """Exactly the comparisons train_reward_model(problem, cfg) trains on, regenerated from
    cfg.seed: the generator is advanced past the reward model's initialization first, as there."""
    gen = generator(cfg.seed)
    RewardNet(problem.contexts.shape[1], cfg.hidden_dim, problem.vocab_size).init(gen)
    return Comparisons(*_draw_comparisons(problem, cfg, gen))


def train_reward_model(problem: Problem, cfg: RewardModelConfig = RewardModelConfig()) -> RewardModelResult:
    """Train the reward model; the run's randomness comes from cfg.seed alone."""
    gen = generator(cfg.seed)
    n_ctx, vocab, batch = problem.n_contexts, problem.vocab_size, cfg.batch_pairs
    net = RewardNet(problem.contexts.shape[1], cfg.hidden_dim, vocab)
    theta = net.init(gen).unsqueeze(0)                                     # (1, N)
    params = net.layout.views(theta)
    opt = BatchedAdam(theta, torch.tensor([cfg.lr]))

    # All comparisons up front: (steps, B) contexts, the two tokens and the label.
    ctx, tok_a, tok_b, label = _draw_comparisons(problem, cfg, gen)
    true = problem.true_reward
    idx_a, idx_b = ctx * vocab + tok_a, ctx * vocab + tok_b

    margins = torch.empty(cfg.steps, batch)
    score_hist = torch.empty(cfg.steps + 1, n_ctx, vocab)   # before each step, and after the last
    zeros = torch.zeros(1, n_ctx * vocab)
    for step in range(cfg.steps):
        scores, hidden = net.forward(params, problem.contexts)                # (1, C, V)
        score_hist[step] = scores[0]
        flat = scores.view(1, -1)
        margin = flat[:, idx_a[step]] - flat[:, idx_b[step]]                  # (1, B)
        margins[step] = margin[0]
        # d BCE(margin, y) / d margin = (sigmoid(margin) - y) / B, scattered onto both tokens.
        dmargin = (torch.sigmoid(margin) - label[step]) / batch
        dscores = zeros.index_add(1, idx_a[step], dmargin).index_add_(1, idx_b[step], -dmargin)
        opt.step(net.backward(params, problem.contexts, hidden, dscores.view(1, n_ctx, vocab)))
    final = net.scores(theta, problem.contexts)[0]
    score_hist[-1] = final
    losses = F.binary_cross_entropy_with_logits(margins, label, reduction="none").mean(1)
    score_hist = score_hist[1:]                                             # after each step
    history = pd.DataFrame({"step": range(1, cfg.steps + 1), "loss": losses.numpy(),
                            "pairwise_accuracy": torch.cat([pairwise_accuracy(block, true)  # blocks bound memory
                                                            for block in score_hist.split(256)]).numpy()})
    return RewardModelResult(problem.config, cfg, history, {"theta": theta.detach()[0].clone()}, final)
