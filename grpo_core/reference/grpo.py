"""GRPO on the one-token task, one run, top to bottom: what grpo_core/trainer.py computes for many
runs at once, written the way CleanRL writes an algorithm (autograd, torch.optim.Adam, no batching
over runs). The tests check that its history equals the batched engine's (to 1e-5).

    result = train(build_upstream(), GRPOConfig())  # a RunResult, as run_many gives

Shapes: C contexts, V tokens (a response is one token), P prompts, G responses per prompt.
"""
import torch
from torch import nn

from ..config import GRPOConfig
from ..engine import RunResult, result_from_records
from ..metrics import policy_metrics
from ..sampling import draw_iterations, generator, sample_categorical
from ..trainer import HISTORY

EPS = 1e-8


def kl_estimate(log_ratio, kind):
    """Schulman's estimators of KL(pi || pi_ref) from log_ratio = log pi(v) - log pi_ref(v), v ~ pi."""
    if kind == "k1":
        return log_ratio
    if kind == "k2":
        return log_ratio ** 2 / 2
    return torch.exp(-log_ratio) + log_ratio - 1  # k3


def group_advantages(r, cfg):
    """r (P, G) rewards -> A (P, G), one group per row; a group of equal rewards teaches nothing."""
    if cfg.advantage_estimator == "none":
        return r  # plain REINFORCE
    mean, n = r.mean(1, keepdim=True), r.shape[1]
    if cfg.advantage_estimator == "rloo":  # leave-one-out mean
        adv = r - (r.sum(1, keepdim=True) - r) / (n - 1)
    elif cfg.advantage_estimator == "dr_grpo":  # mean only
        adv = r - mean
    elif cfg.advantage_estimator == "batch_std":                               # TRL scale_rewards="batch"
        adv = (r - mean) / (r.std() + EPS)
    else:  # grpo: DeepSeekMath
        adv = (r - mean) / (r.std(1, keepdim=True) + EPS)
    no_signal = (r.amax(1) == r.amin(1)).unsqueeze(1)  # (P, 1)
    return torch.where(no_signal, 0.0, adv)


def rollout(gen, cfg, logp, ref_logp, reward):
    """P prompts, a group of G responses each from pi_old = exp(logp) (C, V), scored by reward
    (C, V). DAPO's dynamic sampling redraws a group without spread (a new prompt and group)."""
    picks, u = draw_iterations(gen, 1, cfg.prompts, cfg.dynamic_sampling + 1, cfg.group_size, logp.shape[0])
    probs, ctx, tokens, rewards, generated = logp.exp(), [], [], [], 0
    for p in range(cfg.prompts):
        for k in range(cfg.dynamic_sampling + 1):  # a try: a prompt and a group
            c = picks[0, p, k]
            v = sample_categorical(probs[c], u[0, p, k])  # (G,) by inverse CDF
            r = reward[c, v]
            if cfg.kl_placement == "reward" and cfg.kl_coef > 0:  # PPO-RLHF: r - beta KL
                kl_c = (probs[c] * (logp[c] - ref_logp[c])).sum()
                r = r - cfg.kl_coef * (kl_c if cfg.kl_estimator == "exact"
                                       else kl_estimate(logp[c, v] - ref_logp[c, v], cfg.kl_estimator))
            generated += cfg.group_size
            if r.max() > r.min():  # this group has signal
                break
        ctx.append(c.expand(cfg.group_size)), tokens.append(v), rewards.append(r)
    return torch.stack(ctx), torch.stack(tokens), torch.stack(rewards), generated  # (P, G) each


