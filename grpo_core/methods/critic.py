"""PPO's learned critic V(c): a small network of its own, batched over runs, with its own Adam.

A response here is one token, so an episode is one step: GAE's delta_t = r_t + gamma V(s_{t+1}) -
V(s_t) has no next state, and for any gamma and lambda

    A = r - V(c),      return R = A + V(c) = r,

which is what `advantages = GAE(...)`, `returns = advantages + values` reduce to in TRL's
PPOTrainer for a one-token response. The value loss is TRL's (clipped around the values of the
sampling step, V_old):

    L_V = vf_coef * 1/2 * mean_s max((V(c_s) - R_s)^2, (clip(V(c_s), V_old - eps_v, V_old + eps_v) - R_s)^2)

With eps_v = 0 the clip is off (plain squared error). The critic is trained for the same epochs
as the policy, one Adam step per policy step, on the same batch.

The network is V(c) = w2 . relu(W1 x_c + b1) + b2, i.e. PolicyNet with one output, so the same
batched forward/backward serves. Members may have different hidden sizes: smaller ones are padded
with hidden units whose weights are zero in both layers, which get zero gradient and so stay
zero under Adam (exactly: the update is 0 / (0 + eps)). The GRPO trainer pads critics the same
way to its policy's layout (hidden units and outputs, V(c) = output 0) and keeps them as extra
rows of the policy's parameters, so one forward pass, one backward pass and one Adam step serve
both; a critic wider than the policy keeps a network of its own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..models import BatchedAdam, PolicyNet
from ..sampling import generator, sample_categorical

CRITIC_SEED_OFFSET = 7919   # the critic's initialization draws from generator(seed + offset)


def value_loss_grad(values: torch.Tensor, ctx: torch.Tensor, returns: torch.Tensor,
                    old_values: torch.Tensor, weight: torch.Tensor, vf_coef: torch.Tensor,
                    clip_value: torch.Tensor, with_loss: bool = True, *,
                    bounds: tuple | None = None, scale: torch.Tensor | None = None):
    """Clipped value loss and its gradient with respect to the critic's table.

    values (E, C) the current V; ctx (E, S) each sample's context; returns, old_values,
    weight (E, S) (weight = valid / number of samples); vf_coef, clip_value (E, 1), clip 0 = off.
    bounds, scale: (old_values - clip, old_values + clip) with clip = clip_value, or inf where it
    is 0, and weight * vf_coef, if already known.
    Returns (loss (E,) or None without with_loss, dvalues (E, C), clip_frac (E,) or None).
    """
    v = values.gather(1, ctx)                                                # (E, S)
    if bounds is None:
        clip = torch.where(clip_value > 0, clip_value, torch.inf)
        bounds = (old_values - clip, old_values + clip)
    clipped = torch.clamp(v, *bounds)
    err, err_clipped = v - returns, clipped - returns
    use_clipped = err_clipped.abs() > err.abs()
    # d/dv of the selected branch: the clipped one only moves v when v is inside the clip range,
    # and then clipped = v, so err_clipped = err and use_clipped is False: the gradient is err
    # wherever use_clipped is False, and 0 where it is True
    dv = torch.where(use_clipped, 0.0, err).mul_(weight * vf_coef if scale is None else scale)
    dvalues = torch.zeros_like(values).scatter_add_(1, ctx, dv)
    if not with_loss:
        return None, dvalues, None
    loss = vf_coef.squeeze(1) * 0.5 * (torch.maximum(err.square(), err_clipped.square()) * weight).sum(1)
    frac = (use_clipped & (weight > 0)).sum(1) / (weight > 0).sum(1).clamp_min(1)
    return loss, dvalues, frac


@dataclass
class Critic:
    """V(c) of E members as rows of one parameter tensor; `values()` is the (E, C) table."""

    net: PolicyNet
    theta: torch.Tensor
    x1: torch.Tensor
    opt: BatchedAdam
    vf_coef: torch.Tensor        # (E, 1)
    clip_value: torch.Tensor     # (E, 1)

    @classmethod
    def create(cls, contexts: torch.Tensor, hidden: Sequence[int], lr: Sequence[float],
               vf_coef: Sequence[float], clip_value: Sequence[float], seeds: Sequence[int],
               hidden_dim: int | None = None, outputs: int = 1) -> "Critic":
        """One critic per member, initialized as nn.Linear layers from generator(seed + offset).

        hidden_dim, outputs: the layout of the rows (default: the largest hidden size, one output).
        A trainer that keeps the critics as extra rows of its policy's parameters asks for the
        policy's layout; the extra hidden units and outputs are zero, and V(c) is output 0."""
        d, h_max = contexts.shape[1], max(hidden) if hidden_dim is None else hidden_dim
        if h_max < max(hidden):
            raise ValueError(f"a critic of {max(hidden)} hidden units does not fit in {h_max}")
        net = PolicyNet(d, h_max, outputs)
        rows = []
        for h, seed in zip(hidden, seeds):
            sd = PolicyNet(d, h, 1).state_dict(PolicyNet(d, h, 1).init(generator(seed + CRITIC_SEED_OFFSET)))
            pad = h_max - h
            sd = {"0.weight": torch.nn.functional.pad(sd["0.weight"], (0, 0, 0, pad)),
                  "0.bias": torch.nn.functional.pad(sd["0.bias"], (0, pad)),
                  "2.weight": torch.nn.functional.pad(sd["2.weight"], (0, pad, 0, outputs - 1)),
                  "2.bias": torch.nn.functional.pad(sd["2.bias"], (0, outputs - 1))}
            rows.append(net.from_state_dict(sd))
        theta = torch.stack(rows)
        col = lambda xs: torch.tensor(list(xs), dtype=torch.float32).view(-1, 1)
        return cls(net, theta, net.inputs(contexts, len(rows)), BatchedAdam(theta, torch.tensor(list(lr))),
                   col(vf_coef), col(clip_value))

    def __post_init__(self):
        self.params = self.net.layout.views(self.theta)   # views stay valid: theta moves in place
        self._forward = None                              # (values, hidden) of the current theta
        self._clip = torch.where(self.clip_value > 0, self.clip_value, torch.inf)
        self._weight = self._scale = None                 # the last weights and weight * vf_coef
        self._old_values = self._bounds = None            # the last V_old and its clip range

    def forward(self):
        """-> (values (E, C), hidden layer for backward), computed once per parameter update."""
        if self._forward is None:
            out, h1 = self.net.forward(self.params, self.x1)
            self._forward = (out[..., 0], h1)
        return self._forward

    def values(self) -> torch.Tensor:
        return self.forward()[0]

    def hand_over(self) -> torch.Tensor:
        """Give the parameters (E, N) to a trainer that keeps them as rows of its own tensor and
        steps them with its own optimizer; this critic then only computes value_grad (its
        network, optimizer and cached values are dropped, so nothing stale can be read)."""
        theta = self.theta
        self.theta = self.params = self.x1 = self.opt = self._forward = None
        return theta

    def step(self, ctx: torch.Tensor, returns: torch.Tensor, old_values: torch.Tensor,
             weight: torch.Tensor, active: torch.Tensor | None = None, with_loss: bool = False):
        """One Adam step of the value loss on a batch; returns (loss (E,), clip_frac (E,)), both
        None unless with_loss."""
        values, h1 = self.forward()
        loss, dvalues, clip_frac = self.value_grad(values, ctx, returns, old_values, weight, with_loss)
        self.opt.step(self.net.backward(self.params, self.x1, h1, dvalues.unsqueeze(-1)), active)
        self._forward = None
        return loss, clip_frac

    def value_grad(self, values: torch.Tensor, ctx: torch.Tensor, returns: torch.Tensor,
                   old_values: torch.Tensor, weight: torch.Tensor, with_loss: bool = False):
        """value_loss_grad with these critics' settings, for values (E, C) computed elsewhere
        (a trainer whose forward pass holds the critics too): (loss, dvalues (E, C), clip_frac)."""
        # a trainer passes the same weights step after step, and the same V_old every epoch
        if weight is not self._weight:
            self._weight, self._scale = weight, weight * self.vf_coef
        if old_values is not self._old_values:
            self._old_values, self._bounds = old_values, (old_values - self._clip, old_values + self._clip)
        return value_loss_grad(values, ctx, returns, old_values, weight, self.vf_coef,
                               self.clip_value, with_loss, bounds=self._bounds, scale=self._scale)


