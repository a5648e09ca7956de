"""Per-subscriber selection: candidates, ranking and "why this paper" (pure; the clock is a parameter).

Candidates are the papers of the run's index that arrived since the subscriber joined (less
`backfill_days`), match any of their topics or their query, do not match their `exclude`, and have
not been sent to them (the caller clears those, from the ledger). The order, documented in
docs/selection.md:

1. relevance: for each distinct term the subscriber's rules ask for, 3 if it is in the title,
   2 if only among the authors, 1 if only in the abstract, summed;
2. standing (index.standing): more digests and upvotes, and a newer digest, first;
3. title, then the paper's id: the order is always the same for the same input.

Relevance is summed over bit planes (bit p of every candidate's relevance in one int), so ranking a
subscriber costs a few dozen integer operations whatever the number of candidates, and the top k are
found by radix selection on those planes; the index already orders ties by standing and title.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from collections import OrderedDict

from . import rules
from .index import PaperIndex, bit_positions, lowest_bits, positive_leaves
from .models import Edition, Match, Paper, Pick, Subscriber

TITLE, AUTHOR, ABSTRACT = 3, 2, 1
PLAN_CACHE = 4096
RULE_CACHE = 8192


@dataclass(frozen=True)
class Plan:
    """A subscriber's rules against this run's index: (source name, rule) for each topic and the
    query, the exclude, the papers they select, and per distinct term its (title, author, abstract)
    masks for the relevance sum."""

    sources: tuple[tuple[str, rules.Rule], ...]
    exclude: rules.Rule | None
    mask: int
    leaves: tuple[tuple[int, int, int], ...]


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
    # Bounded: subscribers stream past once each, but neighbours often share the same topics.
    _plans: OrderedDict[tuple[tuple[str, ...], str, str], Plan] = field(default_factory=OrderedDict)
    _leaves: dict[str, tuple[tuple[object, tuple[int, int, int]], ...]] = field(default_factory=dict)
    _found: dict[tuple[str, int], list[rules.Hit]] = field(default_factory=dict)

    def plan(self, sub: Subscriber) -> Plan:
        key = (sub.topics, sub.query, sub.exclude)
        plan = self._plans.get(key)
        if plan is not None:
            self._plans.move_to_end(key)
            return plan
        sources = [(t, rules.compile_rule(self.topics[t])) for t in sub.topics if t in self.topics]
        if sub.query:
            sources.append(("query", rules.compile_rule(sub.query)))
        exclude = rules.compile_rule(sub.exclude) if sub.exclude else None
        mask = 0
        for _, rule in sources:
            mask |= self.index.match(rule)
        if mask and exclude is not None:
            mask &= ~self.index.match(exclude)
        leaves = dict(pair for _, rule in sources for pair in self._rule_leaves(rule))
        plan = self._plans[key] = Plan(tuple(sources), exclude, mask, tuple(leaves.values()))
        if len(self._plans) > PLAN_CACHE:
            self._plans.popitem(last=False)
        return plan

    def _rule_leaves(self, rule: rules.Rule) -> tuple[tuple[object, tuple[int, int, int]], ...]:
        """Per distinct term of a rule: a key, and the papers with it in the title, authors, abstract."""
        found = self._leaves.get(rule.source)
        if found is None:
            out = {}
            for node, scope in positive_leaves(rule.ast):
                masks = tuple(self.index.mask(node, (f,)) if f in scope else 0 for f in ("title", "author", "abstract"))
                out[(node, scope)] = masks
            if len(self._leaves) >= RULE_CACHE:  # own queries are mostly seen once: keep memory flat
                self._leaves.clear()
            found = self._leaves[rule.source] = tuple(out.items())
        return found

    def window(self, sub: Subscriber) -> dt.datetime:
        """Papers from digests ingested since then are candidates for this subscriber."""
        joined = sub.joined_at or self.now
        return joined - dt.timedelta(days=sub.backfill_days)

    def candidates(self, sub: Subscriber) -> int:
        """The index's papers this subscriber's rules select (before the ledger), as a bitmask."""
        mask = self.plan(sub).mask
        return mask & self.index.since(self.window(sub)) if mask else 0

    def planes(self, plan: Plan, mask: int) -> list[int]:
        """Relevance of every paper in mask, as bit planes: bit i of planes[p] is bit p of paper i's."""
        planes: list[int] = []
        for t, u, a in plan.leaves:
            title = t & mask
            rest = mask & ~title
            author = u & rest
            abstract = a & rest & ~author
            if title:
                _add(planes, title, TITLE)
            if author:
                _add(planes, author, AUTHOR)
            if abstract:
                _add(planes, abstract, ABSTRACT)
        return planes

    def rank(self, sub: Subscriber, mask: int, k: int) -> list[tuple[Paper, int]]:
        """The k best papers of mask for this subscriber, best first, with their relevance."""
        planes = self.planes(self.plan(sub), mask)
        chosen, tied, need = 0, mask, k
        for plane in reversed(planes):  # radix selection, most significant bit first
            high = tied & plane
            count = high.bit_count()
            if count >= need:
                tied = high
            else:
                chosen |= high
                need -= count
                tied &= ~plane
        chosen |= lowest_bits(tied, need)  # equal relevance: the index order decides
        relevance = dict.fromkeys(bit_positions(chosen), 0)
        for p, plane in enumerate(planes):
            for i in bit_positions(plane & chosen):
                relevance[i] += 1 << p
        order = sorted(relevance, key=lambda i: (-relevance[i], i))
        return [(self.index.papers[i], relevance[i]) for i in order]

    def score(self, sub: Subscriber, paper: Paper) -> tuple[int, float]:
        """(relevance, standing) of one paper for this subscriber, for explanations."""
        i = self.index.position[paper.id]
        planes = self.planes(self.plan(sub), 1 << i)
        return sum((plane >> i & 1) << p for p, plane in enumerate(planes)), self.index.standing[i]

    def explain(self, sub: Subscriber, paper: Paper) -> Match:
        """Which topics brought this paper, the words they hit (with offsets), and a one-line reason."""
        plan = self.plan(sub)
        fields = self.index.fields(self.index.position[paper.id])
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
                if len(self._found) >= RULE_CACHE * 4:
                    self._found.clear()
                found = self._found[key] = rule.find(fields)
            topics.append(name)
            hits.extend(found)
            label = "your query" if name == "query" else f"topic {name}"
            shown = _shown(found, texts)
            reasons.append(f"{label}: {', '.join(shown)}" if shown else label)
        terms = tuple(dict.fromkeys(h.term for h in _in_text_order(hits)))
        spans = tuple(sorted({(h.field, h.start, h.end, h.term) for h in hits}))
        return Match(topics=tuple(topics), terms=terms, spans=spans, reason=" · ".join(reasons))

    def choose(self, sub: Subscriber, unsent: int) -> Choice:
        """The picks for one email from these unsent candidates (a mask), or why there is none."""
        matched = unsent.bit_count()
        if not matched:
            return Choice(skipped="no matching papers")
        if matched < sub.min_papers:
            return Choice(matched=matched, skipped=f"below min_papers ({matched} < {sub.min_papers})")
        ranked = self.rank(sub, unsent, sub.max_papers)
        return Choice(picks=tuple(Pick(p, self.explain(sub, p)) for p, _ in ranked), matched=matched)


def _add(planes: list[int], found: int, weight: int) -> None:
    """Add `weight` to the relevance of every paper in `found`, ripple-carrying through the planes
    (a new plane is opened when a carry runs off the top)."""
    p = 0
    while weight:
        if weight & 1:
            carry, q = found, p
            while carry:
                while q >= len(planes):
                    planes.append(0)
                planes[q], carry = planes[q] ^ carry, planes[q] & carry
                q += 1
        weight >>= 1
        p += 1


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


def scheduled_key(email: str, schedule: str, wall_clock: str) -> str:
    """The key of a scheduled edition: the subscriber, the schedule and its local wall-clock time, so
    a second fire of the same wall-clock time (autumn) or a restart names the same edition."""
    digest = hashlib.sha256(f"{email.lower()}|{schedule}|{wall_clock}".encode()).hexdigest()
    return f"{wall_clock.replace('-', '').replace(':', '')}.{digest[:16]}"
