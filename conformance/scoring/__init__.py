"""Scoring audited records against baselines: ``judge`` (per output), ``groups`` (batch tests per
group), ``reasons`` (the plain words), ``run`` (the whole set)."""

from conformance.scoring.groups import summarise
from conformance.scoring.judge import flag_threshold, judge
from conformance.scoring.run import ScoringResult, score_record_set

__all__ = ["ScoringResult", "flag_threshold", "judge", "score_record_set", "summarise"]
