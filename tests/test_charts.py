"""Chart specs as a reader sees them: the notebook's noisy metric reads as noise around the exact line."""
from __future__ import annotations

import numpy as np
import pandas as pd

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
