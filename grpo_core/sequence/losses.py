"""Per-token GRPO losses for sequences and their aggregation over responses of different lengths.

Notation (per member): response s of the batch with advantage A_s, token t with mask m_st (real
token, sample in this minibatch, not a masked truncated response), |y_s| = sum_t m_st, B the
responses in the minibatch, L the maximum length, log r_st = log pi(y_st) - log pi_old(y_st).

Importance ratio (TRL GRPOTrainer._compute_loss, `importance_sampling_level`):
    token     w_st = r_st
    sequence  w_st = w_s = exp( sum_t m_st log r_st / |y_s| )     (GSPO: geometric mean, per response)

Per-token loss (TRL, verl compute_policy_loss):
    clipped surrogate   l_st = -min(w A_s, clip(w, 1 - eps_low, 1 + eps_high) A_s)
        dual clip (verl clip_ratio_c = c > 1): for A_s < 0,  l_st <- min(l_st, -c A_s)
    cispo               l_st = -sg(min(w, cap)) A_s log pi(y_st)   (TRL caps at epsilon_high; no
                        token is dropped, the clip only bounds the weight; verl clips to [1-lo, 1+hi])
    + beta * kl_st  (k1, k2, k3 of the sampled token, or the exact KL of the next-token
                     distribution at the prefix)   - entropy_coef * H_st

Aggregation per optimizer step, as TRL 1.16's GRPOTrainer._compute_loss does it (checked against
it, value and gradient, in tests/core/test_trl.py), with verl's loss_agg_mode names where verl
has the same formula (agg_loss):
    grpo                     1/B sum_s (sum_t l m / max(|y_s|, 1))   = verl seq-mean-token-mean
    bnpo                     sum l m / max(sum m, 1)  (over the step's tokens)   = verl token-mean
    dr_grpo                  sum l m / (B L)
    dapo, cispo              sum l m / (N / M): N the masked tokens of the whole generation batch,
                             M its minibatches (TRL: num_items_in_batch / steps_per_generation, the
                             mean tokens per minibatch; verl has no such mode: its token-mean is bnpo)
    luspo                    1/B sum_s |y_s| l_s  (sequence ratios: = 1/B sum l m)
    seq-mean-token-sum       1/B sum l m  (verl; = TRL's luspo, which warns at token level)
    seq-mean-token-sum-norm  sum l m / L  (verl: no division by B; Dr. GRPO up to the constant B)
With one minibatch, bnpo and dapo coincide.

Sources: TRL trl/trainer/grpo_trainer.py, GRPOTrainer._compute_loss (the loss_type branches,
importance_sampling_level, cispo, luspo); verl verl/trainer/ppo/core_algos.py, agg_loss and
compute_policy_loss (clip_ratio_c); /work/shared/reference/rl-variants.md. Checked term by term
against per-response references in tests/test_sequence_losses.py and, through the network, in
tests/test_sequence_trainer_grad.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..losses import KL_CODES, sampled_kl
from .config import SeqGRPOConfig

# Aggregation codes; verl's names map onto TRL's where the formula is the same.
AGGREGATIONS = {"grpo": 0, "seq-mean-token-mean": 0, "bnpo": 1, "token-mean": 1, "dr_grpo": 2,
                "dapo": 3, "cispo": 3, "luspo": 4, "seq-mean-token-sum": 4,
                "seq-mean-token-sum-norm": 5}


@dataclass(frozen=True)
class SeqLossTerms:
    """Per-member loss settings as (E, 1, 1) tensors, so members with different losses share a batch.

    agg: aggregation code (AGGREGATIONS); sequence: 1 for sequence-level ratios (GSPO); cispo: 1 for
    the CISPO loss; clip_low, clip_high, dual_clip, cispo_cap; beta: KL weight in the loss; k_code:
    0 exact, 1-3 k1-k3 (KL_CODES); entropy_coef.
    """

    agg: torch.Tensor
    sequence: torch.Tensor
    cispo: torch.Tensor
    clip_low: torch.Tensor
    clip_high: torch.Tensor
    dual_clip: torch.Tensor
    cispo_cap: torch.Tensor
    beta: torch.Tensor
    k_code: torch.Tensor
    entropy_coef: torch.Tensor

    @classmethod
    def from_configs(cls, configs: Sequence[SeqGRPOConfig]) -> "SeqLossTerms":
        col = lambda values, dtype=None: torch.tensor(values, dtype=dtype or torch.get_default_dtype()).view(-1, 1, 1)
        return cls(
            agg=col([AGGREGATIONS[c.loss_type] for c in configs], torch.long),
            sequence=col([c.importance_sampling_level == "sequence" for c in configs], torch.bool),
            cispo=col([c.loss_type == "cispo" for c in configs], torch.bool),
            clip_low=col([c.clip_eps for c in configs]),
            clip_high=col([c.upper_clip_eps for c in configs]),
            dual_clip=col([c.dual_clip for c in configs]),
            cispo_cap=col([c.cispo_cap for c in configs]),
            beta=col([c.kl_coef * (c.kl_placement == "loss") for c in configs]),
            k_code=col([KL_CODES[c.kl_estimator] for c in configs], torch.long),
            entropy_coef=col([c.entropy_coef for c in configs]))

    def __post_init__(self):
        # Which terms any member uses, found once: the others are not computed at all.
        for name, value in (("uses_kl", self.beta > 0), ("uses_entropy", self.entropy_coef > 0),
                            ("any_sequence", self.sequence), ("any_cispo", self.cispo),
                            ("any_dual", self.dual_clip > 0)):
            object.__setattr__(self, name, bool(value.any()))
        object.__setattr__(self, "all_cispo", bool(self.cispo.all()))
        object.__setattr__(self, "single_agg", int(self.agg[0]) if bool((self.agg == self.agg[0]).all()) else None)


def importance_weights(new_logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor,
                       sequence: torch.Tensor, any_sequence: bool = True) -> torch.Tensor:
    """new_logp, old_logp, mask (E, S, L) -> w (E, S, L): the token ratio, or (sequence (E, 1, 1)
    true) the response's geometric-mean ratio exp(sum_t m log r / max(|y|, 1)) on every token."""
    log_ratio = (new_logp - old_logp) * mask
    if not any_sequence:
        return torch.exp(log_ratio)
    seq = log_ratio.sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp_min(1.0)
    return torch.exp(torch.where(sequence, seq.expand_as(log_ratio), log_ratio))


