"""The two body passes of aiosmtplib, replaced by C-speed equivalents (smtp._LineEndings/_LeadingDots), and
the address quoting of MAIL and RCPT with a fast path for plain addresses:
same bytes out as aiosmtplib's own regexes for any input, and a real server receives what was meant.
And the bodies of several connections travel at once: only the dot that ends one waits for the
message before it to be recorded."""

from __future__ import annotations

import re
import socket
import threading
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from digestmail import smtp
from digestmail.config import SmtpSettings
from digestmail.message import Envelope
from digestmail.transport import Outgoing

from .smtp_server import HOST, Received, SmtpServer

# aiosmtplib's own patterns, as its protocol module defines them.
LINE_ENDINGS = re.compile(rb"(?:\r\n|\n|\r(?!\n))")
PERIOD = re.compile(rb"(?m)^\.")

bodies = st.lists(st.sampled_from([b"a", b".", b"..", b"\r", b"\n", b"\r\n", b"x.y", b"\r\n."]),
                  max_size=40).map(b"".join)


def test_aiosmtplib_uses_the_fast_equivalents():
    from aiosmtplib import protocol

    assert smtp.FAST_DATA, "aiosmtplib changed its DATA code: check smtp._speed_up_aiosmtplib"
    assert isinstance(protocol.LINE_ENDINGS_REGEX, smtp._LineEndings)
    assert isinstance(protocol.PERIOD_REGEX, smtp._LeadingDots)
    assert smtp._speed_up_aiosmtplib()  # applying it twice changes nothing


@settings(max_examples=500)
@given(bodies)
def test_line_endings_equal_the_regex(data):
    assert smtp._LineEndings(LINE_ENDINGS).sub(b"\r\n", data) == LINE_ENDINGS.sub(b"\r\n", data)


@settings(max_examples=500)
@given(bodies)
def test_leading_dots_equal_the_regex(data):
    assert smtp._LeadingDots(PERIOD).sub(b"..", data) == PERIOD.sub(b"..", data)


def sent_once(data: bytes) -> Received:
    """What a fresh server received when SmtpTransport.send gave it `data` (bytes of someone else's:
    not `ready`)."""
    with SmtpServer() as server:
        settings_ = SmtpSettings(host=HOST, port=server.port, security="none", username="", password_env="",
                                 timeout=5, ca_file=None, max_connections=1)
        client = smtp.SmtpTransport(settings_)
        try:
            client.send(data, Envelope("papers@example.org", ("reader@example.org",)), "k")
        finally:
            client.close()
        (received,) = server.messages
    return received


def test_a_server_receives_lone_line_ends_normalised_and_dots_intact():
    body = (b"Subject: dots\r\n\r\n.starts with a dot\n..two dots\rlone CR\r\n.\r\nend.\r\n")
    received = sent_once(body)
    # aiosmtpd undoes the dot-stuffing: what arrives is the message with CRLF line ends, every dot kept.
    assert received.data == b"Subject: dots\r\n\r\n.starts with a dot\r\n..two dots\r\nlone CR\r\n.\r\nend.\r\n"


def wire_ready(data: bytes) -> bool:
    """CRLF line ends only, and no line starting with "." (what DATA sends unchanged)."""
    lines = data.split(b"\r\n")
    return lines[-1] == b"" and all(b"\r" not in l and b"\n" not in l and not l.startswith(b".") for l in lines)


def test_ready_messages_skip_both_passes_untouched():
    data = smtp._Ready(b"a\n.b\r")  # (never true of a ready message: shows the passes do not look)
    assert smtp._LineEndings(LINE_ENDINGS).sub(b"\r\n", data) is data
    assert smtp._LeadingDots(PERIOD).sub(b"..", data) is data


