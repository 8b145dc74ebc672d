"""Settings widgets, each declared once: its key, config field, default and range.

A page lists its URL-bound widgets in one :class:`PageSettings`. That declaration draws each widget
(label, help, range, default), tells the URL guard what the page accepts (``ui.guard.check_url``,
called by ``ui.navigation.page``) and gives the "Reset to defaults" button its values, so a default
is written in one place.

Every widget is keyed "<prefix>_<name>" (e.g. "grpo_lr"), bound to the URL (?grpo_lr=0.01, omitted
at the default) and kept for the session, so a setting survives moving between pages and other
pages read it from st.session_state (:func:`stored_config`).

Shared between sessions: nothing; this module holds constants only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import streamlit as st

from ui.setting import Setting, g  # noqa: F401  (re-exported: one widget, declared once)

# ADVANTAGE_ESTIMATORS: the core's estimator registry (name -> one-line help); this is the one
# import of it in ui/, re-exported for the pages.
from grpo_core import (ADVANTAGE_ESTIMATORS, ConfigError, GRPOConfig, PolicyOptimizationConfig,  # noqa: F401
                       ProblemConfig, RLVRConfig, RewardModelConfig, SFTConfig, config_fields, field_range)

SEEDS_DEFAULT, SEEDS_MAX = 8, 64
RUN_SEEDS_HELP = ("Independent runs (seeds seed, seed+1, …) trained together as one batch; the "
                  "charts show their mean and spread.")
LAB_SEEDS_HELP = ("Independent runs per setting (seeds seed, seed+1, …), all trained as one batch; "
                  "the charts show their mean.")
CHUNKS, CHUNK_DEFAULT = (1, 5, 10, 25, 50, 100), 10     # the live view's "iterations per step"
TICK_SECONDS = 0.3          # the live view trains a piece and redraws this often while playing

# Widget labels in the field's words; the field name itself is the URL key.
LABELS = {"n_contexts": "contexts C", "vocab_size": "vocabulary size V", "context_dim": "context dim D",
          "pref_scale": "preference sharpness", "steps_per_epoch": "steps per epoch",
          "batch_size": "batch size", "lr": "learning rate", "hidden_dim": "hidden units",
          "batch_pairs": "pairs per step", "prompts": "prompts per iteration",
          "group_size": "group size G", "kl_coef": "KL coefficient β", "clip_eps": "clip range ε",
          "kl_estimator": "KL estimator", "kl_placement": "KL placement", "clip_eps_high": "upper clip range ε_high",
          "dual_clip": "dual-clip constant c", "entropy_coef": "entropy bonus coefficient",
          "ref_reset_every": "reset reference every N iterations",
          "dynamic_sampling": "dynamic sampling: max redraws"}
# The notebook's GRPO knobs; any other policy-optimization field (GRPOConfig, SeqGRPOConfig, ...) is
# a later variant, shown in an expander.
GRPO_CORE = ("iterations", "prompts", "group_size", "lr", "kl_coef", "clip_eps", "epochs", "seed")
VARIANTS_TITLE = "Variants: advantages, KL, clipping, DAPO"
# The upstream stages: (config class, key prefix, name), all set on the Setup page.
UPSTREAM = ((ProblemConfig, "problem", "task"), (SFTConfig, "sft", "SFT"),
            (RewardModelConfig, "rm", "reward model"))
RUN_KINDS = {"grpo": GRPOConfig, "rlvr": RLVRConfig}       # the run pages' prefixes


def log_grid(lo: float, hi: float, default: float) -> list[float]:
    """1-2-5 steps per decade between lo and hi, plus the default."""
    grid = {float(f"{m * 10.0 ** k:.3g}") for k in range(math.floor(math.log10(lo)), 1 + math.ceil(math.log10(hi)))
            for m in (1, 2, 5)}
    return sorted(v for v in grid | {default} if lo <= v <= hi)


def slider(key: str, label: str, lo: int, hi: int, default: int, help: str = "") -> Setting:
    return Setting(key, default, lo, hi, label=label, help=help, kind="slider")


def select_slider(key: str, label: str, choices: Sequence, default, help: str = "",
                  text: Callable[[Any], str] = str) -> Setting:
    return Setting(key, default, min(choices), max(choices), tuple(choices), text, label, help, "select_slider")


def multiselect(key: str, label: str, choices: Sequence, default: Sequence, help: str = "",
                text: Callable[[Any], str] = str) -> Setting:
    return Setting(key, tuple(default), choices=tuple(choices), text=text, label=label, help=help,
                   kind="multiselect")


def radio(key: str, label: str, choices: Sequence, default, help: str = "",
          text: Callable[[Any], str] = str, horizontal: bool = False) -> Setting:
    return Setting(key, default, choices=tuple(choices), text=text, label=label, help=help, kind="radio",
                   horizontal=horizontal)


def toggle(key: str, label: str, default: bool = False, help: str = "", kind: str = "toggle") -> Setting:
    return Setting(key, default, label=label, help=help, kind=kind)


def seeds(prefix: str, default: int = SEEDS_DEFAULT, help: str = RUN_SEEDS_HELP) -> Setting:
    return slider(f"{prefix}_seeds", "seeds", 1, SEEDS_MAX, default, help)


def field_label(cls, name: str) -> str:
    """The on-screen label of config field name of cls: what a widget, caption or message calls it."""
    if name == "epochs" and issubclass(cls, PolicyOptimizationConfig):
        return "PPO epochs μ"
    return LABELS.get(name, name.replace("_", " "))


def config_settings(cls, prefix: str, defaults: dict | None = None, skip: Sequence[str] = ()) -> list[Setting]:
    """A Setting per user-settable field of cls, keyed "<prefix>_<field>", bounded by the field's
    metadata (config.knob). For policy-optimization configs (both engines), fields beyond the
    notebook's go in the variants group."""
    out = []
    for f in config_fields(cls):
        if f.name in skip:
            continue
        meta, default = f.metadata, (defaults or {}).get(f.name, f.default)
        label = field_label(cls, f.name)
        common = dict(label=label, help=f"{meta['help']} Range: {field_range(cls, f.name)}.", field=f.name,
                      group="variants" if issubclass(cls, PolicyOptimizationConfig) and f.name not in GRPO_CORE
                      else "")
        lo, hi, key = meta.get("lo"), meta.get("hi"), f"{prefix}_{f.name}"
        if meta.get("choices"):
            out.append(Setting(key, default, choices=tuple(meta["choices"]), kind="selectbox", **common))
        elif meta.get("log"):      # a select_slider over 1-2-5 steps, labelled with :g
            out.append(Setting(key, default, lo, hi, tuple(log_grid(lo, hi, default)), g,
                               kind="select_slider", **common))
        elif isinstance(f.default, int):
            out.append(Setting(key, default, lo, hi, kind="slider" if hi - lo <= 64 else "number", **common))
        else:
            out.append(Setting(key, default, lo, hi, kind="slider" if hi - lo <= 1 else "number", **common))
    return out


