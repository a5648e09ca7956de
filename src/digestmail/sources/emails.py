"""Digests that arrive as email: one RFC 5322 message in, Digest out; and splitting mbox files (pure).

The message is read with the stdlib `email` parser. Its text is the first text/plain part that is a
digest, else the first text/html part reduced to text (block elements become line breaks, so a
trending-papers page survives), else a text-like attachment (.txt, .json, .xml) that is one. That
text is parsed as any other digest (the format is recognised by content) and the digest's format is
reported as `email/<format>`. The message's `Date:` header stands in for `today` when it is not after
the real today, so a date line without a year resolves against when the mail was sent. Entry lines
count within the part the digest came from.

`split_mbox` cuts an mbox file into its messages (mboxrd/mboxo: `From ` separator lines at the start
of the file or after a blank line; `>From ` quoting in bodies undone); `iter_mbox` does the same one
message at a time from the lines of an open file.
"""

from __future__ import annotations

import datetime as dt
import email
import email.header
import email.policy
import email.utils
import io
import re
from collections.abc import Iterable, Iterator
from email.message import EmailMessage, Message

from ..errors import DigestError
from ..models import Digest
from ._text import decode, html_to_text

FORMAT = "email"

# Header names that mark the start of a mail message (any one of them, plus a second header line).
_KNOWN = {"from", "date", "subject", "mime-version", "received", "return-path", "message-id", "to",
          "delivered-to", "content-type", "x-mailer", "reply-to", "sender", "cc", "dkim-signature",
          "authentication-results", "arc-seal", "list-id", "x-original-to", "envelope-to"}
_HEADER = re.compile(r"^([!-9;-~]+):[ \t]?(.*)$")  # RFC 5322 field name: printable ASCII except ':'
_ENVELOPE = re.compile(rb"^From \S+ +\S+")
_QUOTED_FROM = re.compile(rb"^>+From ")
_TEXTLIKE = re.compile(r"\.(txt|text|json|xml|atom|rss|eml|html?)$", re.I)


def looks_like(text: str) -> bool:
    """A header block at the very top: header lines (and folded continuations) up to a blank line,
    at least two of them, one a well-known mail header. An mbox `From ` envelope line may come first."""
    # Mail has CRLF or LF line ends only: splitlines() would also split at U+2028 or NEL inside a
    # JSON string and could make a JSON digest look like headers.
    lines = text[:65536].lstrip("\ufeff").replace("\r\n", "\n").split("\n")[:200]
    if lines and lines[0].startswith("From ") and _ENVELOPE.match(lines[0].encode("utf-8", "replace")):
        lines = lines[1:]
    names: list[str] = []
    for i, line in enumerate(lines):
        if not line.strip():
            break
        if line[:1] in (" ", "\t") and names:
            continue
        m = _HEADER.match(line)
        if not m:
            return False
        names.append(m.group(1).lower())
    else:
        if len(lines) >= 200:
            return False
    return len(names) >= 2 and any(n in _KNOWN for n in names)


def split_mbox(data: bytes) -> list[bytes]:
    """The messages of an mbox file, without their `From ` envelope lines, `>From ` unquoted.

    A separator is a line matching `From SENDER DATE…` at the start of the file or after a blank line;
    the blank line before it belongs to the mbox, not to the message. One `>` is removed from every
    line that reads `>From `, `>>From `, … (mboxrd; in an mboxo file a body line that really began with
    `>From ` loses its `>`). Bytes that do not start with a `From ` line are not an mbox: DigestError.
    """
    return list(iter_mbox(io.BytesIO(data)))


def iter_mbox(lines: Iterable[bytes]) -> Iterator[bytes]:
    """split_mbox over lines (each with its line end, as iterating a binary file gives them), one
    message at a time: only the message being read is held, so a file of any size fits in memory."""
    it = iter(lines)
    first = next(it, b"")
    if not _ENVELOPE.match(first):
        if first.strip() or any(line.strip() for line in it):
            raise DigestError("not an mbox file (it does not start with a 'From ' line)")
        return
    current: list[bytes] = []
    previous_blank = False
    for line in it:
        bare = line.rstrip(b"\r\n")
        if previous_blank and _ENVELOPE.match(bare):
            yield _message(current)
            current = []
            previous_blank = False
            continue
        current.append(line[1:] if _QUOTED_FROM.match(line) else line)
        previous_blank = not bare
    yield _message(current)


