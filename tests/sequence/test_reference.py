"""The batched sequence engine is the reference implementation (grpo_core/reference/sequence.py):
the same history, final policy over every response and weights, for every loss_type, GSPO's
sequence ratios, CISPO, KL placements and estimators, entropy, masking, dynamic sampling,
minibatches and the reward model. In float64, as tests/core/test_reference.py explains."""
from __future__ import annotations

import pytest
import torch

from grpo_core.reference import sequence as reference
from grpo_core.sequence import LOSS_TYPES, SeqGRPOConfig, SeqRewardModelConfig, build_seq_upstream, train_seq
from tests.helpers import assert_histories_close, assert_same_run, float64

pytestmark = pytest.mark.slow

CASES = {"defaults": SeqGRPOConfig(),
         **{f"loss_{t}": SeqGRPOConfig(iterations=30, loss_type=t) for t in LOSS_TYPES if t != "luspo"},
         "loss_luspo": SeqGRPOConfig(iterations=30, loss_type="luspo", importance_sampling_level="sequence"),
         "gspo_epochs_minibatches": SeqGRPOConfig(iterations=30, importance_sampling_level="sequence", epochs=3,
                                                  minibatches=2),
         "dapo_minibatches": SeqGRPOConfig(iterations=30, loss_type="dapo", minibatches=4, epochs=2, lr=0.01),
         "cispo_capped": SeqGRPOConfig(iterations=30, loss_type="cispo", cispo_cap=1.05, epochs=2, lr=0.05),
         "masked_truncation_overlong_k3": SeqGRPOConfig(iterations=30, mask_truncated=True, overlong_buffer=2,
                                                        kl_coef=0.1),
         "exact_kl_entropy": SeqGRPOConfig(iterations=30, kl_coef=0.1, kl_estimator="exact", entropy_coef=0.02),
         "kl_k1_in_the_reward": SeqGRPOConfig(iterations=30, kl_coef=0.1, kl_placement="reward", kl_estimator="k1"),
         "dynamic_sampling_dual_clip": SeqGRPOConfig(iterations=30, dynamic_sampling=3, dual_clip=3.0,
                                                     clip_eps_high=0.3, epochs=2),
         "reward_model_rloo_reset": SeqGRPOConfig(iterations=30, reward="reward_model", advantage_estimator="rloo",
                                                  ref_reset_every=10, kl_coef=0.05),
         "dr_grpo_estimator_small_groups": SeqGRPOConfig(iterations=30, advantage_estimator="dr_grpo",
                                                         group_size=4, prompts=3)}


@pytest.fixture(scope="module")
def up64():
    with float64():
        return build_seq_upstream(rm_cfg=SeqRewardModelConfig())


@pytest.mark.parametrize("name", list(CASES))
def test_the_engine_equals_the_reference(up64, name):
    cfg = CASES[name]
    with float64():
        ref, engine = reference.train(up64, cfg), train_seq(up64, [cfg])[0]
    assert engine.final_logp.dtype == torch.float64 and engine.status == ""
    assert_same_run(ref, engine, atol=1e-5)


def test_in_float32_the_defaults_agree_to_round_off():
    up, cfg = build_seq_upstream(), SeqGRPOConfig(iterations=60)
    ref, engine = reference.train(up, cfg), train_seq(up, [cfg])[0]
    assert (ref.history["batch_reward"] == engine.history["batch_reward"]).all()     # the same draws
    assert_histories_close(ref.history, engine.history, atol=1e-4)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_the_code_marks_one_aggregation_per_loss_type(loss_type):
    from grpo_core.reference import TAKEN, annotated_source
    text, found = annotated_source(reference, SeqGRPOConfig(loss_type=loss_type, importance_sampling_level="sequence"))
    start = next(i for i, line in enumerate(text.splitlines(), 1) if "token_sum, b =" in line)
    taken = [c for c in found if c.taken and c.line > start]            # the aggregation's chain
    assert len(taken) == 1, taken
    line = text.splitlines()[taken[0].line - 1]
    assert TAKEN in line and (loss_type in line or taken[0].code == "else")
