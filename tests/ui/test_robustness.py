"""Robustness: bad URL settings, bad uploaded experiments, unsafe loading, divergence, concurrent
identical requests and the result store's bounds.

URL cases run the real pages in AppTest: a bad value must be replaced (clamped, or the default),
said so in one warning line, and reach the widget and the URL; unknown names are left alone.
"""
from __future__ import annotations

from tests.helpers import at_once

import math
import pickle
import re
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from grpo_core import (ConfigError, GRPOConfig, ProblemConfig, RewardModelConfig, SFTConfig, run_many,
                       seed_configs, train_grpo)
from grpo_core.experiment import MAX_EXPERIMENT_BYTES, experiment_from_json
from ui import controls, guard, store
from ui.setting import Setting, g

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 120
CHEAP = {"grpo_iterations": "10", "grpo_seeds": "1"}   # keeps the GRPO page's training short
WIDGET_TYPES = ("slider", "select_slider", "number_input", "selectbox", "multiselect", "checkbox",
                "toggle", "radio")


def run(page: str, query: dict) -> AppTest:
    at = AppTest.from_file(str(ROOT / page), default_timeout=TIMEOUT)
    at.query_params.update(query)
    return at.run(timeout=TIMEOUT)


def widget(at: AppTest, key: str):
    for kind in WIDGET_TYPES:
        found = [w for w in at.get(kind) if w.key == key]
        if found:
            return found[0]
    raise KeyError(key)


def bound_widgets(at: AppTest) -> dict:
    """{key: value} of every widget bound to the URL (bind="query-params") on the page."""
    return {w.key: w.value for kind in WIDGET_TYPES for w in at.get(kind)
            if getattr(w.proto, "query_param_key", "")}


def url(at: AppTest, key: str) -> list[str] | None:
    value = at.query_params.get(key)
    return value if value is None or isinstance(value, list) else [value]


def notices(at: AppTest) -> list[str]:
    return [line for w in at.warning for line in w.value.split("  \n") if line.startswith("URL setting")]


# ---------------------------------------------------------------- URL settings

@pytest.mark.parametrize("query, key, value, fixed, notice", [
    ({"grpo_group_size": "1"}, "grpo_group_size", 2, "2",
     "URL setting grpo_group_size=1 is out of range (2 to 64): using 2."),
    ({"grpo_prompts": "1000"}, "grpo_prompts", 64, "64",
     "URL setting grpo_prompts=1000 is out of range (1 to 64): using 64."),
    ({"grpo_group_size": "abc"}, "grpo_group_size", 8, None,
     "URL setting grpo_group_size=abc is not a number: using the default 8."),
    ({"grpo_kl_coef": "nan"}, "grpo_kl_coef", 0.05, None,
     "URL setting grpo_kl_coef=nan is not a finite number: using the default 0.05."),
    ({"grpo_epochs": "2.5"}, "grpo_epochs", 2, None,
     "URL setting grpo_epochs=2.5 is not a whole number: using the default 2."),
    ({"grpo_lr": "0.0123"}, "grpo_lr", 0.01, "0.01",
     "URL setting grpo_lr=0.0123 is not one of the slider's values: using the nearest, 0.01."),
    ({"grpo_lr": "7"}, "grpo_lr", 1.0, "1", "URL setting grpo_lr=7 is out of range (1e-05 to 1): using 1."),
    ({"grpo_advantage_estimator": "foo"}, "grpo_advantage_estimator", "grpo", None,
     "URL setting grpo_advantage_estimator=foo is not one of grpo, dr_grpo, batch_std, rloo, none: "
     "using the default grpo."),
    ({"grpo_show_runs": "yes"}, "grpo_show_runs", False, None,
     "URL setting grpo_show_runs=yes is not true or false: using the default false."),
    ({"grpo_seeds": "500"}, "grpo_seeds", 64, "64", None),   # CHEAP's seeds=1 is overridden below
])
@pytest.mark.slow
def test_bad_url_value_is_fixed_with_a_notice(query, key, value, fixed, notice):
    query = {**CHEAP, **query}
    if key == "grpo_seeds":
        query["grpo_iterations"] = "2"
        notice = "URL setting grpo_seeds=500 is out of range (1 to 64): using 64."
    at = run("pages/2_GRPO.py", query)
    assert not at.exception, [e.value for e in at.exception]
    assert notices(at) == [notice]
    assert widget(at, key).value == value                       # the corrected value reached the widget
    assert url(at, key) == ([fixed] if fixed else None)        # and the URL (dropped at the default)
    assert len(at.metric) == 4                                  # the page ran to the end


