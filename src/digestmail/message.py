"""The bytes of an email, written directly (pure): every header value checked and encoded here.

We do not hand values to `email.message.EmailMessage`: it costs 6–14 ms a message, and the Python on
our machines (3.11.7) re-folds encoded words into real CRLFs (CVE-2024-6923). Instead no value with a
control character is accepted, non-ASCII and anything that looks like an encoded word is base64-encoded
into RFC 2047 words; the HTML part is base64, and the text part goes as it is where it safely can
(see `text_body`: "7bit" when it is ASCII, "8bit" when the caller allows it), quoted-printable
otherwise; all with CRLF line ends.

What `build` returns is ready for SMTP's DATA as it is: every line ends in CRLF and none starts with
"." (headers start with a name or a folding space, base64 has no ".", a text part goes as it is only
when no line of it starts with ".", and a quoted-printable line that would start with "." starts
with "=2E" instead), so nothing needs normalising or dot-stuffing. An "8bit" message needs a server
that offers 8BITMIME; `seven_bit` turns it into the quoted-printable one for a server that does not.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import email.utils
import itertools
import re
import struct
from dataclasses import dataclass

from .errors import HeaderError
from .models import RenderedEmail

try:
    # libbase64 through pybase64 (SIMD where the processor has it): ~4 µs for a 37 KB HTML part
    # where binascii, a byte at a time, takes ~38 (17 instructions a byte: 10 % of a build
    # process's instructions). The same bytes; the standard library's where it is missing.
    from pybase64 import b64encode as _b64encode
except ImportError:  # pragma: no cover - pybase64 is a dependency; kept working without it
    def _b64encode(data: bytes) -> bytes:
        return binascii.b2a_base64(data, newline=False)

_ATEXT_PHRASE = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?: [A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
# A dot-atom local part and an ASCII domain: nothing a header parser could split into two addresses.
ADDRESS = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
                     r"@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$")
_MESSAGE_ID = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+$")
_MAX_WORD = 75  # RFC 2047: an encoded word is at most 75 characters
_LINE = 76  # RFC 2047 lines holding encoded words; also keeps us under RFC 5322's 78
_HARD_LINE = 998  # RFC 5322's limit for any line, CRLF not counted
# C0 and C1 controls, DEL, and the Unicode line/paragraph separators that str.splitlines() honours.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


@dataclass(frozen=True)
class Envelope:
    """The SMTP envelope: who the message is from and exactly whom it goes to."""

    sender: str
    recipients: tuple[str, ...]


def control_character(value: str) -> str | None:
    """The first character that must never reach a header (CR, LF, any control, NEL, U+2028…)."""
    m = _CONTROL.search(value)
    return m.group() if m else None


def check(value: str, what: str) -> str:
    """Refuse CR, LF and every other control character in a header value."""
    bad = control_character(value)
    if bad is not None:
        raise HeaderError(f"{what} contains the control character {bad!r}",
                          hint="header values cannot carry line breaks or control characters")
    return value


def _plain_fits(name: str, value: str) -> bool:
    """Plain ASCII that no parser would decode, with every word fitting on a folded line."""
    return (value.isascii() and "=?" not in value and "  " not in value and value == value.strip()
            and _words_fit(name, value.split(" ")))


def _words_fit(name: str, words: list[str]) -> bool:
    """Every word fits on a folded line of header `name` (the first after "Name: ")."""
    return len(name) + 2 + len(words[0]) <= _LINE and all(len(w) + 1 <= _LINE for w in words)


def encode_words(text: str, first_room: int = _MAX_WORD) -> list[str]:
    """RFC 2047 base64 words, never splitting a UTF-8 sequence; the first word fits in `first_room`."""
    prefix, suffix = "=?utf-8?b?", "?="

    def raw_bytes(room: int) -> int:  # how many bytes base64-encode into `room` characters
        return max((room - len(prefix) - len(suffix)) // 4 * 3, 3)

    room = raw_bytes(min(first_room, _MAX_WORD))
    words, chunk = [], b""
    for ch in text:
        b = ch.encode("utf-8")
        if chunk and len(chunk) + len(b) > room:
            words.append(prefix + base64.b64encode(chunk).decode("ascii") + suffix)
            chunk, room = b"", raw_bytes(_MAX_WORD)
        chunk += b
    if chunk or not words:
        words.append(prefix + base64.b64encode(chunk).decode("ascii") + suffix)
    return words


def fold(name: str, tokens: list[str]) -> str:
    """Join tokens with spaces, breaking lines before a token that would pass 76 columns. A token is
    never split: one that cannot fit on a line of RFC 5322's 998 octets is refused."""
    line = name + ":"
    lines = []
    for tok in tokens:
        if len(tok) > _HARD_LINE - len(name) - 2:  # (the first line also holds "Name: ")
            raise HeaderError(f"the {name} header would hold a {len(tok)}-character word, too long for a "
                              f"header line (RFC 5322: {_HARD_LINE} octets)",
                              hint="shorten the value (an address, a URL, the list name) that it comes from")
        if len(line) + 1 + len(tok) > _LINE and line != name + ":":
            lines.append(line)
            line = ""
        line += " " + tok
    lines.append(line)
    return "\r\n".join(lines)


