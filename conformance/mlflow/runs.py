"""Every ``score`` as an MLflow run.

A scoring run is logged in the experiment ``conformance-scoring`` (or ``CONFORMANCE_MLFLOW_EXPERIMENT``, or
the name the caller gives) of the tracking store that holds the registry, *after* the ledger committed and
the files were written: it is a record of a finished scoring, never a part of it. What it holds:

* params: the input's digest (SHA-256 of the file; of the records' canonical JSON for records in memory) and
  source, each baseline used (``baseline/<model_version>/<input_class>`` = its registry URI), alpha, engine,
  chunk size, fdr;
* metrics: ``count/<verdict>`` and ``share/<verdict>``, each group's batch p-value
  (``batch_p_value/<model_version>/<input_class>``), and ``min_batch_p_value``;
* artifacts: the verdicts file and the summary (written from memory when score was given none), and
  ``baselines.json`` (every baseline used: cell, URI, alpha);
* tags: ``conformance.ledger_run_id``, ``conformance.ledger_url`` (without credentials),
  ``conformance.ledger_head_seq``, ``conformance.ledger_head_hash`` (the head after the last append: a witness
  of the ledger outside its own database), ``conformance.verdicts_sha256``.

MLflow's own console lines ("View run ...") go to stderr, never to stdout.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from conformance.verdict import VERDICTS

if TYPE_CHECKING:
    from conformance.ledger import AppendReport
    from conformance.records import InvalidRow, Record
    from conformance.registry import Registry
    from conformance.verdict import GroupSummary, Verdict

EXPERIMENT = "conformance-scoring"
EXPERIMENT_ENV = "CONFORMANCE_MLFLOW_EXPERIMENT"


def experiment_name(given: str | None = None) -> str:
    """The scoring runs' experiment: ``given``, else ``CONFORMANCE_MLFLOW_EXPERIMENT``, else ``conformance-scoring``."""
    name = (given if given is not None else os.environ.get(EXPERIMENT_ENV, "")).strip()
    if given is not None and not name:
        raise ValueError("mlflow_experiment must be a non-empty experiment name")
    return name or EXPERIMENT


def file_digest(path: str | Path) -> str:
    """``sha256:<hex>`` of a file's bytes; of a folder's ``.parquet`` files (each name and digest, in name order)."""
    from conformance.files import source_sha256

    path = Path(path)
    if path.is_dir():
        return "sha256:" + source_sha256(sorted(p for p in path.iterdir()
                                                if p.suffix.lower() in (".parquet", ".pq") and p.is_file()))
    return "sha256:" + source_sha256([path])


class RowsDigest:
    """SHA-256 of records held in memory: each row's canonical JSON (a record's fields; an invalid row's raw
    fields and row number), one line each, in input order."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def update(self, rows: Iterable[Record | InvalidRow]) -> None:
        from conformance.ledger.canonical import canonical_json
        from conformance.records import Record

        for row in rows:
            value = row.to_dict() if isinstance(row, Record) else {"invalid_row": row.row, "raw": dict(row.raw)}
            self._hash.update(canonical_json(value).encode("utf-8") + b"\n")

    def hexdigest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


@dataclass(frozen=True)
class ScoringRun:
    """A logged scoring run: where to find it."""

    run_id: str
    experiment: str
    experiment_id: str
    tracking_uri: str

    def to_dict(self) -> dict[str, str]:
        return {"run_id": self.run_id, "experiment": self.experiment, "experiment_id": self.experiment_id,
                "tracking_uri": self.tracking_uri}


def _key(*parts: str) -> str:
    """An MLflow param or metric key from free text (characters MLflow refuses become ``-``)."""
    return "/".join(re.sub(r"[^A-Za-z0-9_.\- ]+", "-", p).strip() or "-" for p in parts)[:250]


def cell_keys(cells: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """``<model_version>/<input_class>`` of each cell as a key part; cells whose names differ only in characters
    a key cannot hold (``a/b`` and ``a-b``, two names in another script) get a digest of the exact names, so two
    cells never share a key."""
    plain = {cell: _key(*cell) for cell in sorted(set(cells))}
    taken: dict[str, int] = {}
    for key in plain.values():
        taken[key] = taken.get(key, 0) + 1
    return {cell: key if taken[key] == 1 else
            f"{key}~{hashlib.sha256(json.dumps(list(cell)).encode()).hexdigest()[:8]}"
            for cell, key in plain.items()}


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """MLflow prints "View run ..." on stdout when a run ends on a tracking server; stdout is the command line's
    machine-readable output, so its words go to stderr."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def _experiment_id(registry: Registry, name: str) -> str:
    client = registry.client
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage != "active":
            raise RuntimeError(f"the experiment {name!r} is deleted; restore it, or name another one")
        return str(found.experiment_id)
    location = None
    if registry.embedded:
        from conformance.defaults import default_store_dir

        location = (default_store_dir() / "artifacts").as_uri()
    return str(client.create_experiment(name, artifact_location=location))


