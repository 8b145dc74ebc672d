"""The GRPO loss and its hand-written gradient, side by side, and how the loss is aggregated.

For one optimizer step on E members at once (S samples each, one token per response):

    L = -sum_s w_s obj_s + beta * KL_batch - c_H * H_batch
    obj_s = min(rho_s A_s, clip(rho_s, 1 - eps_lo, 1 + eps_hi) A_s),   rho_s = pi(v_s|c_s) / pi_old(v_s|c_s)
            and with a dual clip c > 1, max(obj_s, c A_s) where A_s < 0

w_s comes from :func:`aggregation_weights` (the mean over the step's samples); KL_batch and H_batch
are averaged over the step's contexts with :func:`context_weights`. :func:`grpo_loss` is the
differentiable reference; :func:`grpo_logits_grad` is its gradient by hand (what the trainer
uses), checked against autograd of grpo_loss in the tests. This is the seam a multi-token engine
plugs into: its per-token terms aggregate with the same weights, token-level.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .config import GRPOConfig

KL_CODES = {"exact": 0, "k1": 1, "k2": 2, "k3": 3}


def aggregation_weights(valid: torch.Tensor, in_step: torch.Tensor | None = None) -> torch.Tensor:
    """Loss aggregation: the weight of each sample's term in one optimizer step's loss.

        valid (E, S) bool, in_step (E, S) bool or None (every sample: one minibatch)
        -> w (E, S),   w_s = m_s / sum_s' m_s',   m_s = valid_s and in_step_s

    so L = sum_s w_s l_s is the mean of the per-sample terms l_s over the step's samples (the
    whole batch, or one minibatch of whole groups). Every response here is one token, so
    token-level and sequence-level averaging coincide, and TRL's loss types, for a minibatch of
    n one-token responses out of a generation batch of N, give:

        grpo     mean over responses of (sum over its tokens / its length) = sum_s l_s / n   (this)
        bnpo     sum over tokens / tokens in the minibatch                 = sum_s l_s / n   (this)
        dapo     sum over tokens / tokens in the whole generation batch    = sum_s l_s / N   (n/N x this)
        dr_grpo  sum over tokens / (n x max_completion_length L)           = sum_s l_s / (n L)  (this / L)

    grpo and bnpo are exactly this; dapo and dr_grpo differ by a constant factor (equal when
    one minibatch, resp. L = 1), which under Adam changes a step only through Adam's epsilon.
    """
    mask = valid if in_step is None else valid & in_step
    return mask / mask.sum(1, keepdim=True).clamp_min(1)


def context_weights(contexts: torch.Tensor, member: torch.Tensor, minibatch: torch.Tensor,
                    valid: torch.Tensor, n_minibatches: int, n_contexts: int) -> torch.Tensor:
    """Fraction of each minibatch's prompts at each context: (E, M, C).

    contexts, member, minibatch (E, K) long: the context, member and minibatch of each prompt, or
    of each sample; valid (E, K) float (1, or 0 for padding). Every prompt of a member has the
    same number of samples, so counting samples gives the prompts' fractions (and the same
    floats: G k / G n rounds as k / n). The exact KL and entropy terms average their per-context values
    with these weights, which equals their mean over the minibatch's samples.
    """
    weights = torch.zeros(contexts.shape[0], n_minibatches, n_contexts)
    weights.index_put_((member, minibatch, contexts), valid, accumulate=True)
    return weights / weights.sum(-1, keepdim=True).clamp_min(1)


@dataclass(frozen=True)
class LossTerms:
    """Per-member settings of the loss, as tensors: the loss's knobs for E members at once.

    clip_low, clip_high, dual_clip (E, 1): ratio clip range [1 - low, 1 + high], dual clip c (0 off);
    beta_exact (E,): weight of the exact KL in the loss; beta_sample (E, 1): weight of a
    sampled-token KL estimate k1/k2/k3 (k_code (E, 1): 1, 2 or 3); entropy_coef (E,).
    """

    clip_low: torch.Tensor
    clip_high: torch.Tensor
    dual_clip: torch.Tensor
    beta_exact: torch.Tensor
    beta_sample: torch.Tensor
    k_code: torch.Tensor
    entropy_coef: torch.Tensor

    @classmethod
    def simple(cls, clip_eps: torch.Tensor, kl_coef: torch.Tensor) -> "LossTerms":
        """The notebook's loss: symmetric clip, exact KL in the loss, no entropy bonus."""
        zeros = torch.zeros_like(kl_coef)
        eps = clip_eps.reshape(-1, 1)
        return cls(eps, eps, zeros.view(-1, 1), kl_coef, zeros.view(-1, 1),
                   zeros.view(-1, 1).long(), zeros)

    @classmethod
    def from_configs(cls, configs: Sequence[GRPOConfig]) -> "LossTerms":
        col = lambda values, dtype=None: torch.tensor(values, dtype=dtype or torch.get_default_dtype()).view(-1, 1)
        in_loss = [c.kl_placement == "loss" for c in configs]
        exact = [c.kl_estimator == "exact" for c in configs]
        return cls(
            clip_low=col([c.clip_eps for c in configs]),
            clip_high=col([c.upper_clip_eps for c in configs]),
            dual_clip=col([c.dual_clip for c in configs]),
            beta_exact=torch.tensor([c.kl_coef * (l and x) for c, l, x in zip(configs, in_loss, exact)]),
            beta_sample=col([c.kl_coef * (l and not x) for c, l, x in zip(configs, in_loss, exact)]),
            # A member without a KL penalty (kl_coef 0 in float32) estimates nothing: its
            # kl_estimate is the exact KL, alone or in any batch.
            k_code=col([KL_CODES[c.kl_estimator] * (float(torch.tensor(c.kl_coef)) > 0)
                        for c in configs], torch.long),
            entropy_coef=torch.tensor([c.entropy_coef for c in configs]))

    def __post_init__(self):
        # Derived once, not at every step: the ratio bounds, and which terms any member uses.
        object.__setattr__(self, "ratio_low", 1 - self.clip_low)
        object.__setattr__(self, "ratio_high", 1 + self.clip_high)
        for name, used in (("uses_exact_kl", self.beta_exact > 0), ("uses_sampled_kl", self.beta_sample > 0),
                           ("uses_entropy", self.entropy_coef > 0), ("uses_dual_clip", self.dual_clip > 0),
                           ("any_estimate", self.k_code > 0)):   # any_estimate: in the loss or the reward
            object.__setattr__(self, name, bool(used.any()))
        # The one sampled estimator every member that estimates uses (None: several), so
        # sampled_kl computes only it; and whether every member's kl_estimate is its estimate.
        codes = set(self.k_code.flatten().tolist()) - {0}
        object.__setattr__(self, "k_single", codes.pop() if len(codes) == 1 else None)
        object.__setattr__(self, "all_sampled", bool((self.k_code > 0).all()))


