"""GRPO on sequences, one run, top to bottom: what grpo_core/sequence/trainer.py computes for many
runs at once, written the way CleanRL writes an algorithm (autograd through the network,
torch.optim.Adam, no batching over runs). The tests check that its history equals the engine's.

    result = train(build_seq_upstream(), SeqGRPOConfig())  # a RunResult, as train_seq gives

Shapes: C contexts, N responses per context (all enumerated), L the maximum length, V = A + 1
tokens (A content tokens and the end token), P prompts, G responses per prompt, S = P G samples.
"""
import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..engine import RunResult, result_from_records
from ..sampling import draw_iterations, generator
from ..sequence.config import SeqGRPOConfig
from ..sequence.metrics import sequence_metrics
from ..sequence.policy import sample_responses
from ..sequence.rollout import reward_tables
from ..sequence.trainer import HISTORY
from .grpo import group_advantages, kl_estimate

def next_token_logp(policy, task, ctx, tokens):
    """log pi(. | c, t, y_{t-1}) (B, L, V) at every position of responses tokens (B, L) of contexts
    ctx (B,): the policy reads (context embedding, position, previous token; at t = 0 the start A)."""
    b, big_l = tokens.shape
    vocab = task.config.alphabet_size + 1
    prev = torch.cat([torch.full((b, 1), vocab - 1), tokens[:, :-1]], 1)
    x = torch.cat([task.contexts[ctx].unsqueeze(1).expand(-1, big_l, -1), torch.eye(big_l).expand(b, -1, -1),
                   F.one_hot(prev, vocab).to(task.contexts.dtype)], -1)
    return policy(x).log_softmax(-1)


def at_tokens(logp, tokens):
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # (B, L) log pi(y_t | ...)


def kl_per_token(logp, ref_logp, tokens, cfg):
    """(S, L): k1/k2/k3 of the sampled token, or the exact KL of the next-token distribution."""
    if cfg.kl_estimator == "exact":
        return (logp.exp() * (logp - ref_logp)).sum(-1)
    return kl_estimate(at_tokens(logp, tokens) - at_tokens(ref_logp, tokens), cfg.kl_estimator)


def all_responses_logp(policy, task):
    """log pi(y | c) (C, N) of every response of every context: the sum of its tokens' log-probs."""
    r_all, n_ctx = task.responses, task.n_contexts
    ctx, tokens = torch.arange(n_ctx).repeat_interleave(r_all.n), r_all.tokens.repeat(n_ctx, 1)
    logp = (at_tokens(next_token_logp(policy, task, ctx, tokens), tokens) * r_all.mask.repeat(n_ctx, 1)).sum(-1)
    return logp.view(n_ctx, r_all.n)


def rollout(gen, cfg, task, policy, ref_policy, reward, seq_logp):
    """P prompts, a group of G whole responses each: inverse CDF over all N responses under
    pi_old = exp(seq_logp) (C, N) (the same distribution as drawing token by token), scored;
    dynamic sampling redraws a group without spread."""
    picks, u = draw_iterations(gen, 1, cfg.prompts, cfg.dynamic_sampling + 1, cfg.group_size, task.n_contexts)
    ctx, resp, rewards, generated = [], [], [], 0
    for p in range(cfg.prompts):
        for k in range(cfg.dynamic_sampling + 1):
            c = picks[0, p, k].expand(cfg.group_size)
            y = sample_responses(seq_logp.exp().unsqueeze(0), c.unsqueeze(0), u[0, p, k].unsqueeze(0))[0]
            r = reward[c, y]
            if cfg.kl_placement == "reward" and cfg.kl_coef > 0:  # r - beta sum_t kl_t
                tokens = task.responses.tokens[y]
                kl = kl_per_token(next_token_logp(policy, task, c, tokens), next_token_logp(ref_policy, task, c, tokens),
                                  tokens, cfg)
                r = r - cfg.kl_coef * (kl * task.responses.mask[y]).sum(-1)
            generated += cfg.group_size
            if r.max() > r.min():
                break
        ctx.append(c), resp.append(y), rewards.append(r)
    return torch.cat(ctx), torch.cat(resp), torch.stack(rewards), generated  # (S,), (S,), (P, G), int


def sequence_loss(policy, ref_policy, task, ctx, y, old_logp, adv, mask, n_seq, batch_tokens, cfg):
    """The per-token loss l (S, L) aggregated over the step's tokens mask (S, L) as TRL's loss_type
    (verl's loss_agg_mode) says, and the tokens the clip (or CISPO's cap) bounded."""
    tokens, big_l = task.responses.tokens[y], task.config.max_length
    logp = next_token_logp(policy, task, ctx, tokens)  # (S, L, V)
    new_logp = at_tokens(logp, tokens)
    log_ratio = (new_logp - old_logp) * mask
    if cfg.importance_sampling_level == "sequence":  # GSPO: one ratio per response
        log_ratio = (log_ratio.sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp_min(1)).expand_as(mask)
    w, a = torch.exp(log_ratio), adv.unsqueeze(-1)
    lo, hi = 1 - cfg.clip_eps, 1 + (cfg.clip_eps_high or cfg.clip_eps)
    if cfg.loss_type == "cispo":  # a capped, stop-gradient weight
        loss, clipped = -torch.clamp(w, max=cfg.cispo_cap).detach() * a * new_logp, w > cfg.cispo_cap
    else:
        loss = -torch.minimum(w * a, torch.clamp(w, lo, hi) * a)
        clipped = ((w < lo) & (a < 0)) | ((w > hi) & (a > 0))
        if cfg.dual_clip > 0:  # a negative A's loss <= -c A
            loss = torch.where(a < 0, torch.minimum(loss, -cfg.dual_clip * a), loss)
    if cfg.kl_placement == "loss" and cfg.kl_coef > 0:
        loss = loss + cfg.kl_coef * kl_per_token(logp, next_token_logp(ref_policy, task, ctx, tokens), tokens, cfg)
    if cfg.entropy_coef > 0:
        loss = loss + cfg.entropy_coef * (logp.exp() * logp).sum(-1)  # - c_H H_t
    token_sum, b = (loss * mask).sum(), max(n_seq, 1)  # b: responses B in the step
    if cfg.loss_type in ("grpo", "seq-mean-token-mean"):  # token mean per response, then mean
        total = ((loss * mask).sum(-1) / mask.sum(-1).clamp_min(1)).sum() / b
    elif cfg.loss_type in ("bnpo", "token-mean"):  # over the minibatch's tokens
        total = token_sum / mask.sum().clamp_min(1)
    elif cfg.loss_type == "dr_grpo":  # over B x max_completion_length
        total = token_sum / (b * big_l)
    elif cfg.loss_type in ("dapo", "cispo"):  # over the batch's tokens per minibatch (TRL 1.16)
        total = token_sum / batch_tokens.clamp_min(1)
    elif cfg.loss_type in ("luspo", "seq-mean-token-sum"):  # |y| x sequence loss, mean
        total = token_sum / b
    else:  # seq-mean-token-sum-norm: / L
        total = token_sum / big_l
    return total, clipped & (mask > 0)


