"""Digest formats: detect the format of one file's bytes and parse it (pure: bytes in, Digest out).

Each format module has `FORMAT` (its name), `looks_like(text)` and `parse(text_or_bytes, today)`.
Detection tries, in order: a mail message (header lines at the top; its text part is then detected
again), JSON (Hugging Face daily papers), RSS/Atom XML, an arXiv listing mailing, a trending-papers
page. The first whose `looks_like` says yes parses the file, and its DigestError is the answer.
"""

from __future__ import annotations

import datetime as dt
import unicodedata

from ..errors import DigestError
from ..models import Digest
from . import arxiv_listing, emails, feed, hf_json, trending
from ._text import decode

__all__ = ["FORMATS", "decode", "parse_digest", "parse_text"]

_DETECTORS = (emails, hf_json, feed, arxiv_listing, trending)
FORMATS = {
    emails.FORMAT: "a mail message (.eml) whose text is one of the others",
    hf_json.FORMAT: "Hugging Face daily-papers API JSON",
    feed.FORMAT: "an RSS or Atom feed (e.g. an arXiv API response)",
    arxiv_listing.FORMAT: "an arXiv daily mailing body ('\\\\' blocks with 'arXiv:ID')",
    trending.FORMAT: "a 'Get trending papers in your email inbox!' page dump",
}
_HINT = "formats known: " + "; ".join(f"{name} ({what})" for name, what in FORMATS.items())


def parse_text(text: str, today: dt.date, *, allow_email: bool = True) -> Digest:
    """Recognise the format of decoded text and parse it; raise DigestError saying why not."""
    if not text.strip():
        raise DigestError("the file is empty")
    # One spelling per character (NFC), so a decomposed "schrödinger" is the word the rules expect.
    text = unicodedata.normalize("NFC", text)
    for module in _DETECTORS:
        if module is emails and not allow_email:
            continue
        if module.looks_like(text):
            if module is emails:
                return emails.parse(text.encode("utf-8"), today)
            return module.parse(text, today)
    raise DigestError("not a digest format digestmail knows", hint=_HINT)


def parse_digest(data: bytes, today: dt.date) -> Digest:
    """Recognise the format by content and parse it; raise DigestError saying why not."""
    if not data.strip():
        raise DigestError("the file is empty")
    text, warnings = decode(data)
    if not text.strip():
        raise DigestError("the file is empty")
    if emails.looks_like(text):
        return emails.parse(data, today)  # the raw bytes: each part declares its own charset
    digest = parse_text(text, today, allow_email=False)
    if warnings:
        digest = Digest(digest.format, digest.date, digest.entries, tuple(warnings) + digest.warnings)
    return digest
