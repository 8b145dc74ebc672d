"""The Hyperparameter map page: its chart builder and cell links (ui/maps.py), and the page under
AppTest (small maps: the default one is for the browser and the bench)."""
from __future__ import annotations

from tests.helpers import at_once

import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from streamlit.testing.v1 import AppTest

from grpo_core import GRPOConfig, ProblemConfig, RewardModelConfig, RLVRConfig, SFTConfig
from grpo_core.grid import GridError, make_grid, parse_axis, run_grid
from ui import maps

ROOT = Path(__file__).resolve().parents[2]
PAGE = str(ROOT / "pages" / "15_Hyperparameter_map.py")


@pytest.fixture(scope="module")
def small(upstream):
    grid = make_grid("grpo", parse_axis("lr=1e-3:1e-1:3:log"), parse_axis("kl_coef=0:0.5:2"), 2,
                     GRPOConfig(clip_eps=0.3), iterations=20)
    return run_grid(grid, up=upstream)


def test_cell_url_opens_the_cell_on_its_page():
    grid = make_grid("rlvr", parse_axis("lr=1e-3:1e-2:2:log", RLVRConfig),
                     parse_axis("group_size=4:8:2", RLVRConfig), 3, RLVRConfig(epochs=2),
                     iterations=40, problem=ProblemConfig(seed=7))
    url = urlsplit(maps.cell_url(grid, 0.01, 8))
    assert url.path == "RLVR"
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    # the cell's settings, the page's other non-default ones, its seeds and the upstream's
    assert query == {"rlvr_lr": "0.01", "rlvr_group_size": "8", "rlvr_epochs": "2",
                     "rlvr_iterations": "40", "rlvr_seeds": "3", "problem_seed": "7"}
    # a setting at its default is left out (the page shows its default)
    default_cell = parse_qs(urlsplit(maps.cell_url(grid, 1e-3, 4)).query)
    assert "rlvr_lr" not in default_cell and default_cell["rlvr_group_size"] == ["4"]


def test_heatmap_spec(small):
    spec = maps.heatmap_chart(small, "true_reward", current=GRPOConfig(lr=0.012, kl_coef=0.4)).to_dict()
    rect, outline, marker = spec["layer"]
    assert rect["mark"]["type"] == "rect" and rect["encoding"]["href"]["field"] == "url"
    assert rect["encoding"]["color"]["field"] == "mean"
    tips = {t["field"] for t in rect["encoding"]["tooltip"]}
    assert {"mean", "p10", "p90", "runs"} <= tips                  # the seeds' spread on hover
    assert outline["transform"] == [{"filter": "datum.beats_sft"}] and outline["mark"]["fill"] is None
    rows = [r for d in spec["datasets"].values() for r in d]
    cells = [r for r in rows if "url" in r]
    assert len(cells) == 6
    beats = {(r["x"], r["y"]) for r in cells if r["beats_sft"]}
    assert beats == {(x, y) for x, y, b in zip(small.cells.x, small.cells.y, small.cells.beats_sft) if b}
    assert all(r["url"].startswith("GRPO?") and "grpo_clip_eps=0.3" in r["url"] for r in cells)
    # the marker sits on the cell nearest the current settings: lr 0.01 (log-nearest to 0.012), kl 0.5
    (mark,) = [r for r in rows if r.get("what") == "current page settings"]
    assert (mark["x_label"], mark["y_label"]) == ("0.01", "0.5")
    # the x axis follows the grid's order, y has its largest value on top
    assert rect["encoding"]["x"]["sort"] == ["0.001", "0.01", "0.1"]
    assert rect["encoding"]["y"]["sort"] == ["0.5", "0"]
    # settings outside the map: no marker
    assert len(maps.heatmap_chart(small, "kl", current=GRPOConfig(lr=0.5)).to_dict()["layer"]) == 2


def test_slider_values_are_spread_over_the_range():
    choices = [1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.2]
    assert maps.slider_values(1e-4, 0.1, 10, choices) == (1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3,
                                                           1e-2, 2e-2, 5e-2, 0.1)
    assert maps.slider_values(1e-4, 0.1, 4, choices) == (1e-4, 1e-3, 1e-2, 0.1)
    assert maps.slider_values(1e-4, 0.1, 16, choices) == maps.slider_values(1e-4, 0.1, 10, choices)
    assert maps.slider_values(3e-4, 4e-4, 2, choices) == (2e-4,)   # none inside: the one nearest lo


