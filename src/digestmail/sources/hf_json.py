"""Hugging Face daily-papers API responses (`/api/daily_papers?date=…`): JSON in, Digest out (pure).

Accepted shapes: a list of items, or the wrapper `{"status", "date", "count", "data": [...]}`. An item is
an object, or (as found in some archived days) a string holding the Python repr of one, read with
`ast.literal_eval` (literals only, never `eval`). The paper is under `paper`: `id` (arXiv id), `title`,
`summary`, `authors[{name}]`, `publishedAt`, `upvotes`, `githubRepo`, `projectPage`, `ai_keywords`;
the item's own `title`/`summary` are the fallback.

The digest date is the day the file lists papers for, taken from the first of:
1. the wrapper's `date`;
2. the most common `paper.submittedOnDailyAt` date (newer schema: when the paper was put on the list);
3. the latest date among the items' `publishedAt` (older schema: the item's own `publishedAt` is
   when it was put on the list) and the papers' `publishedAt` (the schema of early 2025 gives only
   arXiv publication times, so the date can be a day before the list's day).
A date after `today` becomes `today`, with a warning: a digest is never from the future.

Warnings name items as `item N` (1-based, in file order) with the line the item starts on.
"""

from __future__ import annotations

import ast
import datetime as dt
import json
from collections import Counter
from typing import Any

from ..errors import DigestError
from ..models import Digest, Entry
from ._text import arxiv_id, collapse, decode, github_in, lines_of

FORMAT = "hf-json"
_MAX_ITEM_CHARS = 1_000_000  # a repr-string item is read as a literal only up to this size


def looks_like(text: str) -> bool:
    """JSON: the text starts with `[` or `{` (a JSON file we cannot read is reported by `parse`)."""
    return text.lstrip("\ufeff \t\r\n")[:1] in ("[", "{")


def _load(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno} (character {exc.pos})"
        # Only the end of the input leaves a string unterminated (a raw line break is another error).
        if exc.msg.startswith("Unterminated string"):
            raise DigestError(f"the JSON ends early, inside a string that starts at {where}: the file is truncated",
                              hint="fetch the day again; a complete response ends with ']' or '}'") from None
        if exc.pos >= len(text.rstrip()):
            raise DigestError(f"the JSON ends early at {where}: the file is truncated",
                              hint="fetch the day again; a complete response ends with ']' or '}'") from None
        raise DigestError(f"invalid JSON at {where}: {exc.msg}",
                          hint="expected a Hugging Face daily-papers API response") from None
    except RecursionError:
        raise DigestError("the JSON is nested too deeply to be a daily-papers response") from None


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def _item_offsets(text: str, wrapped: bool) -> list[int]:
    """Character offsets where each item of the list starts (empty if the layout is unexpected)."""
    decoder = json.JSONDecoder()
    try:
        i = _skip_ws(text, 0)
        if wrapped:  # walk the top-level object to the value of "data"
            i = _skip_ws(text, i + 1)
            while text[i] != "}":
                key, i = decoder.raw_decode(text, i)
                i = _skip_ws(text, i)
                i = _skip_ws(text, i + 1)  # past ':'
                if key == "data":
                    break
                _, i = decoder.raw_decode(text, i)
                i = _skip_ws(text, i)
                if text[i] == ",":
                    i = _skip_ws(text, i + 1)
            else:
                return []
        if text[i] != "[":
            return []
        offsets: list[int] = []
        i = _skip_ws(text, i + 1)
        while text[i] != "]":
            offsets.append(i)
            _, i = decoder.raw_decode(text, i)
            i = _skip_ws(text, i)
            if text[i] == ",":
                i = _skip_ws(text, i + 1)
        return offsets
    except (IndexError, ValueError):
        return []


