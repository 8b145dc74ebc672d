"""The resumable trainer: advancing in pieces equals one call, and a shorter run is a prefix."""
import pandas as pd
import torch

from grpo_core import GRPOConfig, GRPOTrainer, RLVRConfig, run_many


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
