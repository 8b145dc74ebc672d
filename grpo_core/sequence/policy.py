"""The autoregressive policy as a table, SFT on demonstrations, and the sequence reward model.

Policy: pi(y_t | c, t, y_{t-1}) = softmax(W2 relu(W1 [x_c; onehot(t); onehot(y_{t-1})] + b1) + b2).
Its input is (context, position, previous token) alone, so one forward over the R = C L (A + 1)
possible inputs gives the whole policy, logp_table (E, C, L, A + 1, A + 1), for E members at once
(weights theta (E, N), one row per member). Every response's log-probability is then one matmul
with the task's incidence matrix (see task.py), and gradients flow back through that tiny table
with autograd: at this size autograd's bookkeeping is cheap next to the exact sums.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F

from ..models import BatchedAdam, ParamLayout, _uniform, mlp_from_state_dict, mlp_state_dict
from ..sampling import generator
from .config import SeqRewardModelConfig, SeqSFTConfig
from .task import Responses, SeqTask


@dataclass(frozen=True)
class SeqPolicyNet:
    """A one-hidden-layer MLP over (context embedding, position one-hot, previous-token one-hot)."""

    context_dim: int
    max_length: int
    alphabet_size: int
    hidden_dim: int

    @property
    def vocab(self) -> int:
        """Next tokens (A content + end) = previous tokens (A content + start)."""
        return self.alphabet_size + 1

    @property
    def n_features(self) -> int:
        return self.context_dim + self.max_length + self.vocab

    @property
    def layout(self) -> ParamLayout:
        return ParamLayout((("layer1", (self.n_features + 1, self.hidden_dim)),
                            ("layer2", (self.hidden_dim + 1, self.vocab))))

    def init(self, gen: torch.Generator) -> torch.Tensor:
        """(N,) weights initialized as nn.Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), bias rows last."""
        f, h, v = self.n_features, self.hidden_dim, self.vocab
        w1 = _uniform(gen, (f + 1, h), f ** -0.5)
        w2 = _uniform(gen, (h + 1, v), h ** -0.5)
        return torch.cat([w1.reshape(-1), w2.reshape(-1)])

    def inputs(self, contexts: torch.Tensor) -> torch.Tensor:
        """contexts (C, D) -> x (C L (A+1), F + 1): every (context, position, previous token) with
        a ones column for the bias, in table order."""
        n_ctx, big_l, v = contexts.shape[0], self.max_length, self.vocab
        ctx = contexts.view(n_ctx, 1, 1, -1).expand(n_ctx, big_l, v, -1)
        pos = torch.eye(big_l).view(1, big_l, 1, big_l).expand(n_ctx, big_l, v, big_l)
        prev = torch.eye(v).view(1, 1, v, v).expand(n_ctx, big_l, v, v)
        x = torch.cat([ctx, pos, prev, torch.ones(n_ctx, big_l, v, 1)], dim=-1)
        return x.reshape(n_ctx * big_l * v, -1)

    def forward(self, theta: torch.Tensor, x: torch.Tensor, n_ctx: int):
        """theta (E, N), x = inputs(contexts) (R, F + 1) -> (logp_table (E, C, K) flat per context
        in the order of Responses.token_index, hidden (E, R, H + 1) with its ones column)."""
        p = self.layout.views(theta)
        h1 = F.pad(torch.relu(torch.matmul(x, p["layer1"])), (0, 1), value=1.0)   # (E, R, H + 1)
        logp = torch.log_softmax(torch.bmm(h1, p["layer2"]), -1)             # (E, R, V)
        return logp.reshape(theta.shape[0], n_ctx, -1), h1

    def state_dict(self, theta_row: torch.Tensor) -> dict[str, torch.Tensor]:
        """One member's weights (N,) as the state dict of nn.Sequential(nn.Linear(F, H), nn.ReLU(),
        nn.Linear(H, A + 1)) over the features [x_c; onehot(t); onehot(y_{t-1})]."""
        return mlp_state_dict(self.layout, theta_row)

    def from_state_dict(self, sd: dict[str, torch.Tensor]) -> torch.Tensor:
        """Inverse of state_dict: (N,) flat weights."""
        return mlp_from_state_dict(sd)

    def logp_table(self, theta: torch.Tensor, x: torch.Tensor, n_ctx: int) -> torch.Tensor:
        """theta (E, N) -> logp_table (E, C, K) (differentiable with autograd, for tests)."""
        return self.forward(theta, x, n_ctx)[0]

    def backward(self, theta: torch.Tensor, x: torch.Tensor, h1: torch.Tensor,
                 logp: torch.Tensor, dlogp: torch.Tensor) -> torch.Tensor:
        """Gradient (E, N) of a loss given dloss/dlogp_table (E, C, K), by hand; several losses'
        gradients (E, J, N) at once given (E, J, C, K):
            dZ = dlogp - softmax * sum_v dlogp   (through log_softmax, per row),
            d[W2; b2] = h1^T dZ,   dH = (dZ W2^T) [h > 0],   d[W1; b1] = x^T dH
        (checked against autograd of logp_table in the tests)."""
        n_mem, v, hidden = theta.shape[0], self.vocab, self.hidden_dim
        many = dlogp.dim() == 4
        w2 = self.layout.views(theta)["layer2"][:, :hidden]                  # (E, H, V)
        g = dlogp.reshape(n_mem, -1, h1.shape[1], v)                         # (E, J, R, V)
        probs = logp.reshape(n_mem, 1, -1, v).exp()
        dz = g - probs * g.sum(-1, keepdim=True)
        dh = torch.matmul(dz, w2.transpose(1, 2).unsqueeze(1)).mul_(h1[..., :hidden].unsqueeze(1) > 0)
        grad = torch.cat((torch.matmul(x.T, dh).flatten(2),
                          torch.matmul(h1.transpose(1, 2).unsqueeze(1), dz).flatten(2)), dim=2)
        return grad if many else grad[:, 0]


def sample_responses(probs: torch.Tensor, ctx: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draws of whole responses: probs (E, C, N), ctx and u (E, S) -> response (E, S).

    response = #{n : cdf[c, n] <= u}. The contexts' CDFs are laid end to end, each shifted by its
    context index, so one searchsorted per member serves every context without copying a CDF
    per sample (float64 keeps the shifted CDFs exact to ~1e-16).
    """
    n_ctx, n = probs.shape[-2], probs.shape[-1]
    cdf = probs.double().cumsum(-1)
    cdf = cdf / cdf[..., -1:] + torch.arange(n_ctx, dtype=torch.float64).unsqueeze(-1)
    index = torch.searchsorted(cdf.flatten(-2), ctx + u.double(), right=True) - ctx * n
    return index.clamp_(0, n - 1)


