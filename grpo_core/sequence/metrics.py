"""Exact expectations of a sequence policy: sums over all N responses of each context.

With pi(y | c) from the table (task.py), contexts uniform, verifier ok(c, y), |y| the length:

    reward          1/C sum_c sum_y pi(y|c) ok(c, y)                   (expected 0/1 reward)
    rm_reward       1/C sum_c sum_y pi(y|c) r_phi(c, y)                (the reward model's score)
    length          1/C sum_c sum_y pi(y|c) |y|
    length_correct  sum_cy pi |y| ok / sum_cy pi ok                     E[|y| | correct]
    length_wrong    sum_cy pi |y| (1 - ok) / sum_cy pi (1 - ok)         E[|y| | wrong]
    p_truncated     1/C sum_c sum_y pi(y|c) 1[y hits L without the end token]
    kl_ref          1/C sum_c sum_y pi(y|c) (log pi(y|c) - log pi_ref(y|c))   KL(pi || pi_ref), per response
    entropy         -1/C sum_c sum_y pi(y|c) log pi(y|c)                       per response
"""
from __future__ import annotations

import pandas as pd
import torch

from .task import SeqTask

METRICS = ("reward", "rm_reward", "length", "length_correct", "length_wrong", "p_truncated",
           "kl_ref", "entropy")


def sequence_metrics(seq_logp: torch.Tensor, task: SeqTask, ref_seq_logp: torch.Tensor,
                     rm_scores: torch.Tensor | None = None, per_context: bool = False
                     ) -> dict[str, torch.Tensor]:
    """seq_logp (..., C, N) log pi(y | c) of every response -> each metric (...,), or (..., C)
    with per_context. ref_seq_logp (C, N); rm_scores (C, N) or None (rm_reward is then NaN).

    The sums over responses are matmuls with the per-response columns [1, |y|, truncated] (one
    for all responses, one for the correct ones), so a whole batch of policies costs a few ops."""
    probs = seq_logp.exp()
    resp = task.responses
    columns = torch.stack([torch.ones(resp.n), resp.length.to(probs.dtype), resp.truncated.to(probs.dtype)], 1)
    both = torch.matmul(torch.stack([probs, probs * task.correct]), columns)   # (2, ..., C, 3)
    mass, length, truncated = both[0].unbind(-1)
    mass_ok, len_ok = both[1][..., 0], both[1][..., 1]
    kl = (probs * (seq_logp - ref_seq_logp)).sum(-1)
    entropy = -(probs * seq_logp).sum(-1)
    rm = ((probs * rm_scores).sum(-1) if rm_scores is not None
          else torch.full_like(kl, float("nan")))
    if per_context:
        reduce = lambda t: t
        length_correct = len_ok / mass_ok
        length_wrong = (length - len_ok) / (mass - mass_ok)
    else:
        reduce = lambda t: t.mean(-1)
        length_correct = len_ok.sum(-1) / mass_ok.sum(-1)
        length_wrong = (length - len_ok).sum(-1) / (mass - mass_ok).sum(-1)
    return {"reward": reduce(mass_ok), "rm_reward": reduce(rm), "length": reduce(length),
            "length_correct": length_correct, "length_wrong": length_wrong,
            "p_truncated": reduce(truncated), "kl_ref": reduce(kl), "entropy": reduce(entropy)}


def top_responses(seq_logp: torch.Tensor, task: SeqTask, k: int = 5) -> pd.DataFrame:
    """The k most likely responses of each context under a policy (C, N): context, rank, response
    (letters, '.' the end token, '…' cut off at L), prob, correct, length."""
    probs = seq_logp.exp()
    top = probs.topk(min(k, probs.shape[-1]), dim=-1)
    rows = []
    for c in range(probs.shape[0]):
        for rank, (p, n) in enumerate(zip(top.values[c].tolist(), top.indices[c].tolist()), 1):
            rows.append({"context": c, "rank": rank, "response": task.responses.text(n), "prob": p,
                         "correct": bool(task.correct[c, n]), "length": int(task.responses.length[n])})
    return pd.DataFrame(rows)


def sample_responses_text(seq_logp: torch.Tensor, task: SeqTask, n: int, seed: int = 0) -> pd.DataFrame:
    """n responses per context drawn from pi (C, N) with their own generator: context, response
    (text as in top_responses), correct, length."""
    gen = torch.Generator().manual_seed(seed)
    drawn = torch.multinomial(seq_logp.exp(), n, replacement=True, generator=gen)   # (C, n)
    return pd.DataFrame([{"context": c, "response": task.responses.text(i),
                          "correct": bool(task.correct[c, i]), "length": int(task.responses.length[i])}
                         for c in range(drawn.shape[0]) for i in drawn[c].tolist()])


def difficulty_weights(p: torch.Tensor, group_size: int) -> pd.DataFrame:
    """The difficulty bias of std normalization, exactly, for 0/1 rewards with success rate p (C,).

    A group of G responses with k ~ Binomial(G, p) correct carries the signal
    sum_i (ok_i - k/G) ok_i = k (G - k) / G along the direction of the correct responses; dr_grpo
    uses it as is, grpo divides it by the group's std s_k = sqrt(k (G - k) / (G (G - 1))) + eps.
    weight_G = E_k[signal / s_k] / E_k[signal] is the factor grpo puts on the context relative to
    dr_grpo, summed exactly over k; as G grows it tends to the population weight 1 / sqrt(p (1 - p)).
    Returns a DataFrame: context, p, population_weight, weight_G.
    """
    g = group_size
    k = torch.arange(g + 1, dtype=torch.float64)
    s_k = torch.sqrt(k * (g - k) / (g * (g - 1)))
    p64 = p.double().unsqueeze(-1)
    log_binom = torch.lgamma(torch.tensor(g + 1.0, dtype=torch.float64)) - torch.lgamma(k + 1) - torch.lgamma(g - k + 1)
    pmf = torch.exp(log_binom + torch.special.xlogy(k, p64) + torch.special.xlogy(g - k, 1 - p64))
    # sum_i (ok_i - k/G) ok_i = k (G - k) / G: the signal a group carries; grpo divides it by s_k.
    signal = k * (g - k) / g
    scaled = torch.where(s_k > 0, signal / (s_k + 1e-8), 0.0)
    weight_g = (pmf * scaled).sum(-1) / (pmf * signal).sum(-1)
    pop = 1 / torch.sqrt(p.double() * (1 - p.double()))
    return pd.DataFrame({"context": range(p.shape[0]), "p": p.double().numpy(),
                         "population_weight": pop.numpy(), "weight_G": weight_g.numpy()})


def length_changes(results, reference: dict[str, float]) -> pd.DataFrame:
    """One row per run: loss_type, group_size, seed, and the change from the start (reference, the
    SFT policy's METRICS) to the run's final policy of reward, length, length_correct,
    length_wrong and gap = length_wrong - length_correct (all exact)."""
    rows = []
    for r in results:
        f, c = r.final, r.config
        row = {"loss_type": c.loss_type, "importance": c.importance_sampling_level,
               "group_size": c.group_size, "seed": c.seed}
        for k in ("reward", "length", "length_correct", "length_wrong"):
            row[f"d_{k}"] = f[k] - reference[k]
        row["d_gap"] = row["d_length_wrong"] - row["d_length_correct"]
        rows.append(row)
    return pd.DataFrame(rows)


def first_reaching(history: pd.DataFrame, column: str, threshold: float) -> float:
    """The first iteration at which history[column] >= threshold (NaN if it never does)."""
    hit = history.loc[history[column] >= threshold, "iteration"]
    return float(hit.iloc[0]) if len(hit) else float("nan")
