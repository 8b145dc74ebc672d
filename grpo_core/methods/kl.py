"""Which KL does each method really optimize? Exact expected gradients of every KL placement.

A response y ~ pi(. | c) is sampled, an estimator k(y) is evaluated at it and differentiated with
y held fixed (what autograd does to a sampled loss). With log_ratio(y) = log pi(y) - log pi_ref(y)
and g(y) = d log pi(y) / d logits = onehot(y) - pi, the expected gradient with respect to the
logits of context c is an exact sum over the V tokens:

    placement        per-sample gradient               expectation over y ~ pi
    exact (loss)     d/dz sum_v pi log(pi/pi_ref)      grad KL(pi || pi_ref) = pi (log_ratio - KL)
    k1 (loss)        g(y)                              0: the score function has mean zero
    k2 (loss)        log_ratio(y) g(y)                 grad KL(pi || pi_ref)
    k3 (loss)        (1 - pi_ref(y)/pi(y)) g(y)        grad KL(pi_ref || pi) = pi - pi_ref: the reverse KL
    k1 (reward)      log_ratio(y) g(y)   (REINFORCE)   grad KL(pi || pi_ref)  (PPO-RLHF, REINFORCE++)

E[k1] = E[k3] = KL(pi || pi_ref) as *values*, E[k2] != KL in general: an unbiased value is not an
unbiased gradient. k3 (DeepSeekMath's, TRL's) is an unbiased estimate of KL(pi || pi_ref) whose
gradient, taken as a loss, pulls towards KL(pi_ref || pi) instead; k1 in the loss does nothing on
average. In the reward, k1's policy gradient is the forward KL's, and the fixed point of
E_pi[r] - beta KL(pi || pi_ref) is pi_ref exp(r / beta) / Z. The reverse KL's fixed point solves
pi(v) (beta - r(v) + E_pi r) = beta pi_ref(v) instead. (Checked against autograd and Monte Carlo
in tests/test_landscape_kl.py; the k1/k2/k3 values and derivatives are the trainer's own.)

These hold on-policy (the first epoch over a batch); on later epochs the samples come from pi_old,
and TRL does not importance-weight the KL term.
"""
from __future__ import annotations

import pandas as pd
import torch

from ..losses import KL_CODES, sampled_kl

PLACEMENTS = ("exact_loss", "k1_loss", "k2_loss", "k3_loss", "k1_reward")
PLACEMENT_HELP = {
    "exact_loss": "the exact KL(pi || pi_ref) summed over the vocabulary, in the loss (the notebook)",
    "k1_loss": "log(pi/pi_ref) at the sampled token, in the loss",
    "k2_loss": "(log(pi/pi_ref))^2 / 2 at the sampled token, in the loss",
    "k3_loss": "pi_ref/pi - log(pi_ref/pi) - 1 at the sampled token, in the loss (DeepSeekMath, TRL)",
    "k1_reward": "beta log(pi/pi_ref) subtracted from the sampled token's reward (PPO-RLHF, InstructGPT)",
}


