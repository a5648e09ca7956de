"""Topic rules: the query language admins and subscribers write (pure: no I/O). See docs/rules.md.

    rule     := or
    or       := and ("OR" and)*
    and      := unary (["AND"] unary)*          adjacency is an implicit AND
    unary    := ("NOT" | "-") unary | primary   NOT binds tightest
    primary  := word | "a phrase" | prefix* | field:primary | "(" or ")"
    field    := title | abstract | author       no space after the colon; fields do not nest

Terms match whole words, case-insensitively. Text (and a rule's words) is split into words at anything
that is not a letter or digit, so `zero-shot` is the phrase `zero shot`. Plurals fold lightly on both
sides (`optimizers` -> `optimizer`, `studies` -> `study`, `boxes` -> `box`); there is no other
stemming, and diacritics are kept. A term without a field looks in the title and the abstract;
`author:` looks only in the "author" field.

`compile_rule()` parses (cached) into a `Rule` whose `ast` is a tree of small frozen dataclasses
(`Term`, `Phrase`, `Prefix`, `Field`, `And`, `Or`, `Not`): most queries people write are read by one
regular expression, the rest (and every error) by the full parser, into the same tree. `str()` of a
rule or a node prints a query that parses back to the same tree. `Rule.matches()` says whether a paper matches; `Rule.find()` gives
the hits of the positive terms that made it match (for highlighting), and [] when it does not match.
A rule can match without any hit: `-survey` matches every paper that does not mention a survey.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from .errors import RuleError

WORD = re.compile(r"[^\W_]+")  # a word: letters and digits
_FIELD_NAME = re.compile(r"[^\W\d_]+:")
FIELDS = ("title", "abstract", "author")
DEFAULT_SCOPE = ("title", "abstract")  # where a term without a field looks
KEYWORDS = ("AND", "OR", "NOT")

Fields = Mapping[str, Sequence[tuple[str, int, int]]]


# --------------------------------------------------------------------------------------------- words

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


def _casefold(word: str) -> str:
    """Casefold one word, dropping what casefolding adds that is not a letter or digit (İ -> i̇ -> i)."""
    folded = word.casefold()
    return folded if folded.isalnum() else "".join(c for c in folded if c.isalnum())


class Words(list):
    """What `words()` returns: a list of (folded word, start, end), plus `raw`, the same words
    casefolded but not plural-folded (prefixes compare against both: `studi*` matches "studies").

    Treat it as read-only: the first rule evaluated on it keeps its word -> positions index here, so
    the many rules run against one paper's fields share it. A plain list works too, re-indexed on
    every call and with prefixes compared against the folded words only.
    """

    raw: tuple[str, ...] = ()
    word_index: _FieldIndex | None = None


# ASCII: letters lowered, digits kept, anything else a space (casefolding ASCII is lowering).
_ASCII_WORDS = bytes.maketrans(bytes(range(128)), bytes(
    c | 0x20 if chr(c).isalpha() else c if chr(c).isdigit() else 32 for c in range(128)))


def raw_words(text: str) -> list[str]:
    """The casefolded words of text, without offsets or plural folding (`words(text).raw`, faster)."""
    if text.isascii():  # a byte translation and a split, 3x faster than the regex
        return text.encode("ascii").translate(_ASCII_WORDS).decode("ascii").split()
    return [_casefold(w) for w in WORD.findall(text)]


def words(text: str) -> Words:
    """Split text into (folded word, start, end); the offsets index the original text."""
    out = Words()
    raw = []
    for m in WORD.finditer(text):
        w = _casefold(m.group())
        raw.append(w)
        out.append((singular(w), m.start(), m.end()))
    out.raw = tuple(raw)
    return out


# ----------------------------------------------------------------------------------------------- AST

class Node:
    """Base of the rule tree; `str(node)` is a query that parses back to an equal node."""

    __slots__ = ()

    def __str__(self) -> str:
        return unparse(self)


@dataclass(frozen=True, slots=True)
class Term(Node):
    """One folded word (casefolded, plural-folded), matched as a whole word."""

    word: str


@dataclass(frozen=True, slots=True)
class Phrase(Node):
    """Two or more folded words that must appear in a row, in one field."""

    words: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Prefix(Node):
    """Any word starting with `prefix` (casefolded, not plural-folded)."""

    prefix: str


@dataclass(frozen=True, slots=True)
class Field(Node):
    """`child` looked for only in field `name` (one of FIELDS); fields do not nest."""

    name: str
    child: Node


@dataclass(frozen=True, slots=True)
class And(Node):
    """All children (two or more, none of them an And)."""

    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or(Node):
    """At least one child (two or more, none of them an Or)."""

    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not(Node):
    """The paper does not match `child`; contributes no hits."""

    child: Node


def and_(children: Sequence[Node]) -> Node:
    """And of children, flattened (`a (b c)` is `a b c`); one child is itself."""
    flat = tuple(g for c in children for g in (c.children if isinstance(c, And) else (c,)))
    return flat[0] if len(flat) == 1 else And(flat)


def or_(children: Sequence[Node]) -> Node:
    """Or of children, flattened; one child is itself."""
    flat = tuple(g for c in children for g in (c.children if isinstance(c, Or) else (c,)))
    return flat[0] if len(flat) == 1 else Or(flat)


def _level(node: Node) -> int:
    return 1 if isinstance(node, Or) else 2 if isinstance(node, And) else 3


def unparse(node: Node) -> str:
    """The query text of a tree: minimal parentheses, phrases quoted, NOT written as `-`."""
    if isinstance(node, Term):
        return node.word
    if isinstance(node, Phrase):
        return '"' + " ".join(node.words) + '"'
    if isinstance(node, Prefix):
        return node.prefix + "*"
    if isinstance(node, Field):
        inner = unparse(node.child)
        atomic = isinstance(node.child, (Term, Phrase, Prefix))
        return f"{node.name}:{inner}" if atomic else f"{node.name}:({inner})"
    if isinstance(node, Not):
        return "-" + _wrap(node.child, 3)
    if isinstance(node, And):
        return " ".join(_wrap(c, 3) for c in node.children)
    if isinstance(node, Or):
        return " OR ".join(_wrap(c, 2) for c in node.children)
    raise TypeError(f"not a rule node: {node!r}")


def _wrap(node: Node, level: int) -> str:
    text = unparse(node)
    return f"({text})" if _level(node) < level else text


# ------------------------------------------------------------------------------------------- parsing

@dataclass(frozen=True)
class _Tok:
    kind: str  # NODE, FIELD, AND, OR, NOT, LPAREN, RPAREN, END
    start: int  # offset in the source
    end: int
    text: str = ""
    node: Node | None = None

    @property
    def column(self) -> int:
        return self.start + 1


_STARTS = ("NODE", "FIELD", "NOT", "LPAREN")
_FIELD_VALUE = 'write title:word, title:"a phrase" or title:(a OR b), with no space after the colon'


def _tokens(source: str) -> Iterator[_Tok]:
    """Tokens left to right (lazily, so errors come in reading order); ends with END."""
    def fail(message: str, offset: int, hint: str | None = None) -> RuleError:
        return RuleError(message, rule=source, column=offset + 1, hint=hint)

    n = len(source)
    pos = 0
    while True:
        while pos < n and source[pos].isspace():
            pos += 1
        if pos >= n:
            yield _Tok("END", n, n)
            return
        c = source[pos]
        if c == "(":
            yield _Tok("LPAREN", pos, pos + 1, c)
            pos += 1
            continue
        if c == ")":
            yield _Tok("RPAREN", pos, pos + 1, c)
            pos += 1
            continue
        if c == '"':
            close = source.find('"', pos + 1)
            if close == -1:
                raise fail("unclosed quote", pos, 'close the phrase with another "')
            content = source[pos + 1:close]
            star = content.find("*")
            if star != -1:
                raise fail("* does not work inside quotes", pos + 1 + star,
                           'a prefix is one word outside quotes, e.g. optim*; a "phrase" is matched as written')
            folded = [w for w, _, _ in words(content)]
            if not folded:
                raise fail("empty phrase", pos, 'put words between the quotes, e.g. "learning rate"')
            node = Term(folded[0]) if len(folded) == 1 else Phrase(tuple(folded))
            yield _Tok("NODE", pos, close + 1, source[pos:close + 1], node)
            pos = close + 1
            continue
        end = pos
        while end < n and not source[end].isspace() and source[end] not in '()"':
            end += 1
        text = source[pos:end]
        rest = text.lstrip("-")  # `-word`, `--word`, `-(…)`, `-"…"` are NOTs; `-` or `---` alone is a bad term
        if c == "-" and (WORD.search(rest) is not None or (not rest and end < n and source[end] in '("')):
            yield _Tok("NOT", pos, pos + 1, "-")
            pos += 1
            continue
        if text in KEYWORDS:
            yield _Tok(text, pos, end, text)
            pos = end
            continue
        m = _FIELD_NAME.match(text)
        if m:
            name = m.group()[:-1]
            if name not in FIELDS:
                close = difflib.get_close_matches(name.casefold(), FIELDS, n=1, cutoff=0.6)
                hint = (f"did you mean {close[0]}:? " if close else "") + \
                    "the fields are title:, abstract: and author:"
                if not close:
                    hint += f'; to match the words themselves, quote them: "{text}"'
                raise fail(f"unknown field {name!r}", pos, hint)
            yield _Tok("FIELD", pos, pos + len(m.group()), name)
            pos += len(m.group())
            continue
        yield _Tok("NODE", pos, end, text, _word_node(text, pos, fail))
        pos = end


def _word_node(text: str, pos: int, fail) -> Node:
    """The node of one unquoted word: a term, a phrase (`zero-shot`) or a prefix (`optim*`)."""
    star = text.find("*")
    if star != -1 and star != len(text) - 1:
        raise fail("* only works at the end of a word", pos + star,
                   "a prefix looks like optim* (matches optimizer, optimization, …); * cannot start or "
                   "sit inside a word")
    if star != -1:
        base = text[:-1]
        if not any(ch.isalnum() for ch in base):
            raise fail("* needs a word before it", pos + star, "write a prefix like optim*")
        if not base.isalnum():
            raise fail("a prefix must be one word of letters and digits", pos,
                       f"the * applies to a single word: write e.g. "
                       f"{_casefold(WORD.findall(base)[-1])}* and the other words separately")
        return Prefix(_casefold(base))
    folded = [w for w, _, _ in words(text)]
    if not folded:
        raise fail("this term has no letters or digits to match", pos,
                   "to exclude a word write -word, with no space after the minus" if text == "-"
                   else "terms match words made of letters and digits")
    return Term(folded[0]) if len(folded) == 1 else Phrase(tuple(folded))


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.toks = _tokens(source)
        self.prev: _Tok | None = None
        self.tok = next(self.toks)

    def fail(self, message: str, tok: _Tok, hint: str | None = None) -> RuleError:
        return RuleError(message, rule=self.source, column=tok.column, hint=hint)

    def advance(self) -> None:
        self.prev, self.tok = self.tok, next(self.toks)

    def parse(self) -> Node:
        if self.tok.kind == "END":
            raise self.fail("empty rule", _Tok("END", 0, 0),
                            'write a word, a "phrase", or combine them: a OR b, a -b, title:(a b)')
        node = self.or_expr(None)
        if self.tok.kind == "RPAREN":
            raise self.fail("unmatched )", self.tok, "remove it, or add the ( it closes")
        return node

    def or_expr(self, field: str | None) -> Node:
        items = [self.and_expr(field)]
        while self.tok.kind == "OR":
            self.advance()
            items.append(self.and_expr(field))
        return or_(items)

    def and_expr(self, field: str | None) -> Node:
        items = [self.unary(field)]
        while True:
            if self.tok.kind == "AND":
                self.advance()
            elif self.tok.kind not in _STARTS:
                break
            items.append(self.unary(field))
        return and_(items)

    def unary(self, field: str | None) -> Node:
        if self.tok.kind == "NOT":
            self.advance()
            return Not(self.unary(field))
        return self.primary(field)

    def primary(self, field: str | None) -> Node:
        tok = self.tok
        if tok.kind == "NODE":
            self.advance()
            assert tok.node is not None
            return tok.node
        if tok.kind == "FIELD":
            if field is not None:
                raise self.fail(f"{tok.text}: is inside {field}:(…), and fields do not nest", tok,
                                f"move {tok.text}: outside the {field}:(…) group")
            self.advance()
            value = self.tok
            if value.start != tok.end or value.kind not in ("NODE", "LPAREN"):
                if value.kind == "FIELD" and value.start == tok.end:
                    raise self.fail(f"{value.text}: is inside {tok.text}:, and fields do not nest", value,
                                    f"use one field: {tok.text}:word or {value.text}:word")
                if value.kind == "NOT" and value.start == tok.end:
                    raise self.fail(f"{tok.text}: cannot be followed by a NOT", tok,
                                    f"to exclude, put the minus first: -{tok.text}:word")
                raise self.fail(f"{tok.text}: needs a word, a phrase or a group right after it", tok,
                                _FIELD_VALUE)
            return Field(tok.text, self.primary(tok.text))
        if tok.kind == "LPAREN":
            self.advance()
            if self.tok.kind == "RPAREN":
                raise self.fail("empty parentheses", tok, "put a term inside, e.g. (adam OR sgd)")
            if self.tok.kind == "END":
                raise self.fail("unclosed parenthesis", tok, "add the ) that closes it")
            node = self.or_expr(field)
            if self.tok.kind != "RPAREN":
                raise self.fail("unclosed parenthesis", tok, "add the ) that closes it")
            self.advance()
            return node
        raise self.missing()

    def missing(self) -> RuleError:
        """Where a term was expected and there is none: blame the operator left without one."""
        tok, prev = self.tok, self.prev
        if tok.kind in ("AND", "OR"):
            return self.fail(f"{tok.text} needs a term on each side", tok,
                             f"write a {tok.text} b; remove the extra {tok.text}")
        if prev is not None and prev.kind in ("AND", "OR"):
            return self.fail(f"{prev.text} needs a term on each side", prev,
                             f"write a {prev.text} b; remove the extra {prev.text}")
        if prev is not None and prev.kind == "NOT":
            return self.fail(f"{prev.text} needs a term after it", prev,
                             "write NOT word or -word (no space after the minus)")
        return self.fail("unmatched )", tok, "remove it, or add the ( it closes")  # `)` at the start


def parse(source: str) -> Node:
    """The rule tree of `source` (uncached); raises RuleError naming the column."""
    node = _simple(source)
    return node if node is not None else _Parser(source).parse()


# A plain ASCII word, prefix or "phrase", maybe with a minus and a field; or a keyword. Spaces between.
_SIMPLE_TOKEN = re.compile(r' *(?:(AND|OR|NOT)|(-?)(?:(title|abstract|author):)?'
                           r'(?:([A-Za-z0-9]+)(\*?)|"([A-Za-z0-9]+(?: [A-Za-z0-9]+)*)"))(?= |\Z)')


def _simple(source: str) -> Node | None:
    """The tree of a query without parentheses, hyphens or non-ASCII text, read with one regex, or
    without quotes by string methods (most subscribers' own queries: `a OR b`, `a -b`, `title:"a b"`,
    `optim*`); None for anything else, including every error, which the full parser then reads and
    reports."""
    if not source.isascii():
        return None
    tokens = _simple_tokens(source) if '"' in source else _plain_tokens(source)
    if tokens is None:
        return None
    groups: list[list[Node]] = []
    items: list[Node] = []
    negate, want = False, True  # want: a term must come next
    for keyword, minus, name, word, star, quoted in tokens:
        if keyword:
            if keyword == "NOT":
                if negate:
                    return None
                negate = want = True
            elif want:
                return None
            else:
                if keyword == "OR":
                    groups.append(items)
                    items = []
                want = True
            continue
        if word is not None:
            if not star and word in KEYWORDS:  # `-OR`, `title:AND`: the parser's errors
                return None
            node: Node = Prefix(word.lower()) if star else Term(singular(word.lower()))
        else:
            folded = [singular(w) for w in quoted.lower().split(" ")]
            node = Term(folded[0]) if len(folded) == 1 else Phrase(tuple(folded))
        if name:
            node = Field(name, node)
        if minus:
            node = Not(node)
        if negate:
            node, negate = Not(node), False
        items.append(node)
        want = False
    if want:
        return None
    groups.append(items)
    # No term here is an And or an Or, so there is nothing to flatten (`and_`, `or_` would, slower).
    ands = [g[0] if len(g) == 1 else And(tuple(g)) for g in groups]
    return ands[0] if len(ands) == 1 else Or(tuple(ands))


_Token = tuple[str | None, str | None, str | None, str | None, str | None, str | None]  # _SIMPLE_TOKEN's groups


def _simple_tokens(source: str) -> list[_Token] | None:
    """_SIMPLE_TOKEN's groups for each token of source, or None when something else is in between."""
    out = []
    pos = 0
    for m in _SIMPLE_TOKEN.finditer(source):
        if m.start() != pos:
            return None
        pos = m.end()
        out.append(m.groups())
    return None if source[pos:].strip(" ") else out


