"""The guarantee of the combined input-conditional score, measured on synthetic draws.

For continuous scores the split-conformal rule ``p <= alpha`` flags an
approved-distribution output with probability exactly
``floor(alpha (n+1)) / (n+1)``. The tests compare the measured rate with that
exact value inside a 99.9 % binomial interval, so they fail if the ``+1``s are
dropped, if calibration rows leak into the fit part, or if the combined score
ties (which makes the rate fall below it).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from conformance.stats.combined import CombinedScorer
from conformance.stats.components import oas_precision
from conformance.stats.conformal import calibration_conditional_threshold, conformal_p_values
from conformance.stats.descriptors import DESCRIPTOR_UNITS, DESCRIPTORS, SCORE_DESCRIPTORS, describe

DIM, N_FIT, N_CAL, N_TEST = 12, 60, 19, 40


def _draw(
    rng: np.random.Generator, n: int, coef: np.ndarray, extra: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exchangeable (input, output, descriptors) rows: output depends on input; descriptors include counts
    (and ``extra`` more continuous columns)."""
    x = rng.normal(size=(n, DIM)) + 3 * np.eye(DIM)[0]  # inputs cluster, as embeddings do
    y = x @ coef + 0.5 * rng.normal(size=(n, DIM))
    d = np.column_stack([rng.normal(size=n), rng.poisson(0.3, size=n), rng.integers(0, 3, size=n),
                         *rng.normal(size=(extra, n))])
    return y, x, d


def _interval(k: int, n: int, level: float = 0.999) -> tuple[float, float]:
    lo = 0.0 if k == 0 else stats.beta.ppf((1 - level) / 2, k, n - k + 1)
    hi = 1.0 if k == n else stats.beta.ppf(1 - (1 - level) / 2, k + 1, n - k)
    return float(lo), float(hi)


def _false_alarms(
    alpha: float, *, leak: bool = False, plus_one: bool = True, draws: int = 300, names: tuple[str, ...] | None = None,
) -> tuple[int, int]:
    rng = np.random.default_rng(123)
    coef = rng.normal(size=(DIM, DIM)) / math.sqrt(DIM)
    flagged = total = 0
    for _ in range(draws):
        y, x, d = _draw(rng, N_FIT + N_CAL + N_TEST, coef, extra=0 if names is None else len(names) - 3)
        fit, cal, test = slice(0, N_FIT), slice(N_FIT, N_FIT + N_CAL), slice(N_FIT + N_CAL, None)
        if leak:  # the calibration rows are also in the fit bank: the broken split
            fit = slice(0, N_FIT + N_CAL)
        scorer = CombinedScorer(k=3, descriptor_names=names).fit(y[fit], x[fit], d[fit], groups=np.arange(fit.stop))
        scorer.conformalize(y[cal], x[cal], d[cal])
        if plus_one:
            p = scorer.p_values(y[test], x[test], d[test])
        else:  # the broken formula #{cal >= s} / n
            s = scorer.score_samples(y[test], x[test], d[test])
            p = (N_CAL - np.searchsorted(scorer.calibration_scores_, s, side="left")) / N_CAL
        flagged += int(np.sum(p <= alpha))
        total += p.size
    return flagged, total


@pytest.mark.slow
@pytest.mark.parametrize("alpha", [0.1, 0.08])
@pytest.mark.parametrize("names", [None, ("log_tokens", "heading_lines", "list_lines"),
                                   ("non_ascii_letters", "non_ascii_letters_vs_input", "foreign_function_words",
                                    "foreign_function_words_vs_input")])
def test_false_alarm_rate_is_exactly_the_conformal_level(alpha: float, names: tuple[str, ...] | None) -> None:
    """Unnamed descriptors are facets of their own; named, the two counts share the format facet (their
    log-compressed mean, a discrete value), or the four language columns the language facet (the larger of
    two pairs' smaller values), and the rate must still be exact: no ties."""
    exact = math.floor(alpha * (N_CAL + 1)) / (N_CAL + 1)  # 0.10 and 0.05 with 19 calibration rows
    k, n = _false_alarms(alpha, names=names)
    lo, hi = _interval(k, n)
    assert lo <= exact <= hi, (k / n, exact)
    assert lo <= alpha  # the guarantee itself: not significantly above alpha


@pytest.mark.slow
def test_dropping_the_plus_ones_is_detected() -> None:
    k, n = _false_alarms(0.08, plus_one=False)
    assert _interval(k, n)[0] > 0.08  # the broken p-value flags about 10 %, above alpha


