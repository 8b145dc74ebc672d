"""The sequence losses against references written per response from the formulas (TRL, verl)."""
from __future__ import annotations

import math

import pytest
import torch

from grpo_core.sequence.config import LOSS_TYPES, SeqGRPOConfig
from grpo_core.sequence.losses import SeqLossTerms, aggregate, per_token_loss

L = 5


def _batch(seed: int, n_mem: int = 2, n_seq: int = 6):
    """Random per-token log-probs away from the old ones (so clips bite), masks of varied lengths."""
    gen = torch.Generator().manual_seed(seed)
    old = -torch.rand(n_mem, n_seq, L, generator=gen) * 2
    new = old + 0.6 * torch.randn(n_mem, n_seq, L, generator=gen)
    ref = old + 0.3 * torch.randn(n_mem, n_seq, L, generator=gen)
    lengths = torch.randint(1, L + 1, (n_mem, n_seq), generator=gen)
    mask = (torch.arange(L) < lengths.unsqueeze(-1)).float()
    mask[0, 1] = 0.0  # a masked (e.g. truncated) response
    adv = torch.randn(n_mem, n_seq, generator=gen)
    return new * mask, old * mask, ref * mask, adv, mask


def _reference_loss(new, old, ref, adv, mask, cfg: SeqGRPOConfig, batch_tokens: float, max_length: int = L):
    """One member's loss, response by response and token by token, straight from the formulas."""
    lo, hi = 1 - cfg.clip_eps, 1 + cfg.upper_clip_eps
    n_seq = new.shape[0]
    seq_losses, lengths, total = [], [], 0.0
    for s in range(n_seq):
        n_tok = int(mask[s].sum())
        lengths.append(n_tok)
        if cfg.importance_sampling_level == "sequence":
            log_w = sum(new[s, t] - old[s, t] for t in range(n_tok)) / max(n_tok, 1)
        token_losses = []
        for t in range(n_tok):
            w = torch.exp(log_w if cfg.importance_sampling_level == "sequence" else new[s, t] - old[s, t])
            a = adv[s]
            if cfg.loss_type == "cispo":
                l = -torch.clamp(w, max=cfg.cispo_cap).detach() * a * new[s, t]
            else:
                l = -torch.minimum(w * a, torch.clamp(w, lo, hi) * a)
                if cfg.dual_clip > 0 and a < 0:
                    l = torch.minimum(l, -cfg.dual_clip * a)
            d = new[s, t] - ref[s, t]
            k = {"k1": d, "k2": d * d / 2, "k3": torch.exp(-d) + d - 1}[cfg.kl_estimator]
            token_losses.append(l + cfg.kl_coef * k)
        seq_sum = sum(token_losses) if token_losses else torch.zeros(())
        seq_losses.append(seq_sum)
        total = total + seq_sum
    all_tokens = sum(lengths)
    kind = cfg.loss_type
    if kind in ("grpo", "seq-mean-token-mean"):
        return sum(sl / max(n, 1) for sl, n in zip(seq_losses, lengths)) / n_seq
    if kind in ("bnpo", "token-mean"):
        return total / max(all_tokens, 1)
    if kind == "dr_grpo":
        return total / (n_seq * max_length)
    if kind in ("dapo", "cispo"):
        return total / batch_tokens
    if kind in ("luspo", "seq-mean-token-sum"):
        return total / n_seq
    if kind == "seq-mean-token-sum-norm":
        return total / max_length
    raise AssertionError(kind)


CASES = [dict(loss_type=t) for t in LOSS_TYPES if t != "luspo"] + [
    dict(loss_type="luspo", importance_sampling_level="sequence"),
    dict(loss_type="grpo", importance_sampling_level="sequence"),
    dict(loss_type="dr_grpo", importance_sampling_level="sequence", clip_eps_high=0.28),
    dict(loss_type="cispo", importance_sampling_level="sequence", cispo_cap=1.2),
    dict(loss_type="bnpo", dual_clip=3.0, clip_eps=0.1),
    dict(loss_type="grpo", kl_coef=0.3, kl_estimator="k1"),
    dict(loss_type="dapo", kl_coef=0.3, kl_estimator="k2", clip_eps_high=0.28),
    dict(loss_type="dr_grpo", kl_coef=0.3, kl_estimator="k3"),
]