@pytest.mark.slow
def test_good_and_unknown_url_values_are_left_alone():
    at = run("pages/2_GRPO.py", {**CHEAP, "grpo_group_size": "4", "grpo_lr": "0.01", "bogus": "7",
                                 "rm_nonsense": "x", "grpo_kl_estimator": "k3"})
    assert not at.exception and not at.warning, [w.value for w in at.warning]
    assert widget(at, "grpo_group_size").value == 4 and widget(at, "grpo_lr").value == 0.01
    assert widget(at, "grpo_kl_estimator").value == "k3"
    assert url(at, "bogus") == ["7"] and url(at, "rm_nonsense") == ["x"]


@pytest.mark.slow
def test_sweep_page_extra_settings():
    at = run("pages/4_Group_size_sweep.py", {"sweep_iterations": "5", "sweep_seeds": "1",
                                             "sweep_group_sizes": ["2", "3", "8"], "sweep_window": "0",
                                             "sweep_x": "time"})
    assert not at.exception, [e.value for e in at.exception]
    assert notices(at) == [
        "URL setting sweep_group_sizes=2,3,8 has values that are not among 2, 4, 8, 16, 32, 64: using 2, 8.",
        "URL setting sweep_window=0 is out of range (1 to 100): using 1.",
        "URL setting sweep_x=time is not one of iteration, samples generated: using the default iteration."]
    assert widget(at, "sweep_group_sizes").value == [2, 8]
    assert widget(at, "sweep_window").value == 1 and widget(at, "sweep_x").value == "iteration"
    assert url(at, "sweep_group_sizes") == ["2", "8"]


@pytest.mark.slow
def test_plain_option_name_is_rewritten_to_the_widgets_label():
    # Streamlit binds a radio to its label ("samples generated"); the option's name is accepted too.
    at = run("pages/4_Group_size_sweep.py", {"sweep_iterations": "5", "sweep_seeds": "1", "sweep_x": "samples"})
    assert not at.warning and widget(at, "sweep_x").value == "samples"
    assert url(at, "sweep_x") == ["samples generated"]


@pytest.mark.slow
def test_settings_other_pages_use_are_fixed_too():
    # The GRPO page takes Setup's settings from a shared link (ui.live.adopt_params).
    at = run("pages/2_GRPO.py", {**CHEAP, "rm_steps": "999999"})
    assert notices(at) == ["URL setting rm_steps=999999 is out of range (1 to 5000): using 5000."]
    assert at.session_state["rm_steps"] == 5000


@pytest.mark.slow
def test_fallback_when_streamlit_internals_move(monkeypatch):
    def moved(fixes):
        raise AttributeError("no such thing")
    monkeypatch.setattr(guard, "_write_url", moved)
    at = run("pages/2_GRPO.py", {**CHEAP, "grpo_group_size": "100"})
    assert notices(at) == ["URL setting grpo_group_size=100 is out of range (2 to 64): using 64."]
    assert widget(at, "grpo_group_size").value == 64


