"""The TRL export (export.py): only arguments TRL accepts, exact where it claims to be, a note for
the rest. TRL 1.16 itself is the judge (requirements-trl.txt): its GRPOConfig's fields and checks."""
from __future__ import annotations

import dataclasses
import tempfile
import warnings

import pytest
import torch
import trl
from grpo_core import GRPOConfig, RLVRConfig
from grpo_core.export import SEQ_LOSS_TYPES_TO_TRL, TRL_LOSS_TYPES, to_trl
from grpo_core.sequence import LOSS_TYPES, SeqGRPOConfig, SeqTaskConfig
from grpo_core.sequence.losses import AGGREGATIONS, aggregate
from tests.helpers import F64
from tests.core.test_losses import constructed_batch, terms_of
from grpo_core.losses import grpo_loss


# The arguments of TRL's GRPOConfig (and the TrainingArguments it extends).
TRL_ARGUMENTS = {f.name for f in dataclasses.fields(trl.GRPOConfig)}


TASK = SeqTaskConfig(max_length=5)


VERL_ONLY = {"seq-mean-token-sum-norm"}     # the verl mode TRL has no exact loss_type for


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
    if kw["loss_type"] == "luspo" and kw["importance_sampling_level"] == "token":   # TRL warns, computes it
        assert "warns" in export.unmapped["importance_sampling_level"]


def test_the_verl_only_aggregation_is_dr_grpo_times_a_constant():
    """The note's claim: seq-mean-token-sum-norm = B x dr_grpo (and seq-mean-token-sum = L x
    dr_grpo, which exports exactly as TRL's luspo), on random per-token losses and masks."""
    g = torch.Generator().manual_seed(0)
    e, s, big_l = 3, 12, 5
    loss = torch.randn(e, s, big_l, generator=g, dtype=torch.float64)
    mask = (torch.arange(big_l) < torch.randint(1, big_l + 1, (e, s, 1), generator=g)).double()
    n_seq, tokens = torch.full((e,), s), mask.sum((1, 2))

    def agg(name):
        return aggregate(loss, mask, torch.full((e, 1, 1), AGGREGATIONS[name]), n_seq=n_seq, batch_tokens=tokens,
                         max_length=big_l)
    torch.testing.assert_close(agg("seq-mean-token-sum"), big_l * agg("dr_grpo"))
    torch.testing.assert_close(agg("seq-mean-token-sum-norm"), s * agg("dr_grpo"))
    note = to_trl(SeqGRPOConfig(loss_type="seq-mean-token-sum-norm", prompts=4, group_size=3),
                  TASK).unmapped["loss_type"]
    assert "constant B = 12" in note


def test_seq_mean_token_sum_is_trls_luspo_at_either_ratio_level_and_with_a_kl():
    """TRL 1.16's luspo is 1/B sum_s sum_t l m with the KL masked as here (checked against its own
    loss in test_trl.py): exact for verl's seq-mean-token-sum; at token level TRL only warns."""
    for level in ("token", "sequence"):
        export = to_trl(SeqGRPOConfig(loss_type="seq-mean-token-sum", importance_sampling_level=level,
                                      kl_coef=0.1), TASK)
        assert export.kwargs["loss_type"] == "luspo" and "loss_type" not in export.unmapped
        assert ("importance_sampling_level" in export.unmapped) == (level == "token")
    luspo_kl = to_trl(SeqGRPOConfig(loss_type="luspo", importance_sampling_level="sequence", kl_coef=0.1), TASK)
    assert luspo_kl.kwargs["loss_type"] == "luspo" and not set(luspo_kl.unmapped) - {"reward"}


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
    assert "dynamic sampling" in notes["dynamic_sampling"]
    assert kw["entropy_coef"] == 0.01 and "entropy_coef" not in notes      # dapo, one minibatch: exact
    two = to_trl(cfg.replace(minibatches=2), TASK)
    assert two.kwargs["entropy_coef"] == 0.01 and "token mean of the entropy" in two.unmapped["entropy_coef"]


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


def trl_rejects(kw: dict) -> str | None:
    """Why TRL 1.16's GRPOConfig refuses these arguments (its own __post_init__ checks), or None."""
    try:
        with tempfile.TemporaryDirectory() as out, warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            trl.GRPOConfig(output_dir=out, report_to=[], **kw)
    except ValueError as err:
        return str(err)
    return None


