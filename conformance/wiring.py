"""What the doors of :mod:`conformance.api` share: resolvers of baselines (given in memory, or approved in the
registry and checked against their ledger approval), the embedder behind the embedding cache, the ledger opened as
asked, each chunk of verdicts recorded into the ledger and the verdicts file, and the MLflow scoring run.

The Spark engine (:mod:`conformance.spark`) and the ``mlflow.genai`` scorer use the same pieces. Heavy libraries
are imported inside the functions that need them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conformance.approvals import ApprovalCheck
    from conformance.baseline.format import Baseline
    from conformance.embedder import Embedder
    from conformance.ledger import AppendReport, Ledger
    from conformance.registry import Registry
    from conformance.results import BuiltBaseline, ScoreResult
    from conformance.scoring.run import Resolver
    from conformance.scoring.stream import BatchFlags
    from conformance.verdict import GroupSummary, Verdict
    from conformance.verdict_files import VerdictWriter


def log_scoring_run(result: ScoreResult, *, registry: Registry | None, experiment: str, source: str, digest: str,
                    engine: str, chunk_size: int, fdr: float | None, out: str | Path | None,
                    summary: str | Path | None) -> ScoreResult:
    """``result`` with the MLflow scoring run it was logged as; or, when MLflow failed, with why (a warning
    too): the verdicts, the ledger and the files stand either way."""
    import warnings

    from conformance.mlflow.runs import log_scoring_run as log
    from conformance.registry import Registry

    try:
        logged = log(registry or Registry(), experiment=experiment, input_digest=digest, input_source=source,
                     summaries=result.summaries, counts=result.counts, ledger=result.ledger, engine=engine,
                     chunk_size=chunk_size, fdr=fdr, out=out, summary=summary, verdicts=result.verdicts)
    except Exception as exc:  # MLflow's own errors, the store's, the network's: none may undo a finished scoring
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        said = (f"the scoring run could not be logged to MLflow experiment {experiment!r}: {type(exc).__name__}: "
                f"{first}. The verdicts stand: the ledger committed and the files were written")
        warnings.warn(said, stacklevel=3)
        return replace(result, mlflow_run_error=said)
    return replace(result, mlflow_run=logged)


def record_chunks(chunks: Iterable[list[Verdict]], *, flags: BatchFlags | None, book: Ledger | None, run_id: str,
            summaries: list[GroupSummary], writer: VerdictWriter | None, keep_verdicts: bool,
            ) -> tuple[list[AppendReport], list[Verdict]]:
    """Pass 2 of a scoring run: chunks of verdicts in input order get their BH flags, go into the ledger (one
    transaction each, exactly once) and into the verdicts file; the ledger's reports, and the verdicts if kept."""
    reports: list[AppendReport] = []
    kept: list[Verdict] = []
    next_flag = 0
    for chunk in chunks:
        if flags is not None:
            chunk, next_flag = flags.apply(chunk, next_flag)
        if book is not None:
            reports.append(book.append(chunk, run_id=run_id, summaries=summaries))
        if writer is not None:
            writer.write(chunk)
        if keep_verdicts:
            kept.extend(chunk)
    return reports, kept


def merge_reports(reports: list[AppendReport], run_id: str, book: Ledger | None) -> AppendReport | None:
    """One report for the chunks of a run."""
    if book is None:
        return None
    from conformance.ledger import AppendReport

    if not reports:
        head = book.head()
        return AppendReport(run_id, 0, 0, None, None, head, book.display_url)
    firsts = [r.first_seq for r in reports if r.first_seq is not None]
    lasts = [r.last_seq for r in reports if r.last_seq is not None]
    return AppendReport(run_id, sum(r.added for r in reports), sum(r.already_recorded for r in reports),
                        firsts[0] if firsts else None, lasts[-1] if lasts else None, reports[-1].head,
                        reports[-1].ledger)


