"""The configs: ranges, types, cross-field checks, one declaration per knob for both engines."""
from __future__ import annotations

import dataclasses
import json
import pytest
import torch
from grpo_core import (ConfigError, GRPOConfig, MAX_WORK_PER_REQUEST, ProblemConfig, RLVRConfig,
                       RewardModelConfig, SFTConfig, check_budget, config_fields, field_range,
                       train_grpo)
from grpo_core.advantages import advantages


CONFIG_CLASSES = [ProblemConfig, SFTConfig, RewardModelConfig, GRPOConfig, RLVRConfig]


KNOBS = [(cls, f) for cls in CONFIG_CLASSES for f in config_fields(cls)]


COMPANIONS = {"minibatches": {"prompts": 64}}   # values other fields need for a field's extremes


@pytest.mark.parametrize("cls,f", KNOBS, ids=[f"{c.__name__}.{f.name}" for c, f in KNOBS])
def test_out_of_range_values_raise_naming_field_and_range(cls, f):
    rng = field_range(cls, f.name)
    other = COMPANIONS.get(f.name, {})
    if f.metadata.get("choices"):
        for choice in f.metadata["choices"]:
            assert getattr(cls(**{f.name: choice}), f.name) == choice
        bad_values = ["no_such_" + f.name, ""]
        assert rng == "one of " + ", ".join(f.metadata["choices"])
    else:
        lo, hi = f.metadata["lo"], f.metadata["hi"]
        cls(**other, **{f.name: lo})          # the bounds themselves are valid
        cls(**other, **{f.name: hi})
        assert rng == f"{lo} to {hi}"
        bad_values = [lo - 1, hi + 1] + ([lo / 2] if isinstance(lo, float) and lo > 0 else [])
    for bad in bad_values:
        with pytest.raises(ConfigError) as info:
            cls(**other, **{f.name: bad})
        message = str(info.value)
        assert message.startswith(f"{f.name}:") and rng in message, message
        assert info.value.field_name == f.name


def test_cross_field_checks_name_the_field():
    with pytest.raises(ConfigError) as info:
        GRPOConfig(prompts=4, minibatches=5)
    assert info.value.field_name == "minibatches" and "4" in str(info.value)
    GRPOConfig(prompts=4, minibatches=4)
    for bad in (0.5, 1.0):
        with pytest.raises(ConfigError, match="dual_clip"):
            GRPOConfig(dual_clip=bad)
    assert GRPOConfig(dual_clip=1.01).dual_clip == 1.01


WRONG_TYPES = [(GRPOConfig, "group_size", "8"), (GRPOConfig, "group_size", True),
               (GRPOConfig, "iterations", 2.5), (GRPOConfig, "lr", float("nan")),
               (GRPOConfig, "kl_coef", float("inf")), (GRPOConfig, "clip_eps", float("-inf")),
               (GRPOConfig, "lr", "0.01"), (SFTConfig, "epochs", None), (ProblemConfig, "seed", False),
               (RewardModelConfig, "lr", True)]


@pytest.mark.parametrize("cls,name,bad", WRONG_TYPES)
def test_wrong_types_raise_naming_the_field(cls, name, bad):
    with pytest.raises(ConfigError) as info:
        cls(**{name: bad})
    assert str(info.value).startswith(f"{name}:") and info.value.field_name == name


@pytest.mark.parametrize("cls,name,bad", WRONG_TYPES[:5])
def test_wrong_type_messages_name_the_range(cls, name, bad):
    with pytest.raises(ConfigError) as info:
        cls(**{name: bad})
    assert field_range(cls, name) in str(info.value)


def test_numbers_are_coerced_to_the_fields_type():
    cfg = GRPOConfig(group_size=8.0, lr=1)
    assert type(cfg.group_size) is int and type(cfg.lr) is float
    with pytest.raises(ConfigError, match="reward"):
        GRPOConfig(reward="human")


