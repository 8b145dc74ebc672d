"""The one place the sequence engine imports the one-token engine's estimators.

The advantage estimators and the per-sample KL estimators are shared, never copied: when
grpo_core.grpo is split into advantages.py and losses.py, only these imports move.
"""
from ..grpo import KL_CODES, advantages, sampled_kl  # noqa: F401
