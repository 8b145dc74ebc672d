"""`python -m grpo_core landscape`: every method of the notebook's closing table side by side.

    python -m grpo_core landscape --seeds 8 --json
    python -m grpo_core landscape --methods rlvr,ppo_rlvr --seeds 8   # GRPO + RLVR against PPO on the verifier
"""
from __future__ import annotations

import time

from ..config import ConfigError
from ..methods.dpo import DPO_DATA
from ..methods.landscape import ALL_METHODS, DEFAULT_RESPONSES, METHOD_NAMES
from .flags import MAX_SEEDS, Command, UsageError, configs_json, int_flag, format_table, usage
from .runs import UPSTREAM, upstream


def _flags(p) -> None:
    p.add_argument("--methods", default=",".join(METHOD_NAMES), metavar="M,M,...",
                   help=f"Comma-separated methods, among {', '.join(ALL_METHODS)}; "
                        f"default the notebook's table: {', '.join(METHOD_NAMES)} "
                        f"(ppo_rlvr, PPO on the verifier, on request).")
    p.add_argument("--responses", default=str(DEFAULT_RESPONSES), metavar="BUDGET",
                   help=f"Responses each online run generates (its iterations are this over "
                        f"its responses per iteration); default {DEFAULT_RESPONSES} "
                        f"(GRPO's 500 x 8 x 8).")
    p.add_argument("--dpo-data", default=DPO_DATA[0], choices=DPO_DATA,
                   help="Offline DPO's pairs: the reward model's own (default) or pairs "
                        "sampled from the reference policy.")


def cmd_landscape(args) -> tuple[dict, str]:
    from ..methods.landscape import landscape, landscape_configs
    upstream_cfgs, build = upstream(args)
    n_seeds = int_flag("--seeds", args.seeds, 1, MAX_SEEDS)
    responses = int_flag("--responses", args.responses, 1, 10 * DEFAULT_RESPONSES)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown or not methods:
        raise UsageError(f"--methods must be comma-separated names among {', '.join(ALL_METHODS)}, "
                         f"got {args.methods!r}")
    try:  # every setting is checked before any training
        landscape_configs(methods, n_seeds, responses, args.dpo_data)
    except ConfigError as e:
        raise usage(e, "--" + {"iterations": "responses"}.get(e.field_name, e.field_name)) from None
    start = time.perf_counter()
    up = build()
    upstream_seconds = time.perf_counter() - start
    res = landscape(methods, n_seeds, responses, up, args.dpo_data)
    out = {"command": "landscape", "config": configs_json(UPSTREAM, upstream_cfgs),
           "seeds": n_seeds, "budget": responses, **res.to_json()}
    out["seconds"] = {**out["seconds"], "upstream": upstream_seconds,
                      "total": out["seconds"]["total"] + upstream_seconds}
    shown = res.table.assign(true_reward_range=[f"[{a:.4f}, {b:.4f}]" for a, b in zip(
        res.table["true_reward_p10"], res.table["true_reward_p90"])])
    shown = shown[["label", "true_reward", "true_reward_range", "improved", "kl", "responses",
                   "iterations", "seconds", "networks", "trained_params"]].rename(
        columns={"true_reward_range": "p10_p90", "improved": "beat_sft"})
    text = "\n".join([
        f"The full landscape: {n_seeds} seed(s) per method, {responses:,} responses per online run",
        "true_reward: final exact expected true reward (mean over seeds, and its 10th-90th "
        "percentiles); kl: exact KL(pi || pi_ref); beat_sft: seeds above the SFT start; "
        "seconds: each method's share of its batch", "",
        format_table(shown), "",
        f"SFT (start): {res.sft:.4f}   best achievable: {res.best:.4f}",
        f"trained in {out['seconds']['total']:.2f}s (upstream {upstream_seconds:.2f}s)"])
    return out, text


COMMANDS = (
    Command("landscape", "Every method (PPO, REINFORCE, RLOO, GRPO, RLVR, DPO, ...) side by side, "
            "several seeds each, on one response budget.", cmd_landscape, UPSTREAM, seeds=8, extra=_flags),
)
