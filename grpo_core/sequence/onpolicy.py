"""The first (on-policy) step's gradient of each loss, on one sampled batch: where losses coincide.

At the first step new_logp = old_logp, so every ratio is 1 and no clip is active. Then, for a
response s with advantage A_s and tokens t (|y_s| real tokens, B responses, L the maximum length):

    GRPO (token ratios, loss_type grpo):     dloss/dlogp_st = -A_s / (B |y_s|)
    GSPO (sequence ratios, loss_type grpo):  w_s = exp(mean_t log r_st), dw_s/dlogp_st = 1/|y_s|,
                                             and grpo's 1/|y_s| of |y_s| equal tokens: the same
    Dr. GRPO (token ratios, dr_grpo):        -A_s / (B L)
    LUSPO (sequence ratios, luspo):          1/B sum_s |y_s| (-w_s A_s): -A_s / B = L x Dr. GRPO's

The gradient with respect to the per-token log-probabilities fixes the gradient with respect to
any network's weights (chain rule), so equal token gradients mean equal updates.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..advantages import advantages
from .config import SeqGRPOConfig
from .losses import SeqLossTerms, aggregate, per_token_loss
from .policy import sample_responses, token_logp
from .upstream import SeqUpstream


def onpolicy_token_gradients(up: SeqUpstream, configs: Sequence[SeqGRPOConfig], prompts: int = 8,
                             group_size: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch of prompts x group_size responses drawn from the SFT policy (its own generator);
    returns (gradients (E, S, L) of each config's first-step loss with respect to the sampled
    tokens' log-probs, the token mask (S, L)). Advantages: each config's estimator; no KL."""
    task, gen = up.task, torch.Generator().manual_seed(seed)
    ctx = torch.randint(0, task.n_contexts, (prompts,), generator=gen).repeat_interleave(group_size)
    u = torch.rand(prompts * group_size, generator=gen)
    resp = sample_responses(up.sft.seq_logp.exp().unsqueeze(0), ctx.unsqueeze(0), u.unsqueeze(0))[0]
    rewards = task.correct[ctx, resp].view(1, prompts, group_size)
    n = len(configs)
    logp = token_logp(up.sft.logp_table.unsqueeze(0), task.responses, ctx.unsqueeze(0), resp.unsqueeze(0))
    mask = task.responses.mask[resp].float()                                   # (S, L)
    adv = torch.cat([advantages(rewards, None, c.advantage_estimator)[0].flatten(1) for c in configs])
    new = logp.expand(n, -1, -1).clone().requires_grad_(True)
    masks = mask.expand(n, -1, -1)
    terms = SeqLossTerms.from_configs([c.replace(kl_coef=0.0, entropy_coef=0.0) for c in configs])
    loss, _ = per_token_loss(new, new.detach(), None, adv, masks, terms)
    total = aggregate(loss, masks, terms.agg, n_seq=torch.full((n,), prompts * group_size),
                      batch_tokens=masks.sum((1, 2)), max_length=task.config.max_length)
    (grad,) = torch.autograd.grad(total.sum(), new)
    return grad * masks, mask
