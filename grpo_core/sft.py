"""Supervised fine-tuning of the policy on demonstrations drawn from the true preferences.

    L_SFT(theta) = - E_{c ~ U(C), v ~ p_true(.|c)} [ log pi_theta(v | c) ]

estimated each step on `batch_size` fresh demonstrations, minimized with Adam.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from .config import ProblemConfig, SFTConfig
from .metrics import policy_metrics
from .models import BatchedAdam, PolicyNet
from .problem import Problem
from .sampling import generator, sample_categorical


@dataclass(frozen=True)
class SFTResult:
    """A trained SFT policy: per-epoch history, weights, and its exact (C, V) log-probabilities."""

    problem_config: ProblemConfig
    config: SFTConfig
    history: pd.DataFrame      # one row per epoch: epoch, step, loss, true_reward, kl_true, entropy
    state_dict: dict           # nn.Sequential(Linear, ReLU, Linear) keys
    logp: torch.Tensor         # (C, V) log pi_sft(v | c)


def train_sft(problem: Problem, cfg: SFTConfig = SFTConfig()) -> SFTResult:
    """Train the SFT policy; the run's randomness comes from cfg.seed alone."""
    gen = generator(cfg.seed)
    n_ctx, vocab = problem.n_contexts, problem.vocab_size
    net = PolicyNet(problem.contexts.shape[1], cfg.hidden_dim, vocab)
    theta = net.init(gen).unsqueeze(0)                                     # (1, N)
    params, x1 = net.layout.views(theta), net.inputs(problem.contexts, 1)
    opt = BatchedAdam(theta, torch.tensor([cfg.lr]))

    # All demonstrations up front, as per-step counts of each (context, token) pair.
    ctx = torch.randint(0, n_ctx, (cfg.steps, cfg.batch_size), generator=gen)
    u = torch.rand(cfg.steps, cfg.batch_size, 1, generator=gen)
    tokens = sample_categorical(problem.true_reward[ctx], u).squeeze(-1)
    counts = torch.zeros(cfg.steps, n_ctx * vocab).scatter_add_(
        1, ctx * vocab + tokens, torch.ones(cfg.steps, cfg.batch_size)).view(cfg.steps, n_ctx, vocab)

    # loss = -1/B sum_i log pi(v_i | c_i) = -sum_cv freq[c, v] log pi(v | c),  freq = counts / B;
    # dloss/dlogits[c, v] = n_c pi(v | c) - freq[c, v],  n_c = sum_v freq[c, v].
    freq = counts / cfg.batch_size
    n_freq = freq.sum(-1, keepdim=True)                                     # (steps, C, 1)
    logp_steps = torch.empty(cfg.steps + 1, n_ctx, vocab)                  # before each step, and after
    for step, (f, n) in enumerate(zip(freq.unbind(), n_freq.unbind())):
        logits, hidden = net.forward(params, x1)
        logp = torch.log_softmax(logits[0], -1)                              # (C, V)
        logp_steps[step] = logp
        dlogits = logp.exp().mul_(n).sub_(f)
        opt.step(net.backward(params, x1, hidden, dlogits.unsqueeze(0)))
    logp_steps[-1] = final_logp = torch.log_softmax(net.logits(theta, problem.contexts)[0], -1)
    losses = -(freq * logp_steps[:-1]).sum((1, 2))
    logp_epochs = logp_steps[cfg.steps_per_epoch::cfg.steps_per_epoch]     # the policy after each epoch
    exact = policy_metrics(logp_epochs, problem)
    history = pd.DataFrame({
        "epoch": range(1, cfg.epochs + 1),
        "step": [cfg.steps_per_epoch * (e + 1) for e in range(cfg.epochs)],
        "loss": losses.view(cfg.epochs, cfg.steps_per_epoch).mean(1).numpy(),
        "true_reward": exact["true_reward"].numpy(),
        "kl_true": exact["kl_true"].numpy(),
        "entropy": exact["entropy"].numpy(),
    })
    return SFTResult(problem.config, cfg, history, net.state_dict(theta[0]), final_logp)


def sft_policy(result: SFTResult) -> PolicyNet:
    """The network shape a result's state dict belongs to."""
    problem_cfg = result.problem_config
    return PolicyNet(problem_cfg.context_dim, result.config.hidden_dim, problem_cfg.vocab_size)