def _plain_tokens(source: str) -> list[_Token] | None:
    """_simple_tokens for ASCII text without quotes, where tokens are what lies between spaces: each
    told by string methods, in 60 % of the regex's time (a phrase's spaces still need the regex)."""
    out: list[_Token] = []
    for token in source.split(" "):
        if not token:
            continue
        if token in KEYWORDS:
            out.append((token, None, None, None, None, None))
            continue
        minus = ""
        if token[0] == "-":
            minus, token = "-", token[1:]
        name: str | None
        name, colon, word = token.partition(":")
        if not colon:
            name, word = None, token
        elif name not in FIELDS:
            return None
        star = ""
        if word[-1:] == "*":
            star, word = "*", word[:-1]
        if not word.isalnum():  # ASCII here: [A-Za-z0-9]+
            return None
        out.append((None, minus, name, word, star, None))
    return out


# ---------------------------------------------------------------------------------------- evaluating

class _FieldIndex:
    """One field of one paper: word -> positions, built once per `Words` (per call for a plain list),
    so a term or phrase costs O(its occurrences), not a scan of the field."""

    __slots__ = ("toks", "raw", "at", "_raw_at", "_prefixes")

    def __init__(self, toks: Sequence[tuple[str, int, int]]) -> None:
        self.toks = toks
        self.raw: tuple[str, ...] | None = getattr(toks, "raw", None) or None
        self.at: dict[str, list[int]] = {}
        for i, (w, _, _) in enumerate(toks):
            self.at.setdefault(w, []).append(i)
        self._raw_at: dict[str, list[int]] | None = None
        self._prefixes: dict[str, list[int]] = {}

    def term(self, word: str) -> list[int]:
        return self.at.get(word, [])

    def phrase(self, ws: tuple[str, ...]) -> list[int]:
        toks, n = self.toks, len(ws)
        return [i for i in self.at.get(ws[0], ()) if i + n <= len(toks)
                and all(toks[i + k][0] == ws[k] for k in range(1, n))]

    def prefix(self, p: str) -> list[int]:
        if p not in self._prefixes:
            self._prefixes[p] = self._scan(p)
        return self._prefixes[p]

    def _scan(self, p: str) -> list[int]:
        found = {i for w, ps in self.at.items() if w.startswith(p) for i in ps}
        if self.raw is not None:
            if self._raw_at is None:
                self._raw_at = {}
                for i, w in enumerate(self.raw):
                    self._raw_at.setdefault(w, []).append(i)
            found.update(i for w, ps in self._raw_at.items() if w.startswith(p) for i in ps)
        return sorted(found)


