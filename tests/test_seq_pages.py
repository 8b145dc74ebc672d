"""The sequence lab pages (Sequence GRPO, Length bias, ...) run headless with AppTest.

Each page must raise nothing, draw its charts and tables, take its settings from the URL, and turn
a bad combination of settings into one st.error line. Sentences that state a number or a verdict
are checked against the results the page computed.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 180
pytestmark = pytest.mark.slow     # every test here runs pages


def run(page: str, query: dict | None = None, state: dict | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / page), default_timeout=TIMEOUT)
    at.query_params.update(query or {})
    for key, value in (state or {}).items():
        at.session_state[key] = value
    return at.run(timeout=TIMEOUT)


def charts(at: AppTest) -> list:
    return list(at.get("vega_lite_chart"))


def ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


SEQ = "pages/10_Sequence_GRPO.py"


def test_sequence_grpo_defaults_show_exact_curves_and_text():
    at = run(SEQ)
    ok(at)
    assert len(charts(at)) == 7 + 6           # exact curves, then the batch diagnostics
    assert at.slider(key="seq_seeds").value == 8
    assert at.metric[0].label == "final P(correct) (mean of 8)"
    top, drawn, per_context = (d.value for d in at.dataframe)
    # responses shown as text: letters, then '.' (the end token) or '…' (cut off at L)
    assert all(re.fullmatch(r"[abc]*[.…]", t) for t in [*top["response"], *drawn["response"]])
    assert len(drawn) == 5 * 4 and len(per_context) == 5
    # the first letter is the answer (answer_rule "first"): correctness agrees with the table
    answers = dict(zip(per_context["context"], per_context["answer"]))
    assert all((r[0] == answers[c]) == ok_ for c, r, ok_ in
               zip(drawn["context"], drawn["response"], drawn["correct"]) if r[0] != "." and r[-1] != "…")
    # RL on the verifier raises the exact reward above the SFT start (the metric's delta)
    assert float(at.metric[0].value) > 0.7


def test_sequence_grpo_settings_from_the_url():
    at = run(SEQ, query={"seq_iterations": "30", "seq_loss_type": "dr_grpo", "seq_seeds": "2",
                         "seq_mask_truncated": "true", "seqtask_max_length": "4"})
    ok(at)
    assert at.number_input(key="seq_iterations").value == 30
    assert at.selectbox(key="seq_loss_type").value == "dr_grpo"
    assert at.checkbox(key="seq_mask_truncated").value is True
    assert at.metric[0].label == "final P(correct) (mean of 2)"
    assert at.selectbox(key="seq_view_seed").options == ["0", "1"]
    assert any("L = 4" in c.value for c in at.caption)
    assert len(charts(at)) == 13


@pytest.mark.parametrize("state, field", [
    ({"seq_loss_type": "luspo"}, "importance_sampling_level"),          # luspo needs sequence ratios
    ({"seq_iterations": 5000, "seq_epochs": 16, "seq_seeds": 64}, "iterations"),   # over the work cap
])
def test_sequence_grpo_bad_settings_give_one_line(state, field):
    at = run(SEQ, state=state)
    assert not at.exception
    assert len(at.error) == 1 and "Invalid setting" in at.error[0].value and field in at.error[0].value
    assert not charts(at)