def sequence_logp(table: torch.Tensor, responses: Responses) -> torch.Tensor:
    """table (..., K) -> log pi(y | c) of every response (..., N): table @ incidence."""
    return torch.matmul(table, responses.incidence)


def token_logp(table: torch.Tensor, responses: Responses, ctx: torch.Tensor,
               resp: torch.Tensor) -> torch.Tensor:
    """table (E, C, K), ctx and resp (E, S) -> per-token log-probs (E, S, L) of the sampled
    responses (0 at padding)."""
    n_mem, n_ctx, k = table.shape
    index = ctx.unsqueeze(-1) * k + responses.token_index[resp]             # (E, S, L)
    values = table.reshape(n_mem, -1).gather(1, index.flatten(1)).view_as(index)
    return values * responses.mask[resp]


SFT_CHUNK = 128  # SFT steps whose demonstration counts are tabulated at once (bounded memory)


@dataclass(frozen=True)
class SeqSFTResult:
    """The SFT policy, which is also the frozen reference: weights and its exact tables."""

    config: SeqSFTConfig
    net: SeqPolicyNet
    theta: torch.Tensor           # (N,)
    logp_table: torch.Tensor      # (C, K)
    seq_logp: torch.Tensor        # (C, N)
    history: pd.DataFrame         # step, loss (cross-entropy per demonstration)


