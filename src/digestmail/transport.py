"""Transports hand finished message bytes over; `file` writes one .eml per message, atomically.

The SMTP transport is in smtp.py (the only module that talks to aiosmtplib)."""

from __future__ import annotations

import concurrent.futures
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .config import Config
from .errors import DeliveryError, DigestmailError
from .message import Envelope


@dataclass
class Outgoing:
    """One message for `send_many`: its bytes, or a future of them while another process builds them."""

    envelope: Envelope
    key: str
    data: bytes | concurrent.futures.Future[bytes]
    tag: Any = None  # the caller's own handle, given back to `done`
    ready: bool = False  # built by message.build: CRLF only, no line starting with "." (nothing to normalise)


# Called once per message: None when the server took it, else why not. It runs before the next
# message is handed over, so recording the outcome there keeps the crash window to one message.
Done = Callable[[Outgoing, DigestmailError | None], None]


class Transport(Protocol):
    """Anything that can take message bytes; it returns only once the message is safely handed over."""

    name: str
    where: str  # where messages go: a folder, or host:port

    def send(self, data: bytes, envelope: Envelope, key: str) -> None: ...

    def send_many(self, items: Iterable[Outgoing], done: Done) -> None: ...

    def close(self) -> None: ...


class OneByOne:
    """`send_many` for transports without a pool: each message in turn, outcomes as they come."""

    def send(self, data: bytes, envelope: Envelope, key: str) -> None:
        raise NotImplementedError

    def send_many(self, items: Iterable[Outgoing], done: Done) -> None:
        for item in items:
            try:
                data = item.data if isinstance(item.data, bytes) else item.data.result()
                self.send(data, item.envelope, item.key)
            except DigestmailError as exc:
                done(item, exc)
                continue
            done(item, None)


class FileTransport(OneByOne):
    """Writes `<outbox>/<key>_<recipient>.eml`: temp file, fsync, rename — never a half-written file."""

    name = "file"

    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox
        self.where = str(outbox)
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


class MaildirTransport(OneByOne):
    """Delivers into a Maildir (`outbox` with cur/, new/, tmp/): written in tmp/, fsynced, renamed into new/,
    as the Maildir spec asks, so a mail client or an MDA never sees half a message."""

    name = "maildir"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.where = str(root)
        try:
            for sub in ("tmp", "new", "cur"):
                (root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DeliveryError(f"cannot create the Maildir: {exc.strerror}", where=str(root),
                                hint="fix [delivery] outbox or the folder's permissions") from None
        self._count = 0

    def send(self, data: bytes, envelope: Envelope, key: str) -> None:
        self._count += 1
        unique = f"{time.time_ns()}.P{os.getpid()}Q{self._count}.{socket.gethostname().replace('/', '_')}"
        tmp, final = self.root / "tmp" / unique, self.root / "new" / unique
        try:
            with open(tmp, "xb") as handle:
                handle.write(data.replace(b"\r\n", b"\n"))  # Maildir files use the local line ending
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, final)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise DeliveryError(f"cannot write into the Maildir: {exc.strerror}", where=str(self.root),
                                hint="check free space and permissions") from None

    def close(self) -> None:
        pass


def make_transport(config: Config) -> Transport:
    """The configured transport."""
    if config.transport == "smtp":
        from .smtp import SmtpTransport  # aiosmtplib is loaded only when it is used

        assert config.smtp is not None
        return SmtpTransport(config.smtp)
    if config.transport == "maildir":
        return MaildirTransport(config.outbox)
    return FileTransport(config.outbox)
