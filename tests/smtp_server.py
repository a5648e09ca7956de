"""SMTP servers for tests: aiosmtpd on 127.0.0.1 at a free port, recording what clients send.

`SmtpServer()` records every message, command and AUTH attempt. The same class also:

- injects faults per address (`faults=[Fault.temporary(addr), Fault.refuse(addr), ...]`): a 4xx or
  5xx answer to MAIL, RCPT or DATA, a 421 followed by hanging up, hanging up during DATA without any answer,
  or silence until the client times out;
  each fault hits the first `times` attempts of that address at that step (None: every attempt);
- slows every DATA down (`data_delay`), e.g. to leave time to kill a client mid-run;
- offers STARTTLS (`tls_context`, with `require_starttls`) or speaks implicit TLS (`ssl_context`), and
  AUTH that accepts exactly one login (`login=(user, password)`).
- offers 8BITMIME or not (`eight_bit_mime`), and either way refuses 8-bit data that MAIL did not
  announce with BODY=8BITMIME (RFC 6152), as a strict server may;

A message counts as delivered (`messages`) only once the server has it and answers 250 — except with
`data_delay`, where it is recorded *before* the delay, as a real server that queued the message and then
lost the connection before its 250 reached the client (the duplicate a crash can cause).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

HOST = "127.0.0.1"
# Longest a faulty handler waits for its own hang-up to cancel it (it normally takes milliseconds).
_HANG_UP_WAIT = 5.0


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
    mail_options: tuple[str, ...] = ()  # MAIL's parameters, e.g. ("BODY=8BITMIME", "SIZE=1234")


@dataclass(frozen=True)
class Fault:
    """What the server does to one address at one step: MAIL (the sender's), RCPT or DATA (a recipient's).

    action "reply": answer `reply` instead of 250; "close": answer `reply` (a 421) and hang up;
    "drop": hang up without answering (at DATA: after the whole message arrived, before any reply);
    "hang": say nothing for a while (longer than a client's timeout), then answer `reply`.
    `times`: how many attempts of this address at this step it hits; None means every attempt.
    """

    address: str
    stage: str = "RCPT"
    action: str = "reply"
    reply: str = "451 4.3.0 Try again later"
    times: int | None = 1

    def __post_init__(self) -> None:
        assert self.stage in ("MAIL", "RCPT", "DATA"), self.stage
        assert self.action in ("reply", "close", "drop", "hang"), self.action

    @classmethod
    def temporary(cls, address: str, stage: str = "RCPT", times: int | None = 1) -> Fault:
        """451 the first `times` attempts, then accept."""
        return cls(address, stage, "reply", "451 4.3.0 Try again later", times)

    @classmethod
    def refuse(cls, address: str, stage: str = "RCPT") -> Fault:
        """550, always."""
        return cls(address, stage, "reply", "550 5.1.1 No such user here", None)

    @classmethod
    def shutdown(cls, address: str, stage: str = "RCPT", times: int | None = 1) -> Fault:
        """421 and hang up, the first `times` attempts."""
        return cls(address, stage, "close", "421 4.3.2 Service shutting down, closing channel", times)

    @classmethod
    def hang(cls, address: str, stage: str = "RCPT", times: int | None = 1) -> Fault:
        """Silence (the client times out), the first `times` attempts."""
        return cls(address, stage, "hang", "451 4.4.2 Too late", times)

    @classmethod
    def drop(cls, address: str, stage: str = "DATA", times: int | None = 1) -> Fault:
        """Hang up without a word, the first `times` attempts."""
        return cls(address, stage, "drop", "", times)


@dataclass
class Recorder:
    """The aiosmtpd handler: keeps every message, every command verb and every AUTH attempt.

    `messages`: the messages answered 250 (delivered). `data_attempts`: every message body that
    arrived, delivered or not. `rcpt_attempts`: every RCPT address, accepted or not.
    `command_log`: (verb, over TLS?) for every command, in order. `mechanisms_tried`: the mechanism of
    every AUTH the client completed; `logins`: (mechanism, login, over TLS?) of each, when `login` is set.
    """

    faults: list[Fault] = field(default_factory=list)
    data_delay: float = 0.0
    pipelining: bool = True  # offer PIPELINING (RFC 2920), as Postfix and most servers do
    # Offer 8BITMIME (RFC 6152), as aiosmtpd, Postfix and most servers do. Either way 8-bit data is
    # refused unless MAIL said BODY=8BITMIME, and BODY=8BITMIME unless it was offered.
    eight_bit_mime: bool = True
    # MAILs that arrived with the next command already behind them (a pipelining client's).
    pipelined: int = 0
    login: tuple[str, str] | None = None
    messages: list[Received] = field(default_factory=list)
    data_attempts: list[Received] = field(default_factory=list)
    rcpt_attempts: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    command_log: list[tuple[str, bool]] = field(default_factory=list)
    # (aiosmtpd takes any handler attribute named auth_* for an AUTH mechanism: hence these names.)
    mechanisms_tried: list[str] = field(default_factory=list)
    logins: list[tuple[str, str, bool]] = field(default_factory=list)
    connections: int = 0
    sessions: list[list[tuple[str, bool]]] = field(default_factory=list)  # command_log, per connection
    # DATA handlers running at once (a message arrived, its answer not yet sent): now and at most.
    in_data: int = 0
    most_in_data: int = 0
    # Connections with a message under way (MAIL taken, its data not yet all in), and the most of
    # them seen while a message that had all arrived waited for its answer.
    open_envelopes: set[int] = field(default_factory=set)
    most_open_while_in_data: int = 0
    _hits: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- faults ----------------------------------------------------------------------------------

    def _fault(self, stage: str, addresses: list[str]) -> Fault | None:
        """The fault that hits this attempt, counting one attempt per address at this stage."""
        hit = None
        with self._lock:
            for addr in addresses:
                self._hits[(addr.lower(), stage)] += 1
                for f in self.faults:
                    if f.stage == stage and f.address.lower() == addr.lower() and hit is None and (
                            f.times is None or self._hits[(addr.lower(), stage)] <= f.times):
                        hit = f
        return hit

    @staticmethod
    async def _act(server: SMTP, fault: Fault) -> str:
        if fault.action == "reply":
            return fault.reply
        if fault.action == "hang":  # a client that gives up first hangs up, which cancels this
            await asyncio.sleep(_HANG_UP_WAIT)
            return fault.reply
        if fault.action == "close":
            await server.push(fault.reply)
        # Hang up. The transport's connection_lost cancels this handler (the session ends there);
        # should that not happen in time, answer something so the test still ends.
        server.transport.close()
        await asyncio.sleep(_HANG_UP_WAIT)
        return "421 4.3.2 closing"

    # -- aiosmtpd hooks ------------------------------------------------------------------------------

    async def handle_EHLO(self, server: SMTP, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        if self.pipelining:  # before the last line, which has no "-"
            responses.insert(len(responses) - 1, "250-PIPELINING")
        if not self.eight_bit_mime:
            responses.remove("250-8BITMIME")
        return responses

    async def handle_MAIL(self, server: SMTP, session: Any, envelope: Any, address: str,
                          mail_options: list[str]) -> str:
        if getattr(server._reader, "_buffer", b""):  # aiosmtpd's StreamReader: what is read, not handled yet
            self.pipelined += 1
        fault = self._fault("MAIL", [address])
        if fault is not None:
            return await self._act(server, fault)
        if "BODY=8BITMIME" in mail_options and not self.eight_bit_mime:
            return "555 5.5.4 BODY=8BITMIME was not offered"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        self.open_envelopes.add(server.session_number)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server: SMTP, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        self.rcpt_attempts.append(address)
        fault = self._fault("RCPT", [address])
        if fault is not None:
            return await self._act(server, fault)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        self.open_envelopes.discard(server.session_number)
        received = Received(envelope.mail_from, tuple(envelope.rcpt_tos), bytes(envelope.original_content),
                            tuple(envelope.mail_options))
        self.data_attempts.append(received)
        if not received.data.isascii() and "BODY=8BITMIME" not in received.mail_options:
            return "554 5.6.0 8-bit data without BODY=8BITMIME"
        fault = self._fault("DATA", list(envelope.rcpt_tos))
        if fault is not None:
            return await self._act(server, fault)
        self.messages.append(received)
        self.in_data += 1
        self.most_in_data = max(self.most_in_data, self.in_data)
        try:
            if self.data_delay:
                await asyncio.sleep(self.data_delay)
            self.most_open_while_in_data = max(self.most_open_while_in_data, len(self.open_envelopes))
        finally:
            self.in_data -= 1
        return "250 2.0.0 OK"

    def authenticate(self, server: SMTP, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        self.mechanisms_tried.append(mechanism)
        if self.login is None:  # the clear-text trap: anything goes, and is recorded
            return AuthResult(success=True)
        login = password = ""
        if isinstance(data, LoginPassword):
            login, password = data.login.decode(), data.password.decode()
        self.logins.append((mechanism, login, _over_tls(server)))
        # handled=False: aiosmtpd answers (235, or 535 for a wrong password) itself.
        return AuthResult(success=(login, password) == self.login, handled=False)


def _over_tls(server: SMTP) -> bool:
    transport = server.transport
    return transport is not None and transport.get_extra_info("sslcontext") is not None


def _recorded(verb: str) -> Any:
    base = getattr(SMTP, "smtp_" + verb)

    @functools.wraps(base)  # keeps the HELP text aiosmtpd attaches to each command method
    async def method(self: SMTP, arg: str) -> None:
        self.event_handler.commands.append(verb)
        self.event_handler.command_log.append((verb, _over_tls(self)))
        self.event_handler.sessions[self.session_number].append((verb, _over_tls(self)))
        if verb in ("RSET", "QUIT"):
            self.event_handler.open_envelopes.discard(self.session_number)
        await base(self, arg)

    return method


# Every SMTP command the server understands, recorded before aiosmtpd handles it (even a refused AUTH).
RecordingSMTP = type("RecordingSMTP", (SMTP,),
                     {name: _recorded(name[5:]) for name in dir(SMTP) if name.startswith("smtp_")})


class _Controller(Controller):
    def factory(self) -> SMTP:
        self.handler.connections += 1
        self.handler.sessions.append([])
        server = RecordingSMTP(self.handler, **self.SMTP_kwargs)
        server.session_number = len(self.handler.sessions) - 1
        return server


class SmtpServer:
    """Start with `with SmtpServer() as server:`; `offer_auth` advertises AUTH even without TLS.

    By default it never offers STARTTLS (no TLS context), so a client that insists on TLS must give up.
    With `offer_auth`, AUTH is on offer in clear text, so a client that logs in anyway is caught in
    `auth_attempts` (and `commands`).

    `tls_context` (a server-side SSLContext) offers STARTTLS, `require_starttls` refuses everything
    else before it; `ssl_context` makes the listening socket speak TLS from the first byte (port 465
    style). `login=(user, password)` offers AUTH (after TLS, unless `offer_auth`) and accepts only that.
    `faults` and `data_delay`: see the module docstring.
    """

    def __init__(self, *, offer_auth: bool = False, faults: list[Fault] | tuple[Fault, ...] = (),
                 data_delay: float = 0.0, tls_context: ssl.SSLContext | None = None,
                 require_starttls: bool = False, ssl_context: ssl.SSLContext | None = None,
                 login: tuple[str, str] | None = None, pipelining: bool = True, eight_bit_mime: bool = True) -> None:
        self.recorder = Recorder(faults=list(faults), data_delay=data_delay, login=login, pipelining=pipelining,
                                 eight_bit_mime=eight_bit_mime)
        self.host = HOST
        self.port = free_port()
        kwargs: dict[str, Any] = {}
        if offer_auth or login is not None:
            # aiosmtpd only knows about STARTTLS: on an implicit-TLS socket it must be told AUTH is safe.
            kwargs = {"auth_require_tls": not (offer_auth or ssl_context is not None),
                      "authenticator": self.recorder.authenticate}
        if tls_context is not None:
            kwargs.update(tls_context=tls_context, require_starttls=require_starttls)
        self._controller = _Controller(self.recorder, hostname=self.host, port=self.port, ready_timeout=10,
                                       ssl_context=ssl_context, **kwargs)
        self._implicit_tls = ssl_context is not None

    @property
    def messages(self) -> list[Received]:
        return self.recorder.messages

    @property
    def commands(self) -> list[str]:
        return self.recorder.commands

    @property
    def auth_attempts(self) -> list[str]:
        return self.recorder.mechanisms_tried

    def delivered_to(self, address: str) -> list[Received]:
        """The delivered messages whose envelope names this recipient."""
        return [m for m in self.messages if address in m.rcpt_tos]

    def start(self) -> SmtpServer:
        self._controller.start()
        # The controller's own readiness probe is one connection: not a client's.
        self.recorder.connections = 0
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- driving the real CLI against these servers ---------------------------------------------------------

PASSWORD_ENV = "DIGESTMAIL_TEST_SMTP_PASSWORD"
SECRET_ENV = "DIGESTMAIL_TEST_WEB_SECRET"


def run_cli(cfg: Path, *args: str, now: str, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`python -m digestmail --config CFG --now NOW ARGS` in a subprocess, in the config's folder."""
    base = {k: v for k, v in os.environ.items() if k not in (PASSWORD_ENV, SECRET_ENV, "DIGESTMAIL_CONFIG")}
    return subprocess.run([sys.executable, "-m", "digestmail", "--config", str(cfg), "--now", now, *args],
                          capture_output=True, text=True, timeout=timeout, env={**base, **(env or {})},
                          cwd=cfg.parent)


def run_json(cfg: Path, *, now: str, env: dict[str, str] | None = None,
             command: str = "run") -> tuple[int, dict[str, Any], str]:
    """`digestmail COMMAND --json`: (exit code, the report, stderr)."""
    result = run_cli(cfg, command, "--json", now=now, env=env)
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"no JSON report (exit {result.returncode}):\n{result.stdout}\n{result.stderr}") \
            from None
    return result.returncode, report, result.stderr
