"""End to end: the trainer's parameter gradient equals autograd through a plain nn.Module policy of
the loss written per response from the formulas, on the samples the trainer drew."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from grpo_core.sequence import SeqGRPOConfig, SeqTrainer, build_seq_upstream
from grpo_core.sequence.naive import naive_policy
from .test_losses import _reference_loss


@pytest.fixture(scope="module")
def up():
    return build_seq_upstream()


def _token_logp(model, task, ctx: int, tokens, length):
    """Per-token log-probs (L,) of one response, one forward per position (zeros past the end)."""
    big_l, a = task.config.max_length, task.config.alphabet_size
    out = []
    prev = a
    for t in range(big_l):
        x = torch.cat([task.contexts[ctx], F.one_hot(torch.tensor(t), big_l).float(),
                       F.one_hot(torch.tensor(prev), a + 1).float()])
        lp = F.log_softmax(model(x), -1)[tokens[t]]
        out.append(lp if t < length else lp * 0)
        prev = int(tokens[t])
    return torch.stack(out)


def _flat_grad(model) -> torch.Tensor:
    """The nn.Module's gradient in the engine's flat layout ([W1^T; b1], [W2^T; b2])."""
    l1 = torch.cat([model[0].weight.grad.T, model[0].bias.grad.unsqueeze(0)])
    l2 = torch.cat([model[2].weight.grad.T, model[2].bias.grad.unsqueeze(0)])
    return torch.cat([l1.reshape(-1), l2.reshape(-1)])


@pytest.mark.slow
@pytest.mark.parametrize("settings", [
    dict(),
    dict(loss_type="dr_grpo", epochs=2, lr=0.05, clip_eps=0.1),
    dict(loss_type="grpo", importance_sampling_level="sequence", epochs=2, lr=0.05, clip_eps=0.05),
    dict(loss_type="luspo", importance_sampling_level="sequence", epochs=2, lr=0.05),
    dict(loss_type="cispo", epochs=2, lr=0.05, cispo_cap=1.05),
    dict(loss_type="bnpo", epochs=2, lr=0.05, kl_coef=0.2, kl_estimator="k3", dual_clip=2.0),
], ids=lambda s: "-".join(map(str, s.values())) or "defaults")
def test_trainer_gradient_equals_per_response_autograd(up, settings, monkeypatch):
    cfg = SeqGRPOConfig(iterations=1, prompts=3, group_size=4, seed=3, **settings)
    trainer = SeqTrainer(up, [cfg])
    drawn, steps = {}, []
    from grpo_core.sequence import trainer as trainer_module
    sample = trainer_module.sample_groups
    monkeypatch.setattr(trainer_module, "sample_groups", lambda *a: drawn.setdefault("batch", sample(*a)))
    step = trainer.opt.step
    def record(grad, active=None):
        steps.append((trainer.theta[0].clone(), grad[0].clone()))
        step(grad, active)
    trainer.opt.step = record
    trainer.advance(1)
    ctx, resp, rewards, _ = drawn["batch"]
    task, responses = up.task, up.task.responses
    ctx, resp, rewards = ctx[0], resp[0], rewards[0]
    r = rewards.view(cfg.prompts, cfg.group_size)
    std = r.std(1, keepdim=True)
    adv = torch.where(std > 0, (r - r.mean(1, keepdim=True)) / (std + 1e-8), 0.0).flatten()
    mask = responses.mask[resp].float()
    old_model = naive_policy(up, steps[0][0])
    with torch.no_grad():
        old = torch.stack([_token_logp(old_model, task, int(c), responses.tokens[n], int(responses.length[n]))
                           for c, n in zip(ctx, resp)])
        ref_model = naive_policy(up)
        ref = torch.stack([_token_logp(ref_model, task, int(c), responses.tokens[n], int(responses.length[n]))
                           for c, n in zip(ctx, resp)])
    assert len(steps) == cfg.epochs
    for theta, grad in steps:
        model = naive_policy(up, theta)
        new = torch.stack([_token_logp(model, task, int(c), responses.tokens[n], int(responses.length[n]))
                           for c, n in zip(ctx, resp)])
        loss = _reference_loss(new, old, ref, adv, mask, cfg, float(mask.sum()), task.config.max_length)
        loss.backward()
        torch.testing.assert_close(grad, _flat_grad(model), rtol=2e-4, atol=2e-6)
