"""GRPO on sequences, batched over members, with exact metrics every iteration.

One iteration, for each of E members at once:
1. One forward gives the policy table (E, C, K); log pi of all N responses is one matmul
   (task.py), so responses are drawn whole by inverse CDF from pi(. | c) (the same distribution
   as token-by-token sampling) and the exact metrics are sums over that table.
2. Rewards (rollout.py): the verifier or the reward model, with DAPO's soft overlong punishment
       penalty(|y|) = 0 if |y| <= L - C_buf,  (L - C_buf - |y|) / C_buf x factor otherwise
   and optionally the summed per-token KL subtracted (kl_placement="reward"). With dynamic
   sampling, a prompt slot whose group's rewards are all equal is redrawn (DAPO); with
   ref_reset_every the loss's reference becomes the current policy every N iterations (kl_ref
   in the history stays against the SFT policy).
3. Advantages with the one-token engine's estimators (advantages.member_advantages).
4. epochs x minibatches Adam steps on the aggregated per-token loss (losses.py). Autograd
   differentiates the loss with respect to the small table only; the network's backward is
   written by hand (policy.py).

The same algorithm, one run at a time with autograd and torch.optim.Adam, is
grpo_core/reference/sequence.py; the tests check that this engine equals it. Members may differ
in every SeqGRPOConfig field and share the one-token engine's batch layout (layout.py). Each
draws from its own generator (sampling.draw_iterations), so a member's run is the one it would
have alone (to float round-off of batched matmuls) and the same config gives the same history
bit for bit.
"""
from __future__ import annotations

from typing import Callable, Sequence

import pandas as pd
import torch

from ..advantages import member_advantages
from ..engine import HistoryColumns, ResumableTrainer, RunResult, run_status
from ..layout import BatchLayout, Schedule
from ..models import BatchedAdam
from ..sampling import draw_iterations, generator
from .config import SeqGRPOConfig, SeqRewardModelConfig, SeqSFTConfig, SeqTaskConfig, check_seq_budget
from .losses import SeqLossTerms, aggregate, per_token_loss
from .metrics import METRICS, sequence_metrics
from .policy import sequence_logp
from .rollout import (SeqRewardKL, at_tokens, gather_tokens, reward_tables, row_values, sample_groups,
                      token_index)
from .upstream import SeqUpstream, build_seq_upstream

CHUNK = 64      # iterations whose draws are made at once (the draws do not depend on it)
_FINITE = (METRICS.index("kl_ref"), METRICS.index("entropy"))
BATCH_COLUMNS = ("generated", "batch_reward", "batch_length", "zero_std_frac", "clip_frac_token",
                 "clip_frac_seq", "grad_cosine", "policy_loss", "grad_norm")  # the order _iterate stacks them
HISTORY = HistoryColumns(METRICS, BATCH_COLUMNS)


