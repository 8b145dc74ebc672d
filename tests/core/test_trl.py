"""The TRL export checked by TRL 1.16 itself (requirements-trl.txt; make test installs it, the app
never imports it): trl.GRPOConfig accepts every exported config and reads each field back, and
GRPOTrainer._compute_loss, run on the same per-token log-probs, gives the sequence engine's loss
and gradient, minibatches included, for every loss type both have."""
from __future__ import annotations

import warnings
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
import trl
from trl import GRPOTrainer

from grpo_core import GRPOConfig, RLVRConfig
from grpo_core.export import to_trl
from grpo_core.methods.ppo import PPOConfig, ReinforcePPConfig, ReMaxConfig
from grpo_core.sequence import SeqGRPOConfig, SeqTaskConfig
from grpo_core.sequence.losses import SeqLossTerms, aggregate, per_token_loss
from tests.helpers import float64

TASK = SeqTaskConfig()
ONE_TOKEN = [GRPOConfig(), RLVRConfig(), GRPOConfig(clip_eps_high=0.28, dual_clip=3.0, minibatches=4, epochs=3),
             GRPOConfig(kl_coef=0.0, advantage_estimator="dr_grpo", entropy_coef=0.1),
             GRPOConfig(advantage_estimator="batch_std", ref_reset_every=50, kl_estimator="k3", prompts=5,
                        group_size=4, minibatches=3)]
SEQUENCE = [SeqGRPOConfig(loss_type=t) for t in ("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "seq-mean-token-mean",
                                                 "token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")]
SEQUENCE += [SeqGRPOConfig(loss_type="luspo", importance_sampling_level="sequence", kl_coef=0.1),
             SeqGRPOConfig(importance_sampling_level="sequence", minibatches=4, epochs=2, kl_coef=0.05),
             SeqGRPOConfig(loss_type="dapo", mask_truncated=True, overlong_buffer=2, clip_eps_high=0.28,
                           minibatches=2, entropy_coef=0.01),
             SeqGRPOConfig(loss_type="bnpo", dual_clip=2.0, kl_coef=0.1, entropy_coef=0.02)]


def trl_config(kwargs: dict, tmp_path) -> trl.GRPOConfig:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)     # transformers' own deprecations
        return trl.GRPOConfig(output_dir=str(tmp_path), report_to=[], **kwargs)


@pytest.mark.parametrize("cfg", ONE_TOKEN + SEQUENCE, ids=lambda c: f"{type(c).__name__}-{c.to_json()[:0]}")
def test_trl_accepts_every_exported_config_and_reads_each_field_back(cfg, tmp_path):
    kwargs = to_trl(cfg, TASK if isinstance(cfg, SeqGRPOConfig) else None).kwargs
    args = trl_config(kwargs, tmp_path)
    assert {k: getattr(args, k) for k in kwargs} == kwargs
    assert args.bf16 is False and args.use_bias_correction_kl is False   # TRL's defaults would differ
    assert args.generation_batch_size == cfg.prompts * cfg.group_size    # one of our iterations


@pytest.mark.parametrize("cfg", [PPOConfig(), ReinforcePPConfig(), ReMaxConfig()], ids=lambda c: type(c).__name__)
def test_methods_trl_grpo_cannot_train_are_refused_with_where_to_go(cfg):
    with pytest.raises(ValueError, match="no TRL GRPOConfig trains") as err:
        to_trl(cfg)
    assert "verl" in str(err.value) or "PPOTrainer" in str(err.value)


