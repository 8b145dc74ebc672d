"""The Landscape page under AppTest (a small landscape): it renders without exception, and its
computed sentences name the numbers and verdicts of the results it shows."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from grpo_core.methods.landscape import landscape, measured_table, responses_to_gain
from ui import landscape as land

ROOT = Path(__file__).resolve().parents[2]
PAGE = str(ROOT / "pages" / "14_Landscape.py")
METHODS, SEEDS, RESPONSES = ["rloo", "grpo", "rlvr", "ppo_rlvr", "dpo"], 2, 1000   # in the page's order


def test_responses_to_gain():
    h = [pd.DataFrame({"responses": [10, 20, 30, 40], "true_reward": [0.5, 0.8, 0.97, 1.0]}),
         pd.DataFrame({"responses": [10, 20, 30, 40], "true_reward": [0.5, 0.6, 0.85, 1.0]})]
    # mean: 0.5, 0.7, 0.91, 1.0; from sft 0.0 the gain is 1.0, 90% of it is first reached at 30
    assert responses_to_gain(h, 0.0) == 30
    assert math.isnan(responses_to_gain(h, 2.0))            # no gain over SFT: no answer


@pytest.fixture(scope="module")
def page(upstream):
    at = AppTest.from_file(PAGE, default_timeout=600)
    at.session_state["land_methods"] = METHODS
    at.session_state["land_seeds"] = SEEDS
    at.session_state["land_responses"] = RESPONSES
    at.run()
    res = landscape(METHODS, SEEDS, RESPONSES, up=upstream)
    return at, res, measured_table(res)


def test_page_renders(page):
    at, res, table = page
    assert not at.exception, at.exception
    assert not at.error
    shown = at.dataframe[0].value
    assert list(shown["method"]) == list(table["label"])
    np.testing.assert_allclose(shown["final true reward"], table["true_reward"], rtol=1e-6)
    needs = at.dataframe[1].value.set_index("method")
    assert list(needs.index) == list(table["label"])
    assert needs.loc["PPO + RLVR", "networks"] == 3 and needs.loc["GRPO", "networks"] == 3
    assert needs.loc["DPO", "reward queries / iteration"] == 0 and needs.loc["GRPO", "responses / iteration"] == 64
    assert len(at.dataframe) == 2 and len(at.table) == 2      # when to use what, the KL placements


def test_winner_sentence_matches_the_results(page):
    at, res, table = page
    top = table.sort_values("true_reward").iloc[-1]
    second = table.sort_values("true_reward").iloc[-2]
    info = at.info[0].value
    assert info.startswith(f"**{top.label}** ends highest")
    assert f"{top.true_reward:.3f}" in info and f"{top.true_reward - second.true_reward:.3f} above {second.label}" in info


def test_when_to_use_rows_match_the_results(page):
    at, res, table = page
    measured = at.table[0].value["measured here"].to_dict()
    by = table.set_index("method")
    dpo, grpo, rlvr = by.loc["dpo"], by.loc["grpo"], by.loc["rlvr"]
    offline = measured["Offline preference pairs only"]
    assert f"{dpo.true_reward:.3f}" in offline and f"{grpo.true_reward:.3f}" in offline
    assert ("does not hold" in offline) == (grpo.true_reward > dpo.true_reward)
    verifier = measured["A verifier is available"]     # GRPO against PPO, both on the verifier
    ppo_rlvr = by.loc["ppo_rlvr"]
    assert (f"GRPO + RLVR ends at {rlvr.true_reward:.3f} and PPO + RLVR at {ppo_rlvr.true_reward:.3f} "
            f"({rlvr.true_reward - ppo_rlvr.true_reward:+.3f}), with 2 networks instead of 3") in verifier
    assert ("does not hold" in verifier) == (rlvr.true_reward <= ppo_rlvr.true_reward)
    fast = table[table.online].sort_values("to_90").iloc[0]
    assert f"{fast.label} reaches 90% of its final gain first, after {fast.to_90:,.0f} responses" in \
        measured["Limited compute (responses generated)"]


def test_kl_plane_sentence_matches_the_optimum(page, upstream):
    at, res, table = page
    front = land.frontier(upstream)
    gaps = {row.label: land.optimum_at(front, "true reward", row.kl) - row.true_reward for row in table.itertuples()}
    assert all(g > -1e-6 for g in gaps.values())       # no policy beats the exact optimum at its KL
    closest = min(gaps, key=gaps.get)
    text = [m.value for m in at.markdown if "ends closest" in m.value][0]
    assert f"**{closest}** ends closest to it: {gaps[closest]:.3f} below" in text
    above = [row.label for row in table.itertuples()
             if row.true_reward > land.optimum_at(front, "reward model", row.kl)]
    assert f"{len(above)} of {len(table)} methods end above it" in text


def test_kl_placements_name_their_targets(page, upstream):
    at, *_ = page
    fixed = at.table[1].value
    assert fixed.loc["k1_reward", "its expected gradient is that of"] == "KL(pi || pi_ref)"
    assert fixed.loc["exact_loss", "its expected gradient is that of"] == "KL(pi || pi_ref)"
    assert fixed.loc["k3_loss", "its expected gradient is that of"] == "KL(pi_ref || pi)"
    assert fixed.loc["k1_loss", "its expected gradient is that of"] == "nothing (zero on average)"
    text = [m.value for m in at.markdown if m.value.startswith("k3 in the loss")][0]
    assert f"true reward {fixed.loc['k3_loss', 'true reward there']}" in text
    assert float(fixed.loc["k3_loss", "true reward there"]) != float(fixed.loc["k1_reward", "true reward there"])


def test_reverse_kl_optimum_is_a_fixed_point(upstream):
    """The closed-form reverse-KL optimum is where k3-in-the-loss's exact expected gradient of
    -E[r] + beta KL-term vanishes."""
    import torch
    from grpo_core.methods import kl
    ref, r, beta = upstream.sft.logp.double(), upstream.rm.scores.double(), 0.05
    logp = kl.reverse_kl_optimum(r, ref, beta)
    probs = logp.exp()
    grad = -probs * (r - (probs * r).sum(-1, keepdim=True)) + beta * kl.expected_gradient(logp, ref, "k3_loss")
    assert float(grad.abs().max()) < 1e-9
    forward = torch.log_softmax(ref + r / beta, -1)
    assert float((forward.exp() - probs).abs().sum(-1).mean()) > 1e-3     # a different policy


def test_ppo_rows_match_the_results(upstream):
    """With PPO trained, the quality row compares PPO with GRPO; the verifier row asks for PPO on
    the verifier (PPO on the reward model is not the alternative to RLVR)."""
    methods = ["ppo", "grpo", "rlvr"]
    at = AppTest.from_file(PAGE, default_timeout=600)
    at.session_state["land_methods"] = methods
    at.session_state["land_seeds"] = 2
    at.session_state["land_responses"] = 1000
    at.run()
    assert not at.exception, at.exception
    table = measured_table(landscape(methods, 2, 1000, up=upstream)).set_index("method")
    ppo, grpo, rlvr = table.loc["ppo"], table.loc["grpo"], table.loc["rlvr"]
    measured = at.table[0].value["measured here"].to_dict()
    assert "Add GRPO + RLVR and PPO + RLVR" in measured["A verifier is available"]   # not PPO on the RM
    quality = measured["Maximum quality, resources available"]
    assert f"PPO ends at {ppo.true_reward:.3f} with 4 networks, GRPO at {grpo.true_reward:.3f} with 3" in quality
    assert ("does not hold" in quality) == (ppo.true_reward <= grpo.true_reward)
    assert "Add DPO and GRPO" in measured["Offline preference pairs only"]


def test_bad_url_settings_get_a_notice():
    at = AppTest.from_file(PAGE, default_timeout=600)
    at.query_params["land_methods"] = ["grpo", "bogus"]
    at.query_params["land_seeds"] = "500"
    at.query_params["land_responses"] = "1000"
    at.run()
    assert not at.exception, at.exception
    notice = at.warning[0].value
    assert "land_methods" in notice and "land_seeds=500 is out of range" in notice
    assert at.session_state["land_methods"] == ["grpo"] and at.session_state["land_seeds"] == 64


def test_a_rerun_with_the_same_settings_trains_and_builds_nothing(page, monkeypatch):
    """The second run of the same settings draws the view kept from the first: no result is
    fetched or copied, no table or chart rebuilt; it shows the same table and charts."""
    at, *_ = page
    before = at.dataframe[0].value
    n_charts = len(at.get("vega_lite_chart"))
    monkeypatch.setattr(land, "train", lambda *a, **k: pytest.fail("fetched the result again"))
    monkeypatch.setattr(land, "build_view", lambda *a, **k: pytest.fail("rebuilt the view"))
    at.run()
    assert not at.exception, at.exception
    pd.testing.assert_frame_equal(at.dataframe[0].value, before)
    assert len(at.get("vega_lite_chart")) == n_charts == 5     # curves (2 online, 2 DPO) and the plane


def test_views_are_keyed_on_the_settings_and_bounded(upstream, monkeypatch):
    from collections import OrderedDict
    monkeypatch.setattr(land, "VIEWS", OrderedDict())
    monkeypatch.setattr(land, "VIEW_ENTRIES", 2)
    built = []
    monkeypatch.setattr(land, "train", lambda up, methods, seeds, responses: (tuple(methods), seeds, responses))
    monkeypatch.setattr(land, "build_view", lambda res, up: built.append(res) or object())
    first = land.view(upstream, ["rlvr", "grpo"], 2, 1000)
    assert land.view(upstream, ["grpo", "rlvr"], 2, 1000) is first     # the same settings, any order
    land.view(upstream, ["grpo"], 2, 1000)
    land.view(upstream, ["grpo"], 3, 1000)
    assert len(land.VIEWS) == 2 and len(built) == 3
    land.view(upstream, ["grpo", "rlvr"], 2, 1000)                    # the oldest was dropped
    assert len(built) == 4
