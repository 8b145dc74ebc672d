"""Batched networks and optimizer: E independent models stored as rows of one flat tensor.

Every model here is evaluated on the whole task at once. A policy only ever sees the C contexts,
so its full conditional distribution is a (C, V) table; a reward model only ever scores the
C x V (context, token) pairs, so it too is a (C, V) table. Training batches then *gather* from
these tables instead of running the network once per sample. The result is the same function and
the same gradients as a per-sample forward pass, at the cost of one tiny forward per member.

Parameters of E members live in one tensor `theta (E, N)`; :class:`ParamLayout` cuts it into
named (E, ...) views. Nothing here keeps global state: initializations draw from generators the
caller owns.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ParamLayout:
    """Named parameter shapes packed into one flat vector per member."""

    shapes: tuple[tuple[str, tuple[int, ...]], ...]

    @property
    def size(self) -> int:
        return sum(math.prod(s) for _, s in self.shapes)

    def views(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """theta (E, N) -> {name: (E, *shape)} views sharing theta's storage."""
        out, start = {}, 0
        for name, shape in self.shapes:
            n = math.prod(shape)
            out[name] = theta[:, start:start + n].view(theta.shape[0], *shape)
            start += n
        return out


def _uniform(gen: torch.Generator, shape, bound: float) -> torch.Tensor:
    return (torch.rand(shape, generator=gen) * 2 - 1) * bound


def with_bias_column(x: torch.Tensor) -> torch.Tensor:
    """(..., K) -> (..., K + 1) with a trailing column of ones, so x @ [W; b] = x W + b."""
    return torch.nn.functional.pad(x, (0, 1), value=1.0)


def mlp_state_dict(layout: ParamLayout, theta_row: torch.Tensor) -> dict[str, torch.Tensor]:
    """Flat parameters (N,) of a layout ("layer1" (D + 1, H), "layer2" (H + 1, V), bias rows
    last) as the state dict of nn.Sequential(nn.Linear(D, H), nn.ReLU(), nn.Linear(H, V))."""
    p = layout.views(theta_row.detach().reshape(1, -1))
    l1, l2 = p["layer1"][0], p["layer2"][0]
    return {"0.weight": l1[:-1].T.clone(), "0.bias": l1[-1].clone(),
            "2.weight": l2[:-1].T.clone(), "2.bias": l2[-1].clone()}


def mlp_from_state_dict(sd: dict[str, torch.Tensor]) -> torch.Tensor:
    """Inverse of mlp_state_dict: (N,) flat parameters, in the state dict's dtype."""
    l1 = torch.cat([sd["0.weight"].T, sd["0.bias"].unsqueeze(0)])
    l2 = torch.cat([sd["2.weight"].T, sd["2.bias"].unsqueeze(0)])
    return torch.cat([l1.reshape(-1), l2.reshape(-1)])


@dataclass(frozen=True)
class PolicyNet:
    """pi(v | c) = softmax(W2 relu(W1 x_c + b1) + b2)[v]: the notebook's two-layer ToyLM.

    Each layer's weight and bias are stored together as one (fan_in + 1, fan_out) block whose
    last row is the bias, so each layer is one matmul against inputs with a column of ones.
    State dicts use the key names of `nn.Sequential(nn.Linear(D, H), nn.ReLU(), nn.Linear(H, V))`,
    so a trained policy loads into that module with `load_state_dict`.
    """

    context_dim: int
    hidden_dim: int
    vocab_size: int

    @property
    def layout(self) -> ParamLayout:
        d, h, v = self.context_dim, self.hidden_dim, self.vocab_size
        return ParamLayout((("layer1", (d + 1, h)), ("layer2", (h + 1, v))))

    def init(self, gen: torch.Generator) -> torch.Tensor:
        """(N,) parameters initialized as nn.Linear does: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
        d, h, v = self.context_dim, self.hidden_dim, self.vocab_size
        w1, b1 = _uniform(gen, (h, d), d ** -0.5), _uniform(gen, (h,), d ** -0.5)
        w2, b2 = _uniform(gen, (v, h), h ** -0.5), _uniform(gen, (v,), h ** -0.5)
        return self.from_state_dict({"0.weight": w1, "0.bias": b1, "2.weight": w2, "2.bias": b2})

    def logits(self, theta: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
        """theta (E, N), contexts (C, D) -> logits (E, C, V)."""
        return self.forward(self.layout.views(theta), self.inputs(contexts, theta.shape[0]))[0]

    @staticmethod
    def inputs(contexts: torch.Tensor, n_members: int) -> torch.Tensor:
        """contexts (C, D) -> x1 (E, C, D + 1): the first layer's input, with its ones column."""
        x1 = with_bias_column(contexts)
        return x1.expand(n_members, *x1.shape)

    @staticmethod
    def forward(params: dict[str, torch.Tensor], x1: torch.Tensor):
        """params (views of theta), x1 = inputs(contexts) (E, C, D + 1)
        -> (logits (E, C, V), h1 (E, C, H + 1) the hidden layer with its ones column).

        Training loops take the views and inputs once per run: theta is updated in place, so the
        views stay valid.
        """
        h1 = with_bias_column(torch.relu(torch.bmm(x1, params["layer1"])))
        return torch.bmm(h1, params["layer2"]), h1

    @staticmethod
    def backward(params: dict[str, torch.Tensor], x1: torch.Tensor, h1: torch.Tensor,
                 dlogits: torch.Tensor) -> torch.Tensor:
        """Gradient (E, N) of a loss with respect to theta, given dloss/dlogits (E, C, V).

        Hand-written backpropagation through the two layers (autograd's bookkeeping costs more
        than the arithmetic at this size; tests check it against autograd):
            dL/d[W2; b2] = h1^T dZ,   dH = (dZ W2^T) * [h > 0],   dL/d[W1; b1] = x1^T dH
        """
        n, hidden = dlogits.shape[0], h1.shape[-1] - 1
        w2 = params["layer2"][:, :hidden]                                    # (E, H, V)
        dh = torch.bmm(dlogits, w2.transpose(1, 2)).mul_(h1[..., :hidden] > 0)
        return torch.cat((torch.bmm(x1.transpose(1, 2), dh).view(n, -1),
                          torch.bmm(h1.transpose(1, 2), dlogits).view(n, -1)), dim=1)

    def state_dict(self, theta_row: torch.Tensor) -> dict[str, torch.Tensor]:
        """One member's parameters (N,) as an nn.Sequential state dict (fresh tensors)."""
        return mlp_state_dict(self.layout, theta_row)

    def from_state_dict(self, sd: dict[str, torch.Tensor]) -> torch.Tensor:
        """Inverse of state_dict: (N,) flat parameters."""
        return mlp_from_state_dict(sd)