def train_critic(contexts: torch.Tensor, logp: torch.Tensor, reward: torch.Tensor, iterations: int,
                 prompts: int, seeds: Sequence[int], hidden: int = 16, lr: float = 1e-2,
                 vf_coef: float = 0.1, clip_value: float = 0.2, epochs: int = 4):
    """Critics for a fixed policy: each iteration draws `prompts` contexts ~ U(C) and one response
    each from pi, and takes `epochs` value steps on the returns r (one run per seed).

    contexts (C, D); logp, reward (C, V). Returns the critics' values after each iteration
    (iterations + 1, E, C) and the exact targets E_pi[r | c] (C,)."""
    n_ctx, vocab = logp.shape
    critic = Critic.create(contexts, [hidden] * len(seeds), [lr] * len(seeds),
                           [vf_coef] * len(seeds), [clip_value] * len(seeds), seeds)
    gens = [generator(s) for s in seeds]
    probs = logp.exp()
    hist = torch.empty(iterations + 1, len(seeds), n_ctx)
    hist[0] = critic.values()
    weight = torch.full((len(seeds), prompts), 1.0 / prompts)
    for t in range(iterations):
        ctx = torch.stack([torch.randint(0, n_ctx, (prompts,), generator=g) for g in gens])
        u = torch.stack([torch.rand(prompts, 1, generator=g) for g in gens])
        tokens = sample_categorical(probs[ctx], u).squeeze(-1)
        returns = reward[ctx, tokens]
        old = hist[t].gather(1, ctx)
        for _ in range(epochs):
            critic.step(ctx, returns, old, weight)
        hist[t + 1] = critic.values()
    return hist, (probs * reward).sum(-1)


# Defaults of a critic, for members whose config does not declare critic settings.
CRITIC_DEFAULTS = {"critic_hidden": 16, "critic_lr": 1e-2, "vf_coef": 0.1, "cliprange_value": 0.2}


def critic_settings(configs) -> dict:
    """Critic.create's per-member arguments from configs (PPOConfig's critic fields, or defaults)."""
    get = lambda c, name: getattr(c, name, CRITIC_DEFAULTS[name])
    return {"hidden": [get(c, "critic_hidden") for c in configs],
            "lr": [get(c, "critic_lr") for c in configs],
            "vf_coef": [get(c, "vf_coef") for c in configs],
            "clip_value": [get(c, "cliprange_value") for c in configs],
            "seeds": [c.seed for c in configs]}