class _Paper:
    """The fields of one paper, indexed lazily."""

    __slots__ = ("fields", "_index")

    def __init__(self, fields: Fields) -> None:
        self.fields = fields
        self._index: dict[str, _FieldIndex | None] = {}

    def field(self, name: str) -> _FieldIndex | None:
        if name not in self._index:
            toks = self.fields.get(name)
            idx = toks.word_index if isinstance(toks, Words) else None
            if idx is None and toks:
                idx = _FieldIndex(toks)
                if isinstance(toks, Words):
                    toks.word_index = idx
            self._index[name] = idx
        return self._index[name]

    def positions(self, node: Node, name: str) -> list[int]:
        idx = self.field(name)
        if idx is None:
            return []
        if isinstance(node, Term):
            return idx.term(node.word)
        if isinstance(node, Phrase):
            return idx.phrase(node.words)
        assert isinstance(node, Prefix)
        return idx.prefix(node.prefix)


def term_of(node: Node) -> str:
    """How hits name a term, phrase or prefix: `adam`, `learning rate`, `optim*`; distinct for
    distinct leaves (a phrase has a space, a prefix its star, a word neither)."""
    if isinstance(node, Term):
        return node.word
    if isinstance(node, Phrase):
        return " ".join(node.words)
    assert isinstance(node, Prefix)
    return node.prefix + "*"


