"""An inverted index of one batch of candidate papers, for evaluating many rules at once (pure).

Every word of every field maps to a bitmask of the papers containing it (a Python int: bit i is
paper i), so a rule evaluates to a bitmask with a few `&`, `|` and `~` on ints, whatever the number
of papers, instead of a scan of every paper for every subscriber. Phrases are checked against each
field's folded words, kept as one string, only for the papers that contain all their words.

Papers are kept in their order of merit apart from relevance (more digests and upvotes, newer, then
title), so that among papers a subscriber's rules score equally the best are the lowest bits: taking
the top k of a tie is taking its k lowest set bits.

Where a term occurs (for highlighting) comes from the same folded strings and each field's word
offsets, kept compactly for the papers being explained: no token lists are kept.
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
import re
from array import array
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from itertools import accumulate, repeat

from . import rules
from .models import Paper
from .rules import And, Field, Node, Not, Or, Phrase, Prefix, Term

_EPOCH = dt.datetime.min.replace(tzinfo=dt.timezone.utc)
OFFSETS_CACHE = 4096  # papers whose word offsets are kept for explanations (~1 KB each)
RULES_CACHE = 1024  # masks of rules by text (excludes): mostly a subscriber's own, seen once
LEAF_CACHE = 16384  # prefixes and phrases: dearer than a word, and shared by many rules

Key = tuple[str, tuple[str, ...]]  # a term (rules.term_of) and where it looks
Leaf = tuple[Key, int, int, int]  # ... and the papers with it in the title, the authors, the abstract


def paper_texts(paper: Paper) -> dict[str, str]:
    """The fields rules look at, as text: the offsets of hits index these strings."""
    return {"title": paper.title, "abstract": paper.abstract, "author": ", ".join(paper.authors)}


def paper_fields(paper: Paper) -> dict[str, rules.Words]:
    """The tokenised fields rules look at (for Rule.matches and Rule.find)."""
    return {name: rules.words(text) for name, text in paper_texts(paper).items()}


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
        # Casefolded words as written, only those plural folding changes (prefixes look at both).
        self._raw: dict[str, dict[str, int]] = {f: {} for f in rules.FIELDS}
        # Per field, per paper: its folded words as " w1 w2 … ", so a phrase (or, for a hit, a term)
        # is a substring search done in C; what stays is these strings and the bitmasks.
        self._joined: dict[str, list[str]] = {f: [] for f in rules.FIELDS}
        fold: dict[str, str] = {}  # word -> rules.singular(word): a corpus has few distinct words
        plural: set[str] = set()  # the words folding changes
        for i, paper in enumerate(self.papers):
            bit = 1 << i
            for name, text in paper_texts(paper).items():
                raw = rules.raw_words(text)
                distinct = set(raw)
                for w in distinct.difference(fold):
                    if fold.setdefault(w, rules.singular(w)) != w:
                        plural.add(w)
                changed = distinct & plural
                if changed:
                    folded = list(map(fold.__getitem__, raw))
                    table = self._raw[name]
                    for w in changed:
                        table[w] = table.get(w, 0) | bit
                    distinct = set(folded)
                else:
                    folded = raw
                self._joined[name].append(" " + " ".join(folded) + " ")
                _add(self._words[name], distinct, bit)
        self._sorted: dict[tuple[str, str], list[str]] = {}
        self._rules: dict[str, int] = {}
        self._leaves: dict[tuple[str, str], int] = {}
        self._offsets: OrderedDict[tuple[int, str], array] = OrderedDict()
        self._raw_joined: OrderedDict[tuple[int, str], str] = OrderedDict()

    def __len__(self) -> int:
        return len(self.papers)

    def fields(self, i: int) -> dict[str, rules.Words]:
        """Paper i's tokenised fields, for Rule.find and Rule.matches (tokenised on every call)."""
        return paper_fields(self.papers[i])

    def since(self, moment: dt.datetime) -> int:
        """The papers last ingested at or after `moment`."""
        return self._since[bisect.bisect_left(self._times, moment)]

    def papers_in(self, mask: int) -> Iterator[Paper]:
        """The papers whose bits are set, in index order."""
        return (self.papers[i] for i in bit_positions(mask))

    # -- rules ---------------------------------------------------------------------------------------

    def match(self, rule: rules.Rule) -> int:
        """The papers this rule matches (cached by the rule's text)."""
        found = self._rules.get(rule.source)
        if found is None:
            if len(self._rules) >= RULES_CACHE:  # bounded: 100k subscribers' own queries pass through once
                self._rules.clear()
            found = self._rules[rule.source] = self.mask(rule.ast)
        return found

    def mask(self, node: Node, scope: tuple[str, ...] = rules.DEFAULT_SCOPE) -> int:
        """The papers a rule tree matches, looking in `scope` (uncached but for prefixes and phrases)."""
        return self._walk(node, scope, None)

    def evaluate(self, rule: rules.Rule) -> tuple[int, dict[Key, Leaf]]:
        """The papers a rule matches, and per distinct positive term (not under NOT) with where it
        looks, the papers having it in the title, the authors and the abstract: one walk of the tree."""
        leaves: dict[Key, Leaf] = {}
        return self._walk(rule.ast, rules.DEFAULT_SCOPE, leaves), leaves

    def _walk(self, node: Node, scope: tuple[str, ...], leaves: dict[Key, Leaf] | None) -> int:
        if type(node) is Term and scope is rules.DEFAULT_SCOPE:  # most leaves: one word, two tables
            word, words = node.word, self._words
            title, abstract = words["title"].get(word, 0), words["abstract"].get(word, 0)
            if leaves is not None:
                key = (word, scope)  # rules.term_of
                if key not in leaves:
                    leaves[key] = (key, title, 0, abstract)
            return title | abstract
        if isinstance(node, (Term, Prefix, Phrase)):
            title = author = abstract = 0
            for f in scope:
                if f == "title":
                    title = self.leaf(node, f)
                elif f == "abstract":
                    abstract = self.leaf(node, f)
                else:
                    author = self.leaf(node, f)
            if leaves is not None:
                key = (rules.term_of(node), scope)
                if key not in leaves:
                    leaves[key] = (key, title, author, abstract)
            return title | author | abstract
        if isinstance(node, Field):
            return self._walk(node.child, (node.name,), leaves)
        if isinstance(node, Not):
            return self.all ^ self._walk(node.child, scope, None)
        if isinstance(node, And):
            out = self.all
            for child in node.children:
                out &= self._walk(child, scope, leaves)  # no early stop: relevance needs every term
            return out
        if isinstance(node, Or):
            out = 0
            for child in node.children:
                out |= self._walk(child, scope, leaves)
            return out
        raise TypeError(f"unknown rule node {node!r}")

    def leaf(self, node: Node, field: str) -> int:
        """The papers whose `field` has this term, phrase or prefix."""
        if isinstance(node, Term):
            return self._words[field].get(node.word, 0)
        key = (rules.term_of(node), field)
        found = self._leaves.get(key)
        if found is None:
            if len(self._leaves) >= LEAF_CACHE:
                self._leaves.clear()
            if isinstance(node, Prefix):
                found = self._prefix(field, node.prefix)
            else:
                assert isinstance(node, Phrase)
                found = self._phrase(field, node.words)
            self._leaves[key] = found
        return found

    def _prefix(self, field: str, prefix: str) -> int:
        # Like rules.Prefix: compare with the words as written (casefolded) and as plural-folded.
        out = 0
        for kind, table in (("raw", self._raw[field]), ("folded", self._words[field])):
            vocab = self._sorted.get((kind, field))
            if vocab is None:
                vocab = self._sorted[(kind, field)] = sorted(table)
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
        joined = self._joined[field]
        for i in bit_positions(candidates):
            if needle in joined[i]:
                out |= 1 << i
        return out

    # -- where a term occurs, for highlighting ---------------------------------------------------------

    def spans(self, i: int, node: Node, field: str) -> list[tuple[int, int]]:
        """The (start, end) character offsets of each occurrence of a term, phrase or prefix in paper
        i's field, in text order; the same occurrences as Rule.find on paper_fields()."""
        whole = needle_of(node)
        if whole is not None:
            return self.occurrences(i, field, *whole)
        assert isinstance(node, Prefix)
        needle = " " + node.prefix
        found = _word_numbers(self._joined[field][i], needle)
        raw = _word_numbers(self._raw_words(i, field), needle)
        if raw != found:
            found = sorted(set(found).union(raw))
        return self._spans_of(i, field, found, 1)

    def occurrences(self, i: int, field: str, needle: str, n: int) -> list[tuple[int, int]]:
        """spans() of a term or phrase given as its needle_of(): " w1 w2 " and its number of words."""
        return self._spans_of(i, field, _word_numbers(self._joined[field][i], needle), n)

    def _spans_of(self, i: int, field: str, found: list[int], n: int) -> list[tuple[int, int]]:
        """(start, end) of the n words from each word number found in paper i's field."""
        if not found:
            return []
        offsets = self._word_offsets(i, field)
        return [(offsets[2 * k], offsets[2 * (k + n) - 1]) for k in found]

    def _word_offsets(self, i: int, field: str) -> array:
        """Start and end of every word of paper i's field, flat: 4 bytes a word (8 past 64K characters)."""
        key = (i, field)
        found = self._offsets.get(key)
        if found is None:
            if len(self._offsets) >= OFFSETS_CACHE * 3:
                self._offsets.popitem(last=False)
            text = paper_texts(self.papers[i])[field]
            found = self._offsets[key] = array("H" if len(text) < 1 << 16 else "I", _word_bounds(text))
        else:
            self._offsets.move_to_end(key)  # least recently used goes first: popular papers stay
        return found

    def _raw_words(self, i: int, field: str) -> str:
        """Paper i's field as " w1 w2 … " of casefolded words before plural folding (for prefixes)."""
        key = (i, field)
        found = self._raw_joined.get(key)
        if found is None:
            if len(self._raw_joined) >= OFFSETS_CACHE:
                self._raw_joined.popitem(last=False)
            text = paper_texts(self.papers[i])[field]
            found = self._raw_joined[key] = " " + " ".join(rules.raw_words(text)) + " "
        else:
            self._raw_joined.move_to_end(key)
        return found