def token_kl(new_logp: torch.Tensor, ref_logp: torch.Tensor, k_code: torch.Tensor,
             exact_kl: torch.Tensor | None) -> torch.Tensor:
    """Per-token KL estimate (E, S, L): k1/k2/k3 of log pi - log pi_ref at the sampled token (the
    one-token engine's sampled_kl), or for k_code 0 the exact KL of the next-token distribution
    at each sampled prefix (exact_kl (E, S, L))."""
    value, _ = sampled_kl(new_logp - ref_logp, k_code.clamp_min(1))
    if exact_kl is None:
        return value
    return torch.where(k_code == 0, exact_kl, value)


def per_token_loss(new_logp, old_logp, ref_logp, adv, mask, terms: SeqLossTerms, *,
                   exact_kl=None, entropy=None):
    """The per-token loss l (E, S, L) (see the module docstring) and the clip masks.

    new_logp (differentiable), old_logp, ref_logp, mask (E, S, L); adv (E, S); exact_kl and
    entropy (E, S, L) at each sampled prefix, needed only by members using them.
    Returns (l, clipped (E, S, L) bool: tokens whose weight the clip or cap stopped or bounded).
    """
    a = adv.unsqueeze(-1)
    w = importance_weights(new_logp, old_logp, mask, terms.sequence, terms.any_sequence)
    lo, hi = 1 - terms.clip_low, 1 + terms.clip_high
    with torch.no_grad():
        clipped = ((w < lo) & (a < 0)) | ((w > hi) & (a > 0))
        if terms.any_cispo:
            clipped = torch.where(terms.cispo, w > terms.cispo_cap, clipped)
    if not terms.all_cispo:
        loss = -torch.minimum(w * a, torch.clamp(w, lo, hi) * a)
        if terms.any_dual:
            loss = torch.where((terms.dual_clip > 0) & (a < 0),
                               torch.minimum(loss, -terms.dual_clip * a), loss)
    if terms.any_cispo:
        cispo = -torch.clamp(w, max=terms.cispo_cap).detach() * a * new_logp
        loss = cispo if terms.all_cispo else torch.where(terms.cispo, cispo, loss)
    if terms.uses_kl:
        loss = loss + terms.beta * token_kl(new_logp, ref_logp, terms.k_code, exact_kl)
    if terms.uses_entropy and entropy is not None:
        loss = loss - terms.entropy_coef * entropy
    return loss, clipped


def aggregate(loss: torch.Tensor, mask: torch.Tensor, agg: torch.Tensor, *, n_seq: torch.Tensor,
              batch_tokens: torch.Tensor, max_length: int) -> torch.Tensor:
    """loss, mask (E, S, L), agg (E, 1, 1) codes, n_seq (E,) responses B in this minibatch,
    batch_tokens (E,) dapo's normalizer N / M (the whole generation batch's masked tokens over its
    minibatches) -> (E,), by the formulas of the module docstring."""
    seq_sum = (loss * mask).sum(-1)                                         # (E, S)
    b = n_seq.clamp_min(1).to(loss.dtype)
    formulas = (
        lambda: (seq_sum / mask.sum(-1).clamp_min(1.0)).sum(-1) / b,       # 0 grpo
        lambda: seq_sum.sum(-1) / mask.sum((1, 2)).clamp_min(1.0),         # 1 bnpo
        lambda: seq_sum.sum(-1) / (b * max_length),                        # 2 dr_grpo
        lambda: seq_sum.sum(-1) / batch_tokens.clamp_min(1.0),             # 3 dapo, cispo: N / M
        lambda: seq_sum.sum(-1) / b,                                       # 4 luspo, seq-mean-token-sum
        lambda: seq_sum.sum(-1) / max_length)                              # 5 seq-mean-token-sum-norm
    codes = agg.view(-1)
    first = int(codes[0])
    if bool((codes == first).all()):
        return formulas[first]()
    options = torch.stack([f() for f in formulas], dim=1)
    return options.gather(1, codes.view(-1, 1)).squeeze(1)
