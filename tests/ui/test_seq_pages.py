"""The sequence lab pages (GRPO on sequences, Length bias, ...) run headless with AppTest.

Each page must raise nothing, draw its charts and tables, take its settings from the URL, and turn
a bad combination of settings into one st.error line. Sentences that state a number or a verdict
are checked against the results the page computed.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from streamlit.testing.v1 import AppTest

from . import test_app as app_test

TIMEOUT = 180
pytestmark = pytest.mark.slow     # every test here runs pages


def run(page: str, query: dict | None = None, state: dict | None = None) -> AppTest:
    return app_test.run(page, query, state, timeout=TIMEOUT)


charts = app_test.charts


def ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


SEQ = "pages/10_GRPO_on_sequences.py"


def test_sequence_grpo_defaults_show_exact_curves_and_text():
    at = run(SEQ)
    ok(at)
    assert len(charts(at)) == 7 + 6           # exact curves, then the batch diagnostics
    assert at.slider(key="seq_seeds").value == 8
    assert at.metric[0].label == "final P(correct) (mean of 8)"
    top, drawn, per_context, code_lines = (d.value for d in at.dataframe)
    assert "the line your settings take" in code_lines
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
    trl = at.code[-1].value             # the TRL export: the page's settings, as TRL arguments
    assert all(arg in trl for arg in ("loss_type='dr_grpo'", "mask_truncated_completions=True",
                                      "max_completion_length=4", "max_steps=30"))


@pytest.mark.parametrize("state, field", [
    ({"seq_loss_type": "luspo"}, "importance_sampling_level"),          # luspo needs sequence ratios
    ({"seq_iterations": 5000, "seq_epochs": 16, "seq_seeds": 64}, "iterations"),   # over the work cap
])
def test_sequence_grpo_bad_settings_give_one_line(state, field):
    at = run(SEQ, state=state)
    assert not at.exception
    assert len(at.error) == 1 and "Invalid setting" in at.error[0].value and field in at.error[0].value
    assert not charts(at)


def live_status(at: AppTest) -> str:
    return next(m.value for m in at.markdown if m.value.startswith("Live iteration"))


def live_iteration(at: AppTest) -> int:
    return int(live_status(at).split("**")[1])


def live_charts(at: AppTest, total: int) -> list[dict]:
    """The live curves: their x axis is the whole run (0 to total) from the first frame."""
    specs = [json.loads(c.proto.spec) for c in charts(at)]
    return [s for s in specs if any(l.get("encoding", {}).get("x", {}).get("scale", {}).get("domain")
                                    == [0, total] for l in s.get("layer", []))]


def assert_same_runs(a, b) -> None:
    """Bit for bit: every history value (NaN where the other has NaN), weights and final policy."""
    assert [r.config for r in a] == [r.config for r in b]
    for x, y in zip(a, b):
        assert x.history.equals(y.history) and x.per_context.equals(y.per_context)
        assert x.state_dict.keys() == y.state_dict.keys() and all(torch.equal(x.state_dict[k], y.state_dict[k]) for k in x.state_dict)
        assert torch.equal(x.final_logp, y.final_logp)
        assert pd.Series(x.final).equals(pd.Series(y.final))


def test_sequence_live_training_steps_plays_and_ends_as_the_batch_run(monkeypatch):
    """Watch it train on the sequence page: nothing is trained until Step or Play; Step trains one
    piece and draws the live curves; Play trains a piece per rerun to the end; the finished live
    run is stored, and it is bit for bit the run the page trains without the live view."""
    from ui import store
    monkeypatch.setattr(store, "STORE", store.ResultStore())      # nothing cached by other tests
    total = 30
    at = run(SEQ, state={"seq_iterations": total, "seq_seeds": 2, "seq_loss_type": "dr_grpo",
                         "seq_watch": True})
    ok(at)
    assert live_iteration(at) == 0 and "ready" in live_status(at)
    assert not charts(at) and not at.metric              # the page waits for the live run
    assert any("Press Play" in i.value for i in at.info)
    assert len(store.STORE) == 0                          # nothing trained yet

    at.button(key="seq_step").click().run()
    ok(at)
    assert live_iteration(at) == 10 and "paused" in live_status(at)
    held = at.session_state["held_runs"]["GRPO on sequences"]["run"]
    assert held.done == 10 and [len(r.history) for r in held.results()] == [10, 10]
    live = live_charts(at, total)
    assert len(live) == len(charts(at)) == 7             # the seven exact curves, and nothing else yet
    titles = " ".join(json.dumps(s.get("title")) for s in live)
    assert "E[length | wrong]" in titles and "P(truncated at L)" in titles
    assert "dr_grpo, token ratios, live (2 seeds)" in json.dumps(live[0])
    assert not at.metric

    at.button(key="seq_play").click().run()              # Play: each rerun trains one more piece
    ok(at)
    seen = [live_iteration(at)]
    while "finished" not in live_status(at) and len(seen) < total:
        at.run()
        ok(at)
        seen.append(live_iteration(at))
    assert seen[0] == 20 and seen[-1] == total and "finished" in live_status(at)
    assert at.button(key="seq_play").disabled and at.button(key="seq_step").disabled
    # The finished live run is stored, and the page below shows it: metrics, every chart.
    live_results = held.results()
    assert_same_runs(store.STORE.get(held.key), live_results)
    assert len(charts(at)) == 7 + 13 and at.metric[0].label == "final P(correct) (mean of 2)"
    live_metrics = [m.value for m in at.metric]

    # The same settings without the live view, trained afresh by the page's normal path.
    monkeypatch.setattr(store, "STORE", store.ResultStore())
    at.toggle(key="seq_watch").set_value(False).run()
    ok(at)
    assert len(charts(at)) == 13 and not [m for m in at.markdown if m.value.startswith("Live iteration")]
    batch = store.STORE.get(held.key)
    assert batch is not None and batch[0] is not live_results[0]
    assert_same_runs(batch, live_results)
    assert [m.value for m in at.metric] == live_metrics


def test_sequence_live_reset_presentation_mode_and_share_link(monkeypatch):
    """Reset throws the live run away; in presentation mode the live view trains to the end, and
    then the page's share link carries the settings and presentation mode."""
    from ui import store
    monkeypatch.setattr(store, "STORE", store.ResultStore())
    at = run(SEQ, query={"present": "1", "seq_iterations": "20", "seq_seeds": "2"}, state={"seq_watch": True})
    ok(at)
    assert at.session_state["present"] is True
    at.button(key="seq_step").click().run()
    ok(at)
    assert live_iteration(at) == 10 and len(live_charts(at, 20)) == 7
    at.button(key="seq_reset").click().run()
    ok(at)
    assert live_iteration(at) == 0 and not live_charts(at, 20)
    assert at.session_state["held_runs"]["GRPO on sequences"]["run"] is None      # the trainer is freed
    assert not [c for c in at.code if "?" in c.value]                           # the page waits for the run
    for _ in range(2):
        at.button(key="seq_step").click().run()
        ok(at)
    assert "finished" in live_status(at) and len(live_charts(at, 20)) == 7
    held = at.session_state["held_runs"]["GRPO on sequences"]["run"]
    assert held.trainer is None and held.key in store.STORE     # finished: results kept and stored, trainer dropped
    link = next(c.value for c in at.code if "?" in c.value)
    assert "seq_iterations=20" in link and "seq_seeds=2" in link and "present=1" in link, link