def test_leaking_calibration_into_the_fit_part_is_detected() -> None:
    k, n = _false_alarms(0.1, leak=True, draws=120)
    assert _interval(k, n)[0] > 0.1  # calibration scores too small -> too many false alarms


def _conformalized(*, seed: int, n: int, n_fit: int, n_cal: int, coef_scale: float = 1.0):  # type: ignore[no-untyped-def]
    """A combined scorer fitted on the first ``n_fit`` of ``n`` draws and conformalized on the next ``n_cal``."""
    rng = np.random.default_rng(seed)
    coef = rng.normal(size=(DIM, DIM)) * coef_scale
    y, x, d = _draw(rng, n, coef)
    scorer = CombinedScorer().fit(y[:n_fit], x[:n_fit], d[:n_fit], groups=np.arange(n_fit)).conformalize(
        y[n_fit:n_fit + n_cal], x[n_fit:n_fit + n_cal], d[n_fit:n_fit + n_cal])
    return scorer, (y, x, d)


def test_combined_score_has_no_ties_even_with_count_descriptors() -> None:
    rng = np.random.default_rng(1)
    coef = rng.normal(size=(DIM, DIM))
    y, x, d = _draw(rng, 200, coef)
    scorer = CombinedScorer().fit(y[:100], x[:100], d[:100], groups=np.arange(100))
    s = scorer.score_samples(y[100:], x[100:], d[100:])
    assert np.unique(s).size == s.size


def test_power_against_an_output_unusual_for_its_input() -> None:
    """Outputs answering another input: typical as outputs, atypical for their input."""
    scorer, (y, x, d) = _conformalized(seed=2, n=300, n_fit=150, n_cal=100, coef_scale=1 / math.sqrt(DIM))
    swapped = scorer.p_values(y[250:][::-1], x[250:], d[250:])  # outputs paired with the wrong inputs
    honest = scorer.p_values(y[250:], x[250:], d[250:])
    assert np.mean(swapped <= 0.05) > 0.5 > np.mean(honest <= 0.05)


def test_input_novelty_is_reported_apart() -> None:
    scorer, (y, x, d) = _conformalized(seed=3, n=200, n_fit=100, n_cal=90)
    novel = scorer.input_p_values(x[190:] - 6 * np.eye(DIM)[0])
    assert np.all(novel <= 0.05)
    assert np.all(scorer.input_p_values(x[190:]) > 0)


def test_descriptor_units_bound_the_z_of_a_descriptor_that_was_constant_on_the_fit_part() -> None:
    rng = np.random.default_rng(7)
    y, x = rng.normal(size=(60, 4)), rng.normal(size=(60, 4))
    d = np.zeros((60, 2))
    d[:, 0] = rng.normal(size=60)  # a continuous descriptor; the second (a heading count) is 0 throughout
    new = np.array([[0.0, 8.0]])   # an approved answer with eight headings
    legacy = CombinedScorer().fit(y, x, d, groups=np.arange(60))
    assert legacy.standardised_components(y[:1], x[:1], new)[0, -1] == pytest.approx(8000)
    units = CombinedScorer().fit(y, x, d, groups=np.arange(60), descriptor_units=[0.1, 1.0])
    assert units.standardised_components(y[:1], x[:1], new)[0, -1] == pytest.approx(8 * 2.576)
    # Where the fit part has spread, the unit does not bind: same scale as without it.
    assert units.descriptor_scale_[0] == pytest.approx(legacy.descriptor_scale_[0])
    with pytest.raises(ValueError, match="descriptor_units must be 2 positive numbers"):
        CombinedScorer().fit(y, x, d, groups=np.arange(60), descriptor_units=[1.0])


def test_lifecycle_errors() -> None:
    scorer = CombinedScorer()
    with pytest.raises(RuntimeError, match="call fit before scoring"):
        scorer.score_samples(np.ones((2, 3)), np.ones((2, 3)))
    rng = np.random.default_rng(0)
    y, x = rng.normal(size=(10, 3)), rng.normal(size=(10, 3))
    scorer.fit(y, x, groups=np.arange(10))
    with pytest.raises(RuntimeError, match="call conformalize before p_values"):
        scorer.p_values(y, x)
    with pytest.raises(ValueError, match="k must be a positive integer, got 0"):
        CombinedScorer(k=0).fit(y, x, groups=np.arange(10))
    with pytest.raises(ValueError, match="at least 4 distinct prompts, got 2"):
        CombinedScorer().fit(y, x, groups=[0, 1] * 5)


