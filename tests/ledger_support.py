"""Helpers for the ledger tests: synthetic verdicts (no embedder) and ledger URLs.

Every PostgreSQL ledger lives in a schema of its own, dropped afterwards; the
PostgreSQL tests skip, saying why, only when no server can be reached.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conformance.verdict import Verdict

PG_BASE = os.environ.get("CONFORMANCE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def make_verdict(record_id: str, *, version: int | None = 1, output: str = "an approved-looking output",
                 verdict: str | None = None, score: float = 0.25) -> Verdict:
    """A verdict as scoring makes it; ``version=None`` gives a ``no_baseline`` verdict."""
    record = {"record_id": record_id, "model_version": "bot-1", "input_class": "refund", "input": "refund me",
              "output": output, "sampling": {"temperature": 0.7}, "metadata": {"channel": "app"}}
    if version is None:
        return Verdict(row=1, record_id=record_id, model_version="bot-1", input_class="refund",
                       verdict=verdict or "no_baseline", reason="no baseline is registered",
                       code_version="0.1.0", scored_at="2026-06-16T09:00:00+00:00", record=record)
    return Verdict(row=1, record_id=record_id, model_version="bot-1", input_class="refund",
                   verdict=verdict or "within_bounds", reason="within bounds", p_value=0.5, score=score, alpha=0.05,
                   baseline=f"models:/conformance.bot-1.refund/{version}", baseline_digest=f"digest-{version}",
                   test="split-conformal p-value", nearest=("appr-1", "appr-2"), embedder="fp0123",
                   code_version="0.1.0", scored_at="2026-06-16T09:00:00+00:00", record=record)


def postgres_admin_url() -> str:
    return PG_BASE.replace("postgresql://", "postgresql+psycopg://", 1)


def postgres_reachable() -> str | None:
    """``None`` when a PostgreSQL server answers, else why not."""
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover
        return f"psycopg is not installed: {exc}"
    try:
        with psycopg.connect(PG_BASE, connect_timeout=3):
            return None
    except Exception as exc:
        return f"no PostgreSQL server at {PG_BASE}: {str(exc).strip().splitlines()[0]}"


def pg_execute(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_BASE, autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


def pg_schema_url(schema: str) -> str:
    return f"{PG_BASE}?options=-csearch_path%3D{schema}"


def new_pg_ledger_url() -> Iterator[str]:
    why = postgres_reachable()
    if why is not None:
        pytest.skip(f"PostgreSQL ledger tests need a server: {why}")
    schema = "ledger_test_" + uuid.uuid4().hex[:12]
    pg_execute(f"CREATE SCHEMA {schema}")
    try:
        yield pg_schema_url(schema)
    finally:
        pg_execute(f"DROP SCHEMA {schema} CASCADE")


def sqlite_url(path: Path) -> str:
    return "sqlite:///" + str(path)


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty ledger location on each backend."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "ledger.db")
    else:
        yield from new_pg_ledger_url()


def tamper(url: str, *statements: str) -> None:
    """Run SQL as an attacker with direct database access: triggers off, statements, triggers on."""
    if url.startswith("sqlite:///"):
        import sqlite3

        conn = sqlite3.connect(url[len("sqlite:///"):])
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='trigger'")]
        sqls = [r[0] for r in conn.execute("SELECT sql FROM sqlite_master WHERE type='trigger'")]
        for name in names:
            conn.execute(f"DROP TRIGGER {name}")
        for statement in statements:
            conn.execute(statement)
        for sql in sqls:
            conn.execute(sql)
        conn.commit()
        conn.close()
        return
    schema = url.split("search_path%3D", 1)[1]
    body = "; ".join(statements)
    pg_execute(f"SET search_path TO {schema}; ALTER TABLE conformance_ledger DISABLE TRIGGER USER; {body}; "
               "ALTER TABLE conformance_ledger ENABLE TRIGGER USER")