def _leaf_len(node: Node) -> int:
    return len(node.words) if isinstance(node, Phrase) else 1


def _matches(node: Node, paper: _Paper, scope: tuple[str, ...]) -> bool:
    if isinstance(node, (Term, Phrase, Prefix)):
        return any(paper.positions(node, name) for name in scope)
    if isinstance(node, Field):
        return _matches(node.child, paper, (node.name,))
    if isinstance(node, Not):
        return not _matches(node.child, paper, scope)
    if isinstance(node, And):
        return all(_matches(c, paper, scope) for c in node.children)
    if isinstance(node, Or):
        return any(_matches(c, paper, scope) for c in node.children)
    raise TypeError(f"not a rule node: {node!r}")


def _hits(node: Node, paper: _Paper, scope: tuple[str, ...]) -> list[Hit] | None:
    """The hits that make `node` true, or None when it is false ([] when true by negation only)."""
    if isinstance(node, (Term, Phrase, Prefix)):
        term, n = term_of(node), _leaf_len(node)
        found = []
        for name in scope:
            positions = paper.positions(node, name)
            if positions:
                toks = paper.fields[name]
                found.extend(Hit(name, toks[i][1], toks[i + n - 1][2], term) for i in positions)
        return found or None
    if isinstance(node, Field):
        return _hits(node.child, paper, (node.name,))
    if isinstance(node, Not):
        return None if _matches(node.child, paper, scope) else []
    if isinstance(node, And):
        out: list[Hit] = []
        for c in node.children:
            h = _hits(c, paper, scope)
            if h is None:
                return None
            out.extend(h)
        return out
    if isinstance(node, Or):
        acc: list[Hit] | None = None
        for c in node.children:
            h = _hits(c, paper, scope)
            if h is not None:
                acc = (acc or []) + h
        return acc
    raise TypeError(f"not a rule node: {node!r}")