def kl_forward(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """KL(pi || pi_ref) per context: (..., C, V) -> (..., C)."""
    return (logp.exp() * (logp - ref_logp)).sum(-1)


def kl_reverse(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """KL(pi_ref || pi) per context: (..., C, V) -> (..., C)."""
    return (ref_logp.exp() * (ref_logp - logp)).sum(-1)


def expected_value(logp: torch.Tensor, ref_logp: torch.Tensor, placement: str) -> torch.Tensor:
    """E_{y ~ pi}[k(y)] per context (..., C): what the estimator reports on average."""
    if placement == "exact_loss":
        return kl_forward(logp, ref_logp)
    code = torch.tensor(KL_CODES[placement[:2]])
    value, _ = sampled_kl(logp - ref_logp, code)
    return (logp.exp() * value).sum(-1)


def expected_gradient(logp: torch.Tensor, ref_logp: torch.Tensor, placement: str) -> torch.Tensor:
    """E_{y ~ pi}[d k(y) / d logits] (..., C, V) for one placement, an exact sum over y.

    For a sampled estimator: sum_y pi(y) k'(y) (onehot(y) - pi) = pi k' - pi sum_v pi k', with
    k' = d k / d log pi(y) (the trainer's derivative; in the reward, REINFORCE's k1(y) itself)."""
    probs = logp.exp()
    log_ratio = logp - ref_logp
    if placement == "exact_loss":
        return probs * (log_ratio - kl_forward(logp, ref_logp).unsqueeze(-1))
    if placement == "k1_reward":
        deriv = log_ratio                       # REINFORCE: the penalty's value times the score
    else:
        _, deriv = sampled_kl(log_ratio, torch.tensor(KL_CODES[placement[:2]]))
    weighted = probs * deriv
    return weighted - probs * weighted.sum(-1, keepdim=True)


def kl_placement_table(logp: torch.Tensor, ref_logp: torch.Tensor) -> pd.DataFrame:
    """One row per placement: its mean value, and how its expected gradient compares with the
    gradients of KL(pi || pi_ref) and KL(pi_ref || pi) (cosine and relative error, all contexts).

    logp, ref_logp (C, V) with logp != ref_logp (else every gradient is zero)."""
    grad_fwd = expected_gradient(logp, ref_logp, "exact_loss")
    grad_rev = logp.exp() - ref_logp.exp()          # d KL(pi_ref || pi) / d logits
    rows = []
    for placement in PLACEMENTS:
        grad = expected_gradient(logp, ref_logp, placement)
        norm = float(grad.norm())
        cos = lambda other: float((grad * other).sum() / (norm * other.norm())) if norm > 0 else 0.0
        rel = lambda other: float((grad - other).norm() / other.norm())
        close_fwd, close_rev = rel(grad_fwd) < 1e-4, rel(grad_rev) < 1e-4
        rows.append({"placement": placement, "help": PLACEMENT_HELP[placement],
                     "expected_value": float(expected_value(logp, ref_logp, placement).mean()),
                     "kl_forward": float(kl_forward(logp, ref_logp).mean()),
                     "kl_reverse": float(kl_reverse(logp, ref_logp).mean()),
                     "gradient_norm": norm, "cosine_forward": cos(grad_fwd),
                     "cosine_reverse": cos(grad_rev),
                     "optimizes": ("KL(pi || pi_ref)" if close_fwd else "KL(pi_ref || pi)" if close_rev
                                   else "nothing (zero on average)" if norm < 1e-6 * float(grad_fwd.norm())
                                   else "neither")})
    return pd.DataFrame(rows)


def fixed_point(reward: torch.Tensor, ref_logp: torch.Tensor, beta: float, placement: str,
                steps: int = 5000, lr: float = 0.05) -> torch.Tensor:
    """The policy log-probs (C, V) where the expected gradient of  -E_pi[r] + beta * KL-term
    vanishes, found by natural-gradient descent on the logits (each gradient divided by pi, which
    leaves the zeros where they are and converges fast) with exact expected gradients (float64).

    reward (C, V); ref_logp (C, V). For k1_loss the KL term vanishes on average, so the policy
    maximizes the reward alone: its 'fixed point' is the argmax (reached only in the limit)."""
    ref_logp = ref_logp.double()
    reward = reward.double()
    logits = ref_logp.clone()
    for _ in range(steps):
        logp = torch.log_softmax(logits, -1)
        probs = logp.exp()
        grad_reward = -probs * (reward - (probs * reward).sum(-1, keepdim=True))
        grad = grad_reward + beta * expected_gradient(logp, ref_logp, placement)
        logits -= lr * grad / probs
    return torch.log_softmax(logits, -1)


def reverse_kl_optimum(reward: torch.Tensor, ref_logp: torch.Tensor, beta: float,
                       iterations: int = 200) -> torch.Tensor:
    """The maximizer of E_pi[r] - beta KL(pi_ref || pi) in each context, in closed form up to one
    scalar: stationarity gives r(v) + beta pi_ref(v) / pi(v) = mu_c, so

        pi(v | c) = beta pi_ref(v | c) / (mu_c - r(c, v)),   mu_c > max_v r(c, v) with sum_v pi = 1,

    mu_c found by bisection (the sum falls monotonically in mu_c). reward, ref_logp (C, V) -> log pi (C, V) float64.
    """
    ref, r = ref_logp.double().exp(), reward.double()
    lo = r.max(-1, keepdim=True).values + 1e-12           # the sum is +inf here
    hi = lo + beta + (r.max(-1, keepdim=True).values - r.min(-1, keepdim=True).values) + 1.0
    for _ in range(iterations):
        mid = (lo + hi) / 2
        over = (beta * ref / (mid - r)).sum(-1, keepdim=True) > 1
        lo, hi = torch.where(over, mid, lo), torch.where(over, hi, mid)
    pi = beta * ref / ((lo + hi) / 2 - r)
    return (pi / pi.sum(-1, keepdim=True)).log()
