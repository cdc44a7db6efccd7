"""What :mod:`conformance.api` returns: a built baseline (with its registry entry) and a scoring's result."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from conformance.verdict import VERDICTS, WITHIN, GroupSummary, Verdict

if TYPE_CHECKING:
    import pandas as pd

    from conformance.baseline.format import Baseline
    from conformance.ledger import AppendReport
    from conformance.mlflow.runs import ScoringRun
    from conformance.registry import RegisteredBaseline


def p_value_rule(baseline: Baseline) -> str:
    """``sample``, ``weighted`` (see ``build --calibration-method``), or ``output`` for a baseline calibrated
    before prompts counted (every calibration output one exchangeable unit)."""
    return {"prompt_sample": "sample", "prompt_weighted": "weighted", "output": "output"}[baseline.spec.p_value_rule]


@dataclass(frozen=True)
class BuiltBaseline:
    """A baseline as built; with its registry entry when it was registered (and who approved it, if asked)."""

    baseline: Baseline
    registered: RegisteredBaseline | None = None
    approved_by: str | None = None

    @property
    def uri(self) -> str:
        """The registry URI (``models:/<name>/<version>``), or the content digest of an unregistered baseline."""
        return self.registered.uri if self.registered is not None else str(self.baseline.digest)

    def to_dict(self) -> dict[str, object]:
        support = self.baseline.descriptors["calibration_support"]
        scorer = self.baseline.scorer
        return {
            "model_version": self.baseline.model_version,
            "input_class": self.baseline.input_class,
            "name": self.registered.name if self.registered is not None else None,
            "version": self.registered.version if self.registered is not None else None,
            "uri": self.uri,
            "n_fit": self.baseline.n_fit,
            "n_calibration": self.baseline.n_calibration_prompts,
            "n_calibration_outputs": scorer.get("n_calibration_outputs", self.baseline.n_calibration),
            "n_calibration_from_fraction": (scorer.get("calibration_rounding") or {}).get("prompts_from_fraction"),
            "p_value_rule": p_value_rule(self.baseline),
            "alpha": self.baseline.alpha,
            "smallest_alpha": support["smallest_alpha"],
            "false_alarm_rate_95th": support["false_alarm_rate_95th"],
            "expected_false_alarm_rate": support["expected_false_alarm_rate"],
            "conditional_threshold": self.baseline.spec.conditional_threshold,
            "digest": self.baseline.digest,
            "approved_by": self.approved_by,
        }


@dataclass(frozen=True)
class ScoreResult:
    """What :func:`score` returns: verdicts in input order (empty when ``keep_verdicts=False``), one
    summary per (model_version, input_class) group, and what the ledger recorded (``None`` when nothing
    was recorded)."""

    verdicts: list[Verdict]
    summaries: list[GroupSummary]
    ledger: AppendReport | None = None
    #: How many records got each verdict (given when ``verdicts`` were not kept).
    n_by_verdict: dict[str, int] | None = None
    #: The MLflow scoring run this score was logged as (``None`` when none was logged).
    mlflow_run: ScoringRun | None = None
    #: Why the MLflow scoring run could not be logged, when it could not (the verdicts stand).
    mlflow_run_error: str | None = None

    @property
    def counts(self) -> dict[str, int]:
        if self.n_by_verdict is not None:
            return {name: self.n_by_verdict.get(name, 0) for name in VERDICTS}
        out = {name: 0 for name in VERDICTS}
        for v in self.verdicts:
            out[v.verdict] += 1
        return out

    @property
    def n(self) -> int:
        """The number of records scored."""
        return sum(self.counts.values())

    @property
    def all_within_bounds(self) -> bool:
        return self.counts[WITHIN] == self.n

    def to_pandas(self) -> pd.DataFrame:
        """One row per record, in input order, with the columns of the verdicts file (``score --out``)."""
        import pandas as pd

        rows = [v.to_dict() for v in self.verdicts]
        columns: list[str] = []
        for row in rows:
            columns.extend(c for c in row if c not in columns)
        return pd.DataFrame(rows, columns=columns)

    def summaries_to_pandas(self) -> pd.DataFrame:
        """One row per group: the batch verdict, its p-value and the counts (``score --summary``)."""
        import pandas as pd

        return pd.DataFrame([s.to_dict() for s in self.summaries])
