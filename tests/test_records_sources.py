"""Records from memory read exactly as the same records from a file: one validation for every door."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from conformance.errors import InputFileError
from conformance.records import as_record_set, read_records
from tests.conftest import EXAMPLE, read_jsonl

AUDITED = EXAMPLE / "audited.jsonl"


def _valid_rows() -> list[dict]:
    return [r for r in read_jsonl(AUDITED) if not (r.get("metadata") or {}).get("planted", "").startswith("invalid")]


def _as_tuples(record_set) -> list[tuple]:
    return [(r.row, r.record_id, r.model_version, r.input_class, r.input, r.output, dict(r.extras))
            for r in record_set.records]


def test_a_frame_a_table_and_a_list_read_as_the_file(tmp_path: Path) -> None:
    rows = _valid_rows()
    path = tmp_path / "valid.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    from_file = read_records(path)
    assert len(from_file.records) == len(rows) and not from_file.invalid
    for source in (rows, iter(rows), pd.DataFrame(rows), pa.Table.from_pylist(rows), str(path), path):
        got = as_record_set(source)
        assert _as_tuples(got) == _as_tuples(from_file), type(source).__name__


def test_missing_values_in_a_frame_are_absent_fields_not_text() -> None:
    frame = pd.DataFrame([
        {"record_id": "a", "model_version": "m", "input_class": "c", "input": "q", "output": "x", "intent": "help"},
        {"record_id": "b", "model_version": "m", "input_class": "c", "input": "q", "output": "y", "intent": None},
    ])
    frame.loc[1, "intent"] = float("nan")
    records = as_record_set(frame).records
    assert records[0].extras == {"intent": "help"}
    assert records[1].extras == {}


def test_bad_rows_in_memory_become_invalid_rows_with_row_and_field() -> None:
    rows = [
        {"record_id": "a", "model_version": "m", "input_class": "c", "input": "q", "output": "x"},
        {"record_id": "b", "model_version": "m", "input_class": "c", "input": "q", "output": 123},
        "not a mapping",
        {"record_id": "a", "model_version": "m", "input_class": "c", "input": "q", "output": "dup"},
    ]
    rs = as_record_set(rows)
    assert [r.record_id for r in rs.records] == ["a"]
    reasons = {bad.row: bad.reason for bad in rs.invalid}
    assert "row 2" in reasons[2] and "'output'" in reasons[2] and "must be a string" in reasons[2]
    assert "expected a mapping" in reasons[3]
    assert "duplicate record_id" in reasons[4]


@pytest.mark.parametrize("source", [
    pd.DataFrame([{"record_id": "a", "input": "q", "output": "x"}]),
    pa.Table.from_pylist([{"record_id": "a", "input": "q", "output": "x"}]),
    [{"record_id": "a", "input": "q", "output": "x"}],
])
def test_a_required_column_absent_everywhere_is_one_clear_error(source) -> None:
    with pytest.raises(InputFileError, match="model_version, input_class"):
        as_record_set(source)


@pytest.mark.parametrize("source", [[], pd.DataFrame(columns=["record_id", "model_version", "input_class",
                                                                "input", "output"])])
def test_no_records_is_an_error(source) -> None:
    with pytest.raises(InputFileError, match="contains no records"):
        as_record_set(source)


@pytest.mark.parametrize("source", [b"bytes", {"record_id": "a"}, 42])
def test_other_kinds_are_refused_with_what_is_accepted(source) -> None:
    with pytest.raises(TypeError, match="a path, a pandas DataFrame, a pyarrow Table or an iterable of mappings"):
        as_record_set(source)