def log_scoring_run(
    registry: Registry,
    *,
    experiment: str,
    input_digest: str,
    input_source: str,
    summaries: Sequence[GroupSummary],
    counts: Mapping[str, int],
    ledger: AppendReport | None,
    engine: str,
    chunk_size: int,
    fdr: float | None,
    out: str | Path | None,
    summary: str | Path | None,
    verdicts: Sequence[Verdict] | None,
) -> ScoringRun:
    """Log one finished scoring as a run (see the module doc). Raises whatever MLflow raises; a run that was
    created and then failed is marked FAILED."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.entities import Metric, Param, RunTag

    client = registry.client
    with quiet_stdout():
        experiment_id = _experiment_id(registry, experiment)
        baselines = sorted({(s.model_version or "", s.input_class or "", s.baseline, s.alpha)
                            for s in summaries if s.baseline}, key=lambda b: (b[0], b[1]))
        params = {"input_digest": input_digest, "input_source": input_source[:6000], "engine": engine,
                  "chunk_size": str(chunk_size), "fdr": "none" if fdr is None else str(fdr),
                  "alpha": ",".join(sorted({str(a) for *_, a in baselines})) or "none",
                  "n_baselines": str(len(baselines))}
        keys = cell_keys([(s.model_version or "", s.input_class or "") for s in summaries])
        for mv, ic, uri, _ in baselines:
            params["baseline/" + keys[(mv, ic)]] = str(uri)
        n = sum(counts.values())
        metrics: dict[str, float] = {"n": float(n)}
        for name in VERDICTS:
            metrics[_key("count", name)] = float(counts.get(name, 0))
            metrics[_key("share", name)] = counts.get(name, 0) / n if n else 0.0
        batch = [s for s in summaries if s.p_value is not None]
        for s in batch:
            metrics["batch_p_value/" + keys[(s.model_version or "", s.input_class or "")]] = float(s.p_value or 0.0)
        if batch:
            metrics["min_batch_p_value"] = min(float(s.p_value or 0.0) for s in batch)
        tags = {"conformance.kind": "scoring", "conformance.engine": engine}
        if ledger is not None:
            tags.update({"conformance.ledger_run_id": ledger.run_id, "conformance.ledger_url": ledger.ledger,
                         "conformance.ledger_head_seq": str(ledger.head.seq),
                         "conformance.ledger_head_hash": ledger.head.entry_hash})
        else:
            tags["conformance.ledger_url"] = "none (nothing was recorded)"
        run = client.create_run(experiment_id, run_name=f"score {Path(input_source).name}"[:250])
        run_id = run.info.run_id
        try:
            with tempfile.TemporaryDirectory() as tmp:
                verdicts_file = _verdicts_artifact(out, verdicts, summaries, Path(tmp))
                if verdicts_file is not None:
                    tags["conformance.verdicts_sha256"] = file_digest(verdicts_file)
                client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()],
                                 metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()],
                                 tags=[RunTag(k, v) for k, v in tags.items()])
                summary_file = Path(summary) if summary is not None else Path(tmp) / "summary.json"
                if summary is None:
                    summary_file.write_text(json.dumps([s.to_dict() for s in summaries], indent=2,
                                                       ensure_ascii=False) + "\n", encoding="utf-8")
                used = Path(tmp) / "baselines.json"
                used.write_text(json.dumps([{"model_version": mv, "input_class": ic, "uri": uri, "alpha": alpha}
                                            for mv, ic, uri, alpha in baselines], indent=2, ensure_ascii=False)
                                + "\n", encoding="utf-8")
                for path in (verdicts_file, summary_file, used):
                    if path is not None:
                        client.log_artifact(run_id, str(path))
            client.set_terminated(run_id, "FINISHED")
        except BaseException:
            with contextlib.suppress(Exception):
                client.set_terminated(run_id, "FAILED")
            raise
    return ScoringRun(run_id, experiment, experiment_id, registry.uri)


def _verdicts_artifact(out: str | Path | None, verdicts: Sequence[Verdict] | None,
                       summaries: Sequence[GroupSummary], tmp: Path) -> Path | None:
    """The verdicts file score wrote; else one written here from the verdicts in memory; else none."""
    if out is not None:
        return Path(out)
    if not verdicts:
        return None
    from conformance.verdict_files import ColumnPlan, VerdictWriter

    plan = ColumnPlan(fdr=any(s.fdr is not None for s in summaries))
    plan.add(list(verdicts))
    path = tmp / "verdicts.jsonl"
    writer = VerdictWriter(path, plan)
    try:
        writer.write(list(verdicts))
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return path


# -- the report on its run ----------------------------------------------------------------------------------------
def scoring_runs_of(registry: Registry, *, ledger_run_ids: Iterable[str] = (),
                    verdicts_sha256: str | None = None) -> list[str]:
    """The ids of scoring runs (in any experiment of the store) with one of these ledger run ids, or whose
    verdicts file had this digest."""
    from mlflow.entities import ViewType

    client = registry.client
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    clauses = [f"tags.`conformance.ledger_run_id` = '{_quoted(r)}'" for r in sorted(set(ledger_run_ids))]
    if verdicts_sha256 is not None:
        clauses.append(f"tags.`conformance.verdicts_sha256` = '{_quoted(verdicts_sha256)}'")
    found: list[str] = []
    for clause in clauses:
        for run in client.search_runs(experiments, filter_string=clause, max_results=100):
            if run.info.run_id not in found:
                found.append(run.info.run_id)
    return found


def _quoted(value: str) -> str:
    """A value inside a single-quoted MLflow filter string (run ids and digests hold no quote; be safe anyway)."""
    return value.replace("\\", "\\\\").replace("'", "\\'")


def log_report(registry: Registry, run_ids: Iterable[str], report: str | Path) -> list[str]:
    """Log ``report`` (report.html) as an artifact of each run; the ids it was logged to."""
    client = registry.client
    done = []
    with quiet_stdout():
        for run_id in run_ids:
            client.log_artifact(run_id, str(report))
            done.append(run_id)
    return done


__all__ = ["EXPERIMENT", "EXPERIMENT_ENV", "RowsDigest", "ScoringRun", "experiment_name", "file_digest",
           "log_report", "log_scoring_run", "scoring_runs_of"]
