"""One widget bound to the URL, declared once: its key, default and accepted values, how it is
drawn, and how its value reads and writes in the URL (both ways: ui.guard checks a link's values
with them).

Shared between sessions: nothing; this module holds a class and functions only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import streamlit as st


def g(value) -> str:
    """A number as the URL and the sliders write it: 0.001, 1e-05."""
    return f"{value:g}"


@dataclass(frozen=True)
class Setting:
    """One widget bound to the URL: its key, its default and the values it accepts, and how it is drawn.

    default is a bool, int, float, str, or a tuple for a multiselect (whose items come from
    choices). A widget with choices (selectbox, radio, select_slider, multiselect) shows and puts
    text(choice) in the URL; a number widget accepts lo to hi. field names the config field the
    widget sets ("" for a page's own widgets); group "variants" puts it in the variants expander.
    """

    key: str
    default: Any
    lo: float | None = None
    hi: float | None = None
    choices: tuple | None = None
    text: Callable[[Any], str] = str
    label: str = ""
    help: str = ""
    kind: str = ""          # slider, number, select_slider, selectbox, multiselect, radio, checkbox, toggle
    field: str = ""
    group: str = ""
    horizontal: bool = False

    @property
    def reset_value(self):
        """What "Reset to defaults" writes into the session (a multiselect holds a list)."""
        return list(self.default) if isinstance(self.default, tuple) else self.default

    def draw(self):
        """The widget in the current container; returns its value.

        Its value comes one way only: a value a callback (Reset, a loaded configuration) has just
        put in st.session_state is drawn without a default, as Streamlit asks; otherwise the
        declared default (which the URL also omits) is given.
        """
        opts = dict(key=self.key, help=self.help or None, bind="query-params", persist_state="session")
        if not set_by_session_state(self.key):
            return self._widget(self.label or self.key, opts, self.default)
        value = self._widget(self.label or self.key, opts, None)
        self._sync_url(value)
        return value

    def _widget(self, label: str, opts: dict, d):
        """Draw the widget with initial value d, or (d None) with the value in st.session_state."""
        given = lambda **initial: initial if d is not None else {}
        opts = {**opts, "format_func": self.text} if self.choices else opts
        if self.kind == "selectbox":
            return st.selectbox(label, self.choices, **given(index=self.choices.index(d) if d is not None else 0), **opts)
        if self.kind == "radio":
            return st.radio(label, self.choices, horizontal=self.horizontal,
                            **given(index=self.choices.index(d) if d is not None else 0), **opts)
        if self.kind == "multiselect":
            return st.multiselect(label, self.choices, **given(default=list(d or ())), **opts)
        if self.kind == "select_slider":
            return st.select_slider(label, self.choices, **given(value=d), **opts)
        if self.kind in ("checkbox", "toggle"):
            return (st.checkbox if self.kind == "checkbox" else st.toggle)(label, **given(value=d), **opts)
        whole = isinstance(self.default, int)
        lo, hi = (self.lo, self.hi) if whole else (float(self.lo), float(self.hi))
        if self.kind == "slider":
            step = {} if whole else {"step": 0.01}
            return st.slider(label, lo, hi, **given(value=d if whole else float(d or 0)), **step, **opts)
        if self.kind == "number":
            step = {"step": 1} if whole else {"step": 0.01, "format": "%.2f"}
            value = "min" if d is None else (d if whole else float(d))
            return st.number_input(label, min_value=lo, max_value=hi, value=value, **step, **opts)
        raise ValueError(f"{self.key}: unknown widget kind {self.kind!r}")

    def _sync_url(self, value) -> None:
        """Drawn without a default, Streamlit writes the value to the URL unless it is the widget's
        first option; put the URL back to what the declared default implies (omitted at the default)."""
        try:
            from streamlit.runtime.state.session_state_proxy import get_session_state
            text = self.to_url(value)
            with get_session_state().query_params() as qp:
                if text is None:
                    qp.remove_param(self.key)
                else:
                    qp.set_corrected_value(self.key, text, "string_array_value" if isinstance(text, list)
                                           else "string_value")
        except (ImportError, AttributeError):
            pass    # Streamlit's internals moved: the URL then names a default, which is harmless

    # ---- the URL form of a value, both ways (ui.guard checks a URL's values with these)

    def to_url(self, value) -> str | list[str] | None:
        """value as the URL writes it (a list for a multiselect); None at the default, which the
        URL omits. The inverse of from_url."""
        if isinstance(value, list):
            value = tuple(value)
        if value == self.default:
            return None
        if isinstance(value, bool):
            return str(value).lower()
        return [self.url_form(v) for v in value] if isinstance(value, tuple) else self.url_form(value)

    def url_form(self, value) -> str:
        """One value (a choice or a number) as text: 0.001, 1e-05, a choice's text."""
        if self.choices:
            return self.text(value)
        return g(value) if isinstance(value, float) else str(value)

    def from_url(self, given: str):
        """The value of a URL text that ui.guard.check_setting accepts as it is (None if invalid)."""
        given = given.strip()
        if isinstance(self.default, bool):
            return given.lower() == "true"
        if self.choices:
            return self.choice_for(given)
        return parse_number(given, isinstance(self.default, int))[0]

    def choice_for(self, text: str):
        """The choice whose URL form (or plain name, in any case) is text, else None."""
        for match in (lambda c: self.text(c) == text, lambda c: str(c).lower() == text.lower()):
            found = [c for c in self.choices if match(c)]
            if found:
                return found[0]
        return None


def parse_number(text: str, whole: bool) -> tuple[float | None, str]:
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


def set_by_session_state(key: str) -> bool:
    """True when key's value was written through st.session_state since the last run (by a
    callback such as Reset or a loaded configuration): its widget must then be drawn without a
    default, or Streamlit warns that the value is set two ways."""
    try:
        from streamlit.runtime.state.session_state_proxy import get_session_state
        return get_session_state().is_new_state_value(key)
    except (ImportError, AttributeError):   # Streamlit's internals moved: draw with the default
        return False
