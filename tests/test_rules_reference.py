"""Rules, checked by properties: printing round-trips, and the evaluator agrees with a naive reference.

The reference below is written independently of digestmail.rules and as plainly as possible: its own
query trees (tuples), its own printer (with or without every optional parenthesis, `-` or `NOT`, `AND` or
a space), and its own matcher that re-reads the raw text character by character for every term. Only
`singular()` is shared: it is the definition of plural folding, not logic under test.
"""

from __future__ import annotations

import functools
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pytest

from digestmail.errors import RuleError
from digestmail import rules
from digestmail.rules import And, Field, Not, Or, Phrase, Prefix, Term, compile_rule, singular, words

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------------------------ the papers

MADE_UP = [  # (title, abstract, authors): plurals, hyphens, diacritics, keywords as words, no authors
    ("Adam Is Not All You Need: Studies of SGD Optimizers",
     "We study stochastic gradient descent (SGD) and Adam-style optimizers. Learning-rate warmup is not "
     "needed; a learning rate schedule and gradient clipping are.", "Ada Lovelace, Geoffrey Hinton"),
    ("A Survey of Diffusion Models and Flow Matching",
     "This survey covers diffusion, flow-matching and consistency models for image and video generation.",
     "Yann LeCun"),
    ("Schrödinger Bridges for Zero-Shot Image Compression",
     "Schrodinger bridges compress images zero shot; the state-of-the-art codec is beaten on 3D scenes.", ""),
    ("Federated Learning without Privacy Loss",
     "Gradient leakage attacks on federated learning reconstruct client data; we defend against them.",
     "Zoë Müller and Émile Durand"),
    ("Large Language Models Reason with Chain of Thought",
     "LLMs and LLM-based agents generalize; chain-of-thought prompting improves reasoning on GSM8K.",
     "Jason Wei, Denny Zhou"),
    ("Boxes, Processes and Analyses", "Analysis of processes in boxes; the gas loss is tiny. Or is it?", ""),
    ("Optimal Compression of Neural Networks", "A neural network is compressed; compression is optimal.",
     "Song Han"),
    ("AND, OR and NOT Gates in Deep Learning", "Logic gates (and, or, not) learned by deep networks.",
     "Claude Shannon"),
    ("Adversarial Training Generalizes", "Adversarial examples; generalization and generalisation gaps.",
     "Ian Goodfellow"),
    ("", "An abstract with no title: adaptive gradient methods converge.", ""),
]


def seed_papers(folder: Path) -> list[tuple[str, str, str]]:
    """Distinct (title, abstract, "") from the digests: 5 header lines, then title/abstract pairs."""
    papers: dict[str, tuple[str, str, str]] = {}
    for path in sorted(folder.glob("*.txt")):
        lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
        body = lines[5:]
        for title, abstract in zip(body[0::2], body[1::2]):
            papers.setdefault(title, (title, abstract, ""))
    return list(papers.values())


@pytest.fixture(scope="module")
def real_papers(shared):
    papers = seed_papers(shared / "digests")
    assert len(papers) > 200  # 251 distinct titles in 5 digests
    return prepare(papers)


# ----------------------------------------------------------------------------- the naive reference

@functools.cache  # the same abstracts are read for every query: remember their words
def split_words(text: str) -> tuple[tuple[str, int, int], ...]:
    """(word, start, end) of each maximal run of letters and digits, one character at a time."""
    out, start = [], None
    for i, ch in enumerate(text + " "):
        if ch.isalnum() and i < len(text):
            if start is None:
                start = i
        elif start is not None:
            out.append((text[start:i], start, i))
            start = None
    return tuple(out)


@functools.cache
def lower(word: str) -> str:
    return "".join(ch for ch in word.casefold() if ch.isalnum())


@functools.cache
def fold(word: str) -> str:
    return singular(lower(word))


def ref_eval(q, paper: dict[str, str | None], scope=("title", "abstract")):
    """(matches, {(field, start, end)} of the positive hits that made it match)."""
    kind = q[0]
    if kind in ("term", "phrase", "prefix"):
        spans = set()
        for name in scope:
            text = paper.get(name)
            if not text:
                continue
            ws = split_words(text)
            if kind == "term":
                spans |= {(name, s, e) for w, s, e in ws if fold(w) == fold(q[1])}
            elif kind == "phrase":
                want = [fold(w) for w in q[1]]
                for i in range(len(ws) - len(want) + 1):
                    if [fold(w) for w, _, _ in ws[i:i + len(want)]] == want:
                        spans.add((name, ws[i][1], ws[i + len(want) - 1][2]))
            else:
                p = lower(q[1])
                spans |= {(name, s, e) for w, s, e in ws if lower(w).startswith(p) or fold(w).startswith(p)}
        return bool(spans), spans
    if kind == "field":
        return ref_eval(q[2], paper, (q[1],))
    if kind == "not":
        return not ref_eval(q[1], paper, scope)[0], set()
    results = [ref_eval(c, paper, scope) for c in q[1]]
    if kind == "and":
        ok = all(r[0] for r in results)
        return ok, set().union(*(r[1] for r in results)) if ok else set()
    ok = any(r[0] for r in results)
    return ok, set().union(*(r[1] for r in results if r[0]))


