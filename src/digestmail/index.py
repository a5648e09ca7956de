"""An inverted index of one batch of candidate papers, for evaluating many rules at once (pure).

Every word of every field maps to a bitmask of the papers containing it (a Python int: bit i is
paper i), so a rule evaluates to a bitmask with a few `&`, `|` and `~` on ints, whatever the number
of papers, instead of a scan of every paper for every subscriber. Results are cached per rule node,
so topics that many subscribers share are evaluated once per run. Phrases are checked against word
positions only for the papers that contain all their words.

Papers are kept in order of when they were last ingested, so "papers since T" is a bit range.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Iterator, Sequence

from . import rules
from .models import Paper
from .rules import And, Field, Node, Not, Or, Phrase, Prefix, Term

_EPOCH = dt.datetime.min.replace(tzinfo=dt.timezone.utc)


def paper_fields(paper: Paper) -> dict[str, rules.Words]:
    """The tokenised fields rules look at; computed once per paper and shared by every rule."""
    return {"title": rules.words(paper.title), "abstract": rules.words(paper.abstract),
            "author": rules.words(", ".join(paper.authors))}


class PaperIndex:
    """Word -> papers bitmasks per field over a fixed list of papers."""

    def __init__(self, papers: Sequence[Paper]) -> None:
        self.papers = sorted(papers, key=lambda p: (p.last_ingested or _EPOCH, p.id))
        self.times = [p.last_ingested or _EPOCH for p in self.papers]
        self.all = (1 << len(self.papers)) - 1
        self.fields = [paper_fields(p) for p in self.papers]
        self.position = {p.id: i for i, p in enumerate(self.papers)}
        self._words: dict[str, dict[str, int]] = {f: {} for f in rules.FIELDS}  # folded word -> mask
        self._raw: dict[str, dict[str, int]] = {f: {} for f in rules.FIELDS}  # unfolded word -> mask
        for i, fields in enumerate(self.fields):
            bit = 1 << i
            for name, toks in fields.items():
                folded, raw = self._words[name], self._raw[name]
                for w, _, _ in toks:
                    folded[w] = folded.get(w, 0) | bit
                for w in toks.raw:
                    raw[w] = raw.get(w, 0) | bit
        self._sorted: dict[str, list[str]] = {}
        self._cache: dict[tuple[Node, tuple[str, ...]], int] = {}

    def __len__(self) -> int:
        return len(self.papers)

    def since(self, moment: dt.datetime) -> int:
        """The papers last ingested at or after `moment`."""
        return self.all & ~((1 << bisect.bisect_left(self.times, moment)) - 1)

    def papers_in(self, mask: int) -> Iterator[Paper]:
        """The papers whose bits are set, in index order."""
        while mask:
            low = mask & -mask
            yield self.papers[low.bit_length() - 1]
            mask ^= low

    def match(self, rule: rules.Rule) -> int:
        """The papers this rule matches."""
        return self.mask(rule.ast, rules.DEFAULT_SCOPE)

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
        n = len(ws)
        for i in _bits(candidates):
            toks = [w for w, _, _ in self.fields[i][field]]
            if any(toks[j:j + n] == list(ws) for j in range(len(toks) - n + 1) if toks[j] == ws[0]):
                out |= 1 << i
        return out


def _union(masks: Iterator[int] | Sequence[int]) -> int:
    out = 0
    for m in masks:
        out |= m
    return out


def _bits(mask: int) -> Iterator[int]:
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


def positive_leaves(node: Node, scope: tuple[str, ...] = rules.DEFAULT_SCOPE) -> Iterator[tuple[Node, tuple[str, ...]]]:
    """The terms, phrases and prefixes a rule asks for (not those under NOT), with where they look."""
    if isinstance(node, (Term, Phrase, Prefix)):
        yield node, scope
    elif isinstance(node, Field):
        yield from positive_leaves(node.child, (node.name,))
    elif isinstance(node, (And, Or)):
        for child in node.children:
            yield from positive_leaves(child, scope)
