"""Robustness: settings from the URL checked before any widget exists, the work a request asks
for, and how many bytes a stored result may take.

URL settings. Streamlit drops a bound query parameter it cannot use (out of range, not a number,
not one of the options) without a word, and the widget falls back to its default, so a shared
link quietly means something else. :func:`check_url` runs first on every page (``ui.navigation.page``
calls it with the page's declaration, ``ui.controls.PageSettings``): each of the page's settings
found in the URL is checked against that declaration. An out-of-range value becomes the nearest
valid one, a malformed one the default, and one line at the top of the page says which. The
corrected value is written back to the URL before the widgets read it, so the widget, the URL and
the run agree. Names that are not this page's settings are left alone.

Shared between sessions: nothing; this module holds constants only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import streamlit as st

from grpo_core import GRPOConfig, MAX_WORK_PER_REQUEST, check_budget
from grpo_core.config import ConfigError, request_work
from ui.controls import field_label, stop_with_error
from ui.setting import Setting, g as _g, parse_number

__all__ = ["Fix", "check_setting", "check_url", "work_caption", "check_request", "result_bytes",
           "check_result_size", "MAX_RESULT_BYTES"]


# ---------------------------------------------------------------- checking one setting

@dataclass(frozen=True)
class Fix:
    """What to do with one URL setting: use `value`; `url` is its new URL form (None: drop the
    parameter, the widget then shows its default); `notice` is shown unless empty."""

    key: str
    value: Any
    url: str | list[str] | None
    notice: str


def _nearest(choices: Sequence[float], value: float) -> float:
    """The choice closest to value, on a log scale when every choice is positive."""
    if min(choices) > 0:
        return min(choices, key=lambda c: abs(math.log(c) - math.log(max(value, 1e-300))))
    return min(choices, key=lambda c: abs(c - value))


def check_setting(s: Setting, raw: list[str]) -> Fix | None:
    """None when the URL values `raw` of setting s are fine as they are, else the Fix."""
    shown = f"URL setting {s.key}={','.join(raw)}"
    text, url = s.url_form, s.to_url

    def show(value) -> str:
        if isinstance(value, tuple):
            return ", ".join(map(text, value))
        return str(value).lower() if isinstance(value, bool) else text(value)

    def fix(value, problem: str = "", using: str = "") -> Fix:
        notice = f"{shown} {problem}: using {using or show(value)}." if problem else ""
        return Fix(s.key, value, url(value), notice)

    default = f"the default {show(s.default)}"
    if isinstance(s.default, tuple):                       # a multiselect: keep the valid items
        items = [v.strip() for v in raw if v.strip()]
        kept = tuple(dict.fromkeys(c for c in map(s.choice_for, items) if c is not None))
        if len(kept) == len(items):
            return None if [text(v) for v in kept] == raw or not items else fix(kept)
        where = f"has values that are not among {', '.join(map(text, s.choices))}"
        return fix(kept, where) if kept else fix(s.default, where, default)
    if len(raw) > 1:                                       # one value wanted: the last one counts
        last = check_setting(s, raw[-1:])
        if last and last.notice:
            return last
        value = last.value if last else s.from_url(raw[-1])
        return Fix(s.key, value, url(value),
                   f"{shown} is given {len(raw)} times: using the last one, {raw[-1].strip()}.")
    given = raw[0].strip()
    if isinstance(s.default, bool):
        if given.lower() in ("true", "false"):
            return None if given == raw[0] else fix(given.lower() == "true")
        return fix(s.default, "is not true or false", default)
    if s.choices:
        choice = s.choice_for(given)
        if choice is not None:
            return None if text(choice) == raw[0] else fix(choice)
        if isinstance(s.default, str):
            return fix(s.default, f"is not one of {', '.join(map(text, s.choices))}", default)
        value, problem = parse_number(given, whole=False)
        if problem:
            return fix(s.default, problem, default)
        nearest = _nearest(s.choices, value)
        if nearest == value:                               # e.g. "1e-2" for 0.01: the same value
            return fix(nearest)
        if s.lo is not None and not s.lo <= value <= s.hi:
            return fix(nearest, f"is out of range ({_g(s.lo)} to {_g(s.hi)})")
        return fix(nearest, "is not one of the slider's values", f"the nearest, {text(nearest)}")
    value, problem = parse_number(given, whole=isinstance(s.default, int))
    if problem:
        return fix(s.default, problem, default)
    if not s.lo <= value <= s.hi:
        return fix(min(max(value, s.lo), s.hi), f"is out of range ({_g(s.lo)} to {_g(s.hi)})")
    if isinstance(s.default, int) and raw[0] != str(value):
        return fix(value)                                  # e.g. "08" or "8.0": the same value, written plainly
    return None


# ---------------------------------------------------------------- the page hook

def check_url(page_settings: Sequence[Setting]) -> list[Fix]:
    """Check this page's settings (its declaration's url_settings) in the URL; fix bad ones before
    any widget reads them, with a one-line notice each at the top of the page. Returns the fixes made."""
    settings = {s.key: s for s in page_settings}
    fixes = [f for key in list(st.query_params) if key in settings
             for f in [check_setting(settings[key], st.query_params.get_all(key))] if f]
    if not fixes:
        return fixes
    try:
        _write_url(fixes)
    except (ImportError, AttributeError):  # Streamlit's internals moved: still give widgets the values
        for f in fixes:
            st.session_state[f.key] = list(f.value) if isinstance(f.value, tuple) else f.value
    notices = [f.notice for f in fixes if f.notice]
    if notices:
        st.warning("  \n".join(notices), icon="⚠️")
    return fixes


def _write_url(fixes: Sequence[Fix]) -> None:
    """Put the corrected values in the URL, and make them what the widgets are seeded from.

    A bound widget is seeded on its first run from the query string the page was opened with,
    not from st.query_params (which refuses writes to bound names once a widget exists), so both
    are updated, through the QueryParams object behind st.query_params.
    """
    from streamlit.runtime.state.session_state_proxy import get_session_state

    with get_session_state().query_params() as qp:
        for f in fixes:
            if f.url is None:
                qp.remove_param(f.key)
            else:
                qp.set_corrected_value(f.key, f.url, "string_array_value" if isinstance(f.url, list)
                                       else "string_value")
        qp.set_initial_query_params_from_current()


# ---------------------------------------------------------------- limits

def work_caption(*requests: Sequence[GRPOConfig]) -> None:
    """One caption line: the work of each request (a list of run configs) against the cap."""
    works = [f"{request_work(list(r)):,}" for r in requests]
    what = "This request" if len(works) == 1 else "These requests"
    each = "" if len(works) == 1 else " each"
    st.caption(f"{what}: {' and '.join(works)} of {MAX_WORK_PER_REQUEST:,} work units{each} "
               "(iterations × PPO epochs × prompts × group size, summed over runs).")


WORK_FACTORS = ("iterations", "epochs", "prompts", "group_size")


def over_work_message(configs: Sequence[GRPOConfig]) -> str:
    """Why a request is over the work cap: the product, each factor by its on-screen label, and
    the number of runs (seeds) it is repeated for; runs that differ are summed term by term, e.g.
    'iterations 300 × PPO epochs μ 4 × prompts per iteration 16 × group size G 64 × 64 runs = …'."""
    from collections import Counter

    terms = Counter((*(getattr(c, f) for f in WORK_FACTORS), c.dynamic_sampling) for c in configs)
    parts = []
    for (*factors, redraws), runs in terms.items():
        named = [f"{field_label(GRPOConfig, f)} {v:,}" for f, v in zip(WORK_FACTORS, factors)]
        if redraws:
            named.append(f"(1 + {redraws} dynamic-sampling redraws)")
        named.append(f"{runs} run{'s' if runs > 1 else ''} (seeds)")
        parts.append(" × ".join(named))
    return (f"this request needs {' + '.join(parts)} = {request_work(list(configs)):,} work units, over "
            f"the limit of {MAX_WORK_PER_REQUEST:,}; lower one of these factors.")


def check_request(upstream_configs: tuple, configs: Sequence[GRPOConfig]) -> None:
    """Stop the page with a one-line error if the request is over the work or size caps; the work
    message names every factor of the product by its on-screen label (the core's names one field)."""
    if request_work(list(configs)) > MAX_WORK_PER_REQUEST:
        text = over_work_message(configs)
        st.error(f"**Too much work.** {text[0].upper()}{text[1:]}")
        st.stop()
    try:
        check_budget(configs)
        check_result_size(upstream_configs, configs)
    except ConfigError as err:
        stop_with_error(err)


# Measured: a run's history pickles to about 82 bytes per iteration (16 float32 and 2 int64
# columns); its weights, final policy and per-context table to 4 bytes per parameter plus about
# 2.5 kB. The estimate bounds one request before it trains; ui.store bounds what it keeps by the
# results' measured size (at most ui.store.MAX_BYTES in all).
HISTORY_BYTES_PER_ITERATION = 88
RUN_OVERHEAD_BYTES = 4096
MAX_RESULT_BYTES = 32 * 2**20


def result_bytes(upstream_configs: tuple, configs: Sequence[GRPOConfig]) -> int:
    """An upper estimate of the size of the results of these run configs (pickled or in memory)."""
    problem_cfg, sft_cfg, _ = upstream_configs
    params = ((problem_cfg.context_dim + 1) * sft_cfg.hidden_dim
              + (sft_cfg.hidden_dim + 1) * problem_cfg.vocab_size)
    per_run = 4 * params + 4 * problem_cfg.n_contexts * problem_cfg.vocab_size + RUN_OVERHEAD_BYTES
    return sum(HISTORY_BYTES_PER_ITERATION * c.iterations + per_run for c in configs)


def check_result_size(upstream_configs: tuple, configs: Sequence[GRPOConfig]) -> None:
    """Raise ConfigError when the result would be larger than MAX_RESULT_BYTES."""
    size = result_bytes(upstream_configs, configs)
    if size > MAX_RESULT_BYTES:
        raise ConfigError("iterations", f"the histories of these {len(configs)} runs (seeds) would take "
                          f"about {size / 2**20:,.0f} MiB, over the limit of {MAX_RESULT_BYTES / 2**20:,.0f} "
                          "MiB per request; lower the iterations or the number of seeds")
