"""Reviewers' sign-offs in the ledger (no embedder): chained to the verdict they sign, never changing it, checked
by verify, refused when malformed; on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conformance.errors import ConformanceError
from conformance.ledger import (
    EntryNotFoundError,
    Filters,
    Ledger,
    SignOffError,
    export_parquet,
    verify,
    verify_export,
)
from conformance.ledger.canonical import GENESIS_HASH, entry_hash, idempotency_key
from conformance.ledger.entry import SIGNOFF, Prepared, chain, prepare
from conformance.ledger.signoff import signoff_digest
from tests.ledger_support import make_verdict, sqlite_url, tamper

SIGNED_AT = "2026-06-17T10:00:00+00:00"


def _ledger(url: str) -> Ledger:
    """r1 within bounds (#1), r2 out of bounds (#2), r1 against a second baseline version (#3)."""
    ledger = Ledger(url)
    ledger.append([make_verdict("r1"), make_verdict("r2", verdict="out_of_bounds"), make_verdict("r1", version=2)],
                  run_id="run-1")
    return ledger


def test_signoffs_are_chained_and_leave_the_verdict_as_it_was(ledger_url: str) -> None:
    with _ledger(ledger_url) as ledger:
        before = ledger.row(2)
        head = ledger.head()
        first, report = ledger.sign_off("r2", decision="confirmed", by="  J. Doe ", comment="promises a refund")
        second, _ = ledger.sign_off("r2", decision="escalated", by="K. Lee")
        assert (first.seq, second.seq) == (4, 5) and report.added == 1 and report.head.seq == 4
        assert first.signed_seq == second.signed_seq == 2 and first.signed_hash == before["entry_hash"]
        assert first.by == "J. Doe" and first.comment == "promises a refund" and second.comment is None
        content = ledger.get(4).content  # type: ignore[union-attr]
        assert content["prev_hash"] == head.entry_hash  # appended to the same chain
        assert content["signoff"]["seq"] == 2 and content["signoff"]["entry_hash"] == before["entry_hash"]
        assert content["verdict"] == {"verdict": SIGNOFF, "record_id": "r2"}
        assert content["record"] == {} and content["batch"] is None and content["previous_seq"] == 2
        assert content["signoff"]["signed_at"].endswith("+00:00")
        # the verdict's entry is untouched, and is still a verdict
        assert ledger.row(2) == before
        assert ledger.get(2).verdict() == make_verdict("r2", verdict="out_of_bounds")  # type: ignore[union-attr]
        # both kept, in ledger order; sign-offs are not verdicts
        assert [(s.seq, s.decision, s.by) for s in ledger.signoffs(["r2"])] == [(4, "confirmed", "J. Doe"),
                                                                               (5, "escalated", "K. Lee")]
        assert [e.seq for e in ledger.query()] == [1, 2, 3]
        assert ledger.query(Filters(record_id="r2"))[0].seq == 2
        report_ = verify(ledger)
        assert report_.ok and report_.count == 5 and report_.signoffs == 2, report_.problem


def test_an_identical_retry_is_recorded_once_and_a_different_one_is_kept(ledger_url: str) -> None:
    with _ledger(ledger_url) as ledger:
        first, _ = ledger.sign_off("r2", decision="confirmed", by="J. Doe", comment="ok")
        again, report = ledger.sign_off("r2", decision="confirmed", by=" J. Doe", comment="ok")
        assert again == first and report.added == 0 and report.already_recorded == 1 and ledger.head().seq == 4
        other, report = ledger.sign_off("r2", decision="confirmed", by="J. Doe", comment="ok, checked twice")
        assert other.seq == 5 and report.added == 1
        assert verify(ledger).ok


def test_the_newest_verdict_is_signed_unless_seq_names_one(ledger_url: str) -> None:
    with _ledger(ledger_url) as ledger:
        newest, _ = ledger.sign_off("r1", decision="false_alarm", by="J. Doe")
        older, _ = ledger.sign_off("r1", decision="confirmed", by="J. Doe", seq=1)
        assert (newest.signed_seq, older.signed_seq) == (3, 1)
        assert [e.seq for e in ledger.query(Filters(reviewed=True))] == [1, 3]
        assert [e.seq for e in ledger.query(Filters(reviewed=False))] == [2]
        assert [e.seq for e in ledger.query(Filters(reviewed=True, limit=1))] == [1]
        assert verify(ledger).ok


def test_refusals_write_nothing(ledger_url: str) -> None:
    with _ledger(ledger_url) as ledger:
        signoff, _ = ledger.sign_off("r1", decision="confirmed", by="J. Doe")
        head = ledger.head()
        refused: list[tuple[dict[str, Any], type[Exception], str]] = [
            ({"record_id": "nope"}, EntryNotFoundError, "no entry for record_id 'nope'"),
            ({"seq": signoff.seq}, EntryNotFoundError, f"entry #{signoff.seq} of record_id 'r1' is a sign-off"),
            ({"seq": 2}, EntryNotFoundError, "record_id 'r1' has verdict entries #1, #3, not #2"),
            ({"seq": 0}, SignOffError, "seq must be a positive integer"),
            ({"decision": "fine"}, SignOffError, "decision must be one of confirmed, false_alarm, escalated"),
            ({"by": " \t "}, SignOffError, r"name \(by\) is empty"),
            ({"by": "J. Doe\x1b[8m"}, SignOffError, r"control characters \(\\x1b\)"),
            ({"by": "J. Doe\nApproved by: CEO"}, SignOffError, r"control characters \(\\n\)"),
            ({"by": "J.\u2028Doe"}, SignOffError, "control characters"),
        ]
        for change, error, words in refused:
            asked = {"record_id": "r1", "decision": "confirmed", "by": "K. Lee"} | change
            with pytest.raises(error, match=words):
                ledger.sign_off(asked.pop("record_id"), **asked)
            assert issubclass(error, ConformanceError)
        assert ledger.head() == head


def test_a_comment_is_data_kept_as_given(ledger_url: str) -> None:
    comment = "line one\nline two \x1b[2J '; DROP TABLE conformance_ledger; --"
    with _ledger(ledger_url) as ledger:
        ledger.sign_off("r2", decision="escalated", by="Zoë O'Brien", comment=comment)
        (stored,) = ledger.signoffs(["r2"])
        assert stored.comment == comment and stored.by == "Zoë O'Brien"
        assert verify(ledger).ok


def test_a_later_verdict_of_the_record_points_to_the_earlier_verdict_not_to_a_signoff(ledger_url: str) -> None:
    with _ledger(ledger_url) as ledger:
        ledger.sign_off("r2", decision="confirmed", by="J. Doe")
        ledger.append([make_verdict("r2", version=2, verdict="out_of_bounds")])
        newest = ledger.entries_of("r2")[-1]
        assert newest.seq == 5 and newest.content["previous_seq"] == 2
        assert verify(ledger).ok


def test_the_format_of_a_verdict_entry_is_unchanged() -> None:
    # The hash and key of a verdict entry, pinned: sign-offs add no field to a verdict's content. An entry
    # written before keys covered the baseline's digest (no key_format) keeps its hash and key; a new one
    # says key_format 2.
    from dataclasses import replace

    from conformance.ledger.entry import target_of

    new = prepare(make_verdict("r1"))
    old = replace(new, key=idempotency_key(new.record_id, new.digest, target_of(new.verdict)), key_format=None)
    _, digest, row = chain(old, seq=1, prev_hash=GENESIS_HASH, run_id="run-1",
                           recorded_at="2026-06-16T09:00:00+00:00", previous_seq=None)
    assert digest == "30ba1be694a3d24b067bb7a5a652b99573060de56f8d3ccf5e44ccc3691d57fc"
    assert row["idem_key"] == "b0ab2c2a0f4af7e76c2fc4f966083cc1dadd333b5ca4a966ba9c448322eb5978"
    _, digest, row = chain(new, seq=1, prev_hash=GENESIS_HASH, run_id="run-1",
                           recorded_at="2026-06-16T09:00:00+00:00", previous_seq=None)
    assert digest == "172688dcff9ebfb76e9a155e9bc41046673ff4624166d33a14471f69426101e4"
    assert row["idem_key"] == "bc0b2ceaaa9ca16ab50978cdd3942ff7d8afe0d05fec9d323cd30eec7cc9d42b"


# -- tamper evidence --------------------------------------------------------------
def _literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def forge(ledger: Ledger, *, record_id: str, signs: int, signed_hash: str | None = None,
          decision: str = "false_alarm", by: str = "M. Allory", without_signoff: bool = False) -> str:
    """An INSERT of a hand-written sign-off at the head, made with the library's own functions: its hash, its
    link to the head, its indexed columns and its idempotency key all agree, so only the sign-off checks can
    tell it is wrong."""
    target = ledger.row(signs)
    signoff = {"seq": signs, "entry_hash": signed_hash or (target["entry_hash"] if target else "0" * 64),
               "decision": decision, "by": by, "comment": None, "signed_at": SIGNED_AT}
    digest = signoff_digest(record_id, signoff)
    prepared = Prepared(idempotency_key(record_id, digest, SIGNOFF), record_id, digest,
                        {"verdict": SIGNOFF, "record_id": record_id}, {}, None, None if without_signoff else signoff)
    head = ledger.head()
    _, _, row = chain(prepared, seq=head.seq + 1, prev_hash=head.entry_hash, run_id="forged", recorded_at=SIGNED_AT,
                      previous_seq=signs)
    return (f"INSERT INTO conformance_ledger ({', '.join(row)}) "
            f"VALUES ({', '.join(_literal(v) for v in row.values())})")


FORGED = {
    "a wrong hash": (dict(record_id="r2", signs=2, signed_hash="ab" * 32),
                     "sign-off of entry #2 with hash abababababababab..., but entry #2 hashes to"),
    "another record's verdict": (dict(record_id="r1", signs=2),
                                 "sign-off for record_id 'r1' but names entry #2, a verdict of record_id 'r2'"),
    "a sign-off": (dict(record_id="r2", signs=4), "sign-off of entry #4, which is a sign-off, not a verdict"),
    "a later entry": (dict(record_id="r2", signs=9), "sign-off of entry #9, which does not come before it"),
    "no such decision": (dict(record_id="r2", signs=2, decision="approved"), "decision 'approved', which is not one"),
    "an empty name": (dict(record_id="r2", signs=2, by=" "), "reviewer's name is empty"),
    "an escape in the name": (dict(record_id="r2", signs=2, by="J. Doe\x1b[8m"), "control characters"),
    "no signoff object": (dict(record_id="r2", signs=2, without_signoff=True),
                          "is marked as a sign-off but holds no well-formed signoff object"),
}


@pytest.mark.parametrize("case", sorted(FORGED))
def test_verify_names_a_forged_signoff(ledger_url: str, case: str) -> None:
    forged, words = FORGED[case]
    with _ledger(ledger_url) as ledger:
        ledger.sign_off("r2", decision="confirmed", by="J. Doe")  # entry #4
        assert verify(ledger).ok
        tamper(ledger_url, forge(ledger, **forged))
        report = verify(ledger)
    assert not report.ok and report.bad_seq == 5, report.problem
    assert report.problem is not None and "entry #5" in report.problem and words in report.problem, report.problem


def test_verify_names_a_rewritten_decision(ledger_url: str) -> None:
    with _ledger(ledger_url) as ledger:
        ledger.sign_off("r2", decision="confirmed", by="J. Doe")
        tamper(ledger_url, "UPDATE conformance_ledger SET content = "
                           "replace(content, '\"confirmed\"', '\"false_alarm\"') WHERE seq = 4")
        report = verify(ledger)
    assert not report.ok and report.bad_seq == 4 and "entry #4 was altered" in str(report.problem)


def test_a_signoff_that_says_one_thing_and_is_keyed_as_another_is_named(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "ledger.db")
    with _ledger(url) as ledger:
        statement = forge(ledger, record_id="r2", signs=2)
        # the same row, but its content names another comment than its digest (and so its key) says
        altered = statement.replace('"comment":null', '"comment":"edited"')
        content = altered.split("'{", 1)[1].split("}'", 1)[0]
        good_content = statement.split("'{", 1)[1].split("}'", 1)[0]
        altered = altered.replace(entry_hash("{" + good_content + "}"), entry_hash("{" + content + "}"))
        tamper(url, altered)
        report = verify(ledger)
    assert not report.ok and report.bad_seq == 4 and "record_digest does not match" in str(report.problem)


# -- export -----------------------------------------------------------------------
def test_an_export_carries_the_signoffs_of_its_verdicts_and_verify_export_checks_them(
        ledger_url: str, tmp_path: Path) -> None:
    with _ledger(ledger_url) as ledger:
        ledger.sign_off("r2", decision="confirmed", by="J. Doe")  # #4, of #2
        ledger.sign_off("r1", decision="false_alarm", by="J. Doe")  # #5, of #3
        assert export_parquet(ledger, tmp_path / "flagged.parquet", Filters(verdict="out_of_bounds")) == 2
        assert export_parquet(ledger, tmp_path / "all.parquet") == 5
        report = verify_export(tmp_path / "flagged.parquet")
        assert report.ok and report.count == 2 and report.signoffs == 1
        assert verify_export(tmp_path / "all.parquet", expect_head=ledger.head().entry_hash).signoffs == 2
        tamper(ledger_url, forge(ledger, record_id="r2", signs=2, signed_hash="cd" * 32))
        export_parquet(ledger, tmp_path / "forged.parquet", Filters(record_id="r2"))
    report = verify_export(tmp_path / "forged.parquet")
    assert not report.ok and report.bad_seq == 6 and "hashes to" in str(report.problem)


# -- the library API ----------------------------------------------------------------
def test_the_api_records_and_reads_signoffs(tmp_path: Path) -> None:
    import conformance

    url = sqlite_url(tmp_path / "ledger.db")
    _ledger(url).close()
    done = conformance.signoff("r2", decision="confirmed", by="J. Doe", comment="ticket 4411", ledger=url)
    assert done["added"] is True and (done["seq"], done["signed_seq"], done["head_seq"]) == (4, 2, 4)
    assert done["head_hash"] == done["entry_hash"] and done["record_id"] == "r2" and done["signed_at"]
    assert conformance.signoff("r2", decision="confirmed", by="J. Doe", comment="ticket 4411",
                               ledger=url)["added"] is False
    with Ledger(url, create=False) as ledger:  # an open Ledger is used as it is, and left open
        conformance.signoff("r2", decision="escalated", by="K. Lee", ledger=ledger)
        assert ledger.head().seq == 5
    listed = conformance.signoffs_of("r2", ledger=url)
    assert [(s["seq"], s["signed_seq"], s["decision"], s["by"], s["comment"]) for s in listed] == [
        (4, 2, "confirmed", "J. Doe", "ticket 4411"), (5, 2, "escalated", "K. Lee", None)]
    assert conformance.signoffs_of("r1", ledger=url) == []
    with pytest.raises(EntryNotFoundError, match="no entry for record_id 'nope'"):
        conformance.signoffs_of("nope", ledger=url)
    absent = tmp_path / "absent.db"
    with pytest.raises(SignOffError, match="is empty"):  # checked before any connection: nothing is created
        conformance.signoff("r2", decision="confirmed", by="", ledger=sqlite_url(absent))
    assert not absent.exists()


# -- the command line ----------------------------------------------------------------
def run(*argv: str) -> tuple[int, str, str]:
    import contextlib
    import io

    from conformance.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse's own refusals and --help
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def test_the_signoff_verb_confirms_in_one_line(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "ledger.db")
    _ledger(url).close()
    code, out, err = run("signoff", "r2", "--decision", "confirmed", "--by", "J. Doe", "--comment", "ok",
                         "--ledger", url)
    head = Ledger(url, create=False).head()
    assert code == 0 and err == "" and len(out.strip().splitlines()) == 1
    assert "verdict entry #2" in out and "recorded as entry #4" in out and head.entry_hash in out
    code, out, _ = run("signoff", "r2", "--decision", "confirmed", "--by", "J. Doe", "--comment", "ok",
                       "--ledger", url)
    assert code == 0 and "already recorded as entry #4; nothing added" in out
    code, out, _ = run("signoff", "r2", "--decision", "confirmed", "--by", "J. Doe", "--comment", "ok",
                       "--ledger", url, "--format", "json")
    assert code == 0 and json.loads(out)["added"] is False and json.loads(out)["seq"] == 4
    assert Ledger(url, create=False).head() == head


REFUSED = {
    "an unknown record": (["nope"], "no entry for record_id 'nope'"),
    "a sign-off's seq": (["r2", "--seq", "4"], "entry #4 of record_id 'r2' is a sign-off, not a verdict"),
    "another record's seq": (["r2", "--seq", "1"], "record_id 'r2' has verdict entries #2, not #1"),
    "seq 0": (["r2", "--seq", "0"], "seq must be a positive integer"),
    "a bad decision": (["r2", "--decision", "approved"], "invalid choice: 'approved'"),
    "an empty name": (["r2", "--by", "   "], "name (by) is empty"),
    "an escape in the name": (["r2", "--by", "J. Doe\x1b]0;x\x07"], "control characters (\\x07, \\x1b)"),
    "a line break in the name": (["r2", "--by", "J. Doe\nK. Lee"], "control characters (\\n)"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_the_signoff_verb_refuses_with_exit_2_and_appends_nothing(tmp_path: Path, case: str) -> None:
    url = sqlite_url(tmp_path / "ledger.db")
    with _ledger(url) as ledger:
        ledger.sign_off("r2", decision="confirmed", by="J. Doe")  # entry #4
        head = ledger.head()
    argv, words = REFUSED[case]
    options = {"--decision": "false_alarm", "--by": "K. Lee"}
    for name, value in zip(argv[1::2], argv[2::2]):
        options[name] = value
    code, out, err = run("signoff", argv[0], *[x for item in options.items() for x in item], "--ledger", url)
    assert code == 2 and out == "" and words in err and "Traceback" not in err, err
    assert "\x1b" not in err and "\x07" not in err  # a refused name is not echoed raw either
    assert Ledger(url, create=False).head() == head


def test_signoff_help_teaches_the_decisions() -> None:
    code, out, _ = run("signoff", "--help")
    assert code == 0
    for words in ("confirmed", "false_alarm", "escalated", "never changes", "--seq N", "examples:",
                  "conformance verdicts --record-id", "exit codes:"):
        assert words in out, words


def test_verdicts_lists_verdicts_only_each_with_its_signoffs(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "ledger.db")
    with _ledger(url) as ledger:
        ledger.sign_off("r2", decision="confirmed", by="J. Doe", comment="see \x1b[2J ticket")  # #4
        ledger.sign_off("r2", decision="escalated", by="K. Lee")  # #5
        ledger.sign_off("r1", decision="false_alarm", by="K. Lee")  # #6, of #3
    code, out, _ = run("verdicts", "--ledger", url)
    assert code == 0 and "3 entries, 2 signed off" in out and "\x1b" not in out
    table = out.splitlines()
    assert table[0].split()[-1] == "signoff" and table[2].split()[-1] == "escalated"  # the latest decision
    code, out, _ = run("verdicts", "--ledger", url, "--record-id", "r2", "--format", "json")
    (verdict,) = json.loads(out)
    assert verdict["seq"] == 2 and verdict["verdict"] == "out_of_bounds" and "\x1b" not in out
    assert [(s["seq"], s["decision"], s["by"], s["comment"]) for s in verdict["signoffs"]] == [
        (4, "confirmed", "J. Doe", "see \x1b[2J ticket"), (5, "escalated", "K. Lee", None)]
    assert set(verdict["signoffs"][0]) == {"seq", "decision", "by", "comment", "signed_at"}
    code, out, _ = run("verdicts", "--ledger", url, "--format", "json")
    assert [(v["seq"], v["verdict"], len(v["signoffs"])) for v in json.loads(out)] == [
        (1, "within_bounds", 0), (2, "out_of_bounds", 2), (3, "within_bounds", 1)]
    seqs = {}
    for reviewed in ("yes", "no"):
        code, out, _ = run("verdicts", "--ledger", url, "--reviewed", reviewed, "--format", "json")
        seqs[reviewed] = [v["seq"] for v in json.loads(out)]
    assert seqs == {"yes": [2, 3], "no": [1]}
    code, out, _ = run("verdicts", "--ledger", url, "--reviewed", "yes", "--limit", "1", "--format", "json")
    assert [v["seq"] for v in json.loads(out)] == [2]
    code, out, _ = run("verdicts", "--ledger", url, "--format", "csv")
    assert out.splitlines()[0].endswith(",signoff") and out.splitlines()[3].endswith(",false_alarm")
    code, _, err = run("verdicts", "--ledger", url, "--verdict", "out_of_bounds", "--export",
                       str(tmp_path / "flagged.parquet"))
    assert code == 0 and "3 entries exported" in err  # the verdict and its two sign-offs
    code, out, _ = run("ledger", "verify", "--file", str(tmp_path / "flagged.parquet"))
    assert code == 0 and "(2 of them sign-offs)" in out


def test_ledger_verify_names_a_forged_signoff(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "ledger.db")
    with _ledger(url) as ledger:
        ledger.sign_off("r2", decision="confirmed", by="J. Doe")
        code, out, _ = run("ledger", "verify", "--ledger", url)
        assert code == 0 and "intact: 4 entries (1 of them sign-offs)" in out
        tamper(url, forge(ledger, record_id="r2", signs=2, signed_hash="ef" * 32))
    code, out, _ = run("ledger", "verify", "--ledger", url)
    assert code == 1 and "NOT intact: entry #5 is a sign-off of entry #2 with hash efefefefefefefef" in out


def test_reconstruct_does_not_take_a_signoff_for_a_verdict(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "ledger.db")
    with Ledger(url) as ledger:
        ledger.append([make_verdict("r9", version=None)])  # no_baseline: nothing to re-score, no registry needed
        ledger.sign_off("r9", decision="escalated", by="J. Doe")
    code, out, _ = run("reconstruct", "r9", "--ledger", url, "--format", "json")
    assert code == 0 and json.loads(out)["seq"] == 1 and json.loads(out)["status"] == "nothing_to_rescore"
    code, _, err = run("reconstruct", "r9", "--seq", "2", "--ledger", url)
    assert code == 2 and "entry #2 of record_id 'r9' is a sign-off, not a verdict" in err
