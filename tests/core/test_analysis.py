"""Exact analyses (grpo_core.analysis) against sampling, brute force and autograd."""
from __future__ import annotations

import math

import pytest
import torch

from grpo_core import policy_metrics
from grpo_core.analysis import (best_of_n, best_of_n_probs, beta_for_kl,
                                cosine, exact_policy_gradient, gradient_noise,
                                kl_regularized_frontier, kl_regularized_optimum, pass_at_k,
                                pass_at_k_table, stochastic_policy_gradients,
                                zero_signal_probability, zero_signal_table)
from grpo_core.advantages import ADVANTAGE_ESTIMATORS, advantages
from grpo_core.sampling import generator, sample_categorical
from grpo_core.sft import sft_policy

F64 = torch.float64


def random_policy(gen, n_ctx, vocab, scale=1.5):
    return torch.softmax(scale * torch.randn(n_ctx, vocab, generator=gen, dtype=F64), -1)


def within_4_se(freq, exact, trials):
    """Empirical frequencies agree with exact probabilities within 4 standard errors (plus one
    count, so that exact zeros must be observed as zeros up to rounding)."""
    se = (exact * (1 - exact) / trials).sqrt()
    return bool(((freq - exact).abs() <= 4 * se + 1.0 / trials).all())


# --- best-of-n -----------------------------------------------------------------------------------

def test_best_of_one_is_the_policy(upstream):
    probs, proxy, true = upstream.sft.logp.exp(), upstream.rm.scores, upstream.problem.true_reward
    assert torch.allclose(best_of_n_probs(probs, proxy, 1), probs.to(F64), atol=1e-6)
    row = best_of_n(probs, proxy, true, [1]).iloc[0]
    exact = policy_metrics(upstream.sft.logp, upstream.problem, proxy)
    assert abs(row.kl) < 1e-12 and row.kl_bound == 0
    assert row.true_reward == pytest.approx(float(exact["true_reward"]), abs=1e-6)
    assert row.proxy_reward == pytest.approx(float(exact["rm_reward"]), abs=1e-6)


def test_best_of_n_kl_grows_with_n_and_stays_below_the_bound(upstream):
    probs, proxy, true = upstream.sft.logp.exp(), upstream.rm.scores, upstream.problem.true_reward
    ns = [1, 2, 3, 4, 8, 16, 32, 64]
    table = best_of_n(probs, proxy, true, ns)
    assert list(table.n) == ns
    assert (table.kl.diff().dropna() > 0).all()
    assert (table.proxy_reward.diff().dropna() > 0).all()       # selecting on the proxy pays on it
    assert (table.kl[1:] < [math.log(n) for n in ns[1:]]).all()
    assert (table.kl <= table.kl_bound + 1e-12).all()


def test_best_of_n_distribution_matches_sampling():
    gen = generator(1)
    n_ctx, vocab, n, trials = 3, 6, 3, 20_000
    probs = random_policy(gen, n_ctx, vocab)
    probs[0, 2] = 0.0                                            # a token the policy never emits
    probs /= probs.sum(-1, keepdim=True)
    proxy = torch.randint(0, 3, (n_ctx, vocab), generator=gen).to(F64)  # many ties
    exact = best_of_n_probs(probs, proxy, n)
    assert torch.allclose(exact.sum(-1), torch.ones(n_ctx, dtype=F64))

    tokens = sample_categorical(probs.unsqueeze(1).expand(-1, trials, -1),
                                torch.rand(n_ctx, trials, n, generator=gen, dtype=F64))
    scores = proxy.gather(1, tokens.flatten(1)).view_as(tokens)
    top = scores == scores.amax(-1, keepdim=True)
    winner = torch.where(top, tokens, vocab).amin(-1)           # ties: the lowest token index wins
    freq = torch.nn.functional.one_hot(winner, vocab).to(F64).mean(1)
    assert within_4_se(freq, exact, trials)


def test_best_of_many_picks_the_proxy_best_token_the_policy_can_emit():
    probs = torch.tensor([[0.5, 0.3, 0.2, 0.0]], dtype=F64)
    proxy = torch.tensor([[0.0, 1.0, 1.0, 5.0]])                # token 3 is never emitted
    bon = best_of_n_probs(probs, proxy, 200)
    assert bon[0, 1] == pytest.approx(1.0) and bon[0, 3] == 0   # tie 1 vs 2: index 1 wins


# --- the KL-regularized optimum ------------------------------------------------------------------

def objective(probs, ref, reward, beta):
    """E_pi[r] - beta KL(pi || ref), summed over contexts."""
    kl = (torch.xlogy(probs, probs) - torch.xlogy(probs, ref)).sum(-1)
    return ((probs * reward).sum(-1) - beta * kl).sum()


def simplex_grid(steps):
    """Every point of the 3-token simplex with coordinates in multiples of 1/steps: (M, 3)."""
    i, j = torch.meshgrid(torch.arange(steps + 1), torch.arange(steps + 1), indexing="ij")
    keep = i + j <= steps
    i, j = i[keep], j[keep]
    return torch.stack([i, j, steps - i - j], -1).to(F64) / steps


