"""Reference implementations: one short file per engine, each one run written top to bottom with
autograd and torch.optim.Adam, the code a learner reads (the app shows it on the GRPO, RLVR and
GRPO on sequences pages). The tests prove each batched engine equals its file.

    from grpo_core.reference import grpo, sequence
    grpo.train(build_upstream(), GRPOConfig())                  # the same RunResult as run_many
    sequence.train(build_seq_upstream(), SeqGRPOConfig())       # ... as sequence.train_seq

annotated_source(module, cfg) gives a file's source with the branches the settings take marked.
"""
from __future__ import annotations

import ast
import inspect
from dataclasses import dataclass
from types import ModuleType

from . import grpo, sequence  # noqa: F401

TAKEN, SKIPPED = "◀ your settings", "✗ skipped with your settings"
_ALLOWED = (ast.Compare, ast.BoolOp, ast.UnaryOp, ast.Constant, ast.Attribute, ast.Name, ast.Load, ast.Tuple,
            ast.cmpop, ast.boolop, ast.unaryop)


@dataclass(frozen=True)
class Choice:
    """One branch of the source that the settings decide: its line, whether it is taken, and why."""

    line: int              # 1-based, in the module's source
    taken: bool
    settings: str          # the settings the chain reads, with their values: "dual_clip = 0.0"
    code: str              # the condition as written ("else" for an else)
    lone: bool = False     # an if with no elif or else: skipping it is a choice too
    inline: bool = False   # a conditional expression "a if test else b" (taken: a)


def _decided_by_settings(test: ast.AST) -> bool:
    """A condition of cfg.<field>s, constants, comparisons and and / or / not only."""
    nodes = list(ast.walk(test))
    return (all(isinstance(n, _ALLOWED) and (not isinstance(n, ast.Name) or n.id == "cfg") for n in nodes)
            and any(isinstance(n, ast.Attribute) for n in nodes))


def _settings(nodes, cfg) -> str:
    names = sorted({n.attr for node in nodes for n in ast.walk(node) if isinstance(n, ast.Attribute)
                    and isinstance(n.value, ast.Name) and n.value.id == "cfg"})
    return ", ".join(f"{name} = {getattr(cfg, name)!r}" for name in names)


def choices(module: ModuleType, cfg) -> list[Choice]:
    """Every if / elif / else chain and conditional expression of module that cfg alone decides,
    each branch with whether cfg takes it; branches inside a branch cfg skips are left out."""
    source = inspect.getsource(module)
    lines, tree = source.splitlines(), ast.parse(source)
    evaluate = lambda test: bool(eval(compile(ast.Expression(test), "<setting>", "eval"), {"cfg": cfg}))
    out, skipped = [], []                                 # skipped: (first, last) lines of skipped bodies
    for node in ast.walk(tree):
        if isinstance(node, ast.IfExp) and _decided_by_settings(node.test):
            out.append(Choice(node.lineno, evaluate(node.test), _settings([node.test], cfg),
                              ast.get_source_segment(source, node.test), inline=True))
        if not isinstance(node, ast.If) or getattr(node, "_elif", False):
            continue
        branches, rest = [], node                       # (line, test, body) of if, elif, ..., else
        while True:
            branches.append((rest.lineno, rest.test, rest.body))
            more = rest.orelse
            if len(more) == 1 and isinstance(more[0], ast.If) and lines[more[0].lineno - 1].lstrip().startswith("elif"):
                more[0]._elif, rest = True, more[0]
                continue
            if more:
                line = next(i for i in range(more[0].lineno - 1, rest.lineno, -1)
                            if lines[i - 1].strip().startswith("else"))
                branches.append((line, None, more))
            break
        if not all(test is None or _decided_by_settings(test) for _, test, _ in branches):
            continue
        why = _settings([t for _, t, _ in branches if t is not None], cfg)
        taken = next((line for line, test, _ in branches if test is None or evaluate(test)), None)
        for line, test, body in branches:
            out.append(Choice(line, line == taken, why, "else" if test is None else ast.get_source_segment(source, test),
                              lone=len(branches) == 1))
            if line != taken:
                skipped.append((body[0].lineno, body[-1].end_lineno))
    for func in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):   # a taken early return
        for stmt in func.body:                                                  # skips the rest
            if (isinstance(stmt, ast.If) and not stmt.orelse and _decided_by_settings(stmt.test)
                    and isinstance(stmt.body[-1], ast.Return) and evaluate(stmt.test)):
                skipped.append((stmt.end_lineno + 1, func.end_lineno))
    return sorted((c for c in out if not any(a <= c.line <= b for a, b in skipped)), key=lambda c: c.line)


def annotated_source(module: ModuleType, cfg) -> tuple[str, list[Choice]]:
    """module's source with each branch the settings decide marked on its line (TAKEN where cfg
    takes it; SKIPPED on a lone if that cfg skips), and those choices."""
    lines = inspect.getsource(module).splitlines()
    found = choices(module, cfg)
    for c in found:
        if c.inline:
            note = f"{TAKEN} ({c.settings}): the value {'before' if c.taken else 'after'} the else"
        else:
            note = f"{TAKEN}: {c.settings}" if c.taken else f"{SKIPPED}: {c.settings}" if c.lone else ""
        if note:  # right after the code, where it is seen; the line's own comment follows
            code, sep, comment = lines[c.line - 1].partition("#")
            lines[c.line - 1] = f"{code.rstrip()}  # {note}" + (f" · {comment.strip()}" if sep else "")
    return "\n".join(lines) + "\n", found
