"""The ledger store: SQLite (embedded default) or PostgreSQL, through SQLAlchemy.

Appends are atomic per batch and serialised across processes: on SQLite each
append runs in a ``BEGIN IMMEDIATE`` transaction (one writer at a time, the
others wait), on PostgreSQL under ``pg_advisory_xact_lock``. Inside the lock the
writer reads the head, skips verdicts already recorded (same idempotency key),
and inserts the rest with consecutive ``seq`` values, each hashing its
predecessor. A process killed at any point leaves either the whole batch or
none of it. The unique ``prev_hash`` column makes a fork impossible even if a
writer ignored the lock.

The library offers no way to update or delete an entry.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, func, insert, inspect, select, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from conformance.ledger import schema
from conformance.ledger.canonical import GENESIS_HASH
from conformance.ledger.entry import NOT_VERDICTS, SIGNOFF, Entry, chain, prepare
from conformance.ledger.errors import (
    EntryNotFoundError,
    LedgerConnectionError,
    LedgerError,
    LedgerNotFoundError,
    LedgerSchemaError,
)
from conformance.ledger.query import Filters
from conformance.ledger.signing import signer_from_env
from conformance.ledger.signoff import SignOff, SignOffRequest, prepare_signoff
from conformance.ledger.witness import default_witness_path, record_head
from conformance.verdict import GroupSummary, Verdict

ENV_VAR = "CONFORMANCE_LEDGER_URL"
LEDGER_FILE = "ledger.db"
_CHUNK = 500  # keys per IN (...) look-up


def default_ledger_url() -> str:
    """The embedded default: ``sqlite:///<cwd>/conformance_store/ledger.db``, beside the embedded MLflow store.

    It is the default even when ``MLFLOW_TRACKING_URI`` points at a server:
    a team's shared ledger is named explicitly (``--ledger`` or ``CONFORMANCE_LEDGER_URL``).
    """
    from conformance.defaults import default_store_dir

    return "sqlite:///" + str(default_store_dir() / LEDGER_FILE)


def resolve_ledger_url(url: str | None = None) -> str:
    """``url`` if given, else ``CONFORMANCE_LEDGER_URL`` if set, else :func:`default_ledger_url`."""
    if url and url.strip():
        return url.strip()
    env = os.environ.get(ENV_VAR, "").strip()
    return env or default_ledger_url()


def new_run_id() -> str:
    """A scoring run's id: UTC time (sortable) and a random suffix."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:12]


@dataclass(frozen=True)
class Head:
    """The last entry of the chain: keep ``entry_hash`` elsewhere to detect a rewrite of the whole chain."""

    seq: int
    entry_hash: str

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.seq, "head_seq": self.seq, "head_hash": self.entry_hash}


@dataclass(frozen=True)
class AppendReport:
    """What one append did."""

    run_id: str
    added: int
    already_recorded: int
    first_seq: int | None
    last_seq: int | None
    head: Head
    ledger: str

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "added": self.added, "already_recorded": self.already_recorded,
                "first_seq": self.first_seq, "last_seq": self.last_seq, "head_hash": self.head.entry_hash,
                "ledger": self.ledger}


