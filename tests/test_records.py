"""Reading records: formats, per-row problems, whole-file errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from conformance.errors import InputFileError
from conformance.records import InvalidRow, Record, read_records

GOOD = {"record_id": "r1", "model_version": "m1", "input_class": "c1", "input": "hi", "output": "hello"}


def _jsonl(tmp_path: Path, rows: list, name: str = "in.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_jsonl_good_and_bad_rows_keep_order(tmp_path: Path) -> None:
    rows = [
        GOOD,
        {**GOOD, "record_id": "r2", "output": ""},
        {**GOOD, "record_id": "r3", "output": 123},
        "{not json",
        {k: v for k, v in GOOD.items() if k != "output"} | {"record_id": "r5"},
        {**GOOD, "record_id": "r6", "sampling": {"temperature": 0.7}, "metadata": {"a": 1}},
        {**GOOD},  # duplicate id r1
    ]
    rs = read_records(_jsonl(tmp_path, rows))
    assert [r.row for r in rs.rows] == [1, 2, 3, 4, 5, 6, 7]
    kinds = [type(r).__name__ for r in rs.rows]
    assert kinds == ["Record", "InvalidRow", "InvalidRow", "InvalidRow", "InvalidRow", "Record", "InvalidRow"]
    by_row = {r.row: r for r in rs.rows}
    assert isinstance(by_row[2], InvalidRow) and by_row[2].problems[0].code == "empty"
    assert by_row[3].problems[0].code == "wrong_type" and "int" in by_row[3].reason
    assert by_row[4].problems[0].code == "bad_json"
    assert by_row[5].problems[0].field == "output" and by_row[5].problems[0].code == "missing"
    assert "row 5" in by_row[5].reason and "'r5'" in by_row[5].reason
    assert by_row[7].problems[0].code == "duplicate" and "row 1" in by_row[7].reason
    rec = by_row[6]
    assert isinstance(rec, Record) and rec.extras["sampling"] == {"temperature": 0.7}


def test_csv_reads_everything_as_text(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    rows = [GOOD, {**GOOD, "record_id": "r2", "output": ""}, {**GOOD, "record_id": "007", "output": "42"}]
    pd.DataFrame(rows).to_csv(path, index=False)
    rs = read_records(path)
    assert [type(r).__name__ for r in rs.rows] == ["Record", "InvalidRow", "Record"]
    assert rs.rows[2].record_id == "007" and rs.rows[2].output == "42"  # not coerced to numbers
    assert rs.rows[1].problems[0].code == "missing"


def test_parquet_and_gzip(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    pd.DataFrame([GOOD, {**GOOD, "record_id": "r2", "output": None}]).to_parquet(path)
    rs = read_records(path)
    assert len(rs.records) == 1 and rs.invalid[0].problems[0].code == "missing"
    gz = tmp_path / "in.jsonl.gz"
    with gzip.open(gz, "wt") as handle:
        handle.write(json.dumps(GOOD) + "\n")
    assert read_records(gz).records[0].record_id == "r1"


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_missing_required_column_is_a_file_error(tmp_path: Path, fmt: str) -> None:
    frame = pd.DataFrame([{k: v for k, v in GOOD.items() if k != "input_class"}])
    path = tmp_path / f"in.{fmt}"
    frame.to_csv(path, index=False) if fmt == "csv" else frame.to_parquet(path)
    with pytest.raises(InputFileError, match="input_class"):
        read_records(path)


def test_jsonl_column_absent_from_every_row(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="output"):
        read_records(_jsonl(tmp_path, [{k: v for k, v in GOOD.items() if k != "output"}]))


@pytest.mark.parametrize("name", ["in.txt", "missing.jsonl"])
def test_unreadable_files(tmp_path: Path, name: str) -> None:
    (tmp_path / "in.txt").write_text("x")
    with pytest.raises(InputFileError):
        read_records(tmp_path / name)


def test_corrupt_parquet(tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(InputFileError, match="cannot be read"):
        read_records(path)


def test_conversation_id_groups_the_turns_of_a_conversation(tmp_path: Path) -> None:
    rows = [
        {**GOOD, "record_id": "t1", "prompt_id": "q81:turn1", "conversation_id": "q81"},
        {**GOOD, "record_id": "t2", "prompt_id": "q81:turn2", "conversation_id": "q81", "input": "Rewrite it."},
        {**GOOD, "record_id": "t3", "prompt_id": "q82:turn1"},
        {**GOOD, "record_id": "t4", "input": "no ids at all"},
        {**GOOD, "record_id": "t5", "conversation_id": {"nested": "no"}},
    ]
    got = read_records(_jsonl(tmp_path, rows)).rows
    assert [r.prompt_key for r in got[:4]] == ["conversation:q81", "conversation:q81", "q82:turn1",  # type: ignore[union-attr]
                                               "input:no ids at all"]
    bad = got[4]
    assert isinstance(bad, InvalidRow)
    assert [(p.row, p.field, p.code) for p in bad.problems] == [(5, "conversation_id", "wrong_type")]


def test_the_split_keeps_a_conversation_on_one_side() -> None:
    from conformance.baseline.fit import split_by_prompt

    records = [Record(row=i + 1, record_id=f"r{i}", model_version="m", input_class="c",
                      input=f"turn {i % 2} of {i // 2}", output="o",
                      extras={"prompt_id": f"q{i // 2}:turn{i % 2}", "conversation_id": f"q{i // 2}"})
               for i in range(80)]
    for seed in range(5):
        split = split_by_prompt(records, calibration_fraction=0.5, seed=seed)
        fit = {r.extras["conversation_id"] for r in split.fit}
        cal = {r.extras["conversation_id"] for r in split.calibration}
        assert not fit & cal and len(fit | cal) == 40
