"""Plain data passed between the stages: entries, digests, papers, subscribers, editions."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Entry:
    """One paper as one digest lists it; `line` is where it starts in the file (0: not line-based).

    Parsers fill what their format gives and leave the rest empty. `arxiv_id` has no version
    (`2403.01234`, `cs/0112017`); `kind` is "new", "cross-list" or "replacement" (arXiv listings:
    a replacement updates a known paper and is never a new one).
    """

    title: str
    abstract: str
    line: int = 0
    arxiv_id: str | None = None
    authors: tuple[str, ...] = ()
    upvotes: int | None = None
    categories: tuple[str, ...] = ()
    github: str | None = None
    project_page: str | None = None
    keywords: tuple[str, ...] = ()
    published: dt.date | None = None
    kind: str = "new"


@dataclass(frozen=True)
class Digest:
    """What a parser made of one input file (pure data; the store gives it an id)."""

    format: str
    date: dt.date
    entries: tuple[Entry, ...]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Paper:
    """A paper as the store knows it, across all the digests it appeared in."""

    id: int
    key: str
    title: str
    abstract: str
    first_seen: dt.datetime
    digest_count: int = 1
    authors: tuple[str, ...] = ()
    arxiv_id: str | None = None
    upvotes: int | None = None  # the most any digest reported
    github: str | None = None
    project_page: str | None = None
    categories: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    last_digest_date: dt.date | None = None  # the newest digest it appeared in
    last_ingested: dt.datetime | None = None  # when that (or any later) digest was ingested


@dataclass(frozen=True)
class Subscriber:
    """A subscriber as configured (inline table or CSV row)."""

    email: str
    name: str = ""
    topics: tuple[str, ...] = ()
    query: str = ""
    max_papers: int = 10
    min_papers: int = 1
    exclude: str = ""
    backfill_days: int = 7
    schedule: str = ""  # own cron; "" means the config's [schedule]
    timezone: str = ""
    joined_at: dt.datetime | None = None  # set by the store: when the subscriber was first synced
    where: str = ""  # the config key or CSV line it came from, for error messages


@dataclass(frozen=True)
class Match:
    """Why one paper was picked: the topics (or "query") that matched and the words they hit.

    `spans` are (field, start, end, term) with character offsets into the paper's title or abstract.
    """

    topics: tuple[str, ...]
    terms: tuple[str, ...]
    spans: tuple[tuple[str, int, int, str], ...] = ()
    reason: str = ""  # one line for people: "topic optimizers: Adam, optimizer · your query: learning rate"


@dataclass(frozen=True)
class Pick:
    """A paper chosen for an edition, with why."""

    paper: Paper
    match: Match


@dataclass(frozen=True)
class Edition:
    """One email's worth of papers for one subscriber at one moment."""

    subscriber: Subscriber
    subscriber_id: int
    picks: tuple[Pick, ...]
    created: dt.datetime
    key: str = field(default="")


@dataclass(frozen=True)
class RenderedEmail:
    """The three rendered parts of an edition; the message module turns them into bytes."""

    subject: str
    html: str
    text: str
