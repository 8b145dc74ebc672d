"""Chart specs as a reader sees them: the notebook's noisy metric reads as noise around the exact line."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ui import charts


def history(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    it = np.arange(n)
    exact = 0.03 * (1 - np.exp(-it / 50))
    return pd.DataFrame({"iteration": it, "rm_reward": exact,
                         "first_group_reward": exact + rng.normal(0, 0.05, n)})


def layers(spec: dict) -> list[dict]:
    return spec.get("layer", [spec])


def test_noisy_metric_is_a_band_and_a_rolling_mean_not_a_wall_of_lines():
    hists = [history(500, s) for s in range(4)]
    spec = charts.band_chart.__wrapped__({"GRPO": hists}, "rm_reward", "RM", faint=("one group", hists[0],
                                                                                    "first_group_reward"))
    spec = spec if isinstance(spec, dict) else spec.to_dict(validate=False)
    marks = [(l["mark"]["type"] if isinstance(l["mark"], dict) else l["mark"]) for l in layers(spec)]
    faint = [l for l in layers(spec) if l.get("encoding", {}).get("y", {}).get("field") in ("lo", "mean")
             and "strokeDash" in (l["mark"] if isinstance(l["mark"], dict) else {})]
    assert faint, marks                                      # the rolling mean, dashed
    # No layer draws the raw noisy column point to point, and the y range holds the noise band.
    assert not any(l.get("encoding", {}).get("y", {}).get("field") == "first_group_reward" for l in layers(spec))
    band = charts.faint_band(hists[0], "first_group_reward")
    lo, hi = spec["layer"][0]["encoding"]["y"]["scale"]["domain"]
    assert lo <= band.lo.min() and hi >= band.hi.max()
    assert charts.faint_window(500) == 20 and len(band) == 500


def test_an_all_zero_clip_fraction_is_said_in_words():
    from ui.views import zero_or_chart
    flat = pd.DataFrame({"iteration": range(50), "clip_frac_low": 0.0})
    text = zero_or_chart({"GRPO": [flat, flat]}, "clip_frac_low", "Clipped low", y_title="fraction")
    assert text == "**Clipped low**: 0 at every iteration of all 2 runs: no sample was clipped this way."
    some = flat.assign(clip_frac_low=[0.0] * 49 + [0.01])
    assert isinstance(zero_or_chart({"GRPO": [flat, some]}, "clip_frac_low", "Clipped low"), dict)


def test_coinciding_estimators_are_found_from_the_values():
    from ui.lab import coinciding
    df = pd.DataFrame([{"group_size": g, "estimator": e, "cosine": v}
                       for g in (2, 4) for e, v in (("grpo", 0.1 * g), ("dr_grpo", 0.3), ("rloo", 0.3),
                                                    ("none", 0.05 * g))])
    assert coinciding(df, ["grpo", "dr_grpo", "rloo", "none"]) == [["dr_grpo", "rloo"]]


def test_a_live_charts_y_range_grows_a_few_times_and_never_shrinks():
    """A curve rising from 0 to 1 over 200 frames: the held range always contains the curve so
    far, never shrinks, changes only a handful of times, and stays at or above 0 (non-negative
    values such as KL)."""
    from ui.charts import grow_range
    curve = np.linspace(0.0, 1.0, 200) ** 0.5
    held, changes = None, 0
    for t in range(1, len(curve) + 1):
        new = grow_range(held, curve[:t])
        if held is not None:
            assert new[0] <= held[0] and new[1] >= held[1]          # never shrinks
        assert new[0] <= curve[:t].min() and curve[:t].max() <= new[1]
        changes += new != held
        held = new
    assert held[0] == 0.0
    assert changes <= 12, changes
    assert grow_range((0.2, 0.4), [0.25, 0.3]) == (0.2, 0.4)       # inside: the frame stays put


def test_compare_whiskers_are_drawn_dark_and_thick_over_the_seeds_spread():
    """Compare's min-max whiskers: a dark rule at least 3 px wide from each method's min to its max
    over seeds (they were 1 px and grey, barely visible against the bars)."""
    table = pd.DataFrame({"context": [0, 1], "sft": [0.4, 0.5], "best": [0.7, 0.8],
                          "grpo": [0.5, 0.6], "grpo_min": [0.45, 0.55], "grpo_max": [0.55, 0.66]})
    spec = charts.compare_chart(table, {"grpo": "GRPO"})
    spec = spec if isinstance(spec, dict) else spec.to_dict(validate=False)
    rules = [layer for layer in spec["layer"] if (layer["mark"] if isinstance(layer["mark"], str)
                                                  else layer["mark"]["type"]) == "rule"]
    assert len(rules) == 1
    mark, enc = rules[0]["mark"], rules[0]["encoding"]
    assert mark["strokeWidth"] >= 3 and mark["color"] == "#111"
    assert enc["y"]["field"] == "lo" and enc["y2"]["field"] == "hi"
    data = spec["datasets"][next(iter(spec["datasets"]))]
    grpo = [row for row in data if row["policy"] == "GRPO"]
    assert [(r["lo"], r["hi"]) for r in grpo] == [(0.45, 0.55), (0.55, 0.66)]


def test_arrow_datasets_send_the_same_rows_and_leave_the_spec_alone():
    """A kept spec's datasets converted once to Arrow (what st.vega_lite_chart sends) hold the same
    rows; the original spec is not changed, and converting again changes nothing."""
    import pyarrow as pa
    h = [pd.DataFrame({"iteration": [1, 2, 3], "true_reward": [0.5, 0.6, 0.7 + 0.01 * s]}) for s in range(3)]
    spec = charts.band_chart({"GRPO": h}, "true_reward", "t", rules={"SFT": 0.5})
    before = {name: list(rows) for name, rows in spec["datasets"].items()}
    ready = charts.arrow_datasets(spec)
    assert set(ready["datasets"]) == set(before) and spec["datasets"] == before
    for name, rows in before.items():
        assert isinstance(ready["datasets"][name], bytes)
        got = pa.ipc.open_stream(ready["datasets"][name]).read_all().to_pylist()
        assert len(got) == len(rows) and all(pytest.approx(r) == g for r, g in zip(rows, got))
    assert charts.arrow_datasets(ready) == ready
