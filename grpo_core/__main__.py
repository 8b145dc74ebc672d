"""`python -m grpo_core ...`: see grpo_core/cli.py."""
from .cli import main

raise SystemExit(main())
