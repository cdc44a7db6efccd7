"""The verdict ledger on SQLite and PostgreSQL: append, idempotency, pointers, tamper evidence, schema."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.errors import ConformanceError
from conformance.ledger import (
    Filters,
    Ledger,
    LedgerConnectionError,
    LedgerError,
    LedgerNotFoundError,
    LedgerSchemaError,
    export_parquet,
    verify,
    verify_export,
)
from conformance.ledger.canonical import GENESIS_HASH, canonical_json, entry_hash
from tests.ledger_support import make_verdict, postgres_reachable, sqlite_url, tamper


def _filled(url: str, n: int = 6) -> Ledger:
    ledger = Ledger(url)
    ledger.append([make_verdict(f"r{i}") for i in range(n)], run_id="run-1")
    return ledger


def test_append_then_verify_is_intact(ledger_url: str) -> None:
    with _filled(ledger_url) as ledger:
        report = verify(ledger)
        head = ledger.head()
    assert report.ok and report.count == 6 and report.problem is None
    assert report.head == head and head.seq == 6
    entries = Ledger(ledger_url, create=False).query()
    assert [e.seq for e in entries] == list(range(1, 7))
    assert entries[0].content["prev_hash"] == GENESIS_HASH
    for before, after in zip(entries, entries[1:]):
        assert after.content["prev_hash"] == before.entry_hash
        assert entry_hash(after.content_text) == after.entry_hash


def test_entry_holds_everything_needed_to_reconstruct(ledger_url: str) -> None:
    verdict = make_verdict("r1")
    with Ledger(ledger_url) as ledger:
        ledger.append([verdict], run_id="run-7")
        entry = ledger.query()[0]
    assert entry.verdict() == verdict  # the Verdict round-trips exactly, floats included
    content = entry.content
    assert content["run_id"] == "run-7" and content["recorded_at"]
    assert content["record"]["sampling"] == {"temperature": 0.7}
    assert content["verdict"]["baseline"] == "models:/conformance.bot-1.refund/1"


def test_same_record_same_baseline_adds_nothing(ledger_url: str) -> None:
    with _filled(ledger_url) as ledger:
        again = ledger.append([make_verdict(f"r{i}") for i in range(8)])
        assert (again.added, again.already_recorded) == (2, 6)
        assert ledger.append([make_verdict("r0")]).added == 0
        assert ledger.head().seq == 8
        assert verify(ledger).ok


def test_changed_record_content_is_a_new_entry_pointing_back(ledger_url: str) -> None:
    with _filled(ledger_url, 1) as ledger:
        report = ledger.append([make_verdict("r0", output="a different output")])
        assert report.added == 1
        assert ledger.query()[-1].content["previous_seq"] == 1


def test_new_baseline_version_adds_an_entry_pointing_to_the_earlier(ledger_url: str) -> None:
    with _filled(ledger_url, 3) as ledger:
        report = ledger.append([make_verdict("r1", version=2), make_verdict("r2", version=2)])
        assert (report.added, report.first_seq, report.last_seq) == (2, 4, 5)
        latest = ledger.entries_of("r1")
        assert [e.seq for e in latest] == [2, 4]
        assert latest[-1].content["previous_seq"] == 2
        assert ledger.append([make_verdict("r1", version=2)]).added == 0
        assert verify(ledger).ok


def test_no_baseline_then_baseline(ledger_url: str) -> None:
    with Ledger(ledger_url) as ledger:
        assert ledger.append([make_verdict("r1", version=None)]).added == 1
        assert ledger.append([make_verdict("r1", version=None)]).added == 0  # still no baseline: nothing new
        assert ledger.append([make_verdict("r1", version=1)]).added == 1
        first, second = ledger.entries_of("r1")
        assert first.content["verdict"]["verdict"] == "no_baseline"
        assert second.content["previous_seq"] == first.seq


def test_invalid_verdicts_are_recorded_even_without_record_id(ledger_url: str) -> None:
    bad = make_verdict("x", version=None, verdict="invalid")
    anonymous = type(bad)(row=9, record_id=None, model_version=None, input_class=None, verdict="invalid",
                          reason="row 9: not valid JSON", record={})
    with Ledger(ledger_url) as ledger:
        assert ledger.append([bad, anonymous]).added == 2
        assert ledger.append([bad, anonymous]).added == 0
        assert {e.content["verdict"]["verdict"] for e in ledger.query()} == {"invalid"}


def test_duplicates_within_one_batch_are_recorded_once(ledger_url: str) -> None:
    with Ledger(ledger_url) as ledger:
        assert ledger.append([make_verdict("r1"), make_verdict("r1")]).added == 1


def test_filters(ledger_url: str) -> None:
    with _filled(ledger_url, 3) as ledger:
        ledger.append([make_verdict("r9", version=2, verdict="out_of_bounds")], run_id="run-2")
        assert [e.seq for e in ledger.query(Filters(verdict="out_of_bounds"))] == [4]
        assert [e.seq for e in ledger.query(Filters(baseline_version=1))] == [1, 2, 3]
        assert len(ledger.query(Filters(model_version="bot-1", input_class="refund"))) == 4
        assert len(ledger.query(Filters(since="2026-06-16", until="2026-06-16T10:00:00Z"))) == 4
        assert ledger.query(Filters(since="2026-06-17")) == []
        assert [e.seq for e in ledger.query(Filters(run_id="run-2"))] == [4]
        assert len(ledger.query(Filters(limit=2))) == 2
    with pytest.raises(LedgerError, match="ISO 8601"):
        Filters(since="last tuesday")
    with pytest.raises(LedgerError, match="verdict must be one of"):
        Filters(verdict="fine")


# -- tamper evidence --------------------------------------------------------------
TAMPERING = {
    "altered content": ("UPDATE conformance_ledger SET content = replace(content, 'within bounds', 'fine') "
                        "WHERE seq = 3", 3, "altered"),
    "altered column": ("UPDATE conformance_ledger SET verdict = 'out_of_bounds' WHERE seq = 4", 4, "column verdict"),
    "removed": ("DELETE FROM conformance_ledger WHERE seq = 2", 2, "missing"),
    "removed last two": ("DELETE FROM conformance_ledger WHERE seq >= 5", None, "expected head"),
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_verify_names_the_first_tampered_entry(ledger_url: str, case: str) -> None:
    statement, bad_seq, words = TAMPERING[case]
    with _filled(ledger_url) as ledger:
        head = ledger.head().entry_hash
        tamper(ledger_url, statement)
        report = verify(ledger, expect_head=head)
    assert not report.ok
    assert words in report.problem
    if bad_seq is not None:
        assert report.bad_seq == bad_seq and f"#{bad_seq}" in report.problem


def test_verify_detects_a_reorder_and_a_consistent_rewrite(ledger_url: str) -> None:
    with _filled(ledger_url) as ledger:
        head = ledger.head().entry_hash
        rows = {r["seq"]: r for r in ledger.rows()}
    # swap the contents (and hashes) of entries 2 and 3, keeping the seq column in order
    swap = ["UPDATE conformance_ledger SET seq = -2 WHERE seq = 2",
            "UPDATE conformance_ledger SET seq = 2 WHERE seq = 3",
            "UPDATE conformance_ledger SET seq = 3 WHERE seq = -2"]
    tamper(ledger_url, *swap)
    with Ledger(ledger_url, create=False) as ledger:
        report = verify(ledger)
        assert not report.ok and report.bad_seq == 2 and "reordered" in report.problem
    tamper(ledger_url, *swap)  # back in order
    assert verify(Ledger(ledger_url, create=False)).ok
    # an attacker rewrites entry 5 consistently: a new content with a matching hash
    content = rows[5]["content"].replace("within bounds", "rewritten")
    new_hash = entry_hash(content)
    tamper(ledger_url, f"UPDATE conformance_ledger SET content = '{content}', entry_hash = '{new_hash}' WHERE seq = 5")
    report = verify(Ledger(ledger_url, create=False))
    assert not report.ok and report.bad_seq == 5 and "does not follow entry #5" in report.problem
    # ... and entry 6 too: the chain is consistent again, but the exported head is gone
    content6 = rows[6]["content"].replace(rows[5]["entry_hash"], new_hash)
    tamper(ledger_url, f"UPDATE conformance_ledger SET content = '{content6}', entry_hash = '{entry_hash(content6)}', "
                       f"prev_hash = '{new_hash}' WHERE seq = 6")
    assert verify(Ledger(ledger_url, create=False), witness=False).ok  # the chain alone cannot tell
    report = verify(Ledger(ledger_url, create=False), expect_head=head, witness=False)
    assert not report.ok and "rewritten or truncated" in report.problem
    report = verify(Ledger(ledger_url, create=False))  # the heads file saw the head that was rewritten
    assert not report.ok and report.bad_seq == 6 and "the chain was rewritten" in report.problem


def test_the_schema_refuses_update_and_delete(ledger_url: str) -> None:
    from sqlalchemy import text

    with _filled(ledger_url, 2) as ledger:
        for statement in ("UPDATE conformance_ledger SET verdict = 'invalid'", "DELETE FROM conformance_ledger",
                          "UPDATE conformance_ledger_meta SET value = '2'"):
            with pytest.raises(Exception, match="append-only"):
                with ledger.engine.begin() as conn:
                    conn.execute(text(statement))
        assert verify(ledger).ok and ledger.head().seq == 2


# -- export ---------------------------------------------------------------------
def test_export_verifies_offline_and_detects_an_edit(ledger_url: str, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    with _filled(ledger_url) as ledger:
        ledger.append([make_verdict("r9", version=2, verdict="out_of_bounds")])
        head = ledger.head().entry_hash
        assert export_parquet(ledger, tmp_path / "all.parquet") == 7
        assert export_parquet(ledger, tmp_path / "some.parquet", Filters(verdict="out_of_bounds")) == 1
    assert verify_export(tmp_path / "all.parquet", expect_head=head).ok
    assert verify_export(tmp_path / "some.parquet").ok
    table = pq.read_table(tmp_path / "all.parquet").to_pylist()
    table[2]["p_value"] = 0.001
    import pyarrow as pa

    schema = pq.read_schema(tmp_path / "all.parquet")
    pq.write_table(pa.Table.from_pylist(table, schema=schema), tmp_path / "bad.parquet")
    report = verify_export(tmp_path / "bad.parquet")
    assert not report.ok and report.bad_seq == 3 and "p_value" in report.problem


# -- bad input ------------------------------------------------------------------
def test_other_schema_version_is_refused_and_nothing_written(ledger_url: str) -> None:
    with _filled(ledger_url, 2):
        pass
    if ledger_url.startswith("sqlite"):
        import sqlite3

        conn = sqlite3.connect(ledger_url[len("sqlite:///"):])
        conn.execute("DROP TRIGGER conformance_ledger_meta_no_update")
        conn.execute("UPDATE conformance_ledger_meta SET value = '2' WHERE key = 'schema_version'")
        conn.commit()
        conn.close()
    else:
        from tests.ledger_support import pg_execute

        schema = ledger_url.split("search_path%3D", 1)[1]
        pg_execute(f"SET search_path TO {schema}; ALTER TABLE conformance_ledger_meta DISABLE TRIGGER USER; "
                   "UPDATE conformance_ledger_meta SET value = '2' WHERE key = 'schema_version'")
    with pytest.raises(LedgerSchemaError, match="schema version 2.*schema version 1"):
        Ledger(ledger_url).append([make_verdict("new")])


def test_unreachable_ledgers_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(LedgerConnectionError, match="does not exist"):
        Ledger(sqlite_url(tmp_path / "no-such-folder" / "ledger.db"))
    assert not (tmp_path / "no-such-folder").exists()
    with pytest.raises(LedgerConnectionError, match="cannot reach the ledger"):
        Ledger("postgresql://postgres@127.0.0.1:1/test")
    with pytest.raises(LedgerConnectionError, match="supports sqlite"):
        Ledger("mysql://x@y/z")
    with pytest.raises(LedgerConnectionError, match="durable"):
        Ledger("sqlite:///:memory:")
    with pytest.raises(LedgerNotFoundError, match="does not exist"):
        Ledger(sqlite_url(tmp_path / "absent.db"), create=False)
    assert not (tmp_path / "absent.db").exists()
    assert issubclass(LedgerConnectionError, ConformanceError)


def test_a_table_of_that_name_that_is_not_a_ledger_is_refused(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE conformance_ledger (x INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(LedgerSchemaError, match="not a conformance ledger"):
        Ledger(sqlite_url(path))


@pytest.mark.skipif(postgres_reachable() is not None, reason=f"{postgres_reachable()}")
def test_postgres_url_without_driver_name_is_accepted() -> None:
    from tests.ledger_support import new_pg_ledger_url

    gen = new_pg_ledger_url()
    url = next(gen)
    try:
        assert url.startswith("postgresql://")
        with Ledger(url) as ledger:
            assert ledger.dialect == "postgresql" and ledger.head().seq == 0
    finally:
        gen.close()


# -- canonical JSON -------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=60, deadline=None)
@given(json_values)
def test_canonical_json_round_trips_exactly(value: object) -> None:
    import json

    text = canonical_json(value)
    assert json.loads(text) == value
    assert canonical_json(json.loads(text)) == text


def test_canonical_json_sorts_keys_and_names_non_finite_floats() -> None:
    assert canonical_json({"b": 1, "a": 2}) == canonical_json({"a": 2, "b": 1}) == '{"a":2,"b":1}'
    assert canonical_json([math.nan, math.inf, -math.inf]) == '["NaN","Infinity","-Infinity"]'
    assert canonical_json({"t": "é\u2028"}) == '{"t":"é\u2028"}'


# -- witnessed heads ----------------------------------------------------------------------------------------------
def test_every_append_is_witnessed_and_a_removed_tail_is_named(ledger_url: str) -> None:
    from conformance.ledger.witness import read_heads

    with _filled(ledger_url) as ledger:
        heads, problems = read_heads(ledger.witness_path)
        assert problems == [] and heads and heads[-1].seq == ledger.head().seq
        assert heads[-1].entry_hash == ledger.head().entry_hash
        report = verify(ledger)
        assert report.ok and report.witnessed == len(heads) and report.witness == str(ledger.witness_path)
    tamper(ledger_url, "DELETE FROM conformance_ledger WHERE seq >= 5")
    with Ledger(ledger_url, create=False) as ledger:
        assert verify(ledger, witness=False).ok  # consistent in itself
        report = verify(ledger)
    assert not report.ok and "entries were removed from its end" in report.problem and "ends at entry #4" in \
        report.problem
    import contextlib
    import io

    from conformance.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["ledger", "verify", "--ledger", ledger_url])
    assert code == 1 and "NOT intact: the witness" in out.getvalue() and "consistent in itself" in out.getvalue()


def test_a_rewritten_chain_with_fresh_hashes_is_named(ledger_url: str) -> None:
    """Delete everything and append other verdicts: a new, consistent chain of the same length."""
    with _filled(ledger_url) as ledger:
        n = ledger.head().seq
    tamper(ledger_url, "DELETE FROM conformance_ledger")
    with Ledger(ledger_url, create=False) as ledger:
        ledger.append([make_verdict(f"forged-{i}") for i in range(n)])
        assert verify(ledger, witness=False).ok
        report = verify(ledger)
    assert not report.ok and "the chain was rewritten" in report.problem


def test_a_witness_that_cannot_be_written_is_a_warning_not_a_lost_verdict(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder", encoding="utf-8")
    monkeypatch.setenv("CONFORMANCE_LEDGER_WITNESS", str(blocked))  # a folder that cannot exist
    with Ledger(sqlite_url(tmp_path / "ledger.db")) as ledger:
        with pytest.warns(UserWarning, match="could not be written"):
            report = ledger.append([make_verdict("a")])
        assert report.added == 1 and ledger.head().seq == 1
        assert verify(ledger).ok  # nothing witnessed: nothing to disagree with


def test_a_head_cut_short_by_a_crash_is_ignored_but_an_edited_line_is_named(tmp_path: Path) -> None:
    from conformance.ledger.witness import read_heads

    path = tmp_path / "heads.jsonl"
    path.write_text('{"seq": 1, "entry_hash": "a", "at": "t"}\n{"seq": 2, "entry', encoding="utf-8")
    heads, problems = read_heads(path)
    assert [h.seq for h in heads] == [1] and problems == []
    path.write_text('{"seq": 1, "entry_hash": "a", "at": "t"}\nedited\n{"seq": 3, "entry_hash": "c"}\n',
                    encoding="utf-8")
    heads, problems = read_heads(path)
    assert [h.seq for h in heads] == [1, 3] and problems == [f"{path}, line 2: not a witnessed head (the heads file "
                                                              "was edited)"]
