"""Advantage estimators (advantages.py): hand-computed batches, masks, equal-reward groups, round-off."""
from __future__ import annotations

from tests.helpers import gen

import pytest
import torch
from grpo_core import (group_advantages)
import math
from grpo_core.advantages import advantages
from grpo_core.sampling import generator




def test_advantages_have_zero_mean_and_unit_std_per_group():
    rewards = torch.randn(3, 4, 8, generator=gen(0), dtype=torch.float64) * 5 + 2
    adv, zero_std = group_advantages(rewards)
    assert adv.shape == rewards.shape and not zero_std.any()
    std = rewards.std(-1, keepdim=True)          # Bessel's correction, as torch.std
    torch.testing.assert_close(adv.mean(-1), torch.zeros(3, 4, dtype=torch.float64), atol=1e-12, rtol=0)
    # std of A is std / (std + eps): 1 up to the eps in the denominator
    torch.testing.assert_close(adv.std(-1, keepdim=True), std / (std + 1e-8), atol=1e-12, rtol=0)
    torch.testing.assert_close(adv.std(-1), torch.ones(3, 4, dtype=torch.float64), atol=1e-7, rtol=0)
    torch.testing.assert_close(adv, (rewards - rewards.mean(-1, keepdim=True)) / (std + 1e-8))


def test_masked_advantages_match_the_sub_group():
    rewards = torch.rand(3, 5, 8, generator=gen(1))
    sizes = [(5, 8), (3, 4), (2, 2)]            # (prompts, group_size) of each member
    valid = torch.zeros(3, 5, 8, dtype=torch.bool)
    for e, (p, g) in enumerate(sizes):
        valid[e, :p, :g] = True
    adv, zero_std = group_advantages(rewards, valid)
    assert (adv[~valid] == 0).all()
    for e, (p, g) in enumerate(sizes):
        solo, solo_zero = group_advantages(rewards[e:e + 1, :p, :g])
        torch.testing.assert_close(adv[e:e + 1, :p, :g], solo, atol=1e-5, rtol=1e-5)
        assert torch.equal(zero_std[e:e + 1, :p], solo_zero)
    assert torch.isfinite(adv).all()


def constant_values():
    """Reward values for constant groups: hand-picked ones and random ones, float32."""
    picked = torch.tensor([0.1, 0.9, 0.37, 12.34, 0.0, 1.0, -3.3, 123.456])
    return torch.cat([picked, torch.rand(40, generator=gen(11)) * 10 - 5])


@pytest.mark.parametrize("estimator", ["grpo", "dr_grpo", "batch_std", "rloo"])
@pytest.mark.parametrize("group_size", [3, 6, 7, 8, 16])
def test_equal_rewards_give_exactly_zero_advantages(group_size, estimator):
    """Every estimator with a group baseline gives exactly 0 (not round-off) to a group whose
    rewards are all equal, masked or not, and a non-zero advantage to the other groups."""
    values = constant_values()
    n = len(values)
    # n members, 2 prompts: prompt 0 has constant rewards, prompt 1 random ones
    rewards = torch.rand(n, 2, group_size, generator=gen(2))
    rewards[:, 0] = values.view(-1, 1)
    adv, zero_std = advantages(rewards, estimator=estimator)
    assert (adv[:, 0] == 0).all() and not torch.isnan(adv).any()
    assert zero_std[:, 0].all() and not zero_std[:, 1].any()
    assert (adv[:, 1].abs().sum(-1) > 0).all()

    # the same with a mask: the valid part of each group is constant, the padding is not
    padded = torch.rand(n, 2, group_size + 3, generator=gen(3)) * 100
    padded[:, :, :group_size] = rewards
    valid = torch.ones_like(padded, dtype=torch.bool)
    valid[:, :, group_size:] = False
    adv, zero_std = advantages(padded, valid, estimator)
    assert (adv[:, 0] == 0).all() and (adv[~valid] == 0).all() and not torch.isnan(adv).any()
    assert zero_std[:, 0].all() and not zero_std[:, 1].any()