def test_oas_is_well_conditioned_when_dimension_exceeds_rows() -> None:
    x = np.random.default_rng(0).normal(size=(20, 50))
    _, precision = oas_precision(x)
    assert np.all(np.isfinite(precision)) and np.linalg.cond(precision) < 1e6


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5000), st.floats(0.001, 0.5), st.floats(0.001, 0.5))
def test_calibration_conditional_threshold_is_at_most_alpha(n: int, alpha: float, delta: float) -> None:
    t = calibration_conditional_threshold(n, alpha, delta)
    if t is not None:
        assert 0 < t <= alpha
        ell = round(t * (n + 1))
        assert stats.beta.cdf(alpha, ell, n + 1 - ell) >= 1 - delta - 1e-12


def test_calibration_conditional_guarantee_holds_over_calibration_draws() -> None:
    """Over many calibration sets, the share whose realised false-alarm rate exceeds alpha is <= delta."""
    rng = np.random.default_rng(9)
    n, alpha, delta, draws = 200, 0.1, 0.1, 2000
    t = calibration_conditional_threshold(n, alpha, delta)
    assert t is not None and t < alpha
    exceed = 0
    for _ in range(draws):
        cal = np.sort(rng.uniform(size=n))
        # realised false-alarm rate of `p <= t` for a uniform score: P(s > the cut-off calibration score)
        ell = round(t * (n + 1))
        exceed += (1.0 - cal[n - ell]) > alpha
    assert _interval(exceed, draws)[0] <= delta
    with pytest.raises(ValueError, match="delta must be in \\(0, 1\\), got 1.5"):
        calibration_conditional_threshold(n, alpha, 1.5)


def test_descriptors() -> None:
    d = describe(["I'm sorry, but as an AI I cannot do that.", "```python\nprint(1)\n```", "Привет мир"],
                 [12, 9, 600])
    col = {name: d[:, i] for i, name in enumerate(DESCRIPTORS)}
    assert col["refusal_markers"][0] >= 2 and col["code_blocks"][1] == 1
    assert col["non_ascii_letters"][2] == 1.0 and col["window_coverage"][2] == pytest.approx(254 / 600)
    with pytest.raises(ValueError, match="n_tokens must have one length per text"):
        describe(["a"], [1, 2])


def test_foreign_function_words_tell_a_language_switch_from_english_and_maths() -> None:
    texts = ["Der Flächeninhalt des Dreiecks ist 0, und es gibt kein Dreieck.",  # German: Latin script
             "La probabilité est de 19 %, car les deux événements sont liés.",  # French
             "The son of D is C, et al. showed that sin(x) in a war of attrition will die out.",  # English
             "x = 4z - y, so y = 2z"]
    d = describe(texts, names=["foreign_function_words", "non_ascii_letters"])
    assert d[0, 0] > 0.3 and d[1, 0] > 0.3   # a third or more of the words
    assert d[2, 0] == 0.0 and d[3, 0] == 0.0  # English words shared with those languages are not counted
    assert d[0, 1] < 0.05                     # what the share of non-ASCII letters sees of German
    # A baseline asks for the descriptors it was fitted with, in its order.
    assert describe(texts, names=DESCRIPTORS[:8]).shape == (4, 8)
    with pytest.raises(ValueError, match="unknown descriptor"):
        describe(texts, names=["sentiment"])


def test_p_values_match_the_formula() -> None:
    scorer, (y, x, d) = _conformalized(seed=4, n=120, n_fit=60, n_cal=40)
    s = scorer.score_samples(y[100:], x[100:], d[100:])
    expected = [(1 + np.sum(scorer.calibration_scores_ >= v)) / 41 for v in s]
    assert np.allclose(scorer.p_values(y[100:], x[100:], d[100:]), expected)
    assert np.allclose(conformal_p_values(s, scorer.calibration_scores_), expected)


def test_language_against_the_input() -> None:
    english_q = "How do I sort a list by two keys?"
    spanish_q = ("¿Cómo puedo ordenar una lista por dos claves, para que los elementos con la misma clave queden "
                 "en su orden?")
    spanish_a = "Para ordenar la lista por dos claves, se usa una función que devuelve una tupla con las claves."
    german_a = "Um die Liste nach zwei Schlüsseln zu sortieren, gibt man eine Funktion an, die ein Tupel liefert."
    names = ["foreign_function_words", "foreign_function_words_vs_input", "non_ascii_letters_vs_input"]
    d = describe([spanish_a, german_a, spanish_a], names=names, inputs=[spanish_q, english_q, english_q])
    assert d[0, 0] > 0.3 and abs(d[0, 1]) < 0.1  # Spanish asked, Spanish answered: nothing relative to the input
    assert d[1, 1] > 0.2 and d[2, 1] > 0.3       # English asked, German or Spanish answered
    assert d[1, 2] > 0                           # German's umlauts, against an ASCII question
    english = describe(["Use sorted with a key that returns a tuple."], names=names, inputs=[spanish_q])
    assert english[0, 1] == 0.0                  # Spanish asked, English answered: no language beyond the input's
    with pytest.raises(ValueError, match="need the inputs, one per text"):
        describe([spanish_a], names=names)


