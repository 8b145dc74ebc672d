"""GRPO: Group Relative Policy Optimization (Shao et al., DeepSeekMath, 2024), batched over runs.

One iteration, for each of E independent runs (members) at once:

1. Sample P prompts c_p ~ U(C) and a group of G responses v_pg ~ pi_old(. | c_p) (rollout.py).
2. Score them: r_pg = r(c_p, v_pg), with the learned reward model (GRPO) or the verifiable
   reward 1[v_pg = v*_c] (RLVR).
3. Group-relative advantages, no critic:  A_pg = (r_pg - mean_g r_pg) / (std_g r_pg + eps)
   (advantages.py, every estimator).
4. `epochs` Adam steps on the clipped surrogate with a KL penalty to the reference (SFT) policy:

       L = -1/(PG) sum_pg min(rho_pg A_pg, clip(rho_pg, 1 - eps_c, 1 + eps_c) A_pg)
           + beta * 1/P sum_p KL(pi(. | c_p) || pi_ref(. | c_p)),   rho_pg = pi(v_pg|c_p) / pi_old(v_pg|c_p)

   with the loss's gradient written by hand (losses.py). The KL term is exact (a sum over the
   vocabulary), as in the notebook, or a sampled estimate.

The same algorithm, one run at a time with autograd and torch.optim.Adam, is
grpo_core/reference/grpo.py; the tests check that this engine equals it. Members may differ in
every GRPOConfig field. Each draws its randomness from its own generator, and shorter groups,
fewer prompts, epochs or iterations are masked (layout.py), so a member's trajectory is the one
it would follow alone (to float round-off: batched matrix products may round a member
differently, ~1e-7, depending on the batch). The policy is evaluated on the C contexts only,
once per step, and samples gather from that (E, C, V) table.
"""
from __future__ import annotations

from typing import Callable, Sequence

import pandas as pd
import torch

from .advantages import member_advantages
from .config import GRPOConfig, check_budget
from .engine import HistoryColumns, ResumableTrainer, RunResult, run_status
from .layout import (BATCH_COLUMNS, EXACT_COLUMNS, SAMPLE_SUMS, STEP_RECORD, BatchLayout, Schedule,
                     batch_stats, chunk_length, sample_sums)
from .losses import LossTerms, at_samples, context_weights, grpo_logits_grad
from .methods.baselines import Baselines
from .metrics import policy_metrics
from .models import BatchedAdam
from .problem import Problem
from .rollout import RewardKL, draw, sample_groups
from .sampling import generator
from .sft import SFTResult, sft_policy

HISTORY = HistoryColumns(EXACT_COLUMNS, BATCH_COLUMNS)


def reward_table(problem: Problem, cfg: GRPOConfig, rm_table: torch.Tensor | None) -> torch.Tensor:
    """(C, V) reward a config trains on: the reward model's scores or the verifiable reward."""
    if cfg.reward == "verifiable":
        return problem.verifiable_reward
    if rm_table is None:
        raise ValueError("a GRPO run with reward='reward_model' needs the reward model's table")
    return rm_table


def train_grpo(problem: Problem, sft: SFTResult, rm_table: torch.Tensor | None,
               configs: Sequence[GRPOConfig],
               on_iteration: Callable[[int, int], bool | None] | None = None) -> list[RunResult]:
    """Train len(configs) runs together from the SFT policy; returns one RunResult per config.

    rm_table (C, V): the reward model's scores (needed by members with reward='reward_model').
    on_iteration(done, total) is called after each iteration; returning False stops every run
    there, keeping the iterations finished so far. A member whose parameters become non-finite
    stops at its last finite iteration, and its result says so.
    """
    trainer = GRPOTrainer(problem, sft, rm_table, configs)
    trainer.advance(on_iteration=on_iteration)
    return trainer.results()


