"""Exact analyses that only a tiny task allows: every policy is a (C, V) table, so quantities that
are estimated by sampling on real language models are exact sums here.

- best-of-n sampling: the exact distribution of the proxy-best of n samples, its KL to the policy
  and its proxy and true rewards (Goodhart's law in one table);
- the KL-regularized optimum pi*(v|c) ∝ pi_ref(v|c) exp(r(c, v) / beta) that the GRPO objective
  approximates, and its reward/KL frontier as beta varies;
- the probability that a group of G binary rewards carries no signal, and pass@k;
- how well one stochastic GRPO gradient points along the exact policy gradient, per group size and
  advantage estimator.

Prompts are uniform over the C contexts, so "mean over contexts" is the expectation over prompts.
Exact quantities are computed in float64. Random draws come from generators seeded by arguments.
"""
from __future__ import annotations

import math
from typing import Sequence

import pandas as pd
import torch

from .advantages import ADVANTAGE_ESTIMATORS, advantages
from .losses import grpo_logits_grad
from .pipeline import Upstream
from .sampling import generator, sample_categorical
from .sft import sft_policy

F64 = torch.float64


def _probs(policy_probs: torch.Tensor) -> torch.Tensor:
    """(..., V) probabilities in float64, each row renormalized to sum to 1 (a float32 softmax is
    off by ~1e-7, which would show up as a tiny negative KL)."""
    probs = policy_probs.to(F64)
    return probs / probs.sum(-1, keepdim=True)


def _kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) = sum_v p(v) log(p(v) / q(v)) over the last axis, with 0 log 0 = 0: (..., V) -> (...)."""
    return (torch.xlogy(p, p) - torch.xlogy(p, q)).sum(-1)


def _context_table(values: torch.Tensor, columns: Sequence[int]) -> pd.DataFrame:
    """values (C, K) -> DataFrame: 'context' ("0".."C-1", then "overall" = mean over contexts)
    and one column per entry of `columns`."""
    n_ctx = values.shape[0]
    rows = torch.cat([values, values.mean(0, keepdim=True)]).numpy()
    table = pd.DataFrame(rows, columns=[int(k) for k in columns])
    table.insert(0, "context", [str(c) for c in range(n_ctx)] + ["overall"])
    return table


# ---------------------------------------------------------------------------------------------
# Best-of-n


def best_of_n_probs(policy_probs: torch.Tensor, proxy: torch.Tensor, n: int) -> torch.Tensor:
    """Exact distribution of best-of-n sampling: policy_probs (C, V), proxy (C, V) -> (C, V) float64.

    Draw n tokens independently from pi(.|c) and keep the one with the highest proxy score. Order
    the tokens from worst to best proxy score and let F(v) = sum_{w <= v} pi(w|c) be the CDF in that
    order, F(v-) the CDF just below v. The best of n is v exactly when all n draws are <= v and not
    all are < v:

        pi_bon(v|c) = F(v)^n - F(v-)^n

    Ties in proxy score go to the lower token index (as torch.argmax does): among tokens with equal
    scores, a lower index ranks higher.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    probs = _probs(policy_probs)
    vocab = probs.shape[-1]
    # Stable ascending sort of the reversed vocabulary: equal scores keep reversed-index order, so
    # the lowest index of a tie comes last, i.e. ranks best.
    order = vocab - 1 - torch.sort(proxy.flip(-1), dim=-1, stable=True).indices   # worst -> best
    cdf = probs.gather(-1, order).cumsum(-1).clamp_max(1.0)
    below = torch.nn.functional.pad(cdf[..., :-1], (1, 0))
    bon_sorted = cdf.pow(n) - below.pow(n)
    return torch.zeros_like(probs).scatter_(-1, order, bon_sorted)


def best_of_n(policy_probs: torch.Tensor, proxy: torch.Tensor, true: torch.Tensor,
              ns: Sequence[int]) -> pd.DataFrame:
    """Best-of-n by the proxy reward, exactly, for each n in ns.

    policy_probs, proxy, true (C, V). Returns one row per n with the means over contexts of

        kl           = KL(pi_bon || pi)
        kl_bound     = log n - (n - 1) / n   (the usual analytic formula; an upper bound on kl)
        proxy_reward = sum_v pi_bon(v|c) proxy(c, v)
        true_reward  = sum_v pi_bon(v|c) true(c, v)

    See best_of_n_probs for pi_bon and how ties are resolved.
    """
    probs = _probs(policy_probs)
    rows = []
    for n in ns:
        bon = best_of_n_probs(probs, proxy, int(n))
        rows.append({"n": int(n), "kl": float(_kl(bon, probs).mean()),
                     "kl_bound": math.log(n) - (n - 1) / n,
                     "proxy_reward": float((bon * proxy.to(F64)).sum(-1).mean()),
                     "true_reward": float((bon * true.to(F64)).sum(-1).mean())})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# The KL-regularized optimum


