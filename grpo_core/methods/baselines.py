"""Baselines from outside the group, the one-token engine's hook for the landscape's methods.

    baselines = Baselines.for_batch(configs, problem, policy_net)    # None when no member has one
    b, generated = baselines.at_sampling(logp, rewards, sample_ctx, ...)   # per iteration
    dlogits, active = baselines.step(values, weight, active, dlogits)      # per optimizer step

ReMax (Li et al. 2023): the baseline is the reward of the greedy response to the prompt, one more
response per prompt, counted as generated. PPO (InstructGPT; TRL PPOTrainer): a learned critic
V(c) (critic.py), trained on the same (mini)batch as the policy, one value step per policy step.
Critics that fit the policy's layout become extra rows of its parameters (zero hidden units and
outputs padded in, V(c) = output 0), so one forward, backward and Adam step serves both, each row
with its own learning rate; a wider critic keeps a network and an optimizer of its own.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..models import PolicyNet
from .critic import Critic, critic_settings


class Baselines:
    """The ReMax and critic members of a batch: which they are, and their baselines each iteration."""

    def __init__(self, configs: Sequence, contexts: torch.Tensor, policy: PolicyNet):
        estimators = [c.advantage_estimator for c in configs]
        self.n = len(configs)
        self.remax = torch.tensor([e == "remax" for e in estimators])                    # (E,)
        self.uses_critic = torch.tensor([e == "critic" for e in estimators])             # (E,)
        self.any_remax, self.any_critic = bool(self.remax.any()), bool(self.uses_critic.any())
        self.critic_rows = self.uses_critic.nonzero().squeeze(1)                         # (E_c,)
        self.greedy_samples = torch.tensor([c.prompts for c in configs]) * self.remax   # (E,)
        self.critic, self.fused, self.vocab = None, False, policy.vocab_size
        self._weight = self._critic_weight = None
        if self.any_critic:
            settings = critic_settings([configs[e] for e in self.critic_rows.tolist()])
            self.fused = max(settings["hidden"]) <= policy.hidden_dim
            layout = {"hidden_dim": policy.hidden_dim, "outputs": policy.vocab_size} if self.fused else {}
            self.critic = Critic.create(contexts, **settings, **layout)
            self.critic_lr = torch.tensor(settings["lr"])

    @classmethod
    def for_batch(cls, configs: Sequence, contexts: torch.Tensor, policy: PolicyNet) -> "Baselines | None":
        """The batch's baselines, or None when every member's baseline comes from its group."""
        if any(c.advantage_estimator in ("remax", "critic") for c in configs):
            return cls(configs, contexts, policy)
        return None

    def fused_rows(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The critics' parameters (E_c, N) and learning rates when they join the policy's tensor
        (the critic object keeps only its value loss), else None."""
        return (self.critic.hand_over(), self.critic_lr) if self.fused else None

    def at_sampling(self, logp, rewards, sample_ctx, rewards_cv, row_start, values, generated):
        """Each member's baseline (E, P, G) (0 on the rows of members without one) for rewards
        (E, P, G) at contexts sample_ctx (E, S), and generated (E,) with ReMax's greedy responses.
        values (E_c, C): the fused critics' V(c) of this forward pass (None when not fused)."""
        baseline = None
        if self.any_remax:  # the greedy response's reward per prompt (no KL: a score, as in ReMax)
            greedy = row_start + logp.argmax(-1)                                        # (E, C)
            greedy_reward = rewards_cv.gather(1, greedy).gather(1, sample_ctx).view_as(rewards)
            baseline = torch.where(self.remax.view(-1, 1, 1), greedy_reward, 0.0)
            generated = generated + self.greedy_samples
        if self.any_critic:  # V(c) at sampling time: the baseline, and V_old of the value clip
            rows = self.critic_rows
            self.ctx = sample_ctx[rows]                                                 # (E_c, S)
            values = values if self.fused else self.critic.values()                     # (E_c, C)
            self.old_values = values.gather(1, self.ctx)                                # (E_c, S)
            full = torch.zeros(self.n, self.ctx.shape[1]).index_copy_(0, rows, self.old_values).view_as(rewards)
            baseline = full if baseline is None else torch.where(self.uses_critic.view(-1, 1, 1), full, baseline)
            self.returns = rewards[rows].flatten(1)           # one-step GAE: the return is r
        return baseline, generated

    def step(self, values, weight, active, dlogits):
        """The critics' value step on the same (mini)batch as the policy step: weight (E, S) its
        sample weights, active (E,) or None the members taking it. Fused critics add their
        gradient as extra rows of dlogits (E + E_c, C, V) (and active); the others step alone."""
        if not self.any_critic:
            return dlogits, active
        rows = self.critic_rows
        if weight is not self._weight:   # the same weights step after step with one minibatch
            self._weight, self._critic_weight = weight, weight[rows]
        critic_weight = self._critic_weight
        if self.fused:  # its gradient joins the policies' in one backward pass
            dvalues = self.critic.value_grad(values, self.ctx, self.returns, self.old_values, critic_weight)[1]
            dlogits = torch.cat([dlogits, torch.nn.functional.pad(dvalues.unsqueeze(-1), (0, self.vocab - 1))])
            if active is not None:
                active = torch.cat([active, active[rows]])
        else:
            self.critic.step(self.ctx, self.returns, self.old_values, critic_weight,
                             None if active is None else active[rows])
        return dlogits, active
