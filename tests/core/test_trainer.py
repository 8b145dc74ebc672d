"""The batched trainer (trainer.py, engine.py): members equal their solo runs, resumable, chunk-independent, reproducible, divergence kept per member."""
from __future__ import annotations

from tests.helpers import EXACT, assert_all_finite, gen, sequential

import pandas as pd
import torch
from grpo_core import GRPOConfig, GRPOTrainer, RLVRConfig, run_many
import numpy as np
import pytest
from grpo_core import (RunResult, policy_metrics, reference_metrics,
                       seed_configs)
import grpo_core
from grpo_core import (ProblemConfig, RewardModelConfig, SFTConfig, train_grpo)


def test_advancing_in_pieces_equals_one_call(upstream):
    configs = [GRPOConfig(iterations=150, seed=2), RLVRConfig(iterations=100, seed=5, group_size=4)]
    whole = run_many(upstream, configs)
    trainer = GRPOTrainer(upstream.problem, upstream.sft, upstream.rm.scores, configs)
    for n in (1, 7, 60, 13):
        trainer.advance(n)
        partial = trainer.results()
        assert [len(r.history) for r in partial] == [min(trainer.iteration, c.iterations) for c in configs]
        assert all(r.stopped for r in partial)                    # not finished yet, and says so
    trainer.advance()
    assert trainer.finished
    for a, b in zip(whole, trainer.results()):
        assert a.history.equals(b.history)
        assert torch.equal(a.final_logp, b.final_logp)
        assert not b.stopped


def test_a_shorter_run_is_a_prefix_of_a_longer_one(upstream):
    long = run_many(upstream, [GRPOConfig(iterations=100, seed=4)])[0]
    short = run_many(upstream, [GRPOConfig(iterations=37, seed=4)])[0]
    assert short.history.equals(long.history.iloc[:37])


def test_stop_keeps_what_is_done(upstream):
    trainer = GRPOTrainer(upstream.problem, upstream.sft, upstream.rm.scores, [GRPOConfig(iterations=80)])
    trainer.advance(30)
    trainer.stop()
    assert trainer.advance() == 30 and trainer.finished
    (run,) = trainer.results()
    assert len(run.history) == 30 and "30 of 80" in run.stopped


def test_draws_do_not_depend_on_how_iterations_are_chunked():
    from grpo_core.sampling import draw_iterations, generator
    at_once = draw_iterations(generator(3), 5, 4, 3, 7, 5)
    gen = generator(3)
    one_by_one = [draw_iterations(gen, 1, 4, 3, 7, 5) for _ in range(5)]
    for whole, pieces in zip(at_once, zip(*one_by_one)):
        assert torch.equal(whole, torch.cat(pieces))
    prompts, u = at_once
    assert prompts.shape == (5, 4, 3) and u.shape == (5, 4, 3, 7)
    assert int(prompts.min()) >= 0 and int(prompts.max()) <= 4 and len(prompts.unique()) == 5


def test_a_memory_sized_chunk_changes_nothing(upstream, monkeypatch):
    """Chunks of one iteration and dynamic-sampling tries scored one at a time (as the largest
    requests get) give the same runs as chunks of 64 and all tries at once."""
    from grpo_core import layout, rollout
    configs = [GRPOConfig(iterations=40, seed=1, dynamic_sampling=3, prompts=4, group_size=4),
               RLVRConfig(iterations=30, seed=2, minibatches=2, kl_placement="reward", kl_estimator="k3")]
    default = GRPOTrainer(upstream.problem, upstream.sft, upstream.rm.scores, configs)
    assert default.chunk == layout.MAX_CHUNK
    default.advance()
    monkeypatch.setattr(layout, "DRAW_BYTES", 1)
    monkeypatch.setattr(rollout, "TRY_BYTES", 1)
    small = GRPOTrainer(upstream.problem, upstream.sft, upstream.rm.scores, configs)
    assert small.chunk == 1
    small.advance()
    for a, b in zip(default.results(), small.results()):
        assert a.history.equals(b.history)
        assert torch.equal(a.final_logp, b.final_logp)