def _needs_hit(node: Node) -> bool:
    """True when every way of satisfying `node` involves a positive term occurring."""
    if isinstance(node, (Term, Phrase, Prefix)):
        return True
    if isinstance(node, Field):
        return _needs_hit(node.child)
    if isinstance(node, Not):
        return False
    if isinstance(node, And):
        return any(_needs_hit(c) for c in node.children)
    assert isinstance(node, Or)
    return all(_needs_hit(c) for c in node.children)


@dataclass(frozen=True)
class Rule:
    """A compiled rule: the text it came from and its tree."""

    source: str
    ast: Node

    def matches(self, fields: Fields) -> bool:
        """Whether the paper whose tokenised fields ({'title': words(title), …}) are given matches."""
        return _matches(self.ast, _Paper(fields), DEFAULT_SCOPE)

    def find(self, fields: Fields) -> list[Hit]:
        """The hits of the positive terms that made the rule match, in field then text order, each
        (span, term) once — `study OR studi*` hits "studies" twice, once per term; [] when the rule
        does not match, and also when it matches by negation only (`-survey`: see `matches`)."""
        hits = _hits(self.ast, _Paper(fields), DEFAULT_SCOPE)
        if not hits:
            return []
        order = {name: i for i, name in enumerate(fields)}
        return sorted(set(hits), key=lambda h: (order.get(h.field, len(order)), h.start, h.end, h.term))

    @property
    def matches_without_terms(self) -> bool:
        """True when the rule can match a paper in which none of its positive terms occur
        (`-survey`, `adam OR -survey`): fine to exclude with, too broad to include with."""
        return not _needs_hit(self.ast)

    def __str__(self) -> str:
        return unparse(self.ast)


@lru_cache(maxsize=4096)
def compile_rule(source: str) -> Rule:
    """Parse a rule once (cached: many subscribers share topic rules); raise RuleError with a column."""
    return Rule(source, parse(source))
