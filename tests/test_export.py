"""The TRL export of the sequence engine (SeqGRPOConfig with its task): every loss_type maps as
documented, only arguments TRL's GRPOConfig has are emitted, what TRL lacks gets a note, and the
CLI's --export-trl prints it without training. (The one-token export: tests/test_knobs.py.)"""
from __future__ import annotations

import json

import pytest
import torch

from grpo_core import GRPOConfig, RLVRConfig, cli
from grpo_core.export import SEQ_LOSS_TYPES_TO_TRL, TRL_LOSS_TYPES, to_trl
from grpo_core.sequence import LOSS_TYPES, SeqGRPOConfig, SeqTaskConfig
from grpo_core.sequence.losses import AGGREGATIONS, aggregate

from test_knobs import trl_rejects

# The arguments of TRL's GRPOConfig (and the TrainingArguments it extends) the export may use,
# read from trl/trainer/grpo_config.py (2026).
TRL_ARGUMENTS = {
    "num_generations", "per_device_train_batch_size", "steps_per_generation", "num_iterations",
    "max_steps", "learning_rate", "lr_scheduler_type", "max_grad_norm", "beta", "epsilon",
    "epsilon_high", "delta", "max_completion_length", "seed", "scale_rewards", "loss_type",
    "importance_sampling_level", "mask_truncated_completions", "sync_ref_model",
    "ref_model_mixup_alpha", "ref_model_sync_steps"}
TASK = SeqTaskConfig(max_length=5)
VERL_ONLY = {"seq-mean-token-sum", "seq-mean-token-sum-norm"}


def seq_cfg(loss_type: str, **changes) -> SeqGRPOConfig:
    level = "sequence" if loss_type == "luspo" else "token"
    return SeqGRPOConfig(loss_type=loss_type, importance_sampling_level=level, **changes)


def test_every_loss_type_has_a_documented_trl_name():
    assert set(SEQ_LOSS_TYPES_TO_TRL) == set(LOSS_TYPES)
    for name, trl in SEQ_LOSS_TYPES_TO_TRL.items():
        if name in TRL_LOSS_TYPES:
            assert trl == name                       # TRL's own names are themselves
        elif trl is not None:                        # a verl alias: the same aggregation as its TRL name
            assert AGGREGATIONS[name] == AGGREGATIONS[trl] and "cispo" not in (name, trl)
        else:
            assert name in VERL_ONLY


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_each_loss_type_exports_a_trl_loss_type_and_says_when_it_is_not_exact(loss_type):
    export = to_trl(seq_cfg(loss_type), TASK)
    kw = export.kwargs
    assert kw["loss_type"] in TRL_LOSS_TYPES and set(kw) <= TRL_ARGUMENTS
    assert trl_rejects(kw) is None
    if loss_type in VERL_ONLY:
        note = export.unmapped["loss_type"]
        assert note.startswith(f"TRL has no loss_type {loss_type!r}") and kw["loss_type"] == "dr_grpo"
    else:
        assert kw["loss_type"] == SEQ_LOSS_TYPES_TO_TRL[loss_type] and "loss_type" not in export.unmapped
    if kw["loss_type"] == "luspo":                   # TRL's luspo requires sequence-level ratios
        assert kw["importance_sampling_level"] == "sequence"


def test_the_verl_only_aggregations_are_dr_grpo_times_a_constant():
    """The notes' claim: seq-mean-token-sum = L x dr_grpo and seq-mean-token-sum-norm = B x dr_grpo,
    on random per-token losses and masks of responses of every length."""
    g = torch.Generator().manual_seed(0)
    e, s, big_l = 3, 12, 5
    loss = torch.randn(e, s, big_l, generator=g, dtype=torch.float64)
    mask = (torch.arange(big_l) < torch.randint(1, big_l + 1, (e, s, 1), generator=g)).double()
    n_seq, tokens = torch.full((e,), s), mask.sum((1, 2))

    def agg(name):
        return aggregate(loss, mask, torch.full((e, 1, 1), AGGREGATIONS[name]), n_seq, tokens, big_l)
    torch.testing.assert_close(agg("seq-mean-token-sum"), big_l * agg("dr_grpo"))
    torch.testing.assert_close(agg("seq-mean-token-sum-norm"), s * agg("dr_grpo"))
    note = to_trl(SeqGRPOConfig(loss_type="seq-mean-token-sum-norm", prompts=4, group_size=3),
                  TASK).unmapped["loss_type"]
    assert "constant B = 12" in note


def test_seq_mean_token_sum_with_sequence_ratios_and_no_kl_is_luspo():
    exact = to_trl(SeqGRPOConfig(loss_type="seq-mean-token-sum", importance_sampling_level="sequence"), TASK)
    assert exact.kwargs["loss_type"] == "luspo" and "loss_type" not in exact.unmapped
    with_kl = to_trl(SeqGRPOConfig(loss_type="seq-mean-token-sum", importance_sampling_level="sequence",
                                   kl_coef=0.1), TASK)
    assert with_kl.kwargs["loss_type"] == "dr_grpo" and "TRL has no loss_type" in with_kl.unmapped["loss_type"]
    luspo_kl = to_trl(SeqGRPOConfig(loss_type="luspo", importance_sampling_level="sequence", kl_coef=0.1), TASK)
    assert luspo_kl.kwargs["loss_type"] == "luspo" and "padding included" in luspo_kl.unmapped["loss_type"]