def sampled_kl(log_ratio: torch.Tensor, k_code: torch.Tensor, single: int | None = None,
               with_deriv: bool = True):
    """Per-sample KL estimates from log_ratio = log pi(v) - log pi_ref(v) at v ~ pi, and their
    derivatives with respect to log pi(v) (Schulman's k1, k2, k3):

        k1 = log_ratio                            d/dlogp = 1
        k2 = log_ratio^2 / 2                      d/dlogp = log_ratio
        k3 = exp(-log_ratio) + log_ratio - 1      d/dlogp = 1 - exp(-log_ratio)

    k_code (E, 1) picks 1, 2 or 3 per member. Returns (value, derivative), each shaped like log_ratio.
    single: 1, 2 or 3 when every member that matters uses that one (k_code is then ignored and
    only it is computed, the same values); with_deriv=False returns None as the derivative.
    """
    if single is not None:
        if single == 1:
            return log_ratio, torch.ones_like(log_ratio) if with_deriv else None
        if single == 2:
            return 0.5 * log_ratio.square(), log_ratio
        inv = torch.exp(-log_ratio)
        return inv + log_ratio - 1, (1 - inv) if with_deriv else None
    inv = torch.exp(-log_ratio)
    value = torch.where(k_code == 1, log_ratio,
                        torch.where(k_code == 2, 0.5 * log_ratio.square(), inv + log_ratio - 1))
    deriv = torch.where(k_code == 1, torch.ones_like(log_ratio),
                        torch.where(k_code == 2, log_ratio, 1 - inv))
    return value, deriv