class GRPOTrainer(ResumableTrainer):
    """A batch of GRPO runs that can be advanced a few iterations at a time (live training).

        trainer = GRPOTrainer(problem, sft, rm_table, configs)
        trainer.advance(50)          # 50 more iterations (fewer at the end)
        partial = trainer.results()  # the runs so far, as RunResults
        trainer.advance()            # to the end

    Advancing in pieces gives exactly the runs train_grpo gives in one go: a run's randomness is
    one stream from its own generator, however it is chunked (sampling.draw_iterations).
    """

    def __init__(self, problem: Problem, sft: SFTResult, rm_table: torch.Tensor | None,
                 configs: Sequence[GRPOConfig]):
        self.configs = configs = list(configs)
        check_budget(configs)
        self.problem, self.rm_table = problem, rm_table
        self.schedule = schedule = Schedule(configs)
        self.layout = layout = BatchLayout(configs, schedule)
        self.terms = LossTerms.from_configs(configs)
        self.reward_kl = RewardKL(configs, self.terms)
        self.estimators = [c.advantage_estimator for c in configs]
        self.kl_coef = torch.tensor([c.kl_coef for c in configs])
        self.use_kl = bool((self.kl_coef > 0).any())
        self.ref_reset = torch.tensor([c.ref_reset_every for c in configs])
        n, n_ctx, vocab = layout.n, problem.n_contexts, problem.vocab_size
        self.net = sft_policy(sft)
        theta = self.net.from_state_dict(sft.state_dict).repeat(n, 1)              # (E, N)
        lr = torch.tensor([c.lr for c in configs])
        self.baselines = Baselines.for_batch(configs, problem.contexts, self.net)
        self.fused = self.baselines is not None and self.baselines.fused
        if self.fused:  # the critics' rows join the policies' parameters (methods/baselines.py)
            rows, rows_lr = self.baselines.fused_rows()
            theta, lr = torch.cat([theta, rows]), torch.cat([lr, rows_lr])
        self.theta_all = theta                      # (E [+ E_c], N): the policies [and critics]
        self.theta = theta[:n]                      # the policies (a view)
        self.params = self.net.layout.views(theta)
        self.x1 = self.net.inputs(problem.contexts, theta.shape[0])
        self.opt = BatchedAdam(theta, lr)
        self.sft_logp = sft.logp                                                # (C, V)
        self.ref_logp = (self.sft_logp if not bool((self.ref_reset > 0).any())
                         else self.sft_logp.repeat(n, 1, 1))
        self.rewards_cv = torch.stack([reward_table(problem, c, rm_table) for c in configs]).flatten(1)
        self.gens = [generator(c.seed) for c in configs]
        self.row_start = torch.arange(n_ctx) * vocab                # flat index c * V of (c, 0)

        # Records are reduced once per chunk (and when results are asked for), so memory stays
        # bounded: exact metrics of the policy after each iteration (row 0: the SFT start) and
        # the batch statistics of each iteration, from per-iteration sums.
        self.chunk = chunk_length(layout, schedule, n_ctx, vocab)
        self.exact: dict[str, torch.Tensor] = {}
        self.stats = torch.zeros(schedule.t_max, n, len(BATCH_COLUMNS))
        self.logp_buf = torch.empty(self.chunk, n, n_ctx, vocab)
        self.sums_buf = torch.empty(self.chunk, n, len(SAMPLE_SUMS))
        self.generated_buf = torch.empty(self.chunk, n)
        self.record_buf = torch.empty(self.chunk, n, len(STEP_RECORD))
        self._start_tracking(n, schedule.t_max, theta=self.theta, logp=torch.empty(n, n_ctx, vocab))
        self._forward()
        self._observe()

    def _forward(self):
        """The current policies' logits (E, C, V) and, when fused, the critics' values (E_c, C)."""
        out, self.h1 = self.net.forward(self.params, self.x1)
        self.logits = out[:self.layout.n]
        self.values = out[self.layout.n:, :, 0] if self.fused else None
        return self.logits, self.values

    def _after_iteration(self) -> None:
        if self.iteration % self.chunk == 0:
            self._flush_stats()

    def _observe(self) -> None:
        """Record the current policy as the exact-metrics row of iteration `self.iteration`."""
        it, row = self.iteration, self.iteration % self.chunk
        logp = torch.log_softmax(self.logits, -1, out=self.logp_buf[row])   # (E, C, V)
        self._keep_last_finite(it, not self.diverged and bool(torch.isfinite(logp).all()),
                               lambda: torch.isfinite(logp).flatten(1).all(1), theta=self.theta, logp=logp)
        if row == self.chunk - 1:
            self._flush_exact()

    def _flush_exact(self) -> None:
        """Exact metrics of the policies recorded since the last chunk boundary."""
        it, row = self.iteration, self.iteration % self.chunk
        chunk = policy_metrics(self.logp_buf[:row + 1], self.problem, self.rm_table, self.sft_logp)
        for name, values in chunk.items():
            self.exact.setdefault(name, torch.empty(self.t_max + 1, self.layout.n))[it - row:it + 1] = values

    def _flush_stats(self) -> None:
        """Batch statistics of the iterations done since the last chunk boundary."""
        last = self.iteration - 1                   # index of the last finished iteration
        if last < 0:
            return
        row = last % self.chunk
        self.stats[last - row:last + 1] = batch_stats(
            self.layout, self.schedule, self.sums_buf[:row + 1], self.generated_buf[:row + 1],
            self.record_buf[:row + 1])

    def _iterate(self) -> None:
        """One iteration for every member: sample and score groups, then the policy steps."""
        layout, schedule, terms, net = self.layout, self.schedule, self.terms, self.net
        it, row = self.iteration, self.iteration % self.chunk
        n_mem, n_ctx = layout.n, self.problem.n_contexts
        logp = self.logp_buf[row]
        if row == 0:
            self.prompts_chunk, self.u_chunk = draw(self.gens, self.configs, layout, it, n_ctx, (
                self.chunk, schedule.k_max, n_mem, layout.p_max, layout.g_max))
        if self.ref_logp.dim() == 3 and it > 0:  # reference reset (DeepSeek-R1): pi_ref <- pi
            reset = (self.ref_reset > 0) & (it % self.ref_reset.clamp_min(1) == 0)
            self.ref_logp = torch.where(reset.view(-1, 1, 1), logp, self.ref_logp)
        ref_logp = self.ref_logp

        # Sample the groups and score them; then advantages. No gradient flows through this block.
        probs = logp.exp()
        contexts, index, rewards, generated = sample_groups(
            layout, schedule, self.reward_kl, logp=logp, rewards_cv=self.rewards_cv, ref_logp=ref_logp,
            contexts=self.prompts_chunk[row], u=self.u_chunk[row], probs=probs)
        sample_ctx = contexts.flatten(1)                                    # (E, S)
        old_logp = logp.flatten(1).gather(1, index)                         # (E, S)
        baseline = None
        if self.baselines is not None:  # ReMax's greedy reward, PPO's critic V(c)
            baseline, generated = self.baselines.at_sampling(logp, rewards, sample_ctx, self.rewards_cv,
                                                             self.row_start, self.values, generated)
        adv, zero_std = member_advantages(self.estimators, rewards, layout.valid, baseline)
        adv = adv.flatten(1)
        # Fraction of each minibatch's prompts at each context: (E, M, C).
        ctx_weight_mb = context_weights(sample_ctx if layout.any_flat else contexts[..., 0],
                                        *layout.ctx_count, schedule.m_max, n_ctx)

        # epochs x minibatches clipped policy-gradient steps on this batch.
        record = None if schedule.lockstep else torch.zeros(n_mem, len(STEP_RECORD))
        weight, ctx_weight = layout.weight, ctx_weight_mb[:, 0]
        in_run = None if schedule.lockstep else it < schedule.iterations
        # log pi_ref at the samples, the same every step (for the sampled KL estimate)
        ref_at = at_samples(ref_logp, index) if self.use_kl and terms.any_estimate else None
        h1, values = self.h1, self.values
        for step in range(schedule.steps_max):
            if step:
                logits, values = self._forward()
                h1 = self.h1
                logp = torch.log_softmax(logits, -1)
                probs = None
            if not schedule.single_minibatch:
                weight, ctx_weight = layout.step_weights(step, ctx_weight_mb)
            dlogits, info = grpo_logits_grad(
                logp, ref_logp=ref_logp, index=index, old_logp=old_logp, adv=adv, weight=weight,
                ctx_weight=ctx_weight, terms=terms, first_epoch=step == 0, use_kl=self.use_kl,
                probs=probs, ref_at=ref_at, in_step=None if schedule.single_minibatch else weight > 0)
            active = None if schedule.lockstep else in_run & schedule.in_step[step]
            if self.baselines is not None:  # the critic takes its value step on the same (mini)batch
                dlogits, active = self.baselines.step(values, weight, active, dlogits)
            grad = net.backward(self.params, self.x1, h1, dlogits)
            info["grad_norm"] = torch.linalg.vector_norm(grad[:n_mem], dim=1, dtype=torch.float64).to(grad.dtype)
            step_values = torch.stack([info[k] for k in STEP_RECORD], dim=1)   # (E, R)
            if schedule.lockstep:
                self.opt.step(grad)
                record = step_values if record is None else record + step_values
            else:  # members past their own steps or iterations sit this step out
                self.opt.step(grad, active)
                record += torch.where(active[:n_mem].unsqueeze(1), step_values, 0.0)  # not x: 0 x inf = NaN
        self._forward()

        if not bool(torch.isfinite(record).all()):  # a non-finite loss or gradient: stop there
            self._mark_not_finite(it + 1, ~torch.isfinite(record).all(1))
        self.sums_buf[row] = sample_sums(layout, rewards, adv, zero_std)
        self.generated_buf[row], self.record_buf[row] = generated, record

    def results(self) -> list[RunResult]:
        """Each member's run so far: its own iterations, up to a stop, before any divergence."""
        self._flush_exact()
        self._flush_stats()
        kept = self._kept_iterations(self.schedule.iterations)
        good_theta, good_logp = self.last_finite["theta"], self.last_finite["logp"]
        # every member's final per-context metrics at once (per row, as one member's would be)
        finals = policy_metrics(good_logp, self.problem, self.rm_table, self.sft_logp, per_context=True)
        results = []
        for e, cfg in enumerate(self.configs):
            n = int(kept[e])
            final = {k: v[e] for k, v in finals.items()}
            per_context = pd.DataFrame({"context": range(self.problem.n_contexts),
                                        **{k: v.numpy() for k, v in final.items()},
                                        "best": self.problem.best_reward.numpy()})
            history = HISTORY.frame({k: v[1:n + 1, e] for k, v in self.exact.items()}, self.stats[:n, e])
            exact = {k: float(self.exact[k][n, e]) for k in EXACT_COLUMNS if k in self.exact}
            results.append(RunResult(
                cfg, history, exact, per_context,
                good_logp[e].clone(), self.net.state_dict(good_theta[e]),
                run_status(n, cfg.iterations, self.iteration)))
        return results
