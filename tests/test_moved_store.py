"""A project folder moved elsewhere keeps working: its baselines load from where the store is now.

MLflow records absolute artifact locations in the embedded store. Built in folder A, moved to B: scoring in B
reads each version's files under B's store (checked against the registered digest), a new build in B stores
its files in B, and nothing is written back to A. Real parts: the packaged embedder, MLflow's SQLite store.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import warnings
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE, read_jsonl, write_jsonl

pytestmark = pytest.mark.slow  # the embedder and MLflow

CELL = ("support-bot-3.2", "shipping_status")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Folder A with a tiny approved cell (10 prompts, alpha 0.2) and three audited records of it."""
    folder = tmp_path / "A"
    folder.mkdir()
    seen: set[str] = set()
    approved = []
    for row in read_jsonl(EXAMPLE / "approved.jsonl"):
        if (row["model_version"], row["input_class"]) == CELL and row["prompt_id"] not in seen and len(seen) < 10:
            seen.add(row["prompt_id"])
            approved.append(row)
    audited = [r for r in read_jsonl(EXAMPLE / "audited.jsonl") if (r.get("model_version"), r.get("input_class"))
               == CELL][:3]
    write_jsonl(approved, folder / "approved.jsonl")
    write_jsonl(audited, folder / "audited.jsonl")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return folder


def build(folder: Path, embedder: object, monkeypatch: pytest.MonkeyPatch) -> int:
    import conformance
    from conformance.baseline.fit import SmallCalibrationWarning

    monkeypatch.chdir(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallCalibrationWarning)  # small on purpose
        (built,) = conformance.build(folder / "approved.jsonl", approve_by="Mo Ver", embedder=embedder, alpha=0.2)
    return int(built.registered.version)  # type: ignore[union-attr]


def score(folder: Path, embedder: object, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, object]]:
    import conformance

    monkeypatch.chdir(folder)
    conformance.score(folder / "audited.jsonl", out=folder / "verdicts.jsonl", embedder=embedder, progress=False,
                      ledger="sqlite:///" + str(folder / "ledger.db"))
    return read_jsonl(folder / "verdicts.jsonl")


def test_a_moved_project_scores_and_builds_where_it_is_now(project: Path, embedder: object,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from conformance.registry import Registry, baseline_name

    assert build(project, embedder, monkeypatch) == 1
    moved = project.with_name("B")
    monkeypatch.chdir(project.parent)
    project.rename(moved)

    verdicts = score(moved, embedder, monkeypatch)
    name = baseline_name(*CELL)
    assert [v["baseline"] for v in verdicts] == [f"models:/{name}/1"] * 3
    assert {v["verdict"] for v in verdicts} <= {"within_bounds", "out_of_bounds"}
    assert not project.exists()  # nothing was written back to the old place

    # A new build in the moved project stores its files there, and scoring uses it.
    assert build(moved, embedder, monkeypatch) == 2
    assert not project.exists()
    assert len(list((moved / "conformance_store" / "artifacts").rglob("baseline.json"))) == 2
    (moved / "verdicts.jsonl").unlink()
    assert {v["baseline"] for v in score(moved, embedder, monkeypatch)} == {f"models:/{name}/2"}
    with sqlite3.connect(moved / "conformance_store" / "mlflow.db") as db:
        locations = dict(db.execute("SELECT name, artifact_location FROM experiments").fetchall())
    assert locations["conformance-baselines"] == (moved / "conformance_store" / "artifacts").as_uri()
    assert locations["conformance-baselines-moved-1"] == (project / "conformance_store" / "artifacts").as_uri()

    # What is read from the new place is checked as any load is: an edited file is refused.
    digest = Registry().load_version(name, 1)[1].digest
    (v1,) = [p for p in (moved / "conformance_store" / "artifacts").rglob("baseline.json")
             if json.loads(p.read_text())["digest"] == digest]
    text = v1.read_text()
    v1.write_text(text.replace('"alpha": 0.2', '"alpha": 1e-09', 1))
    from conformance.errors import BaselineError

    with pytest.raises(BaselineError, match="does not match its digest"):
        Registry().load_version(name, 1)

    # Files gone from both places: the error says where they were recorded and what to do.
    shutil.rmtree(v1.parents[3])
    with pytest.raises(BaselineError) as raised:
        Registry().load_version(name, 1)
    message = str(raised.value)
    assert str(project / "conformance_store" / "artifacts") in message and "does not exist" in message
    assert "Run from the folder that holds the whole conformance_store folder" in message