def test_language_facet_takes_the_smaller_of_absolute_and_input_relative() -> None:
    """The language facet is unusual only where the answer's language is unusual both among the approved
    answers and against its input's; a baseline fitted without the input-relative columns keeps the larger of
    its two language columns."""
    new = CombinedScorer(descriptor_names=SCORE_DESCRIPTORS)
    names = new.facet_names(4 + len(SCORE_DESCRIPTORS))
    z = np.zeros((3, 4 + len(SCORE_DESCRIPTORS)))
    col = {name: 4 + j for j, name in enumerate(SCORE_DESCRIPTORS)}
    z[0, col["foreign_function_words"]] = 9.0                       # Spanish among English answers, asked in Spanish
    z[1, [col["foreign_function_words"], col["foreign_function_words_vs_input"]]] = 9.0, 7.0  # asked in English
    z[2, [col["non_ascii_letters"], col["foreign_function_words_vs_input"]]] = 9.0, 7.0  # different pairs: none
    language = new.facet_values(z)[:, names.index("language")]
    assert language.tolist() == [0.0, 7.0, 0.0]
    old = CombinedScorer(descriptor_names=DESCRIPTORS)
    z_old = np.zeros((1, 4 + len(DESCRIPTORS)))
    z_old[0, 4 + DESCRIPTORS.index("foreign_function_words")] = 9.0
    assert old.facet_values(z_old)[0, old.facet_names(z_old.shape[1]).index("language")] == 9.0


@pytest.mark.parametrize("relative", [True, False])
def test_answers_in_their_questions_language_do_not_set_the_calibration_tail(relative: bool) -> None:
    """A cell of mostly English prompts where, by the split's chance, the fit part holds one Spanish prompt in 100
    and the calibration part ten in 99: measured on its own, the Spanish answers' language sets the calibration
    part's largest scores, and an answer unlike the approved ones (shifted embedding) stays below them. Measured
    against the input, an answer in its question's language is ordinary, the cut falls back to the ordinary
    outputs' tail, and the shifted answers are caught; an answer in German to an English question still is."""
    rng = np.random.default_rng(5)
    coef = rng.normal(size=(DIM, DIM)) / math.sqrt(DIM)
    english_words = "the list is sorted by a key that returns both fields so order holds".split()
    spanish_words = "la lista se ordena por una clave que devuelve los dos campos para el orden".split()
    german_words = "die Liste wird nach einem Schlüssel sortiert der beide Felder für die Ordnung liefert".split()

    def text(words: list[str]) -> str:
        return " ".join(rng.choice(words, size=int(rng.integers(300, 400)))) + "."  # shares to within ~0.03

    def rows(n: int, spanish: int) -> tuple[list[str], list[str]]:
        langs = [spanish_words] * spanish + [english_words] * (n - spanish)
        return [text(w) for w in langs], [text(w) for w in langs]  # the question in the answer's language

    names = SCORE_DESCRIPTORS if relative else DESCRIPTORS
    units = [DESCRIPTOR_UNITS[n] for n in names]
    (fit_q, fit_a), (cal_q, cal_a) = rows(100, 1), rows(99, 10)
    y, x, _ = _draw(rng, 100 + 99 + 120, coef)
    d_fit = describe(fit_a, names=names, inputs=fit_q)
    scorer = CombinedScorer(descriptor_names=names).fit(y[:100], x[:100], d_fit, groups=np.arange(100),
                                                        descriptor_units=units)
    scorer.conformalize(y[100:199], x[100:199], describe(cal_a, names=names, inputs=cal_q))
    test_q = [text(english_words) for _ in range(60)]
    shifted = scorer.p_values(y[199:259] + 3.5 * np.eye(DIM)[1], x[199:259],
                              describe([text(english_words) for _ in range(60)], names=names, inputs=test_q))
    german = scorer.p_values(y[259:], x[259:], describe([text(german_words) for _ in range(60)], names=names,
                                                        inputs=test_q))
    caught, german_caught = float(np.mean(shifted <= 0.05)), float(np.mean(german <= 0.05))
    if relative:
        assert caught >= 0.8 and german_caught >= 0.95, (caught, german_caught)
    else:  # the Spanish calibration answers' scores tie at the top: neither passes them
        assert caught <= 0.2 and german_caught <= 0.2, (caught, german_caught)
