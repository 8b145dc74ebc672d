"""Streamlit glue of the GRPO explorer, one module per concern. Pages import what they use:

    from ui import charts, controls, navigation, store, views

- controls:   settings widgets, each declared once (key, config field, default, range); the URL
              guard and the "Reset to defaults" buttons read the same declaration
- navigation: the page list drawn in the sidebar ("Home" first), presentation mode, page start
- store:      the one bounded, locked result store every page trains through; cached upstream
- charts:     chart builders and their cached specs;   views: tables, metrics, policy views
- live:       live training, stop, pins, sharing;       guard: URL validation and caps
- lab:        the algorithm-lab pages' analyses and the TRL export

Shared between sessions (one process serves every browser session), and nothing else:
ui.store's result store and its per-key locks, ui.store's upstream caches, ui.charts' spec caches
and ui.lab's analysis caches, all bounded; each module's docstring says what it holds.
Everything per user lives in st.session_state. This file imports nothing, so no module of the
package imports another through it.
"""
