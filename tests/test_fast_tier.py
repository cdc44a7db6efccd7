"""The fast tier's guard (tests/conftest.py): under `-m "not slow"`, loading torch, sentence_transformers or
mlflow fails the test, or the test module, that did it.

Each check runs a small pytest session in a subprocess with the guard as its only plugin; the heavy modules
are stand-ins put into that process's ``sys.modules``, which is all the guard looks at.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, deselects_slow

INNER_TESTS = '''
import sys
import types

import pytest


def _load(name):
    sys.modules[name] = types.ModuleType(name)


@pytest.fixture(scope="session")
def heavy_session_fixture():
    _load("sentence_transformers")


def test_light():
    pass


def test_loads_mlflow():
    _load("mlflow")


def test_loads_through_a_session_fixture(heavy_session_fixture):
    pass


@pytest.mark.slow
def test_slow_loads_torch():
    _load("torch")
'''

INNER_MODULE_LEVEL = '''
import sys
import types

sys.modules["torch"] = types.ModuleType("torch")


def test_after_a_heavy_import_at_the_top():
    pass
'''


def _run_inner(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    slow: stand-in\n", encoding="utf-8")
    (tmp_path / "test_inner.py").write_text(INNER_TESTS, encoding="utf-8")
    (tmp_path / "test_inner_top.py").write_text(INNER_MODULE_LEVEL, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider",
                           "--continue-on-collection-errors", "-q", "-rA", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_the_guard_fails_each_test_and_module_that_loads_a_heavy_module(tmp_path: Path) -> None:
    run = _run_inner(tmp_path, "-m", "not slow")
    out = run.stdout
    assert run.returncode == 1, out + run.stderr
    assert "PASSED test_inner.py::test_light" in out
    assert "test_inner.py::test_loads_mlflow imported mlflow in the fast tier" in out
    assert "test_inner.py::test_loads_through_a_session_fixture imported sentence_transformers" in out
    assert "importing test_inner_top.py imported torch in the fast tier" in out
    assert "1 deselected" in out and "test_slow_loads_torch" not in out


# That the guard stays off in the full run is shown by the full run itself: its slow tests load all three.


@pytest.mark.parametrize("markexpr, fast", [("not slow", True), ("not  slow and not postgres", True),
                                            ("(not slow)", True), ("", False), ("slow", False),
                                            ("not slower", False)])
def test_which_marker_expressions_make_the_fast_tier(markexpr: str, fast: bool) -> None:
    assert deselects_slow(markexpr) is fast