def at_samples(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """table (C, V) or (E, C, V), index (E, S) flat c * V + v -> (E, S)."""
    if table.dim() == 2:
        return table.reshape(-1)[index]
    return table.flatten(1).gather(1, index)


def grpo_loss(logp: torch.Tensor, *, ref_logp: torch.Tensor, index: torch.Tensor,
              old_logp: torch.Tensor, adv: torch.Tensor, weight: torch.Tensor,
              ctx_weight: torch.Tensor, terms: LossTerms | None = None,
              clip_eps: torch.Tensor | None = None, kl_coef: torch.Tensor | None = None):
    """The GRPO loss per member, differentiable (the reference the hand-written gradient matches).

        L = -sum_s w_s obj_s + beta * KL_batch - c_H * H_batch
        obj_s = min(rho_s A_s, clip(rho_s, 1 - eps_lo, 1 + eps_hi) A_s), and with a dual clip c,
                max(obj_s, c A_s) where A_s < 0

    logp (E, C, V) current log-probs; ref_logp (C, V) or (E, C, V); index (E, S) flat c * V + v
    of each sample; old_logp, adv, weight (E, S) with weight from aggregation_weights;
    ctx_weight (E, C) the fraction of the batch's prompts at each context; terms the per-member
    loss settings, or (terms None) clip_eps, kl_coef (E,) for the notebook's loss. KL_batch is the exact KL averaged over the
    batch's contexts, or the mean of a sampled-token estimate (terms.k_code); H_batch likewise the
    exact entropy. Returns (loss (E,), info) with info: policy_loss, kl (exact, batch-weighted),
    kl_estimate (the estimator's value), n_clip_low, n_clip_high.
    """
    terms = terms or LossTerms.simple(clip_eps, kl_coef)
    new_logp = at_samples(logp, index)
    ratio = torch.exp(new_logp - old_logp)
    lo, hi = 1 - terms.clip_low, 1 + terms.clip_high
    obj = torch.minimum(ratio * adv, torch.clamp(ratio, lo, hi) * adv)
    dual = terms.dual_clip
    obj = torch.where((dual > 0) & (adv < 0), torch.maximum(obj, dual * adv), obj)
    policy_loss = -(obj * weight).sum(1)
    probs = logp.exp()
    kl_ctx = (probs * (logp - ref_logp)).sum(-1)                            # (E, C)
    kl = (ctx_weight * kl_ctx).sum(1)
    k_value, _ = sampled_kl(new_logp - at_samples(ref_logp, index), terms.k_code)
    kl_sample = torch.where(weight > 0, weight * k_value, 0.0).sum(1)   # padding: weight 0, any value
    entropy = (ctx_weight * -(probs * logp).sum(-1)).sum(1)
    # where, not a product: a member with weight 0 must not pick up an overflowing estimate (0 x inf)
    sample_term = torch.where(terms.beta_sample.squeeze(1) > 0, terms.beta_sample.squeeze(1) * kl_sample, 0.0)
    loss = (policy_loss + terms.beta_exact * kl + sample_term
            - terms.entropy_coef * entropy)
    in_step = weight > 0                                                    # the step's samples
    info = {"policy_loss": policy_loss, "kl": kl,
            "kl_estimate": torch.where(terms.k_code.squeeze(1) == 0, kl, kl_sample),
            "n_clip_low": ((adv < 0) & (ratio < lo) & in_step).sum(1),
            "n_clip_high": ((adv > 0) & (ratio > hi) & in_step).sum(1)}
    return loss, info


def grpo_logits_grad(logp: torch.Tensor, *, ref_logp: torch.Tensor, index: torch.Tensor,
                     old_logp: torch.Tensor, adv: torch.Tensor, weight: torch.Tensor,
                     ctx_weight: torch.Tensor, terms: LossTerms | None = None,
                     clip_eps: torch.Tensor | None = None, kl_coef: torch.Tensor | None = None,
                     first_epoch: bool = False, use_kl: bool = True,
                     probs: torch.Tensor | None = None, ref_at: torch.Tensor | None = None,
                     in_step: torch.Tensor | None = None):
    """d grpo_loss / d logits (E, C, V), by hand, and the same info as grpo_loss.

    Surrogate: d obj_s / d logp_s = A_s rho_s where the unclipped term is the one selected, else 0
    (clipped, or dual-clipped); and d logp_s / d logits[c_s] = onehot(v_s) - pi(. | c_s).
    Exact KL: d KL_c / d logits[c, v] = pi(v|c) (log pi(v|c) - log pi_ref(v|c) - KL_c).
    Entropy: d H_c / d logits[c, v] = -pi(v|c) (log pi(v|c) + H_c).
    With first_epoch the policy is still the one that sampled the batch: rho = 1, nothing is
    clipped. use_kl=False skips every KL term (kl_coef = 0 in every member).
    probs: logp.exp(), and ref_at: log pi_ref at the samples (E, S), if already computed.
    in_step (E, S) bool: the step's samples, when it trains on a minibatch (clip counts are of
    those; None: every sample with a weight, as for one minibatch).
    """
    terms = terms or LossTerms.simple(clip_eps, kl_coef)
    if probs is None:
        probs = logp.exp()
    wa = weight * adv                                                       # (E, S)
    if first_epoch:
        new_logp = old_logp
        dlogp, policy_loss = -wa, -wa.sum(1)
        n_low = n_high = torch.zeros(adv.shape[0], dtype=logp.dtype)
    else:
        new_logp = at_samples(logp, index)
        ratio = torch.exp(new_logp - old_logp)
        lo, hi = terms.ratio_low, terms.ratio_high
        clip_high = (adv > 0) & (ratio > hi)
        clip_low = (adv < 0) & (ratio < lo)
        stop = clip_high | clip_low
        obj = torch.where(stop, torch.clamp(ratio, lo, hi), ratio) * wa
        if terms.uses_dual_clip:
            dual_hit = (terms.dual_clip > 0) & (adv < 0) & (ratio > terms.dual_clip)
            obj = torch.where(dual_hit, terms.dual_clip * wa, obj)
            stop = stop | dual_hit
        policy_loss = -obj.sum(1)
        dlogp = torch.where(stop, 0.0, -wa * ratio)
        if in_step is not None:  # count the step's own samples only (its minibatch)
            clip_low, clip_high = clip_low & in_step, clip_high & in_step
        n_low, n_high = clip_low.sum(1, dtype=logp.dtype), clip_high.sum(1, dtype=logp.dtype)
    info = {"policy_loss": policy_loss, "n_clip_low": n_low, "n_clip_high": n_high}
    estimated = use_kl and terms.any_estimate
    if estimated:  # a member uses a sampled-token KL estimate, in the loss or in the reward
        if ref_at is None:
            ref_at = at_samples(ref_logp, index)
        k_value, k_deriv = sampled_kl(new_logp - ref_at, terms.k_code, terms.k_single, terms.uses_sampled_kl)
        kl_sample = torch.where(weight > 0, weight * k_value, 0.0).sum(1)   # padding: weight 0, any value
        if terms.uses_sampled_kl:
            # where: another member's estimator must not turn this one's 0 x inf into NaN
            dlogp = dlogp + torch.where((terms.beta_sample > 0) & (weight > 0),
                                       terms.beta_sample * weight * k_deriv, 0.0)
    dlogits = torch.zeros_like(logp).flatten(1).scatter_add_(1, index, dlogp).view_as(logp)
    dlogits.sub_(dlogits.sum(-1, keepdim=True) * probs)
    log_ratio = logp - ref_logp
    kl_ctx = (probs * log_ratio).sum(-1, keepdim=True)                      # (E, C, 1)
    info["kl"] = (ctx_weight * kl_ctx.squeeze(-1)).sum(1)
    info["kl_estimate"] = (info["kl"] if not estimated else kl_sample if terms.all_sampled
                           else torch.where(terms.k_code.squeeze(1) == 0, info["kl"], kl_sample))
    if use_kl and terms.uses_exact_kl:
        beta_c = terms.beta_exact.view(-1, 1, 1) * ctx_weight.unsqueeze(-1)  # (E, C, 1)
        dlogits.add_((log_ratio - kl_ctx).mul_(probs).mul_(beta_c))
    if terms.uses_entropy:
        entropy_ctx = -(probs * logp).sum(-1, keepdim=True)                 # (E, C, 1)
        coef_c = terms.entropy_coef.view(-1, 1, 1) * ctx_weight.unsqueeze(-1)
        dlogits.add_((logp + entropy_ctx).mul_(probs).mul_(coef_c))
    return dlogits, info