def text_header(name: str, value: str) -> str:
    """An unstructured header (Subject): plain when plain ASCII, else encoded words."""
    check(value, name)
    if _plain_fits(name, value):
        return fold(name, value.split(" "))
    return fold(name, encode_words(value, first_room=_LINE - len(name) - 2))


def _address_tokens(header: str, name: str, addr: str) -> list[str]:
    check(name, "display name")
    check(addr, "address")
    if not ADDRESS.match(addr):
        raise HeaderError(f"{addr!r} is not an address we can put in a header",
                          hint="use a plain ASCII address like ada@example.org")
    # A quoted string (for specials or exact spacing) is one token: never folded inside.
    return _phrase_tokens(header, name) + [f"<{addr}>"] if name else [addr]


def address_header(header: str, display: str, addr: str) -> str:
    return fold(header, _address_tokens(header, display, addr))


def text_body(text: str, eight_bit: bool = False) -> tuple[str, bytes]:
    """The text part's Content-Transfer-Encoding and body (CRLF line ends).

    As it is wherever that is safe: "7bit" for ASCII, "8bit" (UTF-8) when `eight_bit` allows it,
    if no line passes RFC 5322's 998 octets, starts with "." (SMTP's end of data), or holds a CR or
    NUL, and "=_" (our boundaries' start) is nowhere in it. Otherwise quoted-printable, which for a
    few non-ASCII characters costs ~80 instructions a byte of the whole part (b2a_qp): ~13 % of
    building a message. Trailing blanks are dropped either way, as `qp` does.
    """
    data = text.encode("utf-8")
    ascii = data.isascii()
    if (ascii or eight_bit) and not (b"\r" in data or b"\0" in data or data.startswith(b".")
                                     or _DOT_AT_START.search(data)
                                     or (b"=" in data and _BOUNDARY_START.search(data))):
        if _BLANK_END.search(data) or (b"\t" in data and _TAB_END.search(data)) or data.endswith((b" ", b"\t")):
            data = b"\n".join(line.rstrip(b" \t") for line in data.split(b"\n"))
        if len(data) <= _HARD_LINE or max(map(len, data.split(b"\n"))) <= _HARD_LINE:
            return ("7bit" if ascii else "8bit"), data.replace(b"\n", b"\r\n")
    return "quoted-printable", qp(text)


_TEXT_HEAD = "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: {}\r\n\r\n"
_EIGHT_BIT_HEAD = _TEXT_HEAD.format("8bit").encode()


def seven_bit(data: bytes) -> bytes:
    """A message `build` made with an "8bit" text part, with that part in quoted-printable instead:
    the same bytes `build` makes without `eight_bit`, for a server that does not offer 8BITMIME.
    (Never a signed message: DKIM signs only 7-bit ones, see compose.Composer.)"""
    head = data.find(_EIGHT_BIT_HEAD)
    start = head + len(_EIGHT_BIT_HEAD)
    # The part ends at the next boundary: an 8bit part never holds "=_".
    end = data.find(b"\r\n--=_dm_", start) if head >= 0 else -1
    if end < 0:
        raise ValueError("not a message with an 8bit text part from message.build")
    text = data[start:end].replace(b"\r\n", b"\n").decode("utf-8")
    return data[:head] + _TEXT_HEAD.format("quoted-printable").encode() + qp(text) + data[end:]