@pytest.mark.parametrize("beta", [0.05, 0.5, 3.0])
def test_kl_regularized_optimum_beats_a_dense_search_over_the_simplex(beta):
    gen = generator(2)
    ref = random_policy(gen, 2, 3)
    reward = torch.randn(2, 3, generator=gen, dtype=F64)
    optimum = kl_regularized_optimum(ref, reward, beta)
    grid = simplex_grid(400)                                     # (M, 3)
    for c in range(2):
        values = (grid * reward[c]).sum(-1) - beta * (torch.xlogy(grid, grid)
                                                      - torch.xlogy(grid, ref[c])).sum(-1)
        best = grid[values.argmax()]
        assert float(objective(optimum[c:c + 1], ref[c:c + 1], reward[c:c + 1], beta)) >= \
            float(values.max()) - 1e-12
        assert (optimum[c] - best).abs().max() < 0.01
    log_z = torch.logsumexp(ref.log() + reward / beta, -1)      # the maximum is beta log Z
    assert float(objective(optimum, ref, reward, beta)) == pytest.approx(
        float(beta * log_z.sum()), abs=1e-10)


def test_kl_regularized_optimum_matches_gradient_ascent_on_free_logits():
    gen = generator(3)
    ref = random_policy(gen, 3, 5)
    reward = torch.randn(3, 5, generator=gen, dtype=F64)
    beta = 0.4
    optimum = kl_regularized_optimum(ref, reward, beta)
    for _ in range(2):                                           # two random starts
        logits = torch.randn(3, 5, generator=gen, dtype=F64).mul_(3).requires_grad_()
        opt = torch.optim.LBFGS([logits], max_iter=100, tolerance_grad=1e-12,
                                tolerance_change=1e-15, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = -objective(torch.softmax(logits, -1), ref, reward, beta)
            loss.backward()
            return loss
        opt.step(closure)
        assert torch.allclose(torch.softmax(logits.detach(), -1), optimum, atol=1e-6)


def test_kl_regularized_frontier_moves_from_the_reference_to_the_proxy(upstream):
    ref, proxy, true = upstream.sft.logp.exp(), upstream.rm.scores, upstream.problem.true_reward
    betas = [100.0, 10.0, 1.0, 0.3, 0.1, 0.03, 0.01, 0.001]
    table = kl_regularized_frontier(ref, proxy, true, betas)
    assert (table.kl.diff().dropna() > 0).all()                 # smaller beta, further from ref
    assert (table.proxy_reward.diff().dropna() > 0).all()
    exact = policy_metrics(upstream.sft.logp, upstream.problem, proxy)
    assert table.kl[0] < 1e-5
    assert table.true_reward[0] == pytest.approx(float(exact["true_reward"]), abs=1e-3)
    greedy = proxy.argmax(-1, keepdim=True)                     # beta -> 0: the proxy's argmax
    assert table.true_reward.iloc[-1] == pytest.approx(
        float(upstream.problem.true_reward.gather(1, greedy).mean()), abs=1e-3)


def test_beta_for_kl_hits_the_target(upstream):
    ref, proxy = upstream.sft.logp.exp(), upstream.rm.scores
    for target in [0.01, 0.1, 0.5]:
        beta = beta_for_kl(ref, proxy, target)
        row = kl_regularized_frontier(ref, proxy, proxy, [beta]).iloc[0]
        assert row.kl == pytest.approx(target, rel=1e-6)


# --- zero-signal groups and pass@k ---------------------------------------------------------------

def test_zero_signal_probability_matches_sampling(upstream):
    gen = generator(3)
    probs = upstream.sft.logp.exp().to(F64)
    correct = upstream.problem.correct_token
    p = probs.gather(1, correct.view(-1, 1)).squeeze(1)
    levels = torch.randint(0, 3, probs.shape, generator=gen).to(F64)  # a reward with ties
    group_sizes, trials = [2, 3, 5, 8], 20_000
    exact_binary = zero_signal_probability(p, group_sizes)       # (C, K)
    exact_levels = torch.tensor(zero_signal_table(probs, levels, group_sizes).iloc[:-1, 1:]
                                .to_numpy(), dtype=F64)
    for k, g in enumerate(group_sizes):
        u = torch.rand(probs.shape[0], trials, g, generator=gen, dtype=F64)
        tokens = sample_categorical(probs.unsqueeze(1).expand(-1, trials, -1), u)
        hits = (tokens == correct.view(-1, 1, 1)).to(F64)
        freq = ((hits.amax(-1) == hits.amin(-1)).to(F64)).mean(1)
        assert within_4_se(freq, exact_binary[:, k], trials)
        r = levels.gather(1, tokens.flatten(1)).view_as(tokens)
        freq = ((r.amax(-1) == r.amin(-1)).to(F64)).mean(1)
        assert within_4_se(freq, exact_levels[:, k], trials)


def test_zero_signal_table_of_a_binary_reward_is_p_g_plus_one_minus_p_g(upstream):
    probs, problem = upstream.sft.logp.exp(), upstream.problem
    table = zero_signal_table(probs, problem.verifiable_reward, [2, 16, 64])
    p = probs.to(F64).gather(1, problem.correct_token.view(-1, 1)).squeeze(1)
    p = p / probs.to(F64).sum(-1)
    assert list(table.context) == [str(c) for c in range(problem.n_contexts)] + ["overall"]
    assert torch.allclose(torch.tensor(table.iloc[:-1, 1:].to_numpy()),
                          zero_signal_probability(p, [2, 16, 64]), atol=1e-12)
    assert table[16].iloc[-1] == pytest.approx(table[16].iloc[:-1].mean())


def test_pass_at_k_matches_sampling(upstream):
    gen = generator(4)
    probs = upstream.sft.logp.exp().to(F64)
    correct = upstream.problem.correct_token
    ks, trials = [1, 2, 4, 16], 20_000
    table = pass_at_k_table(probs, correct, ks)
    exact = torch.tensor(table.iloc[:-1, 1:].to_numpy(), dtype=F64)   # (C, K)
    u = torch.rand(probs.shape[0], trials, max(ks), generator=gen, dtype=F64)
    hits = sample_categorical(probs.unsqueeze(1).expand(-1, trials, -1), u) == correct.view(-1, 1, 1)
    for j, k in enumerate(ks):
        freq = hits[..., :k].any(-1).to(F64).mean(1)
        assert within_4_se(freq, exact[:, j], trials)
    assert (exact.diff(dim=1) >= 0).all()


def test_pass_at_k_formula_edges():
    p = torch.tensor([0.0, 0.25, 1.0])
    out = pass_at_k(p, [1, 3])
    assert torch.allclose(out, torch.tensor([[0.0, 0.0], [0.25, 1 - 0.75 ** 3], [1.0, 1.0]],
                                            dtype=F64))


# --- gradient noise ------------------------------------------------------------------------------

def test_exact_policy_gradient_matches_autograd(upstream):
    net = sft_policy(upstream.sft)
    theta = net.from_state_dict(upstream.sft.state_dict).to(F64).unsqueeze(0).requires_grad_()
    probs = torch.softmax(net.logits(theta, upstream.problem.contexts.to(F64)), -1)[0]
    reward = upstream.rm.scores.to(F64)
    (probs * reward).sum(-1).mean().backward()
    assert torch.allclose(exact_policy_gradient(upstream, reward), theta.grad[0], atol=1e-12)


def test_one_stochastic_gradient_is_the_reinforce_surrogate_gradient(upstream):
    net = sft_policy(upstream.sft)
    reward = upstream.rm.scores
    grads = stochastic_policy_gradients(upstream, reward, 4, ["grpo"], draws=3, prompts=2,
                                        gen=generator(5))["grpo"]
    gen = generator(5)                                           # replay the same draws
    ctx = torch.randint(0, 5, (3, 2), generator=gen)
    u = torch.rand(3, 2, 4, generator=gen, dtype=F64)
    theta = net.from_state_dict(upstream.sft.state_dict).to(F64).unsqueeze(0).requires_grad_()
    for d in range(3):
        logp = torch.log_softmax(net.logits(theta, upstream.problem.contexts.to(F64)), -1)[0]
        tokens = sample_categorical(logp.detach().exp()[ctx[d]], u[d])          # (P, G)
        adv, _ = advantages(reward.to(F64)[ctx[d].unsqueeze(-1), tokens].unsqueeze(0))
        surrogate = (adv[0] * logp[ctx[d].unsqueeze(-1), tokens]).mean()
        (g,) = torch.autograd.grad(surrogate, theta)
        assert torch.allclose(grads[d], g[0], atol=1e-10)


def test_gradient_cosine_grows_with_group_size(upstream):
    table = gradient_noise(upstream, upstream.rm.scores, [2, 64], draws=256, seed=0)
    assert set(table.estimator) == set(ADVANTAGE_ESTIMATORS)
    assert ((table.cosine >= -1) & (table.cosine <= 1)).all()
    assert (table.n_draws == 256).all()
    grpo = table[table.estimator == "grpo"].set_index("group_size")
    assert grpo.cosine[64] > grpo.cosine[2] + 0.1


def test_cosines_lie_in_minus_one_one(upstream):
    grads = stochastic_policy_gradients(upstream, upstream.problem.verifiable_reward, 2,
                                        list(ADVANTAGE_ESTIMATORS), draws=64, gen=generator(6))
    exact = exact_policy_gradient(upstream, upstream.problem.verifiable_reward)
    for grad in grads.values():
        cos = cosine(grad, exact)
        assert ((cos >= -1 - 1e-12) & (cos <= 1 + 1e-12)).all()
        assert (cos[grad.norm(dim=-1) == 0] == 0).all()


def test_reinforce_gradient_is_unbiased(upstream):
    reward = upstream.rm.scores
    grads = stochastic_policy_gradients(upstream, reward, 4, ["none"], draws=4096,
                                        gen=generator(7))["none"]
    exact = exact_policy_gradient(upstream, reward)
    single = cosine(grads, exact).mean()
    mean = cosine(grads.mean(0), exact)
    assert mean > 0.95 and mean > single
