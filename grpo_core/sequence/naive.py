"""A plain per-sample implementation of sequence GRPO, written like the tutorial notebook's loop.

For the bench only (seq_naive_ratio): nn.Module policy, responses generated token by token per
prompt, torch.optim.Adam, autograd through the whole network, loss_type grpo, token-level ratios,
k3 KL. It computes no exact metrics (the engine does, every iteration), so the ratio it gives is
conservative. Same architecture and starting weights as the engine's SFT policy.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import SeqGRPOConfig
from .upstream import SeqUpstream


def naive_policy(up: SeqUpstream, theta: torch.Tensor | None = None) -> nn.Sequential:
    """nn.Sequential(Linear, ReLU, Linear) holding the SFT policy's weights (or flat `theta` (N,))."""
    net = up.sft.net
    views = net.layout.views((up.sft.theta if theta is None else theta).unsqueeze(0))
    model = nn.Sequential(nn.Linear(net.n_features, net.hidden_dim), nn.ReLU(),
                          nn.Linear(net.hidden_dim, net.vocab))
    with torch.no_grad():
        model[0].weight.copy_(views["layer1"][0, :-1].T)
        model[0].bias.copy_(views["layer1"][0, -1])
        model[2].weight.copy_(views["layer2"][0, :-1].T)
        model[2].bias.copy_(views["layer2"][0, -1])
    return model


def naive_train(up: SeqUpstream, cfg: SeqGRPOConfig = SeqGRPOConfig(), iterations: int | None = None) -> list[float]:
    """Train like the notebook; returns the batch mean reward of each iteration."""
    task = up.task
    big_l, a = task.config.max_length, task.config.alphabet_size
    end = a
    policy, ref = naive_policy(up), naive_policy(up)
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)

    def features(ctx_id, positions, prev):
        ctx = task.contexts[ctx_id].expand(len(prev), -1)
        return torch.cat([ctx, F.one_hot(positions, big_l).float(), F.one_hot(prev, a + 1).float()], -1)

    history = []
    for _ in range(iterations or cfg.iterations):
        prompt_ids = torch.randint(0, task.n_contexts, (cfg.prompts,), generator=gen)
        batch = []  # (prompt, tokens (G, L), mask (G, L), old_logp (G, L), advantages (G,))
        with torch.no_grad():
            for prompt in prompt_ids:
                g = cfg.group_size
                tokens = torch.full((g, big_l), end)
                mask = torch.zeros(g, big_l)
                prev = torch.full((g,), end)
                alive = torch.ones(g, dtype=torch.bool)
                for t in range(big_l):  # generate token by token
                    logits = policy(features(prompt, torch.full((g,), t), prev))
                    tok = torch.multinomial(F.softmax(logits, -1), 1, generator=gen).squeeze(1)
                    tokens[:, t] = torch.where(alive, tok, end)
                    mask[:, t] = alive.float()
                    alive = alive & (tok != end)
                    prev = tok
                old_logp = _token_logp(policy, features, prompt, tokens, big_l, end)
                content = (mask.sum(1) - (tokens == end).float().mul(mask).sum(1)).long()
                first, last = tokens[:, 0], tokens.gather(1, (content - 1).clamp_min(0).unsqueeze(1)).squeeze(1)
                said = first if task.config.answer_rule == "first" else last
                finished = ((tokens == end) & (mask > 0)).any(1)
                rewards = ((said == task.answer[prompt]) & (content >= 1) & finished).float()
                advantages = (rewards - rewards.mean()) / (rewards.std() + 1e-8)
                batch.append((prompt, tokens, mask, old_logp, advantages))
                history.append(float(rewards.mean()))
        for _ in range(cfg.epochs):
            losses = []
            for prompt, tokens, mask, old_logp, advantages in batch:
                new_logp = _token_logp(policy, features, prompt, tokens, big_l, end)
                ratio = torch.exp(new_logp - old_logp)
                adv = advantages.unsqueeze(1)
                per_token = -torch.min(ratio * adv, torch.clamp(ratio, 1 - cfg.clip_eps, 1 + cfg.upper_clip_eps) * adv)
                if cfg.kl_coef > 0:
                    with torch.no_grad():
                        ref_logp = _token_logp(ref, features, prompt, tokens, big_l, end)
                    d = ref_logp - new_logp
                    per_token = per_token + cfg.kl_coef * (torch.exp(d) - d - 1)
                losses.append(((per_token * mask).sum(1) / mask.sum(1).clamp_min(1)))
            loss = torch.cat(losses).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return history


def _token_logp(policy, features, prompt, tokens, big_l, end):
    """log pi of each token of each response (G, L), one forward per position."""
    g = tokens.shape[0]
    prev = torch.cat([torch.full((g, 1), end), tokens[:, :-1]], 1)
    out = []
    for t in range(big_l):
        logits = policy(features(prompt, torch.full((g,), t), prev[:, t]))
        out.append(F.log_softmax(logits, -1).gather(1, tokens[:, t:t + 1]).squeeze(1))
    return torch.stack(out, 1)
