"""Robustness: settings from the URL checked before any widget exists, the work a request asks
for, and how many bytes a cached result may take.

URL settings. Streamlit drops a bound query parameter it cannot use (out of range, not a number,
not one of the options) without a word, and the widget falls back to its default, so a shared
link quietly means something else. :func:`check_url` runs first on every page (``ui.page`` calls
it): each of the page's settings found in the URL is checked against its config field's metadata
(or the page's extra widgets in :func:`page_settings`). An out-of-range value becomes the nearest
valid one, a malformed one the default, and one line at the top of the page says which. The
corrected value is written back to the URL before the widgets read it, so the widget, the URL and
the run agree. Names that are not this page's settings are left alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import streamlit as st

from grpo_core import GRPOConfig, MAX_WORK_PER_REQUEST, RLVRConfig, config_fields
from grpo_core.config import ConfigError, request_work

import ui

# The sweep page's own widgets (pages/4_Group_size_sweep.py; the tests check they agree).
SWEEP_GROUP_SIZES, SWEEP_GROUP_SIZES_DEFAULT = (2, 4, 8, 16, 32, 64), (2, 4, 8, 16)
SWEEP_DEFAULTS = {"iterations": 300}


def _g(value) -> str:
    return f"{value:g}"


@dataclass(frozen=True)
class Setting:
    """One widget bound to the URL: its key, its default and the values it accepts.

    default is a bool, int, float, str, or a tuple for a multiselect (whose items come from
    choices). A widget with choices (selectbox, radio, select_slider, multiselect) puts text(choice)
    in the URL (its format_func); a number widget accepts lo to hi.
    """

    key: str
    default: Any
    lo: float | None = None
    hi: float | None = None
    choices: tuple | None = None
    text: Callable[[Any], str] = str


def config_settings(cls, prefix: str, defaults: dict | None = None, skip: Sequence[str] = ()) -> list[Setting]:
    """A Setting per widget that ui.config_controls(cls, prefix, defaults, skip) creates."""
    out = []
    for f in config_fields(cls):
        if f.name in skip:
            continue
        meta, default = f.metadata, (defaults or {}).get(f.name, f.default)
        if meta.get("log"):   # a select_slider over 1-2-5 steps, labelled with :g
            out.append(Setting(f"{prefix}_{f.name}", default, meta["lo"], meta["hi"],
                               tuple(ui._log_grid(meta["lo"], meta["hi"], default)), _g))
        else:
            out.append(Setting(f"{prefix}_{f.name}", default, meta.get("lo"), meta.get("hi"),
                               tuple(meta["choices"]) if meta.get("choices") else None))
    return out


def seeds_setting(prefix: str, default: int | None = None) -> Setting:
    return Setting(f"{prefix}_seeds", default or ui.SEEDS_DEFAULT, 1, ui.SEEDS_MAX)


def _live(prefix: str) -> list[Setting]:
    """ui.live's widgets on the GRPO and RLVR pages: the watch toggle and the step size."""
    return [Setting(f"{prefix}_watch", False), Setting(f"{prefix}_chunk", 10, choices=(1, 5, 10, 25, 50, 100))]


