"""build --delta: the calibration-conditional guarantee, carried by the baseline and named in each verdict."""

from __future__ import annotations

import pytest

from conformance.baseline.fit import SmallCalibrationWarning, build_baseline
from conformance.stats.conformal import calibration_conditional_threshold
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
    assert baseline.spec.delta is None and flag_threshold(baseline) == 0.1
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

    from conformance.stats.conformal import conformal_p_values, prompt_weighted_p_values

    # 40 calibration prompts of 4 outputs at alpha 0.1: one output per prompt reaches 4/41, weighting every
    # output 13/161 (if outputs of a prompt were no more alike than any two), so the default "auto" draws one.
    baseline = build_baseline(_approved_multi(80, 4), alpha=0.1, scorer="knn_cosine", embedder=FakeEmbedder(),  # type: ignore[arg-type]
                              round_calibration=False)  # 40 prompts as the fraction gives (39 reach 0.1 exactly)
    assert baseline.scorer["calibration_method"] == "prompt_sample"
    choice = baseline.scorer["calibration_method_choice"]
    assert choice["requested"] == "auto" and choice["chosen"] == "sample"
    assert choice["reference_level_sample"] == 4 / 41 and choice["reference_level_weighted"] == 13 / 161
    assert baseline.n_calibration_prompts == 40 and baseline.scorer["n_calibration_outputs"] == 160
    assert baseline.n_calibration == 40 and len(baseline.calibration_scores_by_record or []) == 160
    assert baseline.descriptors["calibration_support"]["n_calibration"] == 40  # what alpha is checked against
    keys = baseline.calibration_prompt_keys
    used = baseline.calibration_used
    assert keys is not None and used is not None and sorted(keys[i] for i in used) == sorted(set(keys))
    by_record = np.asarray(baseline.calibration_scores_by_record)
    scores = np.linspace(0, 2, 50)
    assert np.array_equal(baseline.p_values(scores), conformal_p_values(scores, np.sort(by_record[used])))
    result = _score(baseline, [f"0:{i}" for i in range(9000, 9040)])
    drawn = ("one answer drawn at random for each of 40 prompts held out for calibration, the draw fixed when the "
             "baseline was built")
    assert all(drawn in v.reason for v in result.verdicts)
    # The draw is fixed by the seed, whatever the order of the approved records.
    shuffled = build_baseline(_approved_multi(80, 4)[::-1], alpha=0.1, scorer="knn_cosine", embedder=FakeEmbedder(),  # type: ignore[arg-type]
                              round_calibration=False)
    assert np.array_equal(shuffled.calibration_scores, baseline.calibration_scores)

    # --calibration-method weighted: every calibration output, each prompt weighing the same.
    weighted = build_baseline(_approved_multi(80, 4), alpha=0.1, scorer="knn_cosine", embedder=FakeEmbedder(),  # type: ignore[arg-type]
                              calibration_method="weighted", round_calibration=False)
    assert weighted.scorer["calibration_method"] == "prompt_weighted" and weighted.n_calibration_prompts == 40
    assert np.array_equal(weighted.p_values(scores), prompt_weighted_p_values(scores, by_record, keys))
    result = _score(weighted, [f"0:{i}" for i in range(9000, 9040)])
    assert all("one for each" not in v.reason and "answers to 40 prompts held out" in v.reason for v in result.verdicts)

    # Under delta, p-values use the one output per prompt, so the Beta law of K scores holds.
    conditional = build_baseline(_approved_multi(80, 4), alpha=0.1, delta=0.1, scorer="knn_cosine",
                                 embedder=FakeEmbedder())  # type: ignore[arg-type]
    assert conditional.scorer["calibration_method"] == "prompt_sample" and conditional.n_calibration == 40
    assert conditional.scorer["conditional_threshold"] == calibration_conditional_threshold(40, 0.1, 0.1)
    with pytest.raises(ValueError, match="needs calibration_method 'sample'"):
        build_baseline(_approved_multi(80, 4), alpha=0.1, delta=0.1, scorer="knn_cosine", embedder=FakeEmbedder(),  # type: ignore[arg-type]
                       calibration_method="weighted")
    # 25 calibration prompts of two outputs (a one-model MT-bench cell) at alpha 0.1: weighting reaches 4/51,
    # one output per prompt 2/26, so "auto" weighs; at 0.05 it is the other way round (1/51 against 1/26).
    # (Without rounding: build keeps 22 of the 25 at 0.1, where one output per prompt reaches 2/23 > 4/51.)
    pairs = _approved_multi(50, 2)
    assert build_baseline(pairs, alpha=0.1, scorer="knn_cosine", embedder=FakeEmbedder(),  # type: ignore[arg-type]
                          round_calibration=False).scorer["calibration_method"] == "prompt_weighted"
    with pytest.warns(SmallCalibrationWarning, match="only 25 distinct prompts"):
        assert build_baseline(pairs, alpha=0.05, scorer="knn_cosine", embedder=FakeEmbedder(),  # type: ignore[arg-type]
                              round_calibration=False).scorer["calibration_method"] == "prompt_sample"
    rounded = build_baseline(pairs, alpha=0.1, scorer="knn_cosine", embedder=FakeEmbedder())  # type: ignore[arg-type]
    assert rounded.scorer["calibration_method"] == "prompt_sample" and rounded.n_calibration_prompts == 22
    with pytest.raises(ValueError, match="calibration_method must be one of auto, sample, weighted"):
        build_baseline(_approved_multi(80, 4), alpha=0.1, scorer="knn_cosine", embedder=FakeEmbedder(),  # type: ignore[arg-type]
                       calibration_method="pooled")


def test_batch_tests_permute_whole_conversations() -> None:
    from conformance.records import RecordSet
    from conformance.scoring import score_record_set

    baseline = build_baseline(_approved_multi(80, 4), alpha=0.1, scorer="knn_cosine", embedder=FakeEmbedder(),  # type: ignore[arg-type]
                              round_calibration=False)  # 40 prompts as the fraction gives (39 reach 0.1 exactly)
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