def test_from_dict_rejects_unknown_keys_and_round_trips():
    with pytest.raises(ConfigError) as info:
        GRPOConfig.from_dict({"group_size": 4, "groupsize": 8})
    assert "groupsize" in str(info.value)
    assert GRPOConfig.from_dict({"group_size": 4, "groupsize": 8}, strict=False).group_size == 4
    with pytest.raises(ConfigError):
        GRPOConfig.from_dict([("group_size", 4)])
    with pytest.raises(ConfigError, match="group_size"):
        GRPOConfig.from_dict({"group_size": 65})
    for cfg in [ProblemConfig(n_contexts=7, pref_scale=0.5), SFTConfig(lr=3e-3, epochs=7),
                RewardModelConfig(steps=99), GRPOConfig(kl_coef=0.0, clip_eps=0.5, seed=9),
                RLVRConfig(group_size=4, lr=2e-3)]:
        back = type(cfg).from_dict(cfg.to_dict())
        assert back == cfg and type(back) is type(cfg)
        assert type(cfg).from_dict(json.loads(cfg.to_json())) == cfg
    assert RLVRConfig.from_dict(RLVRConfig().to_dict()).reward == "verifiable"


def test_check_budget_rejects_an_oversized_request(upstream):
    big = GRPOConfig(iterations=5000, prompts=64, group_size=64, epochs=16)
    with pytest.raises(ConfigError) as info:
        check_budget([big])
    assert f"{MAX_WORK_PER_REQUEST:,}" in str(info.value)
    # many seeds of an individually fine config add up
    ok = GRPOConfig(iterations=5000, prompts=64, group_size=64, epochs=4)   # 8.2e7 work
    check_budget([ok])
    with pytest.raises(ConfigError):
        check_budget([ok, ok])
    with pytest.raises(ConfigError):  # train_grpo checks before doing any work
        train_grpo(upstream.problem, upstream.sft, upstream.rm.scores, [big])


def test_the_estimator_registry_is_the_one_list_everyone_reads():
    from dataclasses import fields
    from grpo_core import ADVANTAGE_ESTIMATORS, cli
    from grpo_core.analysis import gradient_noise
    meta = {f.name: f.metadata for f in fields(GRPOConfig)}["advantage_estimator"]
    assert tuple(meta["choices"]) == tuple(ADVANTAGE_ESTIMATORS)
    for name, text in ADVANTAGE_ESTIMATORS.items():
        assert f"{name} = {text}" in meta["help"]
        adv, _ = advantages(torch.tensor([[[0.0, 1.0, 3.0]]]), estimator=name)   # each one runs
        assert adv.shape == (1, 1, 3)
    sub = cli.build_parser()._subparsers._group_actions[0].choices["grpo"]
    flag = next(a for a in sub._actions if "--advantage-estimator" in a.option_strings)
    assert flag.metavar == "{" + ",".join(ADVANTAGE_ESTIMATORS) + "}"
    import inspect
    assert inspect.signature(gradient_noise).parameters["estimators"].default == tuple(ADVANTAGE_ESTIMATORS)


def test_grpo_config_field_order_is_the_ui_url_and_cli_order():
    from grpo_core.config import PolicyOptimizationConfig
    shared = [f.name for f in dataclasses.fields(PolicyOptimizationConfig)]
    # the widgets, URL keys and CLI flags follow this order: it must not move
    assert [f.name for f in dataclasses.fields(GRPOConfig)] == shared + ["reward"] == [
        "iterations", "prompts", "group_size", "lr", "kl_coef", "clip_eps", "epochs", "seed",
        "advantage_estimator", "kl_estimator", "kl_placement", "clip_eps_high", "dual_clip",
        "minibatches", "entropy_coef", "ref_reset_every", "dynamic_sampling", "reward"]


# The sequence engine's own wording, where its knob means something per token.
SEQ_OWN_HELP = {"kl_coef", "kl_estimator", "kl_placement", "entropy_coef"}


