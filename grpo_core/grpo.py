"""GRPO: Group Relative Policy Optimization (Shao et al., DeepSeekMath, 2024), batched over runs.

One iteration, for each of E independent runs (members) at once:

1. Sample P prompts c_p ~ U(C) and a group of G responses v_pg ~ pi_old(. | c_p).
2. Score them: r_pg = r(c_p, v_pg), with the learned reward model (GRPO) or the verifiable
   reward 1[v_pg = v*_c] (RLVR).
3. Group-relative advantages, no critic:  A_pg = (r_pg - mean_g r_pg) / (std_g r_pg + eps).
4. `epochs` Adam steps on the clipped surrogate with a KL penalty to the reference (SFT) policy:

       L = -1/(PG) sum_pg min(rho_pg A_pg, clip(rho_pg, 1 - eps_c, 1 + eps_c) A_pg)
           + beta * 1/P sum_p KL(pi(. | c_p) || pi_ref(. | c_p)),   rho_pg = pi(v_pg|c_p) / pi_old(v_pg|c_p)

   The KL term is exact (a sum over the vocabulary), as in the notebook.

Members may differ in every GRPOConfig field. Each draws its randomness from its own generator,
and shorter groups, fewer prompts, epochs or iterations are masked, so a member's trajectory is
the one it would follow alone. The policy is evaluated on the C contexts only, once per step, and
samples gather from that (E, C, V) table; the gradient is backpropagated by hand
(:func:`grpo_logits_grad`, checked against autograd of :func:`grpo_loss` in the tests).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import pandas as pd
import torch

from .config import GRPOConfig, check_budget
from .metrics import policy_metrics
from .models import BatchedAdam, PolicyNet
from .problem import Problem
from .sampling import generator, sample_categorical
from .sft import SFTResult, sft_policy

ADV_EPS = 1e-8          # added to the group std, as in the notebook and TRL
CHUNK = 64              # iterations of randomness drawn per generator call


def group_advantages(rewards: torch.Tensor, valid: torch.Tensor | None = None, eps: float = ADV_EPS):
    """rewards (E, P, G), valid (E, P, G) bool or None (all valid)
    -> (advantages (E, P, G), zero_std (E, P) bool).

        A_pg = (r_pg - mean_g r_pg) / (std_g r_pg + eps),   std with Bessel's correction (G - 1).

    A group whose rewards are all equal carries no signal: its advantages are exactly 0 (the
    formula would otherwise divide float round-off by eps). Invalid entries get advantage 0.
    """
    if valid is None:  # every member has full groups
        std, mean = torch.std_mean(rewards, dim=-1, keepdim=True)
        zero_std = rewards.amax(-1, keepdim=True) <= rewards.amin(-1, keepdim=True)
        return torch.where(zero_std, 0.0, (rewards - mean) / (std + eps)), zero_std.squeeze(-1)
    n = valid.sum(-1, keepdim=True).clamp_min(2)
    masked = torch.where(valid, rewards, 0.0)
    mean = masked.sum(-1, keepdim=True) / n
    dev = torch.where(valid, rewards - mean, 0.0)
    std = (dev.square().sum(-1, keepdim=True) / (n - 1)).sqrt()
    hi = torch.where(valid, rewards, -torch.inf).amax(-1, keepdim=True)
    lo = torch.where(valid, rewards, torch.inf).amin(-1, keepdim=True)
    zero_std = hi <= lo
    adv = torch.where(zero_std, 0.0, dev / (std + eps))
    return adv, zero_std.squeeze(-1)


def grpo_loss(logp: torch.Tensor, ref_logp: torch.Tensor, index: torch.Tensor,
              old_logp: torch.Tensor, adv: torch.Tensor, weight: torch.Tensor,
              ctx_weight: torch.Tensor, clip_eps: torch.Tensor, kl_coef: torch.Tensor):
    """The GRPO loss per member, differentiable (the reference the hand-written gradient matches).

    logp (E, C, V) current log-probs; ref_logp (C, V); index (E, S) flat c * V + v of each sample;
    old_logp, adv, weight (E, S) with weight = valid / (P G); ctx_weight (E, C) the fraction of the
    batch's prompts at each context; clip_eps, kl_coef (E,).
    Returns (loss (E,), info) with info: policy_loss, kl (batch-weighted exact KL), n_clipped
    (samples whose clipped term is the minimum, where the clip stops the gradient).
    """
    new_logp = logp.flatten(1).gather(1, index)
    ratio = torch.exp(new_logp - old_logp)
    eps = clip_eps.unsqueeze(1)
    surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - eps, 1 + eps) * adv)
    policy_loss = -(surrogate * weight).sum(1)
    kl_ctx = (logp.exp() * (logp - ref_logp)).sum(-1)                       # (E, C)
    kl = (ctx_weight * kl_ctx).sum(1)
    clipped = ((adv > 0) & (ratio > 1 + eps)) | ((adv < 0) & (ratio < 1 - eps))
    return policy_loss + kl_coef * kl, {"policy_loss": policy_loss, "kl": kl,
                                        "n_clipped": (clipped & (adv != 0)).sum(1)}


def grpo_logits_grad(logp: torch.Tensor, ref_logp: torch.Tensor, index: torch.Tensor,
                     old_logp: torch.Tensor, adv: torch.Tensor, weight: torch.Tensor,
                     ctx_weight: torch.Tensor, clip_eps: torch.Tensor, kl_coef: torch.Tensor,
                     first_epoch: bool = False, use_kl: bool = True):
    """d grpo_loss / d logits (E, C, V), by hand, and the same info as grpo_loss.

    Surrogate: d/dlogp_s = -w_s A_s rho_s where the unclipped term is the minimum, else 0; and
    dlogp_s/dlogits[c_s] = onehot(v_s) - pi(. | c_s). KL: d KL_c / dlogits[c, v] =
    pi(v|c) (log pi(v|c) - log pi_ref(v|c) - KL_c). With first_epoch the policy is still the one
    that sampled the batch, so rho = 1 and nothing is clipped. use_kl=False skips the KL
    gradient (for kl_coef = 0 everywhere).
    """
    probs = logp.exp()
    wa = weight * adv                                                       # (E, S)
    if first_epoch:
        dlogp, policy_loss = -wa, -wa.sum(1)
        n_clipped = torch.zeros_like(kl_coef)
    else:
        ratio = torch.exp(logp.flatten(1).gather(1, index) - old_logp)
        eps = clip_eps.unsqueeze(1)
        clipped = torch.where(adv > 0, ratio > 1 + eps, ratio < 1 - eps) & (adv != 0)
        policy_loss = -(torch.where(clipped, ratio.clamp(1 - eps, 1 + eps), ratio) * wa).sum(1)
        dlogp = torch.where(clipped, 0.0, -wa * ratio)
        n_clipped = clipped.sum(1)
    dlogits = torch.zeros_like(logp).flatten(1).scatter_add_(1, index, dlogp).view_as(logp)
    dlogits.sub_(dlogits.sum(-1, keepdim=True) * probs)
    log_ratio = logp - ref_logp
    kl_ctx = (probs * log_ratio).sum(-1, keepdim=True)                      # (E, C, 1)
    if use_kl:
        beta_c = kl_coef.view(-1, 1, 1) * ctx_weight.unsqueeze(-1)           # (E, C, 1)
        dlogits.add_(probs.mul_(log_ratio.sub_(kl_ctx)).mul_(beta_c))
    info = {"policy_loss": policy_loss, "kl": (ctx_weight * kl_ctx.squeeze(-1)).sum(1),
            "n_clipped": n_clipped}
    return dlogits, info


@dataclass(frozen=True)
class RunResult:
    """One finished run: its config, per-iteration history, weights and exact final evaluation."""

    config: GRPOConfig
    history: pd.DataFrame          # one row per iteration (see HISTORY_COLUMNS)
    state_dict: dict               # nn.Sequential(Linear, ReLU, Linear) keys
    final_logp: torch.Tensor       # (C, V)
    per_context: pd.DataFrame      # context, true_reward, rm_reward, correct_prob, kl_ref, entropy
    stopped: str = ""              # why the run ended before config.iterations, if it did
    extra: dict = field(default_factory=dict)

    @property
    def completed_iterations(self) -> int:
        return len(self.history)


# Columns of RunResult.history. Exact ones are computed from the full distribution after the
# iteration's update; batch ones from the samples the iteration drew.
EXACT_COLUMNS = ("true_reward", "rm_reward", "kl_ref", "entropy", "correct_prob")
BATCH_COLUMNS = ("batch_reward", "first_group_reward", "adv_abs", "zero_std_frac",
                 "clip_frac", "policy_loss", "batch_kl")


def reward_table(problem: Problem, cfg: GRPOConfig, rm_table: torch.Tensor | None) -> torch.Tensor:
    """(C, V) reward a config trains on: the reward model's scores or the verifiable reward."""
    if cfg.reward == "verifiable":
        return problem.verifiable_reward
    if rm_table is None:
        raise ValueError("a GRPO run with reward='reward_model' needs the reward model's table")
    return rm_table


