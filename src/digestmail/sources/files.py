"""Finding and reading digest files on disk (I/O); parsing stays in the pure format modules."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

# Folders digestmail may keep inside an inbox for its own bookkeeping; never read as input.
RESERVED = {"done", "rejected"}


@dataclass(frozen=True)
class RawFile:
    """One candidate input file: its bytes and checksum, or why it could not be read."""

    path: Path
    data: bytes = b""
    sha256: str = ""
    error: str = ""


def inbox_files(inbox: Path) -> list[Path]:
    """The files directly inside the inbox (hidden files and our own subfolders skipped)."""
    if not inbox.is_dir():
        raise ConfigError(f"the inbox folder {inbox} does not exist", where="sources.inbox",
                          hint="create it (mkdir -p) or point [sources] inbox at the folder your digests land in")
    return sorted(p for p in inbox.iterdir() if not p.name.startswith(".") and not p.is_dir())


def expand(paths: Iterable[Path]) -> list[Path]:
    """Files named directly, plus the files directly inside named folders."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(c for c in p.iterdir()
                              if not c.name.startswith(".") and not c.is_dir()))
        else:
            out.append(p)  # a missing file is reported by read_files, not here
    return out


def read_files(paths: Iterable[Path]) -> Iterator[RawFile]:
    """Read each file; an unreadable one comes back with `error` set instead of stopping the rest."""
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as exc:
            yield RawFile(path, error=f"cannot read the file: {exc.strerror or exc}")
            continue
        yield RawFile(path, data, hashlib.sha256(data).hexdigest())
