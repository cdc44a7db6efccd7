"""`conformance ledger init`: a PostgreSQL ledger owned by one role and appended to by a writer that can do
nothing else, on the real server: the writer appends through conformance, and every way of changing history
it could try is refused; the owner's and the superuser's bypasses, which the docs warn about, are shown too.

Each test has a database and roles of its own (roles are the whole server's), dropped at the end.
"""

from __future__ import annotations

import contextlib
import io
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from conformance.cli import main
from tests.ledger_support import make_verdict, postgres_reachable

SERVER = "postgresql://postgres@127.0.0.1:5432/"


def admin(sql: str, database: str = "postgres") -> None:
    import psycopg

    with psycopg.connect(SERVER + database, autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Setup:
    database: str
    owner: str
    writer: str

    @property
    def admin_url(self) -> str:
        return SERVER + self.database

    @property
    def writer_url(self) -> str:
        return f"postgresql://{self.writer}@127.0.0.1:5432/{self.database}"


@pytest.fixture
def setup() -> Iterator[Setup]:
    why = postgres_reachable()
    if why is not None:
        pytest.skip(f"the roles need a PostgreSQL server: {why}")
    tag = secrets.token_hex(4)
    found = Setup(f"conf_roles_{tag}", f"conf_owner_{tag}", f"conf_writer_{tag}")
    admin(f"CREATE DATABASE {found.database}")
    try:
        yield found
    finally:
        admin(f"DROP DATABASE IF EXISTS {found.database} WITH (FORCE)")
        for role in (found.writer, found.owner):
            admin(f"DROP ROLE IF EXISTS {role}")


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def init(s: Setup, url: str | None = None) -> dict[str, object]:
    code, out, err = cli("ledger", "init", "--ledger", url or s.admin_url, "--owner-role", s.owner,
                         "--writer-role", s.writer, "--format", "json")
    assert code == 0, err
    return dict(json.loads(out))


def refused(url: str, statement: str) -> str:
    """The server's refusal of ``statement`` run as the user of ``url``; fails the test if it was allowed."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        try:
            conn.execute(statement)  # type: ignore[arg-type]
        except psycopg.Error as exc:
            return str(exc)
    pytest.fail(f"{statement!r} was allowed")


def entries(url: str) -> list[tuple[int, str]]:
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT seq, verdict FROM conformance_ledger ORDER BY seq")
        return [(int(r[0]), str(r[1])) for r in rows]


def test_the_writer_appends_and_cannot_change_anything(setup: Setup) -> None:
    from conformance.ledger import Ledger, verify

    done = init(setup)
    assert done["owner_role"] == setup.owner and done["writer_role"] == setup.writer
    assert sorted(done["created"]) == sorted([setup.owner, setup.writer])  # type: ignore[call-overload]
    assert done["writer_url"] == setup.writer_url

    with Ledger(setup.writer_url) as ledger:  # the writer appends through conformance
        report = ledger.append([make_verdict(f"aud-{i}") for i in range(3)])
        assert report.added == 3
        signed, _ = ledger.sign_off("aud-1", decision="confirmed", by="J. Doe")
        assert verify(ledger).ok and ledger.head().seq == 4
    before = entries(setup.admin_url)

    writer = setup.writer_url
    assert "permission denied for table conformance_ledger" in refused(
        writer, "UPDATE conformance_ledger SET verdict = 'within_bounds'")
    assert "permission denied" in refused(writer, "DELETE FROM conformance_ledger WHERE seq = 4")
    assert "permission denied" in refused(writer, "TRUNCATE conformance_ledger")
    assert 'permission denied to set parameter "session_replication_role"' in refused(
        writer, "SET session_replication_role = replica")
    assert "must be owner" in refused(writer, "ALTER TABLE conformance_ledger DISABLE TRIGGER USER")
    assert "must be owner" in refused(writer, "DROP TRIGGER conformance_ledger_append_only ON conformance_ledger")
    assert "permission denied" in refused(writer, "INSERT INTO conformance_ledger_meta VALUES ('k', 'v')")
    assert "must be owner" in refused(writer, "DROP FUNCTION conformance_ledger_refuse_change() CASCADE")
    assert entries(setup.admin_url) == before

    import psycopg

    with psycopg.connect(setup.admin_url) as conn:
        owners = dict(conn.execute("SELECT tablename, tableowner FROM pg_tables WHERE tablename LIKE "
                                   "'conformance_ledger%'").fetchall())
        super_, login = conn.execute("SELECT rolsuper, rolcanlogin FROM pg_roles WHERE rolname = %s",
                                     (setup.writer,)).fetchone()
    assert owners == {"conformance_ledger": setup.owner, "conformance_ledger_meta": setup.owner}
    assert (super_, login) == (False, True)


def test_the_owner_and_a_superuser_can_still_bypass_and_verify_names_it(setup: Setup) -> None:
    """What docs/ledger.md warns about: the owner may disable its triggers, a superuser may skip them."""
    from conformance.ledger import Ledger, verify

    init(setup)
    with Ledger(setup.writer_url) as ledger:
        ledger.append([make_verdict(f"aud-{i}") for i in range(3)])
    # the superuser: triggers skipped for the session
    admin("SET session_replication_role = replica; UPDATE conformance_ledger SET verdict = 'out_of_bounds' "
          "WHERE seq = 2", setup.database)
    # the owner (a superuser acting as it): triggers disabled, a row deleted, triggers back
    admin(f"SET ROLE {setup.owner}; ALTER TABLE conformance_ledger DISABLE TRIGGER USER; "
          "DELETE FROM conformance_ledger WHERE seq = 3; ALTER TABLE conformance_ledger ENABLE TRIGGER USER",
          setup.database)
    assert entries(setup.admin_url) == [(1, "within_bounds"), (2, "out_of_bounds")]
    with Ledger(setup.writer_url) as ledger:
        found = verify(ledger)
    assert not found.ok and found.bad_seq == 2


def test_init_again_changes_nothing_and_an_earlier_ledger_is_handed_to_the_owner(setup: Setup) -> None:
    from conformance.ledger import Ledger

    with Ledger(setup.admin_url) as ledger:  # made by the superuser, before any roles
        ledger.append([make_verdict("early-1")])
    first = init(setup)
    assert sorted(first["created"]) == sorted([setup.owner, setup.writer])  # type: ignore[call-overload]
    assert init(setup)["created"] == []
    with Ledger(setup.writer_url) as ledger:
        assert ledger.append([make_verdict("later-1")]).added == 1
    assert "permission denied" in refused(setup.writer_url, "DELETE FROM conformance_ledger")
    assert [r[0] for r in entries(setup.admin_url)] == [1, 2]


@pytest.mark.parametrize(("owner", "writer", "url", "says"), [
    ("conf_o", "conf_o", SERVER + "postgres", "the writer must own nothing"),
    ("Bad Name", "conf_w", SERVER + "postgres", "--owner-role 'Bad Name' is not a role name"),
    ("conf_o", "conf_w; DROP", SERVER + "postgres", "--writer-role 'conf_w; DROP' is not a role name"),
    ("conf_o", "conf_w", "sqlite:///ledger.db", "roles are PostgreSQL's"),
])
def test_bad_requests_are_refused_before_anything_is_done(owner: str, writer: str, url: str, says: str) -> None:
    code, out, err = cli("ledger", "init", "--ledger", url, "--owner-role", owner, "--writer-role", writer)
    assert code == 2 and out == "" and says in err and "Traceback" not in err
    assert err.startswith("conformance ledger: error: ")


def test_a_superuser_writer_is_refused(setup: Setup) -> None:
    code, out, err = cli("ledger", "init", "--ledger", setup.admin_url, "--owner-role", setup.owner,
                         "--writer-role", "postgres")
    assert code == 2 and "'postgres' is a superuser" in err
    import psycopg

    with psycopg.connect(setup.admin_url) as conn:  # rolled back: no owner role, no tables
        assert conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s", (setup.owner,)).fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'conformance%'").fetchone()[0] == 0


def test_a_ledger_in_a_schema_of_its_own(setup: Setup) -> None:
    from conformance.ledger import Ledger

    admin("CREATE SCHEMA audit", setup.database)
    in_schema = "?options=-csearch_path%3Daudit"
    done = init(setup, setup.admin_url + in_schema)
    assert done["schema"] == "audit" and done["writer_url"] == setup.writer_url + in_schema
    with Ledger(setup.writer_url + in_schema) as ledger:
        assert ledger.append([make_verdict("aud-1")]).added == 1
    assert "permission denied" in refused(setup.writer_url + "?options=-csearch_path%3Daudit",
                                          "DELETE FROM conformance_ledger")
    import psycopg

    with psycopg.connect(setup.admin_url) as conn:
        row = conn.execute("SELECT schemaname, tableowner FROM pg_tables WHERE tablename = 'conformance_ledger'")
        assert row.fetchall() == [("audit", setup.owner)]
