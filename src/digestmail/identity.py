"""Paper identity: one paper however a digest spells its title, and whichever id it gives (pure).

The rule, in order (documented in docs/identity.md):
1. Same arXiv id (version dropped) -> same paper. Two different arXiv ids are never merged.
2. Same normalised title -> same paper (NFKC, casefold, apostrophes dropped, punctuation, spacing,
   NBSP and arXiv hard line breaks folded).
3. Same compact title (the normalised title without spaces: `pre-training` == `pretraining`).
4. Near-identical: the same words once plurals are folded (`Vision Transformers Need Registers` ~
   `Vision Transformer Needs Registers`), or compact titles of at least 30 characters with the same
   numbers and one edit apart (a typo or two swapped letters). `GPT-3 …` and `GPT-4 …` never merge, nor do titles
   that differ by a real word (`… Are Scalable …` vs `… As Scalable …`).
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from functools import lru_cache
from typing import NamedTuple

from rapidfuzz.distance import OSA

from .rules import singular as _singular

# Titles reuse a small vocabulary: folding each distinct word once pays for the cache many times over.
singular = lru_cache(maxsize=1 << 16)(_singular)

# Apostrophes vanish ("Don't" == "Dont"); every other run of punctuation or space is one space.
_APOSTROPHES = re.compile(r"['\u2018\u2019`\u00b4]")
_WORD = re.compile(r"[^\W_]+")  # the runs between punctuation and spaces
_DIGITS = re.compile(r"\d+")
_ARXIV_NEW = re.compile(r"^(\d{4}\.\d{4,5})(?:v\d+)?$")
_ARXIV_OLD = re.compile(r"^([a-z-]+(?:\.[A-Z]{2})?/\d{7})(?:v\d+)?$")
_ARXIV_URL = re.compile(r"arxiv\.org/(?:abs|pdf)/([a-z-]+(?:\.[A-Z]{2})?/\d{7}|\d{4}\.\d{4,5})(?:v\d+)?", re.I)

NEAR_MIN_CHARS = 30
NEAR_MAX_EDITS = 1
BLOCK = 12  # characters of the compact title's head and tail used to find near-duplicate candidates


def normalise_title(title: str) -> str:
    """NFKC, casefold, apostrophes dropped, punctuation and whitespace folded to single spaces."""
    return " ".join(_title_words(title))


def _title_words(title: str) -> list[str]:
    # The words joined by one space are what replacing each run of [\W_] by a space and stripping
    # gives (whitespace is \W), and title_keys folds the same list instead of splitting again.
    text = unicodedata.normalize("NFKC", title).casefold()
    return _WORD.findall(_APOSTROPHES.sub("", text))


def arxiv_id(value: str | None) -> str | None:
    """The arXiv id without version (`2403.01234v2` -> `2403.01234`), or None if it is not one."""
    if not value:
        return None
    value = value.strip()
    if value.lower().startswith("arxiv:"):
        value = value[6:]
    m = _ARXIV_NEW.match(value) or _ARXIV_OLD.match(value)
    return m.group(1) if m else None


def arxiv_ids_in(text: str) -> list[str]:
    """arXiv ids of every arxiv.org/abs|pdf link in a text, in order, without duplicates."""
    return list(dict.fromkeys(m.group(1) for m in _ARXIV_URL.finditer(text)))


class TitleKeys(NamedTuple):
    """The forms of a title the store indexes to find the same paper again.

    A named tuple, and the blocks computed when asked: every entry of every digest gets one, and the
    store hashes the blocks straight from `compact` (probe_hashes).
    """

    normal: str
    compact: str
    folded: str  # words with plurals folded

    @property
    def head(self) -> str:
        return _blocks(self.compact)[0]

    @property
    def tail(self) -> str:
        return _blocks(self.compact)[1]

    @property
    def numbers(self) -> tuple[str, ...]:  # computed when asked: only a near-duplicate check needs them
        return tuple(_DIGITS.findall(self.normal))

    def probes(self) -> tuple[str, ...]:
        """The head and tail keys a title one edit away can have: its length differs by at most one.

        The three head keys come first; the middle one of each three is this title's own (`head`, `tail`).
        """
        n = len(self.compact)
        head, tail = self.compact[:BLOCK], self.compact[-BLOCK:]
        return tuple(f"{part}|{m}" for part in (head, tail) for m in (n - 1, n, n + 1))


def _blocks(compact: str) -> tuple[str, str]:
    # The length is part of the key: a common start ("Large Language Models…") alone would match
    # thousands of titles, while one edit changes the length by at most one.
    return f"{compact[:BLOCK]}|{len(compact)}", f"{compact[-BLOCK:]}|{len(compact)}"


def title_keys(title: str) -> TitleKeys:
    words = _title_words(title)
    return stored_keys(" ".join(words), " ".join(map(singular, words)))


def stored_keys(normal: str, folded: str) -> TitleKeys:
    """TitleKeys from the columns the store keeps, without normalising the title again."""
    return TitleKeys(normal, normal.replace(" ", ""), folded)


def key_hash(key: str) -> int:
    """The integer the store indexes a title key by (CRC-32 of its UTF-8).

    A few bytes per index entry instead of a whole title keeps the indexes small, so each digest
    rewrites fewer of their pages. Two keys may share a hash: that only fetches a candidate which
    the rules, comparing the titles themselves, then reject.
    """
    return zlib.crc32(key.encode("utf-8", "surrogatepass"))


def probe_hashes(keys: TitleKeys) -> tuple[int, ...]:
    """key_hash of each of keys.probes(), in that order.

    CRC-32 runs on: each block's CRC is taken once and extended by its three `|length` suffixes,
    which gives the same integers at a third less cost than hashing six whole strings.
    """
    n, compact, crc = len(keys.compact), keys.compact, zlib.crc32
    out: list[int] = []
    for part in (compact[:BLOCK], compact[-BLOCK:]):
        start = crc(part.encode("utf-8", "surrogatepass"))
        out += [crc(b"|%d" % m, start) for m in (n - 1, n, n + 1)]
    return tuple(out)


def paper_key(title: str, arxiv: str | None = None) -> str:
    """The canonical key: the arXiv id when known, else the normalised title."""
    return canonical_key(normalise_title(title), arxiv)


def canonical_key(normal: str, arxiv: str | None) -> str:
    """paper_key for a title already normalised (the store has it at hand)."""
    return f"arxiv:{arxiv}" if arxiv else f"title:{normal}"


def near_duplicate(a: TitleKeys, b: TitleKeys) -> bool:
    """True when two titles differ by a slip (a plural, a typo), never by a number or a real word."""
    if a.compact == b.compact or a.folded == b.folded:
        return True
    if min(len(a.compact), len(b.compact)) < NEAR_MIN_CHARS or a.numbers != b.numbers:
        return False
    return OSA.distance(a.compact, b.compact, score_cutoff=NEAR_MAX_EDITS) <= NEAR_MAX_EDITS
