"""Every knob changes what it should: short real runs, all trained as one batch."""
from __future__ import annotations

import pandas as pd
import pytest
from grpo_core import GRPOConfig, RLVRConfig, run_many


ITER = 150


KNOB_RUNS = {
    "kl0": GRPOConfig(iterations=ITER, kl_coef=0.0),
    "kl1": GRPOConfig(iterations=ITER, kl_coef=1.0),
    "entropy0": GRPOConfig(iterations=ITER),
    "entropy": GRPOConfig(iterations=ITER, entropy_coef=0.5),
    "rlvr": RLVRConfig(iterations=ITER),
    "rlvr_dynamic": RLVRConfig(iterations=ITER, dynamic_sampling=4),
    "reset": GRPOConfig(iterations=90, ref_reset_every=30),
    "mb1": GRPOConfig(iterations=20, epochs=1),
    "mb4": GRPOConfig(iterations=20, epochs=1, minibatches=4),
    "sym_clip": GRPOConfig(iterations=ITER, lr=0.05, epochs=4),
    "clip_higher": GRPOConfig(iterations=ITER, lr=0.05, epochs=4, clip_eps_high=0.5),
    "dual_off": GRPOConfig(iterations=ITER),
    "dual_on": GRPOConfig(iterations=ITER, dual_clip=3.0),
    "kl_loss": GRPOConfig(iterations=ITER, kl_coef=0.5),
    "kl_reward": GRPOConfig(iterations=ITER, kl_coef=0.5, kl_placement="reward"),
    "adv_grpo": GRPOConfig(iterations=ITER),
    "adv_none": GRPOConfig(iterations=ITER, advantage_estimator="none"),
}


@pytest.fixture(scope="module")
def runs(upstream):
    """Each knob's run and its seed-1 twin, all as one batch: {name: [history seed 0, seed 1]}."""
    names = list(KNOB_RUNS)
    configs = [KNOB_RUNS[n].replace(seed=s) for n in names for s in (0, 1)]
    results = run_many(upstream, configs)
    assert not any(r.stopped for r in results)
    return {n: [results[2 * i].history, results[2 * i + 1].history] for i, n in enumerate(names)}


def final(hists, column):
    return sum(float(h[column].iloc[-1]) for h in hists) / len(hists)


def mean(hists, column):
    return sum(float(h[column].mean()) for h in hists) / len(hists)


def test_no_kl_penalty_drifts_further_from_sft(runs):
    assert final(runs["kl0"], "kl_ref") > 2 * final(runs["kl1"], "kl_ref")


def test_entropy_bonus_keeps_entropy_higher(runs):
    assert final(runs["entropy"], "entropy") > 2 * final(runs["entropy0"], "entropy")


def test_dynamic_sampling_leaves_fewer_silent_groups_for_more_samples(runs):
    plain, dynamic = runs["rlvr"], runs["rlvr_dynamic"]
    assert mean(dynamic, "zero_std_frac") < 0.5 * mean(plain, "zero_std_frac")
    per_iteration = lambda h: h.samples.diff().fillna(h.samples.iloc[0])
    for p, d in zip(plain, dynamic):
        assert (per_iteration(p) == 8 * 16).all()
        assert (per_iteration(d) >= 8 * 16).all() and per_iteration(d).mean() > 1.1 * 8 * 16


def test_reference_reset_zeroes_the_batch_kl_but_not_the_kl_to_sft(runs):
    for h in runs["reset"]:
        h = h.set_index("iteration")
        for reset in (30, 60):  # the reset happens before iteration reset + 1 samples
            before, after = h.loc[reset], h.loc[reset + 1]
            assert before.batch_kl > 0.01
            assert after.batch_kl < 0.1 * before.batch_kl
            assert after.kl_ref > 0.8 * before.kl_ref


def test_four_minibatches_take_four_times_the_steps(runs):
    # Adam moves each step by about lr, so four steps per batch travel much further from SFT ...
    assert final(runs["mb4"], "kl_ref") > 3 * final(runs["mb1"], "kl_ref")
    # ... and only later minibatches of a batch see a ratio other than 1 (one epoch): clipping
    # is impossible with one step per batch.
    assert mean(runs["mb1"], "clip_frac") == 0.0


def test_clip_higher_clips_fewer_rising_ratios(runs):
    sym, higher = mean(runs["sym_clip"], "clip_frac_high"), mean(runs["clip_higher"], "clip_frac_high")
    assert sym > 0.002 and higher < 0.6 * sym


def test_dual_clip_is_identical_when_no_ratio_reaches_c(runs):
    for off, on in zip(runs["dual_off"], runs["dual_on"]):
        pd.testing.assert_frame_equal(off, on)


def test_an_exact_kl_in_the_reward_is_removed_by_the_group_baseline(runs):
    """Placed in the reward, the exact KL_c is the same for every response of a group (they share
    the prompt), so the group mean subtracts it: the same beta that holds a run near SFT in the
    loss leaves it drifting as far as the default's weak beta does."""
    loss, reward = final(runs["kl_loss"], "kl_ref"), final(runs["kl_reward"], "kl_ref")
    weak = final(runs["adv_grpo"], "kl_ref")                      # beta 0.05 in the loss
    assert reward > 1.2 * loss and abs(reward - weak) < 0.15 * weak


def test_advantage_estimator_none_takes_smaller_steps_than_grpo(runs):
    """With no baseline and no scale, A = r: the reward model's scores here are ~0.13 in size,
    while std-normalized advantages are of order 1, so plain REINFORCE moves far less from SFT."""
    assert mean(runs["adv_grpo"], "adv_abs") > 1.5 * mean(runs["adv_none"], "adv_abs")
    assert final(runs["adv_none"], "kl_ref") < 0.6 * final(runs["adv_grpo"], "kl_ref")