def kl_regularized_optimum(ref_probs: torch.Tensor, reward: torch.Tensor, beta: float) -> torch.Tensor:
    """The maximizer of E_{v ~ pi(.|c)}[r(c, v)] - beta KL(pi(.|c) || pi_ref(.|c)) in each context:
    ref_probs (C, V), reward (C, V), beta > 0 -> pi* (C, V) float64,

        pi*(v|c) = pi_ref(v|c) exp(r(c, v) / beta) / Z_c,   Z_c = sum_v pi_ref(v|c) exp(r(c, v) / beta)

    and the maximum is beta log Z_c. Tokens the reference never emits keep probability 0.
    """
    if not beta > 0:
        raise ValueError(f"beta must be positive, got {beta}")
    ref = _probs(ref_probs)
    return torch.softmax(ref.log() + reward.to(F64) / beta, dim=-1)


def kl_regularized_frontier(ref_probs: torch.Tensor, proxy: torch.Tensor, true: torch.Tensor,
                            betas: Sequence[float]) -> pd.DataFrame:
    """For each beta, the optimum pi*_beta of the proxy reward (kl_regularized_optimum) and, as
    means over contexts, kl = KL(pi*_beta || pi_ref), proxy_reward = E_{pi*}[proxy],
    true_reward = E_{pi*}[true]. All (C, V) inputs. One row per beta: beta, kl, proxy_reward,
    true_reward. As beta falls the optimum moves from pi_ref towards the proxy's argmax."""
    ref = _probs(ref_probs)
    rows = []
    for beta in betas:
        opt = kl_regularized_optimum(ref, proxy, float(beta))
        rows.append({"beta": float(beta), "kl": float(_kl(opt, ref).mean()),
                     "proxy_reward": float((opt * proxy.to(F64)).sum(-1).mean()),
                     "true_reward": float((opt * true.to(F64)).sum(-1).mean())})
    return pd.DataFrame(rows)


def beta_for_kl(ref_probs: torch.Tensor, reward: torch.Tensor, kl: float,
                lo: float = 1e-4, hi: float = 1e4, steps: int = 80) -> float:
    """The beta in [lo, hi] whose optimum has mean KL(pi*_beta || pi_ref) = kl, by bisection on
    log beta (that KL falls as beta grows). Returns lo or hi when kl is out of their range.

    With one beta shared by all contexts, pi*_beta is the policy with the highest mean reward among
    all policies whose mean KL to pi_ref is at most kl (Lagrangian duality): the frontier point.
    """
    ref = _probs(ref_probs)
    kl_at = lambda beta: float(_kl(kl_regularized_optimum(ref, reward, beta), ref).mean())
    log_lo, log_hi = math.log(lo), math.log(hi)
    if kl_at(lo) <= kl:
        return lo
    if kl_at(hi) >= kl:
        return hi
    for _ in range(steps):
        mid = 0.5 * (log_lo + log_hi)
        if kl_at(math.exp(mid)) > kl:
            log_lo = mid
        else:
            log_hi = mid
    return math.exp(0.5 * (log_lo + log_hi))


# ---------------------------------------------------------------------------------------------
# Groups with no signal, and pass@k


def zero_signal_probability(p: torch.Tensor, group_sizes: Sequence[int]) -> torch.Tensor:
    """Probability that a group of G binary rewards is all equal, so every group-relative
    advantage is 0: p (...) success probabilities -> (..., K) float64 for the K group sizes,

        P(no signal) = p^G + (1 - p)^G
    """
    p = torch.as_tensor(p, dtype=F64).unsqueeze(-1)
    g = torch.tensor([float(x) for x in group_sizes], dtype=F64)
    return p.pow(g) + (1 - p).pow(g)


