"""The Python API the command line is a thin layer over: build, approve, score."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from conformance.baseline import Baseline
from conformance.build import (
    CALIBRATION_METHODS,
    DEFAULT_CALIBRATION_FRACTION,
    DEFAULT_CALIBRATION_METHOD,
    DEFAULT_SCORER,
    DEFAULT_SEED,
    build_baseline,
    check_calibration_method,
    plan_cell,
)
from conformance.conformal import check_alpha, check_fdr
from conformance.embedder import Embedder
from conformance.errors import BaselineError, InputFileError
from conformance.records import Record, read_records
from conformance.registry import RegisteredBaseline, Registry
from conformance.scores import DEFAULT_K
from conformance.scoring import ScoringResult, score_record_set
from conformance.verdict import write_json, write_verdicts

if TYPE_CHECKING:
    from conformance.ledger import Ledger


def p_value_rule(baseline: Baseline) -> str:
    """``sample``, ``weighted`` (see ``build --calibration-method``), or ``output`` for a baseline calibrated
    before prompts counted (every calibration output one exchangeable unit)."""
    by_stored_name = {stored: name for name, stored in CALIBRATION_METHODS.items()}
    return by_stored_name.get(str(baseline.scorer.get("calibration_method")), "output")


@dataclass(frozen=True)
class BuiltBaseline:
    """A baseline as built and registered (and approved, when asked)."""

    registered: RegisteredBaseline
    baseline: Baseline
    approved_by: str | None = None

    def to_dict(self) -> dict[str, object]:
        support = self.baseline.descriptors["calibration_support"]
        return {
            "model_version": self.baseline.model_version,
            "input_class": self.baseline.input_class,
            "name": self.registered.name,
            "version": self.registered.version,
            "uri": self.registered.uri,
            "n_fit": self.baseline.n_fit,
            "n_calibration": self.baseline.n_calibration_prompts,
            "n_calibration_outputs": self.baseline.scorer.get("n_calibration_outputs", self.baseline.n_calibration),
            "n_calibration_from_fraction": (self.baseline.scorer.get("calibration_rounding") or {}).get(
                "prompts_from_fraction"),
            "p_value_rule": p_value_rule(self.baseline),
            "alpha": self.baseline.alpha,
            "smallest_alpha": support["smallest_alpha"],
            "false_alarm_rate_95th": support["false_alarm_rate_95th"],
            "expected_false_alarm_rate": support["expected_false_alarm_rate"],
            "conditional_threshold": self.baseline.scorer.get("conditional_threshold"),
            "digest": self.baseline.digest,
            "approved_by": self.approved_by,
        }


def build(
    approved_file: str | Path,
    *,
    alpha: float = 0.05,
    approve_by: str | None = None,
    k: int = DEFAULT_K,
    calibration_fraction: float = DEFAULT_CALIBRATION_FRACTION,
    seed: int = DEFAULT_SEED,
    registry: Registry | None = None,
    embedder: Embedder | None = None,
    delta: float | None = None,
    scorer: str = DEFAULT_SCORER,
    calibration_method: str = DEFAULT_CALIBRATION_METHOD,
    round_calibration: bool = True,
) -> list[BuiltBaseline]:
    """Build and register one baseline per (model_version, input_class) in ``approved_file``.

    Every cell is checked before anything is registered: an invalid approved
    record or a cell too small for ``alpha`` stops the whole build with one
    error that lists every problem.
    """
    alpha = check_alpha(alpha)
    check_calibration_method(calibration_method, delta)
    record_set = read_records(approved_file)
    if record_set.invalid:
        listed = "\n  ".join(f"{approved_file}: {bad.reason}" for bad in record_set.invalid[:50])
        more = len(record_set.invalid) - 50
        raise InputFileError(
            f"{len(record_set.invalid)} approved record(s) are invalid; a baseline must be built from "
            f"clean approved data. Fix or remove them:\n  {listed}" + (f"\n  ... and {more} more" if more > 0 else "")
        )
    cells: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for record in record_set.records:
        cells[record.cell].append(record)
    problems = []
    for records in cells.values():
        try:
            plan_cell(records, alpha=alpha, calibration_fraction=calibration_fraction, seed=seed, delta=delta,
                      round_calibration=round_calibration, calibration_method=calibration_method)
        except BaselineError as exc:
            problems.append(str(exc))
    if problems:
        raise BaselineError("no baseline was built:\n  " + "\n  ".join(problems))
    registry = registry or Registry()
    _ = registry.client  # fail on an unreachable store before the slow part
    built = []
    for (mv, ic), records in cells.items():
        baseline = build_baseline(records, alpha=alpha, k=k, calibration_fraction=calibration_fraction,
                                  seed=seed, embedder=embedder, source=str(approved_file), delta=delta, scorer=scorer,
                                  calibration_method=calibration_method, round_calibration=round_calibration)
        registered = registry.register(baseline)
        if approve_by is not None:
            registered = registry.approve(mv, ic, by=approve_by, version=registered.version)
        built.append(BuiltBaseline(registered, baseline, approve_by))
    return built


def approve(
    model_version: str, input_class: str, *, by: str, version: int | None = None, registry: Registry | None = None
) -> RegisteredBaseline:
    """Approve a registered baseline version (default: the newest); a person's step."""
    return (registry or Registry()).approve(model_version, input_class, by=by, version=version)


