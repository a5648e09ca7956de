"""RSS and Atom feeds (an arXiv API response, an arXiv RSS feed, any paper feed): XML in, Digest out.

feedparser reads the bytes handed to it (never a URL or a path: the data goes in as a stream, so it
cannot fetch anything). Per entry: title, summary (HTML reduced to text), authors, categories (the
tags' terms), the publication date, and the arXiv id when the entry's id, guid or links name an
arXiv paper (`http://arxiv.org/abs/2403.01234v2` -> `2403.01234`, `oai:arXiv.org:cs/0112017`).
arXiv's own RSS (`Announce Type: new|cross|replace|replace-cross` before the abstract) also gives kind.

The digest date is the feed's own updated/published date when it is not after `today`, else the
latest entry date not after `today`, else `today` (with a warning).
"""

from __future__ import annotations

import datetime as dt
import io
import re
import time
from typing import Any

from ..errors import DigestError
from ..models import Digest, Entry
from ._text import arxiv_id, collapse, decode, first_arxiv_id, github_in, html_to_text, latest_not_after, lines_of

FORMAT = "feed"
_ROOT = re.compile(r"<(?:[A-Za-z][\w.-]*:)?(feed|rss|RDF)[\s/>]")
_PROLOG = re.compile(r"<\?.*?\?>|<!--.*?-->|<!DOCTYPE[^>\[]*(?:\[.*?\])?\s*>", re.S | re.I)
_ENTRY_TAG = {"feed": re.compile(r"<(?:[A-Za-z][\w.-]*:)?entry\b"),
              "rss": re.compile(r"<(?:[A-Za-z][\w.-]*:)?item\b"),
              "RDF": re.compile(r"<(?:[A-Za-z][\w.-]*:)?item\b")}
_OAI = re.compile(r"^oai:arXiv\.org:(\S+)$", re.I)
_ANNOUNCE = re.compile(r"^arXiv:\S+\s+Announce Type:\s*([\w-]+)\s+Abstract:\s*", re.I)
_ANNOUNCE_KIND = {"new": "new", "cross": "cross-list", "replace": "replacement", "replace-cross": "replacement"}
_HTML_HINT = re.compile(r"<[A-Za-z/][^>]*>|&[#\w]+;")


def _root(text: str) -> str | None:
    """The name of the root element when it is a feed's (`feed`, `rss`, `RDF`), else None."""
    head = text[:8192].lstrip("\ufeff \t\r\n")
    while True:  # past the XML declaration, processing instructions, comments and a DOCTYPE
        m = _PROLOG.match(head)
        if not m:
            break
        head = head[m.end():].lstrip(" \t\r\n")
    m = _ROOT.match(head)
    return m.group(1) if m else None


def looks_like(text: str) -> bool:
    """XML whose root element is `<feed>`, `<rss>` or `<rdf:RDF>` (after the prolog and comments)."""
    return _root(text) is not None


def _date(parsed: Any) -> dt.date | None:
    if isinstance(parsed, time.struct_time):
        try:
            return dt.date(parsed.tm_year, parsed.tm_mon, parsed.tm_mday)
        except ValueError:
            return None
    return None


def _text(value: Any) -> str:
    if not isinstance(value, str):
        return ""
    return collapse(html_to_text(value) if _HTML_HINT.search(value) else value)


def _entry_arxiv_id(e: Any) -> str | None:
    candidates = [e.get("id"), e.get("guid"), e.get("link")]
    candidates += [link.get("href") for link in e.get("links", []) if isinstance(link, dict)]
    for value in candidates:
        if not isinstance(value, str):
            continue
        m = _OAI.match(value.strip())
        found = arxiv_id(m.group(1)) if m else first_arxiv_id(value)
        if found:
            return found
    return None