LENGTH = "pages/11_Length_bias.py"


def claims(at: AppTest) -> str:
    return next(m.value for m in at.markdown if m.value.startswith("- At G ="))


def number(pattern: str, text: str) -> float:
    found = re.search(pattern, text)
    assert found, (pattern, text)
    return float(found.group(1))


def check_sentences_against_table(at: AppTest) -> None:
    """Every number and verdict of the claims list is the one the page's table computes."""
    text, table = claims(at), at.dataframe[0].value
    grpo_w = table.loc[table.loss_type == "grpo", "length_wrong (mean Δ)"].item()
    dr_w = table.loc[table.loss_type == "dr_grpo", "length_wrong (mean Δ)"].item()
    dr_se = table.loc[table.loss_type == "dr_grpo", "length_wrong (s.e.)"].item()
    assert number(r"by \*\*([+-][\d.]+)\*\* under grpo", text) == pytest.approx(grpo_w, abs=5e-4)
    assert number(r"\*\*([+-][\d.]+)\*\* under dr_grpo", text) == pytest.approx(dr_w, abs=5e-4)
    # the same seeds in both losses: the paired mean is the difference of the means
    assert number(r"seed by seed, is ([+-][\d.]+)", text) == pytest.approx(grpo_w - dr_w, abs=1e-3)
    first = re.search(r"Claim 1[^*]*\*\*([^*]+)\*\*", text).group(1)
    err = number(r"seed by seed, is [+-][\d.]+ ± ([\d.]+)", text)
    assert first == ("holds" if grpo_w - dr_w > err else
                     "does not hold" if grpo_w - dr_w < -err else "not shown")
    second = re.search(r"Claim 2[^*]*\*\*([^*]+)\*\*", text).group(1)
    assert second == ("does not hold" if dr_w - 2 * np.nan_to_num(dr_se) > 0 else "holds")
    gaps = re.search(r"opened by ([+-][\d.]+) under grpo and ([+-][\d.]+) under dr_grpo", text)
    for loss, shown in zip(("grpo", "dr_grpo"), gaps.groups()):
        assert float(shown) == pytest.approx(table.loc[table.loss_type == loss, "gap (mean Δ)"].item(), abs=5e-4)