def upstream_settings() -> list[Setting]:
    """The Setup page's settings: task, SFT and reward model."""
    return [s for cls, prefix, _ in UPSTREAM for s in config_settings(cls, prefix)]


def run_settings(prefix: str) -> list[Setting]:
    """A run page's settings (GRPO or RLVR): every config field, seeds, individual runs, and the
    live view's toggle and step size."""
    return [*config_settings(RUN_KINDS[prefix], prefix), seeds(prefix),
            toggle(f"{prefix}_show_runs", "show individual runs",
                   help="Draw every seed's curve faintly behind the mean.", kind="checkbox"),
            *live_settings(prefix)]


def live_settings(prefix: str) -> list[Setting]:
    """The live view's toggle and step size (ui.live); "Reset to defaults" leaves them alone."""
    return [Setting(f"{prefix}_watch", False, label="▶ Watch it train", kind="toggle", group="live",
                    help="Train these settings live, step by step, instead of showing the finished runs."),
            Setting(f"{prefix}_chunk", CHUNK_DEFAULT, min(CHUNKS), max(CHUNKS), CHUNKS, label="iterations per step",
                    kind="select_slider", group="live",
                    help="How many iterations Step trains, and Play trains per frame "
                         f"(a frame every {TICK_SECONDS:g} s).")]


def shared_run_settings(prefix: str) -> list[Setting]:
    """The settings of a run page that other pages (Compare) and shared links carry: config and seeds."""
    return [*config_settings(RUN_KINDS[prefix], prefix), seeds(prefix)]


PRESENT = radio("present", "presentation mode", ("0", "1"), "0")   # ?present=1 on every page


# ---------------------------------------------------------------- a page's declaration

