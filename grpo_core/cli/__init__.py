"""Command line: the app's pages as subcommands, with flags generated from the config dataclasses.

    python -m grpo_core grpo --group-size 16 --kl-coef 0.1 --seeds 8
    python -m grpo_core sweep --group-sizes 2,4,8,16 --json
    python -m grpo_core notebook
    python -m grpo_core seq --loss-type dr_grpo --seeds 8 --json
    python -m grpo_core grid --x lr=1e-4:1e-1:8:log --y kl_coef=0:0.5:8 --seeds 4 [--backend ray]
    python -m grpo_core landscape --seeds 8 --json

One module per command group (runs: the one-token pages and bench; seq; grid; landscape), each
listing its `Command`s; every one builds its flags with flags.py, so a config field has the same
flag, range check and one-line error everywhere. Bad input ends with one `error: ...` line and
exit status 2.
"""
from __future__ import annotations

import json
import os
import sys

from ..config import ConfigError
from . import grid, landscape, runs, seq
from .flags import Command, Parser, UsageError, plain

COMMANDS: dict[str, Command] = {c.name: c for module in (runs, seq, grid, landscape) for c in module.COMMANDS}


def build_parser() -> Parser:
    parser = Parser(prog="python -m grpo_core",
                    description="Train and compare GRPO on the toy task from the command line.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS.values():
        command.add_to(sub)
    return parser


def main(argv=None) -> int:
    import torch
    torch.set_num_threads(1)  # tiny tensors: waking extra threads costs more than it saves
    try:
        args = build_parser().parse_args(argv)
        out, text = COMMANDS[args.command].run(args)
    except (UsageError, ConfigError) as e:   # ConfigError: a range the flags could not check up front
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    try:
        if args.json:
            print(json.dumps(plain(out)))
        elif text:
            print(text)
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. piped into `head`: the reader left, which is not an error
        sys.stdout = open(os.devnull, "w")
    return 0
