"""Plain data passed between the stages: entries, digests, papers, subscribers, editions."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple


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


class Piece(NamedTuple):
    """What one rule hits in one paper: its distinct terms in the order an email shows them (fields
    title, authors, abstract, then offsets; ties in Rule.find's order), where each first occurs
    (field rank, start, rank among the hits), the hits (field, start, end, term) sorted, and the words
    as the paper writes them for the reason line ("Adam, learning rate")."""

    terms: tuple[str, ...]
    firsts: tuple[tuple[int, int, int, str], ...]
    spans: tuple[tuple[str, int, int, str], ...]
    shown: str


class Match:
    """Why one paper was picked: the topics (or "query") that matched and the words they hit.

    `spans` are (field, start, end, term) with character offsets into the paper's title or abstract;
    `reason` is one line for people: "topic optimizers: Adam, optimizer · your query: learning rate".

    Selection makes a Match from what each matching rule hits (`Match.of(topics, pieces)`, one Piece
    per topic); `terms` and `spans` are merged from those when first read, `reason` is made from
    their words on its own (the renderer needs it, not the merge). Selection only
    chooses, and the merging is most of what explaining costs: done lazily, it happens where the
    email is rendered (a build process, in a large run), and a Match crosses to that process as its
    topics and pieces. `hits()` gives the pieces' hits unmerged (the renderer merges them per field
    anyway). Immutable, and equal to any Match with the same topics, terms, spans and reason, however
    it was made.
    """

    __slots__ = ("topics", "_pieces", "_merged", "_reason")

    topics: tuple[str, ...]
    _pieces: tuple[Piece, ...] | None
    _merged: tuple[tuple[str, ...], tuple[tuple[str, int, int, str], ...]] | None  # terms, spans
    _reason: str | None

    def __init__(self, topics: tuple[str, ...], terms: tuple[str, ...],
                 spans: tuple[tuple[str, int, int, str], ...] = (), reason: str = "") -> None:
        object.__setattr__(self, "topics", topics)
        object.__setattr__(self, "_pieces", None)
        object.__setattr__(self, "_merged", (terms, spans))
        object.__setattr__(self, "_reason", reason)

    @classmethod
    def of(cls, topics: tuple[str, ...], pieces: tuple[Piece, ...]) -> Match:
        """The match of these topics, each with what its rule hits in the paper (in the same order;
        a piece may also be a plain tuple of a Piece's four values)."""
        match = cls.__new__(cls)
        _set_topics(match, topics)
        _set_pieces(match, pieces)
        _set_merged(match, None)
        _set_reason(match, None)
        return match

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"a Match is immutable ({name})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"a Match is immutable ({name})")

    def _merge(self) -> tuple[tuple[str, ...], tuple[tuple[str, int, int, str], ...]]:
        pieces = self._pieces
        assert pieces is not None
        if len(pieces) == 1:
            terms, spans = pieces[0][0], pieces[0][2]
        else:  # each term where it first occurs in any source: the text order, then the sources' order
            firsts = sorted((at, start, n, k, term) for n, piece in enumerate(pieces)
                            for at, start, k, term in piece[1])
            terms = tuple(dict.fromkeys(term for *_, term in firsts))
            spans = tuple(sorted({span for piece in pieces for span in piece[2]}))
        merged = (terms, spans)
        object.__setattr__(self, "_merged", merged)
        return merged

    def hits(self) -> Iterator[tuple[str, int, int, str]]:
        """Every (field, start, end, term) of `spans`, without merging the topics' hits first: in
        no order, and a hit two topics share comes twice (for those that merge them anyway)."""
        pieces = self._pieces
        if pieces is None:
            return iter(self.spans)
        if len(pieces) == 1:
            return iter(pieces[0][2])
        return itertools.chain.from_iterable(piece[2] for piece in pieces)

    @property
    def terms(self) -> tuple[str, ...]:
        return (self._merged or self._merge())[0]

    @property
    def spans(self) -> tuple[tuple[str, int, int, str], ...]:
        return (self._merged or self._merge())[1]

    @property
    def reason(self) -> str:
        reason = self._reason
        if reason is None:
            pieces = self._pieces
            assert pieces is not None
            # By position, not name: a build process gets the pieces as plain tuples (buildpool.py).
            reason = " · ".join((("your query" if name == "query" else f"topic {name}")
                                 + (f": {piece[3]}" if piece[3] else "")) for name, piece in zip(self.topics, pieces))
            object.__setattr__(self, "_reason", reason)
        return reason

    def _values(self) -> tuple[object, ...]:
        return (self.topics, *(self._merged or self._merge()), self.reason)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Match):
            return NotImplemented
        if self._pieces is not None and self._pieces == other._pieces:
            return self.topics == other.topics
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        return f"Match(topics={self.topics!r}, terms={self.terms!r}, spans={self.spans!r}, reason={self.reason!r})"

    def __reduce__(self) -> tuple[object, ...]:
        # As it was made: unmerged, a Match pickles as its topics and (shared) pieces.
        if self._pieces is not None:
            return Match.of, (self.topics, self._pieces)
        return Match, self._values()


# The slots' own setters: Match.of runs for every pick on both sides of a build process, and these
# take half the time of object.__setattr__'s lookup by name (~0.3 against ~0.6 µs a Match).
_set_topics, _set_pieces, _set_merged, _set_reason = (
    Match.__dict__[name].__set__ for name in ("topics", "_pieces", "_merged", "_reason"))


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
