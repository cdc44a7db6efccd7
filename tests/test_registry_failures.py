"""The registry fails loudly: only MLflow's "does not exist" is a missing baseline.

Any other failure of the tracking store stops a run with a RegistryError (exit 2 on the
command line) before anything is appended to the ledger or written to a verdicts file.
The slow tests run a real ``mlflow server`` on loopback and stop it in the middle of a run.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conformance.errors import RegistryError
from conformance.registry import Registry, baseline_name
from tests.conftest import E2E_CELLS, EXAMPLE, read_jsonl, write_jsonl

pytestmark = pytest.mark.slow  # MLflow everywhere; the embedder and a server for the last two

# A stopped server must fail the run at once, not after MLflow's minutes of retries.
FAIL_FAST = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


# -- no server: a real SQLite store ---------------------------------------------------------
@pytest.fixture(scope="module")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite store with its tables created, to copy: creating them takes seconds."""
    path = tmp_path_factory.mktemp("empty-store") / "mlflow.db"
    _ = Registry("sqlite:///" + str(path)).client
    return path


@pytest.fixture
def sqlite_registry(empty_store: Path, tmp_path: Path) -> Registry:
    shutil.copyfile(empty_store, tmp_path / "mlflow.db")
    return Registry("sqlite:///" + str(tmp_path / "mlflow.db"))


def test_a_missing_model_is_no_baseline(sqlite_registry: Registry) -> None:
    reason = sqlite_registry.resolve_approved("no-such-bot", "refund_request")
    assert isinstance(reason, str)
    assert reason.startswith("no baseline is registered for model_version 'no-such-bot'")
    assert sqlite_registry.approved_version("no-such-bot", "refund_request") is None


def test_a_model_without_approved_version_is_no_baseline(sqlite_registry: Registry, tmp_path: Path) -> None:
    name = baseline_name("bot-1", "refund_request")
    client = sqlite_registry.client
    client.create_registered_model(
        name, tags={"conformance.model_version": "bot-1", "conformance.input_class": "refund_request"})
    reason = sqlite_registry.resolve_approved("bot-1", "refund_request")
    assert isinstance(reason, str) and "no version of it is approved" in reason
    for _ in range(2):
        client.create_model_version(name, source=tmp_path.as_uri())
    assert sqlite_registry.approved_version("bot-1", "refund_request") is None
    client.set_registered_model_alias(name, "approved", "2")
    assert sqlite_registry.approved_version("bot-1", "refund_request") == 2


def test_cells_that_share_a_name_are_told_apart_exactly(sqlite_registry: Registry) -> None:
    """'bot-1' and 'bot-1 ' have names of their own; 'a.b'/'c' and 'a'/'b.c' share one, and the messages show both
    cells exactly (repr), so that values differing in white space could never read the same."""
    assert baseline_name("bot-1 ", "refund_request") != baseline_name("bot-1", "refund_request")
    name = baseline_name("a.b", "c")
    assert baseline_name("a", "b.c") == name
    sqlite_registry.client.create_registered_model(
        name, tags={"conformance.model_version": "a.b", "conformance.input_class": "c"})
    reason = sqlite_registry.resolve_approved("a", "b.c")
    assert isinstance(reason, str)
    assert "belongs to (model_version 'a.b', input_class 'c')" in reason
    assert "not to (model_version 'a', input_class 'b.c')" in reason
    with pytest.raises(RegistryError, match=r"not \(model_version 'a', input_class 'b.c'\)"):
        sqlite_registry._check_name_owner(name, "a", "b.c")


def test_a_cell_registered_under_its_old_name_keeps_it(sqlite_registry: Registry, tmp_path: Path) -> None:
    """A cell registered before names kept a digest suffix ('my bot' as conformance.my-bot.refund) is still found
    there, and new versions go there too; a cell whose old name another cell holds gets its new name."""
    from conformance.registry.mlflow_registry import legacy_baseline_name

    client = sqlite_registry.client
    old = legacy_baseline_name("my bot", "refund")
    assert old == "conformance.my-bot.refund" and baseline_name("my bot", "refund") != old
    assert sqlite_registry.name_of("my bot", "refund") == baseline_name("my bot", "refund")  # nothing registered yet
    client.create_registered_model(old, tags={"conformance.model_version": "my bot",
                                              "conformance.input_class": "refund"})
    client.create_model_version(old, source=tmp_path.as_uri())
    client.set_registered_model_alias(old, "approved", "1")
    assert sqlite_registry.name_of("my bot", "refund") == old
    assert sqlite_registry.approved_version("my bot", "refund") == 1
    # 'my/bot' slugs to the same old name, which 'my bot' owns: it gets a name of its own
    assert sqlite_registry.name_of("my/bot", "refund") == baseline_name("my/bot", "refund") != old
    assert sqlite_registry.approved_version("my/bot", "refund") is None


