"""Baseline format 2 (combined-score state) and the kept loader for format 1."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conformance.baseline.format import FORMAT_VERSION, load_baseline, save_baseline
from conformance.baseline.fit import build_baseline
from conformance.embedder import EmbeddedTexts, embed_inputs
from conformance.stats.combined import CombinedScorer
from conformance.errors import BaselineError
from conformance.reconstruct import same_value
from conformance.records import Record, RecordSet
from conformance.scoring import judge, score_record_set, summarise
from tests.test_stat_fdr import FakeEmbedder, _score

FORMAT1 = Path(__file__).parent / "data" / "baseline_format1"


class WindowedFakeEmbedder(FakeEmbedder):
    fingerprint = {"model": "fake", "source": "tests", "chunking": {"window": 254}}


def test_format_1_file_still_loads_verifies_and_scores() -> None:
    baseline = load_baseline(FORMAT1)
    assert FORMAT_VERSION == 8 and baseline.migrated_from == 1 and baseline.scorer_state == {}
    assert baseline.digest == "sha256:d656c279b332ccb2e8261316f1302b52663817d83d4feafc2736bfd4e40a541e"
    result = _score(baseline, [f"0:{i}" for i in range(9500, 9520)])
    assert all(0 < v.p_value <= 1 for v in result.verdicts)


def test_format_1_file_with_altered_bytes_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "b"
    shutil.copytree(FORMAT1, folder)
    meta = (folder / "baseline.json").read_text().replace('"alpha": 0.05', '"alpha": 0.5')
    (folder / "baseline.json").write_text(meta)
    with pytest.raises(BaselineError, match="does not match its digest"):
        load_baseline(folder)


def _approved(n: int) -> list[Record]:
    return [Record(row=i + 1, record_id=f"a{i}", model_version="m", input_class="c", input=f"0:{50000 + i % 60}",
                   output=f"0:{i}", extras={"prompt_id": f"p{i % 60}"}) for i in range(n)]


@pytest.fixture(scope="module")
def combined(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    baseline = build_baseline(_approved(240), alpha=0.1, scorer="combined", embedder=WindowedFakeEmbedder())  # type: ignore[arg-type]
    folder = save_baseline(baseline, tmp_path_factory.mktemp("combined") / "b")
    return baseline, folder


def test_combined_baseline_round_trips(combined) -> None:  # type: ignore[no-untyped-def]
    baseline, folder = combined
    loaded = load_baseline(folder)
    assert loaded.format_version == FORMAT_VERSION and loaded.migrated_from is None
    assert loaded.digest == baseline.digest
    assert set(loaded.scorer_state) == set(baseline.scorer_state) and loaded.scorer["name"] == "combined"
    for name, value in baseline.scorer_state.items():
        assert np.array_equal(loaded.scorer_state[name], value)
    params = {n: loaded.scorer[n] for n in CombinedScorer.PARAM_NAMES}
    assert params["combination"] == "facets" and params["relevance_neighbours"] == 10
    model = CombinedScorer.from_state(params, loaded.scorer_state)
    assert np.array_equal(model.calibration_scores_, loaded.calibration_scores)
    assert model.relevance_bank_ is not None
    # The batch rank tests' own scores of the calibration part, one per calibration record.
    batch_cal = loaded.batch_calibration_scores_by_record
    assert batch_cal is not None and len(batch_cal) == len(loaded.calibration_record_ids)
    assert batch_cal != loaded.calibration_scores_by_record
    # The batch MMD and energy tests' side of the calibration part: one residual embedding per record.
    assert loaded.calibration_residuals is not None and baseline.calibration_residuals is not None
    assert loaded.calibration_residuals.shape == loaded.calibration_embeddings.shape
    assert np.array_equal(loaded.calibration_residuals, baseline.calibration_residuals)
    assert not np.allclose(loaded.calibration_residuals, loaded.calibration_embeddings)


def test_a_verdict_compares_what_stands_out_with_the_calibration_outputs(combined) -> None:  # type: ignore[no-untyped-def]
    baseline, _ = combined
    reference = baseline.scorer["facet_calibration"]
    model = CombinedScorer.from_state({n: baseline.scorer[n] for n in CombinedScorer.PARAM_NAMES},
                                      baseline.scorer_state)
    assert list(reference) == model.facet_names(len(baseline.scorer["components"]))
    n_cal = baseline.scorer["n_calibration_outputs"]
    assert all(r["n"] == n_cal and r["median"] <= r["max"] for r in reference.values())
    # Judged again, each calibration output's top facet stays within what build recorded for that facet.
    wanted = set(baseline.calibration_record_ids)
    cal = [r for r in _approved(240) if r.record_id in wanted]
    embedder = WindowedFakeEmbedder()
    verdicts = judge(baseline, "models:/m-c/1", cal, embedder.embed([r.output for r in cal]),  # type: ignore[arg-type]
                     scored_at="t", inputs=embed_inputs(embedder, [r.input for r in cal]))  # type: ignore[arg-type]
    assert len(verdicts) == n_cal
    # The p-value compared with one drawn output per prompt; the spread is over every calibration output.
    n_prompts = baseline.n_calibration_prompts
    assert baseline.scorer["calibration_method"] == "prompt_sample" and n_prompts < n_cal
    tops = [re.search(r"a standardised value of (-?[0-9.]+), where the (\d+) approved calibration outputs "
                      rf"\(every answer to those {n_prompts} prompts\) reach at most (-?[0-9.]+)", v.reason)
            for v in verdicts]
    assert all(m is not None and int(m.group(2)) == n_cal and float(m.group(1)) <= float(m.group(3)) for m in tops)
    assert any(m is not None and m.group(1) == m.group(3) for m in tops)  # the largest is one of them
    # A facet baseline built before the spread was kept says what it said then.
    old = replace(baseline, scorer={**baseline.scorer, "facet_calibration": None})  # as migrated from format 2
    (said,) = judge(old, "models:/m-c/1", cal[:1], embedder.embed([cal[0].output]),  # type: ignore[arg-type]
                    scored_at="t", inputs=embed_inputs(embedder, [cal[0].input]))  # type: ignore[arg-type]
    assert "where 2.3 to 2.6 marks the most unusual 1% of the approved outputs" in said.reason


def test_altered_calibration_residuals_break_the_digest(combined, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, folder = combined
    copy = tmp_path / "b"
    shutil.copytree(folder, copy)
    with np.load(copy / "arrays.npz", allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    arrays["calibration_residuals"] = arrays["calibration_residuals"] * 0.5
    np.savez(copy / "arrays.npz", **arrays)  # type: ignore[arg-type]
    with pytest.raises(BaselineError, match="does not match its digest"):
        load_baseline(copy)


def test_batch_rank_tests_use_their_own_rule_on_both_sides(combined) -> None:  # type: ignore[no-untyped-def]
    baseline, _ = combined
    rows = [Record(row=i + 1, record_id=f"r{i}", model_version="m", input_class="c", input=f"0:{50000 + i % 60}",
                   output=f"0:{70000 + i}", extras={"prompt_id": f"q{i % 12}"}) for i in range(24)]
    embedder = WindowedFakeEmbedder()
    batch_scores: dict[int, float] = {}
    verdicts = judge(baseline, "models:/m-c/1", rows, embedder.embed([r.output for r in rows]),  # type: ignore[arg-type]
                     scored_at="t", inputs=embed_inputs(embedder, [r.input for r in rows]),  # type: ignore[arg-type]
                     batch_scores=batch_scores)
    assert set(batch_scores) == {r.row for r in rows}
    assert not np.allclose([batch_scores[v.row] for v in verdicts], [v.score for v in verdicts])
    resolved = {("m", "c"): ("models:/m-c/1", baseline)}
    (own,) = summarise(verdicts, resolved, batch_scores=batch_scores)
    (facets,) = summarise(verdicts, resolved)  # without them: the per-output (facet) scores on the batch side
    assert "the two rank tests use a score that adds up small differences" in own.reason
    assert "adds up small differences" not in facets.reason
    assert own.tests is not None and facets.tests is not None
    assert own.tests["p_values"]["mann_whitney"] != facets.tests["p_values"]["mann_whitney"]


def test_batch_mmd_and_energy_compare_residual_embeddings(combined) -> None:  # type: ignore[no-untyped-def]
    baseline, _ = combined
    rows = [Record(row=i + 1, record_id=f"r{i}", model_version="m", input_class="c", input=f"0:{50000 + i % 60}",
                   output=f"0:{80000 + i}", extras={"prompt_id": f"q{i % 12}"}) for i in range(24)]
    embedder = WindowedFakeEmbedder()
    embedded = embedder.embed([r.output for r in rows])
    inputs = embed_inputs(embedder, [r.input for r in rows])  # type: ignore[arg-type]
    residuals: dict[int, np.ndarray] = {}
    verdicts = judge(baseline, "models:/m-c/1", rows, embedded, scored_at="t", inputs=inputs,  # type: ignore[arg-type]
                     batch_residuals=residuals)
    model = CombinedScorer.from_state({n: baseline.scorer[n] for n in CombinedScorer.PARAM_NAMES},
                                      baseline.scorer_state)
    expected = model.residual_embeddings(embedded.pooled(), inputs)
    assert np.allclose(np.stack([residuals[r.row] for r in rows]), expected)
    resolved = {("m", "c"): ("models:/m-c/1", baseline)}
    pooled = dict(zip((r.row for r in rows), embedded.pooled()))
    (res,) = summarise(verdicts, resolved, embeddings=pooled, residuals=residuals)
    (raw,) = summarise(verdicts, resolved, embeddings=pooled)
    assert res.tests is not None and raw.tests is not None
    assert str(res.tests["embeddings"]).startswith("residual embeddings")
    assert raw.tests["embeddings"] == "pooled output embeddings"
    assert "MMD and energy compare what each output says beyond what its input predicts" in res.reason
    assert "beyond what its input predicts" not in raw.reason
    assert res.tests["p_values"]["mmd"] != raw.tests["p_values"]["mmd"]


def test_combined_verdicts_report_input_novelty_apart(combined) -> None:  # type: ignore[no-untyped-def]
    baseline, _ = combined
    rows = tuple(
        [Record(row=i + 1, record_id=f"r{i}", model_version="m", input_class="c", input=f"0:{50000 + i}",
                output=f"0:{60000 + i}") for i in range(20)]
        + [Record(row=21, record_id="novel", model_version="m", input_class="c", input="9:70000", output="0:70001")]
    )
    result = score_record_set(RecordSet(path="<t>", rows=rows), lambda mv, ic: ("models:/m-c/1", baseline),
                              embedder=WindowedFakeEmbedder())  # type: ignore[arg-type]
    usual = [v for v in result.verdicts if v.record_id != "novel"]
    assert all("Its input is like the approved inputs" in v.reason for v in usual)
    assert all(0 < v.p_value <= 1 for v in result.verdicts)
    novel = result.verdicts[-1]
    assert "input itself lies outside the approved inputs" in novel.reason
    assert "combined" in (novel.test or "")


def test_unknown_scorer_is_refused() -> None:
    with pytest.raises(ValueError, match="scorer must be one of knn_cosine, combined, got 'bogus'"):
        build_baseline(_approved(40), scorer="bogus", embedder=WindowedFakeEmbedder())  # type: ignore[arg-type]


FORMAT2_OUTPUT_UNIT = Path(__file__).parent / "data" / "baseline_format2_output_unit"


def test_a_baseline_built_before_prompt_level_calibration_scores_exactly_as_it_did() -> None:
    # Built and scored by the release before prompt-weighted calibration and the combined-score
    # fix (commit d0feb02): its verdicts and p-values must come out exactly the same, and its scores to
    # within floating-point rounding, or `reconstruct` could not reproduce verdicts that the ledger
    # already holds. (Bit for bit until numpy 2.4.6: the score of r3 now differs in its 16th digit, as
    # numpy's releases may round; `reconstruct` compares scores to a relative 1e-9 for that reason.)
    import json

    expected = json.loads(FORMAT2_OUTPUT_UNIT.with_name(FORMAT2_OUTPUT_UNIT.name + ".expected.json").read_text())
    baseline = load_baseline(FORMAT2_OUTPUT_UNIT)
    assert baseline.digest == expected["digest"] and baseline.migrated_from == 2
    assert baseline.spec.p_value_rule == "output"  # what the release that built it did; it stored no rule
    rows = tuple(Record(row=i + 1, record_id=f"r{i}", model_version="m", input_class="c",
                        input=f"0:{50000 + i % 60}", output=f"{i % 2}:{9000 + i}") for i in range(40))
    result = score_record_set(RecordSet(path="<t>", rows=rows), lambda mv, ic: ("models:/m-c/1", baseline),
                              embedder=WindowedFakeEmbedder())  # type: ignore[arg-type]
    got = [{"record_id": v.record_id, "p_value": v.p_value, "score": v.score, "verdict": v.verdict}
           for v in result.verdicts]
    for g, e in zip(got, expected["verdicts"], strict=True):
        assert {**g, "score": None} == {**e, "score": None}
        assert same_value("score", e["score"], g["score"]), (g, e)
    assert sum(v["verdict"] == "out_of_bounds" for v in got) == 7


def test_reconstruct_compares_scores_to_within_rounding_and_everything_else_exactly() -> None:
    score = 2.577441438309348
    assert same_value("score", score, 2.5774414383093474)           # the 16th digit: numpy 2.4.6 against before
    assert not same_value("score", score, score * (1 + 1e-7))      # a real change of the score
    assert not same_value("p_value", 0.05, 0.0500001)
    assert not same_value("verdict", "within_bounds", "out_of_bounds")
    assert not same_value("reason", "p = 0.1", "p = 0.10000000001")  # text is compared exactly
    assert same_value("score", None, None) and not same_value("score", None, 0.0)


def test_each_older_format_migrates_to_an_explicit_scorer_specification(tmp_path: Path) -> None:
    from conformance.baseline.format import MIGRATIONS

    assert sorted(MIGRATIONS) == list(range(1, FORMAT_VERSION))  # every change of format has its migration
    old_knn = load_baseline(FORMAT1)
    assert (old_knn.spec.name, old_knn.spec.k, old_knn.spec.p_value_rule) == ("knn_cosine", 5, "output")
    assert (old_knn.spec.batch_unit, old_knn.spec.batch_score, old_knn.spec.batch_embedding) == (
        "output", "score", "pooled")
    assert old_knn.spec.delta is None and old_knn.spec.flag_threshold(old_knn.alpha) == old_knn.alpha
    old_combined = load_baseline(FORMAT2_OUTPUT_UNIT)
    spec = old_combined.spec
    assert spec.is_combined and spec.p_value_rule == "output" and spec.facet_calibration is None
    assert spec.batch_unit == "prompt"  # it carries its calibration prompt keys and per-record scores
    assert spec.combined_params is not None and spec.combined_params["combination"] == "smooth_max"
    assert spec.combined_params["relevance_neighbours"] == 0


def test_a_migrated_baseline_saved_again_is_a_new_artifact_of_the_current_format(tmp_path: Path) -> None:
    old = load_baseline(FORMAT2_OUTPUT_UNIT)
    folder = save_baseline(old, tmp_path / "again")
    again = load_baseline(folder)
    assert again.migrated_from is None and again.format_version == FORMAT_VERSION
    assert again.digest != old.digest  # new content, new identity: it must be registered and approved anew
    assert again.spec == old.spec
    rows = tuple(Record(row=i + 1, record_id=f"r{i}", model_version="m", input_class="c",
                        input=f"0:{50000 + i % 60}", output=f"{i % 2}:{9000 + i}") for i in range(10))
    before, after = (score_record_set(RecordSet(path="<t>", rows=rows), lambda mv, ic, b=b: ("u", b),
                                      embedder=WindowedFakeEmbedder())  # type: ignore[arg-type]
                     for b in (old, again))
    assert [(v.verdict, v.p_value, v.score) for v in before.verdicts] == [
        (v.verdict, v.p_value, v.score) for v in after.verdicts]


def test_a_current_baseline_lacking_a_field_of_its_specification_is_refused(combined) -> None:  # type: ignore[no-untyped-def]
    baseline, _ = combined
    with pytest.raises(BaselineError, match="lacks batch_unit"):
        replace(baseline, scorer={k: v for k, v in baseline.scorer.items() if k != "batch_unit"})


class TextFakeEmbedder:
    """Embeds any text as a fixed unit vector seeded by its SHA-256 (what wrote
    ``tests/data/baseline_format5_multilingual``)."""

    fingerprint = {"model": "fake-text", "source": "tests", "chunking": {"window": 254}}

    def embed(self, texts: list[str], **_: object) -> EmbeddedTexts:
        rows = []
        for t in texts:
            seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "big")
            v = 0.5 * np.random.default_rng(seed).normal(size=8) + 3 * np.eye(8)[0]
            rows.append(v / np.linalg.norm(v))
        return EmbeddedTexts(chunks=np.asarray(rows, dtype=np.float32), owner=np.arange(len(texts)),
                             n_tokens=np.array([len(t.split()) for t in texts]))


def _words(words: str, seed: int) -> str:
    return " ".join(np.random.default_rng(seed).choice(words.split(), size=40)) + "."


def _scored_as_printed(old, rows: list[Record], scores: list[float], p_values: list[float]):  # type: ignore[no-untyped-def]
    """``rows`` scored against the stored baseline ``old``: each score and p-value as its release printed them."""
    result = score_record_set(RecordSet(path="<test>", rows=tuple(rows)), lambda mv, ic: ("models:/m-c/1", old),
                              embedder=TextFakeEmbedder())  # type: ignore[arg-type]
    assert [v.score for v in result.verdicts] == pytest.approx(scores, abs=1e-9)
    assert [v.p_value for v in result.verdicts] == pytest.approx(p_values)
    return result


def test_a_format_5_baseline_scores_each_output_as_0_7_0_did() -> None:
    """A combined baseline written by 0.7.0 (format 5; 40 prompts, one in ten Spanish, answered in Spanish) has
    no input-relative descriptors: its language facet looks at the output alone and every score is 0.7.0's
    (printed by 0.7.0's code scoring the same 12 records: English, Spanish and German answers)."""
    english = "the list is sorted by a key that returns both fields so order holds"
    spanish = "la lista se ordena por una clave que devuelve los dos campos para el orden"
    german = "die Liste wird nach einem Schlüssel sortiert der beide Felder für die Ordnung liefert"
    old = load_baseline(Path(__file__).parent / "data" / "baseline_format5_multilingual")
    assert old.migrated_from == 5 and "foreign_function_words_vs_input" not in old.spec.components
    rows = []
    for i in range(12):
        q, a = [(english, english), (spanish, spanish), (english, german)][i % 3]
        rows.append(Record(row=i + 1, record_id=f"r{i}", model_version="m", input_class="c",
                           input=_words(q, 20_000 + i), output=_words(a, 30_000 + i), extras={"prompt_id": f"q{i}"}))
    result = _scored_as_printed(old, rows, [
        2.3832242678760247, 2.3566622269273934, 2.4611798272918284, 2.3402141771149476, 2.2911729245139894,
        2.5913475216549933, 2.2809420908632867, 2.235215160570893, 2.26030726477029, 2.2892379535562855,
        2.3052048862078616, 2.526955698601231], [0.1, 0.2, 0.1, 0.2, 0.2, 0.05, 0.25, 0.3, 0.25, 0.25, 0.2, 0.1])
    # Its batch verdict keeps the rule it was built with (format 7 migration): minP over the four statistics, with
    # the p-values 0.8.0's code gives for the same records.
    assert old.spec.batch_statistics == ("residual_mmd", "descriptor_mmd", "joint_mmd", "style_mmd")
    assert old.spec.batch_combination == "minP"
    (summary,) = result.summaries
    assert summary.tests is not None and summary.tests["combination"] == "minP"
    assert summary.tests["p_values"] == pytest.approx({"residual_mmd": 40 / 1001, "descriptor_mmd": 1 / 1001,
                                                       "joint_mmd": 1 / 1001, "style_mmd": 1 / 1001})
    assert summary.p_value == pytest.approx(2 / 1001) and "combined by minP" in summary.reason


_STEPS = "the list is sorted by a key that returns both fields so order holds and each step keeps it".split()


def _step_answer(seed: int, numbered: bool) -> str:
    """An answer of 2-4 lines: numbered steps after "Sure! Here is how:", or list items before "Hope this helps!"."""
    rng = np.random.default_rng(seed)
    lines = ["Sure! Here is how:"] if numbered else []
    for j in range(int(rng.integers(2, 5))):
        body = " ".join(rng.choice(_STEPS, size=int(rng.integers(5, 12))))
        lines.append((f"{j + 1}. " if numbered else "- ") + body)
    return "\n".join(lines if numbered else [*lines, "Hope this helps!"])


def _step_question(i: int) -> str:
    return " ".join(np.random.default_rng(10_000 + i).choice(_STEPS, size=12)) + "?"


def test_a_format_7_baseline_scores_as_0_9_0_did(tmp_path: Path) -> None:
    """A combined baseline written by 0.9.0 (format 7; 120 numbered-step answers to 40 prompts, ``TextFakeEmbedder``)
    keeps its batch rule (Fisher over joint and style, no shape statistic: its style counts hold no shape tokens),
    and scores 12 records, half of them list answers, with the scores and p-values 0.9.0's code printed. Built from
    the same records now, the baseline combines the shape statistic too."""
    old = load_baseline(Path(__file__).parent / "data" / "baseline_format7_fisher")
    assert old.migrated_from == 7 and old.spec.batch_statistics == ("joint_mmd", "style_mmd")
    assert old.batch_reference_style is not None and old.batch_reference_style[:, 2 * 65536:].nnz == 0
    audited = [Record(row=i + 1, record_id=f"r{i}", model_version="m", input_class="c", input=_step_question(100 + i),
                      output=_step_answer(30_000 + i, i % 2 == 0), extras={"prompt_id": f"q{i}"}) for i in range(12)]
    result = _scored_as_printed(old, audited, [
        2.1386305156465157, 1.874672743818977, 2.2342187689240443, 2.3162459324113183, 1.9683910406848302,
        2.0753495738781815, 2.047869968102486, 2.1560695610846974, 1.9809267426574313, 2.1914306082834067,
        2.669471296266198, 2.0252012884947046], [0.3, 0.75, 0.25, 0.15, 0.6, 0.4, 0.45, 0.3, 0.6, 0.25, 0.05, 0.45])
    (summary,) = result.summaries
    assert summary.tests is not None and summary.tests["combination"] == "fisher"
    assert summary.tests["p_values"] == pytest.approx({"joint_mmd": 11 / 1001, "style_mmd": 1 / 1001})
    assert summary.p_value == pytest.approx(2 / 1001) and "by 2 statistics" in summary.reason
    approved = [Record(row=k + 1, record_id=f"a{k}", model_version="m", input_class="c", input=_step_question(k % 40),
                       output=_step_answer(20_000 + k, True), extras={"prompt_id": f"p{k % 40}"}) for k in range(120)]
    rebuilt = build_baseline(approved, alpha=0.1, scorer="combined", embedder=TextFakeEmbedder())  # type: ignore[arg-type]
    assert rebuilt.spec.batch_statistics == ("joint_mmd", "style_mmd", "shape_mmd")
    assert rebuilt.batch_reference_style is not None and rebuilt.batch_reference_style[:, 2 * 65536:].nnz > 0


def test_a_format_7_baseline_naming_the_shape_statistic_is_refused() -> None:
    """Format 7 had no shape tokens: the migration refuses a format-7 scorer that names shape_mmd (one the digest
    would also refuse unless it was recomputed), rather than score it against empty shape counts."""
    from conformance.baseline.format import MIGRATIONS

    meta = json.loads((Path(__file__).parent / "data" / "baseline_format7_fisher" / "baseline.json").read_text())
    assert MIGRATIONS[7](meta, {})[0]["format_version"] == 8
    meta["scorer"]["batch_statistics"] = ["joint_mmd", "style_mmd", "shape_mmd"]
    with pytest.raises(BaselineError, match="cannot combine shape_mmd.*rebuild it"):
        MIGRATIONS[7](meta, {})
