"""A recording SMTP server for tests: aiosmtpd on 127.0.0.1 at a free port, keeping what clients send."""

from __future__ import annotations

import functools
import socket
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it for a socket bound to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Received:
    """One message as the server got it: the envelope and the exact DATA bytes."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes


@dataclass
class Recorder:
    """The aiosmtpd handler: keeps every message, every command verb and every AUTH attempt."""

    messages: list[Received] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    auth_attempts: list[str] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        self.messages.append(Received(envelope.mail_from, tuple(envelope.rcpt_tos), bytes(envelope.content)))
        return "250 2.0.0 OK"

    def authenticate(self, server: SMTP, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        self.auth_attempts.append(mechanism)
        return AuthResult(success=True)


def _recorded(verb: str) -> Any:
    base = getattr(SMTP, "smtp_" + verb)

    @functools.wraps(base)  # keeps the HELP text aiosmtpd attaches to each command method
    async def method(self: SMTP, arg: str) -> None:
        self.event_handler.commands.append(verb)
        await base(self, arg)

    return method


# Every SMTP command the server understands, recorded before aiosmtpd handles it (even a refused AUTH).
RecordingSMTP = type("RecordingSMTP", (SMTP,),
                     {name: _recorded(name[5:]) for name in dir(SMTP) if name.startswith("smtp_")})


class _Controller(Controller):
    def factory(self) -> SMTP:
        return RecordingSMTP(self.handler, **self.SMTP_kwargs)


class SmtpServer:
    """Start with `with SmtpServer() as server:`; `offer_auth` advertises AUTH even without TLS.

    It never offers STARTTLS (no TLS context), so a client that insists on TLS must give up. With
    `offer_auth`, AUTH is on offer in clear text, so a client that logs in anyway is caught in
    `auth_attempts` (and `commands`).
    """

    def __init__(self, *, offer_auth: bool = False) -> None:
        self.recorder = Recorder()
        self.host = HOST
        self.port = free_port()
        kwargs: dict[str, Any] = {}
        if offer_auth:
            kwargs = {"auth_require_tls": False, "authenticator": self.recorder.authenticate}
        self._controller = _Controller(self.recorder, hostname=self.host, port=self.port, ready_timeout=10,
                                       **kwargs)

    @property
    def messages(self) -> list[Received]:
        return self.recorder.messages

    @property
    def commands(self) -> list[str]:
        return self.recorder.commands

    @property
    def auth_attempts(self) -> list[str]:
        return self.recorder.auth_attempts

    def start(self) -> SmtpServer:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
