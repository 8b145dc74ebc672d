"""The Landscape page's sentences, computed from its measured table: who ends highest, when to use
what, what the (KL, true reward) plane shows and which KL each placement optimizes.

Shared between sessions: nothing; functions of tables only.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd


def optimum_at(front: pd.DataFrame, target: str, kl: float) -> float:
    """The true reward of the target's optimum at this KL (interpolated along beta)."""
    f = front[front.target == target].sort_values("kl")
    return float(np.interp(kl, f.kl, f.true_reward))


# ---------------------------------------------------------------- sentences computed from the results

def _row(t: pd.DataFrame, m: str) -> pd.Series | None:
    rows = t[t.method == m]
    return None if rows.empty else rows.iloc[0]


def winner_sentence(t: pd.DataFrame, sft: float) -> str:
    """Which method ends with the most exact true reward, by how much over the runner-up and SFT."""
    order = t.sort_values("true_reward", ascending=False)
    top = order.iloc[0]
    text = (f"**{top.label}** ends highest: exact true reward {top.true_reward:.3f} "
            f"({top.true_reward - sft:+.3f} over SFT's {sft:.3f})")
    if len(order) > 1:
        second = order.iloc[1]
        text += f", {top.true_reward - second.true_reward:.3f} above {second.label} ({second.true_reward:.3f})"
    return text + "."


def when_to_use(t: pd.DataFrame, sft: float) -> list[tuple[str, str, str]]:
    """(situation, the notebook's advice, what this page measured) rows, each from the results;
    a row whose methods were not trained says which to add."""
    rows = []
    dpo, grpo, rlvr, ppo = (_row(t, m) for m in ("dpo", "grpo", "rlvr", "ppo"))
    if dpo is not None and grpo is not None:
        better = dpo if dpo.true_reward > grpo.true_reward else grpo
        worse = grpo if better is dpo else dpo
        rows.append(("Offline preference pairs only", "DPO: simple, no sampling, no reward model",
                     f"On the same pairs, {better.label} reaches {better.true_reward:.3f} and {worse.label} "
                     f"{worse.true_reward:.3f} ({better.true_reward - worse.true_reward:.3f} apart); "
                     + ("the advice holds here." if better is dpo else
                        "here the advice does not hold: training a reward model and running GRPO does better.")))
    else:
        rows.append(("Offline preference pairs only", "DPO", "Add DPO and GRPO to the methods to measure this."))
    ppo_rlvr = _row(t, "ppo_rlvr")
    if rlvr is not None and ppo_rlvr is not None:
        wins = rlvr.true_reward > ppo_rlvr.true_reward
        rows.append(("A verifier is available", "RLVR (GRPO on the verifiable reward)",
                     f"On the same verifier, GRPO + RLVR ends at {rlvr.true_reward:.3f} and PPO + RLVR at "
                     f"{ppo_rlvr.true_reward:.3f} ({rlvr.true_reward - ppo_rlvr.true_reward:+.3f}), with "
                     f"{int(rlvr.networks)} networks instead of {int(ppo_rlvr.networks)} (no critic); "
                     + ("the advice holds here." if wins else
                        "at this budget the advice does not hold on this task: the critic does better.")))
    else:
        rows.append(("A verifier is available", "RLVR",
                     "Add GRPO + RLVR and PPO + RLVR (PPO on the verifier) to measure this."))
    online = t[t.online & t.to_90.notna()]
    if len(online) > 0:
        fast = online.sort_values("to_90").iloc[0]
        per = online.assign(rate=online.gain / online.responses * 1000).sort_values("rate", ascending=False).iloc[0]
        rows.append(("Limited compute (responses generated)", "GRPO: no critic, efficient",
                     f"{fast.label} reaches 90% of its final gain first, after {fast.to_90:,.0f} responses; "
                     f"{per.label} gains the most true reward per 1,000 responses "
                     f"({1000 * per.gain / per.responses:.4f}). "
                     + ("The advice holds here." if fast.method == "grpo" else
                        "Here the advice does not hold: GRPO is not the fastest.")))
    if ppo is not None and grpo is not None:
        rows.append(("Maximum quality, resources available", "PPO: the most flexible",
                     f"PPO ends at {ppo.true_reward:.3f} with {int(ppo.networks)} networks, GRPO at "
                     f"{grpo.true_reward:.3f} with {int(grpo.networks)}; "
                     + ("the advice holds here." if ppo.true_reward > grpo.true_reward else
                        "here the critic does not buy quality: the advice does not hold on this task.")))
    return rows


# ---------------------------------------------------------------- sentences of the lower sections

def plane_sentence(t: pd.DataFrame, front: pd.DataFrame) -> str:
    """Which method ends closest to the true reward's optimum at its own KL, which farthest, and
    how many end above the reward model's optimum."""
    gaps = {row.label: optimum_at(front, "true reward", row.kl) - row.true_reward for row in t.itertuples()}
    closest, farthest = min(gaps, key=gaps.get), max(gaps, key=gaps.get)
    above = [row.label for row in t.itertuples() if row.true_reward > optimum_at(front, "reward model", row.kl)]
    return (f"No policy at a given KL can beat the solid line. **{closest}** ends closest to it: "
            f"{gaps[closest]:.3f} below the optimum of the true reward at its own KL; the farthest, "
            f"**{farthest}**, is {gaps[farthest]:.3f} below. The dashed line is the true reward "
            "of the reward model's exact optimum: what perfectly optimizing the reward model would give at each "
            f"KL. {len(above)} of {len(gaps)} methods end above it" + (f" ({', '.join(above)})" if above else "") + ".")


def placements_view(fixed: pd.DataFrame) -> pd.DataFrame:
    """kl_placements as a static table (st.table wraps its text, so every column is in view):
    indexed by placement, what it is first, numbers to 4 decimals."""
    order = ["what it is"] + [c for c in fixed.columns if c not in ("placement", "what it is")]
    shown = fixed.set_index("placement")[order]
    return shown.assign(**{c: ["—" if math.isnan(v) else f"{v:.4f}" for v in shown[c]]
                           for c in order if shown[c].dtype.kind == "f"})


def placements_sentence(fixed: pd.DataFrame) -> str:
    """Where k3 in the loss and k1 in the reward converge, from kl_placements."""
    by = fixed.set_index("placement")
    k3, k1r = by.loc["k3_loss"], by.loc["k1_reward"]
    return (f"k3 in the loss follows the gradient of **{k3['its expected gradient is that of']}** and converges "
            f"to the {k3['converges to']}: KL {k3['KL(π ‖ π_ref) there']:.4f}, true reward "
            f"{k3['true reward there']:.4f}. k1 in the reward follows **{k1r['its expected gradient is that of']}** "
            f"and converges to {k1r['converges to']}: KL {k1r['KL(π ‖ π_ref) there']:.4f}, true reward "
            f"{k1r['true reward there']:.4f}. k1 in the loss has zero expected gradient: it leaves the policy "
            "free to chase the reward's argmax.")
