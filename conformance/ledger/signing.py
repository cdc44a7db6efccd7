"""Ed25519-signed witnessed heads: a head line that only the holder of a key could have written.

A heads file (:mod:`conformance.ledger.witness`) catches a removed tail or a rewritten chain as long as nobody
rewrites the heads file as well. With a signing key that the ledger's database does not hold
(``CONFORMANCE_LEDGER_SIGNING_KEY`` names its file), each head line also carries an Ed25519 signature of
its ``seq``, ``entry_hash`` and time, and ``ledger verify --public-key FILE`` checks every line: a line
written or edited without the key is named. A signature cannot show that whole lines were removed from the
end of the heads file; keep the file where the ledger's administrators cannot write.

Keys are made by ``conformance ledger keygen --out FILE``: the private key in ``FILE`` (PEM, PKCS #8, mode
0600), the public key beside it in ``FILE.pub`` (PEM).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance.ledger.errors import LedgerError

SIGNING_KEY_ENV = "CONFORMANCE_LEDGER_SIGNING_KEY"
_DOMAIN = b"conformance-ledger-head/1\n"


def head_message(seq: int, entry_hash: str, at: str) -> bytes:
    """The bytes a head's signature covers: a domain tag and the head's canonical JSON."""
    body = json.dumps({"at": at, "entry_hash": entry_hash, "seq": seq}, sort_keys=True, separators=(",", ":"))
    return _DOMAIN + body.encode("utf-8")


def key_id(public_key: Any) -> str:
    """A short name of a public key: the first 16 hex digits of SHA-256 of its raw 32 bytes."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class Signer:
    """A loaded private key: signs heads."""

    key: Any
    key_id: str
    path: str

    def sign(self, seq: int, entry_hash: str, at: str) -> str:
        return base64.b64encode(self.key.sign(head_message(seq, entry_hash, at))).decode("ascii")


@dataclass(frozen=True)
class PublicKey:
    """A loaded public key: checks head signatures."""

    key: Any
    key_id: str
    path: str

    def problem(self, seq: int, entry_hash: str, at: str, signature: str | None, signed_by: str | None) -> str | None:
        """Why a head's signature does not hold, or ``None`` when it does."""
        from cryptography.exceptions import InvalidSignature

        if not signature:
            return f"head #{seq} is not signed"
        if signed_by != self.key_id:
            return f"head #{seq} is signed by key {signed_by!r}, not by {self.key_id} ({self.path})"
        try:
            self.key.verify(base64.b64decode(signature, validate=True), head_message(seq, entry_hash, at))
        except (InvalidSignature, ValueError):
            return (f"the signature of head #{seq} does not match its seq, hash and time: the line was written "
                    "or edited without the signing key")
        return None


def keygen(out: str | Path) -> tuple[Signer, Path]:
    """Write a new Ed25519 key pair: the private key to ``out`` (mode 0600), the public key to ``out.pub``.

    Neither file is overwritten; each is written whole (a temporary file, then linked into place).
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private_path = Path(out)
    public_path = private_path.with_name(private_path.name + ".pub")
    for path in (private_path, public_path):
        if path.exists():
            raise LedgerError(f"{path} exists: a signing key is never overwritten; choose another --out, or move "
                              "the old key away first (heads signed with it stay checkable with its .pub)")
    if not private_path.parent.is_dir():
        raise LedgerError(f"cannot write the key {private_path}: the folder {private_path.parent} does not exist")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    _write_new(private_path, private_pem, 0o600)
    _write_new(public_path, public_pem, 0o644)
    return Signer(key, key_id(key.public_key()), str(private_path)), public_path


def _write_new(path: Path, data: bytes, mode: int) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(temporary, path)  # fails, rather than replaces, if the name was taken meanwhile
    except OSError as exc:
        raise LedgerError(f"cannot write the key {path}: {exc.strerror or exc}; nothing was written") from exc
    finally:
        temporary.unlink(missing_ok=True)


def load_signer(path: str | Path) -> Signer:
    """The private key in ``path``; refused when others may read it or it is not an Ed25519 key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    where = Path(path)
    try:
        mode = stat.S_IMODE(where.stat().st_mode)
        data = where.read_bytes()
    except OSError as exc:
        raise LedgerError(f"{SIGNING_KEY_ENV}={str(path)!r}: the signing key cannot be read "
                          f"({exc.strerror or exc}); fix the path, or unset the variable to witness heads unsigned; "
                          "nothing was written") from exc
    if mode & 0o077:
        raise LedgerError(f"the signing key {where} may be read by others (mode {mode:04o}): run `chmod 600 {where}`; "
                          "nothing was written")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise LedgerError(f"the signing key {where} is not an unencrypted PEM private key ({exc}); make one with "
                          "`conformance ledger keygen --out FILE`; nothing was written") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise LedgerError(f"the signing key {where} is not an Ed25519 key; make one with `conformance ledger keygen`")
    return Signer(key, key_id(key.public_key()), str(where))


def signer_from_env() -> Signer | None:
    """The key ``CONFORMANCE_LEDGER_SIGNING_KEY`` names, or ``None`` when it is unset."""
    path = os.environ.get(SIGNING_KEY_ENV, "").strip()
    return load_signer(path) if path else None


def load_public_key(path: str | Path) -> PublicKey:
    """The public key in ``path`` (``keygen``'s ``.pub``, PEM)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    where = Path(path)
    try:
        key = serialization.load_pem_public_key(where.read_bytes())
    except OSError as exc:
        raise LedgerError(f"the public key {where} cannot be read ({exc.strerror or exc})") from exc
    except (ValueError, TypeError) as exc:
        raise LedgerError(f"{where} is not a PEM public key ({exc}); pass the .pub file `conformance ledger "
                          "keygen` wrote") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise LedgerError(f"the public key {where} is not an Ed25519 key; pass the .pub file that "
                          "`conformance ledger keygen` wrote beside the signing key")
    return PublicKey(key, key_id(key), str(where))
