"""Baselines from outside the group (methods/baselines.py): ReMax's greedy reward, PPO's critic, the flat layout."""
from __future__ import annotations

import torch
from grpo_core import trainer as trainer_mod
from grpo_core.methods.ppo import PPOConfig, ReinforcePPConfig, remax_config
from grpo_core.pipeline import run_many


def test_remax_baseline_is_the_greedy_responses_reward(upstream, monkeypatch):
    """At the first iteration the policy is SFT: the baseline of each prompt must be the reward
    model's score of SFT's argmax token there; each iteration generates P x (G + 1) responses."""
    seen = []
    original = trainer_mod.member_advantages

    def spy(estimators, rewards, valid, baseline=None):
        seen.append(baseline.clone())
        return original(estimators, rewards, valid, baseline)
    monkeypatch.setattr(trainer_mod, "member_advantages", spy)
    cfg = remax_config(3, iterations=1)
    trainer = trainer_mod.GRPOTrainer(upstream.problem, upstream.sft, upstream.rm.scores, [cfg])
    prompts_seen = []
    original_sample = trainer_mod.sample_groups

    def sample_spy(*args, **kwargs):
        out = original_sample(*args, **kwargs)
        prompts_seen.append(out[0].clone())
        return out
    monkeypatch.setattr(trainer_mod, "sample_groups", sample_spy)
    trainer.advance()
    greedy = upstream.sft.logp.argmax(-1)                                   # (C,)
    want = upstream.rm.scores[torch.arange(5), greedy][prompts_seen[0][0]]
    torch.testing.assert_close(seen[0][0], want)
    result = trainer.results()[0]
    assert result.history["samples"].iloc[-1] == cfg.prompts * (cfg.group_size + 1)


def test_ppo_member_uses_its_critic_and_matches_solo(upstream):
    """PPO members next to non-critic members: each equals its solo run, and on the same draws
    (seed 0) PPO's critic baseline climbs the reward model faster than REINFORCE++'s batch mean."""
    configs = [PPOConfig(iterations=60, seed=0), ReinforcePPConfig(iterations=60, seed=0),
               PPOConfig(iterations=60, seed=1, critic_hidden=8, critic_lr=3e-3)]
    batch = run_many(upstream, configs)
    for cfg, member in zip(configs, batch):
        solo = run_many(upstream, [cfg])[0]
        torch.testing.assert_close(solo.final_logp, member.final_logp, atol=1e-5, rtol=1e-5)
    assert batch[0].history["samples"].iloc[-1] == 60 * 64
    assert batch[0].final["rm_reward"] > batch[1].final["rm_reward"] + 0.003   # 0.018 against 0.011
    sft = float(upstream.sft.history["true_reward"].iloc[-1])
    assert batch[0].history["true_reward"].iloc[-1] > sft


def test_ppo_with_a_critic_trained_on_the_verifier_finds_the_correct_tokens(upstream):
    cfg = PPOConfig(reward="verifiable", iterations=150, seed=2)
    run = run_many(upstream, [cfg])[0]
    assert run.history["correct_prob"].iloc[-1] > 0.9
    assert run.history["correct_prob"].iloc[-1] > upstream.sft.history["true_reward"].iloc[-1]


def test_one_response_members_sit_flat_in_the_groups_layout_and_equal_their_solo_runs(upstream):
    """PPO's and REINFORCE++'s prompts (one response each) fill GRPO's 8 x 8 slots in order
    instead of padding a (64, 8) layout; each member still follows its solo run, minibatches and
    a prompt count that leaves a slot part-empty included, and its batch statistics (first
    group, zero-std groups) are those of one-response groups."""
    from grpo_core.config import GRPOConfig
    configs = [PPOConfig(iterations=40, seed=0, minibatches=4), ReinforcePPConfig(iterations=40, seed=1, prompts=30),
               GRPOConfig(iterations=40, seed=2), remax_config(3, iterations=40)]
    from grpo_core.layout import BatchLayout, Schedule
    m = BatchLayout(configs, Schedule(configs))
    assert (m.p_max, m.g_max) == (8, 8) and m.flat_list == [True, True, False, False]
    assert m.n_samples.tolist() == [64, 30, 64, 56]
    batch = run_many(upstream, configs)
    for cfg, member in zip(configs, batch):
        solo = run_many(upstream, [cfg])[0]
        assert BatchLayout([cfg], Schedule([cfg])).g_max == cfg.group_size      # alone: the plain layout
        torch.testing.assert_close(solo.final_logp, member.final_logp, atol=1e-5, rtol=1e-5)
        for column in ("true_reward", "first_group_reward", "zero_std_frac", "batch_reward", "kl_estimate"):
            torch.testing.assert_close(torch.tensor(solo.history[column].to_numpy()),
                                       torch.tensor(member.history[column].to_numpy()), atol=1e-5, rtol=1e-5)
    assert batch[0].history["zero_std_frac"].eq(1.0).all()             # a group of one has no spread


def test_a_critic_larger_than_the_policy_trains_beside_it(upstream):
    """Critics that fit the policy's layout are extra rows of its parameters (one backward pass);
    a wider one keeps its own network. Both equal their solo runs, and the two kinds learn alike
    from the same seed (the critic's size changes its values, not the method)."""
    wide = upstream.sft.config.hidden_dim * 2
    configs = [PPOConfig(iterations=60, seed=4), PPOConfig(iterations=60, seed=4, critic_hidden=wide)]
    fused = trainer_mod.GRPOTrainer(upstream.problem, upstream.sft, upstream.rm.scores, configs[:1])
    apart = trainer_mod.GRPOTrainer(upstream.problem, upstream.sft, upstream.rm.scores, configs)
    assert fused.fused and fused.theta_all.shape[0] == 2 and not apart.fused
    batch = run_many(upstream, configs)
    for cfg, member in zip(configs, batch):
        solo = run_many(upstream, [cfg])[0]
        torch.testing.assert_close(solo.final_logp, member.final_logp, atol=1e-5, rtol=1e-5)
    sft = float(upstream.sft.history["true_reward"].iloc[-1])
    assert all(r.history["true_reward"].iloc[-1] > sft for r in batch)