@pytest.mark.parametrize("setting, raw, fixed", [
    (Setting("k", 8, 2, 64), ["5"], None),
    (Setting("k", 8, 2, 64), ["5.0"], 5),               # the same value, rewritten plainly
    (Setting("k", 8, 2, 64), ["3", "9"], 9),            # repeated: the last one counts
    (Setting("k", 0.5, 0.0, 1.0), ["inf"], 0.5),
    (Setting("k", 0.5, 0.0, 1.0), ["-3"], 0.0),
    (Setting("k", 0.001, 1e-5, 1.0, (0.001, 0.01, 0.1), g), ["1e-2"], 0.01),
    (Setting("k", 0.001, 1e-5, 1.0, (0.001, 0.01, 0.1), g), ["0.03"], 0.01),
    (Setting("k", "a", choices=("a", "b")), ["B"], "b"),
    (Setting("k", (2, 4), choices=(2, 4, 8)), ["8", "8", "x"], (8,)),
    (Setting("k", (2, 4), choices=(2, 4, 8)), [""], None),  # an empty multiselect is valid
    (Setting("k", False), ["TRUE"], None),
])
def test_check_setting(setting, raw, fixed):
    fix = guard.check_setting(setting, raw)
    assert (fix.value if fix else None) == fixed


@pytest.mark.slow
def test_guard_lists_every_url_bound_widget_of_each_page():
    """The declaration a page hands the URL guard (ui.navigation.page) must name exactly the page's
    URL-bound widgets, with their defaults."""
    cheap = {"GRPO": CHEAP, "RLVR": {"rlvr_iterations": "10", "rlvr_seeds": "1"},
             "Group size sweep": {"sweep_iterations": "5", "sweep_seeds": "1"},
             "Gradient noise": {"noise_draws": "64", "noise_group_sizes": ["2", "4"]}}
    pages = {"Setup": "pages/1_Setup.py", "GRPO": "pages/2_GRPO.py", "RLVR": "pages/3_RLVR.py",
             "Group size sweep": "pages/4_Group_size_sweep.py", "Gradient noise": "pages/9_Gradient_noise.py"}
    for title, page in pages.items():
        at = run(page, cheap.get(title, {}))
        assert not at.exception, (title, [e.value for e in at.exception])
        bound = bound_widgets(at)
        declared = at.session_state["page_settings"]
        assert declared.title == title
        settings = {s.key: s for s in declared.url_settings}
        # Adopted from other pages, the presentation flag, and widgets shown only in the live view.
        adopted = {s.key for s in declared.adopted} | {"present", "grpo_chunk", "rlvr_chunk"}
        assert set(bound) <= set(settings), (title, set(bound) - set(settings))
        assert set(settings) - set(bound) <= adopted, (title, set(settings) - set(bound) - adopted)
        for key, value in bound.items():
            if key not in cheap.get(title, {}):
                default = settings[key].default
                assert (tuple(value) if isinstance(value, list) else value) == default, (title, key)


@pytest.mark.slow
def test_reset_puts_every_declared_widget_back_to_its_default():
    at = run("pages/9_Gradient_noise.py", {"noise_draws": "64", "noise_prompts": "4", "noise_reward": "verifiable",
                                           "noise_group_sizes": ["2", "4"]})
    assert not at.exception and not at.warning
    declared = at.session_state["page_settings"]
    assert widget(at, "noise_prompts").value == 4 and widget(at, "noise_draws").value == 64
    next(b for b in at.button if b.label == "Reset to defaults").click().run()
    assert not at.exception
    for s in declared.settings:
        value = widget(at, s.key).value
        assert (tuple(value) if isinstance(value, list) else value) == s.default, s.key
        assert url(at, s.key) is None, s.key                   # a default is left out of the URL


# ---------------------------------------------------------------- limits shown

@pytest.mark.slow
def test_compare_page_states_the_work_of_its_requests():
    at = run("pages/5_Compare.py", {"grpo_iterations": "10", "grpo_seeds": "2", "rlvr_iterations": "10",
                                    "rlvr_seeds": "1"})
    assert not at.exception, [e.value for e in at.exception]
    grpo, rlvr = 2 * 10 * 2 * 8 * 8, 10 * 1 * 8 * 16          # iterations x epochs x prompts x G, summed
    text = [c.value for c in at.caption if "work units" in c.value]
    assert text and text[0].startswith(f"These requests: {grpo:,} and {rlvr:,} of 100,000,000 work units each")


