"""Hand-written backward passes against autograd."""
import torch

from grpo_core.models import RewardNet


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


def test_reward_net_matches_the_concatenated_formulation():
    """r(c, v) = w2 . relu(W [x_c; e_v] + b1) + b2, the notebook's layout, from the same weights."""
    gen = torch.Generator().manual_seed(1)
    net = RewardNet(context_dim=5, hidden_dim=8, vocab_size=6)
    theta = net.init(gen).unsqueeze(0)
    p = {k: v[0] for k, v in net.layout.views(theta).items()}
    contexts = torch.randn(3, 5, generator=gen)
    w1 = torch.cat([p["wx"], p["we"]], dim=0)                              # (D + H, H)
    c, v = torch.meshgrid(torch.arange(3), torch.arange(6), indexing="ij")
    inputs = torch.cat([contexts[c], p["embed"][v]], dim=-1)              # (C, V, D + H)
    expected = torch.relu(inputs @ w1 + p["b1"]) @ p["w2"] + p["b2"]
    torch.testing.assert_close(net.scores(theta, contexts)[0], expected, rtol=1e-5, atol=1e-6)
