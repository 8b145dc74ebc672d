"""GRPO: Group Relative Policy Optimization (Shao et al., DeepSeekMath, 2024), batched over runs.

One iteration, for each of E independent runs (members) at once:

1. Sample P prompts c_p ~ U(C) and a group of G responses v_pg ~ pi_old(. | c_p).
2. Score them: r_pg = r(c_p, v_pg), with the learned reward model (GRPO) or the verifiable
   reward 1[v_pg = v*_c] (RLVR).
3. Group-relative advantages, no critic:  A_pg = (r_pg - mean_g r_pg) / (std_g r_pg + eps).
4. `epochs` Adam steps on the clipped surrogate with a KL penalty to the reference (SFT) policy:

       L = -1/(PG) sum_pg min(rho_pg A_pg, clip(rho_pg, 1 - eps_c, 1 + eps_c) A_pg)
           + beta * 1/P sum_p KL(pi(. | c_p) || pi_ref(. | c_p)),   rho_pg = pi(v_pg|c_p) / pi_old(v_pg|c_p)

   The KL term is exact (a sum over the vocabulary), as in the notebook.

Members may differ in every GRPOConfig field. Each draws its randomness from its own generator,
and shorter groups, fewer prompts, epochs or iterations are masked, so a member's trajectory is
the one it would follow alone (to float round-off: batched matrix products may round a member
differently, ~1e-7, depending on the batch). The policy is evaluated on the C contexts only, once
per step, and samples gather from that (E, C, V) table. Advantages come from advantages.py; the
loss, its aggregation and its hand-written gradient from losses.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import pandas as pd
import torch

from .advantages import member_advantages
from .config import GRPOConfig, check_budget
from .losses import (LossTerms, _at_samples, aggregation_weights, context_weights, grpo_logits_grad,
                     sampled_kl)
from .metrics import policy_metrics
from .models import BatchedAdam
from .problem import Problem
from .sampling import draw_iterations, generator, sample_categorical
from .sft import SFTResult, sft_policy

# Iterations are processed in chunks: randomness is drawn, and records are reduced, once per
# chunk. A chunk is at most MAX_CHUNK iterations and is sized so that the batch's draws take at
# most DRAW_BYTES and its per-iteration policy records at most RECORD_BYTES, whatever the request.
MAX_CHUNK = 64
DRAW_BYTES = 16 * 2**20
RECORD_BYTES = 8 * 2**20
TRY_BYTES = 8 * 2**20    # dynamic sampling: bytes of one int64 (E, P, G) tensor per block of tries


@dataclass(frozen=True)
class RunResult:
    """One finished run: its config, per-iteration history, weights and exact final evaluation."""

    config: GRPOConfig
    history: pd.DataFrame          # one row per iteration (see HISTORY_COLUMNS)
    state_dict: dict               # nn.Sequential(Linear, ReLU, Linear) keys
    final_logp: torch.Tensor       # (C, V)
    per_context: pd.DataFrame      # context, true_reward, rm_reward, correct_prob, kl_ref, entropy
    stopped: str = ""              # why the run ended before config.iterations, if it did
    status: str = ""               # "" (finished), "stopped" (by request or paused) or "diverged"

    @property
    def completed_iterations(self) -> int:
        return len(self.history)


# Columns of RunResult.history. Exact ones are computed from the full distribution after the
# iteration's update (kl_ref against the SFT policy, even when the reference is reset); batch
# ones from the samples the iteration drew.
EXACT_COLUMNS = ("true_reward", "rm_reward", "kl_ref", "entropy", "correct_prob")
BATCH_COLUMNS = ("generated", "batch_reward", "first_group_reward", "adv_abs", "zero_std_frac",
                 "clip_frac", "clip_frac_low", "clip_frac_high", "policy_loss", "batch_kl",
                 "kl_estimate", "grad_norm")
# What each member records after its steps on a batch, reduced into BATCH_COLUMNS per chunk.
_STEP_RECORD = ("n_clip_low", "n_clip_high", "policy_loss", "kl", "kl_estimate", "grad_norm")
# What each iteration's samples leave for BATCH_COLUMNS: sums over the member's batch.
_SUMS = ("reward", "first_group_reward", "adv_abs", "zero_std_groups")


def reward_table(problem: Problem, cfg: GRPOConfig, rm_table: torch.Tensor | None) -> torch.Tensor:
    """(C, V) reward a config trains on: the reward model's scores or the verifiable reward."""
    if cfg.reward == "verifiable":
        return problem.verifiable_reward
    if rm_table is None:
        raise ValueError("a GRPO run with reward='reward_model' needs the reward model's table")
    return rm_table