def _draw(gens, configs, start, stop, n_ctx, shape):
    """Each member's prompts (T, E, P) and uniforms (T, E, P, G) for iterations [start, stop)."""
    prompts = torch.zeros(shape[:3], dtype=torch.long)
    u = torch.zeros(shape)
    for e, (gen, cfg) in enumerate(zip(gens, configs)):
        k = min(stop, cfg.iterations) - start
        if k > 0:
            prompts[:k, e, :cfg.prompts] = torch.randint(0, n_ctx, (k, cfg.prompts), generator=gen)
            u[:k, e, :cfg.prompts, :cfg.group_size] = torch.rand(
                k, cfg.prompts, cfg.group_size, generator=gen)
    return prompts, u


def train_grpo(problem: Problem, sft: SFTResult, rm_table: torch.Tensor | None,
               configs: Sequence[GRPOConfig],
               on_iteration: Callable[[int, int], bool | None] | None = None) -> list[RunResult]:
    """Train len(configs) runs together from the SFT policy; returns one RunResult per config.

    rm_table (C, V): the reward model's scores (needed by members with reward='reward_model').
    on_iteration(done, total) is called after each iteration; returning False stops every run
    there, keeping the iterations finished so far. A member whose parameters become non-finite
    stops at its last finite iteration, and its result says so.
    """
    configs = list(configs)
    check_budget(configs)
    n_mem, n_ctx, vocab = len(configs), problem.n_contexts, problem.vocab_size
    t_max = max(c.iterations for c in configs)
    p_max = max(c.prompts for c in configs)
    g_max = max(c.group_size for c in configs)
    vec = lambda name, dtype=torch.float32: torch.tensor([getattr(c, name) for c in configs], dtype=dtype)
    iters, epochs = vec("iterations", torch.long), vec("epochs", torch.long)
    clip_eps, kl_coef = vec("clip_eps"), vec("kl_coef")
    use_kl = bool((kl_coef > 0).any())

    net = sft_policy(sft)
    theta = net.from_state_dict(sft.state_dict).repeat(n_mem, 1)           # (E, N)
    params, x1 = net.layout.views(theta), net.inputs(problem.contexts, n_mem)
    opt = BatchedAdam(theta, vec("lr"))
    ref_logp = sft.logp                                                     # (C, V)
    rewards_cv = torch.stack([reward_table(problem, c, rm_table) for c in configs]).flatten(1)

    # Masks for members with fewer prompts or smaller groups than the batch's largest.
    g_idx, p_idx = torch.arange(g_max), torch.arange(p_max)
    valid_p = p_idx < vec("prompts", torch.long).unsqueeze(1)               # (E, P)
    valid = valid_p.unsqueeze(-1) & (g_idx < vec("group_size", torch.long).view(-1, 1, 1))
    n_samples = valid.flatten(1).sum(1, keepdim=True)                       # (E, 1)
    weight = (valid.flatten(1) / n_samples)                                 # (E, S)
    uniform_shape = bool(valid.all())
    same_iters = bool((iters == t_max).all())
    same_epochs = bool((epochs == epochs[0]).all())
    max_epochs = int(epochs.max())

    gens = [generator(c.seed) for c in configs]
    # Records are reduced once per CHUNK iterations, so memory stays bounded for long runs:
    # exact metrics of the policy after each iteration (row 0: the SFT start) and batch statistics.
    exact: dict[str, torch.Tensor] = {}
    stats = torch.zeros(t_max, n_mem, len(BATCH_COLUMNS))
    logp_buf = torch.empty(CHUNK, n_mem, n_ctx, vocab)
    rewards_buf = torch.empty(CHUNK, n_mem, p_max, g_max)
    adv_buf = torch.empty(CHUNK, n_mem, p_max * g_max)
    zero_std_buf = torch.empty(CHUNK, n_mem, p_max, dtype=torch.bool)
    tail_buf = torch.empty(CHUNK, n_mem, 3)
    good_theta = theta.clone()                       # each member's last finite weights ...
    good_logp = torch.empty(n_mem, n_ctx, vocab)     # ... and policy
    first_bad = torch.full((n_mem,), t_max + 1)      # first iteration whose policy is non-finite
    done = t_max
    logits, h1 = net.forward(params, x1)
    for it in range(t_max + 1):
        row = it % CHUNK
        logp = torch.log_softmax(logits, -1)                                # (E, C, V)
        logp_buf[row] = logp
        if bool(torch.isfinite(logp).all()):
            good_theta.copy_(theta)
            good_logp.copy_(logp)
        else:  # a diverged member keeps its last finite state; the others go on
            finite = torch.isfinite(logp).flatten(1).all(1)
            first_bad = torch.where(~finite & (first_bad > it), it, first_bad)
            good_theta = torch.where(finite.unsqueeze(1), theta, good_theta)
            good_logp = torch.where(finite.view(-1, 1, 1), logp, good_logp)
            if not bool(finite.any()):
                done = it
        if row == CHUNK - 1 or it == done:
            chunk = policy_metrics(logp_buf[:row + 1], problem, rm_table, ref_logp)
            for name, values in chunk.items():
                exact.setdefault(name, torch.empty(t_max + 1, n_mem))[it - row:it + 1] = values
        if it == done:
            break
        if row == 0:
            prompts_chunk, u_chunk = _draw(gens, configs, it, it + CHUNK, n_ctx,
                                           (CHUNK, n_mem, p_max, g_max))

        # Sample the groups and score them: no gradient flows through this block.
        prompts, u = prompts_chunk[row], u_chunk[row]                       # (E, P), (E, P, G)
        probs = logp.exp()
        tokens = sample_categorical(probs.gather(1, prompts.unsqueeze(-1).expand(-1, -1, vocab)), u)
        index = (prompts.unsqueeze(-1) * vocab + tokens).flatten(1)         # (E, S)
        old_logp = logp.flatten(1).gather(1, index)
        rewards = rewards_cv.gather(1, index).view(n_mem, p_max, g_max)
        adv, zero_std = group_advantages(rewards, None if uniform_shape else valid)
        adv = adv.flatten(1)
        ctx_weight = torch.zeros(n_mem, n_ctx).scatter_add_(
            1, prompts, valid_p / valid_p.sum(1, keepdim=True))             # (E, C)

        # `epochs` clipped policy-gradient steps on this batch.
        clipped = torch.zeros(n_mem)
        for epoch in range(max_epochs):
            if epoch:
                logits, h1 = net.forward(params, x1)
                logp = torch.log_softmax(logits, -1)
            dlogits, info = grpo_logits_grad(logp, ref_logp, index, old_logp, adv, weight,
                                             ctx_weight, clip_eps, kl_coef, epoch == 0, use_kl)
            clipped += info["n_clipped"]
            if same_iters and same_epochs:
                opt.step(net.backward(params, x1, h1, dlogits))
                last_info = info
            else:  # members past their own epochs or iterations sit this step out
                active = (it < iters) & (epoch < epochs)
                opt.step(net.backward(params, x1, h1, dlogits), active)
                last_info = info if epoch == 0 else {
                    k: torch.where(epoch < epochs, v, last_info[k]) for k, v in info.items()}
        logits, h1 = net.forward(params, x1)

        rewards_buf[row], adv_buf[row], zero_std_buf[row] = rewards, adv, zero_std
        tail_buf[row] = torch.stack([clipped, last_info["policy_loss"], last_info["kl"]], dim=1)
        if on_iteration is not None and on_iteration(it + 1, t_max) is False:
            done = it + 1
        if row == CHUNK - 1 or it + 1 == done:
            stats[it - row:it + 1] = _batch_stats(rewards_buf[:row + 1], adv_buf[:row + 1],
                                                  zero_std_buf[:row + 1], tail_buf[:row + 1],
                                                  valid, epochs)

    # Iterations each member keeps: its own count, up to a stop, before any non-finite policy.
    kept = torch.minimum(iters.clamp_max(done), first_bad - 1)
    results = []
    for e, cfg in enumerate(configs):
        n = int(kept[e])
        status = "diverged" if n < min(cfg.iterations, done) else "stopped" if n < cfg.iterations else ""
        results.append(_result(problem, net, cfg, n, status, good_theta[e], good_logp[e],
                               {k: v[1:n + 1, e] for k, v in exact.items()}, stats[:n, e],
                               rm_table, ref_logp))
    return results


