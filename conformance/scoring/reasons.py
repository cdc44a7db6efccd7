"""The plain words of a verdict: what was compared with what, how unusual, and the rule applied.

Prose only, apart from the statistics: every figure comes in as an argument or from the
baseline's stored metadata, so rewording a sentence never changes a verdict or a p-value.
"""

from __future__ import annotations

import numpy as np

from conformance.baseline.format import Baseline

#: Each facet in plain words, for a verdict's reason: what is most unusual about an output.
FACET_WORDS = {
    "distance": "how far it lies from the approved outputs",
    "residual": "how far it lies from what its input predicts",
    "relevance": "how little it is about its input, against approved answers to similar inputs",
    "length": "its length",
    "refusal": "refusal phrases (\"I'm sorry\", \"I cannot\", \"as an AI\")",
    "language": "its language or script",
    "format": "its format (lists, headings, code blocks)",
}


def test_name(baseline: Baseline) -> str:
    spec = baseline.spec
    kind = {"prompt_weighted": "prompt-weighted split-conformal p-value",
            "prompt_sample": "split-conformal p-value (one calibration output per prompt)",
            "output": "split-conformal p-value"}[spec.p_value_rule]
    if spec.is_combined:
        return f"{kind} on the input-conditional combined score (k={spec.k})"
    return f"{kind} on {spec.name} (k={spec.k}) score"


def _input_sentence(baseline: Baseline, input_p_value: float) -> str:
    if input_p_value <= baseline.alpha:
        return (f" Its input itself lies outside the approved inputs of this class (input novelty p-value "
                f"{input_p_value:.4f}): the output may be unusual because the question is.")
    return (f" Its input is like the approved inputs of this class (input novelty p-value {input_p_value:.4f}), "
            "so the score measures how unusual the output is for its input.")


def _facet_sentence(baseline: Baseline, facet: str, value: float) -> str:
    said = f" What stands out most is {FACET_WORDS.get(facet, facet)}: a standardised value of {value:.1f}"
    reference = (baseline.spec.facet_calibration or {}).get(facet)
    if reference is None:  # baselines built before the calibration part's facet spread was kept
        return said + ", where 2.3 to 2.6 marks the most unusual 1% of the approved outputs the score was fitted on."
    n, prompts = int(reference["n"]), baseline.n_calibration_prompts
    drawn = baseline.spec.p_value_rule == "prompt_sample" and n != prompts
    # With one drawn output per prompt the p-value compared with `prompts` outputs; the spread is over them all.
    whose = f" (every answer to those {prompts} prompts)" if drawn else ""
    return (said + f", where the {n} approved calibration outputs{whose} reach at most {reference['max']:.1f} "
            f"(median {reference['median']:.1f}).")