@pytest.mark.parametrize("prompts, group_size, minibatches", [
    (5, 4, 3), (5, 4, 2), (8, 8, 3), (6, 3, 4), (8, 8, 4), (1, 2, 1), (7, 5, 7), (64, 64, 16)])
@pytest.mark.parametrize("kl_coef", [0.0, 0.05])
def test_trl_export_is_accepted_by_trl_and_keeps_the_batch(prompts, group_size, minibatches, kl_coef):
    cfg = GRPOConfig(prompts=prompts, group_size=group_size, minibatches=minibatches, kl_coef=kl_coef,
                     ref_reset_every=10, epochs=2, iterations=30)
    export = to_trl(cfg)
    kw = export.kwargs
    assert trl_rejects(kw) is None
    # one TRL generation batch is one of our iterations: prompts x G samples
    assert kw["per_device_train_batch_size"] * kw["steps_per_generation"] == prompts * group_size
    assert kw["max_steps"] == 30 * 2 * kw["steps_per_generation"]
    assert kw["lr_scheduler_type"] == "constant" and kw["max_grad_norm"] == 0.0
    exact_split = (prompts * group_size) % minibatches == 0
    assert kw["steps_per_generation"] == (minibatches if exact_split else 1)
    assert ("minibatches" in export.unmapped) == (minibatches > 1)
    assert kw.get("sync_ref_model", False) == (kl_coef > 0)
    assert ("ref_reset_every" in export.unmapped) == (kl_coef == 0)
    if kl_coef > 0:
        assert kw["ref_model_sync_steps"] == 10 * 2 * kw["steps_per_generation"]


def test_trl_export_of_p5_g4_m3_says_why_it_drops_the_minibatches():
    export = to_trl(GRPOConfig(prompts=5, group_size=4, minibatches=3))
    assert export.kwargs["per_device_train_batch_size"] == 20 and export.kwargs["steps_per_generation"] == 1
    assert "do not divide the 5 x 4 = 20 samples" in export.unmapped["minibatches"]


def trl_two_sided_loss(ratio, adv, eps_low, eps_high, delta):
    """TRL's per-token loss for loss_type grpo/bnpo/dr_grpo/dapo (grpo_trainer.py _compute_loss)."""
    coef_2 = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
    coef_1 = torch.clamp(ratio, max=delta)
    return -torch.minimum(coef_1 * adv, coef_2 * adv)


@pytest.mark.parametrize("dual_clip, exact", [(3.0, True), (1.35, True), (1.25, False), (1.1, False)])
def test_trl_delta_equals_the_dual_clip_only_from_one_plus_epsilon_high(dual_clip, exact):
    cfg = GRPOConfig(clip_eps=0.2, clip_eps_high=0.3, dual_clip=dual_clip)
    export = to_trl(cfg)
    assert ("delta" in export.kwargs) == exact and ("dual_clip" in export.unmapped) == (not exact)
    ratios = torch.linspace(0.3, 4.0, 75, dtype=F64).repeat(2)
    adv = torch.cat([torch.ones(75), -torch.ones(75)]).to(F64)
    zeros = torch.zeros(1, dtype=F64)
    terms = terms_of(cfg)
    ours, _ = grpo_loss(clip_eps=zeros, kl_coef=zeros, terms=terms,
                        **constructed_batch(ratios.tolist(), adv.tolist()))
    theirs = trl_two_sided_loss(ratios, adv, terms.clip_low.item(), terms.clip_high.item(),
                                terms.dual_clip.item()).mean()
    assert bool(abs(ours[0] - theirs) < 1e-9) == exact


def test_trl_export_passes_the_entropy_bonus_and_maps_the_loss_aggregation():
    export = to_trl(GRPOConfig(entropy_coef=0.02))
    kw = export.kwargs
    # one-token responses: TRL's token mean of the entropy is the mean over the samples, as here
    assert kw["entropy_coef"] == 0.02 and "entropy_coef" not in export.unmapped
    assert kw["loss_type"] == "bnpo" and kw["max_completion_length"] == 1
    assert to_trl(GRPOConfig(advantage_estimator="dr_grpo")).kwargs["loss_type"] == "dr_grpo"
    assert "entropy_coef" not in to_trl(GRPOConfig()).unmapped
