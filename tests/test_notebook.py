"""The notebooks run as they are committed: executed with nbclient, in order, on the embedded defaults.

``worked_example.ipynb`` then ``reviewer.ipynb`` run in a ``notebooks/`` folder beside a copy of
``baselines/example`` (as a reader runs them from the repository), with a fresh SQLite MLflow store and
ledger in that folder. A notebook that no longer matches the API fails here rather than in a reader's hands.

``python -m tests.test_notebook`` executes them the same way and writes them back into ``notebooks/``
with their outputs, as they are committed.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE, REPO

pytestmark = pytest.mark.slow

NOTEBOOKS = ("worked_example.ipynb", "reviewer.ipynb")


def execute(folder: Path) -> dict[str, object]:
    """Run both notebooks in ``folder/notebooks`` (a copy of the repository's layout); the executed notebooks."""
    import nbformat
    from nbclient import NotebookClient

    shutil.copytree(EXAMPLE, folder / "baselines" / "example")
    (folder / "notebooks").mkdir()
    done = {}
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "CONFORMANCE_LEDGER_URL")}
    old = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        for name in NOTEBOOKS:
            notebook = nbformat.read(REPO / "notebooks" / name, as_version=4)
            NotebookClient(notebook, timeout=900, kernel_name="python3",
                           resources={"metadata": {"path": str(folder / "notebooks")}}).execute()
            done[name] = notebook
    finally:
        os.environ.clear()
        os.environ.update(old)
    return done


def _text(notebook: object) -> str:
    parts = []
    for cell in notebook.cells:  # type: ignore[attr-defined]
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            for value in (output.get("data") or {}).values():
                parts.append(value if isinstance(value, str) else "")
    return "\n".join(parts)


def test_the_notebooks_run_and_show_what_their_prose_says(embedder, tmp_path: Path) -> None:
    done = execute(tmp_path)
    for name, notebook in done.items():
        errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]  # type: ignore[attr-defined]
        assert errors == [], f"{name}: {errors}"
    worked, reviewer = _text(done["worked_example.ipynb"]), _text(done["reviewer.ipynb"])
    assert "building baseline 6 of 6" in worked and "out_of_bounds" in worked and "Compared with" in worked
    assert "<svg" in worked and (tmp_path / "notebooks" / "report.html").is_file()
    assert (tmp_path / "notebooks" / "verdicts.parquet").exists()
    assert "intact" in reviewer and "ALTERED" not in reviewer and "<svg" in reviewer
    assert "NEAREST APPROVED" in reviewer and "confirmed by Notebook Reviewer" in reviewer
    assert "the chain still verifies with the sign-off in it" in reviewer


def test_the_committed_notebooks_carry_their_outputs() -> None:
    import nbformat

    for name in NOTEBOOKS:
        notebook = nbformat.read(REPO / "notebooks" / name, as_version=4)
        code = [c for c in notebook.cells if c.cell_type == "code"]
        assert code and all(c.get("execution_count") for c in code), f"{name} is committed without its outputs"
        assert not [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"], name


if __name__ == "__main__":  # write the executed notebooks back, with their outputs
    import tempfile

    import nbformat

    with tempfile.TemporaryDirectory() as scratch:
        for name, notebook in execute(Path(scratch)).items():
            nbformat.write(notebook, REPO / "notebooks" / name)  # type: ignore[arg-type]
            print(f"wrote notebooks/{name}", file=sys.stderr)
