"""The run pages as people use them (AppTest): live training, pins, downloads, loading a saved
configuration, presentation mode and the guided tour; and the background run's Stop."""
from __future__ import annotations

import json

import numpy as np
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from grpo_core import GRPOConfig, RLVRConfig, reference_metrics, run_many, seed_configs
from ui.live import history_csv
from ui.pins import pin_labels
from ui.store import LiveRun

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 120


def app(page: str, query: dict | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / page), default_timeout=TIMEOUT)
    at.query_params.update(query or {})
    return at.run(timeout=TIMEOUT)


def ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def live_iteration(at: AppTest) -> int:
    text = next(m.value for m in at.markdown if m.value.startswith("Live iteration"))
    return int(text.split("**")[1])


@pytest.fixture(scope="module")
def grpo_page() -> AppTest:
    """The GRPO page, short runs so that each rerun is quick."""
    at = app("pages/2_GRPO.py", {"grpo_iterations": "60", "grpo_seeds": "2"})
    ok(at)
    return at


@pytest.mark.slow
def test_live_controls_step_and_reset(grpo_page):
    at = grpo_page
    at.toggle(key="grpo_watch").set_value(True).run()
    ok(at)
    for key in ("grpo_play", "grpo_step", "grpo_reset"):
        assert at.button(key=key)
    assert live_iteration(at) == 0
    at.button(key="grpo_step").click().run()
    ok(at)
    assert live_iteration(at) == 10
    at.button(key="grpo_step").click().run()
    assert live_iteration(at) == 20
    charts_while_live = len(at.get("vega_lite_chart"))
    live_specs = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    live_specs = [s for s in live_specs if any(l.get("encoding", {}).get("x", {}).get("scale", {}).get("domain")
                                               == [0, 60] for l in s.get("layer", []))]
    assert len(live_specs) == 4          # the live charts' x axis is the whole run (60 iterations) from the start
    at.button(key="grpo_reset").click().run()
    ok(at)
    assert live_iteration(at) == 0
    assert len(at.get("vega_lite_chart")) < charts_while_live    # the live curves are gone
    at.toggle(key="grpo_watch").set_value(False).run()


