"""The batched one-token engine is the reference implementation (grpo_core/reference/grpo.py): the
same history, final policy and weights, at the defaults and over a spread of knobs.

Both run in float64 here (tests.helpers.float64): the engine's hand-written gradient and the
reference's autograd round float32 differently, and Adam's first steps amplify that round-off
(a gradient component of 1e-11 becomes a step of lr * 1e-3), so in float32 the two agree to
round-off, not to 1e-5; in float64 they agree to better than 1e-6 at every knob.
"""
from __future__ import annotations

import ast
import inspect

import pytest
import torch

from grpo_core import GRPOConfig, RLVRConfig, build_upstream, run_many
from grpo_core.reference import grpo as reference
from tests.helpers import assert_histories_close, assert_same_run, float64

pytestmark = pytest.mark.slow

CASES = {
    "grpo_defaults": GRPOConfig(),
    "rlvr_defaults": RLVRConfig(),
    "dynamic_sampling": GRPOConfig(iterations=120, dynamic_sampling=4, reward="verifiable"),
    "minibatches_epochs": GRPOConfig(iterations=120, minibatches=4, epochs=3),
    "kl_k1_in_the_reward": GRPOConfig(iterations=120, kl_placement="reward", kl_estimator="k1", kl_coef=0.2),
    "kl_exact_in_the_reward": GRPOConfig(iterations=110, advantage_estimator="none", kl_placement="reward"),
    "kl_k3": GRPOConfig(iterations=120, kl_estimator="k3", kl_coef=0.3),
    "kl_k2_entropy": GRPOConfig(iterations=120, kl_estimator="k2", kl_coef=0.3, entropy_coef=0.05),
    "reset_dual_clip_clip_higher": GRPOConfig(iterations=120, ref_reset_every=30, dual_clip=3.0,
                                              clip_eps_high=0.28, epochs=4),
    "dr_grpo_small_groups": GRPOConfig(iterations=120, advantage_estimator="dr_grpo", group_size=4, prompts=5),
    "batch_std_high_lr": GRPOConfig(iterations=90, advantage_estimator="batch_std", lr=1e-2),
    "rloo_no_kl": GRPOConfig(iterations=100, advantage_estimator="rloo", kl_coef=0.0),
}


@pytest.fixture(scope="module")
def up64():
    with float64():
        return build_upstream()


@pytest.mark.parametrize("name", list(CASES))
def test_the_engine_equals_the_reference(up64, name):
    cfg = CASES[name]
    with float64():
        ref, engine = reference.train(up64, cfg), run_many(up64, [cfg])[0]
    assert engine.final_logp.dtype == torch.float64 and engine.status == ""
    assert_same_run(ref, engine, atol=1e-5)


def test_in_float32_the_defaults_agree_to_round_off(upstream):
    """The app's own precision: the same samples, the same trajectory, to float32 round-off
    amplified by Adam (measured: 8e-5 in entropy after 500 iterations)."""
    ref, engine = reference.train(upstream, GRPOConfig()), run_many(upstream, [GRPOConfig()])[0]
    assert (ref.history["batch_reward"] == engine.history["batch_reward"]).mean() > 0.95   # same draws
    assert_histories_close(ref.history, engine.history, atol=1e-3)


def test_the_reference_keeps_the_last_finite_policy_when_a_reward_is_not_finite(upstream):
    """As the engine does (test_trainer): a NaN reward on one token ends the run there."""
    table = upstream.rm.scores.clone()
    c, v = divmod(int((upstream.sft.logp.exp() - 0.005).abs().argmin()), 10)   # a token of ~0.5%
    table[c, v] = float("nan")
    up = type(upstream)(upstream.problem, upstream.sft, type(upstream.rm)(
        upstream.rm.problem_config, upstream.rm.config, upstream.rm.history, upstream.rm.state_dict, table))
    cfg = GRPOConfig(seed=0, iterations=120)
    ref, engine = reference.train(up, cfg), run_many(up, [cfg])[0]
    assert ref.status == engine.status == "diverged"
    assert ref.completed_iterations == engine.completed_iterations < 120
    assert torch.isfinite(ref.final_logp).all()


@pytest.mark.parametrize("estimator", ["grpo", "dr_grpo", "batch_std", "rloo", "none"])
def test_the_code_marks_the_branch_each_setting_takes(estimator):
    """annotated_source marks exactly the branches a config takes, on their own lines."""
    from grpo_core.reference import SKIPPED, TAKEN, annotated_source, choices
    cfg = GRPOConfig(advantage_estimator=estimator, dual_clip=2.0 if estimator == "rloo" else 0.0)
    text, found = annotated_source(reference, cfg)
    lines = text.splitlines()
    advantage = [c for c in found if "advantage_estimator" in c.settings and c.taken]
    assert len(advantage) == 1
    taken_line = lines[advantage[0].line - 1]
    assert TAKEN in taken_line and (estimator in taken_line or "else" in taken_line)
    dual = next(c for c in found if c.code == "cfg.dual_clip > 0")
    assert dual.taken == (cfg.dual_clip > 0) and (TAKEN if dual.taken else SKIPPED) in lines[dual.line - 1]
    # the marks are comments: the annotated text is still the same program
    assert ast.dump(ast.parse(text)) == ast.dump(ast.parse(inspect.getsource(reference)))
    assert all(not c.taken or TAKEN in lines[c.line - 1] for c in choices(reference, cfg))