def _normalise(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise LedgerConnectionError(
            f"{url!r} is not a database URL; use sqlite:///PATH/ledger.db or "
            "postgresql://USER@HOST:PORT/DATABASE") from exc
    dialect = parsed.drivername.split("+")[0]
    if dialect in ("postgres", "postgresql"):
        return parsed.set(drivername="postgresql+psycopg")
    if dialect == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise LedgerConnectionError(f"{url}: a ledger must be durable; give a file, e.g. sqlite:///ledger.db")
        return parsed.set(drivername="sqlite")
    raise LedgerConnectionError(f"{url}: the ledger supports sqlite:/// and postgresql:// URLs, not {dialect}")


class Ledger:
    """An append-only, hash-chained ledger of verdicts.

    Parameters
    ----------
    url : str, optional
        SQLAlchemy URL; default :func:`resolve_ledger_url`.
    create : bool, default True
        Create the tables when absent. Readers pass ``False`` and get
        :class:`LedgerNotFoundError` instead of an empty new ledger.

    Raises
    ------
    LedgerConnectionError
        The URL cannot be reached or opened. Nothing is written.
    LedgerSchemaError
        The database holds a ledger of another schema version. Nothing is written.

    Examples
    --------
    >>> ledger = Ledger("sqlite:///" + str(tmp / "ledger.db"))  # doctest: +SKIP
    >>> report = ledger.append(result.verdicts, summaries=result.summaries)  # doctest: +SKIP
    """

    def __init__(self, url: str | None = None, *, create: bool = True) -> None:
        self.url = resolve_ledger_url(url)
        self._url = _normalise(self.url)
        self.display_url = self._url.render_as_string(hide_password=True)
        self.dialect = self._url.get_backend_name()
        if self.dialect == "sqlite":
            path = Path(str(self._url.database))
            if not path.exists():
                if not create:
                    raise LedgerNotFoundError(
                        f"no ledger at {self.display_url}: the file {path} does not exist; "
                        "score something first, or pass --ledger URL of an existing ledger")
                if url is None and not os.environ.get(ENV_VAR, "").strip():
                    path.parent.mkdir(parents=True, exist_ok=True)  # the embedded default store
                elif not path.parent.is_dir():
                    raise LedgerConnectionError(
                        f"cannot create the ledger {self.display_url}: the folder {path.parent} does not exist")
        self.signer = signer_from_env()  # a key that cannot be used stops here, before anything is written
        self.engine = self._engine()
        self.witness_path = default_witness_path(self.url, self.dialect,
                                                 str(self._url.database) if self._url.database else None)
        try:
            self._open(create)
        except BaseException:
            self.engine.dispose()
            raise

    # -- connection -----------------------------------------------------------
    def _engine(self) -> Engine:
        try:
            if self.dialect == "sqlite":
                engine = create_engine(self._url, connect_args={"timeout": 120})
                event.listen(engine, "connect", _sqlite_connect)
                event.listen(engine, "begin", _sqlite_begin)
                return engine
            return create_engine(self._url, connect_args={"connect_timeout": 10}, pool_pre_ping=True)
        except (NoSuchModuleError, ImportError) as exc:
            raise LedgerConnectionError(
                f"{self.display_url}: the database driver is not installed ({exc}); "
                "PostgreSQL needs psycopg (pip install 'psycopg[binary]')") from exc

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[Connection]:
        """A transaction; with ``write``, the ledger's write lock (released at commit or rollback)."""
        try:
            conn = self.engine.connect()
        except DBAPIError as exc:
            raise LedgerConnectionError(
                f"cannot reach the ledger at {self.display_url}: {_first_line(exc)}. Check the URL "
                f"(--ledger or {ENV_VAR}) and that the database is running; nothing was written") from exc
        with conn:
            conn.execution_options(ledger_write=write)
            try:
                with conn.begin():
                    if write and self.dialect == "postgresql":
                        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(current_schema() || :name))"),
                                     {"name": "." + schema.ENTRIES})
                    yield conn
            except DBAPIError as exc:
                raise LedgerError(f"the ledger at {self.display_url} refused the operation: {_first_line(exc)}; "
                                  "the transaction was rolled back and nothing was written") from exc

    def _open(self, create: bool) -> None:
        with self._transaction(write=False) as conn:
            state = self._state(conn)
        if state == "ok":
            return
        if not create:
            raise LedgerNotFoundError(f"no ledger at {self.display_url}: its tables do not exist; "
                                      "score something first, or pass --ledger URL of an existing ledger")
        with self._transaction(write=True) as conn:
            if self._state(conn) == "ok":  # another process created it meanwhile
                return
            schema.metadata.create_all(conn)
            guards = schema.POSTGRES_GUARDS if self.dialect == "postgresql" else schema.SQLITE_GUARDS
            for statement in guards:
                conn.execute(text(statement))
            now = datetime.now(timezone.utc).isoformat(timespec="seconds")
            conn.execute(insert(schema.meta), [{"key": "schema_version", "value": str(schema.SCHEMA_VERSION)},
                                               {"key": "created_at", "value": now},
                                               {"key": "hash", "value": "sha256 over canonical JSON"}])

    def _state(self, conn: Connection) -> str:
        names = set(inspect(conn).get_table_names())
        if schema.META not in names:
            if schema.ENTRIES in names:
                raise LedgerSchemaError(
                    f"{self.display_url} has a table {schema.ENTRIES} but no {schema.META}: it is not a "
                    "conformance ledger this version can read; nothing was written")
            return "absent"
        found = conn.execute(select(schema.meta.c.value).where(schema.meta.c.key == "schema_version")).scalar()
        if found != str(schema.SCHEMA_VERSION):
            raise LedgerSchemaError(
                f"the ledger at {self.display_url} has schema version {found}, and this conformance "
                f"reads and writes schema version {schema.SCHEMA_VERSION}; use the conformance version that "
                "wrote it, or a new ledger URL. Nothing was written")
        return "ok"

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing --------------------------------------------------------------
    def append(self, verdicts: Sequence[Verdict], *, run_id: str | None = None,
               summaries: Iterable[GroupSummary] = ()) -> AppendReport:
        """Append verdicts as one atomic batch; verdicts already recorded are skipped.

        A verdict is already recorded when the ledger holds an entry with the
        same ``record_id``, the same record content (digest) and the same
        target (the versioned baseline URI, or ``no_baseline`` / ``invalid``).
        A new entry for a ``record_id`` the ledger already holds points to the
        latest earlier verdict entry of it (``previous_seq``; sign-offs do not count).
        """
        run_id = run_id or new_run_id()
        batches = {(s.model_version, s.input_class): s.to_dict() for s in summaries}
        prepared, seen = [], set()
        for verdict in verdicts:
            p = prepare(verdict, batches.get((verdict.model_version, verdict.input_class)))
            if p.key not in seen:
                seen.add(p.key)
                prepared.append(p)
        recorded_at = datetime.now(timezone.utc).isoformat(timespec="microseconds")
        table = schema.entries
        with self._transaction(write=True) as conn:
            existing: set[str] = set()
            for chunk in _chunks([p.key for p in prepared]):
                existing.update(conn.execute(select(table.c.idem_key).where(table.c.idem_key.in_(chunk))).scalars())
            todo = [p for p in prepared if p.key not in existing]
            head = self._head(conn)
            if not todo:
                return AppendReport(run_id, 0, len(verdicts), None, None, head, self.display_url)
            latest: dict[str, int] = {}
            for chunk in _chunks(sorted({p.record_id for p in todo if p.record_id is not None})):
                latest.update(conn.execute(select(table.c.record_id, func.max(table.c.seq))
                                           .where(table.c.record_id.in_(chunk), table.c.verdict.notin_(NOT_VERDICTS))
                                           .group_by(table.c.record_id)).tuples().all())
            rows, seq, prev = [], head.seq, head.entry_hash
            for p in todo:
                seq += 1
                _, prev, row = chain(p, seq=seq, prev_hash=prev, run_id=run_id, recorded_at=recorded_at,
                                     previous_seq=latest.get(p.record_id) if p.record_id is not None else None)
                rows.append(row)
                if p.record_id is not None:
                    latest[p.record_id] = seq
            conn.execute(insert(table), rows)
        record_head(self.witness_path, seq, prev, self.signer)  # committed: now witnessed outside the database
        return AppendReport(run_id, len(rows), len(verdicts) - len(rows), head.seq + 1, seq, Head(seq, prev),
                            self.display_url)

    def sign_off(self, record_id: str, *, decision: str, by: str, comment: str | None = None,
                 seq: int | None = None) -> tuple[SignOff, AppendReport]:
        """Append a reviewer's sign-off of a verdict entry of ``record_id`` (its newest, or entry ``seq``).

        The verdict entry is chosen, and the sign-off chained, inside the write
        lock. A sign-off identical to one already recorded (same verdict entry,
        decision, reviewer and comment) is not appended again: that one is
        returned, with ``added == 0`` in the report.

        Raises
        ------
        SignOffError
            A decision not in :data:`~conformance.ledger.signoff.DECISIONS`, or an empty reviewer's name or one
            with control characters. Nothing is written.
        EntryNotFoundError
            No verdict entry of ``record_id`` (or ``seq`` is not one). Nothing is written.
        """
        request = SignOffRequest.checked(record_id, decision=decision, by=by, comment=comment, seq=seq)
        table = schema.entries
        with self._transaction(write=True) as conn:
            signed_at = datetime.now(timezone.utc).isoformat(timespec="microseconds")  # once the lock is held
            signed = self._verdict_entry(conn, request.record_id, request.seq)
            p = prepare_signoff(request, signed, signed_at=signed_at)
            head = self._head(conn)
            found = conn.execute(select(table.c.seq, table.c.entry_hash, table.c.content)
                                 .where(table.c.idem_key == p.key)).first()
            if found is not None:  # an identical retry: the first one stands
                earlier = Entry(int(found[0]), str(found[1]), str(found[2]))
                return SignOff.from_entry(earlier), AppendReport(str(earlier.content["run_id"]), 0, 1, None, None,
                                                                 head, self.display_url)
            run_id = new_run_id()
            text_, digest, row = chain(p, seq=head.seq + 1, prev_hash=head.entry_hash, run_id=run_id,
                                       recorded_at=signed_at, previous_seq=signed.seq)
            conn.execute(insert(table), [row])
        new = Head(head.seq + 1, digest)
        record_head(self.witness_path, new.seq, new.entry_hash, self.signer)
        return (SignOff.from_entry(Entry(new.seq, digest, text_)),
                AppendReport(run_id, 1, 0, new.seq, new.seq, new, self.display_url))

    # -- reading --------------------------------------------------------------
    @staticmethod
    def _head(conn: Connection) -> Head:
        row = conn.execute(select(schema.entries.c.seq, schema.entries.c.entry_hash)
                           .order_by(schema.entries.c.seq.desc()).limit(1)).first()
        return Head(0, GENESIS_HASH) if row is None else Head(int(row[0]), str(row[1]))

    def head(self) -> Head:
        """The last entry's position and hash (``0`` and 64 zeros when empty)."""
        with self._transaction(write=False) as conn:
            return self._head(conn)

    def rows(self, *, page: int = 5000) -> Iterator[dict[str, Any]]:
        """Every stored row in ``seq`` order, all columns, streamed in pages (for ``verify``)."""
        table = schema.entries
        after = None
        while True:
            query = select(table).order_by(table.c.seq).limit(page)
            if after is not None:
                query = query.where(table.c.seq > after)
            with self._transaction(write=False) as conn:
                batch = [dict(r._mapping) for r in conn.execute(query)]
            yield from batch
            if len(batch) < page:
                return
            after = batch[-1]["seq"]

    def row(self, seq: int) -> dict[str, Any] | None:
        """The stored row (every column) of entry ``seq``, verdict or sign-off, or ``None``."""
        t = schema.entries
        with self._transaction(write=False) as conn:
            found = conn.execute(select(t).where(t.c.seq == seq)).first()
        return None if found is None else dict(found._mapping)

    def query_rows(self, filters: Filters | None = None) -> list[dict[str, Any]]:
        """Stored rows (every column) of the verdict entries matching ``filters``, in chain order.

        Sign-offs, approvals and revocations are not verdicts: they are never returned here (see
        :meth:`signoff_rows` and :mod:`conformance.ledger.approval`).
        """
        f = filters or Filters()
        t = schema.entries
        query = select(t).where(t.c.verdict.notin_(NOT_VERDICTS)).order_by(t.c.seq)
        for column, value in (("model_version", f.model_version), ("input_class", f.input_class),
                              ("verdict", f.verdict), ("baseline_version", f.baseline_version),
                              ("record_id", f.record_id), ("run_id", f.run_id)):
            if value is not None:
                query = query.where(t.c[column] == value)
        if f.since is not None:
            query = query.where(t.c.scored_at >= f.since)
        if f.until is not None:
            query = query.where(t.c.scored_at <= f.until)
        if f.reviewed is not None:
            s = t.alias("signoffs")
            signed = select(s.c.seq).where(s.c.verdict == SIGNOFF, s.c.record_id == t.c.record_id,
                                           s.c.previous_seq == t.c.seq).exists()
            query = query.where(signed if f.reviewed else ~signed)
        if f.limit is not None:
            query = query.limit(f.limit)
        with self._transaction(write=False) as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def query(self, filters: Filters | None = None) -> list[Entry]:
        """Verdict entries matching ``filters``, in chain order (sign-offs are not verdicts)."""
        return [Entry(int(r["seq"]), str(r["entry_hash"]), str(r["content"])) for r in self.query_rows(filters)]

    def entries_of(self, record_id: str) -> list[Entry]:
        """Every verdict entry of one record, oldest first."""
        return self.query(Filters(record_id=record_id))

    def verdict_entry(self, record_id: str, seq: int | None = None) -> Entry:
        """The newest verdict entry of ``record_id``, or its entry ``seq``; :class:`EntryNotFoundError` otherwise."""
        with self._transaction(write=False) as conn:
            return self._verdict_entry(conn, record_id, seq)

    def _verdict_entry(self, conn: Connection, record_id: str, seq: int | None) -> Entry:
        t = schema.entries
        found = conn.execute(select(t.c.seq, t.c.entry_hash, t.c.content, t.c.verdict)
                             .where(t.c.record_id == record_id).order_by(t.c.seq)).all()
        verdicts = [Entry(int(r[0]), str(r[1]), str(r[2])) for r in found if r[3] not in NOT_VERDICTS]
        if not verdicts:
            raise EntryNotFoundError(f"the ledger at {self.display_url} holds no entry for record_id {record_id!r}"
                                     f"{' (only sign-offs)' if found else ''}; list what it holds with "
                                     "`conformance verdicts`")
        if seq is None:
            return verdicts[-1]
        for entry in verdicts:
            if entry.seq == seq:
                return entry
        listed = ", ".join(f"#{e.seq}" for e in verdicts)
        if any(int(r[0]) == seq for r in found):
            raise EntryNotFoundError(f"entry #{seq} of record_id {record_id!r} is a sign-off, not a verdict; its "
                                     f"verdict entries are {listed}: pass one of those to --seq")
        raise EntryNotFoundError(f"record_id {record_id!r} has verdict entries {listed}, not #{seq}; "
                                 "pass one of those to --seq")

    def signoff_rows(self, record_ids: Iterable[str]) -> list[dict[str, Any]]:
        """Stored rows (every column) of the sign-offs of these records, in chain order."""
        t = schema.entries
        rows: list[dict[str, Any]] = []
        with self._transaction(write=False) as conn:
            for chunk in _chunks(sorted(set(record_ids))):
                rows.extend(dict(r._mapping) for r in conn.execute(
                    select(t).where(t.c.record_id.in_(chunk), t.c.verdict == SIGNOFF)))
        return sorted(rows, key=lambda r: int(r["seq"]))

    def signoffs(self, record_ids: Iterable[str]) -> list[SignOff]:
        """The sign-offs of these records, in chain order (each names the verdict entry it signs)."""
        return [SignOff.from_entry(Entry(int(r["seq"]), str(r["entry_hash"]), str(r["content"])))
                for r in self.signoff_rows(record_ids)]

    def get(self, seq: int) -> Entry | None:
        t = schema.entries
        with self._transaction(write=False) as conn:
            row = conn.execute(select(t.c.seq, t.c.entry_hash, t.c.content).where(t.c.seq == seq)).first()
        return None if row is None else Entry(int(row[0]), str(row[1]), str(row[2]))


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start:start + _CHUNK]


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return (str(orig).strip().splitlines() or [type(orig).__name__])[0]


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own
    # transaction handling would defer it and break BEGIN IMMEDIATE).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout = 120000")
    cursor.execute("PRAGMA journal_mode = WAL")  # readers never block the writer
    cursor.execute("PRAGMA synchronous = FULL")  # a committed batch survives a power cut
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    # IMMEDIATE takes the write lock at BEGIN: two writers can never read the
    # same head and both append after it.
    mode = "IMMEDIATE" if conn.get_execution_options().get("ledger_write") else "DEFERRED"
    conn.exec_driver_sql(f"BEGIN {mode}")