def _authors(e: Any) -> tuple[str, ...]:
    names = [collapse(a.get("name")) for a in e.get("authors", []) if isinstance(a, dict) and a.get("name")]
    if not names and isinstance(e.get("author"), str):
        names = [collapse(e["author"])]
    if len(names) == 1 and "," in names[0]:  # arXiv RSS: one dc:creator "A. One, B. Two"
        names = [collapse(n) for n in re.split(r",|\s+and\s+", names[0])]
    return tuple(n for n in names if n)


def _announce(abstract: str) -> tuple[str, str | None]:
    """arXiv RSS descriptions start `arXiv:ID Announce Type: TYPE Abstract: …`: the abstract and the kind."""
    m = _ANNOUNCE.match(abstract)
    if not m:
        return abstract, None
    return abstract[m.end():], _ANNOUNCE_KIND.get(m.group(1).lower(), "new")


def parse(data: str | bytes, today: dt.date) -> Digest:
    """Parse one feed document; `today` caps the digest date."""
    if isinstance(data, bytes):
        text, warnings = decode(data)
    else:
        text, warnings = data.lstrip("\ufeff"), []
    root = _root(text)
    if root is None:
        raise DigestError("not an RSS or Atom feed (no <feed>, <rss> or <rdf:RDF> root)")
    # Re-encode the decoded text so a wrong encoding declaration cannot garble it a second time.
    body = re.sub(r"^\s*<\?xml[^>]*\?>", '<?xml version="1.0" encoding="utf-8"?>', text, count=1)
    import feedparser  # here: ~25 ms to import, and most runs read no feed

    parsed = feedparser.parse(io.BytesIO(body.encode("utf-8")))
    if parsed.get("bozo"):
        reason = parsed.get("bozo_exception")
        if not parsed.entries:
            raise DigestError(f"the feed XML cannot be read: {reason}", hint="is the file complete?")
        warnings.append(f"the feed XML is not well-formed ({reason}); read what could be read")
    if not parsed.entries:
        raise DigestError("the feed has no entries")

    starts = lines_of(text, [m.start() for m in _ENTRY_TAG[root].finditer(text)])
    lines = starts if len(starts) == len(parsed.entries) else [0] * len(parsed.entries)

    entries: list[Entry] = []
    seen: dict[str, int] = {}
    dates: list[dt.date] = []
    for n, (e, line) in enumerate(zip(parsed.entries, lines), start=1):
        where = f"entry {n}" + (f" (line {line})" if line else "")
        title = _text(e.get("title"))
        if not title:
            warnings.append(f"{where}: no title; skipped")
            continue
        abstract, kind = _announce(_text(e.get("summary") or (e.get("content") or [{}])[0].get("value")))
        pid = _entry_arxiv_id(e)
        if pid is not None:
            if pid in seen:
                warnings.append(f"{where}: arXiv {pid} again (first as entry {seen[pid]}); skipped")
                continue
            seen[pid] = n
        published = _date(e.get("published_parsed")) or _date(dict.get(e, "updated_parsed"))
        for stamp in (published, _date(dict.get(e, "updated_parsed"))):
            if stamp:
                dates.append(stamp)
        tags = tuple(dict.fromkeys(t.get("term").strip() for t in e.get("tags", [])
                                   if isinstance(t, dict) and isinstance(t.get("term"), str) and t.get("term").strip()))
        entries.append(Entry(title=title, abstract=abstract, line=line, arxiv_id=pid, authors=_authors(e),
                             categories=tags, github=github_in(abstract), published=published,
                             kind=kind or "new"))
    if not entries:
        raise DigestError(f"none of the {len(parsed.entries)} feed entries has a title")

    feed_date = _date(dict.get(parsed.feed, "updated_parsed")) or _date(parsed.feed.get("published_parsed"))
    if feed_date is not None and feed_date <= today:
        date = feed_date
    else:
        if feed_date is not None:
            warnings.append(f"the feed's date {feed_date} is after today ({today}); using its entries' dates")
        latest = latest_not_after(dates, today)
        if latest is None:
            warnings.append("no usable dates in the feed; dated today")
        date = latest or today
    return Digest(format=FORMAT, date=date, entries=tuple(entries), warnings=tuple(warnings))