def train_sft(task: SeqTask, cfg: SeqSFTConfig = SeqSFTConfig()) -> SeqSFTResult:
    """Maximum likelihood on demonstrations drawn from task.demo_probs, Adam, cfg.seed's generator.

        L_SFT = -1/B sum_b log pi(y_b | c_b),   c_b ~ U(C), y_b ~ demo(. | c_b)
    """
    gen = generator(cfg.seed)
    tc = task.config
    net = SeqPolicyNet(tc.context_dim, tc.max_length, tc.alphabet_size, cfg.hidden_dim)
    theta = net.init(gen).unsqueeze(0)
    x = net.inputs(task.contexts)
    n_ctx = task.n_contexts
    ctx = torch.randint(0, n_ctx, (cfg.steps, cfg.batch_size), generator=gen)
    u = torch.rand(cfg.steps, cfg.batch_size, 1, generator=gen)
    resp = sample_responses(task.demo_probs.unsqueeze(0), ctx.view(1, -1), u.view(1, -1)).view_as(ctx)
    # Each demonstration's table entries, flat over (C, K): (steps, B, L), padding masked out.
    entries = (ctx.unsqueeze(-1) * task.responses.table_size + task.responses.token_index[resp])
    weight = task.responses.mask[resp].to(torch.get_default_dtype()) / cfg.batch_size
    opt = BatchedAdam(theta, torch.tensor([cfg.lr]))
    losses = torch.empty(cfg.steps)
    size = n_ctx * task.responses.table_size
    for step in range(cfg.steps):
        if step % SFT_CHUNK == 0:  # freq[s, c, k]: share of step s's tokens at entry k of context c
            rows = slice(step, step + SFT_CHUNK)
            n_rows = len(range(*rows.indices(cfg.steps)))
            flat = (torch.arange(n_rows).view(-1, 1, 1) * size + entries[rows]).flatten()
            freq = torch.zeros(n_rows * size).index_add_(0, flat, weight[rows].flatten()).view(n_rows, 1, n_ctx, -1)
        f = freq[step % SFT_CHUNK]
        table, h1 = net.forward(theta, x, n_ctx)
        losses[step] = -(table * f).sum()
        opt.step(net.backward(theta, x, h1, table, -f))
    table = net.logp_table(theta, x, n_ctx)[0]
    history = pd.DataFrame({"step": range(1, cfg.steps + 1), "loss": losses.numpy()})
    return SeqSFTResult(cfg, net, theta[0].clone(), table, sequence_logp(table, task.responses), history)


@dataclass(frozen=True)
class SeqRewardModelResult:
    """A Bradley-Terry reward model over whole responses: its (C, N) score table and history."""

    config: SeqRewardModelConfig
    scores: torch.Tensor          # (C, N) r(c, y)
    history: pd.DataFrame         # step, loss (Bradley-Terry, on that step's comparisons)
    pairwise_accuracy: float      # correct-vs-wrong pairs of a context ranked correct-first (AUC)


def response_features(responses: Responses) -> torch.Tensor:
    """(N, L (A + 1)): one-hot of the token at each position, zeros past the end."""
    onehot = F.one_hot(responses.tokens, responses.alphabet_size + 1).to(torch.get_default_dtype())
    return (onehot * responses.mask.unsqueeze(-1)).flatten(1)


