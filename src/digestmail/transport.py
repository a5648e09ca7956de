"""Transports hand finished message bytes over; `file` writes one .eml per message, atomically."""

from __future__ import annotations

import asyncio
import collections
import os
import re
import socket
import ssl
import tempfile
import time
from pathlib import Path
from typing import Protocol

import aiosmtplib

from .config import Config, SmtpSettings
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


class MaildirTransport:
    """Delivers into a Maildir (`outbox` with cur/, new/, tmp/): written in tmp/, fsynced, renamed into new/,
    as the Maildir spec asks, so a mail client or an MDA never sees half a message."""

    name = "maildir"

    def __init__(self, root: Path) -> None:
        self.root = root
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


IDLE_CHECK = 2.0  # seconds: a connection idle longer is checked with NOOP before the next message


class SmtpTransport:
    """One persistent SMTP connection, reused across messages; TLS as configured, never downgraded.

    The pipeline is synchronous; this class owns an event loop so `async` stays at this edge.
    """

    name = "smtp"

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self.password = settings.password()  # fail before the first message if the secret is missing
        self._runner = asyncio.Runner()
        self._client: aiosmtplib.SMTP | None = None
        self._last_used = 0.0
        self._next_slot = 0.0  # rate_per_second: the earliest monotonic time the next message may go
        self._sent_at: collections.deque[float] = collections.deque()  # max_per_hour: sends in the last hour

    def already_sent(self, count: int) -> None:
        """Messages sent within the last hour before this transport existed (they count towards max_per_hour)."""
        now = time.monotonic()
        self._sent_at.extend([now] * count)

    def _throttle(self) -> None:
        """Hold to rate_per_second; refuse (a temporary failure, so deferred) beyond max_per_hour."""
        s = self.settings
        now = time.monotonic()
        if s.max_per_hour:
            while self._sent_at and now - self._sent_at[0] >= 3600:
                self._sent_at.popleft()
            if len(self._sent_at) >= s.max_per_hour:
                raise DeliveryError(f"max_per_hour ({s.max_per_hour}) reached", where=self._where,
                                    hint="the rest is deferred and retried later; raise [delivery.smtp] max_per_hour "
                                         "if your provider allows more")
        if s.rate_per_second:
            if self._next_slot > now:
                time.sleep(self._next_slot - now)
            self._next_slot = max(now, self._next_slot) + 1.0 / s.rate_per_second

    def _tls_context(self) -> ssl.SSLContext:
        cafile = str(self.settings.ca_file) if self.settings.ca_file else None
        return ssl.create_default_context(cafile=cafile)

    async def _connect(self) -> aiosmtplib.SMTP:
        s = self.settings
        # start_tls must be True or False: aiosmtplib's None means "if offered", which a man in the
        # middle can strip, after which a password would go out in clear.
        client = aiosmtplib.SMTP(hostname=s.host, port=s.port, timeout=s.timeout,
                                 use_tls=s.security == "tls", start_tls=s.security == "starttls",
                                 tls_context=self._tls_context() if s.security != "none" else None)
        await client.connect()
        if s.username:
            if client.get_transport_info("sslcontext") is None:  # belt and braces; config forbids this
                client.close()
                raise DeliveryError("refusing to log in over a connection without TLS", where=s.host)
            assert self.password is not None
            await client.login(s.username, self.password)
        return client

    async def _ready(self) -> aiosmtplib.SMTP:
        """A live connection: the pooled one if a NOOP says it is still there, else a new one.

        Checking first means a hang-up during the message itself is never mistaken for an idle
        connection the server closed: that one is deferred, not resent at once (it may have arrived).
        """
        client = self._client
        if client is not None and client.is_connected:
            if time.monotonic() - self._last_used < IDLE_CHECK:  # just used: no round trip needed
                return client
            try:
                await client.noop()
                return client
            except (aiosmtplib.SMTPException, OSError):
                client.close()
        self._client = None
        try:
            self._client = await self._connect()
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(f"the server refused the login: {exc.code} {exc.message}", where=self._where,
                                hint="check [delivery.smtp] username and the password in password_env") from None
        return self._client

    async def _send(self, data: bytes, envelope: Envelope) -> None:
        client = await self._ready()
        try:
            refused, _ = await client.sendmail(envelope.sender, list(envelope.recipients), data)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            await self._reset()
            first = exc.recipients[0] if exc.recipients else None
            code = getattr(first, "code", 550)
            raise DeliveryError(f"recipient refused: {first}", where=self._where, code=code,
                                refused=code >= 500) from None
        except aiosmtplib.SMTPSenderRefused as exc:
            # Our own address refused: nothing to do with the recipient, and it may be fixed by the admin.
            await self._reset()
            raise DeliveryError(f"the server refused our sender address: {exc.code} {exc.message}",
                                where=self._where, code=exc.code,
                                hint="check [delivery] from against what the server lets you send as") from None
        except aiosmtplib.SMTPDataError as exc:
            await self._reset()  # a 5xx here refuses this message (size, content), not the address
            raise DeliveryError(f"the server refused the message: {exc.code} {exc.message}", where=self._where,
                                code=exc.code, permanent=exc.code >= 500) from None
        except aiosmtplib.SMTPResponseException as exc:
            await self._reset()
            raise DeliveryError(f"the server answered {exc.code} {exc.message}", where=self._where,
                                code=exc.code) from None
        self._last_used = time.monotonic()
        if refused:
            (addr, response), *_ = refused.items()
            raise DeliveryError(f"{addr} refused: {response.code} {response.message}", where=self._where,
                                code=response.code, refused=response.code >= 500)

    @property
    def _where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    async def _reset(self) -> None:
        """RSET after a refusal; a server that hung up (421) is dropped and reconnected next time."""
        try:
            if self._client is not None and self._client.is_connected:
                await self._client.rset()
        except (aiosmtplib.SMTPException, OSError):
            if self._client is not None:
                self._client.close()
            self._client = None

    def send(self, data: bytes, envelope: Envelope, key: str) -> None:
        self._throttle()
        try:
            self._runner.run(self._send(data, envelope))
            if self.settings.max_per_hour:
                self._sent_at.append(time.monotonic())
        except (aiosmtplib.SMTPException, OSError) as exc:  # dropped, timed out, TLS refused: retried later
            self._client = None
            raise DeliveryError(f"SMTP failed: {exc}", where=f"{self.settings.host}:{self.settings.port}",
                                hint="check [delivery.smtp] host, port, security and ca_file") from None

    def close(self) -> None:
        client, self._client = self._client, None
        try:
            if client is not None and client.is_connected:
                self._runner.run(client.quit())
        except (aiosmtplib.SMTPException, OSError):
            pass  # the messages are already handed over; a failed QUIT loses nothing
        finally:
            self._runner.close()


def make_transport(config: Config) -> Transport:
    """The configured transport."""
    if config.transport == "smtp":
        assert config.smtp is not None
        return SmtpTransport(config.smtp)
    if config.transport == "maildir":
        return MaildirTransport(config.outbox)
    return FileTransport(config.outbox)