def qp(text: str) -> bytes:
    """Quoted-printable body with CRLF line ends; `=` is always encoded, so `=_` boundaries are safe,
    and a line never starts with "." (see the module's doc).

    Trailing blanks are dropped first: they carry nothing in our parts, and b2a_qp's `=20` for them
    can push a line past RFC 2045's 76 characters.
    """
    data = text.encode("utf-8")
    encoded = binascii.b2a_qp(data, istext=True)
    # b2a_qp writes a blank that ends a line as =20 or =09, and only then: with none of those and no
    # CR, there was nothing to normalise (the usual case: most of the text is pre-wrapped).
    if b"\r" in data or _BLANK_AT_END.search(encoded) or encoded.endswith((b"=20", b"=09")):
        lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        data = "\n".join(line.rstrip(" \t") for line in lines).encode("utf-8")
        encoded = binascii.b2a_qp(data, istext=True)
    if encoded.startswith(b".") or _DOT_AT_START.search(encoded):
        encoded = _without_leading_dots(data, encoded)
    return encoded.replace(b"\n", b"\r\n")


# (Regular expressions: for these two-byte needles in text, bytes.find and `in` are 2-3x slower than
# the `re` engine's scan for a pattern's literal start; single bytes are memchr's, and faster still.)
_BLANK_AT_END = re.compile(rb"=(?:20|09)\n")
_DOT_AT_START = re.compile(rb"\n\.")
_BOUNDARY_START = re.compile(rb"=_")
_BLANK_END = re.compile(rb" \n")
_TAB_END = re.compile(rb"\t\n")


def _without_leading_dots(data: bytes, encoded: bytes) -> bytes:
    """b2a_qp's output with each line that has a physical line starting with "." (its own start, or
    where a long line was soft-broken) encoded again by _qp_line. b2a_qp keeps line breaks one for
    one, so the n-th line of its output is the n-th line of `data`."""
    raw = data.split(b"\n")
    out: list[bytes] = []
    line: list[bytes] = []
    n = 0
    for physical in encoded.split(b"\n"):
        line.append(physical)
        if physical.endswith(b"="):  # a soft break: the same line goes on
            continue
        out += _qp_line(raw[n]) if any(p.startswith(b".") for p in line) else line
        line, n = [], n + 1
    if line:  # (b2a_qp never ends on a soft break; kept whole if it did)
        out += _qp_line(raw[n]) if any(p.startswith(b".") for p in line) else line
    return b"\n".join(out)


_QP_SAFE = frozenset(range(33, 127)) - {ord("=")}


def _qp_line(raw: bytes) -> list[bytes]:
    """One line (no line break) in quoted-printable, as physical lines of at most 76 characters (soft
    breaks "=" included) none of which starts with "." or ends in a blank."""
    tokens = [chr(b).encode() if b in _QP_SAFE or b in (9, 32) else b"=%02X" % b for b in raw]
    if tokens and tokens[-1] in (b" ", b"\t"):  # a blank at the end of a line would be lost
        tokens[-1] = b"=%02X" % raw[-1]
    lines, current = [], b""
    for tok in tokens:
        if not current and tok == b".":
            tok = b"=2E"
        if len(current) + len(tok) > 75:  # room for the soft break's "="
            lines.append(current + b"=")
            current = b"=2E" if tok == b"." else tok
        else:
            current += tok
    lines.append(current)
    return lines


