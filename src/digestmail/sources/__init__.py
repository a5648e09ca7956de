"""Digest formats: detect the format of one file's bytes and parse it (pure: bytes in, Digest out)."""

from __future__ import annotations

import datetime as dt

from ..errors import DigestError
from ..models import Digest
from . import trending

__all__ = ["decode", "parse_digest"]


def decode(data: bytes) -> tuple[str, list[str]]:
    """Bytes to text: UTF-8 (BOM allowed), else Latin-1 with a warning; binary data is refused."""
    if b"\x00" in data[:8192]:
        raise DigestError("binary data (NUL bytes), not a text digest")
    try:
        return data.decode("utf-8-sig"), []
    except UnicodeDecodeError as exc:
        return data.decode("latin-1"), [f"not valid UTF-8 (byte {exc.start}); read as Latin-1"]


def parse_digest(data: bytes, today: dt.date) -> Digest:
    """Recognise the format by content and parse it; raise DigestError saying why not."""
    text, warnings = decode(data)
    if not text.strip():
        raise DigestError("the file is empty")
    if trending.looks_like(text):
        digest = trending.parse(text, today)
    else:
        raise DigestError("not a digest format digestmail knows",
                          hint="expected a 'Get trending papers in your email inbox!' page dump")
    if warnings:
        digest = Digest(digest.format, digest.date, digest.entries, tuple(warnings) + digest.warnings)
    return digest
