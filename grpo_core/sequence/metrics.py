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
    columns = torch.stack([torch.ones(resp.n), resp.length.float(), resp.truncated.float()], 1)
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
