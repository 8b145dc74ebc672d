"""DPO: Direct Preference Optimization (Rafailov et al., 2023), offline and online, batched over runs.

For a pair (c, y_w, y_l) with y_w preferred, h(v) = log pi(v|c) - log pi_ref(v|c) and

    u = beta * (h(y_w) - h(y_l)),     L_DPO = -1/B sum log sigmoid(u)          (TRL loss_type="sigmoid")

The implicit reward is beta * h. For labels drawn as P(a > b | c) = sigmoid(r*(c,a) - r*(c,b)),
the population loss is minimized exactly when h = r*/beta + const_c, i.e. at

    pi*(v | c) = pi_ref(v | c) exp(r*(c, v) / beta) / Z(c),

the optimum of  E_pi[r*] - beta KL(pi || pi_ref)  that RLHF and KL-regularized GRPO aim at. On the
notebook's labels r* is the true preference R itself.

Offline (`train_dpo`): the pairs are either exactly the reward model's comparisons (same pairs, same
labels: `reward_model.comparison_data`), so 'reward model + GRPO' and 'DPO' see identical
information, or pairs sampled from pi_ref and labelled by the same simulated annotator (the DPO
paper's setting). Online (`train_online_dpo`): each iteration, two responses per prompt from the
current policy; the reward model picks the chosen one (Guo et al. 2024; TRL OnlineDPOTrainer).

Members (runs) are rows of one flat parameter tensor, as in the GRPO trainer; each has its own
generator, and the exact metrics of every member's policy are recorded after every step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pandas as pd
import torch
import torch.nn.functional as F

from ..config import RewardModelConfig, _Validated, knob
from ..engine import RunResult
from ..layout import EXACT_COLUMNS
from ..metrics import policy_metrics
from ..models import BatchedAdam
from ..problem import Problem
from ..reward_model import comparison_data
from ..sampling import generator, sample_categorical
from ..sft import SFTResult, sft_policy

DPO_DATA = ("reward_model_pairs", "reference_pairs")
CHUNK = 64              # iterations of online randomness drawn per generator call


@dataclass(frozen=True)
class DPOConfig(_Validated):
    """Offline DPO on a fixed set of labelled pairs, as many as the reward model was trained on."""

    beta: float = knob(0.1, 0.01, 10.0, "DPO's beta: the strength of the implicit KL to the "
                       "reference; the optimum is pi_ref exp(r / beta) / Z (TRL beta).", log=True)
    lr: float = knob(1e-3, 1e-5, 1.0, "Adam learning rate of the policy.", log=True)
    epochs: int = knob(5, 1, 50, "Passes over the preference data, one Adam step per batch of "
                       "pairs (the reward model's batches): 5 x 200 = GRPO's 500 x 2 steps.")
    data: str = knob("reward_model_pairs", choices=DPO_DATA,
                     help="Preference pairs: exactly the reward model's (same pairs, same labels), "
                          "or pairs sampled from the reference policy and labelled the same way.")
    seed: int = knob(0, 0, 2**31 - 1, "Seed of this run: the order of the pairs in each later "
                     "epoch, and the reference-sampled pairs.")


@dataclass(frozen=True)
class OnlineDPOConfig(_Validated):
    """Online DPO: two responses per prompt from the current policy, the reward model picks."""

    iterations: int = knob(500, 1, 5000, "Training iterations; each samples fresh pairs.")
    prompts: int = knob(32, 1, 128, "Prompts per iteration, two responses each (32 x 2 = GRPO's "
                        "8 prompts x 8 responses).")
    beta: float = knob(0.1, 0.01, 10.0, "DPO's beta: strength of the implicit KL to the reference.",
                       log=True)
    lr: float = knob(1e-3, 1e-5, 1.0, "Adam learning rate of the policy.", log=True)
    seed: int = knob(0, 0, 2**31 - 1, "Seed of this run's sampling (prompts and responses).")

    @property
    def samples_per_iteration(self) -> int:
        return 2 * self.prompts


# ---- the loss ---------------------------------------------------------------------------------

def dpo_loss(logp: torch.Tensor, ref_logp: torch.Tensor, chosen: torch.Tensor,
             rejected: torch.Tensor, beta: torch.Tensor, weight: torch.Tensor | None = None):
    """Differentiable DPO loss per member (the reference the hand-written gradient matches).

    logp (E, C, V), ref_logp (C, V) or (E, C, V); chosen, rejected (E, B) flat c * V + v;
    beta (E,); weight (E, B) (default 1/B). Returns (loss (E,), margins u (E, B)).
    """
    h = (logp - ref_logp).flatten(1) if ref_logp.dim() == 3 else logp.flatten(1) - ref_logp.reshape(-1)
    u = beta.view(-1, 1) * (h.gather(1, chosen) - h.gather(1, rejected))
    if weight is None:
        weight = torch.full(chosen.shape, 1.0 / chosen.shape[1])
    return (F.softplus(-u) * weight).sum(1), u


def dpo_logits_grad(logp: torch.Tensor, ref_logp: torch.Tensor, chosen: torch.Tensor,
                    rejected: torch.Tensor, beta: torch.Tensor, weight: torch.Tensor | None = None):
    """d dpo_loss / d logits (E, C, V) by hand, with the loss and margins.

        dL/du = -w sigmoid(-u);  dL/dlogp(y_w) = beta dL/du, dL/dlogp(y_l) = -beta dL/du;
        dL/dlogits[c] = g[c] - (sum_v g[c, v]) pi(. | c)  for g = dL/dlogp.
    """
    loss, u = dpo_loss(logp, ref_logp, chosen, rejected, beta, weight)
    if weight is None:
        weight = torch.full(chosen.shape, 1.0 / chosen.shape[1])
    du = -weight * torch.sigmoid(-u) * beta.view(-1, 1)
    g = torch.zeros_like(logp).flatten(1).scatter_add_(1, chosen, du).scatter_add_(1, rejected, -du)
    g = g.view_as(logp)
    return g - g.sum(-1, keepdim=True) * logp.exp(), loss, u


def _dpo_grad(logp, ref_flat, chosen, rejected, beta_col, weight, probs=None, neg_beta=None):
    """dpo_logits_grad's gradient and margins, in the fewest operations (the training loop's).
    probs: logp.exp(), neg_beta: -beta_col, if already computed."""
    h = logp.flatten(1) - ref_flat
    u = beta_col * (h.gather(1, chosen) - h.gather(1, rejected))
    du = torch.sigmoid(-u).mul_(weight).mul_(-beta_col if neg_beta is None else neg_beta)
    g = torch.zeros_like(h).scatter_add_(1, chosen, du).scatter_add_(1, rejected, -du).view_as(logp)
    return g.sub_(g.sum(-1, keepdim=True) * (logp.exp() if probs is None else probs)), u


def preference_probs(true_reward: torch.Tensor) -> torch.Tensor:
    """(C, V) rewards -> (C, V, V) the simulated annotator's P(a > b | c) = sigmoid(R_a - R_b)."""
    return torch.sigmoid(true_reward.unsqueeze(-1) - true_reward.unsqueeze(-2))


