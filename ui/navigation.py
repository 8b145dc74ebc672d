"""The page list (labels, icons, order, one line each) and what every page does first.

Pages stay in Streamlit's classic pages/ folder, so every page keeps its URL (/GRPO, /Pass_at_k,
...) and a deep link opens it directly. Streamlit's own sidebar list is switched off
(client.showSidebarNavigation in .streamlit/config.toml) because it calls the landing page "app";
:func:`sidebar` draws the same list from :data:`PAGES` with st.page_link, the landing page as "Home".

Shared between sessions: nothing; this module holds constants only.
"""
from __future__ import annotations

from dataclasses import dataclass

import streamlit as st
import torch
from streamlit.errors import StreamlitPageNotFoundError

from ui import guard, store
from ui.controls import PageSettings

torch.set_num_threads(1)  # tensors are tiny: threads only add overhead, and sessions share the cores


@dataclass(frozen=True)
class Page:
    path: str       # the script, relative to app.py's folder
    label: str      # in the sidebar and on the landing page
    icon: str
    blurb: str = ""  # one line on the landing page


PAGES = (
    Page("app.py", "Home", ":material/home:"),
    Page("pages/0_Guided_tour.py", "Guided tour", ":material/school:",
         "new to GRPO? Six short experiments; predict each result before you reveal it."),
    Page("pages/1_Setup.py", "Setup", ":material/tune:",
         "the task, the SFT policy and the reward model; where the reward model disagrees with the truth."),
    Page("pages/2_GRPO.py", "GRPO", ":material/model_training:",
         "train GRPO on the learned reward model over many seeds, with every diagnostic."),
    Page("pages/3_RLVR.py", "RLVR", ":material/task_alt:",
         "GRPO with a verifiable 0/1 reward: no reward model at all."),
    Page("pages/4_Group_size_sweep.py", "Group size sweep", ":material/stacked_line_chart:",
         "how G trades noise for compute; compare per iteration or per sample generated."),
    Page("pages/5_Compare.py", "Compare", ":material/compare:",
         "SFT, GRPO and RLVR side by side, context by context."),
    Page("pages/6_Reward_hacking.py", "Reward hacking", ":material/warning:",
         "true against reward-model reward as the policy moves away from SFT, next to exact "
         "best-of-n and the KL-regularized optimum."),
    Page("pages/7_Zero_signal_groups.py", "Zero-signal groups", ":material/volume_off:",
         "how often a group of 0/1 rewards teaches nothing, exactly, and what DAPO's dynamic "
         "sampling does about it."),
    Page("pages/8_Pass_at_k.py", "pass@k", ":material/filter_9_plus:",
         "does RLVR sharpen pass@1 at the cost of pass@k?"),
    Page("pages/9_Gradient_noise.py", "Gradient noise", ":material/explore:",
         "how well one batch's gradient points along the exact policy gradient, for every "
         "advantage estimator and G."),
    Page("pages/10_GRPO_on_sequences.py", "GRPO on sequences", ":material/notes:",
         "GRPO on multi-token responses: every loss type, exact length curves, what the policy writes."),
    Page("pages/11_Length_bias.py", "Length bias", ":material/straighten:",
         "Dr. GRPO's claims tested: do wrong answers grow longer under grpo, and how std "
         "normalization weights contexts by difficulty."),
    Page("pages/12_Token_vs_sequence_ratios.py", "Token vs sequence ratios", ":material/compare_arrows:",
         "GRPO, GSPO and CISPO off-policy: clipping, gradient direction, and where their first steps coincide."),
    Page("pages/13_Entropy_collapse.py", "Entropy collapse", ":material/trending_down:",
         "the correct answer starts rare: time to discovery and entropy, symmetric clip vs DAPO's clip-higher."),
    Page("pages/14_Landscape.py", "Landscape", ":material/landscape:",
         "PPO, REINFORCE, RLOO, GRPO, RLVR and DPO trained side by side: the notebook's table, measured."),
    Page("pages/15_Hyperparameter_map.py", "Hyperparameter map", ":material/grid_on:",
         "where does a setting work? Two settings on a grid, several seeds per cell, one heatmap."),
)


def page(settings: PageSettings) -> None:
    """Start a page: its tab title, the URL check of its declared settings, the navigation (or
    presentation mode), and freeing what the session held for other pages."""
    # In presentation mode the sidebar starts closed; its toggle (and the bar at the top) stay.
    present = st.query_params.get("present") == "1" or (
        st.query_params.get("present") is None and st.session_state.get("present", False))
    st.set_page_config(page_title=f"{settings.title} · GRPO explorer", page_icon="🎯", layout="wide",
                       initial_sidebar_state="collapsed" if present else "auto")
    st.session_state["page"] = settings.title
    st.session_state["page_settings"] = settings     # what this page declared (read by the tests)
    guard.check_url(settings.url_settings)  # bad URL settings are fixed, with a notice, before any widget
    store.release_other_pages(settings.title)
    if not presentation_mode():   # presenting, the bar at the top lists the pages: the sidebar holds the settings
        sidebar()


def sidebar() -> None:
    """Every page, in order, as links at the top of the sidebar."""
    with st.sidebar:
        try:
            for p in PAGES:
                st.page_link(p.path, label=p.label, icon=p.icon)
        except StreamlitPageNotFoundError:
            return   # a page run on its own (AppTest.from_file) has no app around it to link to
        st.divider()


# ---------------------------------------------------------------- presentation mode (?present=1)

PRESENT_CSS = """<style>
html { font-size: 21px; }
[data-testid="stMainBlockContainer"] { max-width: 100%; padding-left: 2rem; padding-right: 2rem; }
</style>"""


def presentation_mode() -> bool:
    """?present=1: the sidebar starts closed (charts take the full width), the type and the charts'
    text are enlarged, for a projector; a bar at the top moves between pages (keeping presentation
    mode) and opens the settings (the sidebar, which its arrow also opens).

    The flag is kept in the session and put back into the URL, so it survives page switches;
    ?present=0 (or the exit button) turns it off.
    """
    asked = st.query_params.get("present")
    if asked is not None:
        st.session_state["present"] = asked == "1"
    if not st.session_state.get("present", False):
        return False
    if asked != "1":
        st.query_params["present"] = "1"

    def leave():
        st.session_state["present"] = False
        st.query_params.pop("present", None)
    st.html(PRESENT_CSS)
    pages, exit_ = st.columns([4, 1], vertical_alignment="center")
    with pages:
        with st.container(horizontal=True):
            try:
                for p in PAGES:
                    st.page_link(p.path, label=p.label, icon=p.icon, query_params={"present": "1"})
            except StreamlitPageNotFoundError:
                pass    # a page run on its own (AppTest.from_file) has no app around it to link to
    exit_.button("✕ Exit presentation mode", key="present_exit", type="tertiary", on_click=leave)
    st.caption("Settings: open the sidebar with the arrow at the top left.")
    return True