def output_reason(
    baseline: Baseline, uri: str, score: float, p_value: float, input_p_value: float | None = None,
    top_facet: tuple[str, float] | None = None,
) -> str:
    """The reason of one scored verdict, in plain words."""
    method = baseline.spec.p_value_rule
    if method == "prompt_weighted":
        keys = baseline.calibration_prompt_keys or []
        n_out, n_prompts = len(keys), baseline.n_calibration_prompts
        # The share of calibration prompts (each weighing the same) this output is more unusual than.
        share = 100.0 * (1.0 - (p_value * (n_prompts + 1) - 1.0) / n_prompts)
        compared = n_out
        held = f"answers to {n_prompts} prompts held out for calibration, each prompt weighing the same; "
        like = "an output like the approved ones, for a prompt like the approved ones,"
    else:
        n = baseline.n_calibration
        share = 100.0 * int(np.searchsorted(baseline.calibration_scores, score, side="left")) / n
        per_prompt = method == "prompt_sample"
        compared, held = n, (f"one answer drawn at random for each of {n} prompts held out for calibration, the "
                              "draw fixed when the baseline was built; " if per_prompt else "")
        like = "an output like the approved ones" + (", for a prompt like the approved ones," if per_prompt else "")
    lead = (
        f"Compared with {compared} approved outputs of model {baseline.model_version} for input class "
        f"'{baseline.input_class}' ({held}baseline {uri}), this output was more unusual than {share:.1f}% of them "
        f"(p-value {p_value:.4f}; alpha {baseline.alpha:g}, so {like} is flagged at most "
        f"{100 * baseline.alpha:g}% of the time)."
    )
    if input_p_value is not None:
        lead += _input_sentence(baseline, input_p_value)
    if top_facet is not None:
        lead += _facet_sentence(baseline, *top_facet)
    cut = baseline.spec.flag_threshold(baseline.alpha)
    if cut < baseline.alpha and baseline.spec.delta is not None:
        delta = baseline.spec.delta
        lead += (
            f" This baseline also carries the calibration-conditional guarantee: with probability at least "
            f"{100 * (1 - delta):g}% over the approved sample it was built from, its false-alarm rate is at most "
            f"{100 * baseline.alpha:g}%; for that, outputs are flagged at p-values at or below {cut:.4g}."
        )
        if p_value <= cut:
            return lead + " The p-value is at or below that cut-off: out of bounds."
        return lead + " The p-value is above that cut-off: within bounds."
    if p_value <= baseline.alpha:
        return lead + " The p-value is at or below alpha: out of bounds."
    return lead + " The p-value is above alpha: within bounds."


def invalid_reason(problems: str) -> str:
    return f"The record could not be judged: {problems}. Fix the record and score it again."


#: What each batch test sees when it rejects, in plain words, and the test's name.
_TEST_WORDS = {
    "mann_whitney": ("more unusual: their scores run higher than the approved outputs' scores", "Mann-Whitney"),
    "mmd": ("shifted: what they say has moved away from what approved outputs say, beyond what their inputs "
            "predict", "MMD"),
    "energy": ("shifted: what they say has moved away from what approved outputs say, beyond what their inputs "
               "predict", "energy-distance"),
}
_SPREAD_WORDS = {
    "higher": "more unusual: their scores are distributed higher than the approved outputs' scores",
    "lower": "more alike than approved outputs: their scores are distributed lower than the approved outputs' "
             "scores",
    "less_varied": "less varied: their scores are spread more narrowly than the approved outputs' scores",
    "more_varied": "more varied: their scores are spread more widely than the approved outputs' scores",
}


def score_shift(batch: np.ndarray, calibration: np.ndarray) -> str | None:
    """How a batch's scores differ from the calibration scores, in one word of ``_SPREAD_WORDS``: a change of
    spread when the medians differ by less than half the wider interquartile range, else higher or lower."""
    batch, calibration = np.asarray(batch, dtype=np.float64), np.asarray(calibration, dtype=np.float64)
    batch, calibration = batch[np.isfinite(batch)], calibration[np.isfinite(calibration)]
    if batch.size < 2 or calibration.size < 2:
        return None
    q1, median_c, q3 = np.percentile(calibration, [25, 50, 75])
    b1, median_b, b3 = np.percentile(batch, [25, 50, 75])
    spread_c, spread_b = q3 - q1, b3 - b1
    shift = median_b - median_c
    if spread_c > 0 and abs(shift) < 0.5 * max(spread_c, spread_b):
        if spread_b < 0.67 * spread_c:
            return "less_varied"
        if spread_b > 1.5 * spread_c:
            return "more_varied"
    return "higher" if shift > 0 else "lower"