def test_length_bias_defaults_compute_their_sentences():
    from grpo_core.sequence import SeqGRPOConfig, build_seq_upstream, length_changes, train_seq
    from ui.seq import reference
    at = run(LENGTH)
    ok(at)
    assert len(charts(at)) == 5      # wrong, right, gap, reward at G = 8; the difficulty curve
    check_sentences_against_table(at)
    # The page's table is the runs': recomputed here from the engine directly.
    up = build_seq_upstream()
    runs = train_seq(up, [SeqGRPOConfig(loss_type=t, seed=s) for t in ("grpo", "dr_grpo") for s in range(8)])
    changes = length_changes(runs, reference(up))
    table = at.dataframe[0].value
    for loss in ("grpo", "dr_grpo"):
        got = table.loc[table.loss_type == loss, "length_wrong (mean Δ)"].item()
        assert got == pytest.approx(changes[changes.loss_type == loss].d_length_wrong.mean(), abs=1e-5)
    # the difficulty table: p per context is the SFT policy's exact success rate
    weights = at.dataframe[1].value
    text = next(m.value for m in at.markdown if m.value.startswith("Under the SFT policy"))
    hi, lo = weights["weight (SFT)"].max(), weights["weight (SFT)"].min()
    assert number(r"\*\*([\d.]+)×\*\*", text) == pytest.approx(hi / lo, abs=5e-3)
    assert number(r"caps the weight at (\d+\.\d+)", text) == pytest.approx(8 ** 0.5, abs=5e-3)
    assert (weights["weight (after grpo)"] <= 8 ** 0.5 + 1e-6).all()


def test_length_bias_other_settings_keep_sentences_true():
    at = run(LENGTH, query={"lenbias_group_sizes": "16", "lenbias_seeds": "2", "lenbias_iterations": "50"})
    ok(at)
    check_sentences_against_table(at)
    assert "G = 16" in claims(at)


def test_length_bias_every_loss_type():
    at = run(LENGTH, query={"lenbias_seeds": "1", "lenbias_iterations": "20", "lenbias_all": "true"})
    ok(at)
    by_type = at.dataframe[1].value
    assert list(by_type.loss_type) == ["grpo", "bnpo", "dr_grpo", "dapo", "luspo", "cispo",
                                       "seq-mean-token-sum", "seq-mean-token-sum-norm"]
    text = next(m.value for m in at.markdown if m.value.startswith("Wrong answers grew most"))
    most = by_type.loc[by_type.d_length_wrong.idxmax()]
    assert f"**{most.loss_type}** ({most.d_length_wrong:+.3f})" in text


def test_difficulty_weights_match_the_advantage_estimator_exactly():
    """weight_G is E[sum_i A_grpo,i ok_i] / E[sum_i A_dr_grpo,i ok_i] over every outcome of a group."""
    import itertools
    import torch
    from grpo_core.advantages import advantages
    from grpo_core.sequence import difficulty_weights
    g, p = 4, torch.tensor([0.1, 0.5, 0.8])
    outcomes = torch.tensor(list(itertools.product([0.0, 1.0], repeat=g)))        # (2^G, G)
    a_grpo = advantages(outcomes.view(1, -1, g), estimator="grpo")[0][0]
    a_dr = advantages(outcomes.view(1, -1, g), estimator="dr_grpo")[0][0]
    k = outcomes.sum(1)
    for c, pc in enumerate(p.tolist()):
        prob = pc ** k * (1 - pc) ** (g - k)
        expected = float((prob * (a_grpo * outcomes).sum(1)).sum() / (prob * (a_dr * outcomes).sum(1)).sum())
        assert difficulty_weights(p, g).weight_G[c] == pytest.approx(expected, rel=1e-5)
    big = difficulty_weights(p, 2000)
    assert np.allclose(big.weight_G, big.population_weight, rtol=2e-3)


RATIOS = "pages/12_Token_vs_sequence_ratios.py"