@dataclass(frozen=True)
class ListHeaders:
    """What makes a message a list message: its List-Id and how to leave the list (RFC 2369, 2919, 8058)."""

    name: str  # a description, e.g. "Trending Papers"
    list_id: str  # a dot-atom, e.g. "trending.papers.example.org"
    unsubscribe: tuple[str, ...] = ()  # https and/or mailto URIs

    def lines(self) -> list[str]:
        if not re.fullmatch(r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+", self.list_id):
            raise HeaderError(f"bad List-Id {self.list_id!r}")
        out = [fold("List-Id", _phrase_tokens("List-Id", self.name) + [f"<{self.list_id}>"])]
        if self.unsubscribe:
            for uri in self.unsubscribe:
                check(uri, "List-Unsubscribe")
                if not re.fullmatch(r"(?:https?://|mailto:)[\x21-\x7e]+", uri) or any(c in uri for c in "<>,\" "):
                    raise HeaderError(f"bad unsubscribe URI {uri!r}")
            out.append(fold("List-Unsubscribe", [f"<{u}>," for u in self.unsubscribe[:-1]] +
                            [f"<{self.unsubscribe[-1]}>"]))
            if any(u.startswith("https://") for u in self.unsubscribe):
                out.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click")
        out.append("Precedence: bulk")
        return out


def _phrase_tokens(header: str, name: str) -> list[str]:
    check(name, header)
    if not name:
        return []
    if name.isascii() and "=?" not in name:
        if _ATEXT_PHRASE.match(name):
            tokens = name.split(" ")
        else:
            tokens = ['"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"']
        # A word (or quoted name) too long for a folded line would pass RFC 5322's 78 octets (or
        # even its hard 998): such a name goes as encoded words, which split anywhere.
        if _words_fit(header, tokens):
            return tokens
    return encode_words(name, first_room=_LINE - len(header) - 2)


def base64_body(text: str) -> bytes:
    """The HTML part's UTF-8 in base64, in one line (build() cuts it into lines of 76 with _lines76).
    Several times cheaper than quoted-printable for markup full of `=` (every attribute), and
    SpamAssassin scores it the same."""
    return _b64encode(_utf8(text))


_LINE76 = re.compile(rb".{1,76}", re.S)
_ROWS = struct.Struct("76s" * 64)  # 64 lines at a time


def _lines76(data: bytes) -> bytes:
    # The slicing done in C: by struct for whole blocks of 64 lines (~20 µs for a 40 KB part, half
    # what a regex takes, ~1/3 of a list of slices), the rest by the regex.
    whole = len(data) - len(data) % _ROWS.size
    lines = list(itertools.chain.from_iterable(_ROWS.iter_unpack(memoryview(data)[:whole])))
    lines += _LINE76.findall(data, whole)
    lines.append(b"")  # the last line's CRLF from the same join, not a second copy of the whole part
    return b"\r\n".join(lines) if len(lines) > 1 else b"\r\n"


# The renderer measures each HTML part (html_size) just before build() encodes the same string: the
# last one's UTF-8 is kept so it is encoded once (a 40 KB part with any non-ASCII character costs as
# much to encode as to base64). Checked by identity, so a string never gets another string's bytes.
_last_utf8: tuple[str, bytes] = ("", b"")


def _utf8(text: str) -> bytes:
    global _last_utf8
    last = _last_utf8
    if last[0] is text:
        return last[1]
    data = text.encode("utf-8")
    _last_utf8 = (text, data)
    return data


def html_size(html: str) -> int:
    """The exact size of the HTML part's body as sent (base64, 76-character lines, CRLF)."""
    n = 4 * -(-len(html if html.isascii() else _utf8(html)) // 3)
    return n + 2 * max(-(-n // 76), 1)


def build(rendered: RenderedEmail, *, sender: tuple[str, str], to: tuple[str, str], message_id: str,
          date: dt.datetime, list_headers: ListHeaders | None = None, eight_bit: bool = False) -> bytes:
    """multipart/alternative (text/plain, then text/html) with From, To, Subject, Date, Message-ID,
    and the list headers when given. `eight_bit`: the text part may go as UTF-8 as it is (see
    text_body); the message then needs 8BITMIME, or `seven_bit`, on its way out."""
    check(message_id, "Message-ID")
    if not _MESSAGE_ID.match(message_id):
        raise HeaderError(f"bad Message-ID {message_id!r}", hint="a Message-ID is dot-atom@domain")
    boundary = "=_dm_" + re.sub(r"[^A-Za-z0-9]", "", message_id)[:40]
    headers = [
        address_header("From", *sender),
        address_header("To", *to),
        text_header("Subject", rendered.subject),
        "Date: " + email.utils.format_datetime(date),
        f"Message-ID: <{message_id}>",
        *(list_headers.lines() if list_headers else ()),
        "MIME-Version: 1.0",
        f'Content-Type: multipart/alternative; boundary="{boundary}"',
    ]
    encoding, text = text_body(rendered.text, eight_bit)
    out = [
        "\r\n".join(headers).encode("ascii"), b"\r\n\r\n",
        f"--{boundary}\r\n".encode(), _TEXT_HEAD.format(encoding).encode(), text, b"\r\n",
        f"--{boundary}\r\n".encode(),
        b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n",
        _lines76(base64_body(rendered.html)), b"\r\n",
        f"--{boundary}--\r\n".encode(),
    ]
    return b"".join(out)