@pytest.mark.slow
def test_live_trainer_is_one_per_page_and_freed_on_reset_and_on_leaving():
    """The session holds at most one trainer per page; Reset frees it, and so does leaving the page."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.session_state["grpo_iterations"] = 60
    at.session_state["grpo_seeds"] = 2
    at.run()
    at.switch_page("pages/2_GRPO.py").run()
    ok(at)

    def held():
        return at.session_state["held_runs"].get("GRPO", {}).get("run")

    at.toggle(key="grpo_watch").set_value(True).run()
    assert held() is None                                 # nothing is trained until Play or Step
    at.button(key="grpo_step").click().run()
    first = held()
    assert first is not None and first.done == 10 and first.trainer is not None
    at.button(key="grpo_step").click().run()
    assert held() is first and first.done == 20          # the same one trainer, advanced
    at.button(key="grpo_reset").click().run()
    assert held() is None and live_iteration(at) == 0
    at.button(key="grpo_play").click().run()              # Play makes (and holds) a new one ...
    assert held() is not None and held() is not first
    status = next(m.value for m in at.markdown if m.value.startswith("Live iteration"))
    assert status.endswith("· playing"), status           # ... and keeps playing on the rerun
    at.switch_page("pages/1_Setup.py").run()
    ok(at)
    assert "GRPO" not in at.session_state["held_runs"]    # left the page: its trainer is gone


@pytest.mark.slow
def test_pin_overlay_names_what_differs(grpo_page):
    at = grpo_page
    at.button(key="grpo_pin").click().run()
    at.slider(key="grpo_group_size").set_value(4).run()
    at.button(key="grpo_pin").click().run()
    ok(at)
    labels = [b.label for b in at.button if b.label.startswith("✕ unpin")]
    assert labels == ["✕ unpin #1: group size G 8", "✕ unpin #2: group size G 4"]
    specs = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    pinned = [s for s in specs if "Pinned runs" in json.dumps(s.get("title"))]
    assert len(pinned) == 2
    for spec in pinned:       # full height; the legend names runs by number, not by a long label per line
        assert spec["height"] >= 230 and spec["autosize"]["type"] == "fit-x"   # the height is the plot's
        assert spec["encoding"]["color"]["scale"]["domain"] == ["#1", "#2"]
        assert spec["encoding"]["color"]["legend"]["direction"] == "horizontal"
    listed = " ".join(m.value for m in at.markdown)
    assert "#1: group size G 8" in listed and "#2: group size G 4" in listed
    at.button(key="grpo_unpin_0").click().run()
    assert [b.label for b in at.button if b.label.startswith("✕ unpin")] == ["✕ unpin #1: GRPO"]
    at.slider(key="grpo_group_size").set_value(8).run()


@pytest.mark.slow
def test_upload_box_states_the_real_limit(grpo_page):
    label = next(e.proto.label for e in grpo_page.main if getattr(e, "type", "") == "file_uploader")
    assert "at most 64 KiB" in label
    assert any("The limit is 64 KiB per file, not the 1MB" in c.value for c in grpo_page.caption)


@pytest.mark.slow
def test_downloads_exist(grpo_page):
    labels = [d.proto.label for d in grpo_page.get("download_button")]
    assert any("CSV" in label for label in labels) and any("JSON" in label for label in labels)
    assert any("Copy link" in m.value for m in grpo_page.markdown)


def test_history_csv_has_every_seed(upstream):
    from grpo_core import run_many
    results = run_many(upstream, seed_configs(GRPOConfig(iterations=5), 3))
    lines = history_csv(results).splitlines()
    assert lines[0].startswith("seed,iteration,")
    assert len(lines) == 1 + 3 * 5 and {l.split(",")[0] for l in lines[1:]} == {"0", "1", "2"}


@pytest.mark.slow
def test_upload_bad_and_good_configuration():
    at = AppTest.from_string(UPLOAD_SCRIPT, default_timeout=TIMEOUT)
    at.session_state["upload_bytes"] = b'{"kind": "grpo", "run": {"group_size": 1000}}'
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.error) == 1 and "run.group_size" in at.error[0].value
    at.session_state["upload_bytes"] = b"{not json"
    at.run()
    assert len(at.error) == 1 and "file" in at.error[0].value and "JSON" in at.error[0].value
    at.session_state["upload_bytes"] = b" " * (64 * 1024 + 1)           # over 64 KiB, under Streamlit's 1MB
    at.run()
    assert len(at.error) == 1 and "65,537 bytes, over the limit of 64 KiB" in at.error[0].value
    good = {"kind": "grpo", "seeds": 3, "run": {"group_size": 4, "lr": 0.01, "kl_coef": 0.1},
            "problem": {"seed": 7}}
    at.session_state["upload_bytes"] = json.dumps(good).encode()
    at.run()
    assert not at.error and at.success
    state = at.session_state
    assert (state["grpo_group_size"], state["grpo_lr"], state["grpo_kl_coef"], state["grpo_seeds"],
            state["problem_seed"]) == (4, 0.01, 0.1, 3, 7)


# The GRPO page's uploader callback, given a file the way the uploader would (AppTest has no
# file-upload driver); then the GRPO page itself renders the restored settings.
UPLOAD_SCRIPT = """
import streamlit as st
from ui import live

class Upload:
    name = "experiment.json"
    def __init__(self, data): self.data = data
    def getvalue(self): return self.data