def zero_signal_table(policy_probs: torch.Tensor, reward: torch.Tensor,
                      group_sizes: Sequence[int]) -> pd.DataFrame:
    """Per context, the probability that all G rewards of a group are equal, for any reward table:
    policy_probs (C, V), reward (C, V) -> DataFrame context x group size (see _context_table).

    With q_u(c) = sum_{v: r(c,v) = u} pi(v|c) the probability of reward value u,

        P(no signal | c) = sum_u q_u(c)^G = sum_v pi(v|c) q_{r(c,v)}(c)^(G - 1),

    which is p^G + (1 - p)^G for a binary reward with p = pi(correct|c).
    """
    probs = _probs(policy_probs)
    same = reward.unsqueeze(-1) == reward.unsqueeze(-2)                     # (C, V, V)
    mass = (same.to(F64) * probs.unsqueeze(-2)).sum(-1)                     # (C, V): q_{r(c,v)}
    g = torch.tensor([float(x) for x in group_sizes], dtype=F64)
    values = (probs.unsqueeze(-1) * mass.unsqueeze(-1).pow(g - 1)).sum(-2)  # (C, K)
    return _context_table(values, group_sizes)


def pass_at_k(p: torch.Tensor, ks: Sequence[int]) -> torch.Tensor:
    """Probability that at least one of k independent samples is correct: p (...) -> (..., K)
    float64,   pass@k = 1 - (1 - p)^k."""
    p = torch.as_tensor(p, dtype=F64).unsqueeze(-1)
    k = torch.tensor([float(x) for x in ks], dtype=F64)
    return 1 - (1 - p).pow(k)


def pass_at_k_table(policy_probs: torch.Tensor, correct_token: torch.Tensor,
                    ks: Sequence[int]) -> pd.DataFrame:
    """pass@k per context with p = pi(correct_token[c] | c): policy_probs (C, V), correct_token (C,)
    -> DataFrame context x k (see _context_table; 'overall' is the mean over contexts)."""
    p = _probs(policy_probs).gather(-1, correct_token.view(-1, 1)).squeeze(-1)
    return _context_table(pass_at_k(p, ks), ks)


# ---------------------------------------------------------------------------------------------
# Gradient noise


def _policy(up: Upstream, state_dict: dict | None, n_members: int):
    """The policy network in float64, its parameters repeated n_members times, views and inputs."""
    net = sft_policy(up.sft)
    theta = net.from_state_dict(up.sft.state_dict if state_dict is None else state_dict)
    theta = theta.to(F64).repeat(n_members, 1)                              # (E, N)
    params = net.layout.views(theta)
    x1 = net.inputs(up.problem.contexts.to(F64), n_members)
    return net, params, x1


def exact_policy_gradient(up: Upstream, reward: torch.Tensor, state_dict: dict | None = None
                          ) -> torch.Tensor:
    """Exact gradient (N,) float64 of J(theta) = 1/C sum_c sum_v pi(v|c) r(c, v) w.r.t. the policy's
    parameters (the SFT policy's, or state_dict's). reward (C, V).

        dJ/dlogits[c, v] = 1/C pi(v|c) (r(c, v) - sum_w pi(w|c) r(c, w)),

    backpropagated through the network by PolicyNet.backward.
    """
    net, params, x1 = _policy(up, state_dict, 1)
    logits, h1 = net.forward(params, x1)
    probs = torch.softmax(logits, -1)                                       # (1, C, V)
    r = reward.to(F64)
    dlogits = probs * (r - (probs * r).sum(-1, keepdim=True)) / probs.shape[1]
    return net.backward(params, x1, h1, dlogits)[0]