def given_resolver(baselines: Iterable[Baseline | BuiltBaseline],
           approvals: dict[str, tuple[str | None, str | None]]) -> Resolver:
    """A resolver over baselines given in memory, one per cell."""
    from conformance.baseline.format import Baseline
    from conformance.results import BuiltBaseline
    table: dict[tuple[str, str], tuple[str, Baseline]] = {}
    for item in baselines:
        if isinstance(item, BuiltBaseline):
            baseline, uri = item.baseline, item.uri
            if item.registered is not None:
                approvals[uri] = (item.registered.tags.get("approved_by"), item.registered.tags.get("approved_at"))
        elif isinstance(item, Baseline):
            baseline, uri = item, str(item.digest)
        else:
            raise TypeError(f"baselines must hold Baseline or BuiltBaseline objects, got {type(item).__name__}")
        cell = (baseline.model_version, baseline.input_class)
        if cell in table and table[cell][1].digest != baseline.digest:
            raise ValueError(f"two different baselines were given for model_version {cell[0]!r}, input_class "
                             f"{cell[1]!r}; give one per (model_version, input_class)")
        table[cell] = (uri, baseline)

    def resolve(model_version: str, input_class: str) -> tuple[str, Baseline] | str:
        found = table.get((model_version, input_class))
        if found is not None:
            return found
        return (f"no baseline was given for model_version {model_version!r} and input_class {input_class!r} "
                f"(given: {', '.join(f'({m}, {c})' for m, c in sorted(table)) or 'none'})")

    return resolve


def registry_resolver(registry: Registry | None, approvals: dict[str, tuple[str | None, str | None]],
                   check: ApprovalCheck | None = None) -> Resolver:
    """A resolver over the approved versions in the MLflow registry, each checked against its ledger approval
    (by ``check``; default: against the default ledger)."""
    from conformance.approvals import ApprovalCheck
    from conformance.registry import Registry

    reg = registry or Registry()
    check = check or ApprovalCheck(None)

    def resolve(model_version: str, input_class: str) -> tuple[str, Baseline] | str:
        found = reg.resolve_approved(model_version, input_class)
        if isinstance(found, str):
            revoked = check.revoked(reg.name_of(model_version, input_class))
            return found if revoked is None else f"{found}; {revoked}"
        registered, baseline = found
        check.check(registered, baseline)
        approvals[registered.uri] = (registered.tags.get("approved_by"), registered.tags.get("approved_at"))
        return registered.uri, baseline

    return resolve


def embedder_chooser(keep: bool) -> Callable[[dict[str, Any]], Embedder]:
    """For each baseline, the process-wide embedder of its backend (:func:`conformance.embedder.embedder_for`)
    behind the embedding cache, one wrapper per backend."""
    from conformance.embedder import backend_of, embedder_for

    wrappers: dict[str, Embedder] = {}

    def choose(fingerprint: dict[str, Any]) -> Embedder:
        backend = backend_of(fingerprint)
        if backend not in wrappers:
            wrappers[backend] = cached(embedder_for(fingerprint), keep)
        return wrappers[backend]

    return choose


def cached(embedder: Embedder | None, keep: bool) -> Embedder:
    """``embedder`` (default the process-wide one) behind the embedding cache: with the store's file when
    ``keep``, else remembering only within a call. An embedder already behind a cache is used as it is."""
    from conformance.embedder import get_embedder
    from conformance.embedding_cache import CachedEmbedder, default_cache_path

    embedder = embedder or get_embedder()
    if isinstance(embedder, CachedEmbedder):
        return embedder
    return CachedEmbedder(embedder, path=default_cache_path() if keep else None)


@contextmanager
def existing_or_new_ledger(ledger: str | Ledger | None) -> Iterator[Ledger]:
    """The ledger (created when absent); one opened here is closed on leaving."""
    from conformance.ledger import Ledger

    if isinstance(ledger, Ledger):
        yield ledger
        return
    with Ledger(ledger) as book:
        yield book


@contextmanager
def existing_ledger(ledger: str | Ledger | None) -> Iterator[Ledger]:
    """An open ledger that must exist already; one opened here is closed on leaving."""
    from conformance.ledger import Ledger

    if isinstance(ledger, Ledger):
        yield ledger
        return
    with Ledger(ledger, create=False) as book:
        yield book


def open_ledger(ledger: str | Ledger | bool | None) -> Ledger | None:
    if ledger is False:
        return None
    from conformance.ledger import Ledger

    if isinstance(ledger, Ledger):
        return ledger
    return Ledger(None if ledger is True else ledger)
