"""DPO: the reward model's pairs regenerated exactly, the loss's gradient against autograd, the
population optimum pi_ref exp(r*/beta)/Z, and real training runs that learn."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from grpo_core.metrics import policy_metrics
from grpo_core.methods.dpo import (DPOConfig, _dpo_grad, OnlineDPOConfig, dpo_expected_loss, dpo_logits_grad,
                                   dpo_loss, dpo_optimum, offline_pairs, preference_probs,
                                   train_dpo, train_online_dpo)
from grpo_core.models import RewardNet
from grpo_core.reward_model import comparison_data
from grpo_core.sampling import generator


def test_comparison_data_is_exactly_the_reward_models_data(upstream):
    """The first step's loss in the reward model's history, recomputed from the regenerated pairs
    at the reward model's initial weights, is equal to the float: same pairs, same labels."""
    problem, cfg = upstream.problem, upstream.rm.config
    data = comparison_data(problem, cfg)
    assert data.ctx.shape == (cfg.steps, cfg.batch_pairs)
    net = RewardNet(problem.contexts.shape[1], cfg.hidden_dim, problem.vocab_size)
    scores = net.scores(net.init(generator(cfg.seed)).unsqueeze(0), problem.contexts)[0]
    margin = scores[data.ctx[0], data.tok_a[0]] - scores[data.ctx[0], data.tok_b[0]]
    loss0 = F.binary_cross_entropy_with_logits(margin, data.label[0])
    assert float(loss0) == pytest.approx(float(upstream.rm.history["loss"].iloc[0]), abs=1e-7)
    # a different seed gives different data, so the match above is not an accident
    other = comparison_data(problem, cfg.replace(seed=cfg.seed + 1))
    assert not torch.equal(other.tok_a, data.tok_a)
    # labels follow the Bradley-Terry probabilities of the true rewards (Monte Carlo, 12 800 pairs)
    true = problem.true_reward
    p = torch.sigmoid(true[data.ctx, data.tok_a] - true[data.ctx, data.tok_b])
    assert float((data.label - p).mean()) == pytest.approx(0.0, abs=4 * float(p.std()) / len(p.view(-1)) ** 0.5 + 0.01)
    assert torch.equal(torch.where(data.label > 0, data.tok_a, data.tok_b), data.chosen)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dpo_logits_grad_matches_autograd(seed):
    g = generator(seed)
    n_mem, n_ctx, vocab, batch = 3, 5, 10, 40
    logits = torch.randn(n_mem, n_ctx, vocab, generator=g, dtype=torch.float64).requires_grad_()
    ref = torch.log_softmax(torch.randn(n_ctx, vocab, generator=g, dtype=torch.float64), -1)
    chosen = torch.randint(0, n_ctx * vocab, (n_mem, batch), generator=g)
    rejected = (chosen // vocab) * vocab + torch.randint(0, vocab, (n_mem, batch), generator=g)
    beta = torch.tensor([0.1, 0.5, 2.0], dtype=torch.float64)
    weight = torch.rand(n_mem, batch, generator=g, dtype=torch.float64)
    logp = torch.log_softmax(logits, -1)
    loss, _ = dpo_loss(logp, ref, chosen, rejected, beta, weight)
    # the formula itself: -log sigmoid(beta * ((logp - ref)(w) - (logp - ref)(l)))
    h = (logp - ref).flatten(1)
    direct = -(F.logsigmoid(beta.view(-1, 1) * (h.gather(1, chosen) - h.gather(1, rejected))) * weight).sum(1)
    torch.testing.assert_close(loss, direct)
    auto, = torch.autograd.grad(loss.sum(), logits)
    hand, hand_loss, _ = dpo_logits_grad(logp.detach(), ref, chosen, rejected, beta, weight)
    torch.testing.assert_close(hand, auto, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(hand_loss, loss.detach())
    fast, u = _dpo_grad(logp.detach(), ref.reshape(-1), chosen, rejected, beta.view(-1, 1), weight)
    torch.testing.assert_close(fast, auto, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_dpo_population_optimum_is_the_tilted_reference(upstream, beta):
    """Minimizing the exact expected DPO loss over all pairs, labels P(a > b) = sigmoid(R_a - R_b),
    reaches pi_ref exp(R / beta) / Z: the reward the labels imply is the true preference."""
    ref = upstream.sft.logp.double()
    true = upstream.problem.true_reward.double()
    pref = preference_probs(true)
    logits = ref.clone().requires_grad_()
    opt = torch.optim.LBFGS([logits], lr=1, max_iter=500, tolerance_grad=1e-12,
                            tolerance_change=1e-15, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = dpo_expected_loss(torch.log_softmax(logits, -1), ref, pref, beta)
        loss.backward()
        return loss
    for _ in range(5):
        opt.step(closure)
    reached = torch.log_softmax(logits.detach(), -1).exp()
    target = dpo_optimum(ref, true, beta).exp()
    torch.testing.assert_close(reached, target, atol=1e-6, rtol=0)
    # and the optimum is not the reference: the tilt moved the policy towards the true best token
    assert float((target - ref.exp()).abs().max()) > 0.05
    # the loss is higher anywhere else (checked at the reference and a random nearby policy)
    best = dpo_expected_loss(target.log(), ref, pref, beta)
    assert dpo_expected_loss(ref, ref, pref, beta) > best
    nudged = torch.log_softmax(target.log() + 0.05 * torch.randn(ref.shape, generator=generator(0),
                                                                   dtype=torch.float64), -1)
    assert dpo_expected_loss(nudged, ref, pref, beta) > best


def test_offline_dpo_on_the_reward_models_pairs_learns(upstream):
    configs = [DPOConfig(seed=s) for s in range(4)] + [DPOConfig(epochs=2, seed=9)]
    results = train_dpo(upstream.problem, upstream.sft, upstream.rm.config, configs, upstream.rm.scores)
    sft = float(policy_metrics(upstream.sft.logp, upstream.problem)["true_reward"])
    rm_cfg = upstream.rm.config
    for cfg, r in zip(configs, results):
        h = r.history
        assert len(h) == cfg.epochs * rm_cfg.steps
        assert h["pairs"].iloc[-1] == cfg.epochs * rm_cfg.steps * rm_cfg.batch_pairs
        assert (h["responses"] == 0).all()              # no policy generates these pairs
        assert h["true_reward"].iloc[-1] > sft + 0.05
        assert h["loss"].iloc[-50:].mean() < h["loss"].iloc[:50].mean()
        # the history's last row is the exact metric of the returned policy
        final = policy_metrics(r.final_logp, upstream.problem, upstream.rm.scores, upstream.sft.logp)
        assert h["true_reward"].iloc[-1] == pytest.approx(float(final["true_reward"]), abs=1e-6)
        assert h["kl_ref"].iloc[-1] == pytest.approx(float(final["kl_ref"]), abs=1e-6)
    # the first epoch is the reward model's own order, so every seed agrees there and differs later
    first = [r.history["true_reward"].iloc[rm_cfg.steps - 1] for r in results[:4]]
    assert max(first) - min(first) < 1e-6
    last = [r.history["true_reward"].iloc[-1] for r in results[:4]]
    assert max(last) - min(last) > 0
    # a member with fewer epochs is the same run as the first 2 epochs of a solo run
    solo = train_dpo(upstream.problem, upstream.sft, rm_cfg, [configs[-1]], upstream.rm.scores)[0]
    torch.testing.assert_close(solo.final_logp, results[-1].final_logp, atol=1e-5, rtol=1e-5)


def test_dpo_on_reference_pairs_uses_pairs_from_pi_ref(upstream):
    problem, sft, rm_cfg = upstream.problem, upstream.sft, upstream.rm.config
    cfg = DPOConfig(data="reference_pairs", epochs=1, seed=3)
    chosen, rejected = offline_pairs(problem, sft, rm_cfg, cfg)
    assert chosen.shape == (rm_cfg.steps, rm_cfg.batch_pairs)
    assert torch.equal(chosen // problem.vocab_size, rejected // problem.vocab_size)
    # the tokens' frequencies per context are pi_ref's (Monte Carlo over 2 x 12 800 draws)
    counts = torch.bincount(torch.cat([chosen.view(-1), rejected.view(-1)]),
                            minlength=problem.n_contexts * problem.vocab_size).view(problem.n_contexts, -1).float()
    freq = counts / counts.sum(-1, keepdim=True)
    assert float((freq - sft.logp.exp()).abs().max()) < 0.03
    # the chosen token is the better one more often than not, as the annotator prefers it
    true = problem.true_reward.reshape(-1)
    assert float((true[chosen] > true[rejected]).float().mean()) > float((true[chosen] < true[rejected]).float().mean())
    r = train_dpo(problem, sft, rm_cfg, [cfg], upstream.rm.scores)[0]
    sft_reward = float(policy_metrics(sft.logp, problem)["true_reward"])
    assert r.history["true_reward"].iloc[-1] > sft_reward + 0.05
    assert r.history["responses"].iloc[-1] == 2 * rm_cfg.steps * rm_cfg.batch_pairs


def test_online_dpo_learns_and_counts_its_responses(upstream):
    configs = [OnlineDPOConfig(iterations=300, seed=s) for s in range(3)] + [
        OnlineDPOConfig(iterations=100, prompts=8, seed=7)]
    results = train_online_dpo(upstream.problem, upstream.sft, upstream.rm.scores, configs)
    sft = policy_metrics(upstream.sft.logp, upstream.problem, upstream.rm.scores)
    for cfg, r in zip(configs, results):
        assert len(r.history) == cfg.iterations
        assert r.history["responses"].iloc[-1] == cfg.iterations * cfg.prompts * 2
    for r in results[:3]:
        # it optimizes the reward model's scores (and the true reward with them, here)
        rm_best = float(upstream.rm.scores.max(-1).values.mean())
        gain = r.history["rm_reward"].iloc[-1] - float(sft["rm_reward"])
        assert gain > 0.3 * (rm_best - float(sft["rm_reward"]))
        assert r.history["true_reward"].iloc[-1] > float(sft["true_reward"])
    solo = train_online_dpo(upstream.problem, upstream.sft, upstream.rm.scores, [configs[-1]])[0]
    torch.testing.assert_close(solo.final_logp, results[-1].final_logp, atol=1e-5, rtol=1e-5)


def test_offline_dpo_without_the_reward_models_table_reports_no_rm_reward(upstream):
    """train_dpo's rm_table is optional (it only adds the reward model's score to the history):
    without it the runs train and their history and final metrics simply leave rm_reward out."""
    cfg = DPOConfig(seed=0, epochs=1)
    without = train_dpo(upstream.problem, upstream.sft, upstream.rm.config, [cfg])[0]
    with_table = train_dpo(upstream.problem, upstream.sft, upstream.rm.config, [cfg], upstream.rm.scores)[0]
    assert "rm_reward" not in without.history and "rm_reward" not in without.final
    assert "rm_reward" in with_table.history and with_table.final["rm_reward"] == with_table.history["rm_reward"].iloc[-1]
    torch.testing.assert_close(without.final_logp, with_table.final_logp)      # the table changes nothing else
    assert without.final["true_reward"] > float(upstream.sft.logp.exp().mul(upstream.problem.true_reward).sum(-1).mean())
