"""`python -m grpo_core ...`: see grpo_core/cli/."""
from .cli import main

raise SystemExit(main())