def test_default_sequence_run_exports_its_own_settings():
    cfg = SeqGRPOConfig()
    export = to_trl(cfg, TASK)
    kw = export.kwargs
    assert kw["num_generations"] == cfg.group_size
    assert kw["per_device_train_batch_size"] == cfg.prompts * cfg.group_size
    assert kw["num_iterations"] == cfg.epochs and kw["max_steps"] == cfg.iterations * cfg.epochs
    assert (kw["learning_rate"], kw["beta"], kw["epsilon"]) == (cfg.lr, cfg.kl_coef, cfg.clip_eps)
    assert kw["max_completion_length"] == TASK.max_length
    assert (kw["loss_type"], kw["importance_sampling_level"], kw["mask_truncated_completions"]) == \
        ("grpo", "token", False)
    assert kw["scale_rewards"] == "group" and "epsilon_high" not in kw
    assert set(export.unmapped) == {"reward"}                   # the verifier is a reward function
    assert "max_completion_length=5" in export.snippet()


def test_dapo_like_run_exports_clip_higher_overlong_filtering_and_notes_the_rest():
    cfg = SeqGRPOConfig(loss_type="dapo", clip_eps_high=0.28, mask_truncated=True, overlong_buffer=2,
                        overlong_factor=0.5, dynamic_sampling=4, group_size=16, entropy_coef=0.01)
    export = to_trl(cfg, TASK)
    kw = export.kwargs
    assert (kw["loss_type"], kw["epsilon"], kw["epsilon_high"]) == ("dapo", 0.2, 0.28)
    assert kw["mask_truncated_completions"] is True and kw["num_generations"] == 16
    assert set(kw) <= TRL_ARGUMENTS and trl_rejects(kw) is None
    notes = export.unmapped
    assert "get_soft_overlong_punishment(max_completion_len=5, soft_punish_cache=2)" in notes["overlong_buffer"]
    assert "reward_weights giving it 0.5" in notes["overlong_buffer"]
    assert "dynamic sampling" in notes["dynamic_sampling"] and "no entropy bonus" in notes["entropy_coef"]


def test_cispo_cap_is_trl_epsilon_high_and_gspo_is_sequence_level():
    export = to_trl(SeqGRPOConfig(loss_type="cispo", cispo_cap=4.0, clip_eps_high=0.28, dual_clip=3.0), TASK)
    assert export.kwargs["epsilon_high"] == 4.0 and "delta" not in export.kwargs
    assert "no effect with loss_type cispo" in export.unmapped["dual_clip"]
    gspo = to_trl(SeqGRPOConfig(importance_sampling_level="sequence", dual_clip=3.0), TASK).kwargs
    assert gspo["importance_sampling_level"] == "sequence" and gspo["delta"] == 3.0


@pytest.mark.parametrize("changes, unmapped", [
    (dict(kl_coef=0.1, kl_estimator="exact"), "kl_estimator"),
    (dict(kl_coef=0.1, kl_placement="reward"), "kl_placement"),
    (dict(advantage_estimator="rloo"), "advantage_estimator"),
    (dict(dual_clip=1.1), "dual_clip"),
    (dict(prompts=5, group_size=3, minibatches=2), "minibatches"),
    (dict(ref_reset_every=10), "ref_reset_every"),
])
def test_sequence_knobs_trl_cannot_express_get_a_note(changes, unmapped):
    export = to_trl(SeqGRPOConfig(**changes), TASK)
    assert unmapped in export.unmapped and f"#   {unmapped}: " in export.snippet()
    assert set(export.kwargs) <= TRL_ARGUMENTS and trl_rejects(export.kwargs) is None


@pytest.mark.parametrize("cfg", [GRPOConfig(entropy_coef=0.1, dual_clip=3.0, ref_reset_every=5),
                                 RLVRConfig(clip_eps_high=0.28, minibatches=4)])
def test_one_token_export_passes_only_trl_arguments(cfg):
    assert set(to_trl(cfg).kwargs) <= TRL_ARGUMENTS


def test_a_sequence_run_needs_its_task():
    with pytest.raises(TypeError, match="exports with its SeqTaskConfig"):
        to_trl(SeqGRPOConfig())


def test_cli_seq_export_trl_prints_the_settings_without_training(capsys):
    assert cli.main(["seq", "--loss-type", "token-mean", "--clip-eps-high", "0.28",
                     "--task-max-length", "4", "--export-trl", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["command"] == "seq" and out["export"] == "trl" and "history" not in out
    assert out["kwargs"]["loss_type"] == "bnpo" and out["kwargs"]["epsilon_high"] == 0.28
    assert out["kwargs"]["max_completion_length"] == 4 == out["task"]["max_length"]
    assert out["config"]["loss_type"] == "token-mean"
    assert cli.main(["seq", "--loss-type", "seq-mean-token-sum", "--export-trl"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("from trl import GRPOConfig") and "loss_type='dr_grpo'" in text
    assert "#   loss_type: TRL has no loss_type 'seq-mean-token-sum'" in text


def test_cli_grpo_export_trl_and_bad_input(capsys):
    assert cli.main(["rlvr", "--export-trl", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["command"] == "rlvr" and out["kwargs"]["num_generations"] == 16 and "reward" in out["unmapped"]
    assert cli.main(["seq", "--loss-type", "luspo", "--export-trl"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --importance-sampling-level must be one of token, sequence: luspo needs "
        "importance_sampling_level = sequence (its loss scales each response's one sequence loss by |y|)")
