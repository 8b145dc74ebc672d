"""GRPO on sequences, batched over members, with exact metrics every iteration.

One iteration, for each of E members at once:
1. One forward gives the policy table (E, C, K); log pi of all N responses is one matmul
   (task.py), so responses are drawn whole by inverse CDF from pi(. | c) (the same distribution
   as token-by-token sampling) and the exact metrics are sums over that table.
2. Rewards: the verifier or the reward model, with DAPO's soft overlong punishment
       penalty(|y|) = 0 if |y| <= L - C_buf,  (L - C_buf - |y|) / C_buf x factor otherwise
   and optionally the summed per-token KL subtracted (kl_placement="reward"). With dynamic
   sampling, a prompt slot whose group's rewards are all equal is redrawn (DAPO); with
   ref_reset_every the loss's reference becomes the current policy every N iterations (kl_ref
   in the history stays against the SFT policy).
3. Advantages with the one-token engine's estimators (grpo, dr_grpo, batch_std, rloo, none).
4. epochs x minibatches Adam steps on the aggregated per-token loss (losses.py). Autograd
   differentiates the loss with respect to the small table only; the network's backward is
   written by hand (policy.py).

Members may differ in every SeqGRPOConfig field. Each draws from its own generator, in chunks of
CHUNK iterations, and smaller groups, fewer prompts, steps or iterations are masked out, so a
member's run is the one it would have alone (to float round-off of batched matmuls) and the same
config gives the same history bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import pandas as pd
import torch

from ..models import BatchedAdam
from ..sampling import generator
from ..trainer import ResumableTrainer
from ._shared import advantages, KL_CODES
from .config import (SeqGRPOConfig, SeqRewardModelConfig, SeqSFTConfig, SeqTaskConfig,
                     check_seq_budget)
from .losses import SeqLossTerms, aggregate, per_token_loss, token_kl
from .metrics import METRICS, sequence_metrics
from .policy import (SeqRewardModelResult, SeqSFTResult, sample_responses, sequence_logp,
                     train_reward_model, train_sft)
from .task import SeqTask, make_task

CHUNK = 64
_FINITE = (METRICS.index("kl_ref"), METRICS.index("entropy"))
BATCH_COLUMNS = ("generated", "batch_reward", "batch_length", "zero_std_frac", "clip_frac_token",
                 "clip_frac_seq", "grad_cosine", "policy_loss", "grad_norm")  # the order _iterate stacks them


@dataclass(frozen=True)
class SeqUpstream:
    """The task, the SFT policy (the frozen reference) and the reward model (None if not needed)."""

    task: SeqTask
    sft: SeqSFTResult
    rm: SeqRewardModelResult | None


def build_seq_upstream(task_cfg: SeqTaskConfig = SeqTaskConfig(), sft_cfg: SeqSFTConfig = SeqSFTConfig(),
                       rm_cfg: SeqRewardModelConfig | None = None) -> SeqUpstream:
    """Draw the task and train SFT; the reward model too when rm_cfg is given."""
    task = make_task(task_cfg)
    return SeqUpstream(task, train_sft(task, sft_cfg),
                       None if rm_cfg is None else train_reward_model(task, rm_cfg))


@dataclass(frozen=True)
class SeqRunResult:
    """One run: its config, per-iteration history, final weights and exact final metrics."""

    config: SeqGRPOConfig
    history: pd.DataFrame          # iteration, METRICS (exact, after the update), BATCH_COLUMNS
    theta: torch.Tensor            # (N,) flat policy weights (SeqPolicyNet layout)
    final: dict                    # METRICS of the final policy (exact)
    per_context: pd.DataFrame      # context, answer, METRICS per context
    final_seq_logp: torch.Tensor   # (C, N) log pi(y | c) of every response under the final policy
    status: str = ""               # "" finished, "stopped", or "diverged"

    @property
    def completed_iterations(self) -> int:
        return len(self.history)

    @property
    def nbytes(self) -> int:
        """Measured memory: history, per-context table, final policy over responses, weights."""
        return (int(self.history.memory_usage(index=True, deep=True).sum())
                + int(self.per_context.memory_usage(index=True, deep=True).sum())
                + self.final_seq_logp.nbytes + self.theta.nbytes + 1024)

    @property
    def stopped(self) -> str:
        """Why the run ended before config.iterations, as a sentence ("" if it did not)."""
        n, total = self.completed_iterations, self.config.iterations
        if self.status == "diverged":
            return (f"Stopped after {n} of {total} iterations: the policy became non-finite. "
                    "Lower the learning rate.")
        return f"Stopped after {n} of {total} iterations." if self.status == "stopped" else ""


def overlong_penalty(length: torch.Tensor, max_length: int, buffer: int, factor: float) -> torch.Tensor:
    """DAPO's soft overlong punishment (N,): 0 up to L - buffer, then linearly down to -factor at L."""
    if buffer <= 0:
        return torch.zeros_like(length, dtype=torch.float32)
    start = max_length - buffer
    return torch.where(length > start, (start - length.float()) / buffer * factor, 0.0)


