"""A team deployment, for real: ``mlflow server`` on PostgreSQL with proxied artifacts, two working folders.

The test runs what docs/deploy.md tells a team to run: a tracking server whose backend store is a PostgreSQL
database and whose artifacts it serves itself (``--artifacts-destination``, ``--serve-artifacts``); one
working folder builds and approves baselines through it, another scores through it, with the verdict ledger
on PostgreSQL and its heads witnessed in a folder of their own. Nothing of MLflow's lands in either working
folder, and MLflow's console lines never reach stdout (``--format json`` stays parseable). A second test runs the
MLflow user's journey through the same server: traces made with MLflow's tracing API, a baseline built from the
approved run, verdicts read back as assessments with ``mlflow.get_trace``, the scoring run, approvals, a revocation.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import E2E_CELLS, EXAMPLE, read_jsonl, write_jsonl

pytestmark = pytest.mark.slow  # an mlflow server, and the embedder in two subprocesses

REPO = Path(__file__).resolve().parents[1]
PG = "postgresql+psycopg://postgres@127.0.0.1:5432/"
CLI = "import sys; from conformance.cli import main; sys.exit(main())"  # as the `conformance` script does
PROMPTS_PER_CELL = 10  # alpha 0.2 needs 4 calibration prompts; half of 10 are calibration


def _admin(sql: str) -> None:
    import psycopg

    try:
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True,
                             connect_timeout=5) as conn:
            conn.execute(sql)  # type: ignore[arg-type]
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL server at 127.0.0.1:5432 ({exc})")


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A database of this module's own (the server's backend store), dropped at the end."""
    name = f"conf_deploy_{secrets.token_hex(4)}"
    _admin(f"CREATE DATABASE {name}")
    try:
        yield name
    finally:
        _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


