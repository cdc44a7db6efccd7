"""Writing files so that a crash leaves the old file or the new, never half of one."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

#: Files this package writes are readable by other accounts (a reviewer's), as a plain ``open`` would make them.
_MODE = 0o644


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file in the same folder, fsync, rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _MODE & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_output_targets(inputs: list[str | Path], outputs: dict[str, str | Path | None]) -> None:
    """Refuse, before any work, output files that cannot be written or would overwrite an input or each other.

    ``outputs`` maps a name for messages (``--out``, ``--summary``) to a path or None. Raises
    :class:`conformance.errors.InputFileError` naming the path and the cause.
    """
    from conformance.errors import InputFileError

    seen: dict[Path, str] = {}
    given = {Path(p).resolve(): str(p) for p in inputs}
    for name, target in outputs.items():
        if target is None:
            continue
        path = Path(target)
        where = path.resolve()
        if not path.parent.exists():
            raise InputFileError(f"{target}: the folder {path.parent} does not exist")
        if path.is_dir():
            raise InputFileError(f"{target} ({name}) is a folder; give a file name")
        if where in given or any(where.is_relative_to(p) for p in given if p.is_dir()):
            raise InputFileError(f"{target} ({name}) is the input {given.get(where, target)}: it would be "
                                 "overwritten; write the output to another file")
        if where in seen:
            raise InputFileError(f"{target} is given as both {seen[where]} and {name}; give two different files")
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise InputFileError(f"{target} ({name}): the folder {path.parent} is not writable by this account")
        seen[where] = name


def file_sha256(path: Path) -> str:
    """The SHA-256 (hex) of a file's bytes as stored, read a megabyte at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def source_sha256(files: list[Path]) -> str:
    """The SHA-256 of a file's bytes as stored (a .gz file's compressed bytes); of a folder of Parquet files, the
    SHA-256 of each file's name and SHA-256, in name order."""
    if len(files) == 1:
        return file_sha256(files[0])
    return hashlib.sha256("".join(f"{f.name}\0{file_sha256(f)}\n" for f in files).encode("utf-8")).hexdigest()
