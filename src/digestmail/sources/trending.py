"""Parser for the "Get trending papers in your email inbox!" page dumps (pure: text in, Digest out).

Layout: a header block (`new`, the banner, `Subscribe`, `byAK and the research community`), a date line
without a year (`Mar 12`), then one paper per pair of non-blank lines: title, then abstract.
"""

from __future__ import annotations

import datetime as dt
import re

from ..errors import DigestError
from ..models import Digest, Entry
from ._text import decode, first_arxiv_id, github_in

FORMAT = "trending"
BANNER = "get trending papers in your email inbox!"
_HEADER_LINES = {"new", "subscribe", "byak and the research community", BANNER}
_MONTHS = {m: i for i, m in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], start=1)}
_DATE = re.compile(r"^([A-Za-z]{3})[a-z]*\.?\s+(\d{1,2})(?:st|nd|rd|th)?$")


def looks_like(text: str) -> bool:
    """True when the banner line is near the top: cheap enough to try on any text file."""
    head = [line.strip().casefold() for line in text[:2000].splitlines() if line.strip()]
    return BANNER in head[:10]


def resolve_date(month: int, day: int, today: dt.date) -> dt.date:
    """The latest `month`/`day` not after `today` (a digest is never from the future)."""
    for year in range(today.year, today.year - 9, -1):  # nine years always contain a Feb 29
        try:
            candidate = dt.date(year, month, day)
        except ValueError:
            continue
        if candidate <= today:
            return candidate
    raise ValueError(f"no date {month}-{day}")


def _entry(title: str, abstract: str, line: int) -> Entry:
    return Entry(title=title, abstract=abstract, line=line, arxiv_id=first_arxiv_id(title, abstract),
                 github=github_in(abstract))


def parse(text: str | bytes, today: dt.date) -> Digest:
    """Parse one digest; `today` (the ingest clock's date) resolves the year of the date line.

    The page gives no ids or links, but a title or abstract may quote them: the first
    arxiv.org/abs|pdf link sets `arxiv_id` (version dropped), the first github.com link in the
    abstract sets `github` (as `https://github.com/OWNER/REPO`).
    """
    early: list[str] = []
    if isinstance(text, bytes):
        text, early = decode(text)
    lines = [(n, line.strip()) for n, line in enumerate(text.lstrip("\ufeff").splitlines(), start=1)]
    body = [(n, line) for n, line in lines if line]
    if not body:
        raise DigestError("the file is empty", hint="nothing to ingest; remove the file")

    date: dt.date | None = None
    start = 0
    for i, (n, line) in enumerate(body):
        m = _DATE.match(line)
        if m and m.group(1).casefold() in _MONTHS:
            try:
                date = resolve_date(_MONTHS[m.group(1).casefold()], int(m.group(2)), today)
            except ValueError:
                raise DigestError(f"line {n}: {line!r} is not a calendar date") from None
            start = i + 1
            break
        if line.casefold() not in _HEADER_LINES:
            raise DigestError(f"line {n}: expected the header block and a date line like 'Mar 12', "
                              f"found {line[:60]!r}", hint="is this a trending-papers digest?")
    if date is None:
        raise DigestError("no date line (like 'Mar 12') after the header",
                          hint="the digest date cannot be known; add the date line")

    papers = body[start:]
    if not papers:
        raise DigestError(f"no papers after the date line ({date:%b %d})")
    entries = [_entry(t, a, n) for (n, t), (_, a) in zip(papers[0::2], papers[1::2])]
    warnings = early
    if len(papers) % 2:
        n, title = papers[-1]
        entries.append(_entry(title, "", n))
        warnings.append(f"line {n}: the last title has no abstract; kept without one")
    return Digest(format=FORMAT, date=date, entries=tuple(entries), warnings=tuple(warnings))