def trl_step(args: trl.GRPOConfig, logp, old, ref, adv, mask, entropies, num_items):
    """TRL's own GRPOTrainer._compute_loss for one optimizer step's micro-batch, on our log-probs:
    a stand-in trainer holding just what the method reads (one process, no accumulation)."""
    accelerator = SimpleNamespace(num_processes=1, sync_gradients=True, gather=lambda x: x,
                                  gather_for_metrics=lambda x: x, reduce=lambda x, reduction="sum": x)
    trainer = SimpleNamespace(
        args=args, loss_type=args.loss_type, beta=args.beta, epsilon_low=args.epsilon,
        epsilon_high=args.epsilon_high if args.epsilon_high is not None else args.epsilon,
        importance_sampling_level=args.importance_sampling_level, top_entropy_quantile=args.top_entropy_quantile,
        off_policy_mask_threshold=args.off_policy_mask_threshold, use_vllm=False,
        vllm_importance_sampling_correction=False, model=SimpleNamespace(training=True),
        current_gradient_accumulation_steps=args.gradient_accumulation_steps,
        max_completion_length=args.max_completion_length, accelerator=accelerator,
        entropy_coef=args.entropy_coef, use_adaptive_entropy=False, _entropy_bonus_enabled=args.entropy_coef != 0,
        _metrics={"train": defaultdict(list)}, aux_loss_enabled=False,
        _get_per_token_logps_and_entropies=lambda *a, **k: (logp, entropies, None))
    b, big_l = mask.shape
    inputs = {"prompt_ids": torch.zeros(b, 1, dtype=torch.long), "prompt_mask": torch.ones(b, 1),
              "completion_ids": torch.zeros(b, big_l, dtype=torch.long), "completion_mask": mask,
              "advantages": adv, "old_per_token_logps": old, "ref_per_token_logps": ref,
              "num_items_in_batch": num_items}
    return GRPOTrainer._compute_loss(trainer, None, inputs)


def random_batch(seed: int, responses: int = 16, big_l: int = 6):
    """Per-token log-probs (new, old, ref) with ratios on both sides of the clip, advantages,
    entropies and a mask of responses of different lengths (some fully masked: truncated)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, big_l + 1, (responses,), generator=g)
    mask = (torch.arange(big_l) < lengths.unsqueeze(1)).double()
    old = -torch.rand(responses, big_l, generator=g, dtype=torch.float64) * 3
    new = old + (torch.rand(responses, big_l, generator=g, dtype=torch.float64) - 0.5) * 0.8
    ref = old + (torch.rand(responses, big_l, generator=g, dtype=torch.float64) - 0.5) * 0.4
    adv = torch.randn(responses, generator=g, dtype=torch.float64)
    entropies = torch.rand(responses, big_l, generator=g, dtype=torch.float64) * 1.5
    return new, old, ref, adv, mask, entropies


@pytest.mark.parametrize("cfg", SEQUENCE, ids=lambda c: f"{c.loss_type}-{c.importance_sampling_level}-m{c.minibatches}")
@pytest.mark.parametrize("seed", [0, 1])
def test_trls_loss_and_gradient_equal_the_sequence_engines(cfg, seed, tmp_path):
    export = to_trl(cfg, TASK)
    args = trl_config(export.kwargs, tmp_path)
    entropy_exact = "entropy_coef" not in export.unmapped
    with float64():
        new, old, ref, adv, mask, entropies = random_batch(seed, big_l=TASK.max_length)
        terms = SeqLossTerms.from_configs([cfg])
        m = cfg.minibatches
        rows = torch.arange(len(adv)) * m // len(adv)                          # equal minibatches of responses
        for mb in range(m):
            part = rows == mb
            theirs_leaf = new[part].clone().requires_grad_(True)
            theirs = trl_step(args, theirs_leaf, old[part], ref[part], adv[part], mask[part], entropies[part],
                              mask.sum())
            (theirs_grad,) = torch.autograd.grad(theirs, theirs_leaf)
            ours_leaf = new[part].clone().requires_grad_(True)
            step_mask = mask[part].unsqueeze(0)
            loss_tok, _ = per_token_loss(ours_leaf.unsqueeze(0), old[part].unsqueeze(0), ref[part].unsqueeze(0),
                                         adv[part].unsqueeze(0), step_mask, terms,
                                         entropy=entropies[part].unsqueeze(0) if entropy_exact else None)
            ours = aggregate(loss_tok, step_mask, terms.agg, n_seq=part.sum().view(1),
                             batch_tokens=(mask.sum() / m).view(1), max_length=TASK.max_length)[0]
            if not entropy_exact:   # said in the export's notes: compare without the entropy bonus
                theirs = theirs + args.entropy_coef * (entropies[part] * mask[part]).sum() / mask[part].sum().clamp(min=1)
            if "loss_type" in export.unmapped:  # the note's claim: TRL's dr_grpo is this loss over B
                assert "divided by the constant B" in export.unmapped["loss_type"]
                theirs = theirs * part.sum()
            (ours_grad,) = torch.autograd.grad(ours, ours_leaf)
            torch.testing.assert_close(ours.detach(), theirs.detach(), atol=1e-12, rtol=1e-9)
            scale = part.sum() if "loss_type" in export.unmapped else 1
            torch.testing.assert_close(ours_grad * mask[part], theirs_grad * mask[part] * scale, atol=1e-12, rtol=1e-9)