st.session_state["grpo_upload"] = Upload(st.session_state["upload_bytes"])
live._apply_upload("grpo")
kind, text = st.session_state["grpo_upload_message"]
(st.error if kind == "error" else st.success)(text)
"""


@pytest.mark.slow
def test_restored_settings_drive_the_page():
    at = AppTest.from_file(str(ROOT / "pages/2_GRPO.py"), default_timeout=TIMEOUT)
    at.session_state["grpo_group_size"] = 4
    at.session_state["grpo_iterations"] = 40
    at.session_state["grpo_seeds"] = 2
    at.run(timeout=TIMEOUT)
    ok(at)
    assert at.slider(key="grpo_group_size").value == 4
    assert at.number_input(key="grpo_iterations").value == 40
    assert "mean of 2" in at.metric[0].label                    # the result is of the restored runs


@pytest.mark.slow
def test_presentation_mode_renders_everywhere():
    for page in ("app.py", "pages/0_Guided_tour.py", "pages/2_GRPO.py", "pages/5_Compare.py"):
        at = app(page, {"present": "1", "grpo_iterations": "40", "grpo_seeds": "2",
                        "rlvr_iterations": "40"})
        ok(at)
        assert at.session_state["present"] is True
        assert at.button(key="present_exit")
    at.button(key="present_exit").click().run()
    assert at.session_state["present"] is False and not [b for b in at.button if b.key == "present_exit"]


@pytest.mark.slow
def test_tour_renders_and_reveal_judges_the_prediction(upstream):
    """Step 3 asks where GRPO (G = 8, 200 iterations, 4 seeds) ends against SFT. The answer is
    worked out here from the same runs, trained outside the app; the tour must call the right
    prediction right and a wrong one wrong, naming the answer."""
    tour = GRPOConfig(iterations=200)        # the tour's batch: G = 8, G = 2 and RLVR, 4 seeds each
    results = run_many(upstream, seed_configs(tour, 4) + seed_configs(tour.replace(group_size=2), 4)
                       + seed_configs(RLVRConfig(iterations=200), 4))
    gain = (sum(r.history.true_reward.iloc[-1] for r in results[:4]) / 4
            - float(reference_metrics(upstream)["true_reward"]))
    options = ["higher than SFT's", "about the same", "lower than SFT's"]
    right = options[0 if gain > 0.005 else 2 if gain < -0.005 else 1]
    wrong = next(o for o in options if o != right)

    at = app("pages/0_Guided_tour.py")
    ok(at)
    assert not at.success and not at.warning                   # nothing revealed yet
    assert at.button(key="tour_3_reveal").disabled              # predict first
    at.radio(key="tour_3_guess").set_value(right).run()
    at.button(key="tour_3_reveal").click().run()
    ok(at)
    assert [e.value for e in at.success] == [f"Your prediction held: {right}."] and not at.warning
    assert at.get("vega_lite_chart")
    at.radio(key="tour_3_guess").set_value(wrong).run()        # a new guess hides the verdict ...
    assert not at.success and not at.warning
    at.button(key="tour_3_reveal").click().run()               # ... until it is revealed again
    ok(at)
    assert [e.value for e in at.warning] == [f"Not this time: the answer is “{right}”."] and not at.success


def test_live_run_stops_and_keeps_finished_iterations(upstream):
    run = LiveRun(upstream, seed_configs(GRPOConfig(iterations=400), 2))
    run.advance(30)
    assert run.done == 30 and not run.finished
    assert len(run.results()[0].history) == 30
    run.stop()
    assert run.finished and run.stopped
    assert [len(r.history) for r in run.results()] == [30, 30]
    assert "Stopped after 30 of 400" in run.results()[0].stopped


def test_live_run_in_pieces_is_the_batch_run(upstream):
    """Live training is the real run: in pieces it ends exactly where the one-go run ends."""
    from grpo_core import run_many
    configs = seed_configs(GRPOConfig(iterations=25), 2)
    run = LiveRun(upstream, configs)
    for _ in range(3):
        run.advance(10)
    assert run.finished and not run.stopped
    for live, ref in zip(run.results(), run_many(upstream, configs)):
        assert live.history.equals(ref.history)


def test_pin_labels_name_differences():
    base = {"name": "GRPO", "seeds": 8, "config": GRPOConfig().to_dict(),
            "upstream": {"problem": {"seed": 42}}}
    other = {**base, "config": GRPOConfig(lr=0.01).to_dict()}
    rlvr = {**base, "name": "RLVR"}
    assert pin_labels([base, other]) == ["#1: learning rate 0.001", "#2: learning rate 0.01"]
    sharper = {**base, "upstream": {"problem": {"seed": 42, "pref_scale": 6.0}}}
    assert pin_labels([base, sharper]) == ["#1: task preference sharpness –", "#2: task preference sharpness 6"]
    assert pin_labels([base, rlvr]) == ["#1: GRPO", "#2: RLVR"]


def share_link_text(at: AppTest) -> str:
    """The text of the "Copy link to this experiment" box (the page's only URL in a code box)."""
    return next(c.value for c in at.code if "?" in c.value)


@pytest.mark.slow
def test_share_link_is_the_settings_the_results_were_computed_from():
    """The link is built from the configs the page trained on, not from the browser's URL, which
    lags the widgets a rerun behind when they change quickly."""
    at = AppTest.from_file(str(ROOT / "pages/2_GRPO.py"), default_timeout=TIMEOUT)
    at.query_params.update({"grpo_iterations": "40", "grpo_seeds": "2", "grpo_group_size": "15"})
    at.run(timeout=TIMEOUT)
    ok(at)
    at.slider(key="grpo_group_size").set_value(16)
    at.query_params["grpo_group_size"] = "15"      # the URL one change behind, as in a quick browser
    at.run(timeout=TIMEOUT)
    ok(at)
    link = share_link_text(at)
    assert "grpo_group_size=16" in link and "grpo_group_size=15" not in link, link
    assert "grpo_iterations=40" in link and "grpo_seeds=2" in link


def test_which_is_higher_needs_more_than_the_seeds_spread():
    from ui.views import which_is_higher
    assert which_is_higher([0.60, 0.62, 0.59, 0.61], [0.61, 0.60, 0.62, 0.60]) == "same"   # 0.606 vs 0.609
    assert which_is_higher([0.70, 0.71, 0.69, 0.70], [0.60, 0.61, 0.59, 0.60]) == "a"
    assert which_is_higher([0.50, 0.51], [0.60, 0.61]) == "b"


@pytest.mark.slow
def test_tour_step_4_verdict_is_computed_from_the_runs(upstream):
    """Step 4's answer is worked out here from the tour's runs trained outside the app, with the
    same rule (a difference inside two standard errors of the seeds is "about the same")."""
    from ui.views import which_is_higher
    tour = GRPOConfig(iterations=200)
    results = run_many(upstream, seed_configs(tour, 4) + seed_configs(tour.replace(group_size=2), 4)
                       + seed_configs(RLVRConfig(iterations=200), 4))
    g8 = [r.history.true_reward.iloc[-1] for r in results[:4]]
    g2 = [r.history.true_reward.iloc[-1] for r in results[4:8]]
    options = ["G = 2", "G = 8", "about the same"]
    right = options[{"a": 0, "b": 1, "same": 2}[which_is_higher(g2, g8)]]
    at = app("pages/0_Guided_tour.py")
    at.radio(key="tour_4_guess").set_value(right).run()
    at.button(key="tour_4_reveal").click().run()
    ok(at)
    assert [e.value for e in at.success] == [f"Your prediction held: {right}."]
    shown = next(m.value for m in at.markdown if m.value.startswith("Final true reward: G = 2"))
    assert f"**{np.mean(g2):.3f}**" in shown and f"**{np.mean(g8):.3f}**" in shown


@pytest.mark.slow
def test_settings_set_by_a_callback_set_each_widget_one_way(monkeypatch):
    """A loaded configuration (or Reset) writes widget values through st.session_state in a
    callback; the widgets must then come without a default, or Streamlit logs 'created with a
    default value but also had its value set via the Session State API' (checked only with a
    runtime, so one is pretended here)."""
    from streamlit.elements.lib import policies
    warned = []
    at = app("pages/2_GRPO.py", {"grpo_iterations": "40", "grpo_seeds": "2"})
    ok(at)
    monkeypatch.setattr(policies.runtime, "exists", lambda: True)
    monkeypatch.setattr(policies, "_shown_default_value_warning", False)
    monkeypatch.setattr(policies._LOGGER, "warning", lambda msg, *a, **k: warned.append(msg % a))
    at.slider(key="grpo_group_size").set_value(4).run()
    next(b for b in at.button if b.label == "Reset to defaults").click().run(timeout=TIMEOUT)
    ok(at)
    assert not warned, warned
    assert at.slider(key="grpo_group_size").value == 8 and at.number_input(key="grpo_iterations").value == 500


def test_live_run_of_the_sequence_engine_in_pieces_is_the_one_go_run():
    """LiveRun is generic over engines: a SeqTrainer advanced in uneven pieces (across the engine's
    draw chunks) ends bit for bit where train_seq's one go ends, and keeps only results after."""
    import torch
    from grpo_core.sequence import SeqGRPOConfig, SeqTrainer, build_seq_upstream, train_seq
    up = build_seq_upstream()
    configs = seed_configs(SeqGRPOConfig(iterations=70, epochs=2, loss_type="dr_grpo"), 2)
    run = LiveRun(up, configs, key="sequence request", trainer=SeqTrainer(up, configs))
    assert run.key == "sequence request" and run.total == 70
    while not run.finished:
        run.advance(9)
    assert run.done == 70 and not run.stopped and run.trainer is None
    for live, ref in zip(run.results(), train_seq(up, configs)):
        assert live.history.equals(ref.history) and len(live.history) == 70
        assert all(torch.equal(live.state_dict[k], ref.state_dict[k]) for k in ref.state_dict)
        assert torch.equal(live.final_logp, ref.final_logp)