def score(
    audited_file: str | Path,
    *,
    out: str | Path | None = None,
    summary: str | Path | None = None,
    registry: Registry | None = None,
    embedder: Embedder | None = None,
    progress: bool | None = None,
    ledger: str | Ledger | bool | None = None,
    run_id: str | None = None,
    fdr: float | None = None,
) -> ScoringResult:
    """Score every record of ``audited_file`` against its approved baseline.

    Appends every verdict (``invalid`` and ``no_baseline`` included) to the
    verdict ledger as one atomic batch: ``ledger`` is a URL or an open
    :class:`~conformance.ledger.Ledger`; ``None`` means ``CONFORMANCE_LEDGER_URL``
    or the embedded SQLite ledger; ``False`` records nothing. Then writes one
    verdict per record to ``out`` (format by extension) and the per-group batch
    summary to ``summary``, each atomically, when given. The ledger is opened
    first: an unreachable ledger raises before anything is scored or written.
    With ``fdr`` (q in (0, 1)), Benjamini-Hochberg flags records over the whole
    batch (see :func:`conformance.scoring.score_record_set`).
    """
    for target in (out, summary):
        if target is not None and not Path(target).parent.exists():
            raise InputFileError(f"{target}: the folder {Path(target).parent} does not exist")
    if out is not None and Path(out).suffix.lower() not in (".jsonl", ".ndjson", ".csv", ".parquet"):
        raise InputFileError(f"{out}: the verdicts file must end in .jsonl, .csv or .parquet")
    if fdr is not None:
        check_fdr(fdr)
    record_set = read_records(audited_file)
    registry = registry or Registry()
    book = _open_ledger(ledger)

    approvals: dict[str, tuple[str | None, str | None]] = {}

    def resolve(model_version: str, input_class: str) -> tuple[str, Baseline] | str:
        found = registry.resolve_approved(model_version, input_class)
        if isinstance(found, str):
            return found
        registered, baseline = found
        approvals[registered.uri] = (registered.tags.get("approved_by"), registered.tags.get("approved_at"))
        return registered.uri, baseline

    try:
        result = score_record_set(record_set, resolve, embedder=embedder, progress=progress, fdr=fdr)
        # Who approved the baseline version each verdict used, and when: evidence for the reviewer.
        verdicts = [v if v.baseline not in approvals else
                    replace(v, approved_by=approvals[v.baseline][0], approved_at=approvals[v.baseline][1])
                    for v in result.verdicts]
        result = ScoringResult(verdicts=verdicts, summaries=result.summaries)
        report = None if book is None else book.append(result.verdicts, run_id=run_id, summaries=result.summaries)
    finally:
        if book is not None and not hasattr(ledger, "append"):
            book.close()  # opened here from a URL
    if out is not None:
        write_verdicts(result.verdicts, out)
    if summary is not None:
        write_json([s.to_dict() for s in result.summaries], summary)
    return ScoringResult(verdicts=result.verdicts, summaries=result.summaries, ledger=report)


def _open_ledger(ledger: str | Ledger | bool | None) -> Ledger | None:
    from conformance.ledger import Ledger

    if ledger is False:
        return None
    if isinstance(ledger, Ledger):
        return ledger
    if ledger is True:
        ledger = None
    return Ledger(ledger)
