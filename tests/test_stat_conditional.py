"""build --delta: the calibration-conditional guarantee, carried by the baseline and named in each verdict."""

from __future__ import annotations

import pytest

from conformance.build import build_baseline
from conformance.conformal import calibration_conditional_threshold
from conformance.errors import BaselineError
from conformance.records import Record
from conformance.scoring import flag_threshold
from conformance.verdict import OUT, WITHIN
from tests.test_stat_fdr import FakeEmbedder, _score


def _approved(n: int) -> list[Record]:
    return [Record(row=i + 1, record_id=f"a{i}", model_version="m", input_class="c", input=f"q{i}",
                   output=f"0:{i}", extras={"prompt_id": f"p{i}"}) for i in range(n)]


def test_build_with_delta_records_the_cut_off_and_verdicts_use_it() -> None:
    baseline = build_baseline(_approved(400), alpha=0.1, delta=0.1, scorer="knn_cosine", embedder=FakeEmbedder())  # type: ignore[arg-type]
    t = calibration_conditional_threshold(baseline.n_calibration, 0.1, 0.1)
    assert t is not None and baseline.scorer["conditional_threshold"] == t < 0.1 and baseline.scorer["delta"] == 0.1
    assert flag_threshold(baseline) == t
    result = _score(baseline, [f"0:{i}" for i in range(9000, 9200)])
    for v in result.verdicts:
        assert v.verdict == (OUT if v.p_value <= t else WITHIN)
        assert "calibration-conditional guarantee" in v.reason and "90%" in v.reason
    between = [v for v in result.verdicts if t < v.p_value <= 0.1]
    assert between and all(v.verdict == WITHIN for v in between)  # the stricter cut-off is what decides


def test_without_delta_the_verdict_is_p_at_most_alpha() -> None:
    baseline = build_baseline(_approved(200), alpha=0.1, scorer="knn_cosine", embedder=FakeEmbedder())  # type: ignore[arg-type]
    assert "delta" not in baseline.scorer and flag_threshold(baseline) == 0.1
    result = _score(baseline, [f"0:{i}" for i in range(9000, 9100)])
    assert all(v.verdict == (OUT if v.p_value <= 0.1 else WITHIN) for v in result.verdicts)
    assert all("calibration-conditional" not in v.reason for v in result.verdicts)


def test_delta_refuses_a_calibration_set_too_small() -> None:
    with pytest.raises(BaselineError, match="too few for the calibration-conditional guarantee"):
        build_baseline(_approved(40), alpha=0.05, delta=0.01, scorer="knn_cosine", embedder=FakeEmbedder())  # type: ignore[arg-type]


def _approved_multi(n_prompts: int, per_prompt: int) -> list[Record]:
    return [Record(row=i + 1, record_id=f"a{i}", model_version="m", input_class="c", input=f"q{i // per_prompt}",
                   output=f"0:{i}", extras={"prompt_id": f"p{i // per_prompt}"})
            for i in range(n_prompts * per_prompt)]


def test_several_outputs_per_prompt_calibrate_by_prompt() -> None:
    import numpy as np

    from conformance.conformal import prompt_weighted_p_values

    baseline = build_baseline(_approved_multi(80, 4), alpha=0.1, scorer="knn_cosine", embedder=FakeEmbedder())  # type: ignore[arg-type]
    assert baseline.scorer["calibration_method"] == "prompt_weighted"
    assert baseline.n_calibration_prompts == 40 and baseline.scorer["n_calibration_outputs"] == 160
    assert baseline.descriptors["calibration_support"]["n_calibration"] == 40  # what alpha is checked against
    keys = baseline.calibration_prompt_keys
    used = baseline.calibration_used
    assert keys is not None and used is not None and sorted(keys[i] for i in used) == sorted(set(keys))
    scores = np.linspace(0, 2, 50)
    assert np.array_equal(baseline.p_values(scores),
                          prompt_weighted_p_values(scores, np.asarray(baseline.calibration_scores_by_record), keys))
    result = _score(baseline, [f"0:{i}" for i in range(9000, 9040)])
    assert all("one for each" not in v.reason and "answers to 40 prompts held out" in v.reason for v in result.verdicts)

    # Under delta, p-values use the one output per prompt, so the Beta law of K scores holds.
    conditional = build_baseline(_approved_multi(80, 4), alpha=0.1, delta=0.1, scorer="knn_cosine",
                                 embedder=FakeEmbedder())  # type: ignore[arg-type]
    assert conditional.scorer["calibration_method"] == "prompt_sample" and conditional.n_calibration == 40
    assert conditional.scorer["conditional_threshold"] == calibration_conditional_threshold(40, 0.1, 0.1)


def test_batch_tests_permute_whole_conversations() -> None:
    from conformance.records import RecordSet
    from conformance.scoring import score_record_set

    baseline = build_baseline(_approved_multi(80, 4), alpha=0.1, scorer="knn_cosine", embedder=FakeEmbedder())  # type: ignore[arg-type]
    # 30 audited outputs: 15 conversations of two turns, each turn with its own prompt_id.
    rows = tuple(Record(row=i + 1, record_id=f"r{i}", model_version="m", input_class="c", input=f"turn {i}",
                        output=f"0:{9000 + i}",
                        extras={"prompt_id": f"conv{i // 2}:turn{i % 2}", "conversation_id": f"conv{i // 2}"})
                 for i in range(30))
    result = score_record_set(RecordSet(path="<test>", rows=rows), lambda mv, ic: ("models:/m-c/1", baseline),
                              embedder=FakeEmbedder())  # type: ignore[arg-type]
    (summary,) = result.summaries
    assert ("15 of the batch's prompts, 30 outputs, against 40 approved calibration prompts, 160 outputs"
            in summary.reason)
    assert summary.tests is not None and summary.tests["n_batch"] == 30
    assert summary.tests["permutation_unit"] == "group"
    assert "15 batch groups (30 outputs) against 40 calibration groups (160 outputs)" in summary.tests["notes"][-1]
