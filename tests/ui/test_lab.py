"""The algorithm-lab pages, run headless with AppTest: defaults and one changed setting each must
raise nothing, show no error and draw their charts; and the TRL export expander."""
from __future__ import annotations

import json

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from grpo_core import GRPOConfig, RLVRConfig

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 120


def run(page: str, state: dict | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / page), default_timeout=TIMEOUT)
    for key, value in (state or {}).items():
        at.session_state[key] = value
    return at.run(timeout=TIMEOUT)


def ok(at: AppTest, n_charts: int) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert len(at.get("vega_lite_chart")) == n_charts
    assert any("Only an exact toy shows this" in i.value for i in at.info)


@pytest.mark.slow
def test_reward_hacking_defaults_and_fewer_coefficients():
    at = run("6_Reward_hacking.py")
    ok(at, 2)
    table = at.dataframe[0].value
    assert list(table["β"]) == [0.0, 0.01, 0.05, 0.2, 1.0]
    assert (table["β of the optimum with this KL"] > 0).all()
    for spec in (json.loads(c.proto.spec) for c in at.get("vega_lite_chart")):
        runs = [l for l in spec["layer"] if l.get("encoding", {}).get("strokeDash", {}).get("field") == "series"]
        assert runs, "the β lines are told apart by dash pattern"
        texts = [l for l in spec["layer"] if l.get("mark", {}).get("type") == "text"
                 and l["encoding"].get("text", {}).get("field") == "series"]
        assert texts, "each β line is labelled at its end"
    at.multiselect(key="hack_kl_coefs").set_value([0.05, 1.0])
    at.slider(key="hack_seeds").set_value(2)
    at.number_input(key="hack_iterations").set_value(60).run(timeout=TIMEOUT)
    ok(at, 2)
    table = at.dataframe[0].value
    assert list(table["β"]) == [0.05, 1.0]
    # a larger KL coefficient keeps the policy closer to SFT
    assert table["final KL"].iloc[1] < table["final KL"].iloc[0]


@pytest.mark.slow
def test_zero_signal_defaults_and_group_size():
    at = run("7_Zero_signal_groups.py")
    ok(at, 4)
    silent, redrawn = (float(m.value) for m in at.metric[:2])
    assert 0 < redrawn < silent < 1
    at.slider(key="zero_group_size").set_value(4)
    at.number_input(key="zero_iterations").set_value(50).run(timeout=TIMEOUT)
    ok(at, 4)
    assert float(at.metric[0].value) > silent            # smaller groups are silent more often


@pytest.mark.slow
def test_pass_at_k_defaults_and_the_aggressive_preset():
    at = run("8_Pass_at_k.py")
    ok(at, 2)
    assert len(at.dataframe) == 1 and list(at.dataframe[0].value["context"])[-1] == "overall"
    assert any("No, not on this problem" in s.value for s in at.success)
    at.button[0].click().run(timeout=TIMEOUT)            # Try aggressive RLVR
    ok(at, 2)
    assert at.number_input(key="passk_kl_coef").value == 0.0
    assert at.slider(key="passk_group_size").value == 2


@pytest.mark.slow
def test_gradient_noise_defaults_and_verifiable_reward():
    at = run("9_Gradient_noise.py")
    ok(at, 2)
    table = at.dataframe[0].value
    assert list(table["G"]) == [2, 4, 8, 16, 32, 64]
    assert table["grpo"].iloc[-1] > table["grpo"].iloc[0]    # bigger groups, better direction
    at.radio(key="noise_reward").set_value("verifiable")
    at.multiselect(key="noise_group_sizes").set_value([2, 16]).run(timeout=TIMEOUT)
    ok(at, 2)
    table = at.dataframe[0].value
    assert list(table["G"]) == [2, 16] and table["batches with g = 0"].iloc[0] > 0


@pytest.mark.parametrize("cfg, unmapped", [
    (GRPOConfig(), {"kl_estimator"}),             # TRL has only k3
    (GRPOConfig(kl_estimator="k3", clip_eps_high=0.28), set()),
    (RLVRConfig(dynamic_sampling=2, entropy_coef=0.1), {"dynamic_sampling", "reward", "kl_estimator"}),
])
def test_trl_export_expander(cfg, unmapped):
    def page(cfg_json: str):
        import streamlit as st
        from grpo_core import GRPOConfig, RLVRConfig
        from ui import lab
        data = __import__("json").loads(cfg_json)
        cls = RLVRConfig if data.pop("reward") == "verifiable" else GRPOConfig
        lab.trl_export(cls(**data))
        st.write("done")

    at = AppTest.from_function(page, args=(cfg.to_json(),), default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.expander[0].label == "Use these settings in TRL"
    code = at.code[0].value
    assert "GRPOConfig(" in code and f"num_generations={cfg.group_size}" in code
    bullets = " ".join(m.value for m in at.markdown if "No TRL equivalent" in m.value)
    assert all(f"`{name}`" in bullets for name in unmapped)
    assert bool(bullets) == bool(unmapped)


@pytest.mark.slow
def test_zero_signal_formulas_are_rendered_as_maths():
    import re
    at = run("7_Zero_signal_groups.py", {"zero_seeds": 2})
    assert not at.exception
    prose = " ".join(m.value for m in at.markdown)
    assert "$\\bar p^G + (1 - \\bar p)^G$" in prose
    outside_maths = re.sub(r"\$[^$]*\$", "", prose)
    assert "^G" not in outside_maths and "p̄" not in outside_maths


def test_compare_notice_names_contexts_as_contexts(upstream):
    import pandas as pd
    from ui.views import compare_notice
    wrong = [c for c, (t, ok) in enumerate(zip(upstream.rm.scores.argmax(-1).tolist(),
                                              upstream.problem.correct_token.tolist())) if t != ok]
    if not wrong:
        pytest.skip("the default reward model is right everywhere")
    n = upstream.problem.n_contexts
    rows = [{"context": str(c), "sft": 0.6, "grpo": 0.5 if c in wrong else 0.7, "rlvr": 0.7, "best": 0.8}
            for c in range(n)]
    rows.append({"context": "overall", "sft": 0.6, "grpo": 0.6, "rlvr": 0.7, "best": 0.8})
    text = compare_notice(pd.DataFrame(rows), upstream)
    assert f"in context {wrong[0]} the reward model's top token is not the correct one" in text or \
        f"in contexts {', '.join(map(str, wrong))} the reward model's" in text
    assert "correct one (" not in text


@pytest.mark.slow
def test_gradient_noise_says_which_estimators_coincide():
    at = run("9_Gradient_noise.py", {"noise_draws": 16})
    assert not at.exception
    notes = [i.value for i in at.info if "coincide" in i.value]
    assert len(notes) == 1 and "differ only in scale" in notes[0]
    for name in ("dr_grpo", "rloo", "batch_std"):       # the cosine ignores scale: these three are one direction
        assert name in notes[0]


def test_trl_export_expander_of_a_sequence_run():
    def page():
        import streamlit as st
        from grpo_core.sequence import SeqGRPOConfig, SeqTaskConfig
        from ui import lab
        lab.trl_export(SeqGRPOConfig(loss_type="seq-mean-token-sum-norm", mask_truncated=True),
                       SeqTaskConfig(max_length=4))
        st.write("done")

    at = AppTest.from_function(page, default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    code = at.code[0].value
    assert "max_completion_length=4" in code and "mask_truncated_completions=True" in code
    bullets = " ".join(m.value for m in at.markdown if "No TRL equivalent" in m.value)
    assert "`loss_type`: TRL has no loss_type 'seq-mean-token-sum-norm'" in bullets