def train(up, cfg: SeqGRPOConfig) -> RunResult:
    """One sequence GRPO run of cfg from the SFT policy of up (a sequence.upstream.SeqUpstream)."""
    task, net, responses = up.task, up.sft.net, up.task.responses
    policy = nn.Sequential(nn.Linear(net.n_features, net.hidden_dim), nn.ReLU(), nn.Linear(net.hidden_dim, net.vocab))
    policy.load_state_dict(net.state_dict(up.sft.theta))  # start from SFT
    ref_policy = copy.deepcopy(policy).requires_grad_(False)  # the frozen reference
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    reward = reward_tables(up, [cfg])[0]  # (C, N), overlong penalty in
    rm = up.rm.scores if up.rm is not None else None
    with torch.no_grad():
        seq_logp = all_responses_logp(policy, task)  # pi_old (C, N)
    gen, exact, records, status = generator(cfg.seed), [sequence_metrics(seq_logp, task, up.sft.seq_logp, rm)], [], ""
    for it in range(cfg.iterations):
        if cfg.ref_reset_every and it and it % cfg.ref_reset_every == 0:
            ref_policy.load_state_dict(policy.state_dict())  # TRL sync_ref_model
        with torch.no_grad():
            ctx, y, r, generated = rollout(gen, cfg, task, policy, ref_policy, reward, seq_logp)
            tokens = responses.tokens[y]
            old_logp = at_tokens(next_token_logp(policy, task, ctx, tokens), tokens)  # (S, L)
        adv = group_advantages(r, cfg).flatten()  # (S,)
        mask = (responses.mask[y] & ~(cfg.mask_truncated & responses.truncated[y]).unsqueeze(-1)).to(old_logp.dtype)
        minibatch = (torch.arange(cfg.prompts) * cfg.minibatches // cfg.prompts).repeat_interleave(cfg.group_size)
        before, steps = {k: t.clone() for k, t in policy.state_dict().items()}, []
        for step in range(cfg.epochs * cfg.minibatches):  # epochs x minibatches
            rows = minibatch == step % cfg.minibatches
            step_mask, n_seq = mask * rows.unsqueeze(-1), int(rows.sum())
            loss, hit = sequence_loss(policy, ref_policy, task, ctx, y, old_logp, adv, step_mask, n_seq,
                                      mask.sum() / cfg.minibatches, cfg)
            optimizer.zero_grad()
            loss.backward()
            grad = torch.cat([p.grad.flatten() for p in policy.parameters()])
            if step == 0:  # against the exact policy gradient of J = E_c E_{y ~ pi} r(c, y)
                j = (all_responses_logp(policy, task).exp() * reward).sum() / task.n_contexts
                exact_grad = torch.cat([g.flatten() for g in torch.autograd.grad(j, list(policy.parameters()))])
                cosine = F.cosine_similarity(-grad, exact_grad, dim=0, eps=1e-30)
            steps.append(torch.stack([hit.sum() / step_mask.sum().clamp_min(1), hit.any(-1).sum() / max(n_seq, 1),
                                      loss.detach(), grad.norm()]))
            optimizer.step()
        with torch.no_grad():
            seq_logp = all_responses_logp(policy, task)  # the new policy
        metrics = sequence_metrics(seq_logp, task, up.sft.seq_logp, rm)  # exact, not sampled
        if not (torch.isfinite(metrics["kl_ref"]) and torch.isfinite(metrics["entropy"])):
            policy.load_state_dict(before)  # keep the last finite policy
            status = "diverged"
            break
        clip_token, clip_seq, policy_loss, grad_norm = torch.stack(steps).mean(0)
        exact.append(metrics)
        records.append([generated, r.mean(), responses.length[y].to(r.dtype).mean(),
                        (r.amax(1) == r.amin(1)).to(r.dtype).mean(), clip_token, clip_seq, cosine, policy_loss, grad_norm])
    with torch.no_grad():
        final_logp = all_responses_logp(policy, task)  # (C, N): the last finite policy
    per = sequence_metrics(final_logp, task, up.sft.seq_logp, rm, per_context=True)
    return result_from_records(cfg, HISTORY, exact, records, {"context": range(task.n_contexts), "answer": task.answer,
                                                              **per}, final_logp, policy.state_dict(), status)