def grpo_loss(logp, ctx, v, old_logp, adv, ref_logp, cfg):
    """The clipped surrogate, the KL penalty and the entropy bonus, each a mean over the samples."""
    new_logp = logp[ctx, v]  # log pi(v | c)
    ratio = torch.exp(new_logp - old_logp)
    high = cfg.clip_eps_high or cfg.clip_eps  # DAPO clip-higher
    objective = torch.minimum(ratio * adv, torch.clamp(ratio, 1 - cfg.clip_eps, 1 + high) * adv)
    if cfg.dual_clip > 0:  # a negative A's loss <= -c A
        objective = torch.where(adv < 0, torch.maximum(objective, cfg.dual_clip * adv), objective)
    probs = logp.exp()
    exact_kl = (probs * (logp - ref_logp)).sum(1)[ctx].mean()  # KL(pi || pi_ref) at the prompts
    kl = exact_kl  # the KL the penalty uses
    if cfg.kl_estimator != "exact" and cfg.kl_coef > 0:
        kl = kl_estimate(new_logp - ref_logp[ctx, v], cfg.kl_estimator).mean()
    entropy = -(probs * logp).sum(1)[ctx].mean()
    loss = -objective.mean() - cfg.entropy_coef * entropy
    if cfg.kl_placement == "loss":
        loss = loss + cfg.kl_coef * kl  # GRPO: beta KL in the loss
    return loss, {"n_clip_low": ((adv < 0) & (ratio < 1 - cfg.clip_eps)).sum(),
                  "n_clip_high": ((adv > 0) & (ratio > 1 + high)).sum(),
                  "policy_loss": -objective.mean(), "kl": exact_kl, "kl_estimate": kl}


def train(up, cfg: GRPOConfig) -> RunResult:
    """One GRPO (or RLVR) run of cfg from the SFT policy of up (a pipeline.Upstream)."""
    problem, x = up.problem, up.problem.contexts  # x (C, D)
    hidden = up.sft.config.hidden_dim
    policy = nn.Sequential(nn.Linear(x.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, problem.vocab_size))
    policy.load_state_dict(up.sft.state_dict)  # start from SFT
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    reward = problem.verifiable_reward if cfg.reward == "verifiable" else up.rm.scores  # (C, V): RLVR or RM
    ref_logp = up.sft.logp  # (C, V): the reference
    gen = generator(cfg.seed)
    with torch.no_grad():
        logp = policy(x).log_softmax(-1)  # pi_old of iteration 0
    exact, records, status = [policy_metrics(logp, problem, up.rm.scores, up.sft.logp)], [], ""
    for it in range(cfg.iterations):
        if cfg.ref_reset_every and it and it % cfg.ref_reset_every == 0:
            ref_logp = logp  # DeepSeek-R1: pi_ref <- pi
        ctx, v, r, generated = rollout(gen, cfg, logp, ref_logp, reward)  # (P, G) each
        adv = group_advantages(r, cfg)  # (P, G)
        old_logp = logp[ctx, v]
        minibatch = torch.arange(cfg.prompts) * cfg.minibatches // cfg.prompts # each prompt's (P,)
        before, steps = {k: t.clone() for k, t in policy.state_dict().items()}, []
        for _ in range(cfg.epochs):  # PPO epochs
            for mb in range(cfg.minibatches):  # TRL steps_per_generation
                rows = minibatch == mb
                loss, step = grpo_loss(policy(x).log_softmax(-1), ctx[rows], v[rows], old_logp[rows],
                                       adv[rows], ref_logp, cfg)
                optimizer.zero_grad()
                loss.backward()
                grad = torch.cat([p.grad.flatten() for p in policy.parameters()])
                step["grad_norm"] = torch.linalg.vector_norm(grad, dtype=torch.float64).to(grad.dtype)
                steps.append(torch.stack([torch.as_tensor(t, dtype=grad.dtype).detach() for t in step.values()]))
                optimizer.step()
        with torch.no_grad():
            logp = policy(x).log_softmax(-1)  # the new policy (C, V)
        if not (torch.isfinite(logp).all() and torch.isfinite(torch.stack(steps)).all()):
            policy.load_state_dict(before)  # keep the last finite policy
            status = "diverged"
            break
        exact.append(policy_metrics(logp, problem, up.rm.scores, up.sft.logp))  # exact, not sampled
        low, high, policy_loss, kl, kl_est, grad_norm = torch.stack(steps).mean(0)
        trained = r.numel() / cfg.minibatches  # samples per step, on average
        records.append([generated, r.mean(), r[0].mean(), adv.abs().mean(), (r.amax(1) == r.amin(1)).to(r.dtype).mean(),
                        (low + high) / trained, low / trained, high / trained, policy_loss, kl, kl_est, grad_norm])
    with torch.no_grad():
        final_logp = policy(x).log_softmax(-1)  # (C, V): the last finite policy
    per = policy_metrics(final_logp, problem, up.rm.scores, up.sft.logp, per_context=True)
    return result_from_records(cfg, HISTORY, exact, records, {"context": range(problem.n_contexts), **per,
                                                              "best": problem.best_reward}, final_logp,
                               policy.state_dict(), status)