class SeqTrainer(ResumableTrainer):
    """A batch of sequence-GRPO runs, advanced a few iterations at a time.

        trainer = SeqTrainer(up, configs)
        trainer.advance(50)          # 50 more iterations (fewer at the end)
        partial = trainer.results()  # one RunResult per config, so far
        trainer.advance()            # to the end

    Advancing in pieces gives the same runs as one go (sampling.draw_iterations).
    """

    def __init__(self, up: SeqUpstream, configs: Sequence[SeqGRPOConfig]):
        self.configs = configs = list(configs)
        if not configs:
            raise ValueError("no configs to train")
        check_seq_budget(configs, up.task.config)
        self.up, self.task = up, up.task
        self.schedule = schedule = Schedule(configs)
        self.layout = layout = BatchLayout(configs, schedule)
        self.terms = SeqLossTerms.from_configs(configs)
        self.reward_kl = SeqRewardKL(configs)
        self.estimators = [c.advantage_estimator for c in configs]
        self.mask_truncated = torch.tensor([c.mask_truncated for c in configs]).view(-1, 1)
        self.ref_reset = torch.tensor([c.ref_reset_every for c in configs])
        self.uses_ref = self.reward_kl.any or self.terms.uses_kl
        # the exact per-prefix KL or entropy rows, only when a loss term uses them
        self.needs_rows = bool(((self.terms.k_code == 0) & (self.terms.beta > 0)).any()
                               or self.terms.uses_entropy)
        n, task = layout.n, up.task
        self.responses, self.n_ctx = task.responses, task.n_contexts
        self.big_l, self.vocab = task.config.max_length, task.config.alphabet_size + 1
        self.net = up.sft.net
        self.x = self.net.inputs(task.contexts)
        self.theta = up.sft.theta.repeat(n, 1)
        self.opt = BatchedAdam(self.theta, torch.tensor([c.lr for c in configs]))
        self.ref_table, self.ref_seq = up.sft.logp_table, up.sft.seq_logp   # (C, K), (C, N)
        if bool((self.ref_reset > 0).any()):  # members whose reference moves keep their own copy
            self.ref_table = self.ref_table.repeat(n, 1, 1)
        self.rewards_cn = reward_tables(up, configs)                           # (E, C, N)
        self.rm_scores = up.rm.scores if up.rm is not None else None
        self.gens = [generator(c.seed) for c in configs]
        self.exact = torch.empty(schedule.t_max + 1, n, len(METRICS))
        self.stats = torch.zeros(schedule.t_max, n, len(BATCH_COLUMNS))
        self._start_tracking(n, schedule.t_max, theta=self.theta)
        self._forward()
        self._observe()

    def _after_iteration(self) -> None:
        self._forward()

    def _forward(self) -> None:
        self.table, self.h1 = self.net.forward(self.theta, self.x, self.n_ctx)
        self.seq_logp = sequence_logp(self.table, self.responses)               # (E, C, N)

    def _observe(self) -> None:
        """Exact metrics of the current policy as row `iteration`; a non-finite member freezes."""
        it = self.iteration
        values = sequence_metrics(self.seq_logp, self.task, self.ref_seq, self.rm_scores)
        self.exact[it] = torch.stack([values[k] for k in METRICS], dim=1)
        # kl_ref and entropy are finite exactly when the policy is (rm_reward and the conditional
        # lengths may be NaN legitimately: no reward model, or no mass on correct responses).
        finite = torch.isfinite(self.exact[it][:, list(_FINITE)]).all(1)
        self._keep_last_finite(it, bool(finite.all()), lambda: finite, theta=self.theta)

    def _draw(self) -> None:
        """Each member's prompts (T, E, P, K) and uniforms (T, E, P, K, G) for the next CHUNK
        iterations (sampling.draw_iterations: the same stream however the run is chunked)."""
        layout, start = self.layout, self.iteration
        self.prompts_chunk = torch.zeros(CHUNK, layout.n, layout.p_max, self.schedule.k_max, dtype=torch.long)
        self.u_chunk = torch.zeros(CHUNK, layout.n, layout.p_max, self.schedule.k_max, layout.g_max)
        for e, (gen, cfg) in enumerate(zip(self.gens, self.configs)):
            n = min(CHUNK, cfg.iterations - start)
            if n > 0:
                tries = cfg.dynamic_sampling + 1
                picks, u = draw_iterations(gen, n, cfg.prompts, tries, cfg.group_size, self.n_ctx)
                self.prompts_chunk[:n, e, :cfg.prompts, :tries] = picks
                self.u_chunk[:n, e, :cfg.prompts, :tries, :cfg.group_size] = u

    def _iterate(self) -> None:
        layout, schedule, it, row = self.layout, self.schedule, self.iteration, self.iteration % CHUNK
        if row == 0:
            self._draw()
        responses, vocab, n_mem = self.responses, self.vocab, layout.n
        valid = layout.valid_flat
        table = self.table.detach()
        if self.ref_table.dim() == 3 and it > 0:  # reference reset (TRL sync_ref_model): pi_ref <- pi
            reset = (self.ref_reset > 0) & (it % self.ref_reset.clamp_min(1) == 0)
            self.ref_table = torch.where(reset.view(-1, 1, 1), table, self.ref_table)
        ctx, resp, rewards, generated = sample_groups(
            layout, schedule, self.reward_kl, responses, seq_logp=self.seq_logp, table=table,
            ref_table=self.ref_table, rewards_cn=self.rewards_cn, prompts=self.prompts_chunk[row],
            u=self.u_chunk[row], vocab=vocab)
        index, shape = token_index(responses, ctx, resp), (n_mem, -1, self.big_l)
        old_logp = gather_tokens(table, index, shape)                           # (E, S, L)
        ref_logp = gather_tokens(self.ref_table, index, shape) if self.uses_ref else None
        real = responses.mask[resp]                                             # (E, S, L)
        truncated = responses.truncated[resp]
        token_mask = (real & (valid & ~(self.mask_truncated & truncated)).unsqueeze(-1)).to(table.dtype)
        adv, zero_std = member_advantages(self.estimators, rewards.view(n_mem, layout.p_max, layout.g_max),
                                          layout.valid)
        adv = adv.flatten(1)
        # dapo's normalizer: the batch's tokens per minibatch (TRL 1.16: num_items / steps_per_generation)
        batch_tokens = token_mask.sum((1, 2)) / layout.minibatches.squeeze(1)
        in_run = it < schedule.iterations
        step_sums = torch.zeros(n_mem, 4)      # clip_frac_token, clip_frac_seq, policy_loss, grad_norm
        for step in range(schedule.steps_max):
            if step:
                self._forward()
            active = in_run & (step < schedule.steps) & (self.first_bad > it)
            if schedule.single_minibatch:
                in_mb, mask, n_seq = valid, token_mask, layout.n_samples
            else:
                in_mb = (layout.minibatch_of_sample == (step % layout.minibatches)) & valid   # (E, S)
                mask, n_seq = token_mask * in_mb.unsqueeze(-1), in_mb.sum(1)
            leaf = self.table.detach().requires_grad_(True)
            new_logp = leaf.flatten(1).gather(1, index).view(shape)
            exact_kl = entropy = None
            if self.needs_rows:
                kl_rows, h_rows = row_values(leaf, self.ref_table, vocab)
                exact_kl = at_tokens(kl_rows, responses, ctx, resp, vocab)
                entropy = at_tokens(h_rows, responses, ctx, resp, vocab)
            loss_tok, clipped = per_token_loss(new_logp, old_logp, ref_logp, adv, mask, self.terms,
                                               exact_kl=exact_kl, entropy=entropy)
            loss = aggregate(loss_tok, mask, self.terms.agg, n_seq=n_seq, batch_tokens=batch_tokens,
                             max_length=self.big_l)
            dtable, = torch.autograd.grad(loss.sum(), leaf)
            if step == 0:  # the exact gradient rides along the batch gradient's backward pass
                grad, exact = self.net.backward(self.theta, self.x, self.h1, self.table,
                                                torch.stack([dtable, self._exact_dtable()], 1)).unbind(1)
                cosine = torch.nn.functional.cosine_similarity(-grad, exact, dim=1, eps=1e-30)
            else:
                grad = self.net.backward(self.theta, self.x, self.h1, self.table, dtable)
            hit = clipped & (mask > 0)
            step_sums += torch.stack([hit.sum((1, 2)) / mask.sum((1, 2)).clamp_min(1),
                                      hit.any(-1).sum(1) / n_seq.clamp_min(1),
                                      loss.detach(), grad.norm(dim=1)], 1) * active.unsqueeze(1)
            self.opt.step(grad, None if bool(active.all()) else active)
        n_valid, steps = layout.n_samples, schedule.steps.unsqueeze(1)
        self.stats[it] = torch.cat([generated.unsqueeze(1), torch.stack([
            (rewards * valid).sum(1) / n_valid,
            (responses.length[resp] * valid).sum(1) / n_valid,
            (zero_std & layout.valid_p).sum(1) / layout.valid_p.sum(1)], 1),
            step_sums[:, :2] / steps, cosine.unsqueeze(1), step_sums[:, 2:] / steps], 1)

    def _exact_dtable(self) -> torch.Tensor:
        """dJ/dlogp_table (E, C, K) of the exact objective J = 1/C sum_c sum_y pi(y|c) r(c, y):
        1/C sum_y pi(y|c) r(c, y) M[k, y], the policy gradient theorem summed over every response
        (no baseline needed: the sum is exact). grad_cosine = cos(-batch loss gradient, dJ/dtheta)."""
        weighted = self.seq_logp.detach().exp() * self.rewards_cn / self.n_ctx  # (E, C, N)
        return torch.matmul(weighted, self.responses.incidence.T)

    def results(self) -> list[RunResult]:
        """Each member's run so far: its own iterations, up to a stop, before any divergence."""
        kept = self._kept_iterations(self.schedule.iterations)
        good_theta = self.last_finite["theta"]
        table, _ = self.net.forward(good_theta, self.x, self.n_ctx)
        final_seq = sequence_logp(table, self.responses).detach()
        out = []
        for e, cfg in enumerate(self.configs):
            n = int(kept[e])
            history = HISTORY.frame({k: self.exact[1:n + 1, e, j] for j, k in enumerate(METRICS)},
                                    self.stats[:n, e])
            final = {k: float(self.exact[n, e, j]) for j, k in enumerate(METRICS)}
            ctx_metrics = sequence_metrics(final_seq[e], self.task, self.ref_seq, self.rm_scores,
                                           per_context=True)
            per_context = pd.DataFrame({"context": range(self.n_ctx),
                                        "answer": self.task.answer.numpy(),
                                        **{k: v.numpy() for k, v in ctx_metrics.items()}})
            out.append(RunResult(cfg, history, final, per_context, final_seq[e].clone(),
                                 self.net.state_dict(good_theta[e]),
                                 run_status(n, cfg.iterations, self.iteration)))
        return out


def train_seq(up: SeqUpstream, configs: Sequence[SeqGRPOConfig],
              on_iteration: Callable[[int, int], bool | None] | None = None) -> list[RunResult]:
    """Train len(configs) runs as one batch from the SFT policy; one RunResult per config."""
    trainer = SeqTrainer(up, configs)
    trainer.advance(on_iteration=on_iteration)
    return trainer.results()


def run_seq(configs: Sequence[SeqGRPOConfig], task_cfg: SeqTaskConfig = SeqTaskConfig(),
            sft_cfg: SeqSFTConfig = SeqSFTConfig(), rm_cfg: SeqRewardModelConfig = SeqRewardModelConfig()
            ) -> tuple[SeqUpstream, list[RunResult]]:
    """From configs to results: builds the task, SFT (and the reward model if a run needs it)."""
    needs_rm = any(c.reward == "reward_model" for c in configs)
    up = build_seq_upstream(task_cfg, sft_cfg, rm_cfg if needs_rm else None)
    return up, train_seq(up, configs)
