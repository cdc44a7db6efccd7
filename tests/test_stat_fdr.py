"""Benjamini-Hochberg over a batch's conformal p-values, and scoring with batch tests, without the embedder.

A fake embedder maps each output text to a fixed synthetic unit vector, so the
whole of ``score_record_set`` (verdicts, batch tests, FDR) runs in milliseconds.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from conformance.baseline.format import Baseline, with_digest
from conformance.baseline.spec import explicit_scorer
from conformance.stats.conformal import benjamini_hochberg, conformal_p_values
from conformance.embedder import EmbeddedTexts
from conformance.records import Record, RecordSet
from conformance.stats.knn import knn_cosine_distances
from conformance.scoring import score_record_set
from conformance.verdict import OUT

DIM = 8


def test_bh_pinned() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.5, 0.002, 0.2])
    result = benjamini_hochberg(p, 0.1)
    # sorted: .002 .01 .03 .04 .2 .5 vs k*0.1/6: .0167 .033 .05 .0667 .083 .1 -> k = 4
    assert result.flags.tolist() == [True, True, True, False, True, False]
    assert result.threshold == pytest.approx(4 * 0.1 / 6)
    assert result.n_flagged == 4 and result.n_tested == 6
    assert benjamini_hochberg(np.array([0.5, 0.9]), 0.1).threshold is None
    assert benjamini_hochberg(np.array([]), 0.1).n_flagged == 0


@pytest.mark.parametrize("q", [0.0, 1.0, -0.1, True])
def test_bh_rejects_bad_q(q: float) -> None:
    with pytest.raises(ValueError, match=r"fdr \(the target false discovery rate q\) must be in \(0, 1\), got"):
        benjamini_hochberg(np.array([0.1]), q)


def test_bh_rejects_p_values_out_of_range() -> None:
    with pytest.raises(ValueError, match=r"p_values must lie in \(0, 1\]"):
        benjamini_hochberg(np.array([0.0, 0.5]), 0.1)


def test_bh_realised_fdr_on_conformal_p_values_sharing_a_calibration_set() -> None:
    """Mixed batches (80 % approved-like, 20 % shifted) scored against one calibration
    set per draw: the mean false discovery proportion stays at or below q (95 % interval)."""
    rng = np.random.default_rng(11)
    q, draws, n_cal, n_null, n_alt = 0.1, 2000, 200, 40, 10
    fdp = np.empty(draws)
    for d in range(draws):
        cal = np.sort(rng.normal(size=n_cal))
        s = np.concatenate([rng.normal(size=n_null), rng.normal(loc=2.5, size=n_alt)])
        flags = benjamini_hochberg(conformal_p_values(s, cal), q).flags
        fdp[d] = flags[:n_null].sum() / max(1, flags.sum())
    half = stats.norm.ppf(0.975) * fdp.std(ddof=1) / np.sqrt(draws)
    assert fdp.mean() - half <= q, fdp.mean()
    assert fdp.mean() > q / 3  # BH is not trivially conservative here: the test can fail


# -- scoring without the embedder -------------------------------------------------------------


class FakeEmbedder:
    """Embeds ``"<shift>:<seed>"`` as a fixed unit vector: approved outputs cluster around e0,
    a shift moves an output towards e1."""

    fingerprint = {"model": "fake", "source": "tests"}

    def embed(self, texts: list[str], **_: object) -> EmbeddedTexts:
        rows = []
        for text in texts:
            centre, seed = text.split(":")
            noise = 0.5 * np.random.default_rng(int(seed)).normal(size=DIM)
            v = noise + 3 * np.eye(DIM)[0] + float(centre) * np.eye(DIM)[1]
            rows.append(v / np.linalg.norm(v))
        chunks = np.asarray(rows, dtype=np.float32).reshape(-1, DIM)
        return EmbeddedTexts(chunks=chunks, owner=np.arange(len(texts)), n_tokens=np.full(len(texts), 10))


def _baseline() -> Baseline:
    embed = FakeEmbedder().embed
    fit = embed([f"0:{i}" for i in range(100)])
    cal = embed([f"0:{i}" for i in range(1000, 1100)])
    cal_scores, _ = knn_cosine_distances(cal.chunks, fit.chunks, 5)
    return with_digest(Baseline(
        model_version="m", input_class="c", alpha=0.05,
        scorer=explicit_scorer({"name": "knn_cosine", "k": 5, "chunk_pooling": "max"}),
        reference=fit.chunks, reference_owner=fit.owner, calibration_scores=np.sort(cal_scores),
        calibration_embeddings=cal.pooled(),
        reference_records=[{"record_id": f"f{i}", "input": "q", "output": "o"} for i in range(100)],
        calibration_record_ids=[f"c{i}" for i in range(100)], descriptors={}, embedder=FakeEmbedder.fingerprint,
        lineage={},
    ))


def _records(texts: list[str]) -> RecordSet:
    rows = tuple(Record(row=i + 1, record_id=f"r{i}", model_version="m", input_class="c", input="q", output=t)
                 for i, t in enumerate(texts))
    return RecordSet(path="<test>", rows=rows)


@pytest.fixture(scope="module")
def baseline() -> Baseline:
    return _baseline()


def _score(baseline: Baseline, texts: list[str], fdr: float | None = None):  # type: ignore[no-untyped-def]
    return score_record_set(_records(texts), lambda mv, ic: ("models:/m-c/1", baseline),
                            embedder=FakeEmbedder(), fdr=fdr)  # type: ignore[arg-type]


def test_summary_keeps_its_keys_and_adds_each_test(baseline: Baseline) -> None:
    result = _score(baseline, [f"0:{i}" for i in range(5000, 5030)])
    summary = result.summaries[0].to_dict()
    for key in ("model_version", "input_class", "n", "within_bounds", "out_of_bounds", "no_baseline", "invalid",
                "p_value", "verdict"):
        assert key in summary
    assert set(summary["tests"]["p_values"]) == {"mann_whitney", "kolmogorov_smirnov", "mmd", "energy"}
    assert summary["tests"]["n_permutations"] >= 1000 and "seed" in summary["tests"]
    assert summary["verdict"] == "within_bounds"
    assert "fdr" not in summary and "bh_flag" not in result.verdicts[0].to_dict()


def test_shifted_batch_is_caught_by_the_batch_tests(baseline: Baseline) -> None:
    result = _score(baseline, [f"1.5:{i}" for i in range(6000, 6030)])
    summary = result.summaries[0]
    assert summary.verdict == OUT and summary.tests is not None
    assert summary.tests["p_values"]["energy"] < 0.01


def test_fdr_flags_without_changing_verdicts(baseline: Baseline) -> None:
    texts = [f"0:{i}" for i in range(7000, 7040)] + [f"6:{i}" for i in range(7100, 7110)]
    plain = _score(baseline, texts)
    with_fdr = _score(baseline, texts, fdr=0.1)
    assert [v.verdict for v in plain.verdicts] == [v.verdict for v in with_fdr.verdicts]
    assert [v.reason for v in plain.verdicts] == [v.reason for v in with_fdr.verdicts]
    flags = [v.bh_flag for v in with_fdr.verdicts]
    assert all(f is not None for f in flags) and sum(flags[40:]) == 10  # every shifted output flagged
    fdr = with_fdr.summaries[0].fdr
    assert fdr is not None and fdr["q"] == 0.1 and fdr["n_flagged"] == sum(flags) == fdr["n_flagged_in_group"]
    assert fdr["threshold"] == pytest.approx(0.1 * sum(flags) / 50)
    assert with_fdr.verdicts[0].to_dict()["bh_flag"] in (True, False)
    with pytest.raises(ValueError, match="must be in"):
        _score(baseline, texts, fdr=1.5)


def test_batch_order_changes_no_verdict_or_batch_result(baseline: Baseline) -> None:
    texts = [f"0.7:{i}" for i in range(8000, 8025)]
    first = _score(baseline, texts, fdr=0.2)
    order = np.random.default_rng(0).permutation(len(texts))
    again = _score(baseline, [texts[i] for i in order], fdr=0.2)
    by_text = {v.record["output"]: (v.verdict, v.p_value, v.bh_flag) for v in first.verdicts}
    assert all(by_text[v.record["output"]] == (v.verdict, v.p_value, v.bh_flag) for v in again.verdicts)
    assert first.summaries[0].tests["p_values"] == again.summaries[0].tests["p_values"]  # type: ignore[index]
