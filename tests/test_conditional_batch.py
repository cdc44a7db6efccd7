"""The conditional batch test: exact level with whole prompts permuted, Fisher's and minP combinations, and power.

The level checks would fail if the features saw which side an output is on (a regression fitted on the reference
alone), if single outputs were permuted where a prompt has several alike outputs, or if a combination were
computed against anything but the same labellings.
"""

from __future__ import annotations

import hashlib
import zlib

import numpy as np
import pytest
from scipy import stats

from conformance.stats.conditional_batch import (
    STATISTICS,
    VERDICT_STATISTICS,
    _statistics,
    conditional_batch_test,
    fold_of,
    fisher_combination,
    min_p_combination,
)
from conformance.stats.components import ridge_coef, unit_rows
from conformance.stats.two_sample import block_labellings, sign_matrix
from conformance.stats.style import (
    BUCKETS,
    WIDTH,
    frequent_columns,
    style_counts,
    style_matrix,
    style_rows,
    tokens,
)

DIM = 16
ALPHA = 0.05


def _interval(k: int, n: int, level: float = 0.999) -> tuple[float, float]:
    lo = 0.0 if k == 0 else float(stats.beta.ppf((1 - level) / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - (1 - level) / 2, k + 1, n - k))
    return lo, hi


def _prompts(rng: np.random.Generator, n_prompts: int, coef: np.ndarray, tag: str, *, shift: float = 0.0,
             per_prompt: int = 2, exactly: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Outputs of ``n_prompts`` prompts, 1 to ``per_prompt`` each (``exactly``: ``per_prompt`` each); outputs of one
    prompt are much alike (a shared prompt effect), as a model's answers to one question are."""
    xs, ys, ds, keys = [], [], [], []
    for p in range(n_prompts):
        x = rng.normal(size=DIM)
        effect = x @ coef + 0.8 * rng.normal(size=DIM)
        for _ in range(per_prompt if exactly else int(rng.integers(1, per_prompt + 1))):
            y = effect + 0.2 * rng.normal(size=DIM)
            y[0] += shift
            xs.append(x)
            ys.append(y)
            ds.append([np.log1p(rng.poisson(50)), rng.poisson(0.2), abs(effect[1]) + 0.1 * rng.normal()])
            keys.append(f"{tag}{p}")
    return np.array(xs), np.array(ys), np.array(ds), keys


_FUNCTION_WORDS = [f"w{j}" for j in range(60)] + [",", ".", "!", "however", "certainly", "overall"]
_ZIPF = 1.0 / np.arange(1, len(_FUNCTION_WORDS) + 1)


def _texts(rng: np.random.Generator, keys: list[str], *, tilt: float = 1.0, topic_share: float = 0.3,
           opener: str = "", closer: str = "") -> list[str]:
    """One text per output: words of its prompt's topic (the same for every output of a prompt, as answers to one
    question share their subject) among function words and punctuation drawn by Zipf's law, a new line after each
    full stop; ``tilt`` multiplies how often "however", "certainly" and "overall" come (a change in how a model
    writes, not in what about); ``opener`` and ``closer`` are put before and after every text."""
    weights = _ZIPF.copy()
    weights[-3:] *= tilt
    weights /= weights.sum()
    out = []
    for key in keys:
        topic = np.random.default_rng(zlib.crc32(key.encode())).integers(0, 3000, size=5)
        words = [f"t{topic[rng.integers(5)]}" if rng.random() < topic_share
                 else _FUNCTION_WORDS[rng.choice(len(weights), p=weights)]
                 for _ in range(int(rng.integers(30, 90)))]
        out.append((opener + " ".join(words) + closer).replace(". ", ".\n"))
    return out


def _null_rate(draws: int, seed: int, *, broken: str | None = None, **rule: object) -> tuple[int, int]:
    rng = np.random.default_rng(seed)
    coef = rng.normal(size=(DIM, DIM)) / np.sqrt(DIM)
    flagged = 0
    for i in range(draws):
        batch = _prompts(rng, 15, coef, "b")
        reference = _prompts(rng, 60, coef, "r")
        if broken is None:
            p = conditional_batch_test(*batch, *reference, n_permutations=1000, seed=i,  # type: ignore[arg-type]
                                       style=style_counts(_texts(rng, batch[3])),
                                       reference_style=style_counts(_texts(rng, reference[3])), **rule).p_value
        else:
            p = _broken_p_value(batch, reference, broken, seed=i)
        flagged += p <= ALPHA
    return flagged, draws


def _broken_p_value(batch, reference, how: str, *, seed: int) -> float:  # type: ignore[no-untyped-def]
    """The test with one of its safeguards removed."""
    from conformance.stats.conditional_batch import conditional_features
    x = np.vstack([batch[0], reference[0]])
    y = np.vstack([batch[1], reference[1]])
    d = np.vstack([batch[2], reference[2]])
    keys = list(batch[3]) + list(reference[3])
    n_x = len(batch[3])
    if how == "reference_fit":
        # The regression fitted on the reference alone: its residuals are in-sample there, out of sample in the batch.
        xr, yr = unit_rows(reference[0]), unit_rows(reference[1])
        xm, ym = xr.mean(axis=0), yr.mean(axis=0)
        coef = np.linalg.solve((xr - xm).T @ (xr - xm) + 0.1 * np.eye(DIM), (xr - xm).T @ (yr - ym))
        residual = (unit_rows(y) - ym) - (unit_rows(x) - xm) @ coef
        on_x, member = block_labellings(keys[:n_x], keys[n_x:], 1000, np.random.default_rng(seed))
    elif how == "single_outputs":
        # Every output its own unit: outputs of one prompt, alike, are treated as independent.
        residual, _, _ = conditional_features(x, y, d, keys)
        ids = [f"{k}#{i}" for i, k in enumerate(keys)]
        on_x, member = block_labellings(ids[:n_x], ids[n_x:], 1000, np.random.default_rng(seed))
    else:
        raise ValueError(how)
    scaled = (d - d.mean(axis=0)) / d.std(axis=0)
    return min_p_combination(_statistics(sign_matrix(on_x, member), residual, scaled))[0]


@pytest.mark.slow
@pytest.mark.parametrize("rule", [{}, {"statistics": ("joint_mmd", "style_mmd"), "combination": "fisher"},
                                  {"statistics": STATISTICS[:4], "combination": "minP"}],
                         ids=["since-0.10.0", "0.9.0", "0.7.0"])
def test_null_batches_are_flagged_at_the_level(rule: dict[str, object]) -> None:
    """Under the null (batch and reference prompts alike, 1-2 alike outputs per prompt) the combined p-value is
    exact: its rate is inside the 99.9 % interval around alpha, not only below it, for the rule of new baselines
    (Fisher over joint and style) and for that of baselines built by 0.7.0-0.8.0 (minP over four)."""
    k, n = _null_rate(300, 7, **rule)
    lo, hi = _interval(k, n)
    assert lo <= ALPHA <= hi, k / n


@pytest.mark.slow
def test_a_regression_fitted_on_the_reference_alone_breaks_the_level() -> None:
    """Why the features are fitted on the pooled sample: fitted on the reference alone, its residuals are smaller
    than the batch's and null batches are flagged far above alpha."""
    k, n = _null_rate(60, 8, broken="reference_fit")
    assert _interval(k, n)[0] > 2 * ALPHA, k / n


@pytest.mark.slow
def test_permuting_single_outputs_breaks_the_level() -> None:
    """Why whole prompts move: with several alike outputs per prompt, permuting outputs flags null batches more
    often than alpha."""
    rng_seed = 9
    k, n = _null_rate(150, rng_seed, broken="single_outputs")
    assert _interval(k, n)[0] > ALPHA, k / n


def test_min_p_is_exact_and_not_diluted() -> None:
    rng = np.random.default_rng(0)
    # Exchangeable rows (every labelling alike): P(p <= alpha) is alpha, up to the grid of 1/(B + 1).
    hits = sum(min_p_combination(rng.normal(size=(1000, 5)))[0] <= ALPHA for _ in range(1500))
    lo, hi = _interval(hits, 1500)
    assert lo <= ALPHA <= hi
    # Five copies of one statistic: the combination costs nothing (Bonferroni would multiply by five).
    column = rng.normal(size=(1000, 1))
    column[0] = 2.5
    combined, each = min_p_combination(np.repeat(column, 5, axis=1))
    assert combined == pytest.approx(each[0])
    assert combined < min(1.0, 5 * each[0])


def test_fisher_is_exact_where_the_chi_square_formula_is_not() -> None:
    """Fisher's method over the same labellings keeps the level with statistics as alike as can be (two copies of
    one), where the textbook formula (-2 sum log p against chi-square with 2k degrees of freedom, which assumes
    independent p-values) flags nearly twice as often as alpha."""
    rng = np.random.default_rng(5)
    permuted = formula = 0
    draws = 1500
    for _ in range(draws):
        column = rng.normal(size=(1000, 1))
        combined, each = fisher_combination(np.repeat(column, 2, axis=1))
        permuted += combined <= ALPHA
        formula += stats.chi2.sf(-2 * np.log(each).sum(), 4) <= ALPHA
    lo, hi = _interval(permuted, draws)
    assert lo <= ALPHA <= hi, permuted / draws
    assert _interval(formula, draws)[0] > ALPHA, formula / draws  # 0.093 in theory: p <= exp(-9.49 / 4)
    # Two statistics each a little off: together they say more than either.
    rows = rng.normal(size=(1000, 2))
    rows[0] = [1.8, 1.8]
    combined, each = fisher_combination(rows)
    assert combined < min(each) and combined < min_p_combination(rows)[0]


def test_the_rule_is_checked() -> None:
    rng = np.random.default_rng(6)
    coef = rng.normal(size=(DIM, DIM)) / np.sqrt(DIM)
    batch, reference = _prompts(rng, 10, coef, "b"), _prompts(rng, 30, coef, "r")
    with pytest.raises(ValueError, match="combination must be one of minP, fisher"):
        conditional_batch_test(*batch, *reference, combination="bonferroni")
    with pytest.raises(ValueError, match="statistics must be distinct names"):
        conditional_batch_test(*batch, *reference, statistics=["joint_mmd", "joint_mmd"])
    with pytest.raises(ValueError, match="statistics must be distinct names"):
        conditional_batch_test(*batch, *reference, statistics=["energy"])
    with pytest.raises(ValueError, match="style_mmd needs style"):
        conditional_batch_test(*batch, *reference, statistics=["style_mmd"])


def test_power_against_a_change_in_what_outputs_say() -> None:
    """The outputs' embeddings shifted along one direction, their descriptors not: both rules see it far above
    alpha in 30 draws (P(at least 6 of 30 | alpha) = 0.016). The rule of baselines built since 0.9.0 sees it through
    the joint view only, where the residual embeddings weigh half, so less often than the rule of 0.6.0-0.8.0 with
    the residual statistic of its own (here 12 and 18 of 30); on the real swaps the residual statistic alone was
    never ahead of the joint one (docs/validation.md, section 10.1)."""
    rng = np.random.default_rng(1)
    coef = rng.normal(size=(DIM, DIM)) / np.sqrt(DIM)
    new = old = 0
    for i in range(30):
        reference = _prompts(rng, 80, coef, "r")
        batch = _prompts(rng, 20, coef, "b", shift=1.0)
        shifted = conditional_batch_test(*batch, *reference, seed=i)
        assert list(shifted.p_values) == ["joint_mmd"]  # without style counts, no style statistic
        assert shifted.combination == "fisher" and shifted.n_batch_prompts == 20
        new += shifted.p_value <= ALPHA
        before = conditional_batch_test(*batch, *reference, seed=i, statistics=STATISTICS[:3], combination="minP")
        assert list(before.p_values) == list(STATISTICS[:3]) and before.combination == "minP"
        old += before.p_value <= ALPHA
    assert new >= 6 and old >= 6, (new, old)
    same = conditional_batch_test(*_prompts(rng, 20, coef, "b"), *reference)
    assert same.p_value > ALPHA


def test_the_order_of_the_rows_changes_nothing() -> None:
    rng = np.random.default_rng(2)
    coef = rng.normal(size=(DIM, DIM)) / np.sqrt(DIM)
    batch, reference = _prompts(rng, 12, coef, "b", shift=0.3), _prompts(rng, 40, coef, "r")
    first = conditional_batch_test(*batch, *reference, seed=3)
    order = rng.permutation(len(batch[3]))
    shuffled = (batch[0][order], batch[1][order], batch[2][order], [batch[3][i] for i in order])
    second = conditional_batch_test(*shuffled, *reference, seed=3)
    assert second.p_values == pytest.approx(first.p_values, abs=1e-12)
    assert second.p_value == first.p_value


def test_the_ridge_is_the_same_through_either_system() -> None:
    """ridge_coef solves the primal system when rows outnumber dimensions, the dual otherwise: both are the same
    ridge solution, so the branch taken must not move a coefficient (checked against the other system's answer)."""
    rng = np.random.default_rng(4)
    for rows, dims in ((300, 24), (12, 24)):
        x, y = rng.normal(size=(rows, dims)), rng.normal(size=(rows, 3))
        primal = np.linalg.solve(x.T @ x + 0.7 * np.eye(dims), x.T @ y)
        dual = x.T @ np.linalg.solve(x @ x.T + 0.7 * np.eye(rows), y)
        assert np.allclose(primal, dual)
        assert np.allclose(ridge_coef(x, y, 0.7), primal, rtol=1e-10, atol=1e-12)
    assert not np.allclose(ridge_coef(x, y, 0.7), ridge_coef(x, y, 7.0))  # the penalty is used


def test_folds_follow_the_prompt_key_only() -> None:
    assert fold_of("prompt-1") == fold_of("prompt-1")
    assert {fold_of(f"p{i}") for i in range(100)} == set(range(5))


def test_errors() -> None:
    rng = np.random.default_rng(3)
    coef = np.eye(DIM)
    batch, reference = _prompts(rng, 5, coef, "b"), _prompts(rng, 20, coef, "r")
    with pytest.raises(ValueError, match="n_permutations"):
        conditional_batch_test(*batch, *reference, n_permutations=10)
    with pytest.raises(ValueError, match="one row per output"):
        conditional_batch_test(batch[0][:-1], *batch[1:], *reference)


# -- through the package: build keeps the reference, score runs the test --------------------------------------------

def _approved_records(n: int):  # type: ignore[no-untyped-def]
    from conformance.records import Record

    return [Record(row=i + 1, record_id=f"a{i}", model_version="m", input_class="c", input=f"0:{50000 + i % 60}",
                   output=f"0:{1000 + i}", extras={"prompt_id": f"p{i % 60}"}) for i in range(n)]


@pytest.fixture(scope="module")
def built_baseline():  # type: ignore[no-untyped-def]
    from conformance.baseline.fit import build_baseline
    from tests.test_stat_format import WindowedFakeEmbedder

    return build_baseline(_approved_records(240), alpha=0.1, scorer="combined", embedder=WindowedFakeEmbedder())  # type: ignore[arg-type]


def _audited(shift: int, n: int = 40):  # type: ignore[no-untyped-def]
    from conformance.records import Record, RecordSet

    rows = tuple(Record(row=i + 1, record_id=f"r{i}", model_version="m", input_class="c", input=f"0:{60000 + i % 20}",
                        output=f"{shift}:{3000 + i}", extras={"prompt_id": f"q{i % 20}"}) for i in range(n))
    return RecordSet(path="<test>", rows=rows)


def test_a_baseline_keeps_every_approved_output_for_the_batch_test(built_baseline, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    from conformance.baseline.format import load_baseline, save_baseline
    from conformance.errors import BaselineError

    b = built_baseline
    assert b.spec.batch_test == "conditional" and b.spec.batch_descriptors
    assert b.batch_reference_inputs is not None and b.batch_reference_outputs is not None
    assert b.batch_reference_descriptors is not None and b.batch_reference_prompt_keys is not None
    # Fit and calibration parts alike: every one of the 240 approved outputs, 60 prompts.
    assert b.batch_reference_inputs.shape[0] == 240 == len(b.batch_reference_prompt_keys)
    assert len(set(b.batch_reference_prompt_keys)) == 60
    assert b.batch_reference_descriptors.shape[1] == len(b.spec.batch_descriptors)
    folder = save_baseline(b, tmp_path / "b")
    loaded = load_baseline(folder)
    assert loaded.digest == b.digest and np.array_equal(loaded.batch_reference_outputs, b.batch_reference_outputs)
    assert loaded.batch_reference_prompt_keys == b.batch_reference_prompt_keys
    # The style counts of the same 240 outputs, as the texts give them, kept and read back exactly (format 5).
    from conformance.baseline.format import FORMAT_VERSION

    assert loaded.format_version == FORMAT_VERSION == 8 and loaded.batch_reference_style is not None
    # Which statistics its batch verdict combines, and how, is part of the approved artifact (format 7 on).
    assert loaded.spec.batch_statistics == VERDICT_STATISTICS == ("joint_mmd", "style_mmd", "shape_mmd")
    assert loaded.spec.batch_combination == "fisher"
    assert loaded.batch_reference_style.shape == (240, WIDTH) == (240, 3 * BUCKETS)
    assert (loaded.batch_reference_style != b.batch_reference_style).nnz == 0
    words = b.batch_reference_style[:, :2 * BUCKETS].sum(axis=1).A.ravel().round(5)
    assert sorted(map(str, words)) == ["2.0"] * 240
    # Each output's shape tokens (format 8): its one line's opening, and its first and last three tokens.
    assert np.all(np.diff(b.batch_reference_style[:, 2 * BUCKETS:].indptr) >= 4)
    # The reference is part of the approved artifact: changing one value of it is refused.
    altered = tmp_path / "altered"
    shutil.copytree(folder, altered)
    arrays = dict(np.load(altered / "arrays.npz", allow_pickle=False))
    arrays["batch_reference_outputs"] = arrays["batch_reference_outputs"].copy()
    arrays["batch_reference_outputs"][0, 0] += 0.5
    np.savez(altered / "arrays.npz", **arrays)
    with pytest.raises(BaselineError, match="does not match its digest"):
        load_baseline(altered)
    # So is changing a style count.
    shutil.copytree(folder, tmp_path / "altered_style")
    arrays = dict(np.load(tmp_path / "altered_style" / "arrays.npz", allow_pickle=False))
    arrays["batch_reference_style_values"] = arrays["batch_reference_style_values"].copy()
    arrays["batch_reference_style_values"][3] *= 2
    np.savez(tmp_path / "altered_style" / "arrays.npz", **arrays)
    with pytest.raises(BaselineError, match="does not match its digest"):
        load_baseline(tmp_path / "altered_style")


def test_score_runs_the_conditional_test_and_says_what_it_did(built_baseline) -> None:  # type: ignore[no-untyped-def]
    from conformance.scoring import score_record_set
    from tests.test_stat_format import WindowedFakeEmbedder

    def run(shift: int):  # type: ignore[no-untyped-def]
        return score_record_set(_audited(shift), lambda mv, ic: ("models:/m-c/1", built_baseline),
                                embedder=WindowedFakeEmbedder())  # type: ignore[arg-type]

    same, moved = run(0).summaries[0], run(1).summaries[0]
    for summary in (same, moved):
        assert summary.tests is not None and summary.tests["test"] == "conditional"
        assert list(summary.tests["p_values"]) == ["joint_mmd", "style_mmd", "shape_mmd"]
        assert summary.tests["combination"] == "fisher"
        assert summary.tests["n_reference"] == 240 and summary.tests["n_batch_prompts"] == 20
        assert "by 3 statistics" in summary.reason and "combined by Fisher's method" in summary.reason
        assert "every approved output" in summary.reason
    assert same.verdict == "within_bounds", same.reason
    assert moved.verdict == "out_of_bounds" and moved.p_value is not None and moved.p_value <= 0.01, moved.reason
    assert "as a batch, they differ from approved outputs" in moved.reason


def test_a_baseline_built_before_keeps_its_calibration_tests(built_baseline) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    from conformance.scoring import score_record_set
    from tests.test_stat_format import WindowedFakeEmbedder

    # As a baseline stored in format 3 (before 0.6.0) loads: its migration says which batch test it was built with.
    scorer = {k: v for k, v in built_baseline.scorer.items() if k != "batch_descriptors"}
    scorer["batch_test"] = "calibration"
    older = replace(built_baseline, scorer=scorer, batch_reference_inputs=None, batch_reference_outputs=None,
                    batch_reference_descriptors=None, batch_reference_prompt_keys=None)
    assert older.spec.batch_test == "calibration"
    summary = score_record_set(_audited(1), lambda mv, ic: ("models:/m-c/1", older),
                               embedder=WindowedFakeEmbedder()).summaries[0]  # type: ignore[arg-type]
    assert summary.tests is not None and set(summary.tests["p_values"]) == {
        "mann_whitney", "kolmogorov_smirnov", "mmd", "energy"}
    assert "combined by Bonferroni" in summary.reason


def test_stored_baselines_of_earlier_formats_keep_their_batch_tests() -> None:
    from pathlib import Path

    from conformance.baseline.format import load_baseline

    for name in ("baseline_format1", "baseline_format2_output_unit"):
        loaded = load_baseline(Path(__file__).parent / "data" / name)
        assert loaded.spec.batch_test == "calibration" and loaded.batch_reference_inputs is None


def test_power_against_a_change_in_words_alone() -> None:
    """Embeddings and descriptors drawn alike, only the frequency of three words changed: the style statistic sees
    it (and both rules' combinations with it), the three others do not."""
    rng = np.random.default_rng(4)
    coef = rng.normal(size=(DIM, DIM)) / np.sqrt(DIM)
    reference = _prompts(rng, 80, coef, "r")
    batch = _prompts(rng, 25, coef, "b")
    ref_style = style_counts(_texts(rng, reference[3]))
    tilted_style = style_counts(_texts(rng, batch[3], tilt=8.0))
    tilted = conditional_batch_test(*batch, *reference, style=tilted_style, reference_style=ref_style)
    assert list(tilted.p_values) == list(VERDICT_STATISTICS)
    # Fisher's method pays for each statistic that sees nothing: over three, the combination flags this one-facet
    # change at alpha; over 0.9.0's two, at 0.01 (docs/method.md, the trade-off).
    assert tilted.p_values["style_mmd"] <= 0.005 and tilted.p_value <= ALPHA, tilted.p_values
    two = conditional_batch_test(*batch, *reference, style=tilted_style, reference_style=ref_style,
                                 statistics=("joint_mmd", "style_mmd"))
    assert two.p_value <= 0.01 and two.p_value < tilted.p_value
    every = conditional_batch_test(*batch, *reference, style=style_counts(_texts(rng, batch[3], tilt=8.0)),
                                   reference_style=ref_style, statistics=STATISTICS, combination="minP")
    assert list(every.p_values) == list(STATISTICS) and every.p_value <= 0.01
    assert min(every.p_values[name] for name in STATISTICS[:3]) > 0.01
    same = conditional_batch_test(*batch, *reference, style=style_counts(_texts(rng, batch[3])),
                                  reference_style=ref_style)
    assert same.p_values["style_mmd"] > tilted.p_values["style_mmd"]
    with pytest.raises(ValueError, match="both or neither"):
        conditional_batch_test(*batch, *reference, style=ref_style)


def test_power_against_a_change_in_how_answers_open_and_close() -> None:
    """The same words, moved: every batch answer ends with "certainly !" where the reference's begin with it. The
    words' frequencies are the same (two pairs of ~60 differ), the answers' openings and closings are not: the shape
    statistic sees it, and the combination with it."""
    rng = np.random.default_rng(5)
    coef = rng.normal(size=(DIM, DIM)) / np.sqrt(DIM)
    reference = _prompts(rng, 80, coef, "r")
    batch = _prompts(rng, 25, coef, "b")
    ref_style = style_counts(_texts(rng, reference[3], opener="certainly ! "))
    moved = conditional_batch_test(*batch, *reference, style=style_counts(_texts(rng, batch[3], closer=" certainly !")),
                                   reference_style=ref_style)
    assert moved.p_values["shape_mmd"] <= 0.005 and moved.p_value <= 0.01, moved.p_values
    assert moved.p_values["style_mmd"] > 0.05 and moved.p_values["joint_mmd"] > 0.05, moved.p_values
    # 0.9.0's rule, without the shape statistic, does not see it.
    moved_style = style_counts(_texts(rng, batch[3], closer=" certainly !"))
    before = conditional_batch_test(*batch, *reference, style=moved_style, reference_style=ref_style,
                                    statistics=("joint_mmd", "style_mmd"))
    assert before.p_value > 0.05, before.p_values
    same = conditional_batch_test(*batch, *reference, style=style_counts(_texts(rng, batch[3], opener="certainly ! ")),
                                  reference_style=ref_style)
    assert same.p_values["shape_mmd"] > 0.05, same.p_values


def test_style_counts_are_a_fixed_function_of_the_text() -> None:
    texts = ["Certainly! Here's the answer: 42.", "", "  ", "Über naïve café — déjà vu?", "a " * 500]
    counts = style_counts(texts)
    assert counts.shape == (5, WIDTH) and counts.dtype == np.float32
    assert tokens(texts[0]) == ["certainly", "!", "here's", "the", "answer", ":", "42", "."]
    assert counts[1].nnz == 0 and counts[2].nnz == 0  # no tokens: a row of zeros, not an error
    sums = np.asarray(counts[:, :2 * BUCKETS].sum(axis=1)).ravel()
    assert sums[0] == pytest.approx(2.0) and sums[3] == pytest.approx(2.0) and sums[4] == pytest.approx(2.0)
    # The shape block: one line (its first two tokens, weight 1) and the first and last three tokens (weight 1 each;
    # "a " * 500 has one distinct token at each place but "open0:a" and "close0:a" are different keys).
    shape = counts[:, 2 * BUCKETS:]
    assert np.asarray(shape.sum(axis=1)).ravel()[[0, 4]] == pytest.approx([7.0, 7.0])
    line = int.from_bytes(hashlib.sha256(b"line:certainly !").digest()[:8], "big") % BUCKETS
    assert counts[0, 2 * BUCKETS + line] == pytest.approx(1.0)
    # The same in every process and release: buckets come from SHA-256, not Python's salted hash.
    certainly = int.from_bytes(hashlib.sha256(b"certainly").digest()[:8], "big") % BUCKETS
    assert counts[0, certainly] == pytest.approx(1 / 8)
    again = style_counts(list(reversed(texts)))
    assert (again[::-1] != counts).nnz == 0
    # The accumulator's form round-trips exactly.
    assert (style_matrix(style_rows(counts)) != counts).nnz == 0
    # The kept columns: the most used, unigrams first, never an unused bucket.
    cols = frequent_columns(counts, top=3)
    assert len(cols) == 6 and np.all(cols[:3] < BUCKETS) and np.all((cols[3:] >= BUCKETS) & (cols[3:] < 2 * BUCKETS))
    assert np.all(np.asarray((counts[:, cols] > 0).sum(axis=0)).ravel() > 0)
    shape_cols = frequent_columns(counts, top=3, blocks=("shape",))
    assert len(shape_cols) == 3 and np.all(shape_cols >= 2 * BUCKETS)
    with pytest.raises(ValueError, match="unknown style block"):
        frequent_columns(counts, blocks=("trigrams",))
    # Counts of the width older baselines stored (two blocks) are refused here: the format reads them at full width.
    with pytest.raises(ValueError, match="must have shape"):
        frequent_columns(counts[:, :2 * BUCKETS])


def test_a_conditional_baseline_of_format_4_keeps_its_three_statistics() -> None:
    """A baseline written by 0.6.0 (format 4, built with ``WindowedFakeEmbedder`` from 90 outputs of 30 prompts)
    loads with its digest, has no style counts, and its batch test is the conditional one without ``style_mmd``."""
    from pathlib import Path

    from conformance.baseline.format import load_baseline
    from conformance.scoring import score_record_set
    from tests.test_stat_format import WindowedFakeEmbedder

    old = load_baseline(Path(__file__).parent / "data" / "baseline_format4_conditional")
    assert old.migrated_from == 4 and old.spec.batch_test == "conditional"
    assert old.batch_reference_inputs is not None and old.batch_reference_style is None
    summary = score_record_set(_audited(1, n=20), lambda mv, ic: ("models:/m-c/1", old),
                               embedder=WindowedFakeEmbedder()).summaries[0]  # type: ignore[arg-type]
    assert summary.tests is not None and summary.tests["test"] == "conditional"
    assert list(summary.tests["p_values"]) == list(STATISTICS[:3]) and summary.tests["combination"] == "minP"
    assert old.spec.batch_statistics == STATISTICS[:3] and old.spec.batch_combination == "minP"
    assert "by 3 statistics" in summary.reason and "style" not in summary.reason
    assert "combined by minP" in summary.reason


def _style_null_rate(draws: int, seed: int, *, with_own_pairs: bool) -> tuple[int, int]:
    """Null batches whose prompts have one output each against a reference whose prompts have three (audited
    outputs one per prompt, approved evaluation runs sampling each prompt several times): the style statistic's
    own p-value at alpha, as the test computes it or with each prompt's pairs with itself kept."""
    from conformance.stats.conditional_batch import conditional_features

    rng = np.random.default_rng(seed)
    coef = rng.normal(size=(DIM, DIM)) / np.sqrt(DIM)
    flagged = 0
    for i in range(draws):
        batch = _prompts(rng, 20, coef, "b", per_prompt=1)
        reference = _prompts(rng, 40, coef, "r", per_prompt=3, exactly=True)
        # Function words only: each output's words drawn on their own, so its own pairs weigh most.
        style = style_counts(_texts(rng, batch[3], topic_share=0.0))
        ref_style = style_counts(_texts(rng, reference[3], topic_share=0.0))
        if not with_own_pairs:
            p = conditional_batch_test(*batch, *reference, seed=i, style=style, reference_style=ref_style).p_values[
                "style_mmd"]
        else:
            from scipy import sparse

            keys = list(batch[3]) + list(reference[3])
            _, _, s = conditional_features(np.vstack([batch[0], reference[0]]), np.vstack([batch[1], reference[1]]),
                                           np.vstack([batch[2], reference[2]]), keys,
                                           style=sparse.vstack([style, ref_style], format="csr"))
            assert s is not None
            on_x, member = block_labellings(keys[:len(batch[3])], keys[len(batch[3]):], 1000, np.random.default_rng(i))
            diff = sign_matrix(on_x, member) @ s
            t = np.einsum("bj,bj->b", diff, diff)
            p = float(np.mean(t >= t[0] * (1 - 1e-12)))
        flagged += p <= ALPHA
    return flagged, draws


@pytest.mark.slow
def test_the_style_statistic_keeps_its_level_when_the_sides_have_different_outputs_per_prompt() -> None:
    """Why the style statistic leaves out each prompt's pairs with itself: with them, a batch of one output per
    prompt looks unlike a reference of three per prompt whatever the words (each output's squared norm, ~400,
    weighs 1/n² on its side), and null batches are flagged far above alpha; without them, at most at alpha."""
    k, n = _style_null_rate(120, 11, with_own_pairs=False)
    assert _interval(k, n)[1] >= ALPHA and k / n <= 2 * ALPHA, k / n
    k_kept, n_kept = _style_null_rate(40, 11, with_own_pairs=True)
    assert _interval(k_kept, n_kept)[0] > 2 * ALPHA, k_kept / n_kept


def test_a_stored_conditional_rule_is_read_and_checked(built_baseline) -> None:  # type: ignore[no-untyped-def]
    """Format 7 stores the batch verdict's statistics and combination; the spec refuses a scorer without them or with
    names it does not know, with what to do."""
    from conformance.baseline.spec import ScorerSpec
    from conformance.errors import BaselineError

    scorer = dict(built_baseline.scorer)
    assert ScorerSpec.from_stored(scorer).batch_statistics == ("joint_mmd", "style_mmd", "shape_mmd")
    with pytest.raises(BaselineError, match="lacks batch_statistics or batch_combination.*migrated when loaded"):
        ScorerSpec.from_stored({k: v for k, v in scorer.items() if k != "batch_combination"})
    with pytest.raises(BaselineError, match="batch_statistics must name some of residual_mmd"):
        ScorerSpec.from_stored(scorer | {"batch_statistics": ["energy"]})
    with pytest.raises(BaselineError, match="batch_combination must be one of minP, fisher, got 'sum'"):
        ScorerSpec.from_stored(scorer | {"batch_combination": "sum"})


def test_a_reason_says_why_one_small_p_value_is_not_a_verdict() -> None:
    """A reviewer who sees one test's p-value at or below alpha beside a batch within bounds is told why; with the
    combination at or below alpha, or only one test, nothing of the kind is said."""
    from conformance.scoring.reasons import conditional_conclusion

    within = conditional_conclusion(0.093, {"joint_mmd": 0.017, "style_mmd": 0.997}, {}, 0.05)
    assert within.startswith("as a batch, no difference from approved outputs is found; joint mmd alone is at or "
                             "below alpha, but the verdict rests on the tests combined")
    assert "joint mmd" not in conditional_conclusion(0.3, {"joint_mmd": 0.2, "style_mmd": 0.4}, {}, 0.05)
    assert "alone" not in conditional_conclusion(0.06, {"joint_mmd": 0.06}, {}, 0.05)
    out = conditional_conclusion(0.01, {"joint_mmd": 0.004, "style_mmd": 0.5}, {}, 0.05)
    assert out.startswith("as a batch, they differ from approved outputs: what they say and how they are written")