# Words split out with their separators: the running total of the pieces' lengths is every word's start
# and end, in C (a Match object per word costs twice as much). ASCII text splits as bytes, faster still.
_SPLIT = re.compile(r"([^\W_]+)")  # rules.WORD, captured
_SPLIT_ASCII = re.compile(rb"([A-Za-z0-9]+)")  # the same words in ASCII text


def _word_bounds(text: str) -> list[int]:
    """Start and end of every word (rules.WORD) of text, flat."""
    pieces = _SPLIT_ASCII.split(text.encode("ascii")) if text.isascii() else _SPLIT.split(text)
    return list(accumulate(map(len, pieces)))[:-1]  # the last total is the end of the text


def _add(table: dict[str, int], words: set[str], bit: int) -> None:
    """table[w] |= bit for every word: iterated in C (map, zip, update), as this is the index's
    one loop over every word of every paper (a set iterates in the same order twice)."""
    table.update(zip(words, map(bit.__or__, map(table.get, words, repeat(0)))))


def needle_of(node: Node) -> tuple[str, int] | None:
    """What a term or phrase is looked for as in a field's " w1 w2 … " string, and its number of
    words; None for a prefix (which also looks before plural folding: see PaperIndex.spans)."""
    if isinstance(node, Term):
        return " " + node.word + " ", 1
    if isinstance(node, Phrase):
        return " " + " ".join(node.words) + " ", len(node.words)
    return None


def _word_numbers(joined: str, needle: str) -> list[int]:
    """The numbers of the words of " w0 w1 … " where `needle` (which starts with the space before a
    word) occurs: a word's number is the count of spaces before it."""
    out = []
    at = joined.find(needle)
    k = last = 0
    while at != -1:
        k += joined.count(" ", last, at)
        last = at
        out.append(k)
        at = joined.find(needle, at + 1)
    return out


def bit_positions(mask: int) -> list[int]:
    """The positions of the set bits, lowest first."""
    out = []
    while mask:
        low = mask & -mask
        out.append(low.bit_length() - 1)
        mask ^= low
    return out
