"""The scorer specification: how a baseline turns an output into a score, a p-value and batch tests.

Stored as the ``scorer`` object of ``baseline.json``; read here, once, into a typed
:class:`ScorerSpec`. Since format 3 every field is stored explicitly; baselines stored
in older formats get theirs from the migrations in :mod:`conformance.baseline.format`,
which is the one place that knows what older releases left out. Code that scores reads
the spec's fields, never the presence or absence of a key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from conformance.errors import BaselineError
from conformance.stats.conditional_batch import COMBINATIONS as BATCH_COMBINATIONS
from conformance.stats.conditional_batch import STATISTICS as BATCH_STATISTICS

SCORER_NAMES = ("knn_cosine", "combined")
#: How a score becomes a p-value: every calibration output one unit (baselines built before prompts
#: counted), one drawn calibration output per prompt, or every output with prompts weighing the same.
P_VALUE_RULES = ("output", "prompt_sample", "prompt_weighted")
#: The unit the batch tests shuffle: whole prompts (every output of a prompt kept together) or outputs.
BATCH_UNITS = ("prompt", "output")
#: The score the batch rank tests compare: the per-output score, or the batch rule's own
#: (:data:`conformance.stats.combined.BATCH_COMBINATION`).
BATCH_SCORES = ("score", "batch_rule")
#: What the batch MMD and energy tests compare: pooled output embeddings, or the combined scorer's
#: residual embeddings (what an output says beyond what its input predicts).
BATCH_EMBEDDINGS = ("pooled", "residual")
#: Which batch test decides a group's batch verdict: the four tests against the calibration part, combined by
#: Bonferroni (``calibration``; baselines built before 0.6.0, stored in formats 1-3), or the conditional
#: test against every approved output (``conditional``; :mod:`conformance.stats.conditional_batch`).
BATCH_TESTS = ("calibration", "conditional")

#: The keys every stored scorer holds since format 3.
REQUIRED_KEYS = ("name", "k", "calibration_method", "delta", "conditional_threshold", "batch_unit", "batch_score",
                 "batch_embedding", "batch_test")
#: The keys a combined scorer holds besides (its constructor's parameters, components, facet spread).
COMBINED_KEYS = ("ridge", "seed", "use_descriptors", "combination", "relevance_neighbours", "descriptor_names",
                 "components", "facet_calibration")
COMBINED_PARAMS = ("k", "ridge", "seed", "use_descriptors", "combination", "relevance_neighbours",
                   "descriptor_names")


@dataclass(frozen=True)
class ScorerSpec:
    """A baseline's scorer, typed. Built from the stored ``scorer`` object by :meth:`from_stored`."""

    name: str
    k: int
    p_value_rule: str
    delta: float | None
    conditional_threshold: float | None
    batch_unit: str
    batch_score: str
    batch_embedding: str
    #: One of :data:`BATCH_TESTS`.
    batch_test: str = "calibration"
    #: For ``conditional``: the descriptor columns of its reference, in order.
    batch_descriptors: tuple[str, ...] = ()
    #: For ``conditional``: the statistics it combines (of :data:`BATCH_STATISTICS`), and how (of
    #: :data:`BATCH_COMBINATIONS`).
    batch_statistics: tuple[str, ...] = ()
    batch_combination: str = "minP"
    #: For ``combined``: the :class:`~conformance.stats.combined.CombinedScorer` parameters.
    combined_params: Mapping[str, Any] | None = None
    #: For ``combined``: the components, in the order they were fitted.
    components: tuple[str, ...] = ()
    #: For ``combined`` with facets: each facet's spread over the calibration outputs (``n``,
    #: ``median``, ``max``); ``None`` for baselines built before it was kept.
    facet_calibration: Mapping[str, Mapping[str, float]] | None = None

    @property
    def is_combined(self) -> bool:
        return self.name == "combined"

    def flag_threshold(self, alpha: float) -> float:
        """The p-value at or below which an output is out of bounds: alpha, or the calibration-conditional
        cut-off when the baseline was built with ``delta``."""
        return alpha if self.conditional_threshold is None else float(self.conditional_threshold)

    @classmethod
    def from_stored(cls, scorer: Mapping[str, Any]) -> ScorerSpec:
        """Read a stored scorer object (format 3: every key present).

        Raises
        ------
        BaselineError
            If a key is missing or a value is not one of the allowed ones.
        """
        missing = [key for key in REQUIRED_KEYS if key not in scorer]
        if scorer.get("name") == "combined":
            missing += [key for key in COMBINED_KEYS if key not in scorer]
        if missing:
            raise BaselineError(f"the baseline's scorer lacks {', '.join(missing)}: a baseline of the current "
                                "format stores them all (older formats are migrated when loaded)")
        for key, value, allowed in (("name", scorer["name"], SCORER_NAMES),
                                    ("calibration_method", scorer["calibration_method"], P_VALUE_RULES),
                                    ("batch_unit", scorer["batch_unit"], BATCH_UNITS),
                                    ("batch_score", scorer["batch_score"], BATCH_SCORES),
                                    ("batch_embedding", scorer["batch_embedding"], BATCH_EMBEDDINGS),
                                    ("batch_test", scorer["batch_test"], BATCH_TESTS)):
            if value not in allowed:
                raise BaselineError(f"the baseline's scorer {key} must be one of {', '.join(allowed)}, "
                                    f"got {value!r}")
        statistics = tuple(str(n) for n in scorer.get("batch_statistics", ()))
        combination = str(scorer.get("batch_combination", "minP"))
        if scorer["batch_test"] == "conditional":
            if "batch_statistics" not in scorer or "batch_combination" not in scorer:
                raise BaselineError("the baseline's conditional batch test lacks batch_statistics or "
                                    "batch_combination: a baseline of the current format stores both (older formats "
                                    "are migrated when loaded)")
            if not statistics or not set(statistics) <= set(BATCH_STATISTICS):
                raise BaselineError(f"the baseline's scorer batch_statistics must name some of "
                                    f"{', '.join(BATCH_STATISTICS)}, got {list(statistics)}")
            if combination not in BATCH_COMBINATIONS:
                raise BaselineError(f"the baseline's scorer batch_combination must be one of "
                                    f"{', '.join(BATCH_COMBINATIONS)}, got {combination!r}")
        combined = scorer["name"] == "combined"
        return cls(
            name=str(scorer["name"]),
            k=int(scorer["k"]),
            p_value_rule=str(scorer["calibration_method"]),
            delta=None if scorer["delta"] is None else float(scorer["delta"]),
            conditional_threshold=(None if scorer["conditional_threshold"] is None
                                   else float(scorer["conditional_threshold"])),
            batch_unit=str(scorer["batch_unit"]),
            batch_score=str(scorer["batch_score"]),
            batch_embedding=str(scorer["batch_embedding"]),
            batch_test=str(scorer["batch_test"]),
            batch_descriptors=tuple(scorer.get("batch_descriptors", ())),
            batch_statistics=statistics,
            batch_combination=combination,
            combined_params={key: scorer[key] for key in COMBINED_PARAMS} if combined else None,
            components=tuple(scorer["components"]) if combined else (),
            facet_calibration=scorer["facet_calibration"] if combined else None,
        )


def explicit_scorer(scorer: Mapping[str, Any], *, calibration_method: str = "output",
                    batch_unit: str = "output", batch_score: str = "score",
                    batch_embedding: str = "pooled") -> dict[str, Any]:
    """A stored scorer object with every key of format 3, the values given standing for what was absent.

    Used by the format 2 -> 3 migration, which derives the batch fields from the arrays an older
    baseline carries, and by code that builds a baseline by hand.
    """
    out = dict(scorer)
    out.setdefault("calibration_method", calibration_method)
    out.setdefault("delta", None)
    out.setdefault("conditional_threshold", None)
    out.setdefault("batch_unit", batch_unit)
    out.setdefault("batch_score", batch_score)
    out.setdefault("batch_embedding", batch_embedding)
    out.setdefault("batch_test", "calibration")
    if out.get("name") == "combined":
        # Baselines built before the facets and the input-relative relevance stored neither key,
        # nor the descriptor names (their components list them) nor the facets' spread.
        out.setdefault("combination", "smooth_max")
        out.setdefault("relevance_neighbours", 0)
        out.setdefault("descriptor_names", None)
        out.setdefault("facet_calibration", None)
    return out
