"""The bytes of an email, written directly (pure): every header value checked and encoded here.

We do not hand values to `email.message.EmailMessage`: it costs 6–14 ms a message, and the Python on
our machines (3.11.7) re-folds encoded words into real CRLFs (CVE-2024-6923). Instead no value with a
control character is accepted, non-ASCII and anything that looks like an encoded word is base64-encoded
into RFC 2047 words, and bodies are quoted-printable with CRLF line ends.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import email.utils
import re
from dataclasses import dataclass

from .errors import HeaderError
from .models import RenderedEmail

_ATEXT_PHRASE = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]*$")
_ADDR = re.compile(r"^[\x21-\x7e]+@[A-Za-z0-9.-]+$")
_MAX_WORD = 75  # RFC 2047: an encoded word is at most 75 characters
_FOLD = 76


@dataclass(frozen=True)
class Envelope:
    """The SMTP envelope: who the message is from and exactly whom it goes to."""

    sender: str
    recipients: tuple[str, ...]


def check(value: str, what: str) -> str:
    """Refuse CR, LF and every other control character in a header value."""
    for c in value:
        if ord(c) < 32 or ord(c) == 127:
            raise HeaderError(f"{what} contains the control character {c!r}",
                              hint="header values cannot carry line breaks")
    return value


def _needs_encoding(text: str) -> bool:
    return not text.isascii() or "=?" in text or any(len(w) > 70 for w in text.split(" "))


def encode_words(text: str) -> list[str]:
    """RFC 2047 base64 words of at most 75 characters, never splitting a UTF-8 sequence."""
    prefix, suffix = "=?utf-8?b?", "?="
    room = (_MAX_WORD - len(prefix) - len(suffix)) // 4 * 3  # raw bytes per word
    words, chunk = [], b""
    for ch in text:
        b = ch.encode("utf-8")
        if len(chunk) + len(b) > room:
            words.append(prefix + base64.b64encode(chunk).decode("ascii") + suffix)
            chunk = b""
        chunk += b
    if chunk or not words:
        words.append(prefix + base64.b64encode(chunk).decode("ascii") + suffix)
    return words


def fold(name: str, tokens: list[str]) -> str:
    """Join tokens with spaces, breaking lines before a token that would pass 76 columns."""
    line = name + ":"
    lines = []
    for tok in tokens:
        if len(line) + 1 + len(tok) > _FOLD and line != name + ":":
            lines.append(line)
            line = ""
        line += " " + tok
    lines.append(line)
    return "\r\n".join(lines)


def text_header(name: str, value: str) -> str:
    """An unstructured header (Subject): plain when plain ASCII, else encoded words."""
    check(value, name)
    if _needs_encoding(value):
        return fold(name, encode_words(value))
    return fold(name, value.split(" "))


def address(name: str, addr: str) -> str:
    """'Name <addr>' with the display name quoted or encoded as needed; the address must be plain."""
    check(name, "display name")
    check(addr, "address")
    if not _ADDR.match(addr):
        raise HeaderError(f"{addr!r} is not an address we can put in a header")
    if not name:
        return addr
    if _needs_encoding(name):
        return " ".join(encode_words(name)) + f" <{addr}>"
    if _ATEXT_PHRASE.match(name):
        return f"{name} <{addr}>"
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + f'" <{addr}>'


def address_header(name: str, display: str, addr: str) -> str:
    return fold(name, address(display, addr).split(" "))


def qp(text: str) -> bytes:
    """Quoted-printable body with CRLF line ends; `=` is always encoded, so `=_` boundaries are safe."""
    data = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    return binascii.b2a_qp(data, istext=True).replace(b"\n", b"\r\n")


def build(rendered: RenderedEmail, *, sender: tuple[str, str], to: tuple[str, str], message_id: str,
          date: dt.datetime) -> bytes:
    """multipart/alternative (text/plain, then text/html) with From, To, Subject, Date, Message-ID."""
    check(message_id, "Message-ID")
    if not re.fullmatch(r"[\x21-\x7e]+@[\x21-\x7e]+", message_id) or "<" in message_id or ">" in message_id:
        raise HeaderError(f"bad Message-ID {message_id!r}")
    boundary = "=_dm_" + re.sub(r"[^A-Za-z0-9]", "", message_id)[:40]
    headers = [
        address_header("From", *sender),
        address_header("To", *to),
        text_header("Subject", rendered.subject),
        "Date: " + email.utils.format_datetime(date),
        f"Message-ID: <{message_id}>",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/alternative; boundary="{boundary}"',
    ]
    part_head = "Content-Type: text/{}; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    out = [
        "\r\n".join(headers).encode("ascii"), b"\r\n\r\n",
        f"--{boundary}\r\n".encode(), part_head.format("plain").encode(), qp(rendered.text), b"\r\n",
        f"--{boundary}\r\n".encode(), part_head.format("html").encode(), qp(rendered.html), b"\r\n",
        f"--{boundary}--\r\n".encode(),
    ]
    return b"".join(out)
