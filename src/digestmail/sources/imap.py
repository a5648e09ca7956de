"""Digests in an IMAP folder (I/O): the only module that talks IMAP, with the stdlib's imaplib.

The folder is read by UID. The caller remembers `(uidvalidity, last_uid)` from the messages it has
stored (`ImapMessage.state`) and passes it to the next `poll`; a message it has stored is then marked
with `done` (keyword `$Digestmail` + `\\Seen`, or moved to another folder), so even a lost state never
reads a handled message twice. Messages are read with BODY.PEEK[], which leaves `\\Seen` alone.

Security: TLS always (implicit TLS, or STARTTLS that must succeed), certificates always verified
against the system's CAs or `ca_file`, and no LOGIN or AUTHENTICATE unless the socket is TLS.

Errors: wrong settings (certificate not trusted, STARTTLS not offered, login refused, folder missing)
are `ConfigError`; a server that cannot be reached or breaks off is `ImapError` (exit code 1: the
other sources still ran).
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import imaplib
import logging
import re
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar
from urllib.parse import quote

from ..config import ImapSettings
from ..errors import ConfigError, SourceError

__all__ = ["BATCH", "KEYWORD", "ImapError", "ImapMessage", "ImapSource"]

log = logging.getLogger("digestmail")
T = TypeVar("T")

KEYWORD = "$Digestmail"
BATCH = 50  # UIDs per FETCH: bounds what one server response holds in memory

_UID = re.compile(rb"\bUID (\d+)")
_CODE = re.compile(r"^\[([A-Z-]+)")
_LIST = re.compile(rb'^\((?P<flags>[^)]*)\) (?:"(?:[^"\\]|\\.)*"|NIL) (?P<name>.*)$', re.IGNORECASE)


class ImapError(SourceError):
    """The IMAP server could not be reached or broke off; other sources still run (exit 1: partial)."""


@dataclass(frozen=True)
class ImapMessage:
    """One message of the folder, as the server stores it; `label` names it in reports."""

    uid: int
    uidvalidity: int
    data: bytes
    label: str = ""

    @property
    def state(self) -> tuple[int, int]:
        """What to remember once this message is stored: the next poll starts after it."""
        return (self.uidvalidity, self.uid)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


class ImapSource:
    """A connection to `[sources.imap]`, opened on first use and kept for later calls.

    Use as `with ImapSource(settings, settings.password()) as source:`; `poll(state)` returns the new
    messages in UID order and `done(message)` marks one as handled once the caller has stored it.
    """

    def __init__(self, settings: ImapSettings, password: str) -> None:
        self.settings = settings
        self._password = password
        self._conn: imaplib.IMAP4 | None = None
        self._caps: frozenset[str] = frozenset()
        self._uidvalidity: int | None = None  # of the selected folder; None when nothing is selected
        self._keywords = False  # the selected folder keeps $Digestmail
        self._target_ready = False  # the move target is known to exist

    # -- public -----------------------------------------------------------------------------------

    @property
    def where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    @property
    def url(self) -> str:
        """`imap://user@host/FOLDER`: how reports name the folder."""
        s = self.settings
        return f"imap://{quote(s.username, safe='')}@{s.host}/{s.folder}"

    def label(self, uid: int) -> str:
        """`imap://user@host/FOLDER;UID=N`: how reports name one message."""
        return f"{self.url};UID={uid}"

    def poll(self, state: tuple[int, int] | None) -> list[ImapMessage]:
        """The folder's messages after `state` (all unhandled ones for None), in UID order."""
        return list(self.iter_messages(state))

    def iter_messages(self, state: tuple[int, int] | None) -> Iterator[ImapMessage]:
        """Like `poll`, one FETCH batch at a time: at most BATCH messages are held here at once.

        `done` may be called between items (the UIDs still to fetch stay valid).
        """
        uidvalidity, uids = self._call(lambda: self._search(state))
        for start in range(0, len(uids), BATCH):
            batch = uids[start:start + BATCH]
            found = self._call(lambda: self._fetch(batch, uidvalidity))
            for uid in batch:
                if uid in found:
                    yield ImapMessage(uid, uidvalidity, found.pop(uid), self.label(uid))
                else:
                    log.debug("%s vanished before it could be read", self.label(uid))

    def done(self, message: ImapMessage) -> None:
        """Mark a stored message as handled: flag it, or move it, as `after` says."""
        self._call(lambda: self._done(message))

    def close(self) -> None:
        """LOGOUT; errors are swallowed (everything that matters has already been done)."""
        conn, self._conn = self._conn, None
        self._uidvalidity = None
        if conn is None:
            return
        try:
            conn.logout()
        except (imaplib.IMAP4.error, OSError, ValueError):
            try:
                conn.shutdown()
            except (OSError, ValueError):
                pass

    def __enter__(self) -> ImapSource:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- connection -------------------------------------------------------------------------------

    def _call(self, work: Callable[[], T]) -> T:
        """Run `work` on a live connection; a dropped idle connection is reopened once."""
        reused = self._conn is not None
        for attempt in (1, 2):
            try:
                self._ensure_connected()
                return work()
            except (imaplib.IMAP4.abort, OSError) as exc:
                # abort = the connection is gone (BYE, EOF, garbage); drop it, the next call reconnects.
                self._drop()
                if isinstance(exc, ssl.SSLCertVerificationError):
                    raise self._cert_error(exc) from None
                if attempt == 1 and reused:
                    log.debug("IMAP connection to %s lost (%s); reconnecting", self.where, exc)
                    continue
                raise ImapError(f"the IMAP connection failed: {_text(exc)}", where=self.where,
                                hint="check [sources.imap] host, port and security, and that the server "
                                     "is up") from None
            except imaplib.IMAP4.error as exc:
                # A command the server answered NO or BAD: the connection is still usable.
                raise ImapError(f"the server refused a command: {_text(exc)}", where=self.where) from None
        raise AssertionError("unreachable")

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self._uidvalidity = None
        self._target_ready = False
        if conn is not None:
            try:
                conn.shutdown()
            except (OSError, ValueError):
                pass

    def _ensure_connected(self) -> None:
        if self._conn is not None:
            return
        s = self.settings
        context = self._tls_context()
        try:
            if s.security == "tls":
                conn: imaplib.IMAP4 = imaplib.IMAP4_SSL(s.host, s.port, ssl_context=context,
                                                        timeout=s.timeout)
            else:
                conn = imaplib.IMAP4(s.host, s.port, timeout=s.timeout)
                self._conn = conn  # so that a failure below closes the socket
                if conn.state != "NONAUTH":  # PREAUTH in clear text: someone skips the login for us
                    raise ConfigError("the server sent PREAUTH before TLS; refusing the connection",
                                      where=self.where, hint="use security = \"tls\"")
                if "STARTTLS" not in conn.capabilities:
                    raise ConfigError("the server does not offer STARTTLS", where=self.where,
                                      hint="use security = \"tls\" (usually port 993), or enable STARTTLS "
                                           "on the server")
                conn.starttls(ssl_context=context)
        except ConfigError:
            self._drop()
            raise
        except ssl.SSLCertVerificationError as exc:
            self._drop()
            raise self._cert_error(exc) from None
        except (OSError, imaplib.IMAP4.error) as exc:
            self._drop()
            raise ImapError(f"cannot connect over TLS: {_text(exc)}", where=self.where,
                            hint="check [sources.imap] host, port and security (tls = implicit TLS, "
                                 "usually 993; starttls = usually 143)") from None
        self._conn = conn
        try:
            self._login(conn)
        except ConfigError:
            self._drop()
            raise

    def _tls_context(self) -> ssl.SSLContext:
        ca_file = self.settings.ca_file
        try:
            return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load CA certificates from {ca_file}: {_text(exc)}",
                              where="sources.imap.ca_file",
                              hint="point ca_file at a PEM file of CA certificates") from None

    def _cert_error(self, exc: ssl.SSLCertVerificationError) -> ConfigError:
        trusted = f"the CA certificates in {self.settings.ca_file}" if self.settings.ca_file \
            else "the system's CA certificates"
        return ConfigError(f"the server's TLS certificate is not trusted: {exc.verify_message or exc} "
                           f"(checked against {trusted})", where=self.where,
                           hint="set sources.imap.ca_file to the CA that signed the server's certificate, "
                                "and check that host is the name on the certificate")

    def _login(self, conn: imaplib.IMAP4) -> None:
        s = self.settings
        if not isinstance(conn.sock, ssl.SSLSocket):  # never; but a password must not go out in clear
            raise ConfigError("refusing to log in over a connection without TLS", where=self.where)
        try:
            if "AUTH=PLAIN" in conn.capabilities:
                # SASL PLAIN carries UTF-8 names and passwords, which LOGIN (ASCII strings) cannot.
                blob = b"\0" + s.username.encode() + b"\0" + self._password.encode()
                conn.authenticate("PLAIN", lambda _challenge: blob)
            elif "LOGINDISABLED" in conn.capabilities:
                raise ConfigError("the server offers neither LOGIN nor AUTH=PLAIN", where=self.where)
            else:
                try:
                    user = _quoted(s.username)
                    _quoted(self._password)  # imaplib quotes the password itself
                except UnicodeEncodeError:
                    raise ConfigError("the server only offers LOGIN, which cannot carry non-ASCII names "
                                      "or passwords (or line breaks)", where=self.where) from None
                conn.login(user, self._password)
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error as exc:
            text = _text(exc)
            self._drop()
            if _code(text) == "UNAVAILABLE":  # the server's auth backend is down: try again later
                raise ImapError(f"login temporarily refused: {text}", where=self.where) from None
            raise ConfigError(f"{s.host} refused the login of {s.username!r}: {text}",
                              where="sources.imap.username",
                              hint=f"check username, and the password in ${s.password_env}") from None
        typ, data = conn.capability()  # the list changes after login (MOVE, UIDPLUS, ...)
        self._caps = frozenset(w.upper() for w in _decode(data[0] if data else b"").split())
        log.debug("logged in to %s as %s; capabilities: %s", self.where, s.username,
                  " ".join(sorted(self._caps)))

    # -- commands ---------------------------------------------------------------------------------

    def _select(self) -> int:
        """SELECT the folder (once per connection); return its UIDVALIDITY."""
        if self._uidvalidity is not None:
            return self._uidvalidity
        conn = self._conn
        assert conn is not None
        folder = self.settings.folder
        try:
            typ, data = conn.select(_mailbox(folder))
        except imaplib.IMAP4.readonly:
            raise ConfigError(f"the folder {folder!r} on {self.settings.host} is read-only for "
                              f"{self.settings.username!r}", where="sources.imap.folder",
                              hint="digestmail flags or moves what it has read; it needs write access") \
                from None
        if typ != "OK":
            names = self._folders()
            close = difflib.get_close_matches(folder, names, n=1)
            hint = f"did you mean {close[0]!r}?" if close else \
                f"folders there: {', '.join(names[:20]) or 'none'}"
            said = re.sub(r"\s*\([\d.+ ]+ secs\)", "", _decode(data[-1] if data else b""))  # dovecot's timing
            raise ConfigError(f"the folder {folder!r} does not exist on {self.settings.host} ({said})",
                              where="sources.imap.folder", hint=hint)
        _, values = conn.response("UIDVALIDITY")
        if not values or not values[-1] or not values[-1].isdigit():
            raise ImapError(f"the server sent no UIDVALIDITY for {folder!r}", where=self.where)
        _, flags = conn.response("PERMANENTFLAGS")
        permanent = _decode(flags[-1] if flags and flags[-1] else b"").split()
        allowed = {f.strip("()").lower() for f in permanent}
        self._keywords = "\\*" in allowed or KEYWORD.lower() in allowed
        self._uidvalidity = int(values[-1])
        return self._uidvalidity

    def _search(self, state: tuple[int, int] | None) -> tuple[int, list[int]]:
        conn = self._conn
        assert conn is not None
        self._uidvalidity = None  # SELECT again: a new poll must see the folder as it is now
        uidvalidity = self._select()
        last = 0
        if state is not None:
            if state[0] == uidvalidity:
                last = state[1]
            else:
                log.info("%s: UIDVALIDITY changed (%d -> %d); reading every unhandled message",
                         self.url, state[0], uidvalidity)
        typ, data = conn.uid("SEARCH", "UID", f"{last + 1}:*", "UNKEYWORD", KEYWORD)
        if typ != "OK":
            raise imaplib.IMAP4.error(data[-1] if data else b"SEARCH failed")
        # `N:*` always matches the highest UID, even one at or below N: drop what was already read.
        uids = sorted({int(u) for chunk in data if chunk for u in chunk.split() if int(u) > last})
        return uidvalidity, uids

    def _fetch(self, uids: list[int], uidvalidity: int) -> dict[int, bytes]:
        conn = self._conn
        assert conn is not None
        if self._select() != uidvalidity:  # reconnected, and the folder was recreated meanwhile
            log.warning("%s: UIDVALIDITY changed while reading; the next poll starts over", self.url)
            return {}
        typ, data = conn.uid("FETCH", ",".join(map(str, uids)), "(UID BODY.PEEK[])")
        if typ != "OK":
            raise imaplib.IMAP4.error(data[-1] if data else b"FETCH failed")
        found: dict[int, bytes] = {}
        for i, item in enumerate(data):
            if not isinstance(item, tuple):
                continue  # ")" closing a literal, or an unsolicited FETCH without a body
            head, body = item
            m = _UID.search(head)
            if m is None and i + 1 < len(data) and isinstance(data[i + 1], bytes):
                m = _UID.search(data[i + 1])  # the server put UID after the body
            if m is not None:
                found[int(m.group(1))] = body
        return found

    def _done(self, message: ImapMessage) -> None:
        conn = self._conn
        assert conn is not None
        if self._select() != message.uidvalidity:
            # The UID now names another message (or none); touching it would be wrong.
            log.warning("%s: the folder's UIDVALIDITY changed; not marking it", message.label)
            return
        uid = str(message.uid)
        after = self.settings.after
        if after == "flag":
            flags = f"(\\Seen {KEYWORD})" if self._keywords else "(\\Seen)"
            _ok(conn.uid("STORE", uid, "+FLAGS.SILENT", flags), "STORE")
            return
        name = after.removeprefix("move:").strip()
        if name == self.settings.folder:
            raise ConfigError(f"after = {after!r} moves messages into the folder they are read from",
                              where="sources.imap.after", hint="move them to another folder, or use 'flag'")
        target = _mailbox(name)
        self._ensure_target(name)
        if "MOVE" in self._caps:
            _ok(conn.uid("MOVE", uid, target), "MOVE")
            return
        _ok(conn.uid("COPY", uid, target), "COPY")
        _ok(conn.uid("STORE", uid, "+FLAGS.SILENT", "(\\Deleted)"), "STORE")
        if "UIDPLUS" in self._caps:
            _ok(conn.uid("EXPUNGE", uid), "EXPUNGE")
        else:  # also removes other messages someone marked \Deleted in this folder
            _ok(conn.expunge(), "EXPUNGE")

    def _ensure_target(self, name: str) -> None:
        if self._target_ready:
            return
        conn = self._conn
        assert conn is not None
        target = _mailbox(name)
        typ, data = conn.list('""', target)
        entries = [_list_entry(item) for item in data if item] if typ == "OK" else []
        exists = any(e is not None and "\\noselect" not in e[0] and "\\nonexistent" not in e[0]
                     for e in entries)
        if not exists:
            typ, data = conn.create(target)
            if typ != "OK" and _code(_decode(data[-1] if data else b"")) != "ALREADYEXISTS":
                raise ConfigError(f"cannot create the folder {name!r} on {self.settings.host}: "
                                  f"{_decode(data[-1] if data else b'')}", where="sources.imap.after",
                                  hint="create it yourself, or move to a folder that exists")
            log.info("created the IMAP folder %r on %s", name, self.settings.host)
        self._target_ready = True

    def _folders(self) -> list[str]:
        """The folder names on the server (for hints); empty when LIST fails."""
        conn = self._conn
        assert conn is not None
        try:
            typ, data = conn.list()
        except imaplib.IMAP4.error:
            return []
        entries = [_list_entry(item) for item in data if item] if typ == "OK" else []
        return sorted(_mutf7_decode(e[1]) for e in entries if e is not None)