def ref_text(q, parens: bool) -> str:
    """The query text of a reference tree; `parens` puts every optional parenthesis in."""
    kind = q[0]
    if kind == "term":
        return q[1]
    if kind == "phrase":
        return "-".join(q[1]) if q[2] == "hyphen" else '"' + " ".join(q[1]) + '"'
    if kind == "prefix":
        return q[1] + "*"
    if kind == "field":
        inner = ref_text(q[2], parens)
        return f"{q[1]}:{inner}" if q[2][0] in ("term", "prefix") or (q[2][0] == "phrase" and q[2][2] == "quote") \
            else f"{q[1]}:({inner})"
    if kind == "not":
        inner = ref_text(q[1], parens)
        if q[1][0] in ("and", "or") or (parens and q[1][0] != "not"):
            inner = f"({inner})"
        return ("NOT " if q[2] == "NOT" else "-") + inner
    sep = " OR " if kind == "or" else (" AND " if q[2] == "AND" else " ")
    parts = []
    for c in q[1]:
        text = ref_text(c, parens)
        needs = c[0] == "or" if kind == "and" else False
        if needs or (parens and c[0] in ("and", "or")):
            text = f"({text})"
        parts.append(text)
    return sep.join(parts)


# ------------------------------------------------------------------------ strategies for queries

VOCAB = ["gradient", "Gradients", "descent", "stochastic", "SGD", "adam", "Optimizers", "optimizer",
         "diffusion", "compression", "adversarial", "model", "networks", "image", "language", "loss",
         "survey", "privacy", "federated", "not", "and", "or", "Not", "study", "studies", "analysis",
         "process", "boxes", "schrödinger", "schrodinger", "zoë", "hinton", "3d", "GSM8K", "llm", "LLMs"]
PHRASES = [("gradient", "descent"), ("neural", "network"), ("state", "of", "the", "art"), ("deep", "learning"),
           ("large", "language", "models"), ("learning", "rate"), ("federated", "learning"), ("zero", "shot"),
           ("flow", "matching"), ("chain", "of", "thought"), ("Geoffrey", "Hinton"), ("and", "not")]
PREFIXES = ["optim", "generali", "compress", "adapt", "stochas", "studi", "diffus", "learn", "LLM", "schr",
            "gradient", "zo", "analys"]

leaf = st.one_of(
    st.tuples(st.just("term"), st.sampled_from(VOCAB)),
    st.tuples(st.just("phrase"), st.sampled_from(PHRASES), st.sampled_from(["quote", "hyphen"])),
    st.tuples(st.just("prefix"), st.sampled_from(PREFIXES)),
)


def compounds(children, fields: bool):
    options = [
        st.tuples(st.just("and"), st.lists(children, min_size=2, max_size=3), st.sampled_from(["AND", " "])),
        st.tuples(st.just("or"), st.lists(children, min_size=2, max_size=3)),
        st.tuples(st.just("not"), children, st.sampled_from(["NOT", "-"])),
    ]
    if fields:
        options.append(st.tuples(st.just("field"), st.sampled_from(["title", "abstract", "author"]),
                                 st.recursive(leaf, lambda c: compounds(c, False), max_leaves=4)))
    return st.one_of(options)


queries = st.recursive(leaf, lambda c: compounds(c, True), max_leaves=8)


def prepare(papers):
    """(fields for digestmail, texts for the reference) of each paper, computed once."""
    out = []
    for title, abstract, authors in papers:
        texts = {"title": title, "abstract": abstract, "author": authors or None}
        fields = {"title": words(title), "abstract": words(abstract)}
        if authors:
            fields["author"] = words(authors)
        out.append((fields, texts))
    return out


MADE_UP_PREPARED = prepare(MADE_UP)


def check_agreement(q, parens: bool, papers) -> None:
    text = ref_text(q, parens)
    rule = compile_rule(text)
    for fields, texts in papers:
        expected, spans = ref_eval(q, texts)
        assert rule.matches(fields) == expected, (text, texts["title"])
        found = rule.find(fields)
        assert {(h.field, h.start, h.end) for h in found} == spans, (text, texts["title"])
        assert len(set(found)) == len(found)  # each (span, term) once; two terms may hit one span