# The defaults below repeat the pages' own (tests/test_robustness.py checks that every page's
# URL-bound widgets, with their defaults, are exactly the ones listed here).
def page_settings(title: str) -> list[Setting]:
    """The URL-bound widgets of the page called `title` (as passed to ui.page)."""
    estimators = ("grpo", "dr_grpo", "batch_std", "rloo", "none")
    noise_gs = (2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
    pages = {
        "Setup": [s for cls, prefix, _ in ui.UPSTREAM for s in config_settings(cls, prefix)],
        "GRPO": [*config_settings(GRPOConfig, "grpo"), seeds_setting("grpo"), Setting("grpo_show_runs", False),
                 *_live("grpo")],
        "RLVR": [*config_settings(RLVRConfig, "rlvr"), seeds_setting("rlvr"), Setting("rlvr_show_runs", False),
                 *_live("rlvr")],
        "Group size sweep": [
            *config_settings(GRPOConfig, "sweep", SWEEP_DEFAULTS, skip=["group_size"]), seeds_setting("sweep"),
            Setting("sweep_group_sizes", SWEEP_GROUP_SIZES_DEFAULT, choices=SWEEP_GROUP_SIZES),
            Setting("sweep_window", 30, 1, 100),
            Setting("sweep_x", "iteration", choices=("iteration", "samples"),
                    text=lambda x: {"samples": "samples generated"}.get(x, x))],
        "Reward hacking": [
            Setting("hack_kl_coefs", (0.0, 0.01, 0.05, 0.2, 1.0), choices=(0.0, 0.001, 0.01, 0.05, 0.2, 1.0, 5.0),
                    text=_g),
            *config_settings(GRPOConfig, "hack", skip=["kl_coef"]), seeds_setting("hack", 4)],
        "Zero signal groups": [*config_settings(RLVRConfig, "zero", skip=["dynamic_sampling"]),
                               Setting("zero_redraws", 4, 1, 16), seeds_setting("zero", 4)],
        "Pass at k": [*config_settings(RLVRConfig, "passk"), seeds_setting("passk", 8)],
        "Gradient noise": [
            Setting("noise_reward", "reward_model", choices=("reward_model", "verifiable"),
                    text={"reward_model": "reward model's score", "verifiable": "verifiable 0/1 reward"}.get),
            Setting("noise_group_sizes", (2, 4, 8, 16, 32, 64), choices=noise_gs),
            Setting("noise_estimators", estimators, choices=estimators),
            Setting("noise_prompts", 8, 1, 64),
            Setting("noise_draws", 256, choices=(64, 128, 256, 512, 1024))],
    }
    # ?present=1 turns on presentation mode (ui.presentation_mode) on every page.
    return [*pages.get(title, []), *adopted_settings(title), Setting("present", "0", choices=("0", "1"))]


def adopted_settings(title: str) -> list[Setting]:
    """Other pages' settings that this page takes from the URL (ui.live.adopt_params)."""
    upstream = [s for cls, prefix, _ in ui.UPSTREAM for s in config_settings(cls, prefix)]
    runs = [*config_settings(GRPOConfig, "grpo"), seeds_setting("grpo"), *config_settings(RLVRConfig, "rlvr"),
            seeds_setting("rlvr")]
    return {"GRPO": upstream, "RLVR": upstream, "Group size sweep": upstream,
            "Compare": [*upstream, *runs]}.get(title, [])


# ---------------------------------------------------------------- checking one setting

@dataclass(frozen=True)
class Fix:
    """What to do with one URL setting: use `value`; `url` is its new URL form (None: drop the
    parameter, the widget then shows its default); `notice` is shown unless empty."""

    key: str
    value: Any
    url: str | list[str] | None
    notice: str


def _number(text: str, whole: bool) -> tuple[float | None, str]:
    """(value, "") or (None, what is wrong with text)."""
    try:
        value = float(text)
    except ValueError:
        return None, "is not a number"
    if not math.isfinite(value):
        return None, "is not a finite number"
    if whole and value != int(value):
        return None, "is not a whole number"
    return (int(value) if whole else value), ""


def _choice(s: Setting, text: str):
    """The choice whose URL form (or plain name, in any case) is text, else None."""
    for match in (lambda c: s.text(c) == text, lambda c: str(c).lower() == text.lower()):
        found = [c for c in s.choices if match(c)]
        if found:
            return found[0]
    return None


def _nearest(choices: Sequence[float], value: float) -> float:
    """The choice closest to value, on a log scale when every choice is positive."""
    if min(choices) > 0:
        return min(choices, key=lambda c: abs(math.log(c) - math.log(max(value, 1e-300))))
    return min(choices, key=lambda c: abs(c - value))


def check_setting(s: Setting, raw: list[str]) -> Fix | None:
    """None when the URL values `raw` of setting s are fine as they are, else the Fix."""
    shown = f"URL setting {s.key}={','.join(raw)}"
    text = s.text if s.choices else (lambda v: _g(v) if isinstance(v, float) else str(v))

    def url(value):
        if value == s.default:
            return None
        if isinstance(value, bool):
            return str(value).lower()
        return [text(v) for v in value] if isinstance(value, tuple) else text(value)

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
        kept = tuple(dict.fromkeys(c for c in map(lambda v: _choice(s, v), items) if c is not None))
        if len(kept) == len(items):
            return None if [text(v) for v in kept] == raw or not items else fix(kept)
        where = f"has values that are not among {', '.join(map(text, s.choices))}"
        return fix(kept, where) if kept else fix(s.default, where, default)
    if len(raw) > 1:                                       # one value wanted: the last one counts
        last = check_setting(s, raw[-1:])
        if last and last.notice:
            return last
        value = last.value if last else url_value(s, raw[-1])
        return Fix(s.key, value, url(value),
                   f"{shown} is given {len(raw)} times: using the last one, {raw[-1].strip()}.")
    given = raw[0].strip()
    if isinstance(s.default, bool):
        if given.lower() in ("true", "false"):
            return None if given == raw[0] else fix(given.lower() == "true")
        return fix(s.default, "is not true or false", default)
    if s.choices:
        choice = _choice(s, given)
        if choice is not None:
            return None if text(choice) == raw[0] else fix(choice)
        if isinstance(s.default, str):
            return fix(s.default, f"is not one of {', '.join(map(text, s.choices))}", default)
        value, problem = _number(given, whole=False)
        if problem:
            return fix(s.default, problem, default)
        nearest = _nearest(s.choices, value)
        if nearest == value:                               # e.g. "1e-2" for 0.01: the same value
            return fix(nearest)
        if s.lo is not None and not s.lo <= value <= s.hi:
            return fix(nearest, f"is out of range ({_g(s.lo)} to {_g(s.hi)})")
        return fix(nearest, "is not one of the slider's values", f"the nearest, {text(nearest)}")
    value, problem = _number(given, whole=isinstance(s.default, int))
    if problem:
        return fix(s.default, problem, default)
    if not s.lo <= value <= s.hi:
        return fix(min(max(value, s.lo), s.hi), f"is out of range ({_g(s.lo)} to {_g(s.hi)})")
    if isinstance(s.default, int) and raw[0] != str(value):
        return fix(value)                                  # e.g. "08" or "8.0": the same value, written plainly
    return None


def url_value(s: Setting, given: str):
    """The value of a URL text that check_setting accepts as it is."""
    given = given.strip()
    if isinstance(s.default, bool):
        return given.lower() == "true"
    if s.choices:
        return _choice(s, given)
    return _number(given, isinstance(s.default, int))[0]


# ---------------------------------------------------------------- the page hook

def check_url(title: str) -> list[Fix]:
    """Check this page's settings in the URL; fix bad ones before any widget reads them, with a
    one-line notice each at the top of the page. Returns the fixes made."""
    settings = {s.key: s for s in page_settings(title)}
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


# Cached training results are held as pickled bytes. Measured: a run's history pickles to about
# 82 bytes per iteration (16 float32 and 2 int64 columns); its weights, final policy and
# per-context table to 4 bytes per parameter plus about 2.5 kB. ui._train keeps at most 16
# results, so with this cap its cache holds at most 16 x 32 MiB = 512 MiB.
HISTORY_BYTES_PER_ITERATION = 88
RUN_OVERHEAD_BYTES = 4096
MAX_RESULT_BYTES = 32 * 2**20


def result_bytes(upstream_configs: tuple, configs: Sequence[GRPOConfig]) -> int:
    """An upper estimate of the pickled size of ui.train's result for these run configs."""
    problem_cfg, sft_cfg, _ = upstream_configs
    params = ((problem_cfg.context_dim + 1) * sft_cfg.hidden_dim
              + (sft_cfg.hidden_dim + 1) * problem_cfg.vocab_size)
    per_run = 4 * params + 4 * problem_cfg.n_contexts * problem_cfg.vocab_size + RUN_OVERHEAD_BYTES
    return sum(HISTORY_BYTES_PER_ITERATION * c.iterations + per_run for c in configs)


def check_result_size(upstream_configs: tuple, configs: Sequence[GRPOConfig]) -> None:
    """Raise ConfigError when the result would be larger than MAX_RESULT_BYTES."""
    size = result_bytes(upstream_configs, configs)
    if size > MAX_RESULT_BYTES:
        raise ConfigError("iterations", f"the histories of these {len(configs)} runs would take about "
                          f"{size / 2**20:,.0f} MiB, over the limit of {MAX_RESULT_BYTES / 2**20:,.0f} MiB "
                          "per request; lower the iterations or the number of seeds")
