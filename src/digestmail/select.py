"""Per-subscriber selection: candidates, ranking and "why this paper" (pure; the clock is a parameter).

Candidates are the papers of the run's index that arrived since the subscriber joined (less
`backfill_days`), match any of their topics or their query, do not match their `exclude`, and have
not been sent to them (the caller clears those, from the ledger). The order, documented in
docs/selection.md:

1. relevance: for each distinct term the subscriber's rules ask for, 3 if it is in the title,
   2 if only among the authors, 1 if only in the abstract, summed;
2. standing (index.standing): more digests and upvotes, and a newer digest, first;
3. title, then the paper's id: the order is always the same for the same input.

Relevance is kept as bit planes (bit p of every paper's relevance in one int): each rule's, once per
rule text, and a subscriber's as the sum of their rules' (a few ripple-carry additions of ints). The
top k are found by radix selection on those planes, most significant first; the index already orders
ties by standing and title. Explanations come from the same index: which terms count is known per
rule as bitmasks, and only their occurrences in the paper are looked up.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple

from . import rules
from .index import Key, Leaf, PaperIndex, needle_of
from .models import Edition, Match, Paper, Pick, Piece, Subscriber

TITLE, AUTHOR, ABSTRACT = 3, 2, 1
PLAN_CACHE = 256  # rebuilt cheaply from the rules' Units; kept longer, they cost the GC more than they save
# Own queries' Units (~1 KB each at 1,000 papers): mostly seen once, so only the few a run shares are
# worth keeping (8,192 cost 8 MB at 100k subscribers for no measurable gain); topics' are kept for the run.
RULE_CACHE = 1024
# What one topic hits in one paper (~0.8 KB each), least recently used out: a run of 100k subscribers
# asks ~1.6M times for ~47k distinct ones, and a miss costs ~10-20 us. 16,384 held ~13 MB and
# answered 80 % of the asks; 32,768 answer 95 % (the cycle bench's 10k: 37,696 pieces made -> 28,367,
# ~0.18 s of CPU less) for ~12 MB more (P5's 100k run: 122.5 -> 134.3 MB of its 150).
PIECE_CACHE = 32768
_TEXT_ORDER = {"title": 0, "author": 1, "abstract": 2}  # the order an email shows them in

Planes = tuple[int, ...]  # bit p of every paper's relevance in planes[p]
Spots = tuple[tuple[int, int, str, str, rules.Node, "tuple[str, int] | None"], ...]  # see Unit.spots


class Unit:
    """One rule against this run's index, computed once per rule text: the papers it matches, its
    positive terms (with where they look) and the relevance they give every paper, as bit planes."""

    __slots__ = ("rule", "mask", "sketch", "planes", "_spots")

    def __init__(self, rule: rules.Rule, index: PaperIndex) -> None:
        self.rule = rule
        self.mask, found = index.evaluate(rule)
        # One bit per term, hashed: rules whose sketches do not meet share no term (the usual case,
        # told with one `&`); when they meet, the terms themselves say for sure.
        self.sketch = 0
        planes: Planes = ()
        for key, leaf in found.items():
            self.sketch |= 1 << (hash(key) & 255)
            planes = _sum(planes, _leaf_planes(leaf))
        self.planes = planes
        self._spots: Spots | None = None

    def spots(self, index: PaperIndex) -> Spots:
        """(papers, the field's rank in an email, field, term, node, needle_of(node)) for each term and
        field whose occurrences Rule.find reports: a term counts where it occurs and every AND above
        it holds (an OR's other sides do not matter, and nothing under a NOT counts)."""
        if self._spots is None:
            out: dict[tuple[str, str], tuple[rules.Node, int]] = {}
            _counting(index, self.rule.ast, rules.DEFAULT_SCOPE, index.all, out)
            self._spots = tuple((m, _TEXT_ORDER[f], f, term, node, needle_of(node))
                                for (f, term), (node, m) in out.items())
        return self._spots


class Plan(NamedTuple):
    """A subscriber's rules against this run's index: the name of each source (a topic, or "query"),
    its Unit, the exclude, the papers they select and the relevance of every paper as bit planes."""

    names: tuple[str, ...]
    units: tuple[Unit, ...]
    exclude: rules.Rule | None
    mask: int
    planes: Planes

    @property
    def sources(self) -> tuple[tuple[str, rules.Rule], ...]:
        """(name, rule) of each topic and the query."""
        return tuple((name, unit.rule) for name, unit in zip(self.names, self.units))


# Plan(...) runs a Python-level __new__; one a subscriber adds up over 100k of them.
_new_plan = partial(tuple.__new__, Plan)


@dataclass(frozen=True)
class Choice:
    """What selection decided for one subscriber: the ranked picks, or why there is no email."""

    picks: tuple[Pick, ...] = ()
    matched: int = 0  # unsent papers that matched, before max_papers
    skipped: str | None = None  # "no matching papers" | "below min_papers (k < n)"


@dataclass
class Selector:
    """Selection over one run's index; rules, plans and explanations are cached across subscribers."""

    topics: Mapping[str, str]
    index: PaperIndex
    now: dt.datetime
    # Bounded: subscribers stream past once each, but neighbours often share the same topics.
    _plans: dict[tuple[tuple[str, ...], str, str], Plan] = field(default_factory=dict)
    _last: tuple[Subscriber, Plan] | None = None
    _topic_units: dict[str, Unit] = field(default_factory=dict)
    _units: dict[str, Unit] = field(default_factory=dict)
    _windows: dict[tuple[dt.datetime | None, int], int] = field(default_factory=dict)
    _pieces: OrderedDict[tuple[str, int], Piece] = field(default_factory=OrderedDict)

    def plan(self, sub: Subscriber) -> Plan:
        if self._last is not None and self._last[0] is sub:
            return self._last[1]  # candidates, rank and ten explanations in a row ask for this one
        key = (sub.topics, sub.query, sub.exclude)
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= PLAN_CACHE:
                self._plans.clear()
            plan = self._plans[key] = self._plan(sub)
        self._last = (sub, plan)
        return plan

    def _plan(self, sub: Subscriber) -> Plan:
        names = sub.topics
        try:
            units = list(map(self._topic_units.__getitem__, names))  # no Python frame per name
        except KeyError:
            names = tuple(name for name in names if name in self.topics)  # unknown topics select nothing
            units = [self._topic_unit(name) for name in names]
        if sub.query:
            names += ("query",)
            units.append(self._units.get(sub.query) or self.unit(rules.compile_rule(sub.query)))
        # One pass for the papers and the relevance: each distinct term counted once, however many
        # rules ask for it; while no two rules share a term, that is the sum of the rules' sums.
        mask = sketch = 0
        planes: Planes = ()
        shared = False
        for unit in units:
            mask |= unit.mask
            if sketch & unit.sketch:
                shared = True
            else:
                sketch |= unit.sketch
                planes = _sum(planes, unit.planes) if planes else unit.planes
        if shared:
            planes = self._distinct(units)
        exclude = None
        if sub.exclude:
            exclude = rules.compile_rule(sub.exclude)
            if mask:
                mask ^= mask & self.index.match(exclude)
        return _new_plan((names, tuple(units), exclude, mask, planes))

    def _distinct(self, units: list[Unit]) -> Planes:
        """The relevance of rules some of which share a term: rare enough to evaluate the rules again
        rather than keep every rule's terms and masks."""
        distinct: dict[Key, Leaf] = {}
        for unit in units:
            distinct.update(self.index.evaluate(unit.rule)[1])
        planes: Planes = ()
        for leaf in distinct.values():
            planes = _sum(planes, _leaf_planes(leaf))
        return planes

    def _topic_unit(self, name: str) -> Unit:
        found = self._topic_units.get(name)
        if found is None:
            found = self._topic_units[name] = self.unit(rules.compile_rule(self.topics[name]))
        return found

    def unit(self, rule: rules.Rule) -> Unit:
        """A rule against this index, cached by its text (bounded: own queries are mostly seen once;
        topics' Units are also kept by name, for the whole run)."""
        found = self._units.get(rule.source)
        if found is None:
            if len(self._units) >= RULE_CACHE:
                self._units.clear()
            found = self._units[rule.source] = Unit(rule, self.index)
        return found

    def window(self, sub: Subscriber) -> dt.datetime:
        """Papers from digests ingested since then are candidates for this subscriber."""
        joined = sub.joined_at or self.now
        return joined - dt.timedelta(days=sub.backfill_days)

    def candidates(self, sub: Subscriber) -> int:
        """The index's papers this subscriber's rules select (before the ledger), as a bitmask."""
        mask = self.plan(sub).mask
        if not mask:
            return 0
        key = (sub.joined_at, sub.backfill_days)
        since = self._windows.get(key)
        if since is None:
            since = self._windows[key] = self.index.since(self.window(sub))
        return mask & since

    def rank(self, sub: Subscriber, mask: int, k: int) -> list[tuple[Paper, int]]:
        """The k best papers of mask for this subscriber, best first, with their relevance."""
        papers = self.index.papers
        return [(papers[i], relevance) for i, relevance in self._ranked(sub, mask, k)]

    def _ranked(self, sub: Subscriber, mask: int, k: int) -> list[tuple[int, int]]:
        """rank() as the papers' positions in the index."""
        planes = self.plan(sub).planes
        out: list[tuple[int, int]] = []
        if mask.bit_count() <= k:
            _order(planes, len(planes) - 1, mask, 0, out)
        else:
            _select(planes, len(planes) - 1, mask, k, 0, out)
        return out

    def score(self, sub: Subscriber, paper: Paper) -> tuple[int, float]:
        """(relevance, standing) of one paper for this subscriber, for explanations."""
        i = self.index.position[paper.id]
        planes = self.plan(sub).planes
        return sum((plane >> i & 1) << p for p, plane in enumerate(planes)), self.index.standing[i]

    def explain(self, sub: Subscriber, paper: Paper) -> Match:
        """Which topics brought this paper and what each hits in it (the words, their offsets and the
        one-line reason are merged from those where they are read: see Match)."""
        return self.picks(sub, (self.index.position[paper.id],))[0].match

    def picks(self, sub: Subscriber, positions: Iterable[int]) -> tuple[Pick, ...]:
        """The papers at these positions of the index, explained for this subscriber (one loop for an
        email's ten: explaining is most of what choosing costs, and a call per paper and per piece
        added a third to it)."""
        plan = self.plan(sub)
        papers = self.index.papers
        cache = self._pieces
        sources = [(name, unit, unit.mask, unit.rule.source, name == "query")
                   for name, unit in zip(plan.names, plan.units)]
        out = []
        for i in positions:
            paper = papers[i]
            bit = 1 << i
            topics: list[str] = []
            pieces: list[Piece] = []
            for name, unit, mask, source, own in sources:
                if mask & bit:
                    topics.append(name)
                    if own:  # an own query is seldom anybody else's: kept, its pieces would only push out topics'
                        pieces.append(_piece(self.index, unit, paper, i))
                        continue
                    # Cached, least recently used out: many subscribers share a topic.
                    key = (source, i)
                    found = cache.get(key)
                    if found is None:
                        if len(cache) >= PIECE_CACHE:
                            cache.popitem(last=False)
                        found = cache[key] = _piece(self.index, unit, paper, i)
                    else:
                        cache.move_to_end(key)
                    pieces.append(found)
            out.append(Pick(paper, Match.of(tuple(topics), tuple(pieces))))
        return tuple(out)

    def choose(self, sub: Subscriber, unsent: int) -> Choice:
        """The picks for one email from these unsent candidates (a mask), or why there is none."""
        matched = unsent.bit_count()
        if not matched:
            return Choice(skipped="no matching papers")
        if matched < sub.min_papers:
            return Choice(matched=matched, skipped=f"below min_papers ({matched} < {sub.min_papers})")
        ranked = self._ranked(sub, unsent, sub.max_papers)
        return Choice(picks=self.picks(sub, [i for i, _ in ranked]), matched=matched)


# -- relevance and the top k ---------------------------------------------------------------------------

def _leaf_planes(leaf: Leaf) -> Planes:
    """One term's relevance as planes: 3 where it is in the title, else 2 among the authors, else
    1 in the abstract."""
    _, title, author, abstract = leaf
    author ^= author & title
    abstract ^= abstract & (title | author)
    low, high = title | abstract, title | author  # 3 = 0b11, 2 = 0b10, 1 = 0b01
    return (low, high) if high else (low,) if low else ()


def _sum(a: Planes, b: Planes) -> Planes:
    """a + b, paper by paper, on bit planes (ripple carry; the first plane has no carry in)."""
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return a
    if len(b) == 2 and len(a) <= 3:  # a term's planes onto a sum of one or two rules: most additions
        return _sum2(a, b)
    x, y = a[0], b[0]
    out = [x ^ y]
    carry = x & y
    p, n = 1, len(b)
    while p < n:
        x, y = a[p], b[p]
        s = x ^ y
        out.append(s ^ carry)
        carry = (x & y) | (s & carry)
        p += 1
    n = len(a)
    while p < n and carry:
        x = a[p]
        out.append(x ^ carry)
        carry &= x
        p += 1
    if p < n:
        out.extend(a[p:])
    elif carry:
        out.append(carry)
    return tuple(out)


def _sum2(a: Planes, b: Planes) -> Planes:
    """_sum for two or three planes plus two, unrolled: the same planes, without the loops."""
    a0, a1, b0, b1 = a[0], a[1], b[0], b[1]
    carry = a0 & b0
    s1 = a1 ^ b1
    low, mid = a0 ^ b0, s1 ^ carry
    carry = (a1 & b1) | (s1 & carry)
    if len(a) == 2:
        return (low, mid, carry) if carry else (low, mid)
    a2 = a[2]
    return (low, mid, a2 ^ carry, a2 & carry) if a2 & carry else (low, mid, a2 ^ carry)


def _order(planes: Planes, p: int, tied: int, relevance: int, out: list[tuple[int, int]]) -> None:
    """Append every paper of `tied` (equal in the planes above p), best first, as its position with
    its relevance: a most-significant-plane-first radix sort; the index order breaks the last ties."""
    while p >= 0:
        high = tied & planes[p]
        if high:
            if high == tied:
                relevance |= 1 << p
            else:
                _order(planes, p - 1, high, relevance | 1 << p, out)
                tied ^= high
        p -= 1
    while tied:
        rest = tied & (tied - 1)
        out.append(((tied ^ rest).bit_length() - 1, relevance))
        tied = rest


def _select(planes: Planes, p: int, tied: int, k: int, relevance: int, out: list[tuple[int, int]]) -> None:
    """Append the k best papers of `tied` (which has more than k), best first: radix selection, most
    significant plane first, sorting only the groups that are taken whole."""
    while p >= 0:
        high = tied & planes[p]
        if high:
            count = high.bit_count()
            if count > k:
                tied = high
                relevance |= 1 << p
            else:
                _order(planes, p - 1, high, relevance | 1 << p, out)
                k -= count
                if not k:
                    return
                tied ^= high
        p -= 1
    while k:
        rest = tied & (tied - 1)
        out.append(((tied ^ rest).bit_length() - 1, relevance))
        tied = rest
        k -= 1


# -- explanations --------------------------------------------------------------------------------------

def _piece(index: PaperIndex, unit: Unit, paper: Paper, i: int) -> Piece:
    bit = 1 << i
    found: list[tuple[int, int, int, str, str]] = []
    for m, rank, f, term, node, needle in unit.spots(index):
        if m & bit:
            spans = index.spans(i, node, f) if needle is None else index.occurrences(i, f, *needle)
            found += [(rank, start, end, term, f) for start, end in spans]
    if not found:  # a match by negation only (`-survey`)
        return Piece((), (), (), "")
    # The order an email shows them in: title, authors, abstract, then offsets; ties (one word hit
    # by two terms) in Rule.find's order (end, term).
    found.sort()
    shown: dict[str, str] = {}
    firsts = []
    authors = None
    for k, (rank, start, end, term, f) in enumerate(found):
        if term not in shown:
            if f == "title":
                text = paper.title
            elif f == "abstract":
                text = paper.abstract
            else:
                text = authors = authors or ", ".join(paper.authors)
            shown[term] = text[start:end]
            firsts.append((rank, start, k, term))
    hits = sorted([(f, start, end, term) for _, start, end, term, f in found])
    return Piece(tuple(shown), tuple(firsts), tuple(hits), ", ".join(shown.values()))


def _counting(index: PaperIndex, node: rules.Node, scope: tuple[str, ...], live: int,
              out: dict[tuple[str, str], tuple[rules.Node, int]]) -> None:
    """Collect, per (field, term), the papers where that term's occurrences count as hits; `live`:
    the papers where every AND above `node` holds."""
    if isinstance(node, (rules.Term, rules.Phrase, rules.Prefix)):
        term = rules.term_of(node)
        for f in scope:
            m = index.leaf(node, f) & live
            if m:
                before = out.get((f, term))
                out[(f, term)] = (node, m | before[1] if before else m)
    elif isinstance(node, rules.Field):
        _counting(index, node.child, (node.name,), live, out)
    elif isinstance(node, rules.And):
        live &= index.mask(node, scope)
        for child in node.children:
            _counting(index, child, scope, live, out)
    elif isinstance(node, rules.Or):
        for child in node.children:
            _counting(index, child, scope, live, out)
    # under a NOT nothing counts


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