# ---------------------------------------------------------------- uploaded experiments

@pytest.mark.parametrize("text, field", [
    ('{"run": {"lr": "fast"}}', "run.lr"),
    ('{"run": {"iterations": true}}', "run.iterations"),
    ('{"run": {"iterations": 10.5}}', "run.iterations"),
    ('{"run": {"group_size": 1}}', "run.group_size"),
    ('{"run": {"iterations": 1000000000000}}', "run.iterations"),
    ('{"run": {"lr": NaN}}', "run.lr"),
    ('{"run": {"kl_coef": Infinity}}', "run.kl_coef"),
    ('{"run": {"advantage_estimator": "magic"}}', "run.advantage_estimator"),
    ('{"run": {"minibatches": 9, "prompts": 8}}', "run.minibatches"),
    ('{"run": {"learning_rate": 0.1}}', "run.learning_rate"),
    ('{"sft": {"hidden_dim": 100000}}', "sft.hidden_dim"),
    ('{"problem": [1, 2]}', "problem"),
    ('{"kind": "ppo"}', "kind"),
    ('{"seeds": 65}', "seeds"),
    ('{"seeds": "8"}', "seeds"),
    ('{"extra": 1}', "extra"),
    ('[1, 2, 3]', "experiment"),
    ('{"run": {"iterations": 5000, "prompts": 64, "group_size": 64, "epochs": 16}}', "iterations"),
    ('{"run": {', "file"),
    (b'{"kind": "grpo\xff"}', "file"),
    ('{"kind": "grpo", "pad": "' + "x" * MAX_EXPERIMENT_BYTES + '"}', "file"),
])
def test_bad_experiment_file_names_the_field(text, field):
    with pytest.raises(ConfigError) as err:
        experiment_from_json(text)
    assert err.value.field_name == field
    assert str(err.value).startswith(f"{field}: ")


def test_missing_fields_take_their_defaults():
    exp = experiment_from_json('{"kind": "rlvr", "run": {"seed": 3}}')
    assert exp.run.seed == 3 and exp.run.group_size == 16 and exp.sft == SFTConfig()


@pytest.mark.parametrize("text", ["[" * 30_000 + "]" * 30_000,                       # 60 kB, deeply nested
                                  '{"run": {"iterations": 1' + "0" * 5000 + "}}"])   # a 5001-digit integer
def test_pathological_json_is_a_config_error(text):
    assert len(text) <= MAX_EXPERIMENT_BYTES
    with pytest.raises(ConfigError) as err:
        experiment_from_json(text)
    assert err.value.field_name in ("file", "run.iterations")


def _app_sources():
    for folder in ("grpo_core", "ui", "pages", "scripts"):
        yield from sorted((ROOT / folder).rglob("*.py"))
    yield ROOT / "app.py"


def test_nothing_unpickles_or_loads_weights_unsafely():
    """No pickle/marshal/joblib loading anywhere, and torch.load only with weights_only=True."""
    unsafe = re.compile(r"\b(pickle|cPickle|dill|marshal|joblib|shelve)\.(load|loads|open)\(|read_pickle\(|"
                        r"allow_pickle\s*=\s*True")
    torch_load = re.compile(r"torch\.load\(")
    me = Path(__file__).resolve()
    found = []
    for path in [*_app_sources(), *sorted((ROOT / "tests").rglob("*.py"))]:
        if path.resolve() == me:
            continue
        text = path.read_text()
        found += [f"{path.name}: {m.group(0)}" for m in unsafe.finditer(text)]
        for m in torch_load.finditer(text):
            call = text[m.start():text.find(")", m.end()) + 1]
            if "weights_only=True" not in call.replace(" ", ""):
                found.append(f"{path.name}: {call}")
    assert not found