# -- helpers --------------------------------------------------------------------------------------


def _ok(response: tuple[str, list], what: str) -> None:  # type: ignore[type-arg]
    typ, data = response
    if typ != "OK":
        raise imaplib.IMAP4.error(f"{what}: {_decode(data[-1] if data else b'')}")


def _decode(value: bytes | str | None) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value or ""


def _text(exc: BaseException) -> str:
    """An imaplib error's message: the server's words, without Python's b'...' around them."""
    if isinstance(exc, ssl.SSLError):
        return re.sub(r"\s*\(_ssl\.c:\d+\)$", "", str(exc))  # "[SSL: WRONG_VERSION_NUMBER] wrong version ..."
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    arg = exc.args[0] if exc.args else ""
    text = _decode(arg) if isinstance(arg, bytes) else str(arg)
    if text.startswith(("b'", 'b"')):  # imaplib formats bytes responses into its messages
        text = re.sub(r"b(['\"])(.*?)\1", r"\2", text)
    return text or type(exc).__name__


def _code(text: str) -> str | None:
    m = _CODE.match(text)
    return m.group(1) if m else None


def _quoted(text: str) -> str:
    """An IMAP quoted string (ASCII only; raises UnicodeEncodeError otherwise)."""
    text.encode("ascii")
    if "\r" in text or "\n" in text:
        raise UnicodeEncodeError("ascii", text, 0, 1, "line breaks cannot be quoted")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _mailbox(name: str) -> str:
    """A folder name as a command argument: modified UTF-7 (RFC 3501 5.1.3), quoted."""
    return _quoted(_mutf7_encode(name))


def _mutf7_encode(name: str) -> str:
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(raw).decode().rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)


def _mutf7_decode(name: str) -> str:
    def one(m: re.Match[str]) -> str:
        chunk = m.group(1).replace(",", "/")
        if not chunk:
            return "&"
        try:
            return base64.b64decode(chunk + "=" * (-len(chunk) % 4)).decode("utf-16-be")
        except ValueError:
            return m.group(0)

    return re.sub(r"&([A-Za-z0-9+,]*)-", one, name)


def _list_entry(item: bytes | tuple[bytes, bytes]) -> tuple[str, str] | None:
    """One LIST response as (lower-cased flags, name), or None when it cannot be read."""
    if isinstance(item, tuple):  # the name came as a literal
        m = _LIST.match(item[0])
        return (_decode(m.group("flags")).lower(), _decode(item[1])) if m else None
    m = _LIST.match(item)
    if m is None:
        return None
    name = m.group("name")
    if name.startswith(b'"') and name.endswith(b'"') and len(name) >= 2:
        name = re.sub(rb"\\(.)", rb"\1", name[1:-1])
    return _decode(m.group("flags")).lower(), _decode(name)
