"""The ledger's command-line verbs on synthetic ledgers (no embedder): exit codes and output."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from conformance.cli import main
from conformance.ledger import Ledger
from tests.ledger_support import make_verdict, sqlite_url, tamper


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def _ledger(tmp_path: Path) -> str:
    url = sqlite_url(tmp_path / "ledger.db")
    with Ledger(url) as ledger:
        ledger.append([make_verdict("r1"), make_verdict("r2", verdict="out_of_bounds"),
                       make_verdict("r3\x1b[2J", output="\x1b]0;owned\x07 text")])
    return url


def test_verify_head_and_tamper_exit_codes(tmp_path: Path) -> None:
    url = _ledger(tmp_path)
    code, out, _ = run("ledger", "head", "--ledger", url, "--format", "json")
    head = json.loads(out)
    assert code == 0 and head["count"] == 3 and len(head["head_hash"]) == 64
    code, out, _ = run("ledger", "verify", "--ledger", url)
    assert code == 0 and "intact: 3 entries" in out and head["head_hash"] in out
    assert run("ledger", "verify", "--ledger", url, "--expect-head", head["head_hash"])[0] == 0
    tamper(url, "UPDATE conformance_ledger SET content = replace(content, '0.5', '0.6') WHERE seq = 2")
    code, out, _ = run("ledger", "verify", "--ledger", url)
    assert code == 1 and "NOT intact" in out and "entry #2 was altered" in out


def test_verdicts_table_json_csv_and_export(tmp_path: Path) -> None:
    url = _ledger(tmp_path)
    code, out, _ = run("verdicts", "--ledger", url)
    assert code == 0 and "3 entries" in out
    assert "\x1b" not in out and "\\x1b" in out  # stored text is never sent raw to a terminal
    code, out, _ = run("verdicts", "--ledger", url, "--verdict", "out_of_bounds", "--format", "json")
    assert [v["record_id"] for v in json.loads(out)] == ["r2"]
    code, out, _ = run("verdicts", "--ledger", url, "--format", "csv")
    assert out.splitlines()[0].startswith("seq,record_id") and len(out.strip().splitlines()) >= 4
    export = tmp_path / "export.parquet"
    code, _, err = run("verdicts", "--ledger", url, "--export", str(export))
    assert code == 0 and "3 entries exported" in err
    assert run("ledger", "verify", "--file", str(export))[0] == 0
    assert run("verdicts", "--ledger", url, "--since", "yesterday")[0] == 2


def test_missing_unreachable_and_foreign_ledgers_exit_2(tmp_path: Path) -> None:
    code, _, err = run("ledger", "verify", "--ledger", sqlite_url(tmp_path / "none.db"))
    assert code == 2 and "no ledger" in err and not (tmp_path / "none.db").exists()
    code, _, err = run("verdicts", "--ledger", "postgresql://postgres@127.0.0.1:1/test")
    assert code == 2 and "cannot reach the ledger" in err
    code, _, err = run("reconstruct", "nope", "--ledger", _ledger(tmp_path))
    assert code == 2 and "no entry for record_id 'nope'" in err


def test_score_with_an_unreachable_ledger_writes_nothing(tmp_path: Path) -> None:
    audited = tmp_path / "audited.jsonl"
    audited.write_text(json.dumps({"record_id": "a", "model_version": "m", "input_class": "c", "input": "i",
                                   "output": "o"}) + "\n")
    out = tmp_path / "verdicts.jsonl"
    code, _, err = run("score", str(audited), "--out", str(out), "--ledger",
                       sqlite_url(tmp_path / "missing-folder" / "ledger.db"))
    assert code == 2 and "does not exist" in err
    assert not out.exists()


def test_help_names_the_default_ledger() -> None:
    from conformance.cli.main import _parser

    text = _parser().format_help()
    score_help = [a for a in _parser()._subparsers._group_actions[0].choices["score"]._actions  # type: ignore[union-attr]
                  if "--ledger" in a.option_strings][0].help
    assert "verdicts" in text and "reconstruct" in text and "ledger" in text
    assert "conformance_store/ledger.db" in score_help and "MLFLOW_TRACKING_URI" in score_help
