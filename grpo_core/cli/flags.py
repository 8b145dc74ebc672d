"""What every command shares: flags built from the config dataclasses, values checked by the
configs themselves, one-line errors, and JSON-safe output.

A config class is one `Group` on the command line: its fields become flags (prefix + field name,
underscores as dashes), a bool field takes true/false, a field with choices lists them. Values are
range-checked by constructing the config, so a range is defined once, in config.py, and a bad
value ends with one `error: --flag must be ...` line and exit status 2.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from ..config import ConfigError, config_fields, field_range

MAX_SEEDS = 64
TRUE, FALSE = frozenset({"true", "1", "yes", "on"}), frozenset({"false", "0", "no", "off"})


class UsageError(Exception):
    """Bad input from the command line; its message is the whole error line (without 'error: ')."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block), so every bad input reads the same way."""

    def error(self, message):
        raise UsageError(message)


@dataclass(frozen=True)
class Group:
    """One config dataclass on the command line: its key in the output and its flag prefix."""

    key: str
    cls: type
    prefix: str = ""
    title: str = ""

    def flag(self, name: str) -> str:
        return "--" + self.prefix + name.replace("_", "-")

    def dest(self, name: str) -> str:
        return f"{self.key}__{name}"


def field_help(group: Group, f) -> str:
    """A field's flag help: its help text, its range (or true/false) and its default."""
    if isinstance(f.default, bool):
        return f"{f.metadata['help']} Default {str(f.default).lower()}.".replace("%", "%%")
    return f"{f.metadata['help']} Range {field_range(group.cls, f.name)}; default {f.default}.".replace("%", "%%")


def add_config_flags(parser: argparse.ArgumentParser, group: Group, skip=()) -> None:
    """A flag per user-settable field of group.cls (except `skip`), in an argument group."""
    flags = parser.add_argument_group(group.title)
    for f in config_fields(group.cls):
        if f.name in skip:
            continue
        choices = f.metadata.get("choices")
        metavar = ("{true,false}" if isinstance(f.default, bool) else
                   "{" + ",".join(choices) + "}" if choices else type(f.default).__name__.upper())
        flags.add_argument(group.flag(f.name), dest=group.dest(f.name), default=None, metavar=metavar,
                           help=field_help(group, f))


def number(kind: type, raw: str):
    """Parse a flag's text as the field's kind; None when it is not a number."""
    try:
        return int(raw) if kind is int else float(raw)
    except ValueError:
        try:
            return float(raw)  # "1e3" for an int field; the config checks it is whole
        except ValueError:
            return None


def usage(err: ConfigError, flag: str, valid: str = "") -> UsageError:
    """A ConfigError as one line naming the flag (and the valid range, when the detail lacks it)."""
    if err.detail.startswith("must be") or not valid:
        return UsageError(f"{flag} {err.detail}")
    return UsageError(f"{flag} must be {valid}: {err.detail}")


def make_config(group: Group, args: argparse.Namespace, **overrides):
    """Build group.cls from the flags the user gave (others keep the dataclass defaults)."""
    values = {}
    for f in config_fields(group.cls):
        raw = getattr(args, group.dest(f.name), None)
        if raw is None or f.name in overrides:
            continue
        kind = type(f.default)
        if kind is bool:
            if raw.lower() not in TRUE | FALSE:
                raise UsageError(f"{group.flag(f.name)} must be true or false, got {raw!r}")
            values[f.name] = raw.lower() in TRUE
            continue
        value = raw if kind is str else number(kind, raw)
        if value is None:
            raise UsageError(f"{group.flag(f.name)} must be {field_range(group.cls, f.name)}, got {raw!r}")
        values[f.name] = value
    values.update(overrides)
    try:
        return group.cls(**values)
    except ConfigError as e:
        names = {f.name for f in config_fields(group.cls)}
        flag = group.flag(e.field_name) if e.field_name in names else e.field_name
        valid = field_range(group.cls, e.field_name) if e.field_name in names else ""
        raise usage(e, flag, valid) from None


def int_flag(flag: str, raw: str, lo: int, hi: int) -> int:
    """A whole-number flag in [lo, hi], or a UsageError naming it."""
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not lo <= value <= hi:
        raise UsageError(f"{flag} must be {lo} to {hi}, got {raw if value is not None else repr(raw)}")
    return value


def checked(check: Callable, *args):
    """check(*args) (a budget or cross-config rule); its ConfigError as one line."""
    try:
        return check(*args)
    except ConfigError as e:
        raise UsageError(e.detail) from None


# ---- one command ---------------------------------------------------------------------------

SEEDS_HELP = ("Runs with seeds seed .. seed+N-1 (wrapping past 2147483647 to 0), trained as one "
              "batch.")


@dataclass(frozen=True)
class Command:
    """A subcommand: its config groups become flags; run(args) -> (JSON object, text)."""

    name: str
    help: str
    run: Callable[[argparse.Namespace], tuple[dict, str]]
    groups: tuple[Group, ...] = ()
    seeds: int | None = None                  # the default of --seeds; None: no --seeds flag
    max_seeds: int = MAX_SEEDS
    seeds_help: str = SEEDS_HELP
    skip: frozenset = frozenset()             # fields with no flag (the command has its own)
    extra: Callable[[argparse.ArgumentParser], None] | None = None
    export: bool = False                      # --export-trl
    description: str = field(default="")

    def add_to(self, sub) -> argparse.ArgumentParser:
        p = sub.add_parser(self.name, help=self.help, description=self.description or self.help)
        if self.extra is not None:
            self.extra(p)
        if self.seeds is not None:
            p.add_argument("--seeds", default=str(self.seeds), metavar="N",
                           help=f"{self.seeds_help} Range 1 to {self.max_seeds}; default {self.seeds}.")
        for group in self.groups:
            add_config_flags(p, group, self.skip)
        if self.export:
            p.add_argument("--export-trl", action="store_true", help=EXPORT_HELP)
        p.add_argument("--json", action="store_true", help="Print one JSON object instead of tables.")
        return p


def n_seeds(args, command: Command) -> int:
    return int_flag("--seeds", args.seeds, 1, command.max_seeds)


# ---- --export-trl ----------------------------------------------------------------------------

EXPORT_HELP = ("Print the run's settings as Hugging Face TRL GRPOConfig arguments (and the knobs "
               "TRL lacks) instead of training.")


def export_output(command: str, cfg, task=None) -> tuple[dict, str]:
    """--export-trl: the TRL GRPOConfig equivalent of cfg (see export.to_trl), as JSON or Python."""
    from ..export import to_trl
    export = to_trl(cfg, task)
    return {"command": command, "export": "trl", "config": cfg.to_dict(), **export.to_dict()}, export.snippet()


# ---- output ----------------------------------------------------------------------------------

def plain(value):
    """JSON-safe Python value: numpy scalars to Python, non-finite floats to None."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def records(df: pd.DataFrame) -> list[dict]:
    return [plain(row) for row in df.to_dict(orient="records")]


def format_table(df: pd.DataFrame) -> str:
    if "correct_token" in df:  # compare_table marks the overall row's token as -1
        df = df.assign(correct_token=[str(t) if t >= 0 else "" for t in df["correct_token"]])
    return df.to_string(index=False, float_format=lambda x: f"{x:.4f}")


def configs_json(groups, configs) -> dict:
    return {g.key: c.to_dict() for g, c in zip(groups, configs)}


def stopped_notes(results) -> list[str]:
    return [f"seed {r.config.seed}: {r.stopped}" for r in results if r.stopped]
