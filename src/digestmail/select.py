"""Per-subscriber selection: candidates, ranking and "why this paper" (pure; the clock is a parameter).

Candidates are the papers of the run's index that arrived since the subscriber joined (less
`backfill_days`), match any of their topics or their query, do not match their `exclude`, and have
not been sent to them (the caller removes those, from the ledger). The score, documented in
docs/selection.md:

    relevance  for each distinct term the subscriber's rules ask for: 3 if it is in the title,
               2 if only among the authors, 1 if only in the abstract
    trending   +1 for each further digest the paper appeared in (at most +4), and
               +log2(1 + upvotes) / 2 (at most +4)
    recency    +2 if its newest digest is at most 2 days old, +1 if at most 7 days

Highest score first; ties by relevance, then title, then the paper's id, so the order is deterministic.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from . import rules
from .index import PaperIndex, positive_leaves
from .models import Edition, Match, Paper, Pick, Subscriber

TITLE, AUTHOR, ABSTRACT = 3, 2, 1


@dataclass(frozen=True)
class Plan:
    """A subscriber's rules, compiled: (source name, rule) for each topic and the query; the exclude."""

    sources: tuple[tuple[str, rules.Rule], ...]
    exclude: rules.Rule | None

    @cached_property
    def leaves(self) -> tuple[tuple[rules.Node, tuple[str, ...]], ...]:
        return tuple(dict.fromkeys(leaf for _, r in self.sources for leaf in positive_leaves(r.ast)))


@dataclass(frozen=True)
class Choice:
    """What selection decided for one subscriber: the ranked picks, or why there is no email."""

    picks: tuple[Pick, ...] = ()
    matched: int = 0  # unsent papers that matched, before max_papers
    skipped: str | None = None  # "no matching papers" | "below min_papers (k < n)"


@dataclass
class Selector:
    """Selection over one run's index; plans and explanations are cached across subscribers."""

    topics: Mapping[str, str]
    index: PaperIndex
    now: dt.datetime
    _plans: dict[tuple[tuple[str, ...], str, str], Plan] = field(default_factory=dict)
    _found: dict[tuple[str, int], list[rules.Hit]] = field(default_factory=dict)

    def plan(self, sub: Subscriber) -> Plan:
        key = (sub.topics, sub.query, sub.exclude)
        plan = self._plans.get(key)
        if plan is None:
            sources = [(t, rules.compile_rule(self.topics[t])) for t in sub.topics if t in self.topics]
            if sub.query:
                sources.append(("query", rules.compile_rule(sub.query)))
            exclude = rules.compile_rule(sub.exclude) if sub.exclude else None
            plan = self._plans[key] = Plan(tuple(sources), exclude)
        return plan

    def window(self, sub: Subscriber) -> dt.datetime:
        """Papers from digests ingested since then are candidates for this subscriber."""
        joined = sub.joined_at or self.now
        return joined - dt.timedelta(days=sub.backfill_days)

    def candidates(self, sub: Subscriber) -> int:
        """The index's papers this subscriber's rules select (before the ledger), as a bitmask."""
        plan = self.plan(sub)
        mask = 0
        for _, rule in plan.sources:
            mask |= self.index.match(rule)
        if mask and plan.exclude is not None:
            mask &= ~self.index.match(plan.exclude)
        return mask & self.index.since(self.window(sub)) if mask else 0

    def score(self, plan: Plan, paper: Paper) -> tuple[float, int]:
        """(score, relevance) of one candidate paper; see the module docstring."""
        bit = 1 << self.index.position[paper.id]
        relevance = 0
        for node, scope in plan.leaves:
            if "title" in scope and self.index.mask(node, ("title",)) & bit:
                relevance += TITLE
            elif "author" in scope and self.index.mask(node, ("author",)) & bit:
                relevance += AUTHOR
            elif "abstract" in scope and self.index.mask(node, ("abstract",)) & bit:
                relevance += ABSTRACT
        trending = min(paper.digest_count - 1, 4) + min(math.log2(1 + (paper.upvotes or 0)) / 2, 4)
        age = (self.now.date() - paper.last_digest_date).days if paper.last_digest_date else 999
        recency = 2 if age <= 2 else 1 if age <= 7 else 0
        return relevance + trending + recency, relevance

    def rank(self, sub: Subscriber, papers: Iterable[Paper]) -> list[tuple[Paper, float]]:
        plan = self.plan(sub)
        scored = [(p, *self.score(plan, p)) for p in papers]
        scored.sort(key=lambda t: (-t[1], -t[2], t[0].title.casefold(), t[0].id))
        return [(p, s) for p, s, _ in scored]

    def explain(self, sub: Subscriber, paper: Paper) -> Match:
        """Which topics brought this paper, the words they hit (with offsets), and a one-line reason."""
        plan = self.plan(sub)
        fields = self.index.fields[self.index.position[paper.id]]
        texts = {"title": paper.title, "abstract": paper.abstract, "author": ", ".join(paper.authors)}
        topics: list[str] = []
        hits: list[rules.Hit] = []
        reasons: list[str] = []
        for name, rule in plan.sources:
            if not self.index.match(rule) & (1 << self.index.position[paper.id]):
                continue
            key = (rule.source, paper.id)
            found = self._found.get(key)
            if found is None:
                found = self._found[key] = rule.find(fields)
            topics.append(name)
            hits.extend(found)
            label = "your query" if name == "query" else f"topic {name}"
            shown = _shown(found, texts)
            reasons.append(f"{label}: {', '.join(shown)}" if shown else label)
        terms = tuple(dict.fromkeys(h.term for h in _in_text_order(hits)))
        spans = tuple(sorted({(h.field, h.start, h.end, h.term) for h in hits}))
        return Match(topics=tuple(topics), terms=terms, spans=spans, reason=" · ".join(reasons))

    def choose(self, sub: Subscriber, unsent: Sequence[Paper]) -> Choice:
        """The picks for one email from these unsent candidates, or why there is none."""
        if not unsent:
            return Choice(skipped="no matching papers")
        if len(unsent) < sub.min_papers:
            return Choice(matched=len(unsent),
                          skipped=f"below min_papers ({len(unsent)} < {sub.min_papers})")
        ranked = self.rank(sub, unsent)[: sub.max_papers]
        return Choice(picks=tuple(Pick(p, self.explain(sub, p)) for p, _ in ranked), matched=len(unsent))


def _in_text_order(hits: list[rules.Hit]) -> list[rules.Hit]:
    order = {"title": 0, "author": 1, "abstract": 2}
    return sorted(hits, key=lambda h: (order.get(h.field, 3), h.start))


def _shown(hits: list[rules.Hit], texts: Mapping[str, str]) -> list[str]:
    """The words as the paper writes them, first occurrence first, each term once."""
    seen: dict[str, str] = {}
    for h in _in_text_order(hits):
        seen.setdefault(h.term, texts[h.field][h.start:h.end])
    return list(seen.values())


def edition(sub: Subscriber, subscriber_id: int, picks: tuple[Pick, ...], now: dt.datetime) -> Edition:
    return Edition(subscriber=sub, subscriber_id=subscriber_id, picks=picks, created=now,
                   key=edition_key(sub.email, now))


def edition_key(email: str, moment: dt.datetime) -> str:
    """A stable key for (subscriber, moment): the Message-ID and the outbox build on it."""
    digest = hashlib.sha256(f"{email.lower()}|{moment.isoformat()}".encode()).hexdigest()
    return f"{moment:%Y%m%d%H%M%S}.{digest[:16]}"