def dpo_expected_loss(logp: torch.Tensor, ref_logp: torch.Tensor, pref: torch.Tensor,
                      beta: float) -> torch.Tensor:
    """The population DPO loss over every pair, prompts and both tokens uniform:

        E_{c, a, b} [ P_ab softplus(-u_ab) + (1 - P_ab) softplus(u_ab) ],  u_ab = beta (h_a - h_b)

    logp, ref_logp (..., C, V); pref (C, V, V) -> (...)."""
    h = logp - ref_logp
    u = beta * (h.unsqueeze(-1) - h.unsqueeze(-2))
    return (pref * F.softplus(-u) + (1 - pref) * F.softplus(u)).mean((-1, -2, -3))


def dpo_optimum(ref_logp: torch.Tensor, reward: torch.Tensor, beta: float) -> torch.Tensor:
    """log of pi_ref exp(r / beta) / Z: (C, V)."""
    return torch.log_softmax(ref_logp + reward / beta, -1)


# ---- the data ---------------------------------------------------------------------------------

def offline_pairs(problem: Problem, sft: SFTResult, rm_cfg: RewardModelConfig,
                  cfg: DPOConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """One run's (steps, B) flat chosen and rejected indices c * V + v, epochs concatenated.

    reward_model_pairs: the reward model's own comparisons in its order for the first epoch, then
    a fresh permutation of them (from the run's generator) each later epoch. reference_pairs: the
    same number of pairs, tokens drawn from pi_ref, labelled by the same Bradley-Terry annotator.
    """
    gen = generator(cfg.seed)
    vocab = problem.vocab_size
    if cfg.data == "reward_model_pairs":
        data = comparison_data(problem, rm_cfg)
        ctx, chosen, rejected = data.ctx, data.chosen, data.rejected
    else:
        steps, batch = rm_cfg.steps, rm_cfg.batch_pairs
        ctx = torch.randint(0, problem.n_contexts, (steps, batch), generator=gen)
        u = torch.rand(steps, batch, 2, generator=gen)
        toks = sample_categorical(sft.logp.exp()[ctx], u)                  # (steps, B, 2)
        tok_a, tok_b = toks.unbind(-1)
        true = problem.true_reward
        label = torch.rand(steps, batch, generator=gen) < torch.sigmoid(true[ctx, tok_a] - true[ctx, tok_b])
        chosen, rejected = torch.where(label, tok_a, tok_b), torch.where(label, tok_b, tok_a)
    w, l = ctx * vocab + chosen, ctx * vocab + rejected
    steps, batch = w.shape
    ws, ls = [w], [l]
    for _ in range(cfg.epochs - 1):
        perm = torch.randperm(steps * batch, generator=gen)
        ws.append(w.reshape(-1)[perm].view(steps, batch))
        ls.append(l.reshape(-1)[perm].view(steps, batch))
    return torch.cat(ws), torch.cat(ls)


# ---- training ---------------------------------------------------------------------------------

class _Policies:
    """E copies of the SFT policy as rows of one parameter tensor, with a per-member Adam."""

    def __init__(self, problem: Problem, sft: SFTResult, lr: torch.Tensor):
        self.net = sft_policy(sft)
        n = lr.shape[0]
        self.theta = self.net.from_state_dict(sft.state_dict).repeat(n, 1)
        self.params = self.net.layout.views(self.theta)
        self.x1 = self.net.inputs(problem.contexts, n)
        self.opt = BatchedAdam(self.theta, lr)

    def forward(self, out: torch.Tensor | None = None):
        """(log pi (E, C, V), written into `out` if given, hidden layer for backward)."""
        logits, h1 = self.net.forward(self.params, self.x1)
        return torch.log_softmax(logits, -1, out=out), h1

    def step(self, h1, dlogits, active=None):
        self.opt.step(self.net.backward(self.params, self.x1, h1, dlogits), active)

    def keep(self, rows: slice) -> None:
        """Go on with the members `rows` only (the others have finished): the same per-member
        arithmetic on fewer rows."""
        self.theta = self.theta[rows].clone()
        self.params = self.net.layout.views(self.theta)
        self.x1 = self.x1[rows]
        self.opt = self.opt.subset(self.theta, rows)


def _results(problem, sft, policies, configs, logp_hist, columns, rm_table):
    """Per-member RunResults from logp_hist (T + 1, E, C, V) (row 0: SFT) and columns {name: (T, E)}.
    Without rm_table there is no rm_reward column."""
    exact = policy_metrics(logp_hist, problem, rm_table, sft.logp)
    shown = [k for k in EXACT_COLUMNS if k in exact]
    out = []
    for e, cfg in enumerate(configs):
        n = int(columns["steps"][e])
        hist = {"iteration": range(1, n + 1)}
        hist.update({k: v[:n, e].numpy() for k, v in columns.items() if k != "steps"})
        hist.update({k: exact[k][1:n + 1, e].numpy() for k in shown})
        final_logp = logp_hist[n, e].clone()
        final = policy_metrics(final_logp, problem, rm_table, sft.logp, per_context=True)
        per_context = pd.DataFrame({"context": range(problem.n_contexts),
                                    **{k: v.numpy() for k, v in final.items()},
                                    "best": problem.best_reward.numpy()})
        out.append(RunResult(cfg, pd.DataFrame(hist), {k: float(exact[k][n, e]) for k in shown},
                             per_context, final_logp, policies.net.state_dict(policies.theta[e])))
    return out


def train_dpo(problem: Problem, sft: SFTResult, rm_cfg: RewardModelConfig,
              configs: Sequence[DPOConfig], rm_table: torch.Tensor | None = None) -> list[RunResult]:
    """Offline DPO runs from the SFT policy (also the reference), trained together.

    Each run takes one Adam step per batch of rm_cfg.batch_pairs pairs, epochs x rm_cfg.steps
    steps; runs with fewer epochs sit the later steps out. rm_table (C, V), if given, adds the
    reward model's score of each policy to the history (rm_reward), for comparison only.
    """
    return train_dpo_runs(problem, sft, rm_cfg, rm_table, configs)


def train_online_dpo(problem: Problem, sft: SFTResult, rm_table: torch.Tensor,
                     configs: Sequence[OnlineDPOConfig]) -> list[RunResult]:
    """Online DPO runs from the SFT policy, trained together.

    Each iteration: P prompts c ~ U(C), two responses y1, y2 ~ pi(. | c) (the current policy),
    chosen = the one the reward model scores higher (a tie, y1 = y2, has zero gradient), then
    one Adam step on L_DPO against the SFT reference.
    """
    return train_dpo_runs(problem, sft, None, rm_table, configs)


def _draw_online(gens, configs, rows, start, n_ctx, p_max):
    """Prompts (T, R, P) and uniforms (T, R, P, 2) of the online members `rows` for the CHUNK
    iterations from `start`; whole chunks per member, so a run's draws never depend on its batch."""
    ctx = torch.zeros(CHUNK, len(rows), p_max, dtype=torch.long)
    u = torch.zeros(CHUNK, len(rows), p_max, 2)
    for i, e in enumerate(rows):
        cfg = configs[e]
        if start < cfg.iterations:
            ctx[:, i, :cfg.prompts] = torch.randint(0, n_ctx, (CHUNK, cfg.prompts), generator=gens[e])
            u[:, i, :cfg.prompts] = torch.rand(CHUNK, cfg.prompts, 2, generator=gens[e])
    return ctx, u


def _rows(rows: list[int]):
    """Row indices as a slice when they are contiguous (basic indexing is cheaper), else a tensor."""
    if rows and rows[-1] - rows[0] + 1 == len(rows):
        return slice(rows[0], rows[-1] + 1)
    return torch.tensor(rows, dtype=torch.long)


def train_dpo_runs(problem: Problem, sft: SFTResult, rm_cfg: RewardModelConfig | None,
                   rm_table: torch.Tensor | None,
                   configs: Sequence[DPOConfig | OnlineDPOConfig]) -> list[RunResult]:
    """Any mix of offline and online DPO runs, trained as one batch (one policy step per member
    per step; members past their own steps sit out). Offline runs need rm_cfg (their pairs are
    the reward model's, or as many from pi_ref); online runs need rm_table (the judge)."""
    configs = list(configs)
    n, vocab, n_ctx = len(configs), problem.vocab_size, problem.n_contexts
    is_online = [isinstance(c, OnlineDPOConfig) for c in configs]
    rows_on = [e for e in range(n) if is_online[e]]
    rows_off = [e for e in range(n) if not is_online[e]]
    if rows_off and rm_cfg is None:
        raise ValueError("offline DPO runs need the reward model's config (its pairs)")
    if rows_on and rm_table is None:
        raise ValueError("online DPO runs need the reward model's table (the judge)")
    pairs = {e: offline_pairs(problem, sft, rm_cfg, configs[e]) for e in rows_off}
    steps = torch.tensor([configs[e].iterations if is_online[e] else len(pairs[e][0]) for e in range(n)])
    width = torch.tensor([configs[e].prompts if is_online[e] else rm_cfg.batch_pairs for e in range(n)])
    t_max, b_max = int(steps.max()), int(width.max())
    chosen = torch.zeros(t_max, n, b_max, dtype=torch.long)
    rejected = torch.zeros_like(chosen)
    for e, (w, l) in pairs.items():
        chosen[:len(w), e, :w.shape[1]], rejected[:len(l), e, :l.shape[1]] = w, l
    weight = (torch.arange(b_max) < width.unsqueeze(1)) / width.unsqueeze(1)          # (E, B)
    beta = torch.tensor([c.beta for c in configs])
    beta_col, ref_flat = beta.view(-1, 1), sft.logp.reshape(-1)
    pol = _Policies(problem, sft, torch.tensor([c.lr for c in configs]))
    gens = {e: generator(configs[e].seed) for e in rows_on}
    p_on = max((configs[e].prompts for e in rows_on), default=0)
    on = _rows(rows_on)
    t_on = max((configs[e].iterations for e in rows_on), default=0)   # online sampling until then
    rm_flat = rm_table.reshape(-1) if rm_table is not None else None
    logp_hist = torch.empty(t_max + 1, n, n_ctx, vocab)
    margins = torch.zeros(t_max, n, b_max)
    # Every member steps every time (Adam's fast path); a member's weights are kept when it
    # reaches its own step count, and whatever it does after that is discarded. Once the
    # online members are done, members that have finished are dropped when the ones left are
    # contiguous rows `live` (offline DPO's later epochs then train alone).
    final_theta = pol.theta.clone()
    ends = {}
    for e in range(n):
        ends.setdefault(int(steps[e]), []).append(e)
    live, weight_live, neg_beta = slice(0, n), weight, -beta_col
    logp, h1 = pol.forward(out=logp_hist[0])
    for t in range(t_max):
        w_t, l_t = chosen[t, live], rejected[t, live]
        probs = logp.exp()
        if t < t_on:  # rows_on are then within `live`, which is every row
            if t % CHUNK == 0:
                ctx_chunk, u_chunk = _draw_online(gens, configs, rows_on, t, n_ctx, p_on)
            ctx = ctx_chunk[t % CHUNK]                                              # (R, P)
            idx = ctx.unsqueeze(-1) * vocab + sample_categorical(
                probs[on].gather(1, ctx.unsqueeze(-1).expand(-1, -1, vocab)), u_chunk[t % CHUNK])
            first, second = idx.unbind(-1)                                          # (R, P) each
            score_first, score_second = rm_flat[idx].unbind(-1)
            first_wins = score_first >= score_second
            w_t[on, :p_on] = torch.where(first_wins, first, second)
            l_t[on, :p_on] = torch.where(first_wins, second, first)
        dlogits, margins[t, live] = _dpo_grad(logp, ref_flat, w_t, l_t, beta_col, weight_live, probs,
                                              neg_beta)
        pol.step(h1, dlogits)
        logp, h1 = pol.forward(out=logp_hist[t + 1, live])
        if t + 1 in ends:
            for e in ends[t + 1]:
                final_theta[e] = pol.theta[e - live.start]
            left = [e for e in range(live.start, live.stop) if steps[e] > t + 1]
            if t + 1 >= t_on and left and left[-1] - left[0] + 1 == len(left) < live.stop - live.start:
                rows = slice(left[0] - live.start, left[-1] + 1 - live.start)
                live = slice(left[0], left[-1] + 1)
                pol.keep(rows)
                h1, weight_live, beta_col = h1[rows], weight_live[rows], beta_col[rows]
                neg_beta = -beta_col
                logp = logp_hist[t + 1, live]
    pol.theta = final_theta
    loss_hist = (F.softplus(-margins) * weight).sum(-1)                      # (T, E)
    acc_hist = ((margins > 0) * weight).sum(-1)
    seen = torch.arange(1, t_max + 1).unsqueeze(1) * width                    # (T, E) pairs so far
    # responses generated: two per pair online (by the policy); offline none on the reward
    # model's pairs (no policy generates them), two per pair from pi_ref on reference pairs,
    # counted once (the first epoch)
    per_pair = torch.tensor([2 * (is_online[e] or configs[e].data == "reference_pairs") for e in range(n)])
    first_epoch = torch.tensor([configs[e].iterations if is_online[e] else rm_cfg.steps for e in range(n)])
    responses = seen.minimum(first_epoch * width) * per_pair
    columns = {"steps": steps, "loss": loss_hist, "reward_accuracy": acc_hist,
               "pairs": seen.float(), "responses": responses.float()}
    return _results(problem, sft, pol, configs, logp_hist, columns, rm_table)
