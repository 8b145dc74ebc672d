"""Every page of the Streamlit app, run headless with streamlit.testing.v1.AppTest.

Each page runs with its defaults and with one changed setting; a run must raise nothing and draw its
charts (Altair charts appear as "vega_lite_chart" elements) and tables. Bad settings must end in an
st.error, not an exception.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 120
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


def test_landing():
    at = run("app.py")
    ok(at)
    assert at.title[0].value == "The GRPO explorer"
    assert len(at.get("latex")) == 2                     # the advantage and the clipped objective
    text = " ".join(m.value for m in at.markdown)
    assert "DeepSeekMath" in text and "Shao et al., 2024" in text
    n_pages = len(list(Path(__file__).parent.parent.glob("pages/*.py")))
    links = at.main.get("page_link")
    listed = [l for l in links if l.proto.label.startswith("**")]
    assert len(listed) == n_pages                                   # "The pages", one line each
    # the PPO and DPO paragraphs link to the measured comparison
    assert sum(l.proto.page == "Landscape" for l in links if l not in listed) == 2
    sidebar = [link.proto.label for link in at.sidebar.get("page_link")]
    assert sidebar[0] == "Home" and len(sidebar) == 1 + n_pages     # the navigation: Home, then every page


def test_setup_defaults_and_rm_change_does_not_retrain_sft(monkeypatch):
    from ui import store
    calls = {"sft": 0, "rm": 0}
    train_sft, train_rm = store.train_sft, store.train_reward_model

    def counting_sft(*a, **k):
        calls["sft"] += 1
        return train_sft(*a, **k)

    def counting_rm(*a, **k):
        calls["rm"] += 1
        return train_rm(*a, **k)

    monkeypatch.setattr(store, "train_sft", counting_sft)
    monkeypatch.setattr(store, "train_reward_model", counting_rm)
    store.sft.clear()
    store.reward_model.clear()

    at = run("pages/1_Setup.py")
    ok(at)
    assert len(charts(at)) >= 8                          # task, SFT x3, SFT bars, RM x2, heatmaps x2
    assert len(at.dataframe) == 1                        # correct token vs the reward model's top token
    assert calls == {"sft": 1, "rm": 1}

    at.number_input(key="rm_steps").set_value(50).run(timeout=TIMEOUT)
    ok(at)
    assert calls == {"sft": 1, "rm": 2}, "changing a reward-model setting retrained SFT"
    assert len(charts(at)) >= 8


def test_grpo_defaults():
    at = run("pages/2_GRPO.py")
    ok(at)
    assert len(charts(at)) == 13                         # true, RM reward, 4 + 6 diagnostics, per context
    assert len(at.metric) == 4
    assert at.slider(key="grpo_seeds").value == 8


def test_grpo_changed_settings():
    at = run("pages/2_GRPO.py", query={"grpo_iterations": "40"})
    ok(at)
    assert at.number_input(key="grpo_iterations").value == 40   # the URL sets the widget
    at.slider(key="grpo_seeds").set_value(2)
    at.checkbox(key="grpo_show_runs").check()
    at.run(timeout=TIMEOUT)
    ok(at)
    assert len(charts(at)) == 13
    assert at.metric[0].label == "final true reward (mean of 2)"
    assert at.selectbox(key="grpo_view_seed").options == ["0", "1"]


def test_rlvr_defaults_and_group_size():
    at = run("pages/3_RLVR.py")
    ok(at)
    assert len(charts(at)) == 13                         # accuracy, true reward, 4 + 6 diagnostics, bars
    assert len(at.dataframe) == 1                        # correct token per context
    at.number_input(key="rlvr_iterations").set_value(40)
    at.slider(key="rlvr_group_size").set_value(4).run(timeout=TIMEOUT)
    ok(at)
    assert len(charts(at)) == 13 and len(at.dataframe) == 1


def test_sweep_defaults_and_changed():
    at = run("pages/4_Group_size_sweep.py")
    ok(at)
    assert len(charts(at)) == 4                          # true reward, KL, zero-std, final vs G
    assert len(at.dataframe[0].value) == 4 * 8           # one row per (G, seed)
    at.multiselect(key="sweep_group_sizes").set_value([2, 32])
    at.slider(key="sweep_seeds").set_value(2)
    at.number_input(key="sweep_iterations").set_value(40)
    at.radio(key="sweep_x").set_value("samples").run(timeout=TIMEOUT)
    ok(at)
    table = at.dataframe[0].value
    assert sorted(set(table["G"])) == [2, 32] and len(table) == 4
    assert len(charts(at)) == 4


def test_compare_uses_the_grpo_and_rlvr_pages_settings():
    at = run("pages/5_Compare.py")
    ok(at)
    assert len(charts(at)) == 1 and len(at.dataframe) == 2
    at = run("pages/5_Compare.py", state={"grpo_seeds": 2, "rlvr_seeds": 3, "grpo_iterations": 40,
                                           "rlvr_iterations": 40})
    ok(at)
    per_context, per_seed = (d.value for d in at.dataframe)
    assert per_context["GRPO beats SFT"].str.endswith("/2").all()
    assert per_context["RLVR beats SFT"].str.endswith("/3").all()
    assert list(per_seed["method"]) == ["GRPO"] * 2 + ["RLVR"] * 3
    assert list(per_context["context"])[-1] == "overall"


@pytest.mark.parametrize("page, settings", [
    # over the work budget: 5000 x 16 x 64 x 64 x 64 seeds
    ("pages/2_GRPO.py", {"grpo_iterations": 5000, "grpo_epochs": 16, "grpo_prompts": 64,
                         "grpo_group_size": 64, "grpo_seeds": 64}),
    # a cross-field rule: more minibatches than prompts
    ("pages/3_RLVR.py", {"rlvr_prompts": 2, "rlvr_minibatches": 4}),
])
def test_bad_setting_shows_an_error_not_a_traceback(page, settings):
    at = run(page, state=settings)
    assert not at.exception
    assert len(at.error) == 1 and "Invalid setting" in at.error[0].value
    assert not charts(at)