class Server:
    """``mlflow server`` on loopback in its own process group, PostgreSQL store, proxied artifacts."""

    def __init__(self, backend: str, artifacts: Path, log: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log = log
        mlflow_cli = Path(sys.executable).with_name("mlflow")
        if not mlflow_cli.exists():
            pytest.skip(f"no mlflow command beside {sys.executable}")
        env = os.environ | {"MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.started = time.monotonic()
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [str(mlflow_cli), "server", "--backend-store-uri", backend,
                 "--artifacts-destination", str(artifacts), "--serve-artifacts",
                 "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.start_seconds: float | None = None

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.uri + "/health", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def wait_until_up(self, timeout: float = 150) -> None:
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() - self.started > timeout:
                self.stop()
                pytest.fail(f"mlflow server at {self.uri} did not answer within {timeout:.0f} s:\n"
                            + self.log.read_text(errors="replace")[-2000:])
            time.sleep(0.3)
        if self.start_seconds is None:
            self.start_seconds = time.monotonic() - self.started

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


@pytest.fixture(scope="module")
def server(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("mlflow-server")
    started = Server(PG + database, root / "artifacts", root / "server.log")
    try:
        started.wait_until_up()
        print(f"\nmlflow server on PostgreSQL answered after {started.start_seconds:.1f} s", file=sys.stderr)
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def ledger_database() -> Iterator[tuple[str, str, str]]:
    """The ledger's database and its owner and writer roles (roles are the server's: dropped after it)."""
    tag = secrets.token_hex(4)
    name, owner, writer = f"conf_deploy_ledger_{tag}", f"conf_deploy_owner_{tag}", f"conf_deploy_writer_{tag}"
    _admin(f"CREATE DATABASE {name}")
    try:
        yield name, owner, writer
    finally:
        _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        for role in (writer, owner):
            _admin(f"DROP ROLE IF EXISTS {role}")


def conformance(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "CONFORMANCE_LEDGER_URL")}
    environment |= env | {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-c", CLI, *args], cwd=cwd, env=environment, capture_output=True,
                          text=True, timeout=300)


def made_by_mlflow(folder: Path) -> list[str]:
    """Anything in a working folder that is MLflow's (runs, artifacts, a store), not the tool's own cache."""
    found = []
    for path in folder.rglob("*"):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and not rel.startswith("conformance_store/embeddings.db") and path.parent != folder:
            found.append(rel)
        elif path.name in ("mlruns", "mlartifacts", "artifacts", "mlflow.db"):
            found.append(rel)
    return sorted(found)


def test_build_in_one_folder_score_in_another_through_the_server(
        server: Server, ledger_database: tuple[str, str, str], tmp_path: Path) -> None:
    builder, scorer, witness, keys = (tmp_path / name for name in ("builder", "scorer", "witness", "keys"))
    for folder in (builder, scorer, keys):
        folder.mkdir()
    prompts: dict[tuple[str, str], set[str]] = {cell: set() for cell in E2E_CELLS}
    approved = []
    for row in read_jsonl(EXAMPLE / "approved.jsonl"):
        seen = prompts.get((row["model_version"], row["input_class"]))
        if seen is not None and len(seen) < PROMPTS_PER_CELL and row["prompt_id"] not in seen:
            seen.add(row["prompt_id"])
            approved.append(row)
    audited, per_cell = [], dict.fromkeys(E2E_CELLS, 0)
    for row in read_jsonl(EXAMPLE / "audited.jsonl"):
        cell = (row.get("model_version"), row.get("input_class"))
        if cell in per_cell and per_cell[cell] < 3:  # type: ignore[comparison-overlap]
            per_cell[cell] += 1  # type: ignore[index]
            audited.append(row)
    audited.append(audited[0] | {"record_id": "no-cell-1", "model_version": "support-bot-9"})
    write_jsonl(approved, builder / "approved.jsonl")
    write_jsonl(audited, scorer / "audited.jsonl")
    # Once, by an administrator: the ledger owned by one role, appended to by a writer; the heads' signing key.
    database, owner, writer = ledger_database
    init = conformance(["ledger", "init", "--ledger", f"postgresql://postgres@127.0.0.1:5432/{database}",
                        "--owner-role", owner, "--writer-role", writer, "--format", "json"], keys, {})
    assert init.returncode == 0, init.stderr
    ledger = json.loads(init.stdout)["writer_url"]
    assert ledger == f"postgresql://{writer}@127.0.0.1:5432/{database}"
    made = conformance(["ledger", "keygen", "--out", str(keys / "heads.key"), "--format", "json"], keys, {})
    assert made.returncode == 0, made.stderr
    team = {"MLFLOW_TRACKING_URI": server.uri, "CONFORMANCE_LEDGER_URL": ledger,
            "CONFORMANCE_LEDGER_WITNESS": str(witness), "CONFORMANCE_LEDGER_SIGNING_KEY": str(keys / "heads.key")}

    started = time.monotonic()
    built = conformance(["build", "approved.jsonl", "--alpha", "0.2", "--approve", "--by", "Dep Loyer",
                         "--format", "json", "--no-progress"], builder, team)
    build_seconds = time.monotonic() - started
    assert built.returncode == 0, built.stderr
    report = json.loads(built.stdout)  # nothing but the report on stdout
    assert {(b["model_version"], b["input_class"]) for b in report} == E2E_CELLS
    assert all(b["approved_by"] == "Dep Loyer" and b["version"] == 1 for b in report)
    assert "View run" in built.stderr  # MLflow said it, on stderr

    started = time.monotonic()
    scored = conformance(["score", "audited.jsonl", "--out", "verdicts.jsonl", "--format", "json",
                          "--no-progress"], scorer, team)
    score_seconds = time.monotonic() - started
    assert scored.returncode in (0, 1), scored.stderr
    summary = json.loads(scored.stdout)
    assert sum(summary["counts"].values()) == len(audited)
    assert summary["counts"]["no_baseline"] == 1
    verdicts = read_jsonl(scorer / "verdicts.jsonl")
    judged = [v for v in verdicts if v["verdict"] in ("within_bounds", "out_of_bounds")]
    by_uri = {f"models:/{b['name']}/1": b["digest"] for b in report}
    assert {v["baseline"] for v in judged} == set(by_uri) and len(judged) == len(audited) - 1
    assert all(v["baseline_digest"] == by_uri[v["baseline"]] and v["approved_by"] == "Dep Loyer" for v in judged)

    # Baselines went to the server's artifact store, not to a working folder.
    assert made_by_mlflow(builder) == [] and made_by_mlflow(scorer) == []
    stored = list((server.log.parent / "artifacts").rglob("baseline.json"))
    assert len(stored) == len(E2E_CELLS)

    # The ledger is on PostgreSQL, every verdict in it, intact, witnessed in the team's folder and signed.
    checked = conformance(["ledger", "verify", "--public-key", str(keys / "heads.key.pub"), "--format", "json"],
                          scorer, team)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    verified = json.loads(checked.stdout)
    assert verified["count"] == len(audited) + len(E2E_CELLS) and verified["ok"] is True  # verdicts, approvals
    assert verified["approvals"] == len(E2E_CELLS)
    assert verified["witnessed"] >= 1 and verified["signed_by"] == json.loads(made.stdout)["key_id"]
    assert [p.name for p in witness.iterdir()] == [Path(verified["witness"]).name]
    print(f"build {build_seconds:.1f} s, score {score_seconds:.1f} s (each a fresh process that loads the "
          f"embedder)", file=sys.stderr)


def test_the_mlflow_journey_through_the_server(server: Server, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Traces made by MLflow's tracing API on the server, a baseline built from the approved run, production
    traces scored with their verdicts read back as assessments, the scoring run, a sign-off on a trace, the
    mlflow.genai scorer, approvals listed, a revocation."""
    import mlflow

    from tests.test_mlflow_traces import CELL, OFF_POLICY, _cell_rows, _log

    builder, scorer, books = (tmp_path / name for name in ("builder", "scorer", "books"))
    for folder in (builder, scorer, books):
        folder.mkdir()
    team = {"MLFLOW_TRACKING_URI": server.uri, "CONFORMANCE_LEDGER_URL": f"sqlite:///{books / 'ledger.db'}",
            "CONFORMANCE_LEDGER_WITNESS": str(books / "witness")}
    started = time.monotonic()
    approved, audited = _cell_rows()
    cell = ("journey-bot-1", CELL[1])  # a cell of its own: the other test's cells are on the same server
    tags = {"model_version": cell[0], "input_class": cell[1]}
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    before = mlflow.get_tracking_uri()
    # set_tracking_uri also exports MLFLOW_TRACKING_URI; monkeypatch gives the environment back as it was, so that
    # the session's later tests keep their embedded store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    mlflow.set_tracking_uri(server.uri)
    try:
        mlflow.set_experiment("journey-evals")
        with mlflow.start_run(run_name="approved-eval"):
            mlflow.set_tag("conformance.approved_by", "J. Approver")
            for r in approved:
                _log(mlflow, r["input"], r["output"], tags)
        mlflow.set_experiment("journey-prod")
        within = [_log(mlflow, r["input"], r["output"], tags) for r in audited[:4]]
        off_policy = _log(mlflow, audited[0]["input"], OFF_POLICY, tags)
        mlflow.set_experiment("journey-prod-after-revocation")
        later = [_log(mlflow, r["input"], r["output"], tags) for r in audited[4:6]]
        mlflow.flush_trace_async_logging()

        built = conformance(["build", "--from-mlflow-experiment", "journey-evals", "--approve", "--by", "J. Approver",
                             "--alpha", "0.2", "--format", "json", "--no-progress"], builder, team)
        assert built.returncode == 0, built.stderr
        [baseline] = json.loads(built.stdout)
        assert (baseline["model_version"], baseline["input_class"]) == cell
        assert baseline["approved_by"] == "J. Approver" and baseline["version"] == 1

        scored = conformance(["score", "--from-mlflow-experiment", "journey-prod", "--out", "v.jsonl",
                              "--format", "json", "--no-progress"], scorer, team)
        assert scored.returncode == 1, scored.stderr  # the off-policy answer is out of bounds
        summary = json.loads(scored.stdout)
        assert summary["assessments"] == {"logged": 5, "already_there": 0}
        verdicts = {v["record_id"]: v for v in read_jsonl(scorer / "v.jsonl")}
        assert verdicts[off_policy]["verdict"] == "out_of_bounds"
        for trace_id in [*within, off_policy]:
            [assessed] = [a for a in mlflow.get_trace(trace_id).info.assessments if a.name == "conformance"]
            assert assessed.value == verdicts[trace_id]["verdict"]
            assert assessed.metadata["ledger_run_id"] == summary["ledger"]["run_id"]
        client = mlflow.MlflowClient(server.uri)
        experiment = client.get_experiment_by_name("conformance-scoring")
        assert experiment is not None
        [run] = client.search_runs([experiment.experiment_id],
                                   f"tags.`conformance.ledger_run_id` = '{summary['ledger']['run_id']}'")
        assert run.data.tags["conformance.ledger_head_seq"] == str(summary["ledger"]["last_seq"])
        assert run.data.tags["conformance.ledger_head_hash"] == summary["ledger"]["head_hash"]

        again = conformance(["score", "--from-mlflow-experiment", "journey-prod", "--out", "again.jsonl",
                             "--format", "json", "--no-progress"], scorer, team)
        assert again.returncode == 1, again.stderr
        assert json.loads(again.stdout)["assessments"] == {"logged": 0, "already_there": 5}
        assert len([a for a in mlflow.get_trace(off_policy).info.assessments if a.name == "conformance"]) == 1

        # A reviewer's sign-off of a trace's verdict lands on that trace too.
        signed = conformance(["signoff", off_policy, "--decision", "confirmed", "--by", "R. Viewer",
                              "--comment", "an off-topic poem"], scorer, team)
        assert signed.returncode == 0, signed.stderr
        [decided] = [a for a in mlflow.get_trace(off_policy).info.assessments if a.name == "conformance.signoff"]
        assert decided.value == "confirmed" and decided.rationale == "an off-topic poem"

        # The scorer inside mlflow.genai.evaluate, against the approved baseline read through the server: the
        # off-policy answer gets the p-value `score` gave it.
        import pandas as pd

        from conformance.mlflow import scorer as conformance_scorer
        from conformance.registry import Registry

        for key in ("CONFORMANCE_LEDGER_URL", "CONFORMANCE_LEDGER_WITNESS"):  # where the approval was recorded
            monkeypatch.setenv(key, team[key])
        mlflow.set_experiment("journey-genai")
        rows = [{"inputs": {"question": r["input"]}, "outputs": r["output"]} for r in audited[:2]]
        rows.append({"inputs": {"question": audited[0]["input"]}, "outputs": OFF_POLICY})
        evaluated = mlflow.genai.evaluate(data=pd.DataFrame(rows), scorers=[conformance_scorer(
            model_version=cell[0], input_class=cell[1], registry=Registry(server.uri))])
        mlflow.flush_trace_async_logging()
        judged = [[a for a in t.info.assessments if a.name == "conformance"]
                  for t in mlflow.search_traces(run_id=evaluated.run_id, return_type="list")]
        assert len(judged) == 3 and all(len(found) == 1 for found in judged)
        [flagged] = [found[0] for found in judged if found[0].value == "out_of_bounds"]
        assert float(flagged.metadata["p_value"]) == pytest.approx(verdicts[off_policy]["p_value"])
        assert flagged.metadata["baseline"] == verdicts[off_policy]["baseline"]

        listed = conformance(["baselines", "list", "--format", "json"], scorer, team)
        assert listed.returncode == 0, listed.stderr
        assert {r["name"]: r["approved_by"] for r in json.loads(listed.stdout)}[baseline["name"]] == "J. Approver"
        history = conformance(["baselines", "history", baseline["name"]], scorer, team)
        assert history.returncode == 0 and "approval" in history.stdout and "J. Approver" in history.stdout

        revoked = conformance(["revoke", baseline["name"], "--by", "R. Auditor", "--reason", "policy retracted"],
                              scorer, team)
        assert revoked.returncode == 0, revoked.stderr
        after = conformance(["score", "--from-mlflow-experiment", "journey-prod-after-revocation", "--out",
                             "after.jsonl", "--format", "json", "--no-progress"], scorer, team)
        assert after.returncode == 1, after.stderr
        rows = read_jsonl(scorer / "after.jsonl")
        assert sorted(r["record_id"] for r in rows) == sorted(later)
        assert {r["verdict"] for r in rows} == {"no_baseline"} and "revoked by R. Auditor" in rows[0]["reason"]
    finally:
        mlflow.set_tracking_uri(before)
    assert made_by_mlflow(builder) == [] and made_by_mlflow(scorer) == []
    print(f"\nthe MLflow journey through the server took {time.monotonic() - started:.1f} s", file=sys.stderr)