def _draw(gens, configs, flat, start, n_ctx, shape):
    """Each member's sample contexts and uniforms (T, K, E, P, G), shape = (T, K, E, P, G), for
    the T iterations from `start` (try k of every member contiguous; K - 1 is the most redraws
    dynamic sampling may need); a member draws only up to its own iteration count. A grouped
    member's prompt p fills its slot's G samples; a flat member's (flat[e]) prompts fill the
    samples in order, P G per try (see _Members). See sampling.draw_iterations: the draws do
    not depend on T, so neither the batch nor the way the trainer is advanced changes a run's
    randomness."""
    contexts = torch.zeros(shape, dtype=torch.long)                       # (T, K, E, P, G)
    u = torch.zeros(shape)
    for e, (gen, cfg) in enumerate(zip(gens, configs)):
        n = min(shape[0], cfg.iterations - start)
        if n > 0:
            tries = cfg.dynamic_sampling + 1
            picks, draws = draw_iterations(gen, n, cfg.prompts, tries, cfg.group_size, n_ctx)
            if flat[e]:    # one try, one response per prompt: prompt p is sample p
                contexts[:n, 0, e].view(n, -1)[:, :cfg.prompts] = picks[:, :, 0]
                u[:n, 0, e].view(n, -1)[:, :cfg.prompts] = draws[:, :, 0, 0]
            else:
                contexts[:n, :tries, e, :cfg.prompts, :cfg.group_size] = picks.transpose(1, 2).unsqueeze(-1)
                u[:n, :tries, e, :cfg.prompts, :cfg.group_size] = draws.transpose(1, 2)
    return contexts, u


