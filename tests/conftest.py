"""Shared fixtures.

The end-to-end fixtures use the real parts: the packaged embedder and a real
MLflow tracking store and registry (the embedded SQLite default, in a
temporary working directory). They are session-scoped because loading the
embedder takes seconds and it embeds ~30 texts/s on this machine's 2 cores.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "baselines" / "example"
SHARED_DATA = REPO.parent / "shared" / "data" / "mt_bench_answers.jsonl.gz"

# Two of the example's six cells keep the end-to-end tests quick.
E2E_CELLS = {("support-bot-3.1", "shipping_status"), ("support-bot-3.2", "shipping_status")}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(rows: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session", autouse=True)
def _witness_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The ledgers' heads files (conformance.ledger.witness) in a folder of the session's, not in the working
    directory's store (a PostgreSQL ledger's would land there); subprocesses inherit it."""
    old = os.environ.get("CONFORMANCE_LEDGER_WITNESS")
    os.environ["CONFORMANCE_LEDGER_WITNESS"] = str(tmp_path_factory.mktemp("witness"))
    yield
    if old is None:
        os.environ.pop("CONFORMANCE_LEDGER_WITNESS", None)
    else:
        os.environ["CONFORMANCE_LEDGER_WITNESS"] = old


@pytest.fixture(scope="session")
def embedder():
    from conformance.embedder import get_embedder

    e = get_embedder()
    _ = e.model  # load once for the whole session
    return e


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A working directory with the embedded default store (MLFLOW_TRACKING_URI unset)."""
    path = tmp_path_factory.mktemp("workdir")
    old_cwd, old_uri = os.getcwd(), os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.chdir(path)
    try:
        yield path
    finally:
        os.chdir(old_cwd)
        if old_uri is not None:
            os.environ["MLFLOW_TRACKING_URI"] = old_uri


@pytest.fixture(scope="session")
def approved_subset(workdir: Path) -> Path:
    rows = [r for r in read_jsonl(EXAMPLE / "approved.jsonl") if (r["model_version"], r["input_class"]) in E2E_CELLS]
    return write_jsonl(rows, workdir / "approved-subset.jsonl")


@pytest.fixture(scope="session")
def audited_subset(workdir: Path) -> Path:
    """Audited rows of the two cells, plus every no_baseline and invalid row of the example."""
    keep = []
    for r in read_jsonl(EXAMPLE / "audited.jsonl"):
        planted = (r.get("metadata") or {}).get("planted", "")
        in_cells = (r.get("model_version"), r.get("input_class")) in E2E_CELLS
        if in_cells or planted.startswith(("no_baseline", "invalid")):
            keep.append(r)
    return write_jsonl(keep, workdir / "audited-subset.jsonl")


@pytest.fixture(scope="session")
def built(workdir: Path, approved_subset: Path, embedder) -> list[dict]:
    """The two cells built, registered and approved through the real CLI verb."""
    import contextlib
    import io

    from conformance.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["build", str(approved_subset), "--approve", "--by", "Test Approver", "--format", "json"])
    assert code == 0
    return json.loads(out.getvalue())


# The ledger's backend-parametrised fixture (SQLite and the real PostgreSQL server).
from tests.ledger_support import ledger_url  # noqa: E402, F401


# -- the fast tier stays fast ------------------------------------------------------------------
# Under `-m "not slow"` no test may load the embedder's or MLflow's libraries: a test that does
# belongs in the slow tier. The check compares sys.modules before a test's setup and after its
# teardown (so imports in fixtures count), and after importing each test module (an import at a
# module's top would otherwise load them for every test before any could be blamed). Only this
# process is watched: a test's subprocesses are its own business.

HEAVY_MODULES = ("torch", "sentence_transformers", "mlflow")
_HEAVY_BEFORE = pytest.StashKey[frozenset[str]]()


def heavy_modules_loaded() -> frozenset[str]:
    return frozenset(m for m in HEAVY_MODULES if m in sys.modules)


def deselects_slow(markexpr: str) -> bool:
    """True for a marker expression that leaves the slow tests out: `not slow`, `not slow and not x`."""
    return re.search(r"\bnot\s+slow\b", markexpr) is not None


def fast_tier(config: pytest.Config) -> bool:
    return deselects_slow(config.getoption("markexpr") or "")


def _blame(what: str, loaded: frozenset[str]) -> str:
    return (f"{what} imported {', '.join(sorted(loaded))} in the fast tier (-m \"not slow\"): "
            "mark it @pytest.mark.slow, or keep the embedder and MLflow out of it")


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
        collector: pytest.Collector) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    if not (isinstance(collector, pytest.Module) and fast_tier(collector.config)):
        return (yield)
    before = heavy_modules_loaded()
    report = yield
    loaded = heavy_modules_loaded() - before
    if loaded:
        report.outcome = "failed"
        report.longrepr = _blame(f"importing {collector.nodeid}", loaded)
    return report


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_HEAVY_BEFORE] = heavy_modules_loaded()


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    before = item.stash.get(_HEAVY_BEFORE, None)
    if fast_tier(item.config) and before is not None:
        loaded = heavy_modules_loaded() - before
        if loaded:
            pytest.fail(_blame(item.nodeid, loaded), pytrace=False)


# The suite runs on two pytest-xdist workers, a test file to a worker (pyproject.toml's addopts). These files take a
# minute or more each (a notebook run, real outputs, a server, a Spark session, two embedders); they are handed out
# first, so that no worker is left with one of them at the end while the other idles.
LONG_FILES = ("test_notebook.py", "test_real_outputs.py", "test_deploy.py", "test_spark.py", "test_embedder.py",
              "test_embedding_cache.py", "test_api.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FILES)))  # stable: each file keeps its order
