"""Every page of the Streamlit app, run headless with streamlit.testing.v1.AppTest.

Each page runs with its defaults and with one changed setting; a run must raise nothing and draw its
charts (Altair charts appear as "vega_lite_chart" elements) and tables. Bad settings must end in an
st.error, not an exception.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 120
pytestmark = pytest.mark.slow     # every test here runs pages


def run(page: str, query: dict | None = None, state: dict | None = None,
        timeout: float = TIMEOUT) -> AppTest:
    at = AppTest.from_file(str(ROOT / page), default_timeout=timeout)
    at.query_params.update(query or {})
    for key, value in (state or {}).items():
        at.session_state[key] = value
    return at.run(timeout=timeout)


def charts(at: AppTest) -> list:
    return list(at.get("vega_lite_chart"))


def n_shown(at: AppTest) -> int:
    """Charts, and the sentences that stand in for charts of an all-zero series."""
    return len(charts(at)) + len([i for i in at.info if "no sample was clipped" in i.value])


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
    n_pages = len(list(ROOT.glob("pages/*.py")))
    links = [link.proto.page for link in at.main.get("page_link")]
    assert [l.split("/")[-1] for l in links[:2]] == ["Guided_tour", "GRPO"]   # where to start, first screen
    # the PPO and DPO paragraphs link to the measured comparison, and "The pages", one line each
    assert len(links) == 2 + 2 + n_pages
    assert sum(l.split("/")[-1] == "Landscape" for l in links) == 3
    assert charts(at)                                                 # one real run: what the app does
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
    # true, RM reward, 4 + 6 diagnostics, per context; the two clip fractions are all 0 with the
    # notebook's settings, so each is a sentence instead of a flat chart
    clip_zero = [i for i in at.info if "no sample was clipped" in i.value]
    assert len(charts(at)) + len(clip_zero) == 13 and len(clip_zero) <= 2
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
    assert n_shown(at) == 13
    assert at.metric[0].label == "final true reward (mean of 2)"
    assert at.selectbox(key="grpo_view_seed").options == ["0", "1"]


def test_rlvr_defaults_and_group_size():
    at = run("pages/3_RLVR.py")
    ok(at)
    assert n_shown(at) == 13                             # accuracy, true reward, 4 + 6 diagnostics, bars
    assert len(at.dataframe) == 2                        # correct token per context; The code's lines
    at.number_input(key="rlvr_iterations").set_value(40)
    at.slider(key="rlvr_group_size").set_value(4).run(timeout=TIMEOUT)
    ok(at)
    assert n_shown(at) == 13 and len(at.dataframe) == 2


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


@pytest.mark.parametrize("page, settings, message", [
    # over the work budget: 5000 x 16 x 64 x 64 x 64 seeds
    ("pages/2_GRPO.py", {"grpo_iterations": 5000, "grpo_epochs": 16, "grpo_prompts": 64,
                         "grpo_group_size": 64, "grpo_seeds": 64},
     "**Too much work.** This request needs iterations 5,000 × PPO epochs μ 16 × prompts per iteration 64 "
     "× group size G 64 × 64 runs (seeds) = 20,971,520,000 work units, over the limit of 100,000,000"),
    # a cross-field rule: more minibatches than prompts
    ("pages/3_RLVR.py", {"rlvr_prompts": 2, "rlvr_minibatches": 4}, "**Invalid setting.** minibatches"),
])
def test_bad_setting_shows_an_error_not_a_traceback(page, settings, message):
    at = run(page, state=settings)
    assert not at.exception
    assert len(at.error) == 1 and at.error[0].value.startswith(message), at.error[0].value
    assert not charts(at)


def metric_delta(at: AppTest, k: int) -> str:
    """The change of pass@k after RLVR as the page's metric shows it, e.g. '-0.0500'."""
    return next(m for m in at.metric if m.label.startswith(f"pass@{k},")).delta.split()[0]


@pytest.mark.parametrize("query", [{}, {"passk_lr": "0.05", "passk_kl_coef": "0", "passk_group_size": "2"}],
                         ids=["defaults", "aggressive"])
def test_pass_at_k_note_states_the_drop_shown(query):
    at = run("pages/8_Pass_at_k.py", {"passk_iterations": "150", "passk_seeds": "2", **query})
    ok(at)
    shown = metric_delta(at, 64)
    note = next(i.value for i in at.info if "Only an exact toy" in i.value)
    word = "drop" if shown.startswith("-") and shown != "-0.0000" else "change"
    assert f"{word} at k = 64 shown above, {shown}," in note, (shown, note)


def test_captions_name_settings_by_their_on_screen_labels():
    """After 'preference sharpness' changes on Setup, other pages' captions call it that, not pref_scale."""
    at = run("pages/2_GRPO.py", {"grpo_iterations": "20", "grpo_seeds": "1"},
             state={"problem_pref_scale": 6.0, "grpo_lr": 0.01})
    ok(at)
    captions = " ".join(c.value for c in at.caption)
    assert "task preference sharpness 6" in captions, captions
    assert "pref_scale" not in captions and "lr=" not in captions



def test_over_work_message_names_the_seeds_when_seeds_moved():
    """Only the seeds changed (the rest at defaults but for iterations): the message names the
    product, seeds among its factors, not 'iterations' alone."""
    at = run("pages/2_GRPO.py", state={"grpo_iterations": 5000, "grpo_prompts": 64, "grpo_group_size": 64,
                                       "grpo_epochs": 16, "grpo_seeds": 2})
    assert not at.exception
    assert "× 2 runs (seeds) =" in at.error[0].value and "lower one of these factors" in at.error[0].value


@pytest.mark.parametrize("page, query, setting", [
    ("pages/2_GRPO.py", {"grpo_advantage_estimator": "rloo", "grpo_iterations": "40"}, "advantage_estimator = 'rloo'"),
    ("pages/3_RLVR.py", {"rlvr_iterations": "40"}, "reward = 'verifiable'"),
    ("pages/10_GRPO_on_sequences.py", {"seq_loss_type": "dr_grpo", "seq_iterations": "20"}, "loss_type = 'dr_grpo'"),
])
def test_the_code_section_shows_the_reference_with_the_settings_marked(page, query, setting):
    at = run(page, query)
    ok(at)
    assert "The code" in [h.value for h in at.header]
    code = [c.value for c in at.code if "one run, top to bottom" in c.value]
    marked = [line for line in code[0].splitlines() if "◀ your settings" in line and setting in line]
    assert len(code) == 1 and marked
    table = next(d.value for d in at.dataframe if "the line your settings take" in d.value.columns)
    assert any(setting in because for because in table["because"])