@dataclass(frozen=True)
class PageSettings:
    """Every URL-bound widget of one page, and the other pages' settings it takes from a shared link.

    title is the page's name as ui.navigation.page shows it.
    """

    title: str
    settings: tuple[Setting, ...] = ()
    adopted: tuple[Setting, ...] = field(default=())

    def __post_init__(self):
        object.__setattr__(self, "settings", tuple(self.settings))
        object.__setattr__(self, "adopted", tuple(self.adopted))

    def __getitem__(self, key: str) -> Setting:
        for s in self.settings:
            if s.key == key:
                return s
        raise KeyError(key)

    @property
    def url_settings(self) -> list[Setting]:
        """What the URL guard checks on this page: its widgets, adopted settings, presentation mode."""
        return [*self.settings, *self.adopted, PRESENT]

    def draw(self, key: str):
        return self[key].draw()

    def config(self, cls, prefix: str, **fixed):
        """Draw the page's widgets for cls's fields under prefix (variants in an expander) and
        return the config; an invalid combination stops the page with a one-line error."""
        chosen = [s for s in self.settings if s.field and s.key == f"{prefix}_{s.field}"]
        values = {s.field: s.draw() for s in chosen if s.group != "variants"}
        extra = [s for s in chosen if s.group == "variants"]
        if extra:
            with st.expander(VARIANTS_TITLE):
                values.update({s.field: s.draw() for s in extra})
        return make_config(cls, **fixed, **values)

    def defaults(self, prefix: str) -> dict:
        """{field: default} of the page's config widgets under prefix."""
        return {s.field: s.default for s in self.settings if s.field and s.key == f"{prefix}_{s.field}"}

    def reset_button(self) -> None:
        """'Reset to defaults': every widget of this page back to its declared default (the live
        view's controls excepted: they are not settings of the runs)."""
        def reset():
            st.session_state.update({s.key: s.reset_value for s in self.settings if s.group != "live"})
        st.button("Reset to defaults", on_click=reset, help="Put every setting on this page back to its default.")


# ---------------------------------------------------------------- configs from settings

def stop_with_error(err: Exception) -> None:
    """Show a bad setting as a readable one-line error and end this run of the page (no traceback).
    The field a ConfigError names is called by its on-screen label."""
    text = str(err)
    if isinstance(err, ConfigError):
        text = f"{LABELS.get(err.field_name, err.field_name.replace('_', ' '))}: {err.detail}"
    st.error(f"**Invalid setting.** {text}")
    st.stop()


def make_config(cls, **values):
    """cls(**values), or an st.error naming the bad field and a clean stop."""
    try:
        return cls(**values)
    except ConfigError as err:
        stop_with_error(err)


def combine(build: Callable, *args, **kwargs):
    """build(*args, **kwargs) for code that combines settings into configs (seeds, sweeps,
    replace()); a ConfigError becomes the one-line message instead of a traceback."""
    try:
        return build(*args, **kwargs)
    except ConfigError as err:
        stop_with_error(err)


def field_defaults(cls) -> dict:
    return {f.name: f.default for f in config_fields(cls)}


def stored_config(cls, prefix: str):
    """The config last chosen for prefix in this session (or the defaults)."""
    values = {k: st.session_state.get(f"{prefix}_{k}", v) for k, v in field_defaults(cls).items()}
    return make_config(cls, **values)


def stored_seeds(prefix: str) -> int:
    return int(st.session_state.get(f"{prefix}_seeds", SEEDS_DEFAULT))


def upstream_configs() -> tuple:
    """The (problem, SFT, reward model) configs chosen on the Setup page, or the defaults."""
    return tuple(stored_config(cls, prefix) for cls, prefix, _ in UPSTREAM)


def describe(cfg, defaults: dict | None = None) -> str:
    """The settings of cfg that differ from the defaults, by their on-screen labels, e.g.
    'learning rate 0.01, seed 3', or 'defaults'."""
    base = {**field_defaults(type(cfg)), **(defaults or {})}
    shown = lambda v: f"{v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)
    changed = [f"{field_label(type(cfg), k)} {shown(v)}" for k, v in cfg.to_dict().items()
               if k in base and v != base[k]]
    return ", ".join(changed) if changed else "defaults"


def run_controls(page: PageSettings, cls, prefix: str, title: str):
    """The sidebar of a run page (GRPO, RLVR): every config field, seeds, individual runs and a
    reset button. Returns (config, number of seeds, show individual runs)."""
    with st.sidebar:
        st.header(f"{title} settings")
        cfg = page.config(cls, prefix)
        n_seeds = page.draw(f"{prefix}_seeds")
        show_runs = page.draw(f"{prefix}_show_runs")
        page.reset_button()
    return cfg, n_seeds, show_runs
