r"""arXiv "daily Subj-class mailing" bodies: plain text in, Digest out (pure).

Layout (as arXiv sends it):

    ------------------------------------------------------------------------------
     Submissions to:
    Artificial Intelligence
     received from  Wed 21 Jan 26 19:00:00 GMT  to  Thu 22 Jan 26 19:00:00 GMT
    ------------------------------------------------------------------------------
    \\
    arXiv:2601.15305
    Date: Mon, 12 Jan 2026 20:33:39 GMT   (215kb)

    Title: A title folded over
      two lines
    Authors: A. One, B. Two
    Categories: cs.AI cs.LG
    Comments: 15 pages
    \\
      The abstract, over several lines.
    \\ ( https://arxiv.org/abs/2601.15305 ,  215kb)
    ------------------------------------------------------------------------------

Blocks are separated by rule lines. The rule `%-%-%-…` starts the cross-lists (`arXiv:ID
(*cross-listing*)`), `%%--%%--…` the replacements (a `replaced with revised version DATE` line instead of
`Date:`, and usually no abstract), `%%%---%%%---…` ends the listing. Entry.kind is "new", "cross-list"
or "replacement" from the section or, when there are no section rules, from the block itself.

A block without an arXiv id or a title is skipped with a warning naming its line; a second block for
the same arXiv id is skipped too; a block cut off before its closing `\\ ( https://arxiv.org/abs/… )`
line is kept with a warning (its abstract may be incomplete). Entry.line is the block's opening `\\`.

The digest date is the day the mailing went out, from the header's `received from … to DAY` line:
arXiv announces in the evening (US Eastern) after the `to` time, which is the next day in GMT, and
Friday's submissions come out on Monday. Without that line: the latest `Date:` of the entries. Never
after `today`.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import re

from ..errors import DigestError
from ..models import Digest, Entry
from ._text import arxiv_id, collapse, decode, github_in, latest_not_after

FORMAT = "arxiv-listing"

_RULE_NORMAL = re.compile(r"^-{20,}\s*$")
_RULE_CROSS = re.compile(r"^%-%-%-%-%-%-")
_RULE_REPLACE = re.compile(r"^%%--%%--%%--")
_RULE_END = re.compile(r"^%%%---%%%---")
_OPEN = re.compile(r"^\\\\\s*$")
_CLOSE = re.compile(r"^\\\\\s*\(\s*(\S+)\s*,.*\)\s*$")
_ID = re.compile(r"^(?:arXiv|Paper)(\s*\(\*cross-listing\*\))?:\s*(\S+)(\s*\(\*cross-listing\*\))?", re.I)
_REPLACED = re.compile(r"^(?:replaced with revised version|(?:figures|part) added)\b\s*(.*)$", re.I)
_FIELD = re.compile(r"^([A-Z][A-Za-z-]*):\s?(.*)$")
_RECEIVED = re.compile(r"^\s*received from\s+.*?\bto\s+(?:[A-Za-z]{3},?\s+)?(\d{1,2})\s+([A-Za-z]{3})[a-z]*\s+(\d{2,4})\b",
                       re.I)
_MONTHS = {m: i for i, m in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], start=1)}
_PARENS = re.compile(r"\([^()]*\)")
_KINDS = {"": "new", "cross": "cross-list", "rep": "replacement"}


def looks_like(text: str) -> bool:
    """A `\\` line followed by an `arXiv:` (or `Paper:`) line, or the mailing's `received from` header."""
    head = text[:30000]
    if re.search(r"^\\\\[ \t]*\r?\n(?:arXiv|Paper)\b[^:\n]*:", head, re.M):
        return True
    return bool(re.search(r"^\s*Submissions to:", head, re.M) and re.search(r"^\s*received from ", head, re.M))


def _rfc_date(value: str) -> dt.date | None:
    value = value.split("(")[0].strip()
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).date()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def announce_date(to_day: dt.date) -> dt.date:
    """The day (GMT) a mailing whose window closes on `to_day` goes out: the next weekday."""
    day = to_day + dt.timedelta(days=1)
    while day.weekday() >= 5:
        day += dt.timedelta(days=1)
    return day


def _received_to(line: str) -> dt.date | None:
    m = _RECEIVED.match(line)
    if not m or m.group(2).lower()[:3] not in _MONTHS:
        return None
    year = int(m.group(3))
    year += 2000 if year < 100 else 0
    try:
        return dt.date(year, _MONTHS[m.group(2).lower()[:3]], int(m.group(1)))
    except ValueError:
        return None


def _authors(value: str) -> tuple[str, ...]:
    while _PARENS.search(value):  # affiliations: "A (1), B (2) ((1) MIT, (2) ETH)"
        value = _PARENS.sub(" ", value)
    names = (collapse(n) for n in re.split(r",|\s+and\s+|;", value))
    return tuple(n for n in names if n)


def _fields(lines: list[str]) -> dict[str, str]:
    """`Key: value` lines with their indented continuation lines, keys lower-cased."""
    fields: dict[str, str] = {}
    key = None
    for line in lines:
        if line[:1] in (" ", "\t") and key:
            fields[key] += " " + line.strip()
            continue
        m = _FIELD.match(line)
        if m:
            key = m.group(1).lower()
            fields[key] = m.group(2).strip()
        else:
            key = None
    return fields