def reward_tables(up: SeqUpstream, configs: Sequence[SeqGRPOConfig]) -> torch.Tensor:
    """(E, C, N) the reward each member trains on: verifier or reward model, plus overlong penalty."""
    rows = []
    for c in configs:
        if c.reward == "reward_model":
            if up.rm is None:
                raise ValueError("a run with reward='reward_model' needs the reward model (rm_cfg)")
            base = up.rm.scores
        else:
            base = up.task.correct
        rows.append(base + overlong_penalty(up.task.responses.length, up.task.config.max_length,
                                            c.overlong_buffer, c.overlong_factor))
    return torch.stack(rows)


class _Members:
    """Per-member settings as tensors and the masks that let different sizes share a batch."""

    def __init__(self, configs: Sequence[SeqGRPOConfig]):
        vec = lambda name, dtype=torch.long: torch.tensor([getattr(c, name) for c in configs], dtype=dtype)
        self.n = len(configs)
        self.iterations, self.epochs, self.minibatches = vec("iterations"), vec("epochs"), vec("minibatches")
        self.steps = self.epochs * self.minibatches
        self.t_max, self.steps_max = int(self.iterations.max()), int(self.steps.max())
        self.p_max = max(c.prompts for c in configs)
        self.g_max = max(c.group_size for c in configs)
        prompts, group = vec("prompts"), vec("group_size")
        self.valid_p = torch.arange(self.p_max) < prompts.unsqueeze(1)                    # (E, P)
        self.valid = self.valid_p.unsqueeze(-1) & (torch.arange(self.g_max) < group.view(-1, 1, 1))
        mb = (torch.arange(self.p_max) * self.minibatches.unsqueeze(1) // prompts.unsqueeze(1))
        self.mb_of_sample = mb.unsqueeze(-1).expand(-1, -1, self.g_max).flatten(1)       # (E, S)
        self.estimators = [c.advantage_estimator for c in configs]
        self.terms = SeqLossTerms.from_configs(configs)
        self.mask_truncated = vec("mask_truncated", torch.bool).view(-1, 1)
        self.beta_reward = torch.tensor([c.kl_coef * (c.kl_placement == "reward") for c in configs]).view(-1, 1)
        self.reward_k_code = torch.tensor([KL_CODES[c.kl_estimator] for c in configs]).view(-1, 1, 1)
        self.valid_flat = self.valid.flatten(1)                                          # (E, S)
        self.tries = vec("dynamic_sampling") + 1
        self.k_max = int(self.tries.max())
        self.ref_reset = vec("ref_reset_every")
        self.ref_reset_any = bool((self.ref_reset > 0).any())
        self.n_valid = self.valid_flat.sum(1)
        self.single_minibatch = bool((self.minibatches == 1).all())
        self.kl_in_reward = bool((self.beta_reward > 0).any())
        self.uses_ref = self.kl_in_reward or self.terms.uses_kl
        self.needs_rows = bool(((self.terms.k_code == 0) & (self.terms.beta > 0)).any()
                               or ((self.reward_k_code == 0) & (self.beta_reward.view(-1, 1, 1) > 0)).any()
                               or self.terms.uses_entropy)


def _advantages(m: _Members, rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(E, P, G) advantages with each member's own estimator, and zero-std flags (E, P)."""
    kinds = sorted(set(m.estimators))
    adv, zero_std = advantages(rewards, m.valid, kinds[0])
    for kind in kinds[1:]:
        use = torch.tensor([k == kind for k in m.estimators]).view(-1, 1, 1)
        adv = torch.where(use, advantages(rewards, m.valid, kind)[0], adv)
    return adv, zero_std


def _row_values(table: torch.Tensor, ref_table: torch.Tensor, vocab: int):
    """Exact KL(pi || pi_ref) and entropy of every next-token distribution (E, C, K / V)."""
    logp = table.unflatten(-1, (-1, vocab))
    ref = ref_table.unflatten(-1, (-1, vocab))
    p = logp.exp()
    return (p * (logp - ref)).sum(-1), -(p * logp).sum(-1)


def _at_tokens(rows: torch.Tensor, responses, ctx, resp, vocab: int) -> torch.Tensor:
    """Per-prefix values rows (E, C, K / V) at the sampled responses' tokens -> (E, S, L)."""
    n_mem, n_ctx, n_rows = rows.shape
    index = ctx.unsqueeze(-1) * n_rows + responses.token_index[resp] // vocab
    return rows.reshape(n_mem, -1).gather(1, index.flatten(1)).view_as(index) * responses.mask[resp]


class SeqTrainer(ResumableTrainer):
    """A batch of sequence-GRPO runs, advanced a few iterations at a time.

        trainer = SeqTrainer(up, configs)
        trainer.advance(50)          # 50 more iterations (fewer at the end)
        partial = trainer.results()  # one SeqRunResult per config, so far
        trainer.advance()            # to the end

    Advancing in pieces gives the same runs as one go: randomness is drawn in fixed chunks.
    """

    def __init__(self, up: SeqUpstream, configs: Sequence[SeqGRPOConfig]):
        self.configs = configs = list(configs)
        if not configs:
            raise ValueError("no configs to train")
        check_seq_budget(configs, up.task.config)
        self.up, self.task, self.m = up, up.task, _Members(configs)
        m, task = self.m, up.task
        self.responses, self.n_ctx = task.responses, task.n_contexts
        self.big_l, self.vocab = task.config.max_length, task.config.alphabet_size + 1
        self.net = up.sft.net
        self.x = self.net.inputs(task.contexts)
        self.theta = up.sft.theta.repeat(m.n, 1)
        self.opt = BatchedAdam(self.theta, torch.tensor([c.lr for c in configs]))
        self.ref_table, self.ref_seq = up.sft.logp_table, up.sft.seq_logp   # (C, K), (C, N)
        if m.ref_reset_any:  # members whose reference moves keep their own copy
            self.ref_table = self.ref_table.repeat(m.n, 1, 1)
        self.rewards_cn = reward_tables(up, configs)                           # (E, C, N)
        self.rm_scores = up.rm.scores if up.rm is not None else None
        self.gens = [generator(c.seed) for c in configs]
        self.iteration, self.end = 0, m.t_max
        self.exact = torch.empty(m.t_max + 1, m.n, len(METRICS))
        self.stats = torch.zeros(m.t_max, m.n, len(BATCH_COLUMNS))
        self.first_bad = torch.full((m.n,), m.t_max + 1)
        self.good_theta = self.theta.clone()
        self.diverged = False
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
        if bool(finite.all()) and not self.diverged:
            self.good_theta.copy_(self.theta)
            return
        self.diverged = True  # a member whose policy became non-finite keeps its last finite one
        self.first_bad = torch.where(~finite & (self.first_bad > it), it, self.first_bad)
        ok = (self.first_bad > it).unsqueeze(1)
        self.good_theta = torch.where(ok, self.theta, self.good_theta)
        if not bool(ok.any()):
            self.end = it

    def _draw(self) -> None:
        """Each member's prompts (T, E, P) and uniforms (T, E, P, G) for the next CHUNK iterations."""
        m, start = self.m, self.iteration
        self.prompts_chunk = torch.zeros(CHUNK, m.n, m.p_max, m.k_max, dtype=torch.long)
        self.u_chunk = torch.zeros(CHUNK, m.n, m.p_max, m.k_max, m.g_max)
        for e, (gen, cfg) in enumerate(zip(self.gens, self.configs)):
            if start < cfg.iterations:
                tries = cfg.dynamic_sampling + 1
                self.prompts_chunk[:, e, :cfg.prompts, :tries] = torch.randint(
                    0, self.n_ctx, (CHUNK, cfg.prompts, tries), generator=gen)
                self.u_chunk[:, e, :cfg.prompts, :tries, :cfg.group_size] = torch.rand(
                    CHUNK, cfg.prompts, tries, cfg.group_size, generator=gen)

    def _iterate(self) -> None:
        m, it, row = self.m, self.iteration, self.iteration % CHUNK
        if row == 0:
            self._draw()
        responses, vocab, n_mem = self.responses, self.vocab, m.n
        valid = m.valid_flat
        table = self.table.detach()
        if m.ref_reset_any and it > 0:  # reference reset (TRL sync_ref_model): pi_ref <- pi
            reset = (m.ref_reset > 0) & (it % m.ref_reset.clamp_min(1) == 0)
            self.ref_table = torch.where(reset.view(-1, 1, 1), table, self.ref_table)
        ctx, resp, rewards, generated = self._sample(table)
        # Flat index of every sampled token into the (E, C K) tables; padding points at entry 0
        # and is masked wherever it could matter.
        index = (ctx.unsqueeze(-1) * responses.table_size + responses.token_index[resp]).flatten(1)
        shape = (n_mem, -1, self.big_l)
        old_logp = table.flatten(1).gather(1, index).view(shape)               # (E, S, L)
        ref_logp = None
        if m.uses_ref:
            ref_logp = (self.ref_table.flatten(1).gather(1, index) if self.ref_table.dim() == 3 else
                        self.ref_table.flatten().gather(0, index.flatten())).view(shape)
        real = responses.mask[resp]                                             # (E, S, L)
        truncated = responses.truncated[resp]
        token_mask = (real & (valid & ~(m.mask_truncated & truncated)).unsqueeze(-1)).float()
        adv, zero_std = _advantages(m, rewards.view(n_mem, m.p_max, m.g_max))
        adv = adv.flatten(1)
        batch_tokens = token_mask.sum((1, 2))                                  # dapo's normalizer
        in_run = it < m.iterations
        step_sums = torch.zeros(n_mem, 4)      # clip_frac_token, clip_frac_seq, policy_loss, grad_norm
        for step in range(m.steps_max):
            if step:
                self._forward()
            active = in_run & (step < m.steps) & (self.first_bad > it)
            if m.single_minibatch:
                in_mb, mask, n_seq = valid, token_mask, m.n_valid
            else:
                in_mb = (m.mb_of_sample == (step % m.minibatches).unsqueeze(1)) & valid   # (E, S)
                mask, n_seq = token_mask * in_mb.unsqueeze(-1), in_mb.sum(1)
            leaf = self.table.detach().requires_grad_(True)
            new_logp = leaf.flatten(1).gather(1, index).view(shape)
            exact_kl = entropy = None
            if m.needs_rows:
                kl_rows, h_rows = _row_values(leaf, self.ref_table, vocab)
                exact_kl = _at_tokens(kl_rows, responses, ctx, resp, vocab)
                entropy = _at_tokens(h_rows, responses, ctx, resp, vocab)
            loss_tok, clipped = per_token_loss(new_logp, old_logp, ref_logp, adv, mask, m.terms,
                                               exact_kl, entropy)
            loss = aggregate(loss_tok, mask, m.terms.agg, n_seq, batch_tokens, self.big_l)
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
        n_valid = m.n_valid
        self.stats[it] = torch.cat([generated.unsqueeze(1), torch.stack([
            (rewards * valid).sum(1) / n_valid,
            (responses.length[resp] * valid).sum(1) / n_valid,
            (zero_std & m.valid_p).sum(1) / m.valid_p.sum(1)], 1),
            step_sums[:, :2] / m.steps.unsqueeze(1), cosine.unsqueeze(1),
            step_sums[:, 2:] / m.steps.unsqueeze(1)], 1)

    def _sample(self, table: torch.Tensor):
        """Draw and score each member's groups: ctx, resp, rewards (E, S) and generated samples (E,).

        With dynamic sampling (K tries per prompt slot), a slot keeps its first try whose rewards
        are not all equal, or its last allowed try. With the KL placed in the reward,
        r <- r - beta sum_t kl_t over the response's tokens."""
        m, responses, row = self.m, self.responses, self.iteration % CHUNK
        n_mem, p, k, g = m.n, m.p_max, m.k_max, m.g_max
        prompts, u = self.prompts_chunk[row], self.u_chunk[row]             # (E, P, K), (E, P, K, G)
        ctx = prompts.unsqueeze(-1).expand(-1, -1, -1, g).flatten(1)        # (E, P K G)
        resp = sample_responses(self.seq_logp.detach().exp(), ctx, u.flatten(1))
        rewards = self.rewards_cn.flatten(1).gather(1, ctx * responses.n + resp)
        if m.kl_in_reward:
            index = (ctx.unsqueeze(-1) * responses.table_size + responses.token_index[resp]).flatten(1)
            shape = (n_mem, -1, self.big_l)
            logp = table.flatten(1).gather(1, index).view(shape)
            ref = (self.ref_table.flatten(1).gather(1, index) if self.ref_table.dim() == 3 else
                   self.ref_table.flatten().gather(0, index.flatten())).view(shape)
            exact_rows = (_at_tokens(_row_values(table, self.ref_table, self.vocab)[0], responses,
                                     ctx, resp, self.vocab) if m.needs_rows else None)
            kl_seq = (token_kl(logp, ref, m.reward_k_code, exact_rows) * responses.mask[resp]).sum(-1)
            rewards = rewards - m.beta_reward * kl_seq
        if k == 1:
            return ctx, resp, rewards, m.n_valid.float()
        r = rewards.view(n_mem, p, k, g)
        valid = m.valid.unsqueeze(2)                                            # (E, P, 1, G)
        signal = ((torch.where(valid, r, -torch.inf).amax(-1) > torch.where(valid, r, torch.inf).amin(-1))
                  & (torch.arange(k) < m.tries.view(-1, 1, 1)))                 # (E, P, K)
        choice = torch.where(signal.any(-1), signal.int().argmax(-1), (m.tries - 1).view(-1, 1))
        pick = lambda t: t.view(n_mem, p, k, g).gather(
            2, choice.view(n_mem, p, 1, 1).expand(-1, -1, 1, g)).flatten(1)
        generated = ((choice + 1) * m.valid.sum(-1)).sum(1).float()
        return pick(ctx), pick(resp), pick(rewards), generated

    def _exact_dtable(self) -> torch.Tensor:
        """dJ/dlogp_table (E, C, K) of the exact objective J = 1/C sum_c sum_y pi(y|c) r(c, y):
        1/C sum_y pi(y|c) r(c, y) M[k, y], the policy gradient theorem summed over every response
        (no baseline needed: the sum is exact). grad_cosine = cos(-batch loss gradient, dJ/dtheta)."""
        weighted = self.seq_logp.detach().exp() * self.rewards_cn / self.n_ctx  # (E, C, N)
        return torch.matmul(weighted, self.responses.incidence.T)

    def results(self) -> list[SeqRunResult]:
        """Each member's run so far: its own iterations, up to a stop, before any divergence."""
        done, m = self.iteration, self.m
        kept = torch.minimum(m.iterations.clamp_max(done), self.first_bad - 1)
        table, _ = self.net.forward(self.good_theta, self.x, self.n_ctx)
        final_seq = sequence_logp(table, self.responses)
        out = []
        for e, cfg in enumerate(self.configs):
            n = int(kept[e])
            hist = {"iteration": list(range(1, n + 1)),
                    "samples": self.stats[:n, e, 0].round().long().cumsum(0).numpy()}
            hist.update({k: self.exact[1:n + 1, e, j].numpy() for j, k in enumerate(METRICS)})
            hist.update({k: self.stats[:n, e, j].numpy() for j, k in enumerate(BATCH_COLUMNS)
                         if k != "generated"})
            row = self.exact[n, e]
            final = {k: float(row[j]) for j, k in enumerate(METRICS)}
            ctx_metrics = sequence_metrics(final_seq[e], self.task, self.ref_seq, self.rm_scores,
                                           per_context=True)
            per_context = pd.DataFrame({"context": range(self.n_ctx),
                                        "answer": self.task.answer.numpy(),
                                        **{k: v.numpy() for k, v in ctx_metrics.items()}})
            status = ("diverged" if n < min(cfg.iterations, done) else
                      "stopped" if n < cfg.iterations else "")
            out.append(SeqRunResult(cfg, pd.DataFrame(hist), self.good_theta[e].clone(), final,
                                    per_context, final_seq[e].detach().clone(), status))
        return out


def train_seq(up: SeqUpstream, configs: Sequence[SeqGRPOConfig],
              on_iteration: Callable[[int, int], bool | None] | None = None) -> list[SeqRunResult]:
    """Train len(configs) runs as one batch from the SFT policy; one SeqRunResult per config."""
    trainer = SeqTrainer(up, configs)
    trainer.advance(on_iteration=on_iteration)
    return trainer.results()


def run_seq(configs: Sequence[SeqGRPOConfig], task_cfg: SeqTaskConfig = SeqTaskConfig(),
            sft_cfg: SeqSFTConfig = SeqSFTConfig(), rm_cfg: SeqRewardModelConfig = SeqRewardModelConfig()
            ) -> tuple[SeqUpstream, list[SeqRunResult]]:
    """From configs to results: builds the task, SFT (and the reward model if a run needs it)."""
    needs_rm = any(c.reward == "reward_model" for c in configs)
    up = build_seq_upstream(task_cfg, sft_cfg, rm_cfg if needs_rm else None)
    return up, train_seq(up, configs)