@dataclass(frozen=True)
class RewardNet:
    """r(c, v) = w2 . relu(Wx x_c + We e_v + b1) + b2: the notebook's RewardModel.

    The notebook's first layer acts on the concatenation [x_c, e_v]; splitting its weight into a
    context part Wx and a token part We is the same function, and lets the C x V score table be
    built by broadcasting (C, 1, H) + (1, V, H) instead of concatenating C x V inputs.
    """

    context_dim: int
    hidden_dim: int
    vocab_size: int

    @property
    def layout(self) -> ParamLayout:
        d, h, v = self.context_dim, self.hidden_dim, self.vocab_size
        return ParamLayout((("embed", (v, h)), ("wx", (d, h)), ("we", (h, h)), ("b1", (h,)),
                            ("w2", (h,)), ("b2", (1,))))

    def init(self, gen: torch.Generator) -> torch.Tensor:
        """(N,) parameters: N(0, 1) token embeddings (nn.Embedding), nn.Linear-style layers."""
        d, h, v = self.context_dim, self.hidden_dim, self.vocab_size
        fan1 = d + h
        w1 = _uniform(gen, (h, fan1), fan1 ** -0.5)
        parts = [torch.randn(v, h, generator=gen), w1[:, :d].T, w1[:, d:].T,
                 _uniform(gen, (h,), fan1 ** -0.5), _uniform(gen, (h,), h ** -0.5),
                 _uniform(gen, (1,), h ** -0.5)]
        return torch.cat([p.reshape(-1) for p in parts])

    def scores(self, theta: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
        """theta (E, N), contexts (C, D) -> reward table (E, C, V)."""
        return self.forward(self.layout.views(theta), contexts)[0]

    @staticmethod
    def forward(params: dict[str, torch.Tensor], contexts: torch.Tensor):
        """params (views of theta), contexts (C, D) -> (scores (E, C, V), hidden (E, C, V, H))."""
        ctx = torch.matmul(contexts, params["wx"])                                  # (E, C, H)
        tok = torch.baddbmm(params["b1"].unsqueeze(1), params["embed"], params["we"])  # (E, V, H)
        hidden = torch.relu(ctx.unsqueeze(2) + tok.unsqueeze(1))                   # (E, C, V, H)
        scores = torch.matmul(hidden, params["w2"].view(-1, 1, params["w2"].shape[-1], 1))
        return scores.squeeze(-1).add_(params["b2"].unsqueeze(-1)), hidden

    @staticmethod
    def backward(params: dict[str, torch.Tensor], contexts: torch.Tensor, hidden: torch.Tensor,
                 dscores: torch.Tensor) -> torch.Tensor:
        """Gradient (E, N) given dloss/dscores (E, C, V), by hand (tests check it against autograd):
            dw2 = sum_cv dS h,  db2 = sum_cv dS,  dPre = dS w2 [h > 0],
            dWx = X^T sum_v dPre,  dU = sum_c dPre,  db1 = sum_v dU,  dWe = E^T dU,  dE = dU We^T
        """
        n = dscores.shape[0]
        dpre = (dscores.unsqueeze(-1) * params["w2"].view(n, 1, 1, -1)).mul_(hidden > 0)
        dctx, dtok = dpre.sum(2), dpre.sum(1)                                   # (E, C, H), (E, V, H)
        parts = (torch.bmm(dtok, params["we"].transpose(1, 2)),                  # embed
                 torch.matmul(contexts.T, dctx),                                  # wx
                 torch.bmm(params["embed"].transpose(1, 2), dtok),                # we
                 dtok.sum(1),                                                     # b1
                 torch.einsum("ecv,ecvh->eh", dscores, hidden),                   # w2
                 dscores.sum((1, 2)).unsqueeze(1))                                # b2
        return torch.cat([g.reshape(n, -1) for g in parts], dim=1)


class BatchedAdam:
    """Adam (torch.optim.Adam's update, betas 0.9/0.999, eps 1e-8) on theta (E, N), one lr per member.

        m <- b1 m + (1 - b1) g,   v <- b2 v + (1 - b2) g^2
        theta <- theta - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

    `step(grad, active)` updates only the members where `active (E,)` is true; the others keep
    their parameters, moments and step counts. Both paths do the same float operations in the same
    order, so sitting steps out does not change a member's arithmetic.
    """

    def __init__(self, theta: torch.Tensor, lr: torch.Tensor, betas=(0.9, 0.999), eps=1e-8):
        self.theta = theta
        self.lr = lr.reshape(-1, 1).double()                  # (E, 1)
        self.b1, self.b2 = betas
        self.eps = eps
        self.m = torch.zeros_like(theta)
        self.v = torch.zeros_like(theta)
        self.steps = 0                      # step count while every member takes every step
        self.t: torch.Tensor | None = None  # (E, 1) float64 per-member counts, once they differ
        self._inv_bc2 = self._step_size = None  # bias-correction tables, see _corrections
        self._table_len = 0

    def subset(self, theta: torch.Tensor, rows: slice) -> "BatchedAdam":
        """This optimizer for the members `rows` only, on their parameters `theta` (a copy of
        those rows): the same moments, step counts and learning rates, so the same updates."""
        opt = BatchedAdam(theta, self.lr[rows].squeeze(1), (self.b1, self.b2), self.eps)
        opt.lr = self.lr[rows]
        opt.m, opt.v, opt.steps = self.m[rows].clone(), self.v[rows].clone(), self.steps
        opt.t = None if self.t is None else self.t[rows].clone()
        return opt

    def _corrections(self, t: int):
        """Tables of the bias corrections for step counts 0..>=t, built once (and grown):
        1 / sqrt(1 - b2^t) as float32 (T,), and -lr / (1 - b1^t) as float32 (T, E)."""
        if t >= self._table_len:
            self._table_len = max(1024, 2 * t)
            steps = torch.arange(self._table_len, dtype=torch.float64)
            self._inv_bc2 = ((1 - self.b2 ** steps) ** -0.5).float()
            self._step_size = (-self.lr.T / (1 - self.b1 ** steps).unsqueeze(1)).float()
            # the fast path's rows: (E, 1) per step, and the float32 factors as Python floats
            # (a float32 tensor times a Python float multiplies by the same float32 value)
            self._step_rows = self._step_size.unsqueeze(2)
            self._inv_bc2_list = self._inv_bc2.tolist()
        return self._inv_bc2, self._step_size

    def step(self, grad: torch.Tensor, active: torch.Tensor | None = None) -> None:
        """One Adam step with grad (E, N); `active (E,)` bool selects the members to update."""
        b1, b2 = self.b1, self.b2
        if active is None and self.t is None:
            self.steps += 1
            if self.steps >= self._table_len:
                self._corrections(self.steps)
            inv_bc2, step_size = self._inv_bc2_list[self.steps], self._step_rows[self.steps]
            self.m.lerp_(grad, 1 - b1)
            self.v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
            m, v = self.m, self.v
        else:
            if self.t is None:
                self.t = torch.full_like(self.lr, float(self.steps))
            act = (torch.ones_like(self.t, dtype=torch.bool) if active is None
                   else active.reshape(-1, 1))
            self.t += act
            t = self.t.clamp_min(1).long()                                   # (E, 1)
            inv_bc2, step_size = self._corrections(int(t.max()))
            inv_bc2 = inv_bc2[t]
            step_size = step_size[t.squeeze(1), torch.arange(len(t))].unsqueeze(1)
            m = self.m.lerp(grad, 1 - b1)
            v = self.v.mul(b2).addcmul_(grad, grad, value=1 - b2)
            self.m = torch.where(act, m, self.m)
            self.v = torch.where(act, v, self.v)
        # m * step_size / (sqrt(v) / sqrt(1 - b2^t) + eps), the same float operations on both paths
        update = (m * step_size).div_(v.sqrt().mul_(inv_bc2).add_(self.eps))
        if active is not None:
            update = torch.where(act, update, 0.0)
        self.theta.add_(update)
