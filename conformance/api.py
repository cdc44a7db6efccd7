"""The one API every door calls: ``build``, ``approve``, ``score``; and a reviewer's ``signoff``.

Records come from a file or from memory (a pandas DataFrame, a pyarrow Table, an
iterable of mappings; see :func:`conformance.records.as_record_set`). Baselines come
from the MLflow registry (what a person approved) or are given in memory. The
command line, the MLflow pyfunc model and the notebook are thin layers over these
functions. ``signoff`` and ``signoffs_of`` record and read reviewers' decisions about
recorded verdicts, for the command line and a review page alike.

Heavy libraries (SciPy, torch, MLflow, SQLAlchemy) are imported inside the functions
that need them, so that importing this module, ``conformance --help`` and ``approve``
stay light.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conformance import defaults
from conformance.errors import BaselineError, InputFileError
from conformance.files import check_output_targets
from conformance.results import BuiltBaseline, ScoreResult
from conformance.verdict import VERDICTS
from conformance.wiring import (
    cached,
    embedder_chooser,
    existing_ledger,
    existing_or_new_ledger,
    given_resolver,
    log_scoring_run,
    merge_reports,
    open_ledger,
    record_chunks,
    registry_resolver,
)

if TYPE_CHECKING:

    from conformance.baseline.format import Baseline
    from conformance.embedder import Embedder
    from conformance.ledger import Ledger
    from conformance.records import RecordsLike
    from conformance.registry import RegisteredBaseline, Registry


def build(
    records: RecordsLike,
    *,
    register: bool = True,
    approve_by: str | None = None,
    alpha: float = defaults.ALPHA,
    k: int = defaults.K,
    calibration_fraction: float = defaults.CALIBRATION_FRACTION,
    seed: int = defaults.SEED,
    scorer: str = defaults.SCORER,
    calibration_method: str = defaults.CALIBRATION_METHOD,
    delta: float | None = None,
    round_calibration: bool = True,
    registry: Registry | None = None,
    embedder: Embedder | None = None,
    cache: bool | None = None,
    progress: bool | None = None,
    backend: str = defaults.EMBEDDER_BACKEND,
    built_by: str | None = None,
    require_distinct_approver: bool | None = None,
    ledger: str | Ledger | None = None,
) -> list[BuiltBaseline]:
    """Build one baseline per (model_version, input_class) of the approved ``records``.

    Every cell is checked before anything is embedded or registered: an invalid approved
    record or a cell too small for ``alpha`` stops the whole build with one error that
    lists every problem.

    Parameters
    ----------
    records : path, DataFrame, pyarrow Table or iterable of mappings
        Approved evaluation outputs, one per row.
    register : bool
        Register each baseline as a new version in the MLflow registry (``registry``, default
        the store of ``MLFLOW_TRACKING_URI`` or the embedded one). ``False`` builds in memory only:
        no MLflow, no files.
    approve_by : str, optional
        Approve the new versions in this person's name (needs ``register``): every cell is registered first,
        and all are approved at the end, or none if any cell failed (docs/ml-teams.md).
    built_by : str, optional
        Who builds (default: the operating system's user name); kept in each baseline's lineage and as the
        version's ``built_by`` tag, with a ``build_id`` shared by the versions of this call.
    require_distinct_approver : bool, optional
        Refuse ``approve_by`` when it names the builder (default: the store's setting,
        :func:`conformance.approvals.require_distinct_default`).
    ledger : str or Ledger, optional
        Where the approvals are recorded (default ``CONFORMANCE_LEDGER_URL``, else the embedded file).
    alpha, k, calibration_fraction, seed, scorer, calibration_method, delta, round_calibration
        As the ``conformance build`` options of the same names (docs/ml-teams.md).
    cache : bool, optional
        Keep and reuse embeddings in the embedding cache, ``./conformance_store/embeddings.db``
        (docs/pipelines.md). ``None`` (the default): on when ``register``, off otherwise, so that an
        in-memory build writes no file. Duplicate texts are embedded once either way.
    progress : bool, optional
        ``None`` (default): a bar per cell on a terminal, a log line now and then otherwise (each cell as
        it starts, the count and rate); ``False``: nothing; ``True``: bars.
    backend : {"torch", "onnx", "onnx-int8"}
        What runs the embedder (the process-wide one of that backend) when no ``embedder`` is given;
        recorded in the baselines' embedder fingerprint, and scoring uses the same one (docs/pipelines.md).

    Examples
    --------
    >>> built = conformance.build(approved_frame, register=False)  # doctest: +SKIP
    >>> built[0].baseline.save("baseline_dir")                        # doctest: +SKIP
    """
    from conformance.params import check_alpha, check_calibration_method, check_person
    from conformance.records import Record, as_record_set

    alpha = check_alpha(alpha)
    check_calibration_method(calibration_method, delta)
    if backend not in defaults.EMBEDDER_BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(defaults.EMBEDDER_BACKENDS)}, got {backend!r}")
    if approve_by is not None and not register:
        raise ValueError("approve_by needs register=True: an approval is recorded in the registry")
    from conformance.approvals import default_builder, new_build_id, require_distinct_default, same_person

    built_by = check_person(built_by, "the builder's name") if built_by is not None else default_builder()
    if approve_by is not None:  # before anything is built or registered
        approve_by = check_person(approve_by)
        distinct = require_distinct_default() if require_distinct_approver is None else require_distinct_approver
        if distinct and same_person(approve_by, built_by):
            raise ValueError(f"{approve_by!r} builds these baselines and may not approve them: a distinct approver is "
                             "required. Build without --approve and have another person run `conformance approve`. "
                             "Nothing was built or registered")
    record_set = as_record_set(records)  # a missing or unreadable file fails here, before the heavy imports
    from conformance.baseline.fit import build_baseline, plan_cell

    source = record_set.path
    if record_set.invalid:
        listed = "\n  ".join(f"{source}: {bad.reason}" for bad in record_set.invalid[:50])
        more = len(record_set.invalid) - 50
        raise InputFileError(
            f"{len(record_set.invalid)} approved record(s) are invalid; a baseline must be built from "
            f"clean approved data. Fix or remove them:\n  {listed}" + (f"\n  ... and {more} more" if more > 0 else "")
        )
    cells: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for record in record_set.records:
        cells[record.cell].append(record)
    if register:  # two cells whose registry names collide are refused before anything is registered
        from conformance.registry import baseline_name

        by_name: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for cell in cells:
            by_name[baseline_name(*cell)].append(cell)
        clashes = {name: found for name, found in by_name.items() if len(found) > 1}
        if clashes:
            said = "; ".join(f"{name} would be the name of " + " and ".join(
                f"(model_version {mv!r}, input_class {ic!r})" for mv, ic in found) for name, found in clashes.items())
            raise InputFileError(f"{source}: cells whose registry names collide: {said}. A registry name keeps "
                                 "letters, digits, '.', '_' and '-' only; rename model_version or input_class so that "
                                 "they differ in those characters. Nothing was built or registered")
    problems = []
    for cell_records in cells.values():
        try:
            plan_cell(cell_records, alpha=alpha, calibration_fraction=calibration_fraction, seed=seed, delta=delta,
                      round_calibration=round_calibration, calibration_method=calibration_method)
        except BaselineError as exc:
            problems.append(str(exc))
    if problems:
        raise BaselineError("no baseline was built:\n  " + "\n  ".join(problems))
    if register:
        from conformance.registry import Registry

        registry = registry or Registry()
        _ = registry.client  # fail on an unreachable store before the slow part
    book = open_ledger(True if ledger is None else ledger) if approve_by is not None else None
    if embedder is None:
        from conformance.embedder import get_embedder

        embedder = get_embedder(backend)
    elif backend != defaults.EMBEDDER_BACKEND and embedder.backend != backend:
        raise ValueError(f"backend {backend!r} and an embedder of backend {embedder.backend!r} were both given; "
                         "give one of them")
    embedder = cached(embedder, register if cache is None else cache)
    built = []
    from dataclasses import replace as replaced_with

    from conformance.baseline.format import with_digest
    from conformance.progress import Progress

    build_id = new_build_id()

    lines = Progress(desc="building baselines", total=len(record_set.records), unit="approved output",
                     enabled=progress, bar=False)
    for i, ((mv, ic), cell_records) in enumerate(cells.items(), start=1):
        if lines.mode == "lines":
            print(f"building baseline {i} of {len(cells)}: ({mv}, {ic}), {len(cell_records)} approved outputs",
                  file=sys.stderr, flush=True)
        baseline = build_baseline(cell_records, alpha=alpha, k=k, calibration_fraction=calibration_fraction,
                                  seed=seed, embedder=embedder, source=source, delta=delta, scorer=scorer,
                                  calibration_method=calibration_method, round_calibration=round_calibration,
                                  progress=progress)
        lines.update(len(cell_records))
        if registry is None:
            built.append(BuiltBaseline(baseline))
            continue
        baseline = with_digest(replaced_with(baseline, lineage=baseline.lineage | {"built_by": built_by,
                                                                                   "build_id": build_id}))
        built.append(BuiltBaseline(baseline, registry.register(baseline, approved=cell_records)))
    lines.close()
    if approve_by is not None and registry is not None and book is not None:
        # Every cell is registered: now all are approved, or none (conformance.approvals says in which order).
        from conformance import approvals

        try:
            targets = [approvals.target(registry, b.baseline.model_version, b.baseline.input_class,
                                        b.registered.version) for b in built if b.registered is not None]
            done = approvals.approve(registry, book, targets, by=approve_by, require_distinct=False)
        finally:
            if not hasattr(ledger, "append"):
                book.close()
        built = [BuiltBaseline(b.baseline, reg, approve_by) for b, (reg, _) in zip(built, done)]
    return built


def approve(
    model_version: str, input_class: str, *, by: str, version: int | None = None, registry: Registry | None = None,
    ledger: str | Ledger | None = None, require_distinct_approver: bool | None = None,
) -> RegisteredBaseline:
    """Approve a registered baseline version (default: the newest); a person's step. Loads no embedder.

    The approval (who, when, the version, the version it replaced, and the baseline's content digest as
    loaded) is appended to ``ledger`` (default ``CONFORMANCE_LEDGER_URL``, else the embedded file) and kept in
    the registry's history tags; then the alias ``approved`` moves (:mod:`conformance.approvals`). With
    ``require_distinct_approver`` (default: the store's setting) the builder may not approve.
    """
    return approve_many([(model_version, input_class, version)], by=by, registry=registry, ledger=ledger,
                        require_distinct_approver=require_distinct_approver)[0]


def approve_many(
    cells: Sequence[tuple[str, str, int | None]] | None = None, *, names: Sequence[str] = (),
    build: str | None = None, by: str, registry: Registry | None = None, ledger: str | Ledger | None = None,
    require_distinct_approver: bool | None = None,
) -> list[RegisteredBaseline]:
    """Approve several versions at once: ``cells`` as (model_version, input_class, version or None for the
    newest), the newest versions of registered models ``names``, and every version of one ``build`` (its build
    id, or one of its runs' ids). Every one is loaded and checked before any is approved; the ledger records
    all of them in one transaction, or none."""
    from conformance import approvals
    from conformance.params import check_person
    from conformance.registry import Registry

    by = check_person(by)
    distinct = approvals.require_distinct_default() if require_distinct_approver is None \
        else require_distinct_approver
    reg = registry or Registry()
    targets = [approvals.target(reg, mv, ic, v) for mv, ic, v in (cells or [])]
    targets += [approvals.target(reg, *approvals.cell_of(reg, name), None) for name in names]
    if build is not None:
        targets += approvals.targets_of_build(reg, build)
    if not targets:
        raise ValueError("nothing to approve: name the versions (cells, names or a build)")
    approvals.check(targets, by=by, require_distinct=distinct)  # before the ledger is opened
    with existing_or_new_ledger(ledger) as book:
        return [registered for registered, _ in approvals.approve(reg, book, targets, by=by,
                                                                    require_distinct=distinct)]


def revoke(name: str, *, by: str, reason: str, registry: Registry | None = None,
           ledger: str | Ledger | None = None) -> dict[str, Any]:
    """Revoke the approved version of registered model ``name``: recorded in the ledger and the registry's
    history, then the alias ``approved`` is removed, so that ``score`` gives ``no_baseline`` for its cell with
    a reason naming the revocation. Returns the revocation (``added`` false when a retry found it recorded)."""
    from conformance import approvals
    from conformance.params import check_person
    from conformance.registry import Registry

    by = check_person(by, "the revoker's name")
    if not isinstance(reason, str) or not reason.strip():
        raise ValueError("a revocation needs a reason: pass --reason TEXT (why it is revoked, in your words)")
    reg = registry or Registry()
    with existing_or_new_ledger(ledger) as book:
        return approvals.revoke(reg, book, name, by=by, reason=reason).to_dict()


def score(
    records: RecordsLike,
    *,
    baselines: Iterable[Baseline | BuiltBaseline] | None = None,
    ledger: str | Ledger | bool | None = None,
    out: str | Path | None = None,
    summary: str | Path | None = None,
    fdr: float | None = None,
    run_id: str | None = None,
    progress: bool | None = None,
    registry: Registry | None = None,
    embedder: Embedder | None = None,
    cache: bool | None = None,
    keep_verdicts: bool = True,
    chunk_size: int | None = None,
    max_output_chars: int | None = defaults.MAX_TEXT_CHARS,
    raw_csv: bool = False,
    mlflow_run: bool | None = None,
    mlflow_experiment: str | None = None,
) -> ScoreResult:
    """Score every record against the baseline of its (model_version, input_class).

    Parameters
    ----------
    records : path, DataFrame, pyarrow Table or iterable of mappings
        Audited outputs, one per row. Invalid rows get an ``invalid`` verdict, never dropped.
    baselines : iterable of Baseline or BuiltBaseline, optional
        Score against these (one per cell) instead of the registry's approved versions: no MLflow
        is touched. A record of a cell without one gets ``no_baseline``.
    ledger : None, False, True, URL or Ledger
        Where every verdict is appended (one transaction per chunk). ``None``: the embedded SQLite ledger
        (or ``CONFORMANCE_LEDGER_URL``) when baselines come from the registry, nothing when
        ``baselines`` are given; ``False``: nothing; ``True``: the default ledger; a URL; an open
        :class:`~conformance.ledger.Ledger`. The ledger is opened before anything is scored.
    out, summary : path, optional
        Where to write the verdicts (format by extension: .jsonl, .csv, .parquet) and the per-group
        batch summary (JSON), each atomically.
    fdr : float, optional
        Also flag records by Benjamini-Hochberg at this false discovery rate over the whole batch
        (``bh_flag``); verdicts stay ``p_value <= alpha``.
    cache : bool, optional
        Keep and reuse embeddings in the embedding cache, ``./conformance_store/embeddings.db``
        (docs/pipelines.md). ``None`` (the default): on when the baselines come from the registry, off
        when ``baselines`` are given, so that in-memory scoring writes no file. Duplicate texts are
        embedded once either way.
    keep_verdicts : bool
        Return every verdict in ``ScoreResult.verdicts`` (default). ``False`` keeps memory bounded
        whatever the number of records: the verdicts go only to ``out`` and the ledger, and the result
        holds the summaries and counts.
    chunk_size : int, optional
        Records read, scored and recorded at a time (default 1,000): records are streamed from the
        source, and the ledger gets one transaction per chunk.
    max_output_chars : int or None, optional
        A record whose ``input`` or ``output`` is longer (in characters) is ``invalid``, with a reason that
        says so, instead of being embedded (default 1,000,000; None: no limit).
    raw_csv : bool, optional
        In a ``.csv`` verdicts file, keep texts that a spreadsheet would run as a formula (starting with ``=``,
        ``+``, ``-``, ``@``, a tab or a CR) as they are; by default they are prefixed with ``'``.
    mlflow_run : bool, optional
        Log this score as an MLflow run in the registry's tracking store (docs/mlflow.md, "Every score is a
        run"), after the ledger committed and the files were written. ``None`` (the default): when the
        baselines come from the registry (and at least one record reached it: a batch of invalid rows only
        touches no MLflow); never for baselines given in memory (no MLflow touched then).
        If MLflow fails then, the verdicts stand: a warning says so, ``ScoreResult.mlflow_run_error`` holds
        why, and nothing is raised.
    mlflow_experiment : str, optional
        The scoring runs' experiment (default ``CONFORMANCE_MLFLOW_EXPERIMENT``, else ``conformance-scoring``).

    Re-running the same call after an interruption (even ``kill -9``) continues: the embedding cache
    holds what was embedded, the ledger skips what it already recorded, and the verdicts file is written
    whole at the end (docs/pipelines.md).

    Raises
    ------
    InputFileError, BaselineError, RegistryError, LedgerError
        Before anything is appended or written. Every cell's baseline is resolved before the first
        verdict is made: a cell gets ``no_baseline`` only when the registry says it has no approved
        baseline, and any other registry failure (server down, permission refused) raises
        ``RegistryError`` and stops the whole run. An approved version whose loaded content has another
        digest than the ledger's newest approval of it, or that no ledger approval covers, raises
        ``BaselineError`` (the ledger scored to, then the default one, are read; docs/ml-teams.md).
    """
    from conformance.params import check_fdr
    from conformance.record_stream import CHUNK_SIZE, stream_records
    from conformance.verdict import write_json

    check_output_targets([records] if isinstance(records, (str, Path)) else [], {"--out": out, "--summary": summary})
    if out is not None and Path(out).suffix.lower() not in (".jsonl", ".ndjson", ".csv", ".parquet"):
        raise InputFileError(f"{out}: the verdicts file must end in .jsonl, .csv or .parquet")
    if fdr is not None:
        check_fdr(fdr)
    # A missing or unreadable file fails here, before the heavy imports.
    if max_output_chars is not None and (not isinstance(max_output_chars, int) or max_output_chars < 1):
        raise ValueError(f"max_output_chars must be a positive integer or None, got {max_output_chars!r}")
    stream = stream_records(records, chunk_size=chunk_size or CHUNK_SIZE, count=progress is not False,
                            max_chars=max_output_chars)
    from conformance.ledger.store import new_run_id
    from conformance.progress import Progress
    from conformance.scoring.stream import StreamScorer
    from conformance.verdict_files import ColumnPlan, Spool, VerdictWriter

    from conformance.mlflow.runs import RowsDigest, experiment_name

    log_run = baselines is None if mlflow_run is None else bool(mlflow_run)
    experiment = experiment_name(mlflow_experiment) if log_run else None
    rows_digest = RowsDigest() if log_run and not isinstance(records, (str, Path)) else None
    approvals: dict[str, tuple[str | None, str | None]] = {}
    if baselines is not None:
        resolve = given_resolver(baselines, approvals)
        book = open_ledger(False if ledger is None else ledger)
    else:
        from conformance.registry import Registry

        registry = registry or Registry()
        book = open_ledger(ledger)
        from conformance.approvals import ApprovalCheck

        try:
            check = ApprovalCheck(book)
        except BaseException:
            if book is not None and not hasattr(ledger, "append"):
                book.close()
            raise
        resolve = registry_resolver(registry, approvals, check)
    run_id = run_id or new_run_id()
    spool = Spool(in_memory=keep_verdicts, folder=None if out is None else Path(out).parent)
    writer = None
    try:
        # Pass 1: judge every record, chunk by chunk; the batch tests need the whole batch.
        keep = baselines is None if cache is None else cache
        scorer = StreamScorer(resolve, fdr=fdr, progress=False,
                              embedder=embedder_chooser(keep) if embedder is None else cached(embedder, keep))
        plan = ColumnPlan(fdr=fdr is not None)
        counts = {name: 0 for name in VERDICTS}
        with Progress(desc="scoring", total=stream.total, enabled=progress) as bar:
            for rows in stream:
                if rows_digest is not None:
                    rows_digest.update(rows)
                chunk = scorer.score_chunk(rows)
                # Who approved the baseline version each verdict used, and when: evidence for the reviewer.
                chunk = [v if v.baseline not in approvals else
                         replace(v, approved_by=approvals[v.baseline][0], approved_at=approvals[v.baseline][1])
                         for v in chunk]
                for v in chunk:
                    counts[v.verdict] += 1
                if out is not None:
                    plan.add(chunk)
                spool.write(chunk)
                bar.update(len(rows))
        summaries, flags = scorer.finish()
        # Pass 2: each chunk into the ledger (one transaction each, exactly once) and into the verdicts file.
        writer = None if out is None else VerdictWriter(out, plan, raw_csv=raw_csv)
        reports, kept = record_chunks(spool.chunks(chunk_size or CHUNK_SIZE), flags=flags, book=book, run_id=run_id,
                                summaries=summaries, writer=writer, keep_verdicts=keep_verdicts)
        if writer is not None:
            writer.commit()
            writer = None
    finally:
        spool.close()
        if writer is not None:
            writer.abort()
        if book is not None and not hasattr(ledger, "append"):
            book.close()  # opened here
        if baselines is None:
            check.close()
    if summary is not None:
        write_json([s.to_dict() for s in summaries], summary)
    result = ScoreResult(verdicts=kept, summaries=summaries, ledger=merge_reports(reports, run_id, book),
                         n_by_verdict=counts)
    if experiment is None or (mlflow_run is None and not scorer.resolved):
        return result  # by default, a batch that never reached the registry (every row invalid) touches no MLflow
    from conformance.mlflow.runs import file_digest

    return log_scoring_run(result, registry=registry, experiment=experiment, source=stream.path,
                           digest=rows_digest.hexdigest() if rows_digest is not None else file_digest(records),
                           engine="local", chunk_size=chunk_size or CHUNK_SIZE, fdr=fdr, out=out, summary=summary)


def signoff(record_id: str, *, decision: str, by: str, comment: str | None = None, seq: int | None = None,
            ledger: str | Ledger | None = None) -> dict[str, Any]:
    """Record a reviewer's decision about a recorded verdict, as a new ledger entry; the verdict never changes.

    When the verdict's record was read from an MLflow trace, the sign-off is also logged onto that trace as a
    Feedback named ``conformance.signoff`` (once); when the tracking store cannot be reached, a warning says so
    and the sign-off stays recorded in the ledger.

    Parameters
    ----------
    record_id : str
        The record whose verdict is signed: its newest verdict entry, unless ``seq`` names another.
    decision : {"confirmed", "false_alarm", "escalated"}
        ``confirmed``: the verdict stands (for ``out_of_bounds``: out of bounds, confirmed);
        ``false_alarm``: on review the output is acceptable; ``escalated``: passed on for someone else to decide.
    by : str
        Who decides: one line of plain text, not empty (surrounding white space is dropped).
    comment : str, optional
        Free text, stored as given (as data; printed escaped).
    seq : int, optional
        The verdict entry to sign, when the record has several (``conformance verdicts --record-id``).
    ledger : str or Ledger, optional
        A ledger URL (default ``CONFORMANCE_LEDGER_URL``, else the embedded file) or an open ``Ledger``.
        It must exist already.

    Returns
    -------
    dict
        The sign-off (``seq`` and ``entry_hash`` of its own entry, ``signed_seq`` and ``signed_hash`` of the
        verdict entry it signs, ``record_id``, ``decision``, ``by``, ``comment``, ``signed_at``), ``added``
        (``False`` when an identical sign-off was already recorded: that one is returned, nothing is added),
        ``head_seq``, ``head_hash`` and ``ledger``.

    Raises
    ------
    SignOffError
        A decision not allowed, or an empty reviewer's name or one with control characters.
    EntryNotFoundError
        No verdict entry of ``record_id``, or ``seq`` is not one (a sign-off cannot be signed).
    LedgerError
        No ledger at the URL, or it cannot be reached. In every case nothing is recorded.

    Examples
    --------
    >>> conformance.api.signoff("aud-0043", decision="confirmed", by="J. Doe",
    ...                         comment="promises a refund; ticket 4411")  # doctest: +SKIP
    {'seq': 75, 'signed_seq': 43, 'decision': 'confirmed', 'added': True, ...}
    """
    from conformance.ledger.signoff import SignOffRequest

    SignOffRequest.checked(record_id, decision=decision, by=by, comment=comment, seq=seq)  # before any connection
    with existing_ledger(ledger) as book:
        entry, report = book.sign_off(record_id, decision=decision, by=by, comment=comment, seq=seq)
        from conformance.mlflow.assessments import signoff_onto_trace  # a verdict of a trace: the sign-off onto it too

        signoff_onto_trace(book, entry.to_dict())
    return entry.to_dict() | {"added": report.added == 1, "head_seq": report.head.seq,
                              "head_hash": report.head.entry_hash, "ledger": report.ledger}


def signoffs_of(record_id: str, *, ledger: str | Ledger | None = None) -> list[dict[str, Any]]:
    """The reviewers' sign-offs of a record's verdicts, in ledger order (oldest first); empty when none.

    Each is a dict as :func:`signoff` returns it, without ``added`` and the head: ``signed_seq`` says which
    verdict entry it signs. Raises ``EntryNotFoundError`` when the ledger holds no verdict of ``record_id``.
    """
    with existing_ledger(ledger) as book:
        book.verdict_entry(record_id)
        return [s.to_dict() for s in book.signoffs([record_id])]


__all__: Sequence[str] = ["BuiltBaseline", "ScoreResult", "approve", "approve_many", "build", "revoke", "score",
                          "signoff", "signoffs_of"]
