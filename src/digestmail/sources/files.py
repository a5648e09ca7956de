"""Digests on disk (I/O): inbox files, mbox files, Maildir folders, and archiving what was read.

Parsing stays in the pure format modules; this module only finds bytes and moves files.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..errors import ConfigError
from .emails import iter_mbox

# Folders digestmail keeps inside an inbox for its own bookkeeping; never read as input.
DONE, REJECTED = "done", "rejected"
_MBOX_FROM = re.compile(rb"^From \S+ +\S+")
_PEEK = 1024  # enough of a file's start to tell an mbox's first `From ` line


@dataclass(frozen=True)
class Unit:
    """One digest's bytes: a file, or one message of an mbox (`label` is then `path#N`)."""

    label: str
    origin: Path  # the file to archive or mark once the unit is handled
    data: bytes = b""
    sha256: str = ""
    error: str = ""  # why it could not be read; data is empty then


def inbox_files(inbox: Path) -> list[Path]:
    """The files directly inside the inbox (hidden files and our own subfolders skipped)."""
    if not inbox.is_dir():
        raise ConfigError(f"the inbox folder {inbox} does not exist", where="sources.inbox",
                          hint="create it (mkdir -p) or point [sources] inbox at the folder your digests land in")
    return sorted(p for p in inbox.iterdir() if not p.name.startswith(".") and not p.is_dir())


def maildir_new(maildir: Path) -> list[Path]:
    """Messages in a Maildir's new/ (unread by us); a folder without cur/new/tmp is a config error."""
    if not all((maildir / sub).is_dir() for sub in ("cur", "new", "tmp")):
        raise ConfigError(f"{maildir} is not a Maildir (it needs cur/, new/ and tmp/)",
                          where="sources.maildir.path", hint="point it at the Maildir folder itself")
    return sorted(p for p in (maildir / "new").iterdir() if not p.name.startswith("."))


def expand(paths: Iterable[Path]) -> list[Path]:
    """Files named directly, the files directly inside named folders, the new/ and cur/ of a Maildir."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir() and all((p / sub).is_dir() for sub in ("cur", "new", "tmp")):
            out.extend(sorted(c for sub in ("new", "cur") for c in (p / sub).iterdir()
                              if not c.name.startswith(".")))
        elif p.is_dir():
            out.extend(sorted(c for c in p.iterdir() if not c.name.startswith(".") and not c.is_dir()))
        else:
            out.append(p)  # a missing file is reported by read_units, not here
    return out


def is_mbox(data: bytes) -> bool:
    return _MBOX_FROM.match(data) is not None


def read_units(paths: Iterable[Path]) -> Iterator[Unit]:
    """Each file as one unit, or one per message for an mbox; an unreadable file becomes an error unit.

    An mbox is read message by message, so memory holds one message whatever the file's size; any
    other file is one digest, parsed whole, and is read whole. An mbox that cannot be read to its end
    gives an error unit labelled with the file itself, after the messages read before the error.
    """
    for path in paths:
        try:
            handle = path.open("rb")
        except OSError as exc:
            yield Unit(str(path), path, error=f"cannot read the file: {exc.strerror or exc}")
            continue
        with handle:
            try:
                mbox = is_mbox(handle.peek(_PEEK))  # the file's start, left unread
                data = b"" if mbox else handle.read()
            except OSError as exc:
                yield Unit(str(path), path, error=f"cannot read the file: {exc.strerror or exc}")
                continue
            if mbox:
                yield from _mbox_units(path, handle)
            else:
                yield Unit(str(path), path, data, hashlib.sha256(data).hexdigest())


def _mbox_units(path: Path, handle: BinaryIO) -> Iterator[Unit]:
    count = 0  # an mbox (it starts with a `From ` line) has at least one message
    try:
        for count, message in enumerate(iter_mbox(handle), start=1):
            yield Unit(f"{path}#{count}", path, message, hashlib.sha256(message).hexdigest())
    except OSError as exc:
        yield Unit(str(path), path, error=f"cannot read the file after message {count}: {exc.strerror or exc}")


def _free_name(folder: Path, name: str) -> Path:
    target = folder / name
    n = 1
    while target.exists():
        stem, dot, suffix = name.partition(".")
        target = folder / f"{stem}-{n}{dot}{suffix}"
        n += 1
    return target


def archive(path: Path, inbox: Path, *, rejected_reason: str | None) -> Path:
    """Move a handled inbox file to done/, or to rejected/ with `<name>.reason` beside it."""
    folder = inbox / (REJECTED if rejected_reason is not None else DONE)
    folder.mkdir(exist_ok=True)
    target = _free_name(folder, path.name)
    if rejected_reason is not None:
        # The reason first: a crash between the two leaves a stray .reason, never an unexplained file.
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(rejected_reason.rstrip() + "\n")
        os.replace(tmp, target.with_name(target.name + ".reason"))
    os.replace(path, target)
    return target


def mark_seen(message: Path, maildir: Path, *, flagged: bool = False) -> Path:
    """Move a Maildir message from new/ to cur/ as seen (and flagged when it was rejected)."""
    flags = "FS" if flagged else "S"
    target = maildir / "cur" / f"{message.name.split(':2,')[0]}:2,{flags}"
    os.replace(message, target)
    return target
