"""Ed25519-signed witnessed heads: `ledger keygen`, heads signed with CONFORMANCE_LEDGER_SIGNING_KEY, and
`ledger verify --public-key` naming a head line written or edited without the key."""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
from pathlib import Path

import pytest

from conformance.cli import main
from conformance.ledger import Ledger, LedgerError
from tests.ledger_support import make_verdict, sqlite_url, tamper


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def keygen(path: Path) -> dict[str, str]:
    code, out, err = cli("ledger", "keygen", "--out", str(path), "--format", "json")
    assert code == 0, err
    return dict(json.loads(out))


@pytest.fixture
def signed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path, dict[str, str]]:
    """A SQLite ledger of 2 appends and a sign-off, every head signed; its URL, heads file and key pair."""
    pair = keygen(tmp_path / "heads.key")
    monkeypatch.setenv("CONFORMANCE_LEDGER_SIGNING_KEY", pair["private_key"])
    url = sqlite_url(tmp_path / "ledger.db")
    with Ledger(url) as ledger:
        ledger.append([make_verdict("aud-1"), make_verdict("aud-2")])
        ledger.append([make_verdict("aud-3")])
        ledger.sign_off("aud-1", decision="confirmed", by="J. Doe")
        heads = ledger.witness_path
    return url, heads, pair


def test_keygen_writes_a_private_key_for_its_owner_only_and_never_overwrites(tmp_path: Path) -> None:
    pair = keygen(tmp_path / "k")
    private, public = Path(pair["private_key"]), Path(pair["public_key"])
    assert public == tmp_path / "k.pub" and len(pair["key_id"]) == 16
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    before = private.read_bytes()
    code, out, err = cli("ledger", "keygen", "--out", str(private))
    assert code == 2 and "exists: a signing key is never overwritten" in err and out == ""
    assert private.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k", "k.pub"]  # no temporary file left
    code, _, err = cli("ledger", "keygen", "--out", str(tmp_path / "no-such-folder" / "k"))
    assert code == 2 and "does not exist" in err


def test_every_head_is_signed_and_verify_checks_each(signed: tuple[str, Path, dict[str, str]]) -> None:
    url, heads, pair = signed
    lines = [json.loads(line) for line in heads.read_text().splitlines()]
    assert [h["seq"] for h in lines] == [2, 3, 4]
    assert all(h["key"] == pair["key_id"] and len(h["sig"]) == 88 for h in lines)
    code, out, err = cli("ledger", "verify", "--ledger", url, "--public-key", pair["public_key"])
    assert code == 0, out + err
    assert f"agrees with the 3 heads witnessed in {heads}, each signed by key {pair['key_id']}" in out
    code, out, _ = cli("ledger", "verify", "--ledger", url, "--public-key", pair["public_key"], "--format", "json")
    assert code == 0 and json.loads(out)["signed_by"] == pair["key_id"]


def test_a_removed_tail_with_its_head_line_rewritten_is_caught_only_by_the_signature(
        signed: tuple[str, Path, dict[str, str]]) -> None:
    url, heads, pair = signed
    with Ledger(url) as ledger:
        kept = ledger.get(3)
    assert kept is not None
    tamper(url, "DELETE FROM conformance_ledger WHERE seq = 4")  # the sign-off is gone from the ledger
    lines = heads.read_text().splitlines()
    last = json.loads(lines[-1]) | {"seq": 3, "entry_hash": kept.entry_hash}  # the witness "agrees", unsigned
    heads.write_text("\n".join([*lines[:-1], json.dumps(last, sort_keys=True)]) + "\n")

    code, out, _ = cli("ledger", "verify", "--ledger", url)
    assert code == 0  # without the key the rewritten witness agrees with the shortened chain
    code, out, _ = cli("ledger", "verify", "--ledger", url, "--public-key", pair["public_key"])
    assert code == 1
    assert f"the witness {heads} (line 3): the signature of head #3 does not match" in out
    assert "written or edited without the signing key" in out


def test_an_unsigned_head_and_another_key_are_named(signed: tuple[str, Path, dict[str, str]],
                                                    monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    url, heads, pair = signed
    other = keygen(tmp_path / "other.key")
    code, out, _ = cli("ledger", "verify", "--ledger", url, "--public-key", other["public_key"])
    assert code == 1 and f"(line 1): head #2 is signed by key '{pair['key_id']}', not by {other['key_id']}" in out
    monkeypatch.delenv("CONFORMANCE_LEDGER_SIGNING_KEY")
    with Ledger(url) as ledger:
        ledger.append([make_verdict("aud-9")])
    code, out, _ = cli("ledger", "verify", "--ledger", url, "--public-key", pair["public_key"])
    assert code == 1 and "(line 4): head #5 is not signed" in out
    assert cli("ledger", "verify", "--ledger", url)[0] == 0  # unsigned heads are fine when nobody asks for a key


@pytest.mark.parametrize("case", ["missing", "readable by others", "not a key"])
def test_a_signing_key_that_cannot_be_used_stops_before_anything_is_written(
        case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "heads.key"
    if case != "missing":
        keygen(key)
        if case == "readable by others":
            os.chmod(key, 0o644)
        else:
            key.write_text("not a key")
    monkeypatch.setenv("CONFORMANCE_LEDGER_SIGNING_KEY", str(key))
    says = {"missing": "the signing key cannot be read", "readable by others": "chmod 600",
            "not a key": "is not an unencrypted PEM private key"}[case]
    with pytest.raises(LedgerError, match=says):
        Ledger(sqlite_url(tmp_path / "ledger.db"))
    assert not (tmp_path / "ledger.db").exists()


def test_an_export_has_no_heads_to_check(tmp_path: Path) -> None:
    code, _, err = cli("ledger", "verify", "--file", str(tmp_path / "x.parquet"), "--public-key", "k.pub")
    assert code == 2 and "an export (--file) has none" in err