def _item_dict(item: Any) -> dict[str, Any]:
    """The item as a dict: an object as is, a Python-repr (or JSON) string read as a literal."""
    if isinstance(item, dict):
        return item
    if isinstance(item, str):
        if len(item) > _MAX_ITEM_CHARS:
            raise ValueError(f"a string of {len(item)} characters, too long for one paper")
        try:
            value = ast.literal_eval(item.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            try:
                value = json.loads(item)
            except (ValueError, RecursionError):
                raise ValueError("a string that is neither a Python literal nor JSON") from None
        if isinstance(value, dict):
            return value
        raise ValueError(f"a string holding {_a(type(value).__name__)}, not an object")
    raise ValueError(f"{_a(type(item).__name__)}, not an object")


def _a(noun: str) -> str:
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


def _date(value: Any) -> dt.date | None:
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return dt.date.fromisoformat(value[:10])
    except ValueError:
        return None


def _strings(values: Any) -> tuple[str, ...]:
    if not isinstance(values, list):
        return ()
    return tuple(s for s in (collapse(v) for v in values if isinstance(v, str)) if s)


def _authors(values: Any) -> tuple[str, ...]:
    if not isinstance(values, list):
        return ()
    names = []
    for a in values:
        name = a.get("name") if isinstance(a, dict) else a
        if isinstance(name, str) and (name := collapse(name)):
            names.append(name)
    return tuple(names)


def _upvotes(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _url(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip().startswith(("http://", "https://")) else None


def _text_of(paper: dict[str, Any], item: dict[str, Any], field: str) -> str:
    """The paper's text field, else the item's own (the fallback), else ""."""
    value = paper.get(field)
    if not isinstance(value, str):
        value = item.get(field)
    return value if isinstance(value, str) else ""


def _where(n: int, line: int) -> str:
    # Made only for a warning: most items have none.
    return f"item {n}" + (f" (line {line})" if line else "")


def parse(data: str | bytes, today: dt.date) -> Digest:
    """Parse one daily-papers response; `today` caps the digest date."""
    text, warnings = decode(data) if isinstance(data, bytes) else (data.lstrip("\ufeff"), [])
    if not text.strip():
        raise DigestError("the file is empty")
    doc = _load(text)

    wrapper_date: dt.date | None = None
    if isinstance(doc, dict):
        if "data" not in doc:
            raise DigestError("JSON object without a 'data' list: not a daily-papers response",
                              hint="expected a list of papers or {\"status\", \"date\", \"count\", \"data\": [...]}")
        items = doc["data"]
        if not isinstance(items, list):
            raise DigestError(f"'data' is a {type(items).__name__}, not a list of papers")
        if "date" in doc:
            wrapper_date = _date(doc["date"])
            if wrapper_date is None:
                warnings.append(f"the wrapper's date {doc['date']!r} is not a date; ignored")
        if doc.get("status", "success") != "success":
            warnings.append(f"the wrapper's status is {doc['status']!r}, not 'success'")
        if isinstance(doc.get("count"), int) and doc["count"] != len(items):
            warnings.append(f"the wrapper's count says {doc['count']} papers, its data has {len(items)}")
    elif isinstance(doc, list):
        items = doc
    else:
        raise DigestError(f"JSON {type(doc).__name__}, not a list of papers")
    if not items:
        raise DigestError("the JSON holds no papers (an empty list)")

    if "\n" not in text.rstrip():  # the API's own single-line responses: every item is on line 1
        lines = [1] * len(items)
    else:
        offsets = _item_offsets(text, isinstance(doc, dict))
        lines = lines_of(text, offsets) if len(offsets) == len(items) else [0] * len(items)

    entries: list[Entry] = []
    seen: dict[str, int] = {}
    submitted: Counter[dt.date] = Counter()
    stamps: list[dt.date] = []
    for n, (raw, line) in enumerate(zip(items, lines), start=1):
        try:
            item = _item_dict(raw)
        except ValueError as exc:
            warnings.append(f"{_where(n, line)}: {exc}; skipped")
            continue
        paper = item.get("paper")
        if not isinstance(paper, dict):
            paper = {}
        title = collapse(_text_of(paper, item, "title"))
        if not title:
            warnings.append(f"{_where(n, line)}: no paper title; skipped")
            continue
        abstract = collapse(_text_of(paper, item, "summary"))
        if not abstract:
            warnings.append(f"{_where(n, line)}: no abstract; kept without one")
        raw_id = paper.get("id")
        if not isinstance(raw_id, str):
            raw_id = None
        pid = arxiv_id(raw_id)
        if raw_id and pid is None:
            warnings.append(f"{_where(n, line)}: paper id {raw_id!r} is not an arXiv id; ignored")
        if pid is not None:
            if pid in seen:
                warnings.append(f"{_where(n, line)}: arXiv {pid} again (first as item {seen[pid]}); skipped")
                continue
            seen[pid] = n
        published = _date(paper.get("publishedAt"))
        for stamp in (_date(item.get("publishedAt")), published):
            if stamp:
                stamps.append(stamp)
        day = _date(paper.get("submittedOnDailyAt"))
        if day:
            submitted[day] += 1
        entries.append(Entry(
            title=title, abstract=abstract, line=line, arxiv_id=pid, authors=_authors(paper.get("authors")),
            upvotes=_upvotes(paper.get("upvotes")), github=_url(paper.get("githubRepo")) or github_in(abstract),
            project_page=_url(paper.get("projectPage")), keywords=_strings(paper.get("ai_keywords")),
            published=published))

    if not entries:
        raise DigestError(f"none of the {len(items)} items is a readable paper",
                          hint="; ".join(warnings[:3]) or None)
    if wrapper_date is not None:
        date = wrapper_date
    elif submitted:
        date = submitted.most_common(1)[0][0]
    elif stamps:
        date = max(stamps)
    else:
        date = today
        warnings.append("no dates in the file; dated today")
    if date > today:
        warnings.append(f"the file's date {date} is after today ({today}); dated today")
        date = today
    return Digest(format=FORMAT, date=date, entries=tuple(entries), warnings=tuple(warnings))