def test_build_map_checks_the_work_cap():
    big = maps.MapChoice("grpo", maps.AxisChoice("lr", 1e-4, 1e-1, 16, True),
                         maps.AxisChoice("kl_coef", 0.0, 0.5, 16, False), 16, 5000, "true_reward")
    with pytest.raises(GridError, match="over the limit"):
        maps.build_map(big, GRPOConfig(), (ProblemConfig(), SFTConfig(), RewardModelConfig()))


SMALL_STATE = {"map_x_count_lr": 2, "map_y_count_kl_coef": 2, "map_seeds": 2, "map_iterations": 10}


def run_page(state: dict, query: dict | None = None) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.query_params.update(query or {})
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def test_page_draws_a_small_map():
    at = run_page(SMALL_STATE)
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    (chart,) = at.get("vega_lite_chart")
    spec = json.loads(chart.proto.spec)
    assert any("href" in layer.get("encoding", {}) for layer in spec["layer"])
    assert "2 × 2 cells × 2 seeds = 8 runs" in " ".join(c.value for c in at.caption)
    # lr's log axis takes the GRPO page's slider values (1e-4 and 0.1 are on it), kl_coef its steps
    table = at.dataframe[0].value
    assert sorted(table["lr"].unique()) == [1e-4, 0.1]
    assert sorted(table["kl_coef"].unique()) == [0.0, 0.5]
    # colouring by another metric reuses the cached map
    at.selectbox(key="map_metric").set_value("kl").run()
    assert not at.exception and len(at.get("vega_lite_chart")) == 1


def test_page_takes_the_method_settings_from_a_shared_link():
    at = run_page(SMALL_STATE, {"grpo_clip_eps": "0.3", "grpo_lr": "0.01", "problem_seed": "7"})
    assert not at.exception and not at.error
    rows = chart_rows(at.get("vega_lite_chart")[0])
    cells = [r for r in rows if r.get("url")]
    assert len(cells) == 4
    assert all("grpo_clip_eps=0.3" in r["url"] and "problem_seed=7" in r["url"] for r in cells)
    # the marker: the link's lr 0.01 lies inside the lr axis (1e-4 to 0.1), kl_coef 0.05 too
    assert any(r.get("what") == "current page settings" for r in rows)


def chart_rows(chart) -> list[dict]:
    """The rows of every dataset Streamlit sent with a chart (Arrow IPC streams)."""
    import pyarrow as pa
    return [row for ds in chart.proto.datasets
            for row in pa.ipc.open_stream(ds.data.data).read_all().to_pylist()]


def test_page_bad_range_is_an_error_not_a_traceback():
    at = run_page({**SMALL_STATE, "map_x_lo_lr": 0.05, "map_x_hi_lr": 0.001})
    assert not at.exception
    assert "the low end 0.05 is above the high end 0.001" in at.error[0].value


# ---------------------------------------------------------------- the page's declared settings

def url_notices(at: AppTest) -> list[str]:
    return [line for w in at.warning for line in w.value.split("  \n") if line.startswith("URL setting")]


def test_page_declares_its_url_bound_widgets():
    """The declaration the URL guard and 'Reset to defaults' read names every URL-bound widget."""
    at = run_page(SMALL_STATE)
    assert not at.exception, [e.value for e in at.exception]
    declared = at.session_state["page_settings"]
    assert declared.title == "Hyperparameter map"
    keys = {s.key for s in declared.url_settings}
    bound = {w.key for kind in ("slider", "number_input", "selectbox", "checkbox")
             for w in at.get(kind) if getattr(w.proto, "query_param_key", "")}
    assert bound and bound <= keys, bound - keys
    assert {"map_method", "map_x_field", "map_x_lo_lr", "map_y_hi_kl_coef", "map_seeds",
            "map_iterations", "map_metric", "grpo_lr", "rlvr_group_size", "problem_seed"} <= keys
    assert any(b.label == "Reset to defaults" for b in at.button)


