"""The resumable trainer: advancing in pieces equals one call, and a shorter run is a prefix."""
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