def stochastic_policy_gradients(up: Upstream, reward: torch.Tensor, group_size: int,
                                estimators: Sequence[str] = ("grpo",), draws: int = 256,
                                prompts: int = 8, state_dict: dict | None = None,
                                gen: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """`draws` independent one-batch GRPO gradients per estimator: {estimator: (draws, N) float64}.

    Each draw samples `prompts` contexts c_p ~ U(C) and a group of G = group_size tokens
    v_pg ~ pi(.|c_p), scores them with reward (C, V) and returns the ascent direction of GRPO's
    first epoch without KL (ratio 1, nothing clipped):

        g = -dL/dtheta = 1/(P G) sum_pg A_pg grad_theta log pi(v_pg | c_p),

    with A from `advantages(rewards, estimator=...)`. The draws are the batch (members) dimension:
    theta is repeated `draws` times and every group is sampled at once. All estimators see the same
    samples, so their comparison is paired.
    """
    gen = generator(0) if gen is None else gen
    net, params, x1 = _policy(up, state_dict, draws)
    logits, h1 = net.forward(params, x1)
    logp = torch.log_softmax(logits, -1)                                    # (E, C, V)
    n_ctx, vocab = logp.shape[1:]
    ctx = torch.randint(0, n_ctx, (draws, prompts), generator=gen)
    u = torch.rand(draws, prompts, group_size, generator=gen, dtype=F64)
    probs = logp.exp().gather(1, ctx.unsqueeze(-1).expand(-1, -1, vocab))  # (E, P, V)
    tokens = sample_categorical(probs, u)                                   # (E, P, G)
    index = (ctx.unsqueeze(-1) * vocab + tokens).flatten(1)                 # (E, S)
    rewards = reward.to(F64).flatten().expand(draws, -1).gather(1, index).view(tokens.shape)
    old_logp = logp.flatten(1).gather(1, index)
    weight = torch.full_like(old_logp, 1.0 / index.shape[1])
    ctx_weight = torch.zeros(draws, n_ctx, dtype=F64)                       # unused without KL
    zeros = torch.zeros(draws, dtype=F64)
    out = {}
    for estimator in estimators:
        adv, _ = advantages(rewards, None, estimator)
        dlogits, _ = grpo_logits_grad(logp, ref_logp=logp, index=index, old_logp=old_logp,
                                      adv=adv.flatten(1), weight=weight, ctx_weight=ctx_weight,
                                      clip_eps=zeros, kl_coef=zeros, first_epoch=True, use_kl=False)
        out[estimator] = -net.backward(params, x1, h1, dlogits)
    return out


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity a . b / (|a| |b|) along the last axis, (..., N) x (N,) -> (...); 0 where a
    vector is zero (a zero gradient points nowhere)."""
    norms = a.norm(dim=-1) * b.norm(dim=-1)
    return torch.where(norms > 0, (a * b).sum(-1) / norms.clamp_min(1e-300), 0.0)


def gradient_noise(up: Upstream, reward: torch.Tensor, group_sizes: Sequence[int],
                   estimators: Sequence[str] = tuple(ADVANTAGE_ESTIMATORS), draws: int = 256,
                   prompts: int = 8, state_dict: dict | None = None, seed: int = 0) -> pd.DataFrame:
    """How well one batch's GRPO gradient points along the exact policy gradient.

    For each group size G and advantage estimator: `draws` stochastic gradients g_i
    (stochastic_policy_gradients, `prompts` prompts of G responses each) and the exact gradient
    grad J (exact_policy_gradient) of the same policy; cos_i = g_i . grad J / (|g_i| |grad J|),
    0 when g_i = 0 (every group without signal). reward (C, V) is the reward the groups are scored
    with and J is its expectation.

    Returns one row per (group_size, estimator): cosine (mean of cos_i), cosine_std (their
    standard deviation), relative_norm (mean of |g_i| / |grad J|), zero_grad_frac (fraction of
    draws with g_i = 0), n_draws. The cosine ignores scale: estimators whose advantages differ only
    by a positive factor per batch (dr_grpo, rloo = G/(G-1) dr_grpo, batch_std) have equal cosines
    and differ only in relative_norm. Each group size
    draws from its own generator, seeded by (seed, G), so a row does not depend on the other rows.
    """
    exact = exact_policy_gradient(up, reward, state_dict)
    rows = []
    for g in group_sizes:
        gen = generator(seed * 65 + int(g))   # G <= 64: distinct for every (seed, G)
        grads = stochastic_policy_gradients(up, reward, int(g), estimators, draws, prompts,
                                            state_dict, gen)
        for estimator, grad in grads.items():
            cos = cosine(grad, exact)
            rows.append({"group_size": int(g), "estimator": estimator,
                         "cosine": float(cos.mean()), "cosine_std": float(cos.std()),
                         "relative_norm": float(grad.norm(dim=-1).mean() / exact.norm()),
                         "zero_grad_frac": float((grad.norm(dim=-1) == 0).to(F64).mean()),
                         "n_draws": draws})
    return pd.DataFrame(rows)