@pytest.mark.parametrize("query, notice", [
    ({"map_x_lo_lr": "7"}, "URL setting map_x_lo_lr=7 is out of range"),
    ({"map_seeds": "99"}, "URL setting map_seeds=99 is out of range"),
    ({"map_metric": "bogus"}, "URL setting map_metric=bogus is not one of"),
    ({"map_method": "ppo"}, "URL setting map_method=ppo is not one of"),
    ({"map_y_count_kl_coef": "abc"}, "URL setting map_y_count_kl_coef=abc is not a number"),
    ({"grpo_lr": "nan"}, "URL setting grpo_lr=nan is not a finite number"),    # adopted from GRPO
    ({"problem_seed": "inf"}, "URL setting problem_seed=inf is not a finite number"),   # from Setup
])
def test_hand_edited_map_url_gets_a_notice_not_a_crash(query, notice):
    at = run_page({k: v for k, v in SMALL_STATE.items() if k not in query}, query)
    assert not at.exception, [e.value for e in at.exception]
    assert any(line.startswith(notice) for line in url_notices(at)), url_notices(at)


AXIS_FIELDS = maps.AXIS_FIELDS


@pytest.mark.parametrize("x", AXIS_FIELDS)
def test_every_widget_at_its_extremes_is_one_line(x):
    """Both axes over their whole range with the most values, the most seeds per cell and the
    most iterations: the page says in one line what is too much (the work cap, or a cell whose
    setting the config refuses); it never raises."""
    y = "lr" if x != "lr" else "kl_coef"
    query = {"map_x_field": x, "map_y_field": y, "map_seeds": str(maps.MAX_SEEDS), "map_iterations": "5000"}
    page = maps.page_settings()
    for axis, field in (("x", x), ("y", y)):
        lo, hi = page[f"map_{axis}_lo_{field}"], page[f"map_{axis}_hi_{field}"]
        query.update({f"map_{axis}_lo_{field}": str(lo.lo), f"map_{axis}_hi_{field}": str(hi.hi),
                      f"map_{axis}_count_{field}": str(maps.MAX_AXIS_VALUES),
                      f"map_{axis}_log_{field}": "false"})
    at = run_page({}, query)
    assert not at.exception, [e.value for e in at.exception]
    assert not url_notices(at)                          # every value was a valid widget value
    (error,) = at.error
    assert "\n" not in error.value.strip(), error.value
    if x in ("lr", "kl_coef"):       # every cell is a valid run: the map as a whole is too much work
        assert "over the limit" in error.value, error.value
    assert not at.get("vega_lite_chart")


def test_identical_concurrent_maps_train_once(upstream, monkeypatch):
    """Two sessions ask for the same map at once: one trains it, the other waits on the map's
    lock and gets that result; a stopped map is not kept."""
    import threading

    from ui import store

    waiting, calls = threading.Event(), []

    class Spy(store.ResultStore):
        def get_or_train(self, key, train, wait=None, keep=store.finished):
            def spy_wait():
                waiting.set()
                if wait:
                    wait()
            return super().get_or_train(key, train, spy_wait, keep)

    real_run_grid = maps.run_grid

    def counting_run_grid(*args, **kwargs):
        calls.append(1)
        assert waiting.wait(60), "the second request never waited for the first"
        return real_run_grid(*args, **kwargs)

    monkeypatch.setattr(maps, "MAPS", Spy(max_entries=4, max_bytes=2**24, nbytes=maps.map_nbytes))
    monkeypatch.setattr(maps, "run_grid", counting_run_grid)
    grid = make_grid("grpo", parse_axis("lr=1e-3:1e-2:2:log"), parse_axis("kl_coef=0.1:0.1:1"), 1,
                     iterations=5)
    results = at_once(lambda i: maps.train_map(grid, upstream, key=f"map{i}"))
    assert len(calls) == 1
    assert results[0] is not results[1] and results[0].cells.equals(results[1].cells)
    assert len(results[0].cells) == 2 and not results[0].stopped
    assert maps.train_map(grid, upstream).cells.equals(results[0].cells) and len(calls) == 1