def _batch_stats(rewards, adv, zero_std, tail, valid, epochs):
    """Per-iteration batch statistics (T, E, len(BATCH_COLUMNS)) from the stored samples:
    rewards (T, E, P, G), adv (T, E, S), zero_std (T, E, P), tail (T, E, 3) = clipped count summed
    over epochs, last epoch's policy loss and batch KL."""
    valid_p = valid[..., 0]
    n_valid = valid.sum((1, 2))                                            # (E,)
    masked = torch.where(valid, rewards, 0.0)
    return torch.stack([
        masked.sum((2, 3)) / n_valid,
        masked[:, :, 0].sum(2) / valid[:, 0].sum(1),
        adv.abs().sum(2) / n_valid,
        (zero_std & valid_p).sum(2) / valid_p.sum(1),
        tail[..., 0] / (n_valid * epochs),
        tail[..., 1], tail[..., 2]], dim=-1)


def _result(problem, net, cfg, n, status, theta_row, final_logp, exact, stats, rm_table, ref_logp):
    """One member's RunResult: n iterations kept, its final weights and policy, its records."""
    hist = {"iteration": torch.arange(1, n + 1).numpy(),
            "samples": (torch.arange(1, n + 1) * cfg.samples_per_iteration).numpy()}
    hist.update({k: exact[k].numpy() for k in EXACT_COLUMNS if k in exact})
    hist.update({k: stats[:, j].numpy() for j, k in enumerate(BATCH_COLUMNS)})
    final = policy_metrics(final_logp, problem, rm_table, ref_logp, per_context=True)
    per_context = pd.DataFrame({"context": range(problem.n_contexts),
                                **{k: v.numpy() for k, v in final.items()},
                                "best": problem.best_reward.numpy()})
    message = {
        "diverged": f"Stopped after {n} of {cfg.iterations} iterations: the policy's parameters "
                    "became non-finite. Lower the learning rate or raise the KL coefficient.",
        "stopped": f"Stopped by request after {n} of {cfg.iterations} iterations.",
        "": ""}[status]
    return RunResult(cfg, pd.DataFrame(hist), net.state_dict(theta_row), final_logp.clone(),
                     per_context, message)
