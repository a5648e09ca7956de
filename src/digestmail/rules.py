"""Topic rules (first version): `term OR "a phrase" OR …`, whole words, case-insensitive.

A term is one or more words; text is split into words at anything that is not a letter or digit, so
`zero-shot` in a rule or in a title is the phrase `zero shot`. Plurals fold lightly on both sides
(`optimizers` -> `optimizer`, `studies` -> `study`, `boxes` -> `box`); there is no other stemming. The rule-language issue replaces the
parser with AND/NOT/fields; `compile_rule()` and `Rule.find()` are the interface it keeps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from .errors import RuleError

_WORD = re.compile(r"[^\W_]+")
_TOKEN = re.compile(r'\s*(?:"(?P<phrase>[^"]*)"|(?P<word>[^\s"]+)|(?P<quote>"))')


@dataclass(frozen=True)
class Hit:
    """A term found in a field: `start`/`end` are character offsets into that field's text."""

    field: str
    start: int
    end: int
    term: str


def singular(word: str) -> str:
    """Light plural folding, applied to rule and text alike so both sides agree."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("ches", "shes", "sses", "xes", "zes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def words(text: str) -> list[tuple[str, int, int]]:
    """Split text into (folded word, start, end); the offsets index the original text."""
    return [(singular(m.group().casefold()), m.start(), m.end()) for m in _WORD.finditer(text)]


@dataclass(frozen=True)
class Rule:
    """A compiled rule: alternatives, each a tuple of casefolded words that must appear in a row."""

    source: str
    terms: tuple[tuple[str, ...], ...]

    def find(self, fields: dict[str, list[tuple[str, int, int]]]) -> list[Hit]:
        """All hits of any alternative in the tokenised fields ({'title': words(title), …})."""
        hits = []
        for name, toks in fields.items():
            for term in self.terms:
                n = len(term)
                for i in range(len(toks) - n + 1):
                    if toks[i][0] == term[0] and all(toks[i + k][0] == term[k] for k in range(1, n)):
                        hits.append(Hit(name, toks[i][1], toks[i + n - 1][2], " ".join(term)))
        return hits

    def __str__(self) -> str:
        return " OR ".join(f'"{" ".join(t)}"' if len(t) > 1 else t[0] for t in self.terms)


@lru_cache(maxsize=4096)
def compile_rule(source: str) -> Rule:
    """Parse a rule once (cached: many subscribers share topic rules); raise RuleError with a column."""
    terms: list[tuple[str, ...]] = []
    expect_term = True
    pos = 0
    while pos < len(source):
        m = _TOKEN.match(source, pos)
        if m is None:  # only trailing whitespace is left
            break
        col = m.start() + len(m.group()) - len(m.group().lstrip()) + 1
        if m.group("quote") is not None:
            raise RuleError("unclosed quote", rule=source, column=col, hint='close the phrase with "')
        if m.group("word") == "OR":
            if expect_term:
                raise RuleError("OR needs a term on each side", rule=source, column=col)
            expect_term = True
        else:
            text = m.group("phrase") if m.group("phrase") is not None else m.group("word")
            term = tuple(w for w, _, _ in words(text))
            if not term:
                raise RuleError("this term has no letters or digits to match", rule=source, column=col)
            if expect_term:
                terms.append(term)
            else:  # adjacent words without OR form one phrase in this first version
                terms[-1] = terms[-1] + term
            expect_term = False
        pos = m.end()
    if not terms:
        raise RuleError("empty rule", rule=source, column=1, hint='write a word, a "phrase" or a OR b')
    if expect_term:
        raise RuleError("OR needs a term on each side", rule=source, column=len(source.rstrip()))
    return Rule(source, tuple(terms))
