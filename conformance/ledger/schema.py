"""The ledger's tables, its schema version, and the append-only guards.

Two tables:

``conformance_ledger``
    One row per entry. ``content`` is the canonical JSON that is hashed; the
    other columns are an index of it for queries, and ``verify`` checks that
    they agree with the content. ``seq`` is the position in the chain (1, 2,
    ...); ``prev_hash`` is unique, so the chain can never fork, whatever the
    writers do; ``idem_key`` is unique, so the same record judged against the
    same baseline version is never recorded twice.
``conformance_ledger_meta``
    ``schema_version`` and when the ledger was created. A ledger of another
    schema version is refused before anything is written.

On PostgreSQL triggers refuse UPDATE, DELETE and TRUNCATE on both tables; on
SQLite triggers refuse UPDATE and DELETE. Whoever can drop a trigger can still
alter rows, which is what the hash chain and the exported head hash detect.
"""

from __future__ import annotations

from sqlalchemy import Column, Float, Index, Integer, MetaData, String, Table, Text

SCHEMA_VERSION = 1
ENTRIES = "conformance_ledger"
META = "conformance_ledger_meta"

metadata = MetaData()

entries = Table(
    ENTRIES,
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("entry_hash", String(64), nullable=False, unique=True),
    Column("prev_hash", String(64), nullable=False, unique=True),
    Column("idem_key", String(64), nullable=False, unique=True),
    Column("run_id", String(64), nullable=False),
    Column("record_id", Text),
    Column("record_digest", String(64), nullable=False),
    Column("model_version", Text),
    Column("input_class", Text),
    Column("verdict", String(16), nullable=False),
    Column("baseline_name", Text),
    Column("baseline_version", Integer),
    Column("score", Float(precision=53)),
    Column("p_value", Float(precision=53)),
    Column("alpha", Float(precision=53)),
    Column("scored_at", String(40), nullable=False),
    Column("recorded_at", String(40), nullable=False),
    Column("previous_seq", Integer),
    Column("content", Text, nullable=False),
    Index("ix_conformance_ledger_record_id", "record_id"),
    Index("ix_conformance_ledger_cell", "model_version", "input_class"),
    Index("ix_conformance_ledger_scored_at", "scored_at"),
    Index("ix_conformance_ledger_run_id", "run_id"),
)

meta = Table(
    META,
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

INDEX_COLUMNS = (
    "seq", "prev_hash", "run_id", "record_id", "record_digest", "model_version", "input_class", "verdict",
    "baseline_name", "baseline_version", "score", "p_value", "alpha", "scored_at", "recorded_at", "previous_seq",
)
"""Columns that repeat a value of the hashed content; ``verify`` checks each one."""

SQLITE_GUARDS = [
    f"""CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table}
    BEGIN SELECT RAISE(ABORT, 'the conformance ledger is append-only: {op} on {table} is refused'); END"""
    for table in (ENTRIES, META)
    for op in ("UPDATE", "DELETE")
]

POSTGRES_GUARDS = [
    """CREATE OR REPLACE FUNCTION conformance_ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'the conformance ledger is append-only: % on % is refused', TG_OP, TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege';
    END $$""",
] + [
    f"""CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}
    FOR EACH ROW EXECUTE FUNCTION conformance_ledger_refuse_change()"""
    for table in (ENTRIES, META)
] + [
    f"""CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
    FOR EACH STATEMENT EXECUTE FUNCTION conformance_ledger_refuse_change()"""
    for table in (ENTRIES, META)
]
