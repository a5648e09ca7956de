"""Per-subscriber selection: which unsent papers match, in what order, and why (pure)."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterable, Mapping

from . import rules
from .models import Edition, Match, Paper, Pick, Subscriber

Fields = dict[str, list[tuple[str, int, int]]]


def paper_fields(paper: Paper) -> Fields:
    """The tokenised fields rules look at; compute once per paper, share across subscribers."""
    return {"title": rules.words(paper.title), "abstract": rules.words(paper.abstract)}


def match_paper(subscriber: Subscriber, topics: Mapping[str, str], paper: Paper, fields: Fields) -> Match | None:
    """The topics (and own query) of this subscriber that match, with the words they hit."""
    named = [(t, topics[t]) for t in subscriber.topics if t in topics]
    if subscriber.query:
        named.append(("query", subscriber.query))
    texts = {"title": paper.title, "abstract": paper.abstract}
    matched: list[str] = []
    hits: list[rules.Hit] = []
    reasons: list[str] = []
    for name, source in named:
        found = rules.compile_rule(source).find(fields)
        if found:
            matched.append(name)
            hits.extend(found)
            # Show each term as the paper writes it (first occurrence, title before abstract).
            shown = dict.fromkeys(texts[h.field][h.start:h.end] for h in _in_text_order(found))
            label = "your query" if name == "query" else f"topic {name}"
            reasons.append(f"{label}: {', '.join(_dedupe_casefold(shown))}")
    if not matched:
        return None
    terms = tuple(dict.fromkeys(h.term for h in _in_text_order(hits)))
    spans = tuple(sorted({(h.field, h.start, h.end, h.term) for h in hits}))
    return Match(topics=tuple(matched), terms=terms, spans=spans, reason=" · ".join(reasons))


def _in_text_order(hits: list[rules.Hit]) -> list[rules.Hit]:
    return sorted(hits, key=lambda h: (h.field != "title", h.start))


def _dedupe_casefold(shown: Iterable[str]) -> list[str]:
    seen: dict[str, str] = {}
    for s in shown:
        seen.setdefault(rules.singular(s.casefold()), s)
    return list(seen.values())


def _score(pick: Pick) -> tuple[int, int]:
    """Terms found in the title count double; then how many digests the paper trended in."""
    title_terms = {term for field, _, _, term in pick.match.spans if field == "title"}
    return (2 * len(title_terms) + len(pick.match.terms), pick.paper.digest_count)


def select(subscriber: Subscriber, subscriber_id: int, papers: Iterable[Paper], topics: Mapping[str, str],
           fields: Callable[[Paper], Fields], now: dt.datetime) -> Edition | None:
    """The edition this subscriber would get now from these unsent papers, or None if nothing matches."""
    picks = []
    for paper in papers:
        match = match_paper(subscriber, topics, paper, fields(paper))
        if match is not None:
            picks.append(Pick(paper, match))
    if not picks:
        return None
    picks.sort(key=lambda p: p.paper.title.casefold())
    picks.sort(key=_score, reverse=True)
    chosen = tuple(picks[: subscriber.max_papers])
    return Edition(subscriber=subscriber, subscriber_id=subscriber_id, picks=chosen, created=now,
                   key=edition_key(subscriber.email, now))


def edition_key(email: str, moment: dt.datetime) -> str:
    """A stable key for (subscriber, moment): the Message-ID and the outbox build on it."""
    digest = hashlib.sha256(f"{email.lower()}|{moment.isoformat()}".encode()).hexdigest()
    return f"{moment:%Y%m%d%H%M%S}.{digest[:16]}"
