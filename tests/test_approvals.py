"""Approvals with a history: ledger entries, registry history tags, revoke, several at once, a distinct approver,
atomic multi-cell builds, and score refusing a baseline whose content differs from what was approved."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import E2E_CELLS, EXAMPLE, read_jsonl, write_jsonl
from tests.ledger_support import make_verdict, sqlite_url, tamper

REPO = Path(__file__).resolve().parents[1]
ACTOR, BUILDER, OTHER = "A. Approver", "B. Builder", "C. Other"


# -- the ledger's side, no MLflow ---------------------------------------------------------------------------------

def _request(action: str = "approval", version: int = 1, by: str = ACTOR, digest: str = "sha256:" + "a" * 64,
             reason: str | None = None, replaced: int | None = None) -> Any:
    from conformance.ledger.approval import ApprovalRequest

    return ApprovalRequest(action, "conformance.bot-1.refund", "bot-1", "refund", version, digest, by,
                           replaced=replaced, reason=reason)


def test_approvals_are_chained_entries_that_verify_and_are_no_verdicts(ledger_url: str) -> None:
    from conformance.ledger import Filters, Ledger, verify
    from conformance.ledger.approval import history, record, standing

    with Ledger(ledger_url) as book:
        book.append([make_verdict("r1")])
        first, = record(book, [_request()])
        assert first.added and first.seq == 2 and first.replaced is None
        again, = record(book, [_request()])  # a retry: the newest entry of the name already says it
        assert not again.added and again.seq == 2
        second, = record(book, [_request(version=2, by=OTHER, replaced=1, digest="sha256:" + "b" * 64)])
        revoked, = record(book, [_request("revocation", version=2, by=OTHER, reason="wrong data",
                                          digest="sha256:" + "b" * 64)])
        reapproved, = record(book, [_request(version=2, by=OTHER, digest="sha256:" + "b" * 64)])
        assert [r.seq for r in (second, revoked, reapproved)] == [3, 4, 5]  # after a revocation: a new entry
        assert [r.action for r in history(book)] == ["approval", "approval", "revocation", "approval"]
        assert standing(book, "conformance.bot-1.refund", 2).seq == 5
        assert standing(book, "conformance.bot-1.refund", 9) is None
        # entry 4 follows entry 3 of the same registered model
        assert json.loads(book.row(4)["content"])["previous_seq"] == 3
        # approvals are not verdicts: no query, no verdict_entry, no reconstruct finds them
        assert [e.seq for e in book.query(Filters(model_version="bot-1"))] == [1]
        with pytest.raises(ValueError, match="approval, not a verdict"):
            book.get(2).verdict()  # type: ignore[union-attr]
        report = verify(book)
        assert report.ok and report.count == 5 and report.approvals == 4, report.problem


def test_two_registries_approving_one_name_into_one_ledger_both_score_and_a_swap_is_still_refused(
        tmp_path: Path) -> None:
    """Version 1 of conformance.bot-1.refund in two stores (two digests), both approved into one ledger: each store's
    content is approved; a third content under that name and version is not."""
    from types import SimpleNamespace

    from conformance.approvals import ApprovalCheck
    from conformance.errors import BaselineError
    from conformance.ledger import Ledger
    from conformance.ledger.approval import record

    first, second, swapped = ("sha256:" + c * 64 for c in "abc")
    with Ledger(sqlite_url(tmp_path / "ledger.db")) as book:
        record(book, [_request(digest=first)])
        record(book, [_request(digest=second)])  # the newest entry of version 1 is the other store's
        check = ApprovalCheck(book)
        registered = SimpleNamespace(name="conformance.bot-1.refund", version=1, model_version="bot-1",
                                     input_class="refund", uri="models:/conformance.bot-1.refund/1", tags={})
        for digest in (first, second):
            check.check(registered, SimpleNamespace(digest=digest))  # type: ignore[arg-type]
        with pytest.raises(BaselineError, match="changed after it was approved"):
            check.check(registered, SimpleNamespace(digest=swapped))  # type: ignore[arg-type]
        check.close()


def test_a_malformed_approval_is_refused_before_anything_is_recorded(tmp_path: Path) -> None:
    from conformance.ledger import Ledger, LedgerError
    from conformance.ledger.approval import record

    with Ledger(sqlite_url(tmp_path / "ledger.db")) as book:
        with pytest.raises(LedgerError, match="revocation without a reason"):
            record(book, [_request(), _request("revocation", version=1)])
        with pytest.raises(LedgerError, match="control characters"):
            record(book, [_request(by="A.\x1b[2J Approver")])
        assert book.head().seq == 0  # all or none


def test_verify_names_an_approval_altered_in_place(tmp_path: Path) -> None:
    """An approval whose digest is rewritten (and its hash recomputed, so only its own checks can catch it)."""
    from conformance.ledger import Ledger, verify
    from conformance.ledger.approval import record
    from conformance.ledger.canonical import canonical_json, entry_hash

    url = sqlite_url(tmp_path / "ledger.db")
    with Ledger(url) as book:
        record(book, [_request()])
        content = json.loads(book.row(1)["content"])
    content["approval"]["digest"] = "sha256:" + "f" * 64
    content["verdict"]["baseline_digest"] = "sha256:" + "f" * 64
    text, rehashed = canonical_json(content).replace("'", "''"), entry_hash(canonical_json(content))
    tamper(url, f"UPDATE conformance_ledger SET content = '{text}', entry_hash = '{rehashed}' WHERE seq = 1")
    with Ledger(url, create=False) as book:
        report = verify(book, witness=False)
    assert not report.ok and report.bad_seq == 1
    assert "record_digest does not match what it says" in str(report.problem)


def test_the_exactly_once_key_covers_the_baseline_digest_and_old_keys_still_verify(tmp_path: Path) -> None:
    from sqlalchemy import insert

    from conformance.ledger import Ledger, schema, verify
    from conformance.ledger.canonical import GENESIS_HASH, idempotency_key
    from conformance.ledger.entry import chain, prepare, target_of

    verdict = make_verdict("r1")
    with Ledger(sqlite_url(tmp_path / "ledger.db")) as book:
        # an entry written before keys covered the digest: its key is record id, record digest and URI only
        p = prepare(verdict)
        old = replace(p, key=idempotency_key(p.record_id, p.digest, target_of(p.verdict)), key_format=None)
        with book._transaction(write=True) as conn:
            _, _, row = chain(old, seq=1, prev_hash=GENESIS_HASH, run_id="old-run",
                              recorded_at="2026-06-16T09:00:00+00:00", previous_seq=None)
            conn.execute(insert(schema.entries), [row])
        assert verify(book, witness=False).ok
        # the same record against the same URI but other baseline content is a new entry, and so is the
        # current key of the old verdict (a new key format)
        assert book.append([verdict]).added == 1
        swapped = replace(verdict, baseline_digest="sha256:other")
        assert book.append([swapped]).added == 1
        assert book.append([swapped, verdict]).added == 0
        report = verify(book, witness=False)
        assert report.ok and report.count == 3, report.problem


# -- end to end on a real MLflow store ----------------------------------------------------------------------------

def _small_cells(folder: Path, prompts: int = 10) -> Path:
    """Approved outputs of the two end-to-end cells, one per prompt: alpha 0.2 needs 4 calibration prompts."""
    seen: dict[tuple[str, str], set[str]] = {cell: set() for cell in E2E_CELLS}
    rows = []
    for row in read_jsonl(EXAMPLE / "approved.jsonl"):
        cell = seen.get((row["model_version"], row["input_class"]))
        if cell is not None and len(cell) < prompts and row["prompt_id"] not in cell:
            cell.add(row["prompt_id"])
            rows.append(row)
    return write_jsonl(rows, folder / "approved.jsonl")


def _cli(*argv: str) -> tuple[int, str, str]:
    from conformance.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Iterator[dict[str, Any]]:
    """Two small cells built by B. Builder and approved by A. Approver in one build, in a store of their own."""
    import warnings

    import conformance
    from conformance.baseline.fit import SmallCalibrationWarning

    folder = tmp_path_factory.mktemp("approvals")
    before = os.getcwd()
    saved = {k: os.environ.pop(k, None) for k in ("MLFLOW_TRACKING_URI", "CONFORMANCE_LEDGER_URL")}
    os.chdir(folder)
    try:
        approved = _small_cells(folder)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SmallCalibrationWarning)
            built = conformance.build(approved, alpha=0.2, approve_by=ACTOR, built_by=BUILDER, embedder=embedder,
                                      scorer="knn_cosine", progress=False)
        audited = [r for r in read_jsonl(EXAMPLE / "audited.jsonl")
                   if (r.get("model_version"), r.get("input_class")) in E2E_CELLS][:8]
        yield {"folder": folder, "built": built, "audited": write_jsonl(audited, folder / "audited.jsonl"),
               "ledger": sqlite_url(folder / "conformance_store" / "ledger.db")}
    finally:
        os.chdir(before)
        for key, value in saved.items():
            if value is not None:
                os.environ[key] = value


def _head(url: str) -> int:
    from conformance.ledger import Ledger

    with Ledger(url, create=False) as book:
        return book.head().seq


def _approvals(url: str) -> list[Any]:
    from conformance.ledger import Ledger
    from conformance.ledger.approval import history

    with Ledger(url, create=False) as book:
        return history(book)


@pytest.mark.slow
def test_a_build_approves_every_cell_in_the_ledger_and_the_registry_history(store: dict[str, Any]) -> None:
    from conformance.registry import Registry

    built = store["built"]
    recorded = _approvals(store["ledger"])
    assert {(r.name, r.version, r.digest, r.by) for r in recorded} == \
        {(b.registered.name, b.registered.version, b.baseline.digest, ACTOR) for b in built}
    client = Registry().client
    for b in built:
        tags = client.get_model_version(b.registered.name, str(b.registered.version)).tags
        assert tags["built_by"] == BUILDER and tags["build_id"].startswith("build-")
        assert tags["approval.1.by"] == ACTOR and tags["approval.1.digest"] == b.baseline.digest
        assert tags["approved_by"] == ACTOR and b.baseline.lineage["built_by"] == BUILDER
    assert len({client.get_model_version(b.registered.name, "1").tags["build_id"] for b in built}) == 1

    code, out, _ = _cli("baselines", "list", "--format", "json")
    listed = {r["name"]: r for r in json.loads(out)}
    assert code == 0 and {r["approved_by"] for r in listed.values()} == {ACTOR}
    name = built[0].registered.name
    code, out, _ = _cli("baselines", "show", name)
    assert code == 0 and f"approved: the version scoring uses, approved by {ACTOR}" in out
    assert f"built_by: {BUILDER}" in out and built[0].baseline.digest in out
    code, out, _ = _cli("ledger", "verify", "--format", "json")
    assert code == 0 and json.loads(out)["approvals"] == 2


@pytest.mark.slow
def test_approvals_keep_their_history_and_only_the_current_one_looks_approved(store: dict[str, Any]) -> None:
    from conformance.registry import Registry

    registry = Registry()
    b = store["built"][0]
    name = b.registered.name
    v2 = registry.register(b.baseline)  # a second version of the cell (same content, another registry entry)
    code, _, err = _cli("approve", "--model-version", b.baseline.model_version, "--input-class",
                        b.baseline.input_class, "--by", BUILDER, "--require-distinct-approver")
    assert code == 2 and "a distinct approver is required" in err and "nothing was approved" in err
    head = _head(store["ledger"])
    code, out, _ = _cli("approve", "--model-version", b.baseline.model_version, "--input-class",
                        b.baseline.input_class, "--by", OTHER, "--format", "json")
    assert code == 0 and json.loads(out)["version"] == v2.version and json.loads(out)["approved_by"] == OTHER
    assert _head(store["ledger"]) == head + 1
    # the same command again (a retry) records nothing twice
    assert _cli("approve", "--model-version", b.baseline.model_version, "--input-class", b.baseline.input_class,
                "--by", OTHER)[0] == 0
    assert _head(store["ledger"]) == head + 1
    client = registry.client
    old, new = (dict(client.get_model_version(name, str(v)).tags) for v in (1, v2.version))
    assert "approved_by" not in old and "approved_at" not in old  # no longer looks approved
    assert old["approval.1.by"] == ACTOR  # but its history stays
    assert new["approved_by"] == OTHER and new["approval.2.replaced"] == "1"
    code, out, _ = _cli("baselines", "history", name, "--format", "json")
    events = json.loads(out)
    assert [(e["n"], e["action"], e["version"], e["by"], e["replaced"], e["in_ledger"]) for e in events] == \
        [(1, "approval", 1, ACTOR, None, True), (2, "approval", v2.version, OTHER, 1, True)]
    code, out, _ = _cli("baselines", "show", name, "--version", "1")
    assert code == 0 and f"not approved: approved by {ACTOR}" in out and f"version {v2.version} is approved now" in out


@pytest.mark.slow
def test_several_versions_are_approved_all_or_none(store: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    names = sorted(b.registered.name for b in store["built"])
    head = _head(store["ledger"])
    code, _, err = _cli("approve", *names, "conformance.nope.none", "--by", "D. Dee")
    assert code == 2 and "conformance.nope.none" in err and _head(store["ledger"]) == head
    monkeypatch.setenv("CONFORMANCE_REQUIRE_DISTINCT_APPROVER", "1")  # the store's default
    code, _, err = _cli("approve", *names, "--by", BUILDER)
    assert code == 2 and err.count("a distinct approver is required") == 2 and _head(store["ledger"]) == head
    monkeypatch.delenv("CONFORMANCE_REQUIRE_DISTINCT_APPROVER")
    build_id = store["built"][1].registered.tags["build_id"]
    code, out, _ = _cli("approve", "--all-from-build", build_id, "--by", "D. Dee", "--format", "json")
    done = json.loads(out)
    assert code == 0 and sorted(r["name"] for r in done) == names and {r["approved_by"] for r in done} == {"D. Dee"}
    assert _head(store["ledger"]) == head + 2


@pytest.mark.slow
def test_a_revoked_cell_gets_no_baseline_naming_the_revocation(store: dict[str, Any]) -> None:
    b = store["built"][1]
    name = b.registered.name
    code, out, _ = _cli("revoke", name, "--by", "E. Auditor", "--reason", "policy retracted", "--format", "json")
    revoked = json.loads(out)
    assert code == 0 and revoked["added"] and revoked["reason"] == "policy retracted"
    code, out, _ = _cli("revoke", name, "--by", "E. Auditor", "--reason", "policy retracted", "--format", "json")
    assert code == 0 and not json.loads(out)["added"]  # a retry finishes, records nothing twice
    from conformance.registry import Registry

    client = Registry().client
    assert "approved" not in client.get_registered_model(name).aliases
    assert all("approved_by" not in v.tags for v in client.search_model_versions(f"name='{name}'"))
    out_file = store["folder"] / "revoked.jsonl"
    code, _, err = _cli("score", str(store["audited"]), "--out", str(out_file), "--no-progress")
    rows = [r for r in read_jsonl(out_file) if (r["model_version"], r["input_class"]) ==
            (b.baseline.model_version, b.baseline.input_class)]
    assert code == 1 and rows and {r["verdict"] for r in rows} == {"no_baseline"}
    assert "revoked by E. Auditor" in rows[0]["reason"] and "policy retracted" in rows[0]["reason"]
    code, out, _ = _cli("baselines", "history", name)
    assert "revocation" in out and "policy retracted" in out
    code, _, err = _cli("revoke", name, "--by", "E. Auditor", "--reason", "   ")
    assert code == 2 and "needs a reason" in err
    # approved again, so the next tests score both cells
    assert _cli("approve", name, "--by", "D. Dee")[0] == 0


@pytest.mark.slow
def test_an_interrupted_revocation_stops_score_until_revoke_is_run_again(store: dict[str, Any]) -> None:
    """The ledger recorded the revocation, then the process died before the alias went: score refuses the
    version, and running revoke again finishes without recording twice."""
    from conformance.ledger import Ledger
    from conformance.ledger.approval import REVOCATION, ApprovalRequest, record
    from conformance.registry import Registry

    registry = Registry()
    b = store["built"][1]
    name, cell = b.registered.name, (b.baseline.model_version, b.baseline.input_class)
    version = registry.approved_version(*cell)
    assert version is not None
    with Ledger(store["ledger"]) as book:
        (rec,) = record(book, [ApprovalRequest(REVOCATION, name, *cell, version, b.baseline.digest, "E. Auditor",
                                               reason="half done")])
    head = _head(store["ledger"])
    code, _, err = _cli("score", str(store["audited"]), "--out", str(store["folder"] / "half.jsonl"), "--no-progress")
    assert code == 2 and "revoked by E. Auditor" in err and "half done" in err and f"conformance revoke {name}" in err
    assert _head(store["ledger"]) == head
    code, out, _ = _cli("revoke", name, "--by", "E. Auditor", "--reason", "half done", "--format", "json")
    assert code == 0 and json.loads(out)["seq"] == rec.seq and not json.loads(out)["added"]
    assert registry.approved_version(*cell) is None and _head(store["ledger"]) == head
    assert _cli("approve", name, "--by", "D. Dee")[0] == 0


@pytest.mark.slow
def test_score_refuses_a_swapped_baseline_and_an_unrecorded_approval(store: dict[str, Any]) -> None:
    """Issue 20's attack: the approved version's baseline.json edited (alpha 1e-9), its digest recomputed and the
    registry's digest tag set to it; then an alias moved to a version no one approved through conformance."""
    from conformance.baseline.format import ARRAYS_FILE, META_FILE, compute_digest
    from conformance.registry import Registry

    registry = Registry()
    b = store["built"][0]
    name = b.registered.name
    version = registry.approved_version(b.baseline.model_version, b.baseline.input_class)
    source = registry.client.get_model_version(name, str(version)).source
    found = [p for p in (store["folder"] / "conformance_store").rglob(META_FILE)
             if json.loads(p.read_text())["digest"] == b.baseline.digest]
    assert found, source
    import numpy as np

    for path in found:  # every copy of this content (two versions hold the same)
        meta = json.loads(path.read_text())
        meta.pop("digest")
        meta["alpha"] = 1e-9
        with np.load(path.parent / ARRAYS_FILE, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        forged = compute_digest(meta, arrays)
        path.write_text(json.dumps(meta | {"digest": forged}, indent=1, sort_keys=True))
    for v in registry.client.search_model_versions(f"name='{name}'"):
        registry.client.set_model_version_tag(name, v.version, "digest", forged)
    head = _head(store["ledger"])
    out_file = store["folder"] / "swapped.jsonl"
    code, out, err = _cli("score", str(store["audited"]), "--out", str(out_file), "--no-progress",
                          "--format", "json")
    assert code == 2 and out == "" and "Traceback" not in err
    assert f"models:/{name}/{version}" in err and forged in err and b.baseline.digest in err
    assert "changed after it was approved" in err and "conformance approve" in err
    assert _head(store["ledger"]) == head and not out_file.exists()

    # the other cell: an alias set straight in the registry, on a version the ledger never saw approved
    other = store["built"][1]
    v = registry.register(other.baseline)
    registry.client.set_registered_model_alias(other.registered.name, "approved", str(v.version))
    code, _, err = _cli("score", str(store["audited"]), "--out", str(out_file), "--no-progress", "--ledger",
                        sqlite_url(store["folder"] / "another-ledger.db"))
    assert code == 2 and f"models:/{other.registered.name}/{v.version}" in err
    assert "holds no approval of it" in err and f"--version {v.version} --by NAME" in err
    assert _head(store["ledger"]) == head and not out_file.exists()


@pytest.mark.slow
def test_a_killed_build_approve_leaves_nothing_approved(tmp_path: Path) -> None:
    """SIGKILL once the first cell is registered (stderr's progress line for the second): its version is in the
    registry, but no alias moved and the ledger holds no approval."""
    approved = _small_cells(tmp_path, prompts=8)
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
                        "MLFLOW_DISABLE_TELEMETRY": "true"}
    for key in ("MLFLOW_TRACKING_URI", "CONFORMANCE_LEDGER_URL"):
        env.pop(key, None)
    cli = "import sys; from conformance.cli import main; sys.exit(main())"
    proc = subprocess.Popen([sys.executable, "-c", cli, "build", str(approved), "--alpha", "0.2", "--scorer",
                             "knn_cosine", "--approve", "--by", ACTOR], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    said = []
    try:
        started = time.monotonic()
        assert proc.stderr is not None
        for line in proc.stderr:
            said.append(line)
            if line.startswith("building baseline 2 of 2"):
                proc.send_signal(signal.SIGKILL)
                break
            assert time.monotonic() - started < 300, "".join(said)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(said)

    from conformance.registry import Registry

    registry = Registry("sqlite:///" + str(tmp_path / "conformance_store" / "mlflow.db"))
    models = registry.client.search_registered_models()
    assert len(models) == 1  # the first cell was registered before the kill
    assert models[0].aliases == {} and len(registry.client.search_model_versions(f"name='{models[0].name}'")) == 1
    assert all("approved_by" not in v.tags for v in registry.client.search_model_versions(f"name='{models[0].name}'"))
    ledger = tmp_path / "conformance_store" / "ledger.db"
    assert not ledger.exists() or _approvals(sqlite_url(ledger)) == []
