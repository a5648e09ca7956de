"""The SMTP transport: a pool of persistent aiosmtplib connections (the only module that uses aiosmtplib)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator

import aiosmtplib

from .config import SmtpSettings
from .errors import DeliveryError, DigestmailError
from .message import Envelope, seven_bit
from .transport import Done, Outgoing


IDLE_CHECK = 2.0  # seconds: a connection idle longer is checked with NOOP before the next message


class _Ready(bytes):
    """Message bytes that are ready for DATA as they are: message.build's output (CRLF line ends only,
    no line starting with "."; tests/test_message.py proves both for every message it builds), plus a
    DKIM header made the same way. Both passes below hand these back untouched."""


class _LineEndings:
    """aiosmtplib's CRLF normalisation with the same result, at C speed when there is nothing to do.

    aiosmtplib runs two regular expressions over every message body before DATA (line endings, then
    dot-stuffing); on our 40–90 KB messages they were half of its CPU per message. Every message
    digestmail builds has CRLF line endings only, so the first pass changes nothing: three counts
    prove that (every CR and every LF belongs to a CRLF) and the regex runs only when they do not.
    """

    def __init__(self, regex: re.Pattern[bytes]) -> None:
        self.regex = regex

    def sub(self, repl: bytes, data: bytes, count: int = 0) -> bytes:
        if isinstance(data, _Ready):
            return data
        if repl == b"\r\n" and not count and data.count(b"\r") == data.count(b"\n") == data.count(b"\r\n"):
            return data
        return self.regex.sub(repl, data, count)


class _LeadingDots:
    """aiosmtplib's dot-stuffing (`(?m)^\\.` → `..`) as two C-speed replaces: a dot at the start of the
    data or after any LF gets a second dot, exactly as the regex does."""

    def __init__(self, regex: re.Pattern[bytes]) -> None:
        self.regex = regex

    def sub(self, repl: bytes, data: bytes, count: int = 0) -> bytes:
        if isinstance(data, _Ready):
            return data
        if repl != b".." or count:
            return self.regex.sub(repl, data, count)
        data = data.replace(b"\n.", b"\n..")
        return b"." + data if data.startswith(b".") else data


def _speed_up_aiosmtplib() -> bool:
    """Put the equivalents above in place of the two regexes in aiosmtplib's protocol module, if that
    module still has them as we know them (otherwise leave it alone: slower, equally correct)."""
    from aiosmtplib import protocol

    lines, dots = getattr(protocol, "LINE_ENDINGS_REGEX", None), getattr(protocol, "PERIOD_REGEX", None)
    if isinstance(lines, _LineEndings) and isinstance(dots, _LeadingDots):
        return True
    if not (isinstance(lines, re.Pattern) and lines.pattern == rb"(?:\r\n|\n|\r(?!\n))"
            and isinstance(dots, re.Pattern) and dots.pattern == rb"(?m)^\."):
        return False
    protocol.LINE_ENDINGS_REGEX = _LineEndings(lines)  # type: ignore[assignment]
    protocol.PERIOD_REGEX = _LeadingDots(dots)  # type: ignore[assignment]
    return True


FAST_DATA = _speed_up_aiosmtplib()

# A plain dot-atom address: email.utils.parseaddr hands it back unchanged and nothing in it needs
# quoting, so `<address>` is what aiosmtplib's quote_address makes of it (tests/test_smtp_data.py
# checks the two agree), without parseaddr's ~40 µs twice per message.
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")


def _quick_quote(slow: Callable[[str], str]) -> Callable[[str], str]:
    def quote_address(address: str) -> str:
        return f"<{address}>" if _PLAIN_ADDRESS.fullmatch(address) else slow(address)

    quote_address.slow = slow  # type: ignore[attr-defined]
    return quote_address


def _speed_up_addresses() -> bool:
    """Put the fast path above in front of the quote_address aiosmtplib's MAIL and RCPT use."""
    from aiosmtplib import smtp

    current = getattr(smtp, "quote_address", None)
    if current is None or getattr(current, "slow", None) is not None:
        return current is not None
    smtp.quote_address = _quick_quote(current)  # type: ignore[attr-defined]
    return True