def train_reward_model(task: SeqTask, cfg: SeqRewardModelConfig = SeqRewardModelConfig()
                       ) -> SeqRewardModelResult:
    """Bradley-Terry on simulated comparisons, as the one-token notebook does, over sequences.

    Pairs (c, y_a, y_b) from one context, each response drawn from the demonstrations or uniformly
    over all N (half each); the label is 1 with probability
        sigmoid(label_scale (ok(y_a) - ok(y_b)) + length_bias (|y_a| - |y_b|)),
    so labelers who like length teach the model to reward it. The model:
        r(c, y) = w2 . relu(Wc x_c + Wy f(y) + b1) + b2,   f(y) = per-position token one-hot,
    trained on  -1/B sum [y log s(r_a - r_b) + (1 - y) log s(r_b - r_a)]  with Adam.
    """
    gen = generator(cfg.seed)
    resp, n_ctx, h = task.responses, task.n_contexts, cfg.hidden_dim
    feats = response_features(resp)                                         # (N, F)
    d, f = task.contexts.shape[1], feats.shape[1]
    params = [_uniform(gen, (d, h), (d + f) ** -0.5), _uniform(gen, (f, h), (d + f) ** -0.5),
              _uniform(gen, (h,), (d + f) ** -0.5), _uniform(gen, (h,), h ** -0.5),
              _uniform(gen, (1,), h ** -0.5)]
    flat = torch.cat([p.reshape(-1) for p in params]).unsqueeze(0)
    shapes = ParamLayout((("wc", (d, h)), ("wy", (f, h)), ("b1", (h,)), ("w2", (h,)), ("b2", (1,))))

    def score(theta, c, y):
        """r(c, y) for index tensors c, y of one shape."""
        p = shapes.views(theta)
        hidden = torch.relu(task.contexts[c] @ p["wc"][0] + feats[y] @ p["wy"][0] + p["b1"][0])
        return hidden @ p["w2"][0] + p["b2"][0]

    b, n = cfg.batch_pairs, resp.n
    ctx = torch.randint(0, n_ctx, (cfg.steps, b), generator=gen)
    draws = []
    for _ in range(2):
        from_demo = torch.rand(cfg.steps, b, generator=gen) < 0.5
        u = torch.rand(1, cfg.steps * b, generator=gen)
        demo = sample_responses(task.demo_probs.unsqueeze(0), ctx.view(1, -1), u).view_as(ctx)
        uniform = torch.randint(0, n, (cfg.steps, b), generator=gen)
        draws.append(torch.where(from_demo, demo, uniform))
    ya, yb = draws
    ok = task.correct
    length = resp.length.to(torch.get_default_dtype())
    margin_true = (cfg.label_scale * (ok[ctx, ya] - ok[ctx, yb])
                   + cfg.length_bias * (length[ya] - length[yb]))
    label = (torch.rand(cfg.steps, b, generator=gen) < torch.sigmoid(margin_true)).to(margin_true.dtype)
    opt = BatchedAdam(flat, torch.tensor([cfg.lr]))
    losses = torch.empty(cfg.steps)
    for step in range(cfg.steps):  # only the sampled pairs are scored while training
        w = flat.detach().requires_grad_(True)
        c = ctx[step].repeat(2)
        s_ab = score(w, c, torch.cat([ya[step], yb[step]]))
        loss = F.binary_cross_entropy_with_logits(s_ab[:b] - s_ab[b:], label[step])
        grad, = torch.autograd.grad(loss, w)
        opt.step(grad)
        losses[step] = loss.detach()
    with torch.no_grad():  # the (C, N) table, a block of responses at a time (bounded memory)
        final = torch.cat([score(flat, torch.arange(n_ctx).unsqueeze(1), block.unsqueeze(0))
                           for block in torch.arange(n).split(4096)], dim=1)
    history = pd.DataFrame({"step": range(1, cfg.steps + 1), "loss": losses.numpy()})
    return SeqRewardModelResult(cfg, final, history, ranking_accuracy(final, ok))


def ranking_accuracy(scores: torch.Tensor, correct: torch.Tensor) -> float:
    """Fraction of (correct, wrong) response pairs of the same context that the scores rank
    correct-first (the AUC, from ranks: no N x N table), averaged over contexts that have both."""
    ranks = scores.double().argsort(-1).argsort(-1).double()                # 0-based
    pos = correct.sum(-1).double()
    neg = correct.shape[-1] - pos
    auc = ((ranks * correct).sum(-1) - pos * (pos - 1) / 2) / (pos * neg)
    both = (pos > 0) & (neg > 0)
    return float(auc[both].mean()) if bool(both.any()) else float("nan")