def test_the_largest_seed_works_with_every_seed_count(upstream):
    from grpo_core import seed_configs
    top = 2**31 - 1
    configs = seed_configs(GRPOConfig(seed=top, iterations=3, prompts=2, group_size=2), 64)
    assert [c.seed for c in configs[:3]] == [top, 0, 1] and configs[-1].seed == 62
    results = run_many(upstream, configs)
    assert [len(r.history) for r in results] == [3] * 64
    # a wrapped seed is the run that seed gives when asked for directly
    direct = run_many(upstream, [GRPOConfig(seed=top, iterations=3, prompts=2, group_size=2),
                                 GRPOConfig(seed=0, iterations=3, prompts=2, group_size=2)])
    for run, same in zip(direct, results[:2]):   # equal to batch round-off
        pd.testing.assert_frame_equal(run.history, same.history, check_exact=False, atol=1e-5, rtol=1e-4)
    assert not direct[0].history["batch_reward"].equals(direct[1].history["batch_reward"])


ATOL = 1e-5


def assert_same_run(together: RunResult, alone: RunResult):
    assert together.config == alone.config
    assert list(together.history.columns) == list(alone.history.columns)
    assert len(together.history) == len(alone.history) == together.config.iterations
    pd.testing.assert_frame_equal(together.history, alone.history, check_exact=False,
                                  atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(together.final_logp, alone.final_logp, atol=ATOL, rtol=1e-4)
    pd.testing.assert_frame_equal(together.per_context, alone.per_context, check_exact=False,
                                  atol=ATOL, rtol=1e-4)
    assert together.stopped == alone.stopped == ""


MIXED = [GRPOConfig(seed=7, iterations=60), GRPOConfig(seed=3, iterations=60, group_size=4),
         RLVRConfig(seed=7, iterations=40),
         GRPOConfig(seed=11, iterations=60, prompts=3, lr=3e-3, epochs=3, clip_eps=0.1, kl_coef=0.0)]


def test_mixed_members_equal_their_solo_runs(upstream):
    together = run_many(upstream, MIXED)
    assert len(together) == len(MIXED)
    for cfg, run in zip(MIXED, together):
        (alone,) = run_many(upstream, [cfg])
        assert_same_run(run, alone)
    # the members really are different runs
    assert not np.allclose(together[0].history["true_reward"], together[1].history["true_reward"])


def test_seed_is_the_same_alone_and_among_sixteen(upstream):
    configs = seed_configs(GRPOConfig(seed=0, iterations=60), 16)
    assert [c.seed for c in configs] == list(range(16))
    together = run_many(upstream, configs)
    (alone,) = run_many(upstream, [GRPOConfig(seed=7, iterations=60)])
    assert together[7].config == alone.config
    assert_same_run(together[7], alone)
    finals = torch.stack([r.final_logp for r in together])
    assert len({tuple(f.flatten().tolist()) for f in finals}) == 16   # sixteen distinct runs


# Members that differ in the loss and sampling options: minibatches, dynamic sampling,
# advantage estimators, KL estimators and placement, reference resets, clip variants.
OPTIONS = [
    GRPOConfig(seed=5, iterations=40, minibatches=2, advantage_estimator="rloo"),
    GRPOConfig(seed=6, iterations=50, dynamic_sampling=3, kl_estimator="k3", group_size=4),
    GRPOConfig(seed=7, iterations=30, kl_placement="reward", ref_reset_every=10, prompts=4,
               minibatches=4, kl_coef=0.2),
    RLVRConfig(seed=8, iterations=45, advantage_estimator="dr_grpo", clip_eps_high=0.3,
               dual_clip=2.0, entropy_coef=0.01, epochs=2),
    GRPOConfig(seed=9, iterations=35, advantage_estimator="batch_std", kl_estimator="k2",
               lr=5e-3, epochs=3),
    RLVRConfig(seed=10, iterations=25, advantage_estimator="none", kl_coef=0.0, group_size=8),
]


def test_members_with_different_options_equal_their_solo_runs(upstream):
    together = run_many(upstream, OPTIONS)
    for cfg, run in zip(OPTIONS, together):
        (alone,) = run_many(upstream, [cfg])
        assert_same_run(run, alone)


@pytest.mark.parametrize("configs", [
    # the second member takes one step per batch, the first two: the second's values at the step
    # it sits out overflow (k3 after a step of lr 1) and must not count
    [GRPOConfig(iterations=1, prompts=1, group_size=2, lr=1.0, kl_coef=0.0, clip_eps=1.0, epochs=2),
     GRPOConfig(iterations=1, prompts=1, group_size=2, lr=1.0, kl_coef=1.0, clip_eps=1.0, epochs=1,
                kl_estimator="k3")],
    # a member with no KL penalty but kl_estimator k3, next to one with a KL: it estimates nothing
    [RLVRConfig(iterations=12, prompts=4, group_size=9, lr=0.15, kl_coef=1e-300, clip_eps=0.05, epochs=3,
                seed=4048318, advantage_estimator="none", kl_estimator="k3", clip_eps_high=0.97,
                dual_clip=6.5, minibatches=3, ref_reset_every=3),
     GRPOConfig(iterations=12)],
])
def test_a_batchmate_cannot_make_a_member_diverge(upstream, configs):
    together = run_many(upstream, configs)
    for cfg, run in zip(configs, together):
        (alone,) = run_many(upstream, [cfg])
        assert alone.status == run.status == "" and len(run.history) == cfg.iterations
        assert_same_run(run, alone)


def test_same_config_same_history_regardless_of_global_rng(upstream):
    configs = [GRPOConfig(seed=5, iterations=40), RLVRConfig(seed=5, iterations=30)]
    with torch.random.fork_rng():      # the global RNG is restored afterwards
        first = train_grpo(upstream.problem, upstream.sft, upstream.rm.scores, configs)
        torch.rand(17)
        torch.manual_seed(123)
        torch.rand(3)
        second = train_grpo(upstream.problem, upstream.sft, upstream.rm.scores, configs)
        torch.manual_seed(999)
        small = dict(sft=SFTConfig(epochs=3), rm=RewardModelConfig(steps=30))
        up_a = grpo_core.build_upstream(ProblemConfig(), small["sft"], small["rm"])
        torch.rand(5)
        up_b = grpo_core.build_upstream(ProblemConfig(), small["sft"], small["rm"])
    for a, b in zip(first, second):
        assert a.history.equals(b.history)
        assert torch.equal(a.final_logp, b.final_logp)
        assert a.per_context.equals(b.per_context)
        assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert up_a.sft.history.equals(up_b.sft.history) and torch.equal(up_a.sft.logp, up_b.sft.logp)
    assert up_a.rm.history.equals(up_b.rm.history) and torch.equal(up_a.rm.scores, up_b.rm.scores)


def test_different_seeds_draw_different_batches_and_both_learn(upstream):
    """A seed owns its draws: two seeds sample different groups (their sampled batch rewards
    differ in most iterations), yet both raise the exact reward-model reward above SFT's."""
    a, b = train_grpo(upstream.problem, upstream.sft, upstream.rm.scores,
                      [GRPOConfig(seed=0, iterations=60), GRPOConfig(seed=1, iterations=60)])
    assert (a.history["batch_reward"] != b.history["batch_reward"]).mean() > 0.9
    sft = float(reference_metrics(upstream)["rm_reward"])
    assert a.final["rm_reward"] > sft + 0.025 and b.final["rm_reward"] > sft + 0.025   # -0.033 -> ~0.015


def test_aggressive_run_on_huge_rewards_stays_finite(upstream):
    table = 1e6 * torch.rand(5, 10, generator=gen(7))
    cfg = GRPOConfig(lr=1.0, kl_coef=0.0, clip_eps=1.0, epochs=16, iterations=40)
    runs = train_grpo(upstream.problem, upstream.sft, table, [cfg.replace(seed=s) for s in range(2)])
    for run in runs:
        assert_all_finite(run.history)
        assert torch.isfinite(run.final_logp).all()
        if run.stopped:
            assert len(run.history) < cfg.iterations
        else:
            assert len(run.history) == cfg.iterations
        # the policy this violent run ends with is a proper distribution
        torch.testing.assert_close(run.final_logp.exp().sum(-1), torch.ones(5))


def test_a_diverging_member_stops_at_its_last_finite_iteration(upstream):
    """Force divergence: a NaN reward on one token; sampling it poisons that member's update."""
    sft_probs = upstream.sft.logp.exp()
    c, v = divmod(int((sft_probs - 0.005).abs().argmin()), 10)  # a token of probability ~0.5%
    table = upstream.rm.scores.clone()
    table[c, v] = float("nan")
    configs = [GRPOConfig(seed=0, iterations=120), RLVRConfig(seed=0, iterations=50)]
    bad, rlvr = train_grpo(upstream.problem, upstream.sft, table, configs)
    assert bad.stopped and "non-finite" in bad.stopped, bad.stopped
    n = len(bad.history)
    assert 0 < n < 120 and f"after {n} of 120" in bad.stopped
    assert_all_finite(bad.history.drop(columns="rm_reward"))   # the NaN is in the reward table
    assert torch.isfinite(bad.final_logp).all()
    assert all(torch.isfinite(t).all() for t in bad.state_dict.values())
    # the final policy is the one after the last kept iteration
    final = policy_metrics(bad.final_logp, upstream.problem, ref_logp=upstream.sft.logp)
    assert float(final["true_reward"]) == pytest.approx(bad.history["true_reward"].iloc[-1], abs=1e-6)
    with torch.no_grad():
        logp = torch.log_softmax(sequential(bad.state_dict)(upstream.problem.contexts), -1)
    torch.testing.assert_close(logp, bad.final_logp, atol=1e-5, rtol=1e-5)
    # the other member of the batch is untouched
    (solo,) = train_grpo(upstream.problem, upstream.sft, table, configs[1:])
    assert rlvr.stopped == "" and len(rlvr.history) == 50
    pd.testing.assert_frame_equal(rlvr.history, solo.history, atol=1e-5, rtol=1e-5)


def test_on_iteration_false_stops_every_run(upstream):
    configs = [GRPOConfig(seed=2, iterations=30), RLVRConfig(seed=2, iterations=30),
               GRPOConfig(seed=3, iterations=8, group_size=4)]
    args = (upstream.problem, upstream.sft, upstream.rm.scores, configs)
    calls = []

    def stop_at_12(done, total):
        calls.append((done, total))
        return done < 12

    stopped = train_grpo(*args, on_iteration=stop_at_12)
    assert calls == [(i, 30) for i in range(1, 13)]
    full = train_grpo(*args, on_iteration=lambda done, total: None)
    for s, f in zip(stopped[:2], full[:2]):
        assert len(s.history) == 12
        assert "12" in s.stopped and "30" in s.stopped
        pd.testing.assert_frame_equal(s.history, f.history.iloc[:12], check_exact=True)
    # a member that finished before the stop is complete and not marked stopped
    short_s, short_f = stopped[2], full[2]
    assert short_s.stopped == "" and len(short_s.history) == 8
    assert short_s.history.equals(short_f.history)
    assert torch.equal(short_s.final_logp, short_f.final_logp)
    # the stopped result's policy is the one after its last kept iteration
    for s in stopped[:2]:
        final = policy_metrics(s.final_logp, upstream.problem, upstream.rm.scores, upstream.sft.logp)
        for k in EXACT:
            assert float(final[k]) == pytest.approx(s.history[k].iloc[-1], abs=1e-6)
