"""A PostgreSQL ledger with two roles: an owner that owns the tables, a writer that can only read and append.

The append-only triggers (:mod:`conformance.ledger.schema`) stop every role but the tables' owner and a
superuser: the owner may disable or drop a trigger, and only a superuser may set
``session_replication_role = replica`` (which skips triggers). So the scoring machines connect as a *writer*
role that owns nothing in the ledger and holds only ``SELECT`` and ``INSERT`` on its tables; it cannot
``UPDATE``, ``DELETE`` or ``TRUNCATE`` (the triggers and the missing privileges both refuse), cannot alter or
drop a trigger (not the owner), and cannot set ``session_replication_role`` (not a superuser). The *owner*
role owns the tables and the trigger function and logs in for nothing routine; whoever holds it, or a
superuser, can still change rows, which the hash chain and the witnessed heads detect (docs/ledger.md).

:func:`init_roles` runs once, connected as a superuser (or a role that may create roles and is a member of
the owner role), and can be run again: it creates what is missing and re-grants what the writer needs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from conformance.ledger import schema
from conformance.ledger.errors import LedgerConnectionError, LedgerError
from conformance.ledger.store import Ledger, _normalise, resolve_ledger_url

_ROLE = re.compile(r"[a-z_][a-z0-9_]{0,62}")
TRIGGER_FUNCTION = "conformance_ledger_refuse_change()"


@dataclass(frozen=True)
class LedgerRoles:
    """What :func:`init_roles` set up."""

    ledger: str
    schema: str
    owner: str
    writer: str
    writer_url: str
    created: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"ledger": self.ledger, "schema": self.schema, "owner_role": self.owner, "writer_role": self.writer,
                "writer_url": self.writer_url, "created": list(self.created)}


def _checked_role(value: str, option: str) -> str:
    if not _ROLE.fullmatch(value or ""):
        raise LedgerError(f"{option} {value!r} is not a role name this command creates: use lower-case letters, "
                          "digits and _, starting with a letter or _, at most 63 characters (e.g. conformance_writer)")
    return value


def init_roles(url: str | None, *, owner: str, writer: str) -> LedgerRoles:
    """Create (or adopt) the ledger's tables as ``owner`` and grant ``writer`` only SELECT and INSERT.

    Parameters
    ----------
    url : str, optional
        The ledger's PostgreSQL URL, connecting as a superuser (or a role that may create roles and
        belongs to ``owner``); default :func:`~conformance.ledger.resolve_ledger_url`.
    owner, writer : str
        Role names (lower-case letters, digits, ``_``). Roles that do not exist are created: the owner
        without login, the writer with login and no password (set one with ``ALTER ROLE ... PASSWORD``
        where the server asks for one). An existing writer must not be a superuser or own the tables.

    Raises
    ------
    LedgerError
        A SQLite URL, bad or equal role names, a writer that is a superuser or owns the tables, or a
        refusal by the server (that step is rolled back; a re-run completes what is missing).
    LedgerConnectionError
        The server cannot be reached; nothing was changed.
    """
    owner, writer = _checked_role(owner, "--owner-role"), _checked_role(writer, "--writer-role")
    if owner == writer:
        raise LedgerError(f"--owner-role and --writer-role are both {owner!r}: the writer must own nothing; "
                          "name two different roles")
    resolved = resolve_ledger_url(url)
    parsed = _normalise(resolved)
    shown = parsed.render_as_string(hide_password=True)
    if parsed.get_backend_name() != "postgresql":
        raise LedgerError(f"{shown}: roles are PostgreSQL's; a SQLite ledger is guarded by its file's permissions "
                          "(make the folder writable only by the account that scores)")
    engine = create_engine(parsed, connect_args={"connect_timeout": 10})
    created: list[str] = []
    try:
        try:
            conn = engine.connect()
        except DBAPIError as exc:
            raise LedgerConnectionError(f"cannot reach the ledger at {shown}: {_first_line(exc)}; check the URL "
                                        "(--ledger or CONFORMANCE_LEDGER_URL); nothing was changed") from exc
        with conn:
            target = _prepare(conn, shown, owner, writer, created)
        # The tables, triggers and trigger function are created by the owner role itself, so the owner owns them.
        options = (str(parsed.query.get("options", "")) + f" -c role={owner}").strip()
        Ledger(parsed.update_query_dict({"options": options}).render_as_string(hide_password=False)).close()
        with engine.connect() as conn:
            _grant(conn, shown, target, writer)
    finally:
        engine.dispose()
    writer_url = parsed.set(drivername="postgresql", username=writer, password=None)
    return LedgerRoles(shown, target, owner, writer, writer_url.render_as_string(hide_password=True), tuple(created))


def _prepare(conn: Connection, shown: str, owner: str, writer: str, created: list[str]) -> str:
    """Create the missing roles and let the owner create in the schema; the schema's name is returned."""
    try:
        with conn.begin():
            where = conn.execute(text("SELECT current_schema(), current_user")).one()
            if where[0] is None:
                raise LedgerError(f"{shown}: the schema in the URL's search_path does not exist; create it first "
                                  "(CREATE SCHEMA name), then run this again")
            target, admin = str(where[0]), str(where[1])
            for role, login in ((owner, False), (writer, True)):
                if _role(conn, role) is None:
                    conn.execute(text(f'CREATE ROLE "{role}" {"LOGIN" if login else "NOLOGIN"}'))
                    created.append(role)
            if _role(conn, writer):
                raise LedgerError(f"the writer role {writer!r} is a superuser: it could bypass every guard; name a "
                                  "role that is not (or let this command create it)")
            conn.execute(text(f'GRANT USAGE, CREATE ON SCHEMA "{target}" TO "{owner}"'))
            conn.execute(text(f'GRANT USAGE ON SCHEMA "{target}" TO "{writer}"'))
            if not _role(conn, admin):
                conn.execute(text(f'GRANT "{owner}" TO "{admin}"'))  # to create the tables as the owner
            owners = {str(r[0]): str(r[1]) for r in conn.execute(
                text("SELECT tablename, tableowner FROM pg_tables WHERE schemaname = :s AND tablename IN (:e, :m)"),
                {"s": target, "e": schema.ENTRIES, "m": schema.META})}
            if owners and set(owners.values()) != {owner}:  # a ledger made before the roles: the owner takes it
                for table in owners:
                    conn.execute(text(f'ALTER TABLE "{target}"."{table}" OWNER TO "{owner}"'))
                conn.execute(text(f'ALTER FUNCTION "{target}".{TRIGGER_FUNCTION} OWNER TO "{owner}"'))
            if writer in owners.values():
                raise LedgerError(f"the writer role {writer!r} owns the ledger's tables, and a writer must own "
                                  "nothing: name it as --owner-role, or another role as --writer-role; nothing was "
                                  "changed")
    except DBAPIError as exc:
        raise _refused(shown, "create the roles of", exc) from exc
    return target