FAST_ADDRESSES = _speed_up_addresses()


def _can_pipeline() -> bool:
    """Whether aiosmtplib's protocol is still made as `_Pipelined` expects: the parser of one reply from
    its buffer, and its read and write (the buffer itself, a bytearray, is checked on each connection)."""
    from aiosmtplib.protocol import SMTPProtocol

    return all(callable(getattr(SMTPProtocol, name, None))
               for name in ("_read_response_from_buffer", "read_response", "write"))


PIPELINING = _can_pipeline()


class _Pipelined:
    """One message's MAIL, RCPT and DATA in one write and their replies read together (RFC 2920
    PIPELINING, which Postfix, Exchange and the big providers offer), then the message: two waits on
    the server per message instead of four. It saved ~0.1 ms of CPU per message here, a tenth of what
    the sending process spends on one.

    aiosmtplib reads one reply per command it sends: on its protocol, a reply that arrives with an
    earlier one stays in its buffer, and `replies` takes it from there (the same parser, in the same
    order); replies that arrive later come through `read_response` as usual. Only for messages that
    are ready for DATA (message.build's) and plain addresses; anything else, and a server without
    PIPELINING, goes the one-command-at-a-time way.
    """

    def __init__(self, client: aiosmtplib.SMTP) -> None:
        self.client = client
        self.protocol = client.protocol

    async def replies(self, n: int, got: list[aiosmtplib.SMTPResponse]) -> None:
        """Read n replies into `got` (kept there if the connection drops after some of them)."""
        protocol = self.protocol
        for _ in range(n):
            reply = protocol._read_response_from_buffer() if protocol._buffer else None  # type: ignore[union-attr]
            if reply is None:
                reply = await protocol.read_response(timeout=None)  # type: ignore[union-attr]
            # Set again at once (nothing runs between): a reply arriving before our next read is kept.
            protocol._response_pending = True  # type: ignore[union-attr]
            got.append(reply)
        protocol._response_pending = False  # type: ignore[union-attr]

    async def envelope(self, sender: str, recipients: tuple[str, ...], options: list[str]) -> None:
        """MAIL (with `options`), every RCPT and DATA; raises as aiosmtplib's mail(), rcpt() and data()
        would, for the first that failed (after reading every reply, so the connection stays in
        step). The addresses are plain (smtp._PLAIN_ADDRESS): `<address>` is their quoted form, with
        nothing in them a command could be split at."""
        lines = [b"MAIL FROM:<%s>%s\r\n" % (sender.encode("ascii"), "".join(" " + o for o in options).encode())]
        lines.extend(b"RCPT TO:<%s>\r\n" % r.encode("ascii") for r in recipients)
        lines.append(b"DATA\r\n")
        self.protocol._response_pending = True  # type: ignore[union-attr]
        self.protocol.write(b"".join(lines))  # type: ignore[union-attr]
        got: list[aiosmtplib.SMTPResponse] = []
        try:
            await self.replies(len(lines), got)
        except aiosmtplib.SMTPServerDisconnected:
            if not any(_failed(reply, k, len(lines)) for k, reply in enumerate(got)):
                raise  # else the refusal it sent before hanging up says more (a 421 does just that)
        failed = [k for k, reply in enumerate(got) if _failed(reply, k, len(lines))]
        if any(reply.code == 421 for reply in got) or len(got) < len(lines):
            self.client.close()  # as aiosmtplib does after a 421: the server is closing
        elif failed and got[-1].code == 354:
            # Some servers say 354 even when every RCPT was refused: an empty message ends it (its
            # verdict says nothing more than the refusal raised below).
            with contextlib.suppress(aiosmtplib.SMTPDataError):
                await self.end()
        if failed:
            k = failed[0]
            reply = got[k]
            if k == 0:
                raise aiosmtplib.SMTPSenderRefused(reply.code, reply.message, sender)
            if k < len(lines) - 1:
                raise aiosmtplib.SMTPRecipientRefused(reply.code, reply.message, recipients[k - 1])
            raise aiosmtplib.SMTPDataError(reply.code, reply.message)

    def body(self, data: bytes) -> None:
        """The message after DATA's 354, all but the dot that ends it: `data` is ready for DATA (CRLF
        only, no line starting with "."). Nothing waits here; the server takes nothing until `end`."""
        self.protocol.write(data)  # type: ignore[union-attr]

    async def end(self) -> None:
        """The dot that ends the message, and the server's verdict on it."""
        self.protocol._response_pending = True  # type: ignore[union-attr]
        self.protocol.write(b".\r\n")  # type: ignore[union-attr]
        got: list[aiosmtplib.SMTPResponse] = []
        await self.replies(1, got)
        if got[0].code != 250:
            raise aiosmtplib.SMTPDataError(got[0].code, got[0].message)