def test_no_global_seeding_or_module_level_models_in_the_app():
    seeding = re.compile(r"(?<![\w.)])(torch\.manual_seed|torch\.random\.manual_seed|torch\.seed|"
                         r"np\.random\.seed|numpy\.random\.seed|random\.seed)\(")
    model = re.compile(r"^\w+\s*=\s*((torch|nn)\.[\w.]+\(|\w*(Net|Model|Generator)\()", re.M)
    found = []
    for path in _app_sources():
        text = path.read_text()
        found += [f"{path.name}: {m.group(0)}" for m in (*seeding.finditer(text), *model.finditer(text))]
    assert not found


# ---------------------------------------------------------------- divergence

def test_non_finite_reward_stops_the_run_and_keeps_it_finite(upstream):
    table = upstream.rm.scores.clone()
    table[:, 3] = math.inf                        # any sample of token 3 gets an infinite reward
    configs = [GRPOConfig(iterations=30, seed=0), GRPOConfig(iterations=30, seed=1, advantage_estimator="rloo")]
    for result in train_grpo(upstream.problem, upstream.sft, table, configs):
        assert result.stopped.startswith("Stopped after"), result.stopped
        assert len(result.history) < 30
        assert np.isfinite(result.history.select_dtypes("number").to_numpy()).all()
        assert torch.isfinite(result.final_logp).all()
        assert all(torch.isfinite(v).all() for v in result.state_dict.values())


# ---------------------------------------------------------------- the result store

def test_identical_concurrent_requests_train_once(upstream):
    """Two threads ask the store for the same runs at once: one trains, the other waits on the
    key's lock and gets a copy of that result; a different request trains."""
    results_store = store.ResultStore()
    configs = seed_configs(GRPOConfig(iterations=5), 2)
    calls, other_is_waiting = [], threading.Event()

    def train():
        calls.append(1)
        # Finish only once the other request is waiting for this key (or fail after 60 s).
        assert other_is_waiting.wait(60), "the second request never waited for the first"
        return run_many(upstream, configs)

    results = at_once(lambda i: results_store.get_or_train("key", train, wait=other_is_waiting.set))
    assert len(calls) == 1
    assert results[0] is not results[1] and results[0][1] is not results[1][1]   # each its own copy ...
    assert results[0][1].history.equals(results[1][1].history)                   # ... of the same result
    assert results_store.get_or_train("key", train) is not results[0]            # stored: no training
    assert len(calls) == 1
    other_is_waiting.set()
    results_store.get_or_train("other key", train)
    assert len(calls) == 2                        # a different request does train


def test_stopped_runs_are_not_stored(upstream):
    results_store = store.ResultStore()
    run = store.LiveRun(upstream, seed_configs(GRPOConfig(iterations=50), 2))
    run.advance(10)
    run.stop()
    assert run.trainer is None                    # a stopped run keeps its results, not its trainer
    assert results_store.get_or_train("key", run.results) is run.results()
    assert "key" not in results_store


def test_store_is_bounded_in_entries_and_bytes(upstream):
    configs = seed_configs(GRPOConfig(iterations=30), 2)
    results = run_many(upstream, configs)
    size = store.result_nbytes(results)
    # The per-request cap the pages check before training bounds what the store then measures.
    assert size <= guard.result_bytes(upstream.configs, configs)

    by_bytes = store.ResultStore(max_entries=10, max_bytes=int(2.5 * size))
    by_count = store.ResultStore(max_entries=3, max_bytes=100 * size)
    for i in range(6):
        for s in (by_bytes, by_count):
            assert s.put(i, results)
            if i == 3:
                assert s.get(2) is not None      # reading 2 makes it the most recently used
        assert len(by_bytes) <= 2 and by_bytes.nbytes <= 2.5 * size
        assert len(by_count) <= 3 and by_count.nbytes == len(by_count) * size
    assert [i for i in range(6) if i in by_bytes] == [4, 5]
    assert [i for i in range(6) if i in by_count] == [2, 4, 5]     # least recently used out first
    assert not store.ResultStore(max_bytes=size - 1).put("big", results)   # larger than the store