@pytest.mark.parametrize("settings", CASES, ids=lambda s: "-".join(f"{v}" for v in s.values()))
def test_loss_and_gradient_match_the_formula(settings):
    new, old, ref, adv, mask = _batch(hash(tuple(settings.items())) % 1000)
    cfg = SeqGRPOConfig(**settings)
    # Two members with the same settings but different data; the dapo normalizer counts tokens of
    # a larger generation batch than this minibatch (here 1.5x), as across minibatches.
    batch_tokens = mask.sum((1, 2)) * 1.5
    leaf = new.clone().requires_grad_(True)
    terms = SeqLossTerms.from_configs([cfg, cfg])
    loss_tok, _ = per_token_loss(leaf, old, ref, adv, mask, terms)
    loss = aggregate(loss_tok, mask, terms.agg, n_seq=torch.full((2,), new.shape[1]), batch_tokens=batch_tokens, max_length=L)
    grad, = torch.autograd.grad(loss.sum(), leaf)
    for e in range(2):
        ref_leaf = new[e].clone().requires_grad_(True)
        expected = _reference_loss(ref_leaf, old[e], ref[e], adv[e], mask[e], cfg, float(batch_tokens[e]))
        expected_grad, = torch.autograd.grad(expected, ref_leaf)
        assert math.isclose(float(loss[e].detach()), float(expected.detach()), rel_tol=1e-5, abs_tol=1e-6)
        torch.testing.assert_close(grad[e] * mask[e], expected_grad * mask[e], rtol=1e-4, atol=1e-6)


def test_members_with_different_losses_share_a_batch():
    """A batch mixing every loss type gives each member the loss it would get alone."""
    cfgs = [SeqGRPOConfig(**c) for c in CASES]
    n = len(cfgs)
    new, old, ref, adv, mask = _batch(3, n_mem=n)
    tokens = mask.sum((1, 2))
    together, _ = per_token_loss(new, old, ref, adv, mask, SeqLossTerms.from_configs(cfgs))
    agg = aggregate(together, mask, SeqLossTerms.from_configs(cfgs).agg, n_seq=torch.full((n,), 6), batch_tokens=tokens, max_length=L)
    for e, cfg in enumerate(cfgs):
        terms = SeqLossTerms.from_configs([cfg])
        alone, _ = per_token_loss(new[e:e + 1], old[e:e + 1], ref[e:e + 1], adv[e:e + 1], mask[e:e + 1], terms)
        value = aggregate(alone, mask[e:e + 1], terms.agg, n_seq=torch.full((1,), 6), batch_tokens=tokens[e:e + 1], max_length=L)
        torch.testing.assert_close(agg[e:e + 1], value)


def _on_policy_grad(cfg: SeqGRPOConfig):
    """Gradient of the loss wrt the per-token log-probs on the step that sampled (new = old)."""
    new, _, ref, adv, mask = _batch(11)
    leaf = new.clone().requires_grad_(True)
    terms = SeqLossTerms.from_configs([cfg, cfg])
    loss_tok, clipped = per_token_loss(leaf, new, ref, adv, mask, terms)
    assert not bool(clipped.any())  # every ratio is 1: nothing is clipped
    loss = aggregate(loss_tok, mask, terms.agg, n_seq=torch.full((2,), 6), batch_tokens=mask.sum((1, 2)), max_length=L)
    return torch.autograd.grad(loss.sum(), leaf)[0] * mask


def test_on_policy_gspo_equals_grpo_and_luspo_equals_dr_grpo_times_L():
    grpo = _on_policy_grad(SeqGRPOConfig(loss_type="grpo"))
    gspo = _on_policy_grad(SeqGRPOConfig(loss_type="grpo", importance_sampling_level="sequence"))
    torch.testing.assert_close(gspo, grpo)
    dr = _on_policy_grad(SeqGRPOConfig(loss_type="dr_grpo"))
    luspo = _on_policy_grad(SeqGRPOConfig(loss_type="luspo", importance_sampling_level="sequence"))
    torch.testing.assert_close(luspo, dr * L)
    # CISPO on-policy is plain REINFORCE with dapo's normalization: grad = -A / tokens.
    cispo = _on_policy_grad(SeqGRPOConfig(loss_type="cispo"))
    dapo = _on_policy_grad(SeqGRPOConfig(loss_type="dapo"))
    torch.testing.assert_close(cispo, dapo)
    assert not torch.allclose(grpo, dr * (grpo.abs().sum() / dr.abs().sum()))  # they weight lengths differently


def test_cispo_keeps_every_token_while_clipping_drops_some():
    """Off-policy, the clipped surrogate gives zero gradient to clipped tokens; CISPO does not."""
    new, old, ref, adv, mask = _batch(5)
    grads = {}
    for kind in ("dapo", "cispo"):
        leaf = new.clone().requires_grad_(True)
        terms = SeqLossTerms.from_configs([SeqGRPOConfig(loss_type=kind, cispo_cap=100.0)] * 2)
        loss_tok, clipped = per_token_loss(leaf, old, ref, adv, mask, terms)
        loss = aggregate(loss_tok, mask, terms.agg, n_seq=torch.full((2,), 6), batch_tokens=mask.sum((1, 2)), max_length=L)
        grads[kind] = (torch.autograd.grad(loss.sum(), leaf)[0], clipped)
    dropped = grads["dapo"][1] & (mask > 0)
    assert bool(dropped.any())
    assert bool((grads["dapo"][0][dropped] == 0).all())
    assert bool((grads["cispo"][0][dropped] != 0).all())
