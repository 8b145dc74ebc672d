"""The sequence engine: enumeration, exact metrics vs Monte Carlo, batching, learning, length bias."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from grpo_core.config import ConfigError
from grpo_core.sequence import (SeqGRPOConfig, SeqRewardModelConfig, SeqTaskConfig, SeqTrainer,
                                build_seq_upstream, enumerate_responses, sequence_metrics, top_responses,
                                train_seq)
from grpo_core.sequence.policy import sample_responses, sequence_logp
from grpo_core.sequence.rollout import overlong_penalty


@pytest.fixture(scope="module")
def up():
    return build_seq_upstream()


def test_enumeration_lists_every_response_once():
    r = enumerate_responses(3, 4)
    assert r.n == 1 + 3 + 9 + 27 + 81  # k < 4 content tokens then the end token, or 4 cut off
    rows = {tuple(row[:n].tolist()) for row, n in zip(r.tokens, r.length)}
    assert len(rows) == r.n
    assert int(r.truncated.sum()) == 81 and bool((r.length[r.truncated] == 4).all())
    # Any policy table gives probabilities over the responses that sum to 1.
    table = torch.log_softmax(torch.randn(2, 3, 4, 4, 4), -1).flatten(2)
    torch.testing.assert_close(sequence_logp(table, r).exp().sum(-1), torch.ones(2, 3))


def test_hand_written_backward_matches_autograd(up):
    net, task = up.sft.net, up.task
    x = net.inputs(task.contexts)
    theta = up.sft.theta.repeat(3, 1) + 0.1 * torch.randn(3, net.layout.size, generator=torch.Generator().manual_seed(0))
    leaf = theta.clone().requires_grad_(True)
    table = net.logp_table(leaf, x, task.n_contexts)
    dtable = torch.randn_like(table)
    expected, = torch.autograd.grad((table * dtable).sum(), leaf)
    logp, h1 = net.forward(theta, x, task.n_contexts)
    torch.testing.assert_close(net.backward(theta, x, h1, logp, dtable), expected, rtol=1e-4, atol=1e-5)


def _sample_token_by_token(table, task, ctx: int, n: int, gen):
    """Autoregressive sampling from the policy table, one token at a time (no enumeration)."""
    big_l, v = task.config.max_length, task.config.alphabet_size + 1
    probs = table[ctx].view(big_l, v, v).exp()
    end = task.config.alphabet_size
    out = []
    for _ in range(n):
        prev, seq = end, []  # the start token shares the end token's index
        for t in range(big_l):
            tok = int(torch.multinomial(probs[t, prev], 1, generator=gen))
            seq.append(tok)
            if tok == end:
                break
            prev = tok
        out.append(seq)
    return out


@pytest.mark.slow
def test_exact_metrics_match_monte_carlo(up):
    task = up.task
    # A policy away from the reference, so that KL is not ~0.
    theta = up.sft.theta + 0.3 * torch.randn(up.sft.theta.shape, generator=torch.Generator().manual_seed(1))
    table = up.sft.net.logp_table(theta.unsqueeze(0), up.sft.net.inputs(task.contexts), task.n_contexts)[0]
    seq_logp = sequence_logp(table, task.responses)
    exact = sequence_metrics(seq_logp, task, up.sft.seq_logp)
    index = {tuple(row[:n].tolist()): i for i, (row, n) in enumerate(zip(task.responses.tokens, task.responses.length))}
    gen = torch.Generator().manual_seed(2)
    n = 2000
    samples = []  # (ok, length, truncated, log pi - log pi_ref, -log pi)
    for c in range(task.n_contexts):
        for seq in _sample_token_by_token(table, task, c, n, gen):
            i = index[tuple(seq)]
            samples.append((float(task.correct[c, i]), len(seq), float(task.responses.truncated[i]),
                            float(seq_logp[c, i] - up.sft.seq_logp[c, i]), float(-seq_logp[c, i])))
    s = np.array(samples)
    ok, length = s[:, 0], s[:, 1]
    mc = {"reward": ok, "length": length, "p_truncated": s[:, 2], "kl_ref": s[:, 3], "entropy": s[:, 4]}
    for name, values in mc.items():
        se = values.std() / math.sqrt(len(values)) + 1e-9
        assert abs(values.mean() - float(exact[name])) < 4.5 * se + 1e-4, name
    for name, sel in (("length_correct", ok == 1), ("length_wrong", ok == 0)):
        values = length[sel]
        se = values.std() / math.sqrt(len(values))
        assert abs(values.mean() - float(exact[name])) < 4.5 * se, name


def test_whole_response_draws_follow_the_policy(up):
    probs = up.sft.seq_logp.exp().unsqueeze(0)                              # (1, C, N)
    n = 40_000
    gen = torch.Generator().manual_seed(3)
    ctx = torch.randint(0, up.task.n_contexts, (1, n), generator=gen)
    resp = sample_responses(probs, ctx, torch.rand(1, n, generator=gen))
    length = up.task.responses.length[resp[0]].float()
    exact = (probs[0] * up.task.responses.length).sum(-1)[ctx[0]]
    assert abs(float((length - exact).mean())) < 4.5 * float(length.std()) / math.sqrt(n)
    ok = up.task.correct[ctx[0], resp[0]]
    p_ok = (probs[0] * up.task.correct).sum(-1)[ctx[0]]
    assert abs(float((ok - p_ok).mean())) < 4.5 * 0.5 / math.sqrt(n)


def _histories_equal(a, b, exact=True):
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    if exact:
        assert a.equals(b)
    else:
        np.testing.assert_allclose(a.to_numpy(float), b.to_numpy(float), rtol=1e-4, atol=1e-5)


def test_same_config_same_history_bit_for_bit_and_in_pieces(up):
    cfg = SeqGRPOConfig(iterations=70, seed=5)
    first = train_seq(up, [cfg])[0]
    second = train_seq(up, [cfg])[0]
    _histories_equal(first.history, second.history)
    trainer = SeqTrainer(up, [cfg])
    for n in (3, 60, 100):
        trainer.advance(n)
    _histories_equal(first.history, trainer.results()[0].history)


@pytest.mark.slow
def test_members_equal_solo_runs(up):
    configs = [SeqGRPOConfig(iterations=40, seed=1),
               SeqGRPOConfig(iterations=25, seed=2, group_size=4, prompts=5, loss_type="dr_grpo"),
               SeqGRPOConfig(iterations=40, seed=3, loss_type="luspo", importance_sampling_level="sequence",
                             epochs=2, minibatches=2, kl_coef=0.1, lr=3e-3),
               SeqGRPOConfig(iterations=30, seed=4, loss_type="cispo", epochs=3, mask_truncated=True,
                             overlong_buffer=2, entropy_coef=0.01, kl_estimator="exact", kl_coef=0.05),
               SeqGRPOConfig(iterations=30, seed=5, kl_placement="reward", kl_coef=0.2, kl_estimator="k1",
                             advantage_estimator="rloo", dual_clip=3.0, clip_eps_high=0.28, epochs=2),
               SeqGRPOConfig(iterations=35, seed=6, dynamic_sampling=2, ref_reset_every=10, kl_coef=0.1,
                             lr=5e-3)]
    together = train_seq(up, configs)
    for cfg, res in zip(configs, together):
        alone = train_seq(up, [cfg])[0]
        assert len(res.history) == cfg.iterations
        _histories_equal(res.history, alone.history, exact=False)


def test_training_learns_and_logs_exact_metrics(up):
    res = train_seq(up, [SeqGRPOConfig(iterations=100, seed=0)])[0]
    h = res.history
    sft = sequence_metrics(up.sft.seq_logp, up.task, up.sft.seq_logp)
    assert h["reward"].iloc[-1] > float(sft["reward"]) + 0.15
    assert h["kl_ref"].iloc[-1] > 0.01 and h["entropy"].iloc[-1] < float(sft["entropy"])
    assert h["grad_cosine"].iloc[:10].mean() > 0.2       # the batch gradient points uphill
    assert set(["length", "length_correct", "length_wrong", "p_truncated", "clip_frac_token",
                "clip_frac_seq"]) <= set(h.columns)
    assert res.final["reward"] == pytest.approx(h["reward"].iloc[-1])
    top = top_responses(res.final_logp, up.task, k=3)
    assert len(top) == 3 * up.task.n_contexts and top["prob"].between(0, 1).all()
    best = top[top["rank"] == 1]
    assert best["correct"].mean() >= 0.6  # the trained policy's favourite answers are right
    answers = up.task.answer.tolist()
    right = best[best["correct"]]
    assert all(r.startswith("abc"[answers[c]]) for r, c in zip(right["response"], right["context"]))


def test_clipping_is_counted_off_policy(up):
    res = train_seq(up, [SeqGRPOConfig(iterations=20, epochs=4, lr=1e-2, clip_eps=0.05)])[0]
    assert res.history["clip_frac_token"].mean() > 0
    assert (res.history["clip_frac_seq"] >= res.history["clip_frac_token"] - 1e-6).all()


def test_dynamic_sampling_redraws_groups_without_signal(up):
    base = SeqGRPOConfig(iterations=60, seed=0, lr=5e-3)
    plain, dynamic = train_seq(up, [base, base.replace(dynamic_sampling=4)])
    late = slice(30, 60)
    assert dynamic.history["zero_std_frac"].iloc[late].mean() < plain.history["zero_std_frac"].iloc[late].mean()
    assert dynamic.history["samples"].iloc[-1] > plain.history["samples"].iloc[-1] == 60 * 64


def test_overlong_penalty_is_dapos_soft_punishment():
    length = torch.arange(1, 7)
    torch.testing.assert_close(overlong_penalty(length, 6, 2, 1.0),
                               torch.tensor([0.0, 0.0, 0.0, 0.0, -0.5, -1.0]))
    assert bool((overlong_penalty(length, 6, 0, 1.0) == 0).all())


def test_overlong_punishment_and_masking_change_truncation(up):
    base = SeqGRPOConfig(iterations=80, seed=0, lr=5e-3)
    plain, punished = train_seq(up, [base, base.replace(overlong_buffer=3, overlong_factor=2.0)])
    assert punished.history["length"].iloc[-1] < plain.history["length"].iloc[-1]
    assert punished.history["p_truncated"].iloc[-1] <= plain.history["p_truncated"].iloc[-1]


def test_luspo_needs_sequence_ratios():
    with pytest.raises(ConfigError, match="importance_sampling_level"):
        SeqGRPOConfig(loss_type="luspo")
    with pytest.raises(ConfigError, match="max_length"):
        SeqTaskConfig(alphabet_size=6, max_length=8)


@pytest.mark.slow
def test_learned_reward_model_ranks_correct_responses_and_likes_length():
    up = build_seq_upstream(rm_cfg=SeqRewardModelConfig())
    scores, task = up.rm.scores, up.task
    assert up.rm.pairwise_accuracy > 0.8
    finished = ~task.responses.truncated
    length = task.responses.length.float()[finished]
    corr = np.corrcoef(length.numpy(), scores[:, finished].mean(0).numpy())[0, 1]
    assert corr > 0.3  # the labelers' length bias, learned
    res = train_seq(up, [SeqGRPOConfig(iterations=150, reward="reward_model", seed=0)])[0]
    h = res.history
    assert h["rm_reward"].iloc[-1] > h["rm_reward"].iloc[0]
    assert h["length"].iloc[-1] > h["length"].iloc[0] + 0.3  # reward hacking through length


@pytest.mark.slow
def test_length_bias_direction_grpo_vs_dr_grpo(up):
    """Dr. GRPO: grpo's 1/|y| lets wrong answers grow longer relative to right ones; dr_grpo's
    constant normalizer does not. On the defaults, 8 seeds each, mean over seeds.

    What holds on this task (measured, 200 iterations, 8 seeds): E[len | wrong] grows more under
    grpo (+0.33) than under dr_grpo (+0.15), and the wrong-minus-right gap opens under grpo only.
    It is not true here that dr_grpo leaves E[len | wrong] unchanged at G = 8: both losses also
    lengthen every response (dr_grpo: right +0.19, wrong +0.15). That common drift is not in the
    exact gradient: Adam on the exact gradient of the expected reward (no sampling) shortens
    every response (E|y| 4.14 -> 2.70 in 200 steps, through the network the first token shares
    with the end token). It comes from sampling noise in the free continuation, and shrinks with
    larger groups: at G = 16 dr_grpo's E[len | wrong] moves by -0.006 while grpo's grows +0.41;
    with hidden_dim 128 both grow. So the test asserts the
    differential, which is the Dr. GRPO claim, not the absolute no-change."""
    seeds = range(8)
    runs = train_seq(up, [SeqGRPOConfig(loss_type=t, seed=s) for t in ("grpo", "dr_grpo") for s in seeds])
    def change(rs, col):
        return float(np.mean([r.history[col].iloc[-1] - r.history[col].iloc[0] for r in rs]))
    grpo, dr = runs[:8], runs[8:]
    gap = lambda rs: change(rs, "length_wrong") - change(rs, "length_correct")
    assert change(grpo, "length_wrong") > change(dr, "length_wrong")
    assert gap(grpo) > 0.1           # wrong answers grew longer than right ones under grpo
    assert abs(gap(dr)) < 0.5 * gap(grpo)