def chunk_length(m: "_Members", n_ctx: int, vocab: int) -> int:
    """Iterations per chunk for this batch: as many as fit DRAW_BYTES of draws and RECORD_BYTES
    of policy records (at least 1, at most MAX_CHUNK). Results do not depend on it."""
    draw = m.n * m.p_max * m.k_max * 12 * m.g_max                # contexts int64, uniforms float32
    record = 4 * m.n * n_ctx * vocab * 4                        # logp row and metric temporaries
    return max(1, min(MAX_CHUNK, DRAW_BYTES // draw, RECORD_BYTES // record))


# Estimators that use no group statistic: a member with one of these, one response per prompt
# and no dynamic sampling is laid out flat (see _Members).
FLAT_ESTIMATORS = ("none", "reinforce_pp", "critic", "remax")


class _Members:
    """Per-member settings of a batch of runs as tensors, and the masks that let members with
    fewer prompts, smaller groups, fewer steps or iterations share one computation.

    Every member's samples sit in one (P, G) layout: slot p holds a group of G samples. A
    grouped member's slot p is its prompt p and its group; a flat member (one response per
    prompt, no dynamic sampling, an estimator that uses no group statistic: PPO, REINFORCE++)
    puts its prompts one per sample in order, so its 64 prompts fill 8 slots of 8 next to GRPO's
    8 x 8 instead of padding a (64, 8) layout. Each sample carries its own context; the group
    structure is used only by the grouped members' estimators and dynamic sampling.
    """

    def __init__(self, configs: Sequence[GRPOConfig]):
        vec = lambda name, dtype=torch.long: torch.tensor([getattr(c, name) for c in configs], dtype=dtype)
        self.n = len(configs)
        self.iterations, self.epochs = vec("iterations"), vec("epochs")
        self.minibatches, self.tries = vec("minibatches"), vec("dynamic_sampling") + 1
        self.steps = self.epochs * self.minibatches                        # optimizer steps per batch
        self.lr, self.kl_coef = vec("lr", torch.float32), vec("kl_coef", torch.float32)
        self.ref_reset = vec("ref_reset_every")
        self.estimators = [c.advantage_estimator for c in configs]
        # Baselines from outside the group: ReMax's greedy response (one more response per
        # prompt, counted as generated) and PPO's learned critic V(c) (its settings per member).
        self.remax = torch.tensor([e == "remax" for e in self.estimators])
        self.uses_critic = torch.tensor([e == "critic" for e in self.estimators])
        self.any_remax, self.any_critic = bool(self.remax.any()), bool(self.uses_critic.any())
        self.critic_rows = self.uses_critic.nonzero().squeeze(1)                       # (E_c,)
        self.terms = LossTerms.from_configs(configs)
        self.use_kl = bool((self.kl_coef > 0).any())
        in_reward = [c.kl_placement == "reward" and c.kl_coef > 0 for c in configs]
        self.beta_reward = torch.tensor([c.kl_coef * r for c, r in zip(configs, in_reward)]).view(-1, 1)
        self.reward_k_code = self.terms.k_code * torch.tensor(in_reward).view(-1, 1)
        # What the KL in the reward needs: the exact KL_c only if a member places it there; one
        # sampled estimator computed if they all share it; a where only if some member has none.
        in_codes = {int(k) for k, r in zip(self.reward_k_code.flatten().tolist(), in_reward) if r}
        self.reward_exact = 0 in in_codes
        self.reward_single = next(iter(in_codes)) if len(in_codes) == 1 and not self.reward_exact else None
        self.in_reward = None if all(in_reward) else torch.tensor(in_reward).view(-1, 1)
        self.t_max, self.steps_max = int(self.iterations.max()), int(self.steps.max())
        self.flat_list = [c.group_size == 1 and c.dynamic_sampling == 0
                          and c.advantage_estimator in FLAT_ESTIMATORS for c in configs]
        self.flat = torch.tensor(self.flat_list)                                        # (E,)
        self.any_flat = any(self.flat_list)
        self.flat_rows = self.flat.nonzero().squeeze(1)                                 # (F,)
        self.g_max = max((c.group_size for c, f in zip(configs, self.flat_list) if not f), default=1)
        self.p_max = max(-(-c.prompts // self.g_max) if f else c.prompts
                         for c, f in zip(configs, self.flat_list))
        self.k_max = int(self.tries.max())
        prompts, group = vec("prompts"), vec("group_size")
        self.n_prompts = prompts                                                        # (E,)
        slot, pos = torch.arange(self.p_max), torch.arange(self.p_max * self.g_max)
        grouped = ((slot < prompts.unsqueeze(1)).unsqueeze(-1)
                   & (torch.arange(self.g_max) < group.view(-1, 1, 1)))                 # (E, P, G)
        self.valid = grouped                                                            # (E, P, G)
        if self.any_flat:
            flat_valid = (pos < prompts.unsqueeze(1)).view(self.n, self.p_max, self.g_max)
            self.valid = torch.where(self.flat.view(-1, 1, 1), flat_valid, grouped)
        self.valid_p = self.valid.any(-1)                                               # (E, P)
        self.valid_flat = self.valid.flatten(1)                                         # (E, S)
        self.first_group_size = torch.where(self.flat, 1, group)                        # (E,)
        self.n_samples = self.valid_flat.sum(1)                                         # (E,)
        self.n_samples_float = self.n_samples.float()
        self.greedy_samples = prompts * self.remax                                     # (E,)
        self.lockstep = bool((self.iterations == self.t_max).all() and (self.steps == self.steps_max).all())
        # Minibatch m of a member holds its prompts p with p * M // P == m (as equal as possible);
        # a sample's prompt is its slot (grouped) or its position (flat). Per-sample (E, S)
        # temporaries are made only for what needs them: a batch holds up to ~10^7 samples.
        n_mb = self.minibatches.unsqueeze(1)
        mb_of = lambda p: (p * n_mb // prompts.unsqueeze(1)).minimum(n_mb - 1)
        self.minibatch_of_sample = mb_of(slot).unsqueeze(-1).expand(-1, -1, self.g_max).flatten(1)  # (E, S)
        if self.any_flat:
            self.minibatch_of_sample = torch.where(self.flat.view(-1, 1), mb_of(pos), self.minibatch_of_sample)
        self.single_minibatch = bool((self.minibatches == 1).all())
        # Constants of every iteration, built once. Contexts are counted per slot (a slot's
        # samples share one), or per sample when a flat member's slots mix contexts.
        self.m_max = int(self.minibatches.max())
        if self.any_flat:
            self.ctx_count = (torch.arange(self.n).unsqueeze(1).expand(-1, pos.numel()),
                              self.minibatch_of_sample, self.valid_flat.float())          # (E, S) each
        else:
            self.ctx_count = (torch.arange(self.n).unsqueeze(1).expand(-1, self.p_max),
                              self.minibatch_of_sample.view(self.n, self.p_max, self.g_max)[..., 0],
                              self.valid_p.float())                                       # (E, P) each
        self.weight = aggregation_weights(self.valid_flat)                   # (E, S)
        self.critic_weight = self.weight[self.critic_rows]                   # (E_c, S)
        self.in_step = [step < self.steps for step in range(self.steps_max)]  # (E,) per step

    def step_weights(self, step: int, ctx_weight_mb: torch.Tensor):
        """Sample weights (E, S) and context weights (E, C) for optimizer step `step` of a batch."""
        mb = (step % self.minibatches).unsqueeze(1)                                     # (E, 1)
        weight = aggregation_weights(self.valid_flat, self.minibatch_of_sample == mb)
        return weight, ctx_weight_mb[torch.arange(self.n), mb.squeeze(1)]


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


class ResumableTrainer:
    """What every engine's batched trainer shares: it is advanced a few iterations at a time
    (live training, Stop) and stopped where it is. A subclass sets `m.t_max`, `iteration` and
    `end`, and implements _iterate (one iteration of every member), _after_iteration and _observe
    (record the new policy)."""

    @property
    def total(self) -> int:
        return self.m.t_max

    @property
    def finished(self) -> bool:
        return self.iteration >= self.end

    def stop(self) -> None:
        """End every run at the current iteration (results keep what is done)."""
        self.end = self.iteration

    def advance(self, n: int | None = None,
                on_iteration: Callable[[int, int], bool | None] | None = None) -> int:
        """Run up to n more iterations (all that remain if None); returns the iterations done.
        on_iteration(done, total) after each one; returning False stops the batch there."""
        target = self.end if n is None else min(self.end, self.iteration + n)
        while self.iteration < target and self.iteration < self.end:
            self._iterate()
            self.iteration += 1
            self._after_iteration()
            self._observe()
            if on_iteration is not None and on_iteration(self.iteration, self.total) is False:
                self.stop()
        return self.iteration

    def _after_iteration(self) -> None:
        """Work between an iteration's update and the observation of its policy."""


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
        self.problem, self.rm_table, self.m = problem, rm_table, _Members(configs)
        m, n_ctx, vocab = self.m, problem.n_contexts, problem.vocab_size
        self.net = sft_policy(sft)
        theta = self.net.from_state_dict(sft.state_dict).repeat(m.n, 1)          # (E, N)
        lr = m.lr
        self.critic, self.fused = None, False
        if m.any_critic:  # PPO's critic V(c): one small network per critic member, its own Adam
            from .methods.critic import Critic, critic_settings
            settings = critic_settings([configs[e] for e in m.critic_rows.tolist()])
            # Critics that fit in the policy's layout become extra rows of its parameters (zero
            # hidden units and outputs padded in, V(c) = output 0): one forward, backward and
            # Adam step serves both, each row with its own learning rate.
            self.fused = max(settings["hidden"]) <= self.net.hidden_dim
            layout = {"hidden_dim": self.net.hidden_dim, "outputs": vocab} if self.fused else {}
            self.critic = Critic.create(problem.contexts, **settings, **layout)
            if self.fused:
                theta = torch.cat([theta, self.critic.hand_over()])
                lr = torch.cat([lr, torch.tensor(settings["lr"])])
        self.theta_all = theta                      # (E [+ E_c], N): the policies [and critics]
        self.theta = theta[:m.n]                    # the policies (a view)
        self.params = self.net.layout.views(theta)
        self.x1 = self.net.inputs(problem.contexts, theta.shape[0])
        self.opt = BatchedAdam(theta, lr)
        self.sft_logp = sft.logp                                                # (C, V)
        self.ref_logp = (self.sft_logp if not bool((m.ref_reset > 0).any())
                         else self.sft_logp.repeat(m.n, 1, 1))
        self.rewards_cv = torch.stack([reward_table(problem, c, rm_table) for c in configs]).flatten(1)
        self.gens = [generator(c.seed) for c in configs]

        # Records are reduced once per chunk (and when results are asked for), so memory stays
        # bounded: exact metrics of the policy after each iteration (row 0: the SFT start) and
        # the batch statistics of each iteration, from per-iteration sums (E, len(_SUMS)).
        self.chunk = chunk_length(m, n_ctx, vocab)
        self.exact: dict[str, torch.Tensor] = {}
        self.stats = torch.zeros(m.t_max, m.n, len(BATCH_COLUMNS))
        self.logp_buf = torch.empty(self.chunk, m.n, n_ctx, vocab)
        self.sums_buf = torch.empty(self.chunk, m.n, len(_SUMS))
        self.generated_buf = torch.empty(self.chunk, m.n)
        self.record_buf = torch.empty(self.chunk, m.n, len(_STEP_RECORD))
        self.good_theta = self.theta.clone()        # each member's last finite weights ...
        self.good_logp = torch.empty(m.n, n_ctx, vocab)  # ... and policy
        self.first_bad = torch.full((m.n,), m.t_max + 1)  # first iteration with a non-finite policy or loss
        self.iteration = 0                          # iterations done
        self.end = m.t_max                          # where the batch stops (earlier on request or divergence)
        self.diverged = False
        self._forward()
        self.row_start = torch.arange(n_ctx) * vocab                # flat index c * V of (c, 0)
        self._observe()

    def _forward(self):
        """The current policies' logits (E, C, V) and, when fused, the critics' values (E_c, C)."""
        out, self.h1 = self.net.forward(self.params, self.x1)
        self.logits = out[:self.m.n]
        self.values = out[self.m.n:, :, 0] if self.fused else None
        return self.logits, self.values

    def _after_iteration(self) -> None:
        if self.iteration % self.chunk == 0:
            self._flush_stats()

    def _observe(self) -> None:
        """Record the current policy as the exact-metrics row of iteration `self.iteration`."""
        it, row = self.iteration, self.iteration % self.chunk
        logp = torch.log_softmax(self.logits, -1, out=self.logp_buf[row])   # (E, C, V)
        if not self.diverged and bool(torch.isfinite(logp).all()):
            self.good_theta.copy_(self.theta)
            self.good_logp.copy_(logp)
        else:  # a diverged member keeps its last finite state; the others go on
            finite = torch.isfinite(logp).flatten(1).all(1)
            self.first_bad = torch.where(~finite & (self.first_bad > it), it, self.first_bad)
            ok = (self.first_bad > it).unsqueeze(1)
            self.good_theta = torch.where(ok, self.theta, self.good_theta)
            self.good_logp = torch.where(ok.unsqueeze(2), logp, self.good_logp)
            self.diverged = True
            if not bool(ok.any()):
                self.end = it
        if row == self.chunk - 1:
            self._flush_exact()

    def _flush_exact(self) -> None:
        """Exact metrics of the policies recorded since the last chunk boundary."""
        it, row = self.iteration, self.iteration % self.chunk
        chunk = policy_metrics(self.logp_buf[:row + 1], self.problem, self.rm_table, self.sft_logp)
        for name, values in chunk.items():
            self.exact.setdefault(name, torch.empty(self.m.t_max + 1, self.m.n))[it - row:it + 1] = values

    def _flush_stats(self) -> None:
        """Batch statistics of the iterations done since the last chunk boundary."""
        last = self.iteration - 1                   # index of the last finished iteration
        if last < 0:
            return
        row = last % self.chunk
        self.stats[last - row:last + 1] = _batch_stats(
            self.m, self.sums_buf[:row + 1], self.generated_buf[:row + 1], self.record_buf[:row + 1])

    def _iterate(self) -> None:
        """One iteration for every member: sample and score groups, then the policy steps."""
        m, net, params, x1 = self.m, self.net, self.params, self.x1
        it, row = self.iteration, self.iteration % self.chunk
        n_mem, n_ctx = m.n, self.problem.n_contexts
        logp = self.logp_buf[row]
        if row == 0:
            self.prompts_chunk, self.u_chunk = _draw(self.gens, self.configs, m.flat_list, it, n_ctx,
                                                     (self.chunk, m.k_max, n_mem, m.p_max, m.g_max))
        if self.ref_logp.dim() == 3 and it > 0:  # reference reset (DeepSeek-R1): pi_ref <- pi
            reset = (m.ref_reset > 0) & (it % m.ref_reset.clamp_min(1) == 0)
            self.ref_logp = torch.where(reset.view(-1, 1, 1), logp, self.ref_logp)
        ref_logp = self.ref_logp

        # Sample the groups and score them: no gradient flows through this block.
        probs = logp.exp()
        contexts, index, rewards, generated = _sample_groups(
            m, logp, self.rewards_cv, ref_logp, self.prompts_chunk[row], self.u_chunk[row], probs)
        sample_ctx = contexts.flatten(1)                                    # (E, S)
        old_logp = logp.flatten(1).gather(1, index)                         # (E, S)
        baseline = None
        if m.any_remax:  # the greedy response's reward per prompt (no KL: a score, as in ReMax)
            greedy = self.row_start + logp.argmax(-1)                                  # (E, C)
            greedy_reward = self.rewards_cv.gather(1, greedy).gather(1, sample_ctx).view_as(rewards)
            baseline = torch.where(m.remax.view(-1, 1, 1), greedy_reward, 0.0)   # 0 on other rows
            generated = generated + m.greedy_samples
        if m.any_critic:  # V(c) at sampling time: the baseline, and V_old of the value clip
            rows = m.critic_rows
            critic_ctx = sample_ctx[rows]                                              # (E_c, S)
            values = self.values if self.fused else self.critic.values()                # (E_c, C)
            old_values = values.gather(1, critic_ctx)                                  # (E_c, S)
            full = torch.zeros(n_mem, critic_ctx.shape[1]).index_copy_(0, rows, old_values).view_as(rewards)
            baseline = full if baseline is None else torch.where(m.uses_critic.view(-1, 1, 1), full, baseline)
            returns = rewards[rows].flatten(1)
        adv, zero_std = member_advantages(m.estimators, rewards, m.valid, baseline)
        adv = adv.flatten(1)
        # Fraction of each minibatch's prompts at each context: (E, M, C).
        ctx_weight_mb = context_weights(sample_ctx if m.any_flat else contexts[..., 0], *m.ctx_count,
                                        m.m_max, n_ctx)

        # epochs x minibatches clipped policy-gradient steps on this batch.
        record = None if m.lockstep else torch.zeros(n_mem, len(_STEP_RECORD))
        weight, ctx_weight = m.weight, ctx_weight_mb[:, 0]
        in_run = None if m.lockstep else it < m.iterations
        # log pi_ref at the samples, the same every step (for the sampled KL estimate)
        any_estimate = m.terms.flags[-1]
        ref_at = _at_samples(ref_logp, index) if m.use_kl and any_estimate else None
        h1, values = self.h1, self.values
        fused = self.fused
        for step in range(m.steps_max):
            if step:
                logits, values = self._forward()
                h1 = self.h1
                logp = torch.log_softmax(logits, -1)
                probs = None
            if not m.single_minibatch:
                weight, ctx_weight = m.step_weights(step, ctx_weight_mb)
            dlogits, info = grpo_logits_grad(logp, ref_logp, index, old_logp, adv, weight,
                                             ctx_weight, None, m.kl_coef, step == 0, m.use_kl,
                                             terms=m.terms, probs=probs, ref_at=ref_at)
            active = None if m.lockstep else in_run & m.in_step[step]
            if m.any_critic:  # the critic takes its value step on the same (mini)batch
                rows = m.critic_rows
                critic_weight = m.critic_weight if m.single_minibatch else weight[rows]
                if fused:  # its gradient joins the policies' in one backward pass
                    dvalues = self.critic.value_grad(values, critic_ctx, returns, old_values, critic_weight)[1]
                    dlogits = torch.cat([dlogits, torch.nn.functional.pad(dvalues.unsqueeze(-1),
                                                                          (0, dlogits.shape[-1] - 1))])
                    if active is not None:
                        active = torch.cat([active, active[rows]])
                else:
                    self.critic.step(critic_ctx, returns, old_values, critic_weight,
                                     None if active is None else active[rows])
            grad = net.backward(params, x1, h1, dlogits)
            info["grad_norm"] = torch.linalg.vector_norm(grad[:n_mem], dim=1, dtype=torch.float64).float()
            step_values = torch.stack([info[k] for k in _STEP_RECORD], dim=1)   # (E, R)
            if m.lockstep:
                self.opt.step(grad)
                record = step_values if record is None else record + step_values
            else:  # members past their own steps or iterations sit this step out
                self.opt.step(grad, active)
                record += torch.where(active[:n_mem].unsqueeze(1), step_values, 0.0)  # not x: 0 x inf = NaN
        self._forward()

        if not bool(torch.isfinite(record).all()):  # a non-finite loss or gradient: stop there
            bad = ~torch.isfinite(record).all(1) & (self.first_bad > it + 1)
            self.first_bad = torch.where(bad, it + 1, self.first_bad)
            self.diverged = True
        self.sums_buf[row] = _iteration_sums(m, rewards, adv, zero_std)
        self.generated_buf[row], self.record_buf[row] = generated, record

    def results(self) -> list[RunResult]:
        """Each member's run so far: its own iterations, up to a stop, before any divergence."""
        self._flush_exact()
        self._flush_stats()
        done, m = self.iteration, self.m
        kept = torch.minimum(m.iterations.clamp_max(done), self.first_bad - 1)
        results = []
        # every member's final per-context metrics at once (per row, as one member's would be)
        finals = policy_metrics(self.good_logp, self.problem, self.rm_table, self.sft_logp, per_context=True)
        for e, cfg in enumerate(self.configs):
            n = int(kept[e])
            status = ("diverged" if n < min(cfg.iterations, done) else
                      "stopped" if n < cfg.iterations else "")
            results.append(_result(self.problem, self.net, cfg, n, status, self.good_theta[e],
                                   self.good_logp[e], {k: v[1:n + 1, e] for k, v in self.exact.items()},
                                   self.stats[:n, e], {k: v[e] for k, v in finals.items()}))
        return results


def _sample_groups(m: _Members, logp, rewards_cv, ref_logp, contexts, u, probs=None):
    """Draw each member's groups from the policy and score them.

    logp (E, C, V); contexts and u (K, E, P, G) the members' draws for K tries per slot (each
    sample's context, and its uniform). With dynamic sampling (K > 1), a slot takes its first try
    whose rewards are not all equal, or its last allowed try; tries are scored in blocks of at
    most TRY_BYTES, and only until every slot has chosen. With the KL placed in the reward,
    r <- r - beta * k(v) (exact: KL_c). probs: logp.exp(), if already computed.
    Returns contexts (E, P, G), index (E, S), rewards (E, P, G), generated (E,).
    """
    n_mem, vocab = logp.shape[0], logp.shape[-1]
    k_max, p_max, g_max = u.shape[0], u.shape[2], u.shape[3]
    if probs is None:
        probs = logp.exp()
    in_reward = bool((m.beta_reward > 0).any())
    if in_reward:
        log_ratio = (logp - ref_logp).flatten(-2)
        if log_ratio.dim() == 1:
            log_ratio = log_ratio.expand(n_mem, -1)
        if m.reward_exact:
            kl_ctx = (probs * (logp - ref_logp)).sum(-1)                    # (E, C)

    def with_kl(rewards, index, exact_value):
        """rewards - beta * k at the samples `index` (E, S) or (k E, S) for the members with the
        KL in the reward; exact_value() gives KL_c at each sample, called only if needed."""
        lr_s = log_ratio.gather(1, index)
        k_value, _ = sampled_kl(lr_s, m.reward_k_code.clamp_min(1), m.reward_single, False)
        if m.reward_exact:
            k_value = torch.where(m.reward_k_code == 0, exact_value(), k_value)
            return rewards - m.beta_reward * k_value
        if m.in_reward is None:
            return rewards - m.beta_reward * k_value
        # members without the KL in their reward keep it as it is (beta 0, any estimate)
        return torch.where(m.in_reward, rewards - m.beta_reward * k_value, rewards)

    def draw(ctx, u_k):
        """Tokens (R, P, G) for contexts ctx and uniforms u_k (R, P, G), rows R = k E (try-major).

        A slot's samples share its context, so each slot's distribution is gathered once,
        (R, P, V); only the flat members' rows of the first try, whose samples each have their
        own context, gather per sample, (F, S, V) with S = P G their prompts."""
        cond = (probs if ctx.shape[0] == n_mem else probs.repeat(ctx.shape[0] // n_mem, 1, 1))
        tokens = sample_categorical(cond.gather(1, ctx[..., 0].unsqueeze(-1).expand(-1, -1, vocab)), u_k)
        if m.any_flat:  # rows f: the block's first try (a flat member has one try: k = 0)
            f = m.flat_rows
            ctx_f = ctx[f].flatten(1)                                       # (F, S)
            rows = probs[f].gather(1, ctx_f.unsqueeze(-1).expand(-1, -1, vocab))
            tokens[f] = sample_categorical(rows, u_k[f].flatten(1).unsqueeze(-1)).view_as(ctx[f])
        return tokens

    if k_max == 1:  # one try per slot (no dynamic sampling): no try dimension at all
        ctx = contexts[0].flatten(1)                                        # (E, S)
        index = ctx * vocab + draw(contexts[0], u[0]).flatten(1)            # (E, S)
        rewards = rewards_cv.gather(1, index)
        if in_reward:
            rewards = with_kl(rewards, index, lambda: kl_ctx.gather(1, ctx))
        return contexts[0], index, rewards.view(n_mem, p_max, g_max), m.n_samples_float

    def tries(k0: int, k1: int):
        """Contexts, index and rewards (k, E, P, G) of tries k0 .. k1 - 1."""
        slot_ctx = contexts[k0:k1]
        kb = slot_ctx.shape[0]
        tokens = draw(slot_ctx.flatten(0, 1), u[k0:k1].flatten(0, 1))       # (k E, P, G)
        index = (slot_ctx.flatten(0, 1) * vocab + tokens).view(kb, n_mem, p_max * g_max)
        rewards = rewards_cv.gather(1, index.transpose(0, 1).flatten(1)).view(n_mem, kb, -1).transpose(0, 1)
        if in_reward:
            flat_index = index.transpose(0, 1).flatten(1)                   # (E, k S)
            rewards = with_kl(rewards.transpose(0, 1).flatten(1), flat_index, lambda: kl_ctx.gather(
                1, slot_ctx.transpose(0, 1).flatten(1))).view(n_mem, kb, -1).transpose(0, 1)
        return slot_ctx, index.view(kb, n_mem, p_max, g_max), rewards.reshape(kb, n_mem, p_max, g_max)
    # Tries are scored a block at a time (the block sized by bytes), and only until every slot
    # has chosen, so the temporaries stay bounded whatever K.
    block = max(1, min(k_max, TRY_BYTES // (n_mem * p_max * g_max * 8)))
    last = (m.tries - 1).view(-1, 1)                                        # (E, 1)
    done = ~m.valid_p                                                       # slots with no samples
    choice = torch.zeros(n_mem, p_max, dtype=torch.long)
    out_ctx = torch.zeros(n_mem, p_max, g_max, dtype=torch.long)
    out_index = torch.zeros(n_mem, p_max, g_max, dtype=torch.long)
    out_rewards = torch.zeros(n_mem, p_max, g_max)
    for k0 in range(0, k_max, block):
        k1 = min(k0 + block, k_max)
        slot_ctx, index, rewards = tries(k0, k1)
        hi = torch.where(m.valid, rewards, -torch.inf).amax(-1)
        lo = torch.where(m.valid, rewards, torch.inf).amin(-1)
        k = torch.arange(k0, k1).view(-1, 1, 1)
        ok = (k <= last) & ((hi > lo) | (k == last))                        # (k, E, P)
        first = ok.int().argmax(0)                                          # (E, P)
        take = ~done & ok.any(0)
        pick = lambda t: t.gather(0, first.view(1, n_mem, p_max, *([1] * (t.dim() - 3))).expand(
            1, *t.shape[1:])).squeeze(0)
        out_ctx = torch.where(take.unsqueeze(-1), pick(slot_ctx), out_ctx)
        out_index = torch.where(take.unsqueeze(-1), pick(index), out_index)
        out_rewards = torch.where(take.unsqueeze(-1), pick(rewards), out_rewards)
        choice = torch.where(take, k0 + first, choice)
        done = done | take
        if bool(done.all()):
            break
    generated = ((choice + 1) * m.valid.sum(-1)).sum(1).float()
    return out_ctx, out_index.flatten(1), out_rewards, generated


def _iteration_sums(m: _Members, rewards, adv, zero_std):
    """The sums (E, len(_SUMS)) an iteration's batch statistics need, from rewards (E, P, G),
    adv (E, S) and zero_std (E, P): so no per-sample tensor outlives its iteration."""
    masked = torch.where(m.valid, rewards, 0.0)
    first, zero = masked[:, 0].sum(1), (zero_std & m.valid_p).sum(1)
    if m.any_flat:  # a flat member's first group is its first sample, and every group has one
        first = torch.where(m.flat, masked[:, 0, 0], first)                 # value: no spread
        zero = torch.where(m.flat, m.n_prompts, zero)
    return torch.stack([masked.sum((1, 2)), first, adv.abs().sum(1), zero], dim=1)


def _batch_stats(m: _Members, sums, generated, record):
    """Per-iteration batch statistics (T, E, len(BATCH_COLUMNS)) from sums (T, E, len(_SUMS)),
    generated (T, E) and record (T, E, R) the per-step values summed over each member's steps."""
    n_valid = m.n_samples                                                   # (E,)
    s = dict(zip(_SUMS, sums.unbind(-1)))
    rec = dict(zip(_STEP_RECORD, record.unbind(-1)))
    per_step = n_valid * m.steps
    low, high = rec["n_clip_low"] / per_step, rec["n_clip_high"] / per_step
    return torch.stack([
        generated,
        s["reward"] / n_valid,
        s["first_group_reward"] / m.first_group_size,
        s["adv_abs"] / n_valid,
        s["zero_std_groups"] / m.n_prompts,
        low + high, low, high,
        rec["policy_loss"] / m.steps, rec["kl"] / m.steps, rec["kl_estimate"] / m.steps,
        rec["grad_norm"] / m.steps], dim=-1)


def _result(problem, net, cfg, n, status, theta_row, final_logp, exact, stats, final):
    """One member's RunResult: n iterations kept, its final weights and policy, its records and
    final: its per-context exact metrics (policy_metrics(..., per_context=True) of final_logp)."""
    hist = {"iteration": torch.arange(1, n + 1).numpy(),
            "samples": stats[:, 0].round().long().cumsum(0).numpy()}
    hist.update({k: exact[k].numpy() for k in EXACT_COLUMNS if k in exact})
    hist.update({k: stats[:, j].numpy() for j, k in enumerate(BATCH_COLUMNS) if k != "generated"})
    per_context = pd.DataFrame({"context": range(problem.n_contexts),
                                **{k: v.numpy() for k, v in final.items()},
                                "best": problem.best_reward.numpy()})
    message = {
        "diverged": f"Stopped after {n} of {cfg.iterations} iterations: the policy's parameters "
                    "became non-finite. Lower the learning rate or raise the KL coefficient.",
        "stopped": f"Stopped after {n} of {cfg.iterations} iterations.",
        "": ""}[status]
    return RunResult(cfg, pd.DataFrame(hist), net.state_dict(theta_row), final_logp.clone(),
                     per_context, message, status)
