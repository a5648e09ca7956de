"""An inverted index of one batch of candidate papers, for evaluating many rules at once (pure).

Every word of every field maps to a bitmask of the papers containing it (a Python int: bit i is
paper i), so a rule evaluates to a bitmask with a few `&`, `|` and `~` on ints, whatever the number
of papers, instead of a scan of every paper for every subscriber. Results are cached per rule node,
so topics that many subscribers share are evaluated once per run. Phrases are checked against word
positions only for the papers that contain all their words.

Papers are kept in their order of merit apart from relevance (more digests and upvotes, newer, then
title), so that among papers a subscriber's rules score equally the best are the lowest bits: taking
the top k of a tie is taking its k lowest set bits.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
import datetime as dt
import math
from collections.abc import Iterator, Sequence

from . import rules
from .models import Paper
from .rules import And, Field, Node, Not, Or, Phrase, Prefix, Term

_EPOCH = dt.datetime.min.replace(tzinfo=dt.timezone.utc)
FIELDS_CACHE = 1024  # tokenised papers kept for explanations (~50 KB each with their word index)
RULES_CACHE = 16384


def paper_fields(paper: Paper) -> dict[str, rules.Words]:
    """The tokenised fields rules look at; computed once per paper and shared by every rule."""
    return {"title": rules.words(paper.title), "abstract": rules.words(paper.abstract),
            "author": rules.words(", ".join(paper.authors))}


def standing(paper: Paper, today: dt.date) -> float:
    """How strongly a paper trends, whoever reads it (docs/selection.md):
    +1 per further digest it appeared in (at most 4), +log2(1 + upvotes)/2 (at most 4),
    +2 if its newest digest is at most 2 days old, +1 if at most 7 days."""
    trending = min(paper.digest_count - 1, 4) + min(math.log2(1 + (paper.upvotes or 0)) / 2, 4)
    age = (today - paper.last_digest_date).days if paper.last_digest_date else 999
    return trending + (2 if age <= 2 else 1 if age <= 7 else 0)


class PaperIndex:
    """Word -> papers bitmasks per field over a fixed list of papers, best standing first."""

    def __init__(self, papers: Sequence[Paper], today: dt.date | None = None) -> None:
        today = today or dt.date.today()
        ranked = sorted(((standing(p, today), p) for p in papers), key=lambda t: (-t[0], t[1].title.casefold(), t[1].id))
        self.papers = [p for _, p in ranked]
        self.standing = [s for s, _ in ranked]
        self.all = (1 << len(self.papers)) - 1
        self._fields: OrderedDict[int, dict[str, rules.Words]] = OrderedDict()  # for explanations
        # "Papers since T": one mask per distinct ingest time, OR-ed from the newest down.
        by_time: dict[dt.datetime, int] = {}
        for i, p in enumerate(self.papers):
            t = p.last_ingested or _EPOCH
            by_time[t] = by_time.get(t, 0) | (1 << i)
        self._times = sorted(by_time)
        self._since = [0] * (len(self._times) + 1)
        for j in range(len(self._times) - 1, -1, -1):
            self._since[j] = self._since[j + 1] | by_time[self._times[j]]
        self.position = {p.id: i for i, p in enumerate(self.papers)}
        self._words: dict[str, dict[str, int]] = {f: {} for f in rules.FIELDS}  # folded word -> mask
        self._raw: dict[str, dict[str, int]] = {f: {} for f in rules.FIELDS}  # unfolded word -> mask
        # Tokens with offsets take ~45 KB a paper: they are used here and dropped; what stays is the
        # bitmasks and each field's folded words as one string (for phrases). Explanations, for the
        # few papers an email shows, tokenise again (fields(), cached).
        self._joins: dict[tuple[int, str], str] = {}
        for i, paper in enumerate(self.papers):
            bit = 1 << i
            for name, toks in paper_fields(paper).items():
                folded, raw = self._words[name], self._raw[name]
                for w, _, _ in toks:
                    folded[w] = folded.get(w, 0) | bit
                for w in toks.raw:
                    raw[w] = raw.get(w, 0) | bit
                self._joins[(i, name)] = " " + " ".join(w for w, _, _ in toks) + " "
        self._sorted: dict[str, list[str]] = {}
        self._rules: dict[str, int] = {}
        self._cache: dict[tuple[Node, tuple[str, ...]], int] = {}

    def __len__(self) -> int:
        return len(self.papers)

    def fields(self, i: int) -> dict[str, rules.Words]:
        """Paper i's tokenised fields (with offsets, for hits and highlights), the most recently used kept."""
        found = self._fields.get(i)
        if found is None:
            if len(self._fields) >= FIELDS_CACHE:
                self._fields.popitem(last=False)
            found = self._fields[i] = paper_fields(self.papers[i])
        else:
            self._fields.move_to_end(i)  # least recently used goes first: popular papers stay
        return found

    def since(self, moment: dt.datetime) -> int:
        """The papers last ingested at or after `moment`."""
        return self._since[bisect.bisect_left(self._times, moment)]

    def papers_in(self, mask: int) -> Iterator[Paper]:
        """The papers whose bits are set, in index order."""
        return (self.papers[i] for i in bit_positions(mask))

    def match(self, rule: rules.Rule) -> int:
        """The papers this rule matches (cached by the rule's text: hashing a string is cheap,
        hashing a tree of nodes is not)."""
        found = self._rules.get(rule.source)
        if found is None:
            if len(self._rules) >= RULES_CACHE:  # bounded: 100k subscribers' own queries pass through once
                self._rules.clear()
                self._cache.clear()
            found = self._rules[rule.source] = self.mask(rule.ast, rules.DEFAULT_SCOPE)
        return found

    def mask(self, node: Node, scope: tuple[str, ...]) -> int:
        key = (node, scope)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._cache[key] = self._eval(node, scope)
        return cached

    def _eval(self, node: Node, scope: tuple[str, ...]) -> int:
        if isinstance(node, Term):
            return _union(self._words[f].get(node.word, 0) for f in scope)
        if isinstance(node, Prefix):
            return _union(self._prefix(f, node.prefix) for f in scope)
        if isinstance(node, Phrase):
            return _union(self._phrase(f, node.words) for f in scope)
        if isinstance(node, Field):
            return self.mask(node.child, (node.name,))
        if isinstance(node, And):
            out = self.all
            for child in node.children:
                out &= self.mask(child, scope)
                if not out:
                    break
            return out
        if isinstance(node, Or):
            return _union(self.mask(child, scope) for child in node.children)
        if isinstance(node, Not):
            return self.all & ~self.mask(node.child, scope)
        raise TypeError(f"unknown rule node {node!r}")

    def _prefix(self, field: str, prefix: str) -> int:
        # Like rules.Prefix: compare with the words as written (casefolded) and as plural-folded.
        out = 0
        for kind, table in (("raw", self._raw[field]), ("folded", self._words[field])):
            vocab = self._sorted.get(f"{kind}:{field}")
            if vocab is None:
                vocab = self._sorted[f"{kind}:{field}"] = sorted(table)
            i = bisect.bisect_left(vocab, prefix)
            while i < len(vocab) and vocab[i].startswith(prefix):
                out |= table[vocab[i]]
                i += 1
        return out

    def _phrase(self, field: str, ws: tuple[str, ...]) -> int:
        table = self._words[field]
        candidates = self.all
        for w in ws:
            candidates &= table.get(w, 0)
            if not candidates:
                return 0
        out = 0
        needle = " " + " ".join(ws) + " "
        for i in bit_positions(candidates):
            if needle in self._joined(i, field):
                out |= 1 << i
        return out

    def _joined(self, i: int, field: str) -> str:
        """A field's folded words as " w1 w2 … ": a phrase is then a substring test done in C."""
        return self._joins[(i, field)]


def _union(masks: Iterator[int] | Sequence[int]) -> int:
    out = 0
    for m in masks:
        out |= m
    return out


def lowest_bits(mask: int, k: int) -> int:
    """The k lowest set bits of mask (all of them if it has fewer)."""
    out = 0
    while mask and k:
        low = mask & -mask
        out |= low
        mask ^= low
        k -= 1
    return out


def bit_positions(mask: int) -> list[int]:
    """The positions of the set bits, lowest first."""
    out = []
    while mask:
        low = mask & -mask
        out.append(low.bit_length() - 1)
        mask ^= low
    return out


def positive_leaves(node: Node, scope: tuple[str, ...] = rules.DEFAULT_SCOPE) -> Iterator[tuple[Node, tuple[str, ...]]]:
    """The terms, phrases and prefixes a rule asks for (not those under NOT), with where they look."""
    if isinstance(node, (Term, Phrase, Prefix)):
        yield node, scope
    elif isinstance(node, Field):
        yield from positive_leaves(node.child, (node.name,))
    elif isinstance(node, (And, Or)):
        for child in node.children:
            yield from positive_leaves(child, scope)
