"""Hypothesis-driven tests of the record readers and the ledger's canonical form: any bytes, any JSON.

Whatever a file holds, reading it never raises anything but the documented ``InputFileError`` for the file
as a whole, gives exactly one row (a record or an invalid row) per non-blank line, numbered in order, and
a ledger built from the verdicts of those rows verifies with one entry per row.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conformance.errors import InputFileError
from conformance.ledger.canonical import canonical_json, plain
from conformance.record_stream import stream_records
from conformance.records import InvalidRow, Record

FIELDS = ("record_id", "model_version", "input_class", "input", "output", "prompt_id", "metadata")

#: A JSON Lines line: a valid record, a near-miss (a field wrong or missing), or arbitrary bytes.
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
                           max_leaves=8)
records = st.fixed_dictionaries({}, optional={name: json_values for name in FIELDS})
lines = st.one_of(
    records.map(lambda r: json.dumps(r, allow_nan=True).encode("utf-8")),
    st.binary(max_size=60),
    st.text(max_size=60).map(lambda t: t.encode("utf-8", "surrogatepass")),
)
#: Lines that can never be a valid record (no output field, or not a record at all): scoring them needs no
#: registry and no embedder, so the command line can be fuzzed in the fast tier.
broken_lines = st.one_of(
    st.fixed_dictionaries({}, optional={name: json_values for name in FIELDS if name != "output"}).map(
        lambda r: json.dumps(r, allow_nan=True).encode("utf-8")),
    st.binary(max_size=60).filter(lambda b: b"output" not in b),
)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _file(tmp_path: Path, chunks: list[bytes], name: str) -> Path:
    path = tmp_path / name
    # a line holds no line break of its own: one chunk, one line
    path.write_bytes(b"".join(c.replace(b"\n", b" ").replace(b"\r", b" ") + b"\n" for c in chunks))
    return path


@SETTINGS
@given(chunks=st.lists(lines, min_size=1, max_size=12))
def test_any_jsonl_bytes_give_one_row_per_line_or_a_whole_file_error(tmp_path: Path, chunks: list[bytes]) -> None:
    path = _file(tmp_path, chunks, "fuzz.jsonl")
    expected = sum(1 for c in chunks if c.replace(b"\n", b" ").replace(b"\r", b" ").strip())
    try:
        rows = [row for chunk in stream_records(path, chunk_size=3) for row in chunk]
    except InputFileError as exc:
        # the whole-file problems of JSON Lines: no rows at all, or a required field that no row has
        assert "contains no records" in str(exc) or "appear in no row" in str(exc), exc
        assert expected == 0 or "appear in no row" in str(exc)
        return
    assert len(rows) == expected
    assert [r.row for r in rows] == list(range(1, expected + 1))
    assert all(isinstance(r, (Record, InvalidRow)) for r in rows)
    for r in rows:
        if isinstance(r, InvalidRow):
            assert r.reason  # every invalid row says why
        else:
            assert r.output.strip() and r.input.strip() and r.record_id.strip()


@SETTINGS
@given(chunks=st.lists(broken_lines, min_size=1, max_size=8))
def test_any_broken_lines_score_to_exit_1_with_one_verdict_and_one_entry_per_row(tmp_path: Path,
                                                                                     chunks: list[bytes]) -> None:
    """Through the command line: every row gets one verdict and one ledger entry (identical broken lines too),
    the chain verifies, and the exit code is 1, never a traceback."""
    import contextlib
    import io
    import uuid

    from conformance.cli import main
    from conformance.ledger import Ledger, verify

    work = tmp_path / uuid.uuid4().hex
    work.mkdir()
    # First, a row with every required field that is still invalid (an empty record_id), so that the file as a
    # whole is a file of records and each broken line below is judged on its own.
    anchor = b'{"record_id": " ", "model_version": "m", "input_class": "c", "input": "q", "output": "o"}'
    chunks = [anchor, *chunks]
    path = _file(work, chunks, "audited.jsonl")
    url = f"sqlite:///{work / 'ledger.db'}"
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            code = main(["score", str(path), "--out", str(work / "v.jsonl"), "--ledger", url, "--no-progress"])
        except SystemExit as exc:
            code = int(exc.code or 0)
    assert code == 1 and "Traceback" not in err.getvalue(), err.getvalue()
    # JSON Lines are separated by LF only: a text may hold U+0085 or U+2028, which str.splitlines would split on
    verdicts = [json.loads(v) for v in (work / "v.jsonl").read_text(encoding="utf-8").split("\n") if v]
    rows = sum(1 for c in chunks if c.replace(b"\n", b" ").replace(b"\r", b" ").strip())
    assert len(verdicts) == rows and {v["verdict"] for v in verdicts} == {"invalid"}
    with Ledger(url, create=False) as book:
        report = verify(book)
        assert report.ok, report.problem
        assert report.count == rows


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


@settings(max_examples=300, deadline=None)
@given(value=json_values)
def test_the_canonical_form_is_deterministic_and_reads_back_as_plain_data(value: object) -> None:
    text = canonical_json(value)
    assert text == canonical_json(json.loads(json.dumps(value, allow_nan=True)))  # the same whatever the path
    back = json.loads(text)  # strict JSON: no NaN or Infinity in it
    assert _same(back, plain(value))
    assert canonical_json(back) == text

    def no_constant(name: str) -> object:
        raise AssertionError(f"canonical JSON holds the bare constant {name}")

    json.loads(text, parse_constant=no_constant)


@pytest.mark.parametrize("payload", [b"\xff\xfe\x00", b"{\"a\": 1e999}", b"\x00" * 10, b"[" * 500 + b"]" * 500])
def test_known_hostile_lines(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"record_id": "a", "model_version": "m", "input_class": "c", "input": "q", "output": "o"}\n'
                     + payload + b"\n")
    rows = [row for chunk in stream_records(path) for row in chunk]
    assert len(rows) == 2 and isinstance(rows[0], Record) and isinstance(rows[1], InvalidRow)


# -- CSV and Parquet ---------------------------------------------------------------------------------------
#: A cell of a table: text of any kind (quotes, commas, line breaks, formula-leading characters), or nothing.
cells = st.one_of(st.none(), st.text(max_size=30), st.sampled_from(["", " ", '"', "a,b", "x\r\ny", "=1+1", "\n"]))
REQUIRED = ("record_id", "model_version", "input_class", "input", "output")


def _table(rows: list[dict[str, str | None]]) -> object:
    import pandas as pd

    return pd.DataFrame(rows, columns=list(REQUIRED) + ["prompt_id"], dtype=object)


def _read_rows(path: Path) -> list[Record | InvalidRow]:
    return [row for chunk in stream_records(path, chunk_size=3) for row in chunk]


def _check_rows(rows: list[Record | InvalidRow], table: list[dict[str, str | None]]) -> None:
    """One row read per row written, numbered in order; a record exactly when every required cell holds text,
    and then with that text unchanged."""
    assert [r.row for r in rows] == list(range(1, len(table) + 1))
    for got, want in zip(rows, table):
        if isinstance(got, InvalidRow):
            assert got.reason
            continue
        assert all(want[name] is not None and str(want[name]).strip() for name in REQUIRED)
        assert (got.record_id, got.input, got.output) == (want["record_id"], want["input"], want["output"])


@SETTINGS
@given(table=st.lists(st.fixed_dictionaries({name: cells for name in (*REQUIRED, "prompt_id")}),
                      min_size=1, max_size=8))
def test_any_csv_table_reads_back_one_row_per_row_with_its_text(tmp_path: Path,
                                                                table: list[dict[str, str | None]]) -> None:
    path = tmp_path / "fuzz.csv"
    # RFC 4180 rows (CRLF): a field holding a lone CR is then quoted; with LF rows it is not, and any reader
    # takes that CR for the end of a row
    _table(table).to_csv(path, index=False, lineterminator="\r\n")  # type: ignore[attr-defined]
    _check_rows(_read_rows(path), table)


@SETTINGS
@given(table=st.lists(st.fixed_dictionaries({name: cells for name in (*REQUIRED, "prompt_id")}),
                      min_size=1, max_size=8))
def test_any_parquet_table_reads_back_one_row_per_row_with_its_text(tmp_path: Path,
                                                                    table: list[dict[str, str | None]]) -> None:
    path = tmp_path / "fuzz.parquet"
    _table(table).to_parquet(path, index=False)  # type: ignore[attr-defined]
    _check_rows(_read_rows(path), table)


@SETTINGS
@given(data=st.binary(max_size=400))
def test_any_bytes_as_csv_give_numbered_rows_or_a_whole_file_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzz.csv"
    path.write_bytes(b"record_id,model_version,input_class,input,output\n" + data)
    try:
        rows = _read_rows(path)
    except InputFileError as exc:
        assert str(exc).startswith(str(path)), exc  # the file is named
        return
    assert [r.row for r in rows] == list(range(1, len(rows) + 1))
    assert all(isinstance(r, Record) or r.reason for r in rows)


@SETTINGS
@given(data=st.binary(max_size=400), keep=st.integers(min_value=0, max_value=2000))
def test_any_bytes_as_parquet_give_rows_or_a_whole_file_error(tmp_path: Path, data: bytes, keep: int) -> None:
    """Arbitrary bytes, and a real Parquet file cut short or with bytes replaced: the file is named, never a crash."""
    import pandas as pd

    good = tmp_path / "good.parquet"
    pd.DataFrame([{name: f"{name}-1" for name in REQUIRED}]).to_parquet(good, index=False)
    whole = good.read_bytes()
    for variant in (data, whole[:keep] + data, whole[:keep] + data + whole[keep + len(data):]):
        path = tmp_path / "fuzz.parquet"
        path.write_bytes(variant)
        try:
            rows = _read_rows(path)
        except InputFileError as exc:
            assert str(path) in str(exc), exc
            continue
        assert [r.row for r in rows] == list(range(1, len(rows) + 1))
