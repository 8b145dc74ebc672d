"""The one place the sequence engine imports the one-token engine's estimators.

The advantage estimators (grpo_core.advantages) and the per-sample KL estimators
(grpo_core.losses) are shared by both engines, never copied.
"""
from ..advantages import advantages  # noqa: F401
from ..losses import KL_CODES, sampled_kl  # noqa: F401
