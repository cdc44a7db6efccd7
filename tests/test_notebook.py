"""The worked-example notebook runs as it is written, on the embedded defaults.

Its code cells are executed in order, in one namespace, from a ``notebooks/`` folder beside a copy of
``baselines/example`` (as a reader runs it from the repository), with a fresh SQLite MLflow store in
the working directory. A notebook that no longer matches the API fails here rather than in a reader's
hands. The plotting cell runs only where matplotlib is installed (it is not a dependency).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE, REPO

pytestmark = pytest.mark.slow

NOTEBOOK = REPO / "notebooks" / "worked_example.ipynb"


def _code_cells() -> list[str]:
    cells = json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]


def test_the_notebook_runs_and_shows_a_flagged_verdict(embedder, tmp_path: Path, monkeypatch) -> None:
    shutil.copytree(EXAMPLE, tmp_path / "baselines" / "example")
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    has_matplotlib = importlib.util.find_spec("matplotlib") is not None
    cells = _code_cells()
    assert len(cells) >= 5, "the notebook lost its code cells"
    namespace: dict = {}
    ran = 0
    for i, source in enumerate(cells):
        if "matplotlib" in source and not has_matplotlib:
            continue
        try:
            exec(compile(source, f"{NOTEBOOK.name}, code cell {i + 1}", "exec"), namespace)  # noqa: S102 - our own notebook
        except Exception as exc:
            pytest.fail(f"{NOTEBOOK.name}, code cell {i + 1} raised {exc!r}:\n{source}")
        ran += 1
    assert ran >= len(cells) - 1
    # What the notebook's prose says the reader will see.
    built, verdicts, flagged = namespace["built"], namespace["verdicts"], namespace["flagged"]
    assert len(built) == 6 and all(b.approved_by == "Notebook Reviewer" for b in built)
    assert (tmp_path / "notebooks" / "verdicts.parquet").exists()
    assert set(verdicts["verdict"]) >= {"within_bounds", "out_of_bounds"}
    assert flagged.verdict == "out_of_bounds" and flagged.reason.startswith("Compared with")
    assert flagged.nearest, "the reviewer's cell prints the nearest approved outputs"