def _failed(reply: aiosmtplib.SMTPResponse, k: int, n: int) -> bool:
    """Whether the k-th of n pipelined replies (MAIL, RCPTs, DATA) refuses, as aiosmtplib would judge it."""
    if k == 0:
        return reply.code != 250
    if k < n - 1:
        return reply.code not in (250, 251)
    return reply.code != 354


class SmtpTransport:
    """A pool of up to `max_connections` persistent SMTP connections; TLS as configured, never downgraded.

    `send_many` keeps every connection busy: envelopes (MAIL, RCPT) and, where pipelined, the bodies
    go out on all of them at once, but only one message at a time is between the dot that ends its
    DATA and the caller's `done`, which records the server's 250. So a crash can leave at most one
    message accepted but not recorded (at most one duplicate per crash), however many connections
    are open.

    The pipeline is synchronous; this class owns an event loop so `async` stays at this edge.
    """

    name = "smtp"

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self.password = settings.password()  # fail before the first message if the secret is missing
        self._runner = asyncio.Runner()
        self._clients: list[aiosmtplib.SMTP | None] = [None] * max(settings.max_connections, 1)
        self._last_used = [0.0] * len(self._clients)
        # When the command each connection waits on was sent (0: none), and whether `_watch` gave up on it.
        self._asked = [0.0] * len(self._clients)
        self._timed_out = [False] * len(self._clients)
        self._next_slot = 0.0  # rate_per_second: the earliest monotonic time the next message may go
        self._sent_at: collections.deque[float] = collections.deque()  # max_per_hour: sends in the last hour

    def already_sent(self, count: int) -> None:
        """Messages sent within the last hour before this transport existed (they count towards max_per_hour)."""
        now = time.monotonic()
        self._sent_at.extend([now] * count)

    async def _throttle(self) -> float | None:
        """Hold to rate_per_second; refuse (a temporary failure, so deferred) beyond max_per_hour.
        Both count every message of the pool, whichever connection carries it; returns the place
        this message took in the hour's count (given back if it is not sent)."""
        s = self.settings
        now = time.monotonic()
        if s.max_per_hour:
            while self._sent_at and now - self._sent_at[0] >= 3600:
                self._sent_at.popleft()
            if len(self._sent_at) >= s.max_per_hour:
                raise DeliveryError(f"max_per_hour ({s.max_per_hour}) reached", where=self._where,
                                    hint="the rest is deferred and retried later; raise [delivery.smtp] max_per_hour "
                                         "if your provider allows more")
            self._sent_at.append(now)  # taken now, so two connections cannot both take the last one
        if s.rate_per_second:
            slot = max(now, self._next_slot)
            self._next_slot = slot + 1.0 / s.rate_per_second
            if slot > now:
                await asyncio.sleep(slot - now)
        return now if s.max_per_hour else None

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
        if client.is_ehlo_or_helo_needed:
            # Now rather than in the first MAIL (as aiosmtplib would): the extensions must be known
            # before a connection's first message, or it never goes pipelined.
            try:
                await client.ehlo()
            except aiosmtplib.SMTPHeloError:
                await client.helo()
        return client

    async def _ready(self, slot: int) -> aiosmtplib.SMTP:
        """A live connection for this slot: the pooled one if a NOOP says it is still there, else a new one.

        Checking first means a hang-up during the message itself is never mistaken for an idle
        connection the server closed: that one is deferred, not resent at once (it may have arrived).
        """
        client = self._clients[slot]
        if client is not None and client.is_connected:
            if time.monotonic() - self._last_used[slot] < IDLE_CHECK:  # just used: no round trip needed
                return client
            try:
                await client.noop()
                return client
            except (aiosmtplib.SMTPException, OSError):
                client.close()
        self._clients[slot] = None
        try:
            client = self._clients[slot] = await self._connect()
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(f"the server refused the login: {exc.code} {exc.message}", where=self._where,
                                hint="check [delivery.smtp] username and the password in password_env") from None
        return client

    async def _send(self, slot: int, item: Outgoing, data: bytes, data_lock: asyncio.Lock,
                    done: Done) -> None:
        """One message on one connection; `done` runs inside the DATA lock, right after the 250."""
        envelope = item.envelope
        reserved = None
        self._timed_out[slot] = False  # the watchdog may have closed this slot's last connection just after its reply
        try:
            reserved = await self._throttle()
            client = await self._ready(slot)
            if not data.isascii():  # an 8bit text part (message.build's `eight_bit`), or another's 8-bit bytes
                if client.supports_extension("8bitmime"):
                    options = ["BODY=8BITMIME"]  # RFC 6152
                elif item.ready:
                    data, options = seven_bit(data), []
                else:
                    options = []  # not ours to re-encode: it goes as it is, as it always has
            else:
                options = []
            # MAIL and RCPT by hand rather than sendmail(): it would scan the whole body once more
            # only to compute SIZE, which for our CRLF-only bodies is simply their length.
            if client.supports_extension("size"):
                options.append(f"SIZE={len(data)}")
            # timeout=None: `_watch` times these out, one timer for the pool instead of one per command.
            asked = self._asked
            asked[slot] = time.monotonic()
            message: Callable[[], Awaitable[object]]
            if (item.ready and PIPELINING and client.supports_extension("pipelining")
                    and isinstance(getattr(client.protocol, "_buffer", None), bytearray)
                    and all(map(_PLAIN_ADDRESS.fullmatch, (envelope.sender, *envelope.recipients)))):
                piped = _Pipelined(client)
                await piped.envelope(envelope.sender, envelope.recipients, options)
                # The body goes now, on every connection at once; only its ending dot waits for the
                # lock (a message is the server's at the dot, not before).
                piped.body(data)
                message = piped.end
            else:
                await client.mail(envelope.sender, options=options, timeout=None)
                for recipient in envelope.recipients:
                    asked[slot] = time.monotonic()
                    await client.rcpt(recipient, timeout=None)
                message = functools.partial(client.data, _Ready(data) if item.ready else data, timeout=None)
            asked[slot] = 0.0  # waiting for the DATA lock is not waiting for the server
            async with data_lock:
                asked[slot] = time.monotonic()
                await message()
                asked[slot] = 0.0
                self._last_used[slot] = time.monotonic()
                done(item, None)
            return
        except DeliveryError as exc:
            error: DeliveryError = exc
        except aiosmtplib.SMTPRecipientRefused as exc:
            error = DeliveryError(f"recipient refused: {exc.code} {exc.message}", where=self._where,
                                  code=exc.code, refused=exc.code >= 500)
        except aiosmtplib.SMTPSenderRefused as exc:
            # Our own address refused: nothing to do with the recipient, and it may be fixed by the admin.
            error = DeliveryError(f"the server refused our sender address: {exc.code} {exc.message}",
                                  where=self._where, code=exc.code,
                                  hint="check [delivery] from against what the server lets you send as")
        except aiosmtplib.SMTPDataError as exc:  # a 5xx here refuses this message (size, content), not the address
            error = DeliveryError(f"the server refused the message: {exc.code} {exc.message}", where=self._where,
                                  code=exc.code, permanent=exc.code >= 500)
        except aiosmtplib.SMTPResponseException as exc:
            error = DeliveryError(f"the server answered {exc.code} {exc.message}", where=self._where, code=exc.code)
        except (aiosmtplib.SMTPException, OSError) as exc:  # dropped, timed out, TLS refused: retried later
            self._drop(slot)
            if self._timed_out[slot]:
                error = DeliveryError(f"SMTP failed: timed out: no answer within {self.settings.timeout:g} s",
                                      where=self._where, hint="the server is slow or stuck; raise [delivery.smtp] "
                                                              "timeout if it is only slow")
            else:
                error = DeliveryError(f"SMTP failed: {exc}", where=self._where,
                                      hint="check [delivery.smtp] host, port, security and ca_file")
        self._asked[slot] = 0.0
        self._timed_out[slot] = False
        if reserved is not None:
            self._sent_at.remove(reserved)  # only what the server took counts towards max_per_hour
        await self._reset(slot)
        done(item, error)

    @property
    def where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    _where = where

    def _drop(self, slot: int) -> None:
        client, self._clients[slot] = self._clients[slot], None
        if client is not None:
            client.close()

    async def _reset(self, slot: int) -> None:
        """RSET after a refusal; a server that hung up (421) is dropped and reconnected next time."""
        client = self._clients[slot]
        try:
            if client is not None and client.is_connected:
                await client.rset()
        except (aiosmtplib.SMTPException, OSError):
            self._drop(slot)

    async def _watch(self) -> None:
        """Hang up on a connection whose server has not answered its command within `timeout` (checked
        every quarter of it, at most every second): its message then fails like any dropped one
        (deferred, never resent at once)."""
        timeout = self.settings.timeout
        while True:
            await asyncio.sleep(min(max(timeout / 4, 0.05), 1.0))
            now = time.monotonic()
            for slot, asked in enumerate(self._asked):
                if asked and now - asked > timeout and not self._timed_out[slot]:
                    self._timed_out[slot] = True
                    client = self._clients[slot]
                    if client is not None:
                        client.close()  # the command's wait ends in SMTPServerDisconnected

    async def _send_many(self, items: Iterator[Outgoing], done: Done) -> None:
        data_lock = asyncio.Lock()

        async def connection(slot: int) -> None:
            # Each pulls its next message itself: `items` is a plain iterator, only ever advanced
            # between two awaits, so the connections never step on each other.
            for item in items:
                try:
                    data = item.data
                    if not isinstance(data, bytes):
                        # Mostly built already (the editions are chosen ahead): then taken as it is, as
                        # wrap_future would hand it over through the loop's self-pipe and one more turn.
                        data = data.result() if data.done() else await asyncio.wrap_future(data)
                except DigestmailError as exc:  # the message could not be built: nothing to send
                    done(item, exc)
                    continue
                await self._send(slot, item, data, data_lock, done)

        tasks = [asyncio.ensure_future(connection(slot)) for slot in range(len(self._clients))]
        watch = asyncio.ensure_future(self._watch())
        try:
            await asyncio.gather(*tasks)
        finally:  # one failed (the caller's iterator or `done` raised): stop the others here, not later
            for task in (*tasks, watch):
                task.cancel()
            await asyncio.gather(*tasks, watch, return_exceptions=True)

    def send_many(self, items: Iterable[Outgoing], done: Done) -> None:
        self._runner.run(self._send_many(iter(items), done))

    def send(self, data: bytes, envelope: Envelope, key: str) -> None:
        outcome: list[DigestmailError | None] = []
        self.send_many([Outgoing(envelope, key, data)], lambda _, error: outcome.append(error))
        if outcome[0] is not None:
            raise outcome[0]

    def close(self) -> None:
        clients, self._clients = self._clients, [None] * len(self._clients)

        async def quit_all() -> None:
            for client in clients:
                try:
                    if client is not None and client.is_connected:
                        await client.quit()
                except (aiosmtplib.SMTPException, OSError):
                    pass  # the messages are already handed over; a failed QUIT loses nothing

        try:
            if any(client is not None for client in clients):
                self._runner.run(quit_all())
        finally:
            self._runner.close()