def _block(lines: list[tuple[int, str]], section: str, warnings: list[str]) -> Entry | None:
    """One `\\`-opened block (its lines, numbered) as an Entry, or None (with a warning)."""
    start = lines[0][0]
    body = [text for _, text in lines[1:]]
    # The header runs to the next `\\` line; the abstract to the closing `\\ ( url , size)` line.
    close = next((i for i, t in enumerate(body) if _CLOSE.match(t.strip())), None)
    second = next((i for i, t in enumerate(body) if _OPEN.match(t)), None)
    if close is not None and (second is None or close < second):
        head, abstract_lines = body[:close], []
    elif second is not None:
        head, abstract_lines = body[:second], body[second + 1:close] if close is not None else body[second + 1:]
    else:
        head, abstract_lines = body, []

    id_at = next((i for i, t in enumerate(head) if _ID.match(t.strip())), None)
    if id_at is None:
        title_hint = next((collapse(t[6:]) for t in head if t.startswith("Title:")), "")
        warnings.append(f"line {start}: block without an arXiv id" + (f" ({title_hint[:60]!r})" if title_hint else "")
                        + "; skipped")
        return None
    m = _ID.match(head[id_at].strip())
    pid = arxiv_id(m.group(2))
    if pid is None:
        warnings.append(f"line {start}: {m.group(2)!r} is not an arXiv id; block skipped")
        return None
    cross = bool(m.group(1) or m.group(3))
    fields = _fields(head[:id_at] + head[id_at + 1:])
    replaced = any(_REPLACED.match(t.strip()) for t in head)
    title = collapse(fields.get("title"))
    if not title:
        warnings.append(f"line {start}: arXiv {pid} has no title; skipped")
        return None

    kind = _KINDS[section]
    if replaced:
        kind = "replacement"
    elif cross and kind == "new":
        kind = "cross-list"
    abstract = collapse(" ".join(abstract_lines))
    if close is None:
        warnings.append(f"line {start}: arXiv {pid} ends without its closing "
                        f"'\\\\ ( https://arxiv.org/abs/{pid} , …)' line; the abstract may be cut short")
    elif not abstract and kind != "replacement":
        warnings.append(f"line {start}: arXiv {pid} has no abstract; kept without one")
    published = _rfc_date(fields.get("date", "")) if kind != "replacement" else None
    return Entry(title=title, abstract=abstract, line=start, arxiv_id=pid,
                 authors=_authors(fields.get("authors", "")),
                 categories=tuple(fields.get("categories", "").split()),
                 github=github_in(abstract, fields.get("comments")), published=published, kind=kind)


def parse(data: str | bytes, today: dt.date) -> Digest:
    """Parse one mailing body; `today` caps the digest date."""
    if isinstance(data, bytes):
        text, warnings = decode(data)
    else:
        text, warnings = data.lstrip("\ufeff"), []
    numbered = list(enumerate((line.rstrip() for line in text.splitlines()), start=1))

    to_day: dt.date | None = None
    section = ""
    blocks: list[tuple[str, list[tuple[int, str]]]] = []
    current: list[tuple[int, str]] | None = None
    stray: list[int] = []
    for n, line in numbered:
        rule = None
        if _RULE_END.match(line):
            rule = "end"
        elif _RULE_REPLACE.match(line):
            rule = "rep"
        elif _RULE_CROSS.match(line):
            rule = "cross"
        elif _RULE_NORMAL.match(line):
            rule = "normal"
        if rule is not None:
            if current is not None:
                blocks.append((section, current))
                current = None
            if rule == "end":
                break
            if rule != "normal":
                section = rule
            continue
        if current is None:
            if _OPEN.match(line):
                current = [(n, line)]
            elif to_day is None and not blocks and _received_to(line):
                to_day = _received_to(line)
            elif line.strip() and blocks and (_ID.match(line.strip()) or line.startswith("Title:")):
                stray.append(n)
            continue
        current.append((n, line))
    if current is not None:
        blocks.append((section, current))
    for n in stray:
        warnings.append(f"line {n}: paper data outside a '\\\\' block; ignored")

    if not blocks:
        raise DigestError("no '\\\\'-separated arXiv blocks found",
                          hint="expected an arXiv daily mailing body (blocks starting with '\\\\' and 'arXiv:ID')")
    entries: list[Entry] = []
    seen: dict[str, int] = {}
    for sec, lines in blocks:
        entry = _block(lines, sec, warnings)
        if entry is None:
            continue
        if entry.arxiv_id in seen:
            warnings.append(f"line {entry.line}: arXiv {entry.arxiv_id} again (first at line "
                            f"{seen[entry.arxiv_id]}); skipped")
            continue
        seen[entry.arxiv_id or ""] = entry.line
        entries.append(entry)
    if not entries:
        raise DigestError(f"none of the {len(blocks)} blocks is a readable arXiv entry",
                          hint="; ".join(warnings[:3]) or None)

    if to_day is not None:
        date = announce_date(to_day)
        if date > today:
            warnings.append(f"the mailing goes out on {date}, after today ({today}); dated today")
            date = today
    else:
        date = latest_not_after([e.published for e in entries if e.published], today) or today
        if not any(e.published for e in entries):
            warnings.append("no mailing header and no entry dates; dated today")
    return Digest(format=FORMAT, date=date, entries=tuple(entries), warnings=tuple(warnings))
