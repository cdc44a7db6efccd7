"""`score` refuses, before any work, output files that would overwrite an input or cannot be written."""

from __future__ import annotations

import hashlib
import contextlib
import json
import io
import os
from pathlib import Path

import pytest

from conformance.cli import main


def _score(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["score", *argv, "--no-progress"])
    return code, err.getvalue()


@pytest.fixture()
def audited(tmp_path: Path) -> Path:
    path = tmp_path / "audited.jsonl"
    path.write_text('{"record_id": "a", "model_version": "m", "input_class": "c", "output": "o"}\n', encoding="utf-8")
    return path


def test_an_output_that_is_the_input_is_refused_and_the_input_kept(audited: Path, tmp_path: Path) -> None:
    before = audited.read_bytes()
    code, err = _score(str(audited), "--out", str(audited))
    assert code == 2 and "is the input" in err and "--out" in err and "Traceback" not in err
    code, err = _score(str(audited), "--out", str(tmp_path / "v.jsonl"), "--summary", str(audited))
    assert code == 2 and "is the input" in err and "--summary" in err
    # the same file under another spelling
    code, err = _score(str(audited), "--out", str(tmp_path / "." / "audited.jsonl"))
    assert code == 2 and "is the input" in err
    assert audited.read_bytes() == before
    assert not (tmp_path / "v.jsonl").exists()


def test_out_and_summary_must_differ_and_be_files(audited: Path, tmp_path: Path) -> None:
    code, err = _score(str(audited), "--out", str(tmp_path / "v.jsonl"), "--summary", str(tmp_path / "v.jsonl"))
    assert code == 2 and "both --out and --summary" in err
    (tmp_path / "folder.jsonl").mkdir()
    code, err = _score(str(audited), "--out", str(tmp_path / "folder.jsonl"))
    assert code == 2 and "is a folder" in err


def test_an_output_inside_an_input_folder_is_refused(tmp_path: Path) -> None:
    import pandas as pd

    folder = tmp_path / "parts"
    folder.mkdir()
    pd.DataFrame([{"record_id": "a", "model_version": "m", "input_class": "c", "output": "o"}]).to_parquet(
        folder / "part-0.parquet")
    code, err = _score(str(folder), "--out", str(folder / "verdicts.parquet"))
    assert code == 2 and "is the input" in err
    assert sorted(p.name for p in folder.iterdir()) == ["part-0.parquet"]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write into any folder")