def test_store_entries_expire():
    now = [0.0]
    results_store = store.ResultStore(ttl=60, clock=lambda: now[0], nbytes=lambda r: 1)
    results_store.put("key", [1])
    now[0] = 59
    assert results_store.get("key") == [1]
    now[0] = 120
    assert results_store.get("key") is None and len(results_store) == 0 and results_store.nbytes == 0


def test_result_size_estimate_bounds_the_pickled_size(upstream):
    for configs in (seed_configs(GRPOConfig(iterations=40), 16), seed_configs(GRPOConfig(iterations=600), 2)):
        actual = len(pickle.dumps(run_many(upstream, configs)))
        estimate = guard.result_bytes(upstream.configs, configs)
        assert actual <= estimate <= 1.5 * actual


def test_the_largest_request_of_a_page_fits_and_a_larger_one_is_refused():
    big = (ProblemConfig(), SFTConfig(hidden_dim=256), RewardModelConfig())
    guard.check_result_size(big, seed_configs(GRPOConfig(iterations=5000), 64))   # the GRPO page's largest
    with pytest.raises(ConfigError, match="MiB"):
        guard.check_result_size(big, [GRPOConfig(iterations=5000, group_size=g, seed=s)
                                      for g in (2, 4, 8, 16, 32, 64) for s in range(64)])


def test_key_lock_is_shared_per_key_and_released_when_unused():
    import gc

    results_store = store.ResultStore()
    key = lambda seed: results_store.key(("problem", "sft", "rm"), [GRPOConfig(seed=seed)])
    a = results_store.lock(key(1))
    assert results_store.lock(key(1)) is a            # same runs: same lock
    assert results_store.lock(key(2)) is not a        # other runs: another lock
    n = len(results_store._locks)
    del a
    gc.collect()
    assert len(results_store._locks) < n              # the table keeps only keys in use


def test_a_bad_combination_of_settings_is_one_line():
    def page():
        from grpo_core import GRPOConfig
        from ui import controls
        controls.combine(GRPOConfig().replace, group_size=1)
        import streamlit as st
        st.write("not reached")

    at = AppTest.from_function(page, default_timeout=TIMEOUT).run()
    assert not at.exception
    assert len(at.error) == 1 and at.error[0].value.startswith("**Invalid setting.** group size G:")
    assert not at.markdown


# ---------------------------------------------------------------- hand-edited URLs

@pytest.mark.slow
@pytest.mark.parametrize("page", ["pages/2_GRPO.py", "pages/5_Compare.py"])
@pytest.mark.parametrize("key,value", [("problem_seed", "inf"), ("sft_epochs", "9" * 40),
                                       ("grpo_lr", "nan"), ("rlvr_group_size", "abc"),
                                       ("grpo_seed", str(2**31 - 1))])   # see test_the_largest_seed_runs
def test_hand_edited_urls_never_raise(page, key, value):
    """Settings of other pages arrive through a shared link too; garbage there must not crash."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / page), default_timeout=300)
    at.query_params[key] = value
    at.run()
    assert not at.exception


MAX_SEED_PAGES = {"pages/2_GRPO.py": "grpo", "pages/3_RLVR.py": "rlvr", "pages/4_Group_size_sweep.py": "sweep",
                  "pages/6_Reward_hacking.py": "hack", "pages/7_Zero_signal_groups.py": "zero",
                  "pages/8_Pass_at_k.py": "passk"}


@pytest.mark.slow
@pytest.mark.parametrize("page", list(MAX_SEED_PAGES))
@pytest.mark.parametrize("seeds", ["default", "max"])
def test_the_largest_seed_runs(page, seeds):
    """?<prefix>_seed=2147483647 (the largest seed) with the default and the largest number of
    seeds: the page runs to its end, no error (short runs keep this test quick)."""
    prefix = MAX_SEED_PAGES[page]
    query = {f"{prefix}_seed": str(2**31 - 1), f"{prefix}_iterations": "5"}
    if seeds == "max":
        query[f"{prefix}_seeds"] = str(controls.SEEDS_MAX)
    at = run(page, query)
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert not notices(at)                        # the URL was valid as it was
    assert at.get("vega_lite_chart")