def test_onpolicy_gradients_gspo_is_grpo_and_luspo_is_l_times_dr_grpo(upstream_seq):
    """The exact first-step facts: GSPO = GRPO, CISPO = DAPO, LUSPO = L x Dr. GRPO on every token;
    GRPO and Dr. GRPO differ in direction (GRPO's 1/|y|)."""
    import torch
    from grpo_core.sequence import SeqGRPOConfig, onpolicy_token_gradients
    configs = [SeqGRPOConfig(), SeqGRPOConfig(importance_sampling_level="sequence"),
               SeqGRPOConfig(loss_type="dr_grpo"), SeqGRPOConfig(loss_type="luspo", importance_sampling_level="sequence"),
               SeqGRPOConfig(loss_type="dapo"), SeqGRPOConfig(loss_type="cispo")]
    for seed in range(3):
        g, mask = onpolicy_token_gradients(upstream_seq, configs, seed=seed)
        assert g[0].abs().max() > 0
        torch.testing.assert_close(g[1], g[0], rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(g[3], upstream_seq.task.config.max_length * g[2], rtol=1e-5, atol=1e-9)
        torch.testing.assert_close(g[5], g[4], rtol=1e-6, atol=1e-9)
        used = g[2] != 0
        ratio = g[0][used] / g[2][used]
        assert float(ratio.max() - ratio.min()) > 0.1          # not proportional


@pytest.fixture(scope="module")
def upstream_seq():
    from grpo_core.sequence import build_seq_upstream
    return build_seq_upstream()


def test_token_vs_sequence_ratios_page():
    at = run(RATIOS, query={"ratios_iterations": "30", "ratios_seeds": "2"})
    ok(at)
    assert len(charts(at)) == 6
    summary, pairs = (d.value for d in at.dataframe)
    assert list(summary.method) == ["GRPO", "GSPO", "CISPO"]
    assert (summary["clipped tokens"] > 0).any()               # 4 epochs: off-policy steps clip
    text = next(m.value for m in at.markdown if m.value.startswith("Over 30 iterations"))
    most = summary.loc[summary["clipped tokens"].idxmax()]
    assert f"**{most.method}** clipped the most tokens ({most['clipped tokens']:.4f}" in text
    verdicts = next(m.value for m in at.markdown if m.value.startswith("- **GSPO vs GRPO**"))
    assert "**GSPO vs GRPO**: equal on every token" in verdicts
    assert "**LUSPO vs Dr. GRPO**: proportional on every token, factor 6." in verdicts   # L = 6
    assert "**Dr. GRPO vs GRPO**: not proportional" in verdicts
    row = pairs.set_index("pair")
    assert row.loc["LUSPO vs Dr. GRPO", "min a / b"] == pytest.approx(6.0)


def test_token_vs_sequence_ratios_one_epoch_clips_nothing():
    """With one epoch every step is on-policy: every ratio is 1, nothing is clipped."""
    at = run(RATIOS, query={"ratios_iterations": "20", "ratios_seeds": "1", "ratios_epochs": "1"})
    ok(at)
    summary = at.dataframe[0].value
    assert (summary["clipped tokens"] == 0).all() and (summary["clipped responses"] == 0).all()


ENTROPY = "pages/13_Entropy_collapse.py"


def test_entropy_collapse_sentences_are_its_table():
    at = run(ENTROPY, query={"entropy_iterations": "40", "entropy_seeds": "2"})
    ok(at)
    assert len(charts(at)) == 4
    table = at.dataframe[0].value
    sym, hi = table.iloc[0], table.iloc[1]
    text = next(m.value for m in at.markdown if m.value.startswith("- Symmetric clip:"))
    for row, name in ((sym, "Symmetric clip"), (hi, "clip-higher")):
        assert f"{name}: {int(row['seeds that discovered'])} of 2 seeds" in text
    more = hi["final entropy"] > sym["final entropy"]
    assert f"kept more entropy: **{'yes' if more else 'no'}** (final {hi['final entropy']:.3f} against " \
           f"{sym['final entropy']:.3f}" in text
    # the discovery time is the first iteration at which the exact reward reaches the threshold
    caption = next(c.value for c in at.caption if c.value.startswith("Task difficulty 1"))
    assert float(re.search(r"P\(correct\) ([\d.]+)", caption).group(1)) < 0.5     # the answer starts rare


def test_first_reaching():
    import pandas as pd
    from grpo_core.sequence import first_reaching
    h = pd.DataFrame({"iteration": [1, 2, 3, 4], "reward": [0.1, 0.5, 0.95, 0.8]})
    assert first_reaching(h, "reward", 0.9) == 3
    assert np.isnan(first_reaching(h, "reward", 0.99))