def test_a_built_and_signed_message_is_ready_and_arrives_byte_for_byte():
    import datetime as dt

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from digestmail import message
    from digestmail.dkim import DkimSigner
    from digestmail.models import RenderedEmail
    from digestmail.transport import Outgoing

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    text = ".leading dot\n" + "x" * 75 + ".after a soft break\n.\n..\nend"
    rendered = RenderedEmail(subject=".dots", html="<p>.x</p>\n.<b>y</b>", text=text)
    moment = dt.datetime(2026, 11, 23, 8, tzinfo=dt.timezone.utc)
    data = message.build(rendered, sender=("Papers", "papers@example.org"), to=("Reader", "reader@example.org"),
                         message_id="e1@example.org", date=moment)
    data = DkimSigner("example.org", "mail", key).sign(data, moment)
    assert wire_ready(data)
    with SmtpServer() as server:
        settings_ = SmtpSettings(host=HOST, port=server.port, security="none", username="", password_env="",
                                 timeout=5, ca_file=None, max_connections=1)
        client = smtp.SmtpTransport(settings_)
        try:
            outcome = []
            client.send_many([Outgoing(Envelope("papers@example.org", ("reader@example.org",)), "k", data,
                                       ready=True)], lambda _, error: outcome.append(error))
        finally:
            client.close()
        (received,) = server.messages
    assert outcome == [None] and received.data == data


addresses = st.lists(st.sampled_from(["a", "Z", "0", ".", "..", "@", "-", "_", "+", " ", "<", ">", '"', "é",
                                      "(c)", ",", "\r\n", "x@y.org", "b.c"]), max_size=12).map("".join)


def test_quote_address_has_the_fast_path():
    from aiosmtplib import smtp as aio

    assert smtp.FAST_ADDRESSES, "aiosmtplib changed its MAIL/RCPT code: check smtp._speed_up_addresses"
    assert aio.quote_address.slow is not None
    assert smtp._speed_up_addresses() and aio.quote_address.slow.__module__ == "aiosmtplib.email"
    assert aio.quote_address("reader.one+papers@mail.example.org") == "<reader.one+papers@mail.example.org>"


@settings(max_examples=1000)
@given(addresses)
def test_quote_address_equals_aiosmtplibs(address):
    from aiosmtplib import email as aio_email
    from aiosmtplib import smtp as aio

    try:
        expected: object = aio_email.quote_address(address)
    except ValueError as exc:  # an address that cannot go on a command line: refused the same way
        expected = type(exc)
    try:
        got: object = aio.quote_address(address)
    except ValueError as exc:
        got = type(exc)
    assert got == expected