def test_both_engines_read_one_declaration_of_each_shared_knob():
    from grpo_core.config import PolicyOptimizationConfig
    from grpo_core.sequence import SeqGRPOConfig
    base = {f.name: f for f in dataclasses.fields(PolicyOptimizationConfig)}
    for cls in (GRPOConfig, RLVRConfig, SeqGRPOConfig):
        own = {f.name: f for f in dataclasses.fields(cls)}
        for name, f in base.items():
            meta, inherited = own[name].metadata, f.metadata
            assert {k: meta[k] for k in ("lo", "hi", "choices", "log")} == \
                {k: inherited[k] for k in ("lo", "hi", "choices", "log")}, (cls, name)
            if not (cls is SeqGRPOConfig and name in SEQ_OWN_HELP):
                assert meta["help"] == inherited["help"], (cls, name)
    seq = {f.name: f.metadata["help"] for f in dataclasses.fields(SeqGRPOConfig)}
    assert all("per-token" in seq[name].lower() for name in SEQ_OWN_HELP)
    assert not issubclass(SeqGRPOConfig, GRPOConfig) and not isinstance(SeqGRPOConfig(), GRPOConfig)
    assert isinstance(SeqGRPOConfig(), PolicyOptimizationConfig) and isinstance(GRPOConfig(), PolicyOptimizationConfig)


def test_each_engine_keeps_its_defaults():
    from grpo_core.sequence import SeqGRPOConfig
    one, seq = GRPOConfig(), SeqGRPOConfig()
    assert (one.iterations, one.lr, one.kl_coef, one.epochs, one.kl_estimator) == (500, 1e-3, 0.05, 2, "exact")
    assert (seq.iterations, seq.lr, seq.kl_coef, seq.epochs, seq.kl_estimator) == (200, 2e-3, 0.0, 1, "k3")
    assert (RLVRConfig().group_size, RLVRConfig().epochs, RLVRConfig().reward) == (16, 1, "verifiable")
    for cfg in (one, seq):
        assert cfg.samples_per_iteration == 64 and cfg.upper_clip_eps == 0.2
        assert cfg.replace(clip_eps_high=0.28).upper_clip_eps == 0.28


@pytest.mark.parametrize("changes, field_name", [
    (dict(prompts=2, minibatches=3), "minibatches"), (dict(dual_clip=0.5), "dual_clip"),
    (dict(dual_clip=1.0), "dual_clip")])
def test_the_shared_checks_hold_for_both_engines(changes, field_name):
    from grpo_core.config import ConfigError
    from grpo_core.sequence import SeqGRPOConfig
    for cls in (GRPOConfig, SeqGRPOConfig):
        with pytest.raises(ConfigError) as err:
            cls(**changes)
        assert err.value.field_name == field_name
    with pytest.raises(ConfigError, match="luspo needs"):      # the sequence engine's own check still runs
        SeqGRPOConfig(loss_type="luspo", importance_sampling_level="token")


def test_knob_default_reuses_the_base_declaration():
    from grpo_core.config import PolicyOptimizationConfig, knob_default
    lr = knob_default(PolicyOptimizationConfig, "lr", 2e-3)
    base = {f.name: f for f in dataclasses.fields(PolicyOptimizationConfig)}["lr"]
    assert lr.default == 2e-3 and dict(lr.metadata) == dict(base.metadata)
    wider = knob_default(PolicyOptimizationConfig, "group_size", 1, lo=1)
    assert wider.metadata["lo"] == 1 and wider.metadata["help"] == dict(
        (f.name, f.metadata) for f in dataclasses.fields(PolicyOptimizationConfig))["group_size"]["help"]
    with pytest.raises(TypeError, match="no field 'learning_rate'"):
        knob_default(PolicyOptimizationConfig, "learning_rate", 1e-3)
    with pytest.raises(TypeError, match="unknown setting 'hlep'"):
        knob_default(PolicyOptimizationConfig, "lr", 1e-3, hlep="typo")