def batch_conclusion(p_values: dict[str, float], alpha: float, *, shift: str | None = None) -> str:
    """The end of a batch verdict's reason: which of the Bonferroni-combined tests rejected, and in which direction,
    so that the words always match the tests (a test rejects when its p-value times the number of tests is at most
    alpha; the batch is out of bounds exactly when one does)."""
    m = len(p_values)
    rejecting = [name for name, p in p_values.items() if min(1.0, m * p) <= alpha]
    if not rejecting:
        smallest = min(p_values.items(), key=lambda item: item[1]) if p_values else None
        said = "as a batch, no test finds a difference from approved outputs"
        if smallest is not None and smallest[1] <= alpha:
            said += (f" (the smallest p-value, {smallest[0].replace('_', ' ')} {smallest[1]:.4g}, is not small enough "
                     f"once {m} tests are combined)")
        return said + "."
    found: dict[str, list[str]] = {}
    for name in rejecting:
        if name == "kolmogorov_smirnov":
            text, test = _SPREAD_WORDS.get(shift or "", "differently spread: their scores are distributed "
                                           "differently from the approved outputs' scores"), "Kolmogorov-Smirnov"
        else:
            text, test = _TEST_WORDS.get(name, (f"different by the {name.replace('_', ' ')} test", name))
        found.setdefault(text, []).append(test)
    words = [f"{text} ({' and '.join(tests)} test{'s' if len(tests) > 1 else ''})" for text, tests in found.items()]
    return "as a batch, they differ from approved outputs. They are " + "; and ".join(words) + "."


#: What each statistic of the conditional batch test sees when it rejects, in plain words.
_CONDITIONAL_WORDS = {
    "residual_mmd": "what they say, beyond what their inputs predict, is distributed differently",
    "descriptor_mmd": "how they are written (length, format, refusals, language, relevance) differs from what is "
                      "usual for their inputs",
    "joint_mmd": "what they say and how they are written, taken together, differ from approved outputs",
    "style_mmd": "the words and punctuation they use, and how often, differ from what is usual for their inputs",
    "shape_mmd": "how their lines begin, and how they open and close, differ from what is usual for their inputs",
}
#: How a descriptor's shift reads (positive, negative), for descriptors whose shift names a direction.
_DESCRIPTOR_DIRECTIONS = {
    "log_tokens": ("longer", "shorter"),
    "list_lines": ("more list lines", "fewer list lines"),
    "heading_lines": ("more headings", "fewer headings"),
    "code_blocks": ("more code blocks", "fewer code blocks"),
    "refusal_markers": ("more refusal phrases", "fewer refusal phrases"),
    "non_ascii_letters": ("more letters outside ASCII", "fewer letters outside ASCII"),
    "foreign_function_words": ("more words of other European languages", "fewer words of other European languages"),
    "relevance": ("less about their inputs", "more about their inputs"),
}


def conditional_conclusion(p_value: float, p_values: dict[str, float], shifts: dict[str, float], alpha: float) -> str:
    """The end of a conditional batch verdict's reason: whether the combination rejected, which statistics are
    at or below alpha on their own, and the properties that moved most (by half a pooled spread or more)."""
    moved = sorted(((abs(v), name, v) for name, v in shifts.items() if name in _DESCRIPTOR_DIRECTIONS
                    and abs(v) >= 0.5), reverse=True)[:3]
    how = ", ".join(f"{_DESCRIPTOR_DIRECTIONS[name][0 if v > 0 else 1]} ({v:+.1f} spreads)" for _, name, v in moved)
    strong = [name for name, p in p_values.items() if p <= alpha]
    if p_value > alpha:
        said = "as a batch, no difference from approved outputs is found"
        if strong and len(p_values) > 1:
            # A reader sees that statistic's p-value at or below alpha beside a verdict within bounds: say why.
            alone = " and ".join(name.replace("_", " ") for name in strong)
            said += (f"; {alone} alone {'is' if len(strong) == 1 else 'are'} at or below alpha, but the verdict rests "
                     "on the tests combined (a rule fixed when the baseline was built, so that looking at several "
                     "tests does not raise the false-alarm rate)")
        return said + (f" (the largest shifts, too small to count: {how})." if how else ".")
    words = list(dict.fromkeys(_CONDITIONAL_WORDS.get(name, name.replace("_", " ")) for name in strong))
    text = "as a batch, they differ from approved outputs: " + ("; ".join(words) if words else
                                                                 "several statistics point the same way")
    return text + (f". For their inputs they are {how}." if how else ".")