# -------------------------------------------------------------------------------------- properties

@FAST
@given(queries, st.booleans())
def test_agrees_with_the_reference_on_made_up_papers(q, parens):
    check_agreement(q, parens, MADE_UP_PREPARED)


@pytest.mark.shared
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(q=queries, parens=st.booleans())
def test_agrees_with_the_reference_on_the_real_digests(real_papers, q, parens):
    check_agreement(q, parens, real_papers)


@FAST
@given(queries, st.booleans())
def test_both_spellings_of_a_query_parse_to_the_same_tree(q, parens):
    assert compile_rule(ref_text(q, parens)).ast == compile_rule(ref_text(q, not parens)).ast


# Trees of digestmail's own nodes, canonical as the parser builds them: And/Or flattened, a one-word
# phrase is a Term, words already folded, no field inside a field.

def flat(cls, children):
    out = []
    for c in children:
        out.extend(c.children if isinstance(c, cls) else [c])
    return cls(tuple(out))


ast_leaf = st.one_of(
    st.sampled_from(VOCAB).map(lambda w: Term(fold(w))),
    st.sampled_from(PHRASES).map(lambda ws: Phrase(tuple(fold(w) for w in ws))),
    st.sampled_from(PREFIXES).map(lambda p: Prefix(lower(p))),
)


def ast_compounds(children, fields: bool):
    options = [
        st.lists(children, min_size=2, max_size=3).map(lambda cs: flat(And, cs)),
        st.lists(children, min_size=2, max_size=3).map(lambda cs: flat(Or, cs)),
        children.map(Not),
    ]
    if fields:
        options.append(st.builds(Field, st.sampled_from(["title", "abstract", "author"]),
                                 st.recursive(ast_leaf, lambda c: ast_compounds(c, False), max_leaves=4)))
    return st.one_of(options)


asts = st.recursive(ast_leaf, lambda c: ast_compounds(c, True), max_leaves=10)


@FAST
@given(asts)
def test_str_round_trips_to_the_same_tree(ast):
    text = str(ast)
    rule = compile_rule(text)
    assert rule.ast == ast, text
    assert str(rule) == text  # a fixpoint


@FAST
@given(queries, st.booleans())
def test_str_of_a_parsed_query_is_a_fixpoint_and_means_the_same(q, parens):
    rule = compile_rule(ref_text(q, parens))
    again = compile_rule(str(rule))
    assert again.ast == rule.ast and str(again) == str(rule)
    for fields, _ in MADE_UP_PREPARED:
        assert again.find(fields) == rule.find(fields)


@FAST
@given(st.text(alphabet='ab OR AND NOT -*:()"title abstract author é3', max_size=30))
def test_any_text_compiles_or_raises_a_rule_error_with_a_column_inside_it(text):
    try:
        rule = compile_rule(text)
    except RuleError as err:
        assert 1 <= err.column <= len(text) + 1
        assert str(err).splitlines()[2].index("^") - 4 == err.column - 1
    else:
        assert compile_rule(str(rule)).ast == rule.ast


# --------------------------------------------------------------------------- fast paths, same results

@FAST
@given(queries, st.booleans())
def test_the_one_regex_reader_builds_the_parsers_tree(q, parens):
    text = ref_text(q, parens)
    simple = rules._simple(text)
    assert simple is None or simple == rules._Parser(text).parse(), text


@FAST
@given(st.text(alphabet='ab OR AND NOT -*:()"title abstract author é3\t', max_size=30))
def test_the_one_regex_reader_leaves_anything_odd_to_the_parser(text):
    simple = rules._simple(text)
    if simple is not None:
        assert simple == rules._Parser(text).parse(), text


@pytest.mark.parametrize("text", ["adam", "Adam OR SGD", '"learning rate"', "adam -survey", "optim*", "title:adam",
                                  "adam sgd", 'title:"Flow Matching" -abstract:survey*', "a AND b OR NOT c",
                                  "author:hinton OR  -title:x "])
def test_simple_queries_take_the_one_regex_reader(text):
    assert rules._simple(text) is not None and rules._simple(text) == rules._Parser(text).parse()


@pytest.mark.parametrize("text", ["(a OR b) c", "zero-shot", "schrödinger", "a\tb", "a OR", "-OR", "title:AND",
                                  "NOT NOT a", 'a"b c"', "title: a", "re:invent", "--a"])
def test_the_parser_reads_everything_else(text):
    assert rules._simple(text) is None


@FAST
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
       | st.text(alphabet="aZ09 _-.,'é\u0130\u00df\t\n", max_size=40))
def test_raw_words_are_the_unfolded_words(text):
    assert rules.raw_words(text) == list(words(text).raw)
