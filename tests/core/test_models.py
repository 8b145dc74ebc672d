"""Batched networks and Adam (models.py): hand-written backward passes against autograd, the notebook's layouts, torch.optim.Adam."""
from __future__ import annotations

from tests.helpers import gen

import pytest
import torch
from torch import nn
from grpo_core.models import BatchedAdam, PolicyNet, RewardNet




@pytest.mark.parametrize("n_mem", [1, 4])
def test_policy_net_backward_matches_autograd(n_mem):
    g = gen(3)
    net = PolicyNet(context_dim=8, hidden_dim=16, vocab_size=10)
    theta = torch.stack([net.init(g) for _ in range(n_mem)]).double().requires_grad_(True)
    contexts = torch.randn(5, 8, generator=g, dtype=torch.float64)
    upstream_grad = torch.randn(n_mem, 5, 10, generator=g, dtype=torch.float64)
    x1 = net.inputs(contexts, n_mem)
    logits, _ = net.forward(net.layout.views(theta), x1)
    (expected,) = torch.autograd.grad((logits * upstream_grad).sum(), theta)
    with torch.no_grad():
        params = net.layout.views(theta.detach())
        _, h1 = net.forward(params, x1)
        got = net.backward(params, x1, h1, upstream_grad)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-10)
    # logits() is the same function as forward, and agrees with the nn.Sequential it loads into
    seq = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 10)).double()
    seq.load_state_dict(net.state_dict(theta[-1]))
    torch.testing.assert_close(net.logits(theta.detach(), contexts)[-1], seq(contexts).detach())
    torch.testing.assert_close(net.from_state_dict(net.state_dict(theta[0])), theta[0].detach())   # dtype kept


def test_reward_net_scores_equal_the_concat_formulation(upstream):
    d, h, v = 8, 32, 10
    net = RewardNet(context_dim=d, hidden_dim=h, vocab_size=v)
    contexts = upstream.problem.contexts
    thetas = torch.stack([net.init(gen(4)), upstream.rm.state_dict["theta"]])
    scores = net.scores(thetas, contexts)                                   # (2, C, V)
    for e in range(2):
        p = {k: t[e] for k, t in net.layout.views(thetas).items()}
        embed = nn.Embedding(v, h)
        mlp = nn.Sequential(nn.Linear(d + h, h), nn.ReLU(), nn.Linear(h, 1))
        with torch.no_grad():
            embed.weight.copy_(p["embed"])
            mlp[0].weight.copy_(torch.cat([p["wx"].T, p["we"].T], dim=1))    # acts on [x_c, e_v]
            mlp[0].bias.copy_(p["b1"])
            mlp[2].weight.copy_(p["w2"].unsqueeze(0))
            mlp[2].bias.copy_(p["b2"])
            ctx_ids = torch.arange(5).repeat_interleave(v)
            tok_ids = torch.arange(v).repeat(5)
            notebook = mlp(torch.cat([contexts[ctx_ids], embed(tok_ids)], -1)).squeeze(-1)
        torch.testing.assert_close(scores[e].detach(), notebook.view(5, v), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scores[1], upstream.rm.scores, atol=1e-6, rtol=1e-6)


def test_batched_adam_equals_torch_adam():
    g = gen(5)
    start = torch.randn(3, 20, generator=g)
    lrs = torch.tensor([1e-2, 1e-3, 0.3])
    for lr_vec in (lrs[:1], torch.full((3,), 1e-2), lrs):  # one member; shared lr; per-member lr
        theta = start[:len(lr_vec)].clone()
        opt = BatchedAdam(theta, lr_vec)
        solo = [nn.Parameter(start[e].clone()) for e in range(len(lr_vec))]
        ref = [torch.optim.Adam([p], lr=float(lr)) for p, lr in zip(solo, lr_vec)]
        for _ in range(50):
            grad = torch.randn(len(lr_vec), 20, generator=g) * 3
            opt.step(grad)
            for e, (p, o) in enumerate(zip(solo, ref)):
                p.grad = grad[e].clone()
                o.step()
        assert not torch.allclose(theta, start[:len(lr_vec)], atol=1e-3)   # it did move
        for e, p in enumerate(solo):   # float32: equal up to round-off accumulated over 50 steps
            torch.testing.assert_close(theta[e], p.detach(), atol=1e-5, rtol=1e-5)
            state = ref[e].state[p]
            torch.testing.assert_close(opt.m[e], state["exp_avg"], atol=1e-7, rtol=1e-6)
            torch.testing.assert_close(opt.v[e], state["exp_avg_sq"], atol=1e-7, rtol=1e-6)


def test_batched_adam_inactive_members_stand_still():
    g = gen(6)
    start = torch.randn(3, 12, generator=g)
    lrs = torch.tensor([1e-2, 3e-3, 1e-1])
    theta = start.clone()
    opt = BatchedAdam(theta, lrs)
    solo = [nn.Parameter(start[e].clone()) for e in range(3)]
    ref = [torch.optim.Adam([p], lr=float(lr)) for p, lr in zip(solo, lrs)]
    alone = [start[e:e + 1].clone() for e in range(3)]           # each member's own BatchedAdam
    alone_opt = [BatchedAdam(alone[e], lrs[e:e + 1]) for e in range(3)]
    for step in range(60):
        grad = torch.randn(3, 12, generator=g)
        # all active for the first steps (the fast path), then masks; member 1 sits out often
        active = None if step < 5 else torch.tensor([step % 3 != 0, step % 2 == 0, True])
        before = (theta.clone(), opt.m.clone(), opt.v.clone())
        opt.step(grad, active)
        act = torch.ones(3, dtype=torch.bool) if active is None else active
        for e in range(3):
            if act[e]:
                solo[e].grad = grad[e].clone()
                ref[e].step()
                alone_opt[e].step(grad[e:e + 1])
            else:  # bit for bit unchanged
                assert torch.equal(theta[e], before[0][e])
                assert torch.equal(opt.m[e], before[1][e]) and torch.equal(opt.v[e], before[2][e])
    for e in range(3):
        torch.testing.assert_close(theta[e], solo[e].detach(), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(opt.v[e], ref[e].state[solo[e]]["exp_avg_sq"], atol=1e-7, rtol=1e-6)
        assert int(opt.t[e]) == int(ref[e].state[solo[e]]["step"])
        # the masked path does the solo path's float operations: bit for bit the same
        assert torch.equal(theta[e], alone[e][0]), e


def test_reward_net_backward_matches_autograd():
    gen = torch.Generator().manual_seed(0)
    net = RewardNet(context_dim=6, hidden_dim=16, vocab_size=7)
    theta = torch.stack([net.init(gen) for _ in range(3)])                 # (E, N)
    contexts = torch.randn(4, 6, generator=gen)
    dscores = torch.randn(3, 4, 7, generator=gen)

    leaf = theta.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad((net.scores(leaf, contexts) * dscores).sum(), leaf)

    params = net.layout.views(theta)
    _, hidden = net.forward(params, contexts)
    got = net.backward(params, contexts, hidden, dscores)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