def test_round_off_case_is_real():
    """Guard for the test above: these constant groups do leave float round-off in r - mean for
    the usual ways of computing the mean, so an implementation must not rely on r - mean == 0.
    With the notebook's formula (r - r.mean()) / (r.std() + 1e-8) they get nonzero advantages."""
    values = constant_values()
    for mean in (lambda r: r.mean(-1, keepdim=True), lambda r: r.sum(-1, keepdim=True) / r.shape[-1],
                 lambda r: r.cumsum(-1)[..., -1:] / r.shape[-1]):
        hits = 0
        for g in (3, 6, 7, 8, 16):
            r = values.view(-1, 1).expand(-1, g)
            hits += int(((r - mean(r)) != 0).any(-1).sum())
        assert hits > 0
    r = torch.full((8,), 0.1)
    assert ((r - r.mean()) / (r.std() + 1e-8)).abs().max() > 0.1


F64 = torch.float64


# Two groups of G = 4: A = [1, 2, 3, 6] (mean 3, deviations -2, -1, 0, 3, sum of squares 14) and
# B = [0, 1, 0, 1] (mean 0.5, deviations -+0.5, sum of squares 1).
REWARDS = torch.tensor([[[1.0, 2.0, 3.0, 6.0], [0.0, 1.0, 0.0, 1.0]]])


# Batch of 8: mean 14/8 = 1.75, squared deviations sum to 27.5, std sqrt(27.5 / 7).
S_A, S_B = math.sqrt(14 / 3), math.sqrt(1 / 3)       # Bessel-corrected group stds
S_BATCH = math.sqrt(27.5 / 7)


DEV = [[-2.0, -1.0, 0.0, 3.0], [-0.5, 0.5, -0.5, 0.5]]


HAND = {
    "grpo": [[-2 / S_A, -1 / S_A, 0.0, 3 / S_A], [-0.5 / S_B, 0.5 / S_B, -0.5 / S_B, 0.5 / S_B]],
    "dr_grpo": DEV,
    "batch_std": [[d / S_BATCH for d in row] for row in DEV],
    # r_i minus the mean of the other three: 1 - 11/3, 2 - 10/3, 3 - 9/3, 6 - 6/3; 0 - 2/3, 1 - 1/3
    "rloo": [[1 - 11 / 3, 2 - 10 / 3, 0.0, 4.0], [-2 / 3, 2 / 3, -2 / 3, 2 / 3]],
    "none": [[1.0, 2.0, 3.0, 6.0], [0.0, 1.0, 0.0, 1.0]],
}


@pytest.mark.parametrize("estimator", list(HAND))
def test_each_estimator_on_a_hand_computed_batch(estimator):
    adv, zero_std = advantages(REWARDS.double(), estimator=estimator)
    torch.testing.assert_close(adv[0], torch.tensor(HAND[estimator], dtype=F64), atol=1e-6, rtol=1e-6)
    assert not zero_std.any()


def test_rloo_is_the_leave_one_out_formula():
    g = generator(3)
    rewards = torch.randn(3, 4, 7, generator=g, dtype=F64)
    adv, _ = advantages(rewards, estimator="rloo")
    expected = torch.empty_like(rewards)
    for e in range(3):
        for p in range(4):
            for i in range(7):
                others = [rewards[e, p, j] for j in range(7) if j != i]
                expected[e, p, i] = rewards[e, p, i] - sum(others) / len(others)
    torch.testing.assert_close(adv, expected)


def test_batch_estimators_whiten_over_the_batch_and_keep_equal_groups():
    g = generator(0)
    rewards = torch.randn(3, 4, 5, generator=g)
    rewards[:, 0] = 0.7                              # a group of equal rewards: still signal here
    valid = torch.ones_like(rewards, dtype=torch.bool)
    valid[2, :, 3:] = False                          # a member with smaller groups
    baseline = torch.randn(3, 4, generator=g)
    for name in ("reinforce_pp", "critic"):
        a, _ = advantages(rewards, valid, name, baseline=baseline)
        x = rewards - (baseline.unsqueeze(-1) if name == "critic" else 0)
        for e in range(3):
            want = x[e][valid[e]]
            got = a[e][valid[e]]
            torch.testing.assert_close(got, (want - want.mean()) / (want.var() + 1e-8).sqrt(), rtol=1e-5, atol=1e-6)
        assert float(a[:, 0].abs().sum()) > 0 and float(a[~valid].abs().sum()) == 0
    a, _ = advantages(rewards, valid, "remax", baseline=baseline)
    torch.testing.assert_close(a[valid], (rewards - baseline.unsqueeze(-1))[valid])
    with pytest.raises(ValueError, match="baseline"):
        advantages(rewards, valid, "remax")
