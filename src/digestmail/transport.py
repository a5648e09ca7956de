"""Transports hand finished message bytes over; `file` writes one .eml per message, atomically."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Protocol

from .errors import DeliveryError
from .message import Envelope


class Transport(Protocol):
    """Anything that can take message bytes; it returns only once the message is safely handed over."""

    name: str

    def send(self, data: bytes, envelope: Envelope, key: str) -> None: ...

    def close(self) -> None: ...


class FileTransport:
    """Writes `<outbox>/<key>_<recipient>.eml`: temp file, fsync, rename — never a half-written file."""

    name = "file"

    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox
        try:
            outbox.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DeliveryError(f"cannot create the outbox folder: {exc.strerror}", where=str(outbox),
                                hint="fix [delivery] outbox or the folder's permissions") from None

    def path_for(self, envelope: Envelope, key: str) -> Path:
        who = re.sub(r"[^A-Za-z0-9@._+-]", "_", envelope.recipients[0])
        return self.outbox / f"{key}_{who}.eml"

    def send(self, data: bytes, envelope: Envelope, key: str) -> None:
        target = self.path_for(envelope, key)
        try:
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".eml", dir=self.outbox)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, target)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as exc:
            raise DeliveryError(f"cannot write {target.name}: {exc.strerror}", where=str(self.outbox),
                                hint="check free space and permissions of the outbox folder") from None

    def close(self) -> None:
        pass


def make_transport(kind: str, outbox: Path) -> Transport:
    """The configured transport."""
    if kind == "file":
        return FileTransport(outbox)
    raise DeliveryError(f"the {kind!r} transport is not available in this version",
                        hint="use transport = \"file\"")