def _message(lines: list[bytes]) -> bytes:
    if lines and not lines[-1].rstrip(b"\r\n"):
        del lines[-1]  # the separating blank line
    return b"".join(lines)


def _header_text(value: object) -> str:
    """A header's text with RFC 2047 encoded words decoded (best effort: the raw text otherwise)."""
    if value is None:
        return ""
    try:
        return str(email.header.make_header(email.header.decode_header(str(value)))).strip()
    except (ValueError, LookupError, UnicodeDecodeError):
        return str(value).strip()


def message_date(msg: Message) -> dt.date | None:
    """The date of the message's Date header (in its own time zone), or None."""
    value = msg.get("Date")
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(str(value)).date()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _part_text(part: Message, warnings: list[str]) -> str | None:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return None
    charset = part.get_content_charset()
    if charset:
        try:
            return payload.decode(charset)
        except LookupError:
            warnings.append(f"unknown charset {charset!r} in the {part.get_content_type()} part; decoded by guess")
        except UnicodeDecodeError:
            warnings.append(f"the {part.get_content_type()} part is not valid {charset}; decoded by guess")
    try:
        text, more = decode(payload)
    except DigestError:
        return None
    warnings.extend(more)
    return text


def candidates(msg: Message, warnings: list[str]) -> list[tuple[str, str]]:
    """(what, text) of the parts that may hold the digest, best first."""
    plain, html, attached = [], [], []
    for part in msg.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        filename = part.get_filename() or ""
        is_attachment = part.get_content_disposition() == "attachment" or bool(filename)
        if not is_attachment and ctype == "text/plain":
            plain.append(part)
        elif not is_attachment and ctype == "text/html":
            html.append(part)
        elif ctype.startswith("text/") or ctype in ("application/json", "application/xml",
                                                    "application/atom+xml", "application/rss+xml") \
                or _TEXTLIKE.search(filename):
            attached.append(part)
    out: list[tuple[str, str]] = []
    for kind, parts in (("text/plain part", plain), ("text/html part", html), ("attachment", attached)):
        for part in parts:
            text = _part_text(part, warnings)
            if text is None or not text.strip():
                continue
            if part.get_content_type() == "text/html" or (kind == "attachment" and re.search(r"\.html?$", part.get_filename() or "", re.I)):
                text = html_to_text(text)
            name = part.get_filename()
            out.append((f"{kind} {name!r}" if name else kind, text))
    return out


def parse(data: str | bytes, today: dt.date) -> Digest:
    """Parse one mail message (or a one-message mbox) holding a digest in a text part."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    if data.startswith(b"From ") and _ENVELOPE.match(data):
        messages = split_mbox(data)
        if len(messages) != 1:
            raise DigestError(f"an mbox file with {len(messages)} messages, not one message",
                              hint="read it as an mbox source, which splits it into messages")
        data = messages[0]
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    if not isinstance(msg, (Message, EmailMessage)) or not msg.keys():
        raise DigestError("not a mail message (no header lines)")
    warnings: list[str] = []
    for defect in msg.defects[:3]:
        warnings.append(f"message defect: {type(defect).__name__}")

    sent = message_date(msg)
    inner_today = today
    if sent is None:
        warnings.append("the message has no readable Date header; the digest date is resolved against today")
    elif sent > today:
        warnings.append(f"the message is dated {sent}, after today ({today}); ignored its date")
    else:
        inner_today = sent

    from . import FORMATS, parse_text  # here, not at import time: the package imports this module

    parts = candidates(msg, warnings)
    if not parts:
        raise DigestError("a mail message without a text part", hint="the digest must be in the message text "
                          "or a text attachment")
    errors: list[str] = []
    for what, text in parts:
        try:
            digest = parse_text(text, inner_today, allow_email=False)
        except DigestError as exc:
            errors.append(f"{what}: {exc.message}")
            continue
        notes = tuple(f"{what}: {w}" for w in digest.warnings)
        return Digest(f"{FORMAT}/{digest.format}", digest.date, digest.entries, tuple(warnings) + notes)
    subject = _header_text(msg.get("Subject"))
    raise DigestError("a mail message" + (f" ({subject[:60]!r})" if subject else "")
                      + " whose text is not a digest: " + "; ".join(errors),
                      hint=f"formats known: {', '.join(FORMATS)}")
