"""The full landscape: every method of the notebook's comparison table, trained side by side on the
same toy task from the same SFT policy, several seeds each, measured exactly.

    res = landscape(["grpo", "rlvr", "dpo"], seeds=8)
    res.table                     # one row per method: true_reward (mean, p10, p90), kl, responses, ...
    res.histories["grpo"]         # one DataFrame per seed: iteration, responses, true_reward, kl_ref, ...
    res.band("grpo")              # mean and p10/p90 of true_reward across seeds at each iteration

Budgets: every online method generates the same number of responses per run (`responses`,
default GRPO's 500 iterations x 8 prompts x 8 responses = 32 000); a method's iterations are the
budget divided by its responses per iteration. Offline DPO generates none: it trains on the
reward model's own labelled pairs (the same information the reward model had).

The online methods that share the GRPO engine train as members of its batches (the method is a
per-member setting, as the advantage estimator is), one batch per shape (iterations, steps)
so that members step in lockstep; each member follows the trajectory it would follow alone. Offline and online DPO train together as one batch of their own. A method's
`seconds` is its share of its batch's time, in proportion to its optimizer steps.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from ..config import ConfigError, GRPOConfig, RLVRConfig, check_budget
from ..models import PolicyNet, RewardNet
from ..pipeline import Upstream, band, build_upstream, reference_metrics, run_many
from .dpo import DPOConfig, OnlineDPOConfig, train_dpo_runs
from .ppo import PPOConfig, ReinforcePPConfig, ReMaxConfig, responses_per_iteration

DEFAULT_RESPONSES = 500 * 8 * 8          # GRPO's default run: iterations x prompts x group size
HISTORY_COLUMNS = ("iteration", "responses", "true_reward", "rm_reward", "kl_ref", "entropy",
                   "correct_prob")


@dataclass(frozen=True)
class MethodSpec:
    """One row of the landscape: what it is, and how to make one run of it for a seed and budget."""

    name: str
    label: str
    help: str                         # one sentence
    reward_source: str                # the notebook table's columns
    advantage: str
    online: bool
    networks: tuple[str, ...]         # networks held while the policy trains
    make: Callable[[int, int], object] = field(repr=False)   # (seed, responses) -> config
    engine: str = "grpo"              # "grpo" (members of the GRPO batch), "dpo", "online_dpo"


def _iterations(per_iteration: int, responses: int, name: str) -> int:
    """The iterations a budget buys; a clear error when it buys none or too many."""
    n = responses // per_iteration
    if not 1 <= n <= 5000:
        raise ConfigError("responses", f"{responses:,} responses give {n} iterations of {name} "
                          f"({per_iteration} responses each); it must be 1 to 5000")
    return n


def _engine(name: str, cls=GRPOConfig, **fields):
    """A maker of GRPO-engine configs whose iterations spend the budget (ReMax's greedy
    responses counted)."""
    def make(seed: int, responses: int) -> GRPOConfig:
        base = cls(seed=seed, **fields)
        return base.replace(iterations=_iterations(responses_per_iteration(base), responses, name))
    return make


_rlvr = _engine("rlvr", RLVRConfig)


def _dpo(seed: int, responses: int, data: str = "reward_model_pairs") -> DPOConfig:
    return DPOConfig(seed=seed, data=data)


def _online_dpo(seed: int, responses: int) -> OnlineDPOConfig:
    base = OnlineDPOConfig(seed=seed)
    return base.replace(iterations=_iterations(base.samples_per_iteration, responses, "online_dpo"))


POLICY_REF_RM = ("policy", "reference", "reward model")
METHODS: dict[str, MethodSpec] = {s.name: s for s in [
    MethodSpec("ppo", "PPO (RLHF)", "One response per prompt, a learned critic V(c) as the baseline "
               "(GAE for one-token responses: A = r - V(c)), whitened advantages, clipped steps, "
               "k1 KL subtracted from the reward (InstructGPT; TRL PPOTrainer).",
               "Reward model", "GAE + critic V(s)", True, (*POLICY_REF_RM, "critic"),
               _engine("ppo", PPOConfig)),
    MethodSpec("reinforce", "REINFORCE", "Policy gradient with the raw reward as the advantage: "
               "no baseline (the GRPO engine with advantage_estimator='none').",
               "Reward model", "r (no baseline)", True, POLICY_REF_RM,
               _engine("reinforce", advantage_estimator="none")),
    MethodSpec("rloo", "RLOO", "REINFORCE with a leave-one-out baseline: each response's advantage is "
               "its reward minus the mean of the other responses to its prompt (Ahmadian et al. 2024).",
               "Reward model", "r - mean of the others", True, POLICY_REF_RM,
               _engine("rloo", advantage_estimator="rloo")),
    MethodSpec("reinforce_pp", "REINFORCE++", "One response per prompt, k1 KL subtracted from the "
               "reward, rewards whitened over the whole batch, clipped steps (Hu 2025).",
               "Reward model", "batch-whitened r", True, POLICY_REF_RM,
               _engine("reinforce_pp", ReinforcePPConfig)),
    MethodSpec("remax", "ReMax", "The baseline is the reward of the greedy response to the prompt: "
               "8 prompts x (7 sampled + 1 greedy) responses (Li et al. 2023).",
               "Reward model", "r - r(greedy)", True, POLICY_REF_RM,
               _engine("remax", ReMaxConfig)),
    MethodSpec("grpo", "GRPO", "Group-relative advantages on the reward model's scores: "
               "(r - group mean) / group std, clipped steps, exact KL in the loss (the notebook).",
               "Reward model", "Group-relative", True, POLICY_REF_RM, _engine("grpo")),
    MethodSpec("rlvr", "GRPO + RLVR", "GRPO on the verifiable reward: 1 for the context's best token, "
               "0 otherwise; no reward model at all.",
               "Verifiable (exact)", "Group-relative", True, ("policy", "reference"), _rlvr),
    MethodSpec("ppo_rlvr", "PPO + RLVR", "PPO on the verifiable reward: its critic V(c) learns the "
               "verifier's 0/1 reward, k1 KL subtracted from it; no reward model (the alternative to "
               "GRPO + RLVR when a verifier is available).",
               "Verifiable (exact)", "GAE + critic V(s)", True, ("policy", "reference", "critic"),
               _engine("ppo_rlvr", PPOConfig, reward="verifiable")),
    MethodSpec("dpo", "DPO", "Offline DPO on exactly the reward model's labelled pairs: the same "
               "information as 'reward model + GRPO', no reward model and no sampling.",
               "Implicit (log ratio)", "N/A (supervised)", False, ("policy", "reference"), _dpo,
               engine="dpo"),
    MethodSpec("online_dpo", "Online DPO", "Two responses per prompt from the current policy, the "
               "reward model picks the chosen one, one DPO step (Guo et al. 2024).",
               "Reward model (as a judge)", "N/A (pairwise)", True, POLICY_REF_RM, _online_dpo,
               engine="online_dpo"),
]}
# The notebook's table (the CLI's default and its JSON contract); ALL_METHODS adds the opt-in ones.
METHOD_NAMES = ("ppo", "reinforce", "rloo", "reinforce_pp", "remax", "grpo", "rlvr", "dpo", "online_dpo")
ALL_METHODS = tuple(METHODS)          # in the table's order, PPO + RLVR next to GRPO + RLVR
assert set(METHOD_NAMES) < set(ALL_METHODS)


@dataclass(frozen=True)
class LandscapeResult:
    """Every method's runs, a summary table, and per-seed histories a page can draw."""

    table: pd.DataFrame                        # one row per method (see landscape)
    histories: dict[str, list[pd.DataFrame]]   # method -> one history per seed (HISTORY_COLUMNS, ...)
    runs: dict[str, list]                      # method -> its RunResults / DPOResults (configs, final_logp)
    per_context: dict[str, np.ndarray]         # method -> (seeds, C) final exact true reward
    sft: float                                 # exact true reward of the SFT (reference) policy
    best: float                                # best achievable exact true reward
    upstream: Upstream
    seconds: dict                              # upstream, each batch, total

    def band(self, method: str, column: str = "true_reward", x: str = "iteration") -> pd.DataFrame:
        """Mean and 10th/90th percentiles across seeds of `column` at each x (pipeline.band)."""
        return band(self.histories[method], column, x)

    def to_json(self) -> dict:
        """The CLI's JSON contract: methods (one object per method), sft, best, seconds."""
        rows = [{k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
                for row in self.table.to_dict(orient="records")]
        return {"methods": rows, "sft": self.sft, "best": self.best, "seconds": self.seconds}


def param_counts(up: Upstream, critic_hidden: int | None = None) -> dict[str, int]:
    """Parameters of each network the landscape's methods use."""
    p = up.problem.config
    out = {"policy": PolicyNet(p.context_dim, up.sft.config.hidden_dim, p.vocab_size).layout.size,
           "reward model": RewardNet(p.context_dim, up.rm.config.hidden_dim, p.vocab_size).layout.size}
    if critic_hidden is not None:
        out["critic"] = PolicyNet(p.context_dim, critic_hidden, 1).layout.size
    return out


def _history(h: pd.DataFrame, responses_column: str = "responses") -> pd.DataFrame:
    columns = ["responses" if c == "samples" else c for c in h.columns]
    order = [c for c in HISTORY_COLUMNS if c in columns] + [c for c in columns if c not in HISTORY_COLUMNS]
    out = h.set_axis(columns, axis=1)         # a new frame without copying (rename copies)
    return out if columns == order else out[order]


def _work(run) -> float:
    """A run's share of its batch's compute: its optimizer steps (at these sizes each step costs
    about the same per member, whatever the method)."""
    cfg = run.config
    per_iteration = cfg.epochs * cfg.minibatches if isinstance(cfg, GRPOConfig) else 1
    return len(run.history) * per_iteration


def landscape_configs(methods: Sequence[str] = METHOD_NAMES, seeds: int = 8,
                      responses: int = DEFAULT_RESPONSES,
                      dpo_data: str = "reward_model_pairs") -> dict[str, list]:
    """Each method's run configs, seeds 0 .. seeds-1, before any training.

    Raises ConfigError (naming `methods`, `seeds` or `responses`) for bad input."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ConfigError("methods", f"must be among {', '.join(ALL_METHODS)}, got "
                          f"{', '.join(unknown) or 'none'}")
    if not 1 <= seeds <= 64:
        raise ConfigError("seeds", f"must be 1 to 64, got {seeds}")
    configs = {}
    for m in dict.fromkeys(methods):
        make = (lambda s, r: _dpo(s, r, dpo_data)) if m == "dpo" else METHODS[m].make
        configs[m] = [make(s, responses) for s in range(seeds)]
    check_budget([c for cs in configs.values() for c in cs if isinstance(c, GRPOConfig)])
    return configs


def landscape(methods: Sequence[str] = METHOD_NAMES, seeds: int = 8,
              responses: int = DEFAULT_RESPONSES, up: Upstream | None = None,
              dpo_data: str = "reward_model_pairs") -> LandscapeResult:
    """Train `seeds` runs of each method (seeds 0 .. seeds-1) from the same upstream and measure them.

    up: the task, SFT policy and reward model (built with defaults if None, and timed).
    Raises ConfigError (naming `methods`, `seeds` or `responses`) for bad input, before training.
    """
    configs = landscape_configs(methods, seeds, responses, dpo_data)
    methods = list(configs)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    if up is None:
        up = build_upstream()
        seconds["upstream"] = time.perf_counter() - start

    results: dict[str, list] = {}
    method_seconds: dict[str, float] = {}
    # GRPO-engine members train in batches of one shape (iterations, optimizer steps): every
    # member of a batch then steps in lockstep. PPO's and REINFORCE++'s 64 x 1 responses sit flat
    # in GRPO's 8 x 8 layout (trainer._Members), so they share its batch without padding.
    shapes: dict[tuple, list[str]] = {}
    for m in methods:
        if METHODS[m].engine == "grpo":
            c = configs[m][0]
            shapes.setdefault((c.iterations, c.epochs * c.minibatches), []).append(m)
    batches = list(shapes.values())
    dpo_members = [m for m in methods if METHODS[m].engine != "grpo"]
    for names in batches + ([dpo_members] if dpo_members else []):
        batch = [c for m in names for c in configs[m]]
        t0 = time.perf_counter()
        if METHODS[names[0]].engine == "grpo":
            runs = run_many(up, batch)
        else:
            runs = train_dpo_runs(up.problem, up.sft, up.rm.config, up.rm.scores, batch)
        elapsed = time.perf_counter() - t0
        seconds["+".join(names)] = elapsed
        total_work = sum(_work(r) for r in runs)
        for i, m in enumerate(names):
            results[m] = runs[i * seeds:(i + 1) * seeds]
            method_seconds[m] = elapsed * sum(_work(r) for r in results[m]) / total_work
    seconds["total"] = time.perf_counter() - start

    sft = float(reference_metrics(up)["true_reward"])
    counts = param_counts(up, PPOConfig().critic_hidden)
    rows, histories, per_context = [], {}, {}
    for m in methods:
        spec, runs = METHODS[m], results[m]
        histories[m] = [_history(r.history) for r in runs]
        final = np.array([h["true_reward"].iloc[-1] for h in histories[m]])
        per_context[m] = np.stack([r.per_context["true_reward"].to_numpy() for r in runs])
        trained = [n for n in spec.networks if n != "reference"]
        rows.append({
            "method": m, "label": spec.label,
            "true_reward": float(final.mean()),
            "true_reward_p10": float(np.quantile(final, 0.1)),
            "true_reward_p90": float(np.quantile(final, 0.9)),
            "improved": int((final > sft).sum()), "seeds": seeds,
            "kl": float(np.mean([h["kl_ref"].iloc[-1] for h in histories[m]])),
            "responses": int(histories[m][0]["responses"].iloc[-1]),
            "iterations": len(histories[m][0]),
            "seconds": method_seconds[m],
            "networks": len(spec.networks),
            "trained_params": int(sum(counts[n] for n in trained)),
            "reward_source": spec.reward_source, "advantage": spec.advantage, "online": spec.online,
        })
    best = float(up.problem.best_reward.mean())
    return LandscapeResult(pd.DataFrame(rows), histories, results, per_context, sft, best, up, seconds)


# ---------------------------------------------------------------- measured columns for the page

def responses_to_gain(histories: Sequence[pd.DataFrame], sft: float, fraction: float = 0.9,
                      x: str = "responses") -> float:
    """The first x (responses generated, or pairs for DPO) at which the mean over seeds of
    true_reward reaches sft + fraction * (final mean - sft); NaN when the final mean is not above sft.

    histories: one DataFrame per seed with columns x and true_reward, aligned on their rows."""
    mean = pd.concat([h[["true_reward"]].reset_index(drop=True) for h in histories], axis=1).mean(axis=1)
    final = float(mean.iloc[-1])
    if not final > sft:
        return float("nan")
    reached = np.flatnonzero(mean.to_numpy() >= sft + fraction * (final - sft))
    return float(histories[0][x].iloc[int(reached[0])])


def measured_table(res: LandscapeResult, fraction: float = 0.9) -> pd.DataFrame:
    """res.table plus the page's measured columns: responses_per_iteration, reward_queries
    (reward evaluations per iteration: each generated response is scored once; offline DPO none),
    seconds_per_1000 (training seconds per 1,000 responses generated; NaN for offline DPO),
    to_90 (responses, or for offline DPO pairs, to reach `fraction` of the final gain over SFT)
    and gain (final true reward - SFT)."""
    t = res.table.copy()
    per_iteration = (t["responses"] / t["iterations"]).round().astype(int)
    t["responses_per_iteration"] = per_iteration
    t["reward_queries"] = np.where(t["online"], per_iteration, 0)
    t["seconds_per_1000"] = np.where(t["responses"] > 0, 1000 * t["seconds"] / t["responses"].clip(lower=1),
                                     np.nan)
    t["to_90"] = [responses_to_gain(res.histories[m], res.sft, fraction,
                                    "responses" if METHODS[m].online else "pairs") for m in t["method"]]
    t["gain"] = t["true_reward"] - res.sft
    return t


def kl_frontier(ref_probs, proxy, true, betas: Sequence[float]) -> pd.DataFrame:
    """The exact KL-regularized optimum pi_ref exp(r / beta) / Z for r = the reward model (target
    'reward model') and r = the true reward (target 'true reward'), for each beta: one row per
    (target, beta) with kl, true_reward and proxy_reward (analysis.kl_regularized_frontier)."""
    from ..analysis import kl_regularized_frontier
    rm = kl_regularized_frontier(ref_probs, proxy, true, betas).assign(target="reward model")
    gold = kl_regularized_frontier(ref_probs, true, true, betas)
    gold = gold.assign(proxy_reward=np.nan, target="true reward")
    return pd.concat([rm, gold], ignore_index=True)