class _HoldingServer:
    """A bare SMTP server on two connections, offering PIPELINING, that answers the first ending dot
    (on either connection) only once the other connection's whole body has arrived, or after
    `patience` seconds. A client that sends a body only after the message before it got its 250
    keeps it waiting out its patience."""

    def __init__(self, patience: float = 3.0) -> None:
        self.patience = patience
        self.bodies = (threading.Event(), threading.Event())  # each connection's body has arrived
        self.lock = threading.Lock()
        self.first = True
        self.held_for: float | None = None
        self.server = socket.create_server((HOST, 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        for n in range(2):
            conn, _ = self.server.accept()
            threading.Thread(target=self._session, args=(conn, n), daemon=True).start()

    def _session(self, conn: socket.socket, n: int) -> None:
        f = conn.makefile("rwb")

        def say(*lines: str) -> None:
            f.write(b"".join(line.encode() + b"\r\n" for line in lines))
            f.flush()

        say("220 holding")
        while line := f.readline():
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                say("250-holding", "250-PIPELINING", "250 8BITMIME")
            elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                say("250 ok")
            elif verb == b"DATA":
                say("354 go on")
                while (chunk := f.readline()) != b".\r\n":
                    if chunk == b"-- end of body --\r\n":
                        self.bodies[n].set()
                with self.lock:
                    first, self.first = self.first, False
                if first:  # the first verdict waits for the other connection's body
                    start = time.monotonic()
                    self.bodies[1 - n].wait(self.patience)
                    self.held_for = time.monotonic() - start
                say("250 queued")
            elif verb == b"QUIT":
                say("221 bye")
                break
        conn.close()


def test_a_body_goes_out_while_another_message_waits_for_its_verdict():
    # Only the dot that ends a message waits for the one before it to be recorded (the crash window
    # stays one message); the bodies of other connections are on their way meanwhile.
    server = _HoldingServer()
    settings_ = SmtpSettings(host=HOST, port=server.port, security="none", username="", password_env="",
                             timeout=10, ca_file=None, max_connections=2)
    client = smtp.SmtpTransport(settings_)
    body = b"Subject: held\r\n\r\n" + b"line of the body\r\n" * 2000 + b"-- end of body --\r\n"
    outcomes: list[tuple[str, object]] = []
    try:
        client.send_many([Outgoing(Envelope("papers@example.org", (f"r{i}@example.org",)), f"k{i}", body,
                                   ready=True) for i in range(2)],
                         lambda item, error: outcomes.append((item.key, error)))
    finally:
        client.close()
    assert sorted(outcomes) == [("k0", None), ("k1", None)]
    assert server.held_for is not None and server.held_for < 2.0  # the second body came, not the patience


def test_a_server_that_says_354_after_refusing_every_recipient_gets_an_empty_message_and_stays_in_step():
    # Some servers answer DATA with 354 even when every RCPT was refused: the pipelined client ends
    # that message empty, reports the refusal, and the connection carries the next message.
    got: list[bytes] = []
    server = socket.create_server((HOST, 0))

    def session() -> None:
        conn, _ = server.accept()
        f = conn.makefile("rwb")
        refused = False

        def say(line: str) -> None:
            f.write(line.encode() + b"\r\n")
            f.flush()

        say("220 lenient")
        while line := f.readline():
            verb = line[:4].upper()
            if verb == b"EHLO":
                f.write(b"250-lenient\r\n250 PIPELINING\r\n")
                f.flush()
            elif verb == b"RCPT":
                refused = b"gone@" in line
                say("550 no such user" if refused else "250 ok")
            elif verb == b"DATA":
                say("354 go on")
                body = b""
                while (chunk := f.readline()) != b".\r\n":
                    body += chunk
                got.append(body)
                say("554 no valid recipients" if refused else "250 queued")
            elif verb == b"QUIT":
                say("221 bye")
                break
            else:  # MAIL, RSET, NOOP
                say("250 ok")
        conn.close()

    threading.Thread(target=session, daemon=True).start()
    settings_ = SmtpSettings(host=HOST, port=server.getsockname()[1], security="none", username="",
                             password_env="", timeout=10, ca_file=None, max_connections=1)
    client = smtp.SmtpTransport(settings_)
    outcomes: list[tuple[str, object]] = []
    try:
        body = b"Subject: x\r\n\r\nhello\r\n"
        client.send_many([Outgoing(Envelope("papers@example.org", (to,)), to, body, ready=True)
                          for to in ("gone@example.org", "here@example.org")],
                         lambda item, error: outcomes.append((item.key, error)))
    finally:
        client.close()
        server.close()
    (gone, gone_error), (here, here_error) = outcomes
    assert (gone, here) == ("gone@example.org", "here@example.org")
    assert gone_error.refused and gone_error.permanent and "550" in str(gone_error)
    assert here_error is None
    assert got == [b"", body]  # the refused one ended empty, the next one whole


def test_8bit_bytes_that_are_not_ours_are_announced_with_body_8bitmime():
    # Bytes message.build did not make (not `ready`) go as they are; when they are 8-bit and the server
    # offers 8BITMIME, MAIL says so (RFC 6152), which a strict server requires.
    data = "Subject: café\r\n\r\nnaïve\r\n".encode()
    received = sent_once(data)
    assert received.data == data and "BODY=8BITMIME" in received.mail_options