def _grant(conn: Connection, shown: str, target: str, writer: str) -> None:
    """The writer may read both tables and append to the entries; nothing else."""
    try:
        with conn.begin():
            for table in (schema.ENTRIES, schema.META):
                conn.execute(text(f'REVOKE ALL ON "{target}"."{table}" FROM PUBLIC, "{writer}"'))
                conn.execute(text(f'GRANT SELECT ON "{target}"."{table}" TO "{writer}"'))
            conn.execute(text(f'GRANT INSERT ON "{target}"."{schema.ENTRIES}" TO "{writer}"'))
    except DBAPIError as exc:
        raise _refused(shown, "grant the writer its privileges on", exc) from exc


def _role(conn: Connection, name: str) -> bool | None:
    """Whether role ``name`` is a superuser; ``None`` when there is no such role."""
    found = conn.execute(text("SELECT rolsuper FROM pg_roles WHERE rolname = :n"), {"n": name}).first()
    return None if found is None else bool(found[0])


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return (str(orig).strip().splitlines() or [type(orig).__name__])[0]


def _refused(shown: str, what: str, exc: DBAPIError) -> LedgerError:
    return LedgerError(f"the server at {shown} refused to {what} the ledger: {_first_line(exc)}. Run this as a "
                       "superuser (or a role with CREATEROLE that is a member of the owner role); this step was "
                       "rolled back, and running the command again completes what is missing")
