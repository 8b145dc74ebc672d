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


def train_reward_model(problem: Problem, cfg: RewardModelConfig = RewardModelConfig()) -> RewardModelResult:
    """Train the reward model; the run's randomness comes from cfg.seed alone."""
    gen = generator(cfg.seed)
    n_ctx, vocab, batch = problem.n_contexts, problem.vocab_size, cfg.batch_pairs
    net = RewardNet(problem.contexts.shape[1], cfg.hidden_dim, vocab)
    theta = net.init(gen).unsqueeze(0).requires_grad_(True)
    opt = BatchedAdam(theta.data, torch.tensor([cfg.lr]))

    # All comparisons up front: (steps, B) contexts, the two tokens and the label.
    ctx = torch.randint(0, n_ctx, (cfg.steps, batch), generator=gen)
    tok_a = torch.randint(0, vocab, (cfg.steps, batch), generator=gen)
    tok_b = torch.randint(0, vocab, (cfg.steps, batch), generator=gen)
    true = problem.true_reward
    p_a = torch.sigmoid(true[ctx, tok_a] - true[ctx, tok_b])
    label = (torch.rand(cfg.steps, batch, generator=gen) < p_a).float()
    idx_a, idx_b = ctx * vocab + tok_a, ctx * vocab + tok_b

    losses = torch.empty(cfg.steps)
    score_hist = torch.empty(cfg.steps, n_ctx, vocab)
    for step in range(cfg.steps):
        scores = net.scores(theta, problem.contexts)[0]                     # (C, V)
        flat = scores.reshape(-1)
        margin = flat[idx_a[step]] - flat[idx_b[step]]
        loss = F.binary_cross_entropy_with_logits(margin, label[step])
        (grad,) = torch.autograd.grad(loss, theta)
        opt.step(grad)
        losses[step] = loss.detach()
        score_hist[step] = scores.detach()
    with torch.no_grad():
        final = net.scores(theta, problem.contexts)[0]
    score_hist = torch.cat([score_hist[1:], final.unsqueeze(0)])           # after each step
    history = pd.DataFrame({"step": range(1, cfg.steps + 1), "loss": losses.numpy(),
                            "pairwise_accuracy": pairwise_accuracy(score_hist, true).numpy()})
    return RewardModelResult(problem.config, cfg, history, {"theta": theta.detach()[0].clone()}, final)