def test_an_unwritable_folder_is_refused_before_scoring(audited: Path, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        code, err = _score(str(audited), "--out", str(locked / "v.jsonl"))
    finally:
        locked.chmod(0o755)
    assert code == 2 and "not writable" in err


def test_a_carriage_return_inside_a_field_stays_in_its_field(tmp_path: Path) -> None:
    """RFC 4180: a CR (or LF) inside a record id or an output is quoted; the file has one row per verdict."""
    import csv

    from conformance.verdict import Verdict, write_verdicts
    from conformance.verdict_files import ColumnPlan, VerdictWriter

    verdicts = [Verdict(row=i + 1, record_id=rid, model_version="m", input_class="c", verdict="invalid",
                        reason="r", record={"record_id": rid, "output": f"line\r\nbreak {i}, \"quoted\""})
                for i, rid in enumerate(["cr\rid", "lf\nid", "plain"])]
    whole = tmp_path / "whole.csv"
    write_verdicts(verdicts, whole)
    plan = ColumnPlan(fdr=False)
    plan.add(verdicts)
    streamed = VerdictWriter(tmp_path / "streamed.csv", plan)
    streamed.write(verdicts)
    streamed.commit()
    assert whole.read_bytes() == (tmp_path / "streamed.csv").read_bytes()
    with open(whole, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["record_id"] for r in rows] == ["cr\rid", "lf\nid", "plain"]
    assert rows[0]["output"] == "line\r\nbreak 0, \"quoted\""


def _cli(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(list(argv))
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, err.getvalue()


@pytest.mark.parametrize("name", ["   ", "Ev\x1b[31mil", "Two\nLines", "Zero\u200bWidth"])
def test_an_approver_name_is_checked_before_anything_is_built(audited: Path, name: str) -> None:
    code, err = _cli("build", str(audited), "--approve", "--by", name)
    assert code == 2 and "the approver's name" in err and "Traceback" not in err
    assert "\x1b" not in err  # shown escaped, never raw to the terminal
    code, err = _cli("approve", "--model-version", "m", "--input-class", "c", "--by", name)
    assert code == 2 and "the approver's name" in err


def test_an_unexpected_error_exits_2_without_a_traceback_unless_debug(audited: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # A fault no input can provoke (a bug): the one place this suite stands in for the real code.
    from conformance import api

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("something nobody foresaw")

    monkeypatch.setattr(api, "score", broken)
    code, err = _cli("score", str(audited), "--out", str(tmp_path / "v.jsonl"))
    assert code == 2 and "unexpected error: RuntimeError: something nobody foresaw" in err
    assert "--debug" in err and "Traceback" not in err
    with pytest.raises(RuntimeError, match="nobody foresaw"):
        main(["--debug", "score", str(audited), "--out", str(tmp_path / "v.jsonl")])


def test_an_overlong_output_is_an_invalid_record_not_a_crash(tmp_path: Path) -> None:
    """A record whose output is over --max-output-chars is invalid, saying so; the other records still run."""
    from conformance.record_stream import stream_records

    path = tmp_path / "audited.jsonl"
    rows = [{"record_id": "long", "model_version": "m", "input_class": "c", "input": "q", "output": "x" * 5001},
            {"record_id": "ok", "model_version": "m", "input_class": "c", "input": "q", "output": "fine"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    got = [row for chunk in stream_records(path, max_chars=5000) for row in chunk]
    assert [type(r).__name__ for r in got] == ["InvalidRow", "Record"]
    assert "is 5,001 characters long, over the limit of 5,000" in got[0].reason
    assert [type(r).__name__ for chunk in stream_records(path, max_chars=None) for r in chunk] == ["Record"] * 2
    code, err = _cli("score", str(path), "--out", str(tmp_path / "v.jsonl"), "--max-output-chars", "0")
    assert code == 2 and "--max-output-chars" in err


def test_nan_and_infinity_are_not_json(tmp_path: Path) -> None:
    from conformance.record_stream import stream_records

    path = tmp_path / "audited.jsonl"
    base = '"model_version": "m", "input_class": "c", "input": "q", "output": "o"'
    path.write_text(f'{{"record_id": "a", {base}, "metadata": {{"x": NaN}}}}\n'
                    f'{{"record_id": "b", {base}, "timestamp": -Infinity}}\n'
                    f'{{"record_id": "c", {base}}}\n', encoding="utf-8")
    got = [row for chunk in stream_records(path) for row in chunk]
    assert [type(r).__name__ for r in got] == ["InvalidRow", "InvalidRow", "Record"]
    assert "NaN is not a JSON number" in got[0].reason and "-Infinity is not a JSON number" in got[1].reason


def test_tables_printed_to_a_terminal_escape_control_characters() -> None:
    from conformance.cli.table import table

    text = table([{"model_version": "evil\x1b[2J\x1b[31mred", "n": 1}], ("model_version", "n"))
    assert "\x1b" not in text and "\\x1b[2J" in text


def test_a_line_that_is_not_utf8_is_its_rows_problem_with_its_row_number(tmp_path: Path) -> None:
    from conformance.record_stream import stream_records

    path = tmp_path / "audited.jsonl"
    good = '{"record_id": "%s", "model_version": "m", "input_class": "c", "input": "q", "output": "%s"}\n'
    path.write_bytes((good % ("a", "fine")).encode() + (good % ("b", "caf\xe9")).encode("latin-1")
                     + (good % ("c", "café")).encode())
    got = [row for chunk in stream_records(path) for row in chunk]
    assert [type(r).__name__ for r in got] == ["Record", "InvalidRow", "Record"]
    assert got[1].row == 2 and "not UTF-8 text: byte 0xe9" in got[1].reason and got[2].output == "café"


def test_rows_that_are_no_record_keep_their_line_and_never_collapse(tmp_path: Path) -> None:
    """Two broken lines are two ledger entries, each holding its line and row; a later file with another broken
    line adds a third (they were all one entry with an empty record)."""
    import conformance
    from conformance.ledger import Ledger

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    first = tmp_path / "first.jsonl"
    first.write_text('{"record_id": oops}\n[1, 2]\n', encoding="utf-8")
    result = conformance.score(first, out=tmp_path / "v1.jsonl", ledger=url, progress=False)
    assert result.counts["invalid"] == 2 and result.ledger is not None and result.ledger.added == 2
    second = tmp_path / "second.jsonl"
    second.write_text('{"record_id": "x", broken\n', encoding="utf-8")
    assert conformance.score(second, out=tmp_path / "v2.jsonl", ledger=url, progress=False).ledger.added == 1
    with Ledger(url, create=False) as book:
        records = [e.content["record"] for e in book.query()]
    assert [r["raw_line"] for r in records] == ['{"record_id": oops}', "[1, 2]", '{"record_id": "x", broken']
    assert [r["source_row"] for r in records] == [1, 2, 1]
    assert all(len(r["raw_line_sha256"]) == 64 for r in records)
    # and the file each came from, by the SHA-256 of its bytes
    digests = [hashlib.sha256(f.read_bytes()).hexdigest() for f in (first, first, second)]
    assert [r["source_sha256"] for r in records] == digests
    rows = [json.loads(line) for line in (tmp_path / "v1.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows[0]["raw_line"] == '{"record_id": oops}' and "not valid JSON" in rows[0]["reason"]


def test_cells_whose_registry_names_collide_are_refused_before_anything_is_registered(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the embedded store would be created here, had anything been registered
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path = tmp_path / "approved.jsonl"
    cells = [("a.b", "c"), ("a", "b.c"), ("fine", "c")]
    path.write_text("".join(json.dumps({"record_id": f"{i}-{mv}", "model_version": mv, "input_class": ic,
                                        "input": "q", "output": "o", "prompt_id": str(i)}) + "\n"
                            for i, (mv, ic) in enumerate(cells)), encoding="utf-8")
    code, err = _cli("build", str(path), "--approve", "--by", "A. Reviewer")
    assert code == 2 and "registry names collide" in err and "Nothing was built or registered" in err
    assert "conformance.a.b.c would be the name of (model_version 'a.b', input_class 'c') and (model_version " \
           "'a', input_class 'b.c')" in err
    assert not (tmp_path / "conformance_store").exists()  # refused before the registry was touched


def test_cells_that_differ_only_in_characters_a_name_cannot_hold_keep_names_of_their_own() -> None:
    from conformance.registry.mlflow_registry import baseline_name, legacy_baseline_name

    pairs = [("a/b", "c"), ("a-b", "c"), ("モデル", "c"), ("模型", "c"), ("", "c"), ("bot", "c"), ("bot ", "c"),
             ("bot\u200b", "c")]
    names = [baseline_name(*pair) for pair in pairs]
    assert len(set(names)) == len(pairs), names
    assert baseline_name("a-b", "c") == "conformance.a-b.c"  # a name that needs no change keeps its plain form
    assert baseline_name("a/b", "c").startswith("conformance.a-b.c-") and len(baseline_name("a/b", "c")) == 26
    assert baseline_name("モデル", "c") == baseline_name("モデル", "c")  # stable: a cell keeps its name
    assert legacy_baseline_name("モデル", "c") == legacy_baseline_name("模型", "c") == "conformance.x.c"


def test_csv_cells_a_spreadsheet_would_run_are_neutralised_unless_asked(tmp_path: Path) -> None:
    import csv

    from conformance.verdict import Verdict, write_verdicts

    texts = ['=HYPERLINK("http://evil.example","click")', "+cmd|' /C calc'!A0", "-2+3", "@SUM(1+1)", "\tx", "plain"]
    verdicts = [Verdict(row=i + 1, record_id=f"r{i}", model_version="m", input_class="c", verdict="within_bounds",
                        reason="r", score=-1.5, record={"record_id": f"r{i}", "output": text})
                for i, text in enumerate(texts)]
    for raw in (False, True):
        path = tmp_path / f"v-{raw}.csv"
        write_verdicts(verdicts, path, raw_csv=raw)
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        expected = texts if raw else [("'" + t if t != "plain" else t) for t in texts]
        assert [r["output"] for r in rows] == expected
        assert {r["score"] for r in rows} == {"-1.5"}  # a number is never prefixed
    write_verdicts(verdicts, tmp_path / "v.jsonl")  # JSON Lines keeps every text as it was
    assert [json.loads(line)["output"] for line in (tmp_path / "v.jsonl").read_text().splitlines()] == texts
