"""How a batch of one-token runs shares one computation: the schedule of iterations and steps,
where each member's samples sit, the masks that hide what a member does not have, and the
per-iteration records reduced from them.

Every member's samples sit in one (P, G) layout of slots: slot p holds a group of G samples. A
grouped member's slot p is its prompt p and its group. A flat member (one response per prompt,
no dynamic sampling, an estimator that uses no group statistic: PPO, REINFORCE++) puts its
prompts one per sample in order, so its 64 prompts fill 8 slots of 8 next to GRPO's 8 x 8
instead of padding a (64, 8) layout. Each sample carries its own context; the group structure
is used only by the grouped members' estimators and by dynamic sampling.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .config import GRPOConfig
from .losses import aggregation_weights

# Iterations are processed in chunks: randomness is drawn, and records are reduced, once per
# chunk. A chunk is at most MAX_CHUNK iterations and is sized so that the batch's draws take at
# most DRAW_BYTES and its per-iteration policy records at most RECORD_BYTES, whatever the request.
MAX_CHUNK = 64
DRAW_BYTES = 16 * 2**20
RECORD_BYTES = 8 * 2**20

# Estimators that use no group statistic: a member with one of these, one response per prompt
# and no dynamic sampling is laid out flat.
FLAT_ESTIMATORS = ("none", "reinforce_pp", "critic", "remax")

EXACT_COLUMNS = ("true_reward", "rm_reward", "kl_ref", "entropy", "correct_prob")
BATCH_COLUMNS = ("generated", "batch_reward", "first_group_reward", "adv_abs", "zero_std_frac",
                 "clip_frac", "clip_frac_low", "clip_frac_high", "policy_loss", "batch_kl",
                 "kl_estimate", "grad_norm")
# What each member records after its steps on a batch, summed over the steps.
STEP_RECORD = ("n_clip_low", "n_clip_high", "policy_loss", "kl", "kl_estimate", "grad_norm")
# What each iteration's samples leave for BATCH_COLUMNS: sums over the member's batch.
SAMPLE_SUMS = ("reward", "first_group_reward", "adv_abs", "zero_std_groups")


def _vector(configs, name: str, dtype=torch.long) -> torch.Tensor:
    return torch.tensor([getattr(c, name) for c in configs], dtype=dtype)


class Schedule:
    """How many iterations and optimizer steps each member takes, and whether they all agree."""

    def __init__(self, configs: Sequence[GRPOConfig]):
        self.iterations, self.epochs = _vector(configs, "iterations"), _vector(configs, "epochs")
        self.minibatches = _vector(configs, "minibatches")
        self.tries = _vector(configs, "dynamic_sampling") + 1              # DAPO redraws + 1
        self.steps = self.epochs * self.minibatches                       # optimizer steps per batch
        self.t_max, self.steps_max = int(self.iterations.max()), int(self.steps.max())
        self.k_max, self.m_max = int(self.tries.max()), int(self.minibatches.max())
        self.lockstep = bool((self.iterations == self.t_max).all() and (self.steps == self.steps_max).all())
        self.single_minibatch = bool((self.minibatches == 1).all())
        self.in_step = [step < self.steps for step in range(self.steps_max)]   # (E,) per step


class BatchLayout:
    """Each member's samples in the shared (P, G) slots (see the module docstring) and its masks:
    valid (E, P, G) real samples, their minibatch, the loss weights and per-context counts."""

    def __init__(self, configs: Sequence[GRPOConfig], schedule: Schedule):
        self.n = n = len(configs)
        self.flat_list = [c.group_size == 1 and c.dynamic_sampling == 0
                          and c.advantage_estimator in FLAT_ESTIMATORS for c in configs]
        self.flat = torch.tensor(self.flat_list)                                        # (E,)
        self.any_flat = any(self.flat_list)
        self.flat_rows = self.flat.nonzero().squeeze(1)                                 # (F,)
        self.g_max = max((c.group_size for c, f in zip(configs, self.flat_list) if not f), default=1)
        self.p_max = max(-(-c.prompts // self.g_max) if f else c.prompts
                         for c, f in zip(configs, self.flat_list))
        prompts, group = _vector(configs, "prompts"), _vector(configs, "group_size")
        self.n_prompts = prompts                                                        # (E,)
        slot, pos = torch.arange(self.p_max), torch.arange(self.p_max * self.g_max)
        grouped = ((slot < prompts.unsqueeze(1)).unsqueeze(-1)
                   & (torch.arange(self.g_max) < group.view(-1, 1, 1)))                 # (E, P, G)
        self.valid = grouped
        if self.any_flat:
            flat_valid = (pos < prompts.unsqueeze(1)).view(n, self.p_max, self.g_max)
            self.valid = torch.where(self.flat.view(-1, 1, 1), flat_valid, grouped)
        self.valid_p = self.valid.any(-1)                                               # (E, P)
        self.valid_flat = self.valid.flatten(1)                                         # (E, S)
        self.first_group_size = torch.where(self.flat, 1, group)                        # (E,)
        self.n_samples = self.valid_flat.sum(1)                                         # (E,)
        real = torch.get_default_dtype()        # float32; float64 when a test compares exactly
        self.n_samples_float = self.n_samples.to(real)
        # Minibatch m of a member holds its prompts p with p * M // P == m (as equal as possible);
        # a sample's prompt is its slot (grouped) or its position (flat). Per-sample (E, S)
        # temporaries are made only for what needs them: a batch holds up to ~10^7 samples.
        self.minibatches = n_mb = schedule.minibatches.unsqueeze(1)
        mb_of = lambda p: (p * n_mb // prompts.unsqueeze(1)).minimum(n_mb - 1)
        self.minibatch_of_sample = mb_of(slot).unsqueeze(-1).expand(-1, -1, self.g_max).flatten(1)  # (E, S)
        if self.any_flat:
            self.minibatch_of_sample = torch.where(self.flat.view(-1, 1), mb_of(pos), self.minibatch_of_sample)
        # Contexts are counted per slot (a slot's samples share one), or per sample when a flat
        # member's slots mix contexts: (member, minibatch, weight) of each, for context_weights.
        if self.any_flat:
            self.ctx_count = (torch.arange(n).unsqueeze(1).expand(-1, pos.numel()),
                              self.minibatch_of_sample, self.valid_flat.to(real))          # (E, S) each
        else:
            self.ctx_count = (torch.arange(n).unsqueeze(1).expand(-1, self.p_max),
                              self.minibatch_of_sample.view(n, self.p_max, self.g_max)[..., 0],
                              self.valid_p.to(real))                                       # (E, P) each
        self.weight = aggregation_weights(self.valid_flat)                   # (E, S): one minibatch

    def step_weights(self, step: int, ctx_weight_mb: torch.Tensor):
        """Sample weights (E, S) and context weights (E, C) for optimizer step `step` of a batch."""
        mb = (step % self.minibatches)                                                  # (E, 1)
        weight = aggregation_weights(self.valid_flat, self.minibatch_of_sample == mb)
        return weight, ctx_weight_mb[torch.arange(self.n), mb.squeeze(1)]


def chunk_length(layout: BatchLayout, schedule: Schedule, n_ctx: int, vocab: int) -> int:
    """Iterations per chunk for this batch: as many as fit DRAW_BYTES of draws and RECORD_BYTES
    of policy records (at least 1, at most MAX_CHUNK). Results do not depend on it."""
    draw = layout.n * layout.p_max * schedule.k_max * 12 * layout.g_max   # contexts int64, uniforms float32
    record = 4 * layout.n * n_ctx * vocab * 4                            # logp row and metric temporaries
    return max(1, min(MAX_CHUNK, DRAW_BYTES // draw, RECORD_BYTES // record))


def sample_sums(layout: BatchLayout, rewards, adv, zero_std) -> torch.Tensor:
    """The sums (E, len(SAMPLE_SUMS)) an iteration's batch statistics need, from rewards
    (E, P, G), adv (E, S) and zero_std (E, P): so no per-sample tensor outlives its iteration."""
    masked = torch.where(layout.valid, rewards, 0.0)
    first, zero = masked[:, 0].sum(1), (zero_std & layout.valid_p).sum(1)
    if layout.any_flat:  # a flat member's first group is its first sample, and every group has one
        first = torch.where(layout.flat, masked[:, 0, 0], first)            # value: no spread
        zero = torch.where(layout.flat, layout.n_prompts, zero)
    return torch.stack([masked.sum((1, 2)), first, adv.abs().sum(1), zero], dim=1)


def batch_stats(layout: BatchLayout, schedule: Schedule, sums, generated, record) -> torch.Tensor:
    """Per-iteration batch statistics (T, E, len(BATCH_COLUMNS)) from sums (T, E, len(SAMPLE_SUMS)),
    generated (T, E) and record (T, E, len(STEP_RECORD)) the per-step values summed over steps."""
    n_valid, steps = layout.n_samples, schedule.steps                       # (E,)
    s = dict(zip(SAMPLE_SUMS, sums.unbind(-1)))
    rec = dict(zip(STEP_RECORD, record.unbind(-1)))
    trained = n_valid * schedule.epochs          # samples the steps trained on: each once per epoch
    low, high = rec["n_clip_low"] / trained, rec["n_clip_high"] / trained
    return torch.stack([
        generated,
        s["reward"] / n_valid,
        s["first_group_reward"] / layout.first_group_size,
        s["adv_abs"] / n_valid,
        s["zero_std_groups"] / layout.n_prompts,
        low + high, low, high,
        rec["policy_loss"] / steps, rec["kl"] / steps, rec["kl_estimate"] / steps,
        rec["grad_norm"] / steps], dim=-1)
