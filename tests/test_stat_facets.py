"""The facets of the combined score and the relevance measured against what is usual for the input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conformance.stats.combined import CombinedScorer


def test_facet_values_average_measurements_of_one_property_and_compress_format_counts() -> None:
    names = ["log_tokens", "log_chars", "refusal_markers", "non_ascii_letters", "list_lines", "heading_lines",
             "code_blocks", "window_coverage", "foreign_function_words"]
    scorer = CombinedScorer(descriptor_names=names)
    #        knn  resid  rel  mahal | tokens chars refusal nonascii lists headings code window foreign
    z = np.array([[1.0, 2.0, 3.0, 5.0, 0.5, 1.5, 2.0, 0.0, 0.0, 8 * 2.576, 0.0, 1.0, 15.0]])
    facets = dict(zip(scorer.facet_names(z.shape[1]), scorer.facet_values(z)[0]))
    assert list(facets) == ["distance", "residual", "relevance", "length", "refusal", "language", "format"]
    assert facets["distance"] == pytest.approx(3.0)          # mean of knn and mahalanobis
    assert facets["residual"] == 2.0 and facets["relevance"] == 3.0 and facets["refusal"] == 2.0
    assert facets["length"] == pytest.approx(1.0)            # mean of tokens, characters, window coverage
    assert facets["language"] == 15.0                        # the larger of the two signs of another language
    # Eight headings beyond usual (z = 8 x 2.576): 2.576 log(9) / 3 = 1.89, not 20.6.
    assert facets["format"] == pytest.approx(2.576 * math.log(9) / 3)


def test_unnamed_descriptors_are_facets_of_their_own() -> None:
    z = np.arange(7.0)[None, :]
    scorer = CombinedScorer()
    assert scorer.facet_names(7) == ["distance", "residual", "relevance", "descriptor 0", "descriptor 1",
                                     "descriptor 2"]
    assert scorer.facet_values(z)[0].tolist() == [1.5, 1.0, 2.0, 4.0, 5.0, 6.0]


def test_descriptor_names_must_match_the_columns() -> None:
    rng = np.random.default_rng(0)
    y, x, d = rng.normal(size=(20, 3)), rng.normal(size=(20, 3)), rng.normal(size=(20, 2))
    with pytest.raises(ValueError, match="descriptor_names must name the 2 descriptor columns"):
        CombinedScorer(descriptor_names=["log_tokens"]).fit(y, x, d, groups=np.arange(20))
    with pytest.raises(ValueError, match="combination must be one of"):
        CombinedScorer(combination="sum").fit(y, x, d, groups=np.arange(20))


def _questions_and_follow_ups(rng: np.random.Generator, n: int, dim: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Half the inputs are questions, answered by outputs about them; half are follow-ups ("rewrite it
    formally"), in their own region of input space, answered by outputs that share nothing with them."""
    follow = np.arange(n) % 2 == 1
    x = rng.normal(size=(n, dim))
    x[follow] += 4 * np.eye(dim)[0]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = np.where(follow[:, None], rng.normal(size=(n, dim)), x + 0.3 * rng.normal(size=(n, dim)))
    return y, x


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_relevance_relative_to_the_input_catches_an_answer_that_is_not_about_its_question(seed: int) -> None:
    """Approved answers to follow-ups have as little to do with their input as an answer to another
    question has. Taken as it is, the relevance cannot tell them apart; measured against the answers to
    the nearest approved inputs, it can."""
    rng = np.random.default_rng(seed)
    y, x = _questions_and_follow_ups(rng, 400)
    fit, cal, test = slice(0, 200), slice(200, 300), slice(300, 400)
    questions = np.arange(300, 400)[::2]
    off_topic = rng.normal(size=(questions.size, y.shape[1]))  # answers that are not about their question
    rates = {}
    for neighbours in (0, 10):
        scorer = CombinedScorer(relevance_neighbours=neighbours, use_descriptors=False)
        scorer.fit(y[fit], x[fit], groups=np.arange(200)).conformalize(y[cal], x[cal])
        rates[neighbours] = (float(np.mean(scorer.p_values(off_topic, x[questions]) <= 0.05)),
                             float(np.mean(scorer.p_values(y[test], x[test]) <= 0.05)))
    # Measured: 0.12-0.16 taken as it is, 0.56-0.66 against the nearest inputs (seeds 0-2).
    assert rates[10][0] > 0.4 and rates[10][0] > rates[0][0] + 0.3, rates
    assert rates[10][1] < 0.15, rates  # approved answers, follow-ups included, stay near the level
