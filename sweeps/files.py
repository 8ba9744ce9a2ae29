"""Checks on the files and directories a user names, each failing with one line that names the path.

Nothing here writes: a check that passes leaves the file system as it found it.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

__all__ = ["read_text_file", "check_writable_dir"]


def read_text_file(path: str | Path, what: str) -> str:
    """The UTF-8 text of the file at `path`; `what` names it in errors (e.g. "sweep file")."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {str(path)!r} is a directory, not a file")
    if not path.exists():
        parent = _first_non_directory(path.parent)
        if parent is not None:
            raise ValueError(f"{what} {str(path)!r} does not exist ({str(parent)!r} is a file)")
        raise ValueError(f"{what} {str(path)!r} does not exist")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ValueError(f"{what} {str(path)!r} cannot be read: {error.strerror or error}") from None
    if b"\0" in data:
        raise ValueError(f"{what} {str(path)!r} is not a text file (it holds NUL bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{what} {str(path)!r} is not a UTF-8 text file (byte {error.start} is {data[error.start]:#04x})"
        ) from None


def check_writable_dir(path: str | Path, what: str) -> None:
    """Check that `path` is, or could be created as, a directory this process may write in.

    `what` names the path in errors (e.g. "--out"). Nothing is created.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{what} {str(path)!r} is a file, not a directory")
    blocker = _first_non_directory(path)
    if blocker is not None:
        raise ValueError(f"{what} {str(path)!r} cannot be a directory: {str(blocker)!r} is a file")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        reason = "is on a read-only file system" if _read_only_fs(existing) else "is not writable"
        if existing == path:
            raise ValueError(f"{what} {str(path)!r} {reason}")
        raise ValueError(f"{what} {str(path)!r} cannot be created: {str(existing)!r} {reason}")


def _first_non_directory(path: Path) -> Path | None:
    """The first of `path` and its ancestors that exists and is not a directory, if any."""
    for candidate in [path, *path.parents]:
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


def _read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError as error:
        return error.errno == errno.EROFS