def test_a_broken_store_is_an_error_not_a_missing_baseline(sqlite_registry: Registry, tmp_path: Path) -> None:
    name = baseline_name("bot-1", "refund_request")
    sqlite_registry.client.create_registered_model(
        name, tags={"conformance.model_version": "bot-1", "conformance.input_class": "refund_request"})
    with sqlite3.connect(tmp_path / "mlflow.db") as db:  # a real database error, not a mock
        db.execute("DROP TABLE registered_model_aliases")
    for call in (sqlite_registry.resolve_approved, sqlite_registry.approved_version):
        with pytest.raises(RegistryError) as raised:
            call("bot-1", "refund_request")
        message = str(raised.value)
        assert sqlite_registry.uri in message and repr(name) in message
        assert "failed to read the registered model" in message and "registered_model_aliases" in message
        assert "Retry" in message and "\n" not in message


# -- a real mlflow server, stopped in the middle of a run ----------------------------------
class MlflowServer:
    """``mlflow server`` on loopback in its own process group, so that stopping it ends its workers too."""

    def __init__(self, root: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log = root / "server.log"
        mlflow_cli = Path(sys.executable).with_name("mlflow")
        if not mlflow_cli.exists():
            pytest.skip(f"no mlflow command beside {sys.executable}")
        # Job execution starts a pool of consumer processes that this test does not need.
        env = os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [str(mlflow_cli), "server", "--backend-store-uri", "sqlite:///" + str(root / "mlflow.db"),
                 "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1",
                 "--port", str(self.port), "--workers", "1"],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.uri + "/health", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def wait_until_up(self, timeout: float = 150) -> None:
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log.read_text(errors="replace")[-2000:]
                pytest.fail(f"mlflow server at {self.uri} did not answer within {timeout:.0f} s:\n{tail}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.process.poll() is None:
            for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
                try:
                    os.killpg(self.process.pid, sig)  # the group this test started, by its id
                except ProcessLookupError:
                    break
                try:
                    self.process.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        deadline = time.monotonic() + 20
        while self.answers() and time.monotonic() < deadline:  # a worker may outlive its parent briefly
            time.sleep(0.2)
        assert not self.answers(), f"mlflow server at {self.uri} still answers after being stopped"


class StopsTheServer(Registry):
    """A registry that stops the server right after resolving the first cell; the failure after it is real."""

    def __init__(self, server: MlflowServer) -> None:
        super().__init__(server.uri)
        self.server = server
        self.resolved: list[tuple[tuple[str, str], Any]] = []

    def resolve_approved(self, model_version: str, input_class: str) -> Any:
        found = super().resolve_approved(model_version, input_class)
        self.resolved.append(((model_version, input_class), found))
        if len(self.resolved) == 1:
            self.server.stop()
        return found


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A server starting (its users wait until it is up), with MLflow's client set to fail at once."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in FAIL_FAST.items():
            mp.setenv(key, value)
        starting = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
        try:
            yield starting
        finally:
            starting.stop()


@pytest.fixture(scope="module")
def two_cells(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Approved outputs of the two end-to-end cells, one per prompt and 24 prompts each (building stays
    quick; alpha 0.1 needs 9 calibration prompts), and the audited rows of those cells."""
    folder = tmp_path_factory.mktemp("two-cells")
    prompts: dict[tuple[str, str], set[str]] = {cell: set() for cell in E2E_CELLS}
    approved = []
    for row in read_jsonl(EXAMPLE / "approved.jsonl"):
        seen = prompts.get((row["model_version"], row["input_class"]))
        if seen is not None and len(seen) < 24 and row["prompt_id"] not in seen:
            seen.add(row["prompt_id"])
            approved.append(row)
    audited = [r for r in read_jsonl(EXAMPLE / "audited.jsonl")
               if (r.get("model_version"), r.get("input_class")) in E2E_CELLS]
    return write_jsonl(approved, folder / "approved.jsonl"), write_jsonl(audited, folder / "audited.jsonl")


@pytest.fixture(scope="module")
def stopped_mid_run(server: MlflowServer, two_cells: tuple[Path, Path], request: pytest.FixtureRequest,
                    tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Build and approve both cells on the server, then score both while the server stops after the first."""
    import conformance

    embedder = request.getfixturevalue("embedder")  # loaded while the server starts
    server.wait_until_up()
    approved, audited = two_cells
    from conformance.baseline.fit import SmallCalibrationWarning

    said = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(said):
        warnings.simplefilter("ignore", SmallCalibrationWarning)  # small on purpose
        built = conformance.build(approved, approve_by="Test Approver", registry=Registry(server.uri),
                                  embedder=embedder, alpha=0.1, scorer="knn_cosine")
    # Nothing on stdout, where `conformance build --format json` writes its report (MLflow's "View run"
    # lines against a server go to stderr).
    assert said.getvalue() == "", said.getvalue()
    assert {(b.baseline.model_version, b.baseline.input_class) for b in built} == E2E_CELLS
    folder = tmp_path_factory.mktemp("scored")
    registry = StopsTheServer(server)
    outcome: dict[str, Any] = {"ledger": "sqlite:///" + str(folder / "ledger.db"), "out": folder / "verdicts.jsonl",
                               "summary": folder / "summary.json", "registry": registry, "error": None}
    started = time.monotonic()
    try:
        conformance.score(audited, registry=registry, ledger=outcome["ledger"], out=outcome["out"],
                          summary=outcome["summary"], embedder=embedder, progress=False)
    except RegistryError as exc:
        outcome["error"] = exc
    outcome["seconds"] = time.monotonic() - started
    return outcome


def ledger_size(url: str) -> int:
    from conformance.ledger import Ledger

    with Ledger(url) as ledger:
        return ledger.head().seq


def test_a_server_stopped_mid_run_stops_the_run(stopped_mid_run: dict[str, Any], server: MlflowServer) -> None:
    registry = stopped_mid_run["registry"]
    # The first cell really resolved from the server: an approved baseline, not a reason.
    assert len(registry.resolved) == 1
    first_cell, found = registry.resolved[0]
    assert not isinstance(found, str) and found[0].tags.get("approved_by") == "Test Approver"
    error = stopped_mid_run["error"]
    assert isinstance(error, RegistryError), "scoring went on without the registry"
    (second_cell,) = E2E_CELLS - {first_cell}
    message = str(error)
    assert server.uri in message and repr(baseline_name(*second_cell)) in message
    assert "failed to read the registered model" in message and "Connection refused" in message
    assert "not a missing baseline" in message and "Retry" in message
    assert ledger_size(stopped_mid_run["ledger"]) == 0
    assert not stopped_mid_run["out"].exists() and not stopped_mid_run["summary"].exists()
    assert stopped_mid_run["seconds"] < 60


def test_the_command_line_exits_2_against_a_stopped_server(stopped_mid_run: dict[str, Any], server: MlflowServer,
                                                          two_cells: tuple[Path, Path], tmp_path: Path) -> None:
    server.stop()  # done already by the run above; the point is a server that holds the baselines and is gone
    ledger, out = "sqlite:///" + str(tmp_path / "ledger.db"), tmp_path / "verdicts.jsonl"
    env = os.environ | FAIL_FAST | {"MLFLOW_TRACKING_URI": server.uri,
                                    "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[1]),
                                                                                os.environ.get("PYTHONPATH")]))}
    cli = "import sys; from conformance.cli import main; sys.exit(main())"  # as the `conformance` script does
    done = subprocess.run([sys.executable, "-c", cli, "score", str(two_cells[1]), "--out", str(out),
                           "--ledger", ledger, "--no-progress"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("conformance score: error: ") and server.uri in done.stderr
    assert "Connection refused" in done.stderr and "retry" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert not out.exists()
    assert not (tmp_path / "ledger.db").exists() or ledger_size(ledger) == 0
