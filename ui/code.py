""""The code" section of the run pages: the reference implementation of the page's engine
(grpo_core/reference/), with the branches the current settings take marked on their lines.

Shared between sessions: the annotated sources, in a bounded functools.lru_cache (read-only text).
"""
from __future__ import annotations

import functools
import inspect
from types import ModuleType

import pandas as pd
import streamlit as st

from grpo_core.reference import annotated_source

ENGINES = {"grpo": "grpo_core/trainer.py", "sequence": "grpo_core/sequence/trainer.py"}


@functools.lru_cache(maxsize=64)
def _annotated(module: ModuleType, cfg) -> tuple[str, pd.DataFrame]:
    text, found = annotated_source(module, cfg)
    source = inspect.getsource(module).splitlines()
    taken = pd.DataFrame([{"line": c.line, "the line your settings take": " ".join(source[c.line - 1].split()),
                           "because": c.settings} for c in found if c.taken],
                         columns=["line", "the line your settings take", "because"])
    return text, taken


def code_section(module: ModuleType, cfg) -> None:
    """The reference file of module (grpo_core.reference.grpo or .sequence) for the settings cfg."""
    name = module.__name__.rsplit(".", 1)[-1]
    path = f"grpo_core/reference/{name}.py"
    lines = len(inspect.getsource(module).splitlines())
    text, taken = _annotated(module, cfg)
    st.header("The code")
    st.markdown(
        f"The runs above come from a batched engine (`{ENGINES[name]}`) that trains every seed at "
        f"once with hand-written gradients. The same algorithm, one run written top to bottom with "
        f"autograd and `torch.optim.Adam`, is `{path}` ({lines} lines): the tests check that the "
        f"engine's history equals it at every setting. The lines your settings choose are marked "
        f"**◀ your settings**; a branch they skip, **✗**.")
    st.dataframe(taken, hide_index=True, column_config={"line": st.column_config.NumberColumn(width="small")})
    with st.expander(f"{path}: {lines} lines, your settings marked", expanded=False):
        st.code(text, language="python", line_numbers=True, wrap_lines=True)
    st.caption(f"From Python: `from grpo_core.reference import {name}; {name}.train(upstream, config)` "
               "returns the same RunResult as the engine.")
