"""Rules: words, phrases, prefixes, fields, AND/OR/NOT with precedence, errors with columns, round trips."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from digestmail.errors import RuleError
from digestmail.rules import (And, Field, Hit, Not, Or, Phrase, Prefix, Term, compile_rule, parse, singular,
                              words)


def fields_of(title: str, abstract: str = "", author: str | None = None) -> dict:
    fields = {"title": words(title), "abstract": words(abstract)}
    if author is not None:
        fields["author"] = words(author)
    return fields


def hits(rule: str, title: str, abstract: str = "", author: str | None = None) -> list[str]:
    """`field:text` of every hit, as the paper writes it."""
    texts = {"title": title, "abstract": abstract, "author": author or ""}
    found = compile_rule(rule).find(fields_of(title, abstract, author))
    return [f"{h.field}:{texts[h.field][h.start:h.end]}" for h in found]


def matches(rule: str, title: str, abstract: str = "", author: str | None = None) -> bool:
    return compile_rule(rule).matches(fields_of(title, abstract, author))


# ------------------------------------------------------------------------------------- words, terms

def test_whole_words_case_insensitive():
    assert hits("adam", "ADAM beats SGD") == ["title:ADAM"]
    assert hits("adam", "Adamant optimisers", "madam") == []
    assert hits("ADAM", "adam") == ["title:adam"]


def test_phrases_and_hyphens():
    assert hits('"learning rate"', "A Learning-Rate Free Method") == ["title:Learning-Rate"]
    assert hits("zero-shot", "", "zero shot and Zero-Shot") == ["abstract:zero shot", "abstract:Zero-Shot"]
    assert hits("gradient", "", "gradient-based methods") == ["abstract:gradient"]
    assert hits('"learning rate"', "rate learning") == []
    assert hits('"learning rate"', "learning", "rate") == []  # a phrase stays inside one field
    assert parse("zero-shot") == parse('"zero shot"') == Phrase(("zero", "shot"))
    assert parse('"adam"') == Term("adam")


def test_words_keep_offsets_and_unfolded_forms():
    ws = words("Studies of GPT-4, (café)")
    assert list(ws) == [("study", 0, 7), ("of", 8, 10), ("gpt", 11, 14), ("4", 15, 16), ("café", 19, 23)]
    assert ws.raw == ("studies", "of", "gpt", "4", "café")
    assert words("") == [] and words("--- ...") == []


def test_or_collects_every_alternative_that_matched():
    assert hits("optimizer OR adam", "Adam", "an optimizer") == ["title:Adam", "abstract:optimizer"]
    assert hits("optimizer OR adam OR sgd", "Adam") == ["title:Adam"]
    assert hits("adam OR adam OR Adams", "Adam and adam") == ["title:Adam", "title:adam"]  # each span once


def test_adjacent_words_are_an_implicit_and_anywhere_in_title_or_abstract():
    assert hits("flow matching", "Flow Matching at scale") == ["title:Flow", "title:Matching"]
    assert hits("flow matching", "Matching flows", "") == ["title:Matching", "title:flows"]
    assert hits("flow matching", "Flow models", "matching priors") == ["title:Flow", "abstract:matching"]
    assert hits("flow matching", "Flow models") == []
    assert parse("flow matching") == parse("flow AND matching") == And((Term("flow"), Term("matching")))


@pytest.mark.parametrize("plural, singular_form", [
    ("optimizers", "optimizer"), ("studies", "study"), ("boxes", "box"), ("processes", "process"),
    ("images", "image"), ("analysis", "analysis"), ("loss", "loss"), ("gas", "gas"),
])
def test_light_plural_folding(plural, singular_form):
    assert singular(plural) == singular_form
    assert hits(singular_form, plural.title()) == [f"title:{plural.title()}"]
    assert hits(plural, singular_form) == [f"title:{singular_form}"]


def test_no_other_stemming():
    assert hits("optimizer", "optimization and optimizing") == []
    assert hits("train", "training trained") == []


def test_diacritics_are_kept():
    assert hits("café", "Un Café pour robots") == ["title:Café"]
    assert hits("schrödinger", "Schrodinger bridges") == []
    assert hits("schrodinger", "Schrödinger bridges") == []
    assert hits("schrödinger", "SCHRÖDINGER bridges") == ["title:SCHRÖDINGER"]
    assert hits("straße", "STRASSE") == ["title:STRASSE"]  # full case folding


def test_lowercase_keywords_are_ordinary_words():
    assert parse("and or not") == And((Term("and"), Term("or"), Term("not")))
    assert hits("not", "Dropout is NOT All You Need") == ["title:NOT"]
    assert hits('"is not all"', "Dropout is NOT All You Need") == ["title:is NOT All"]
    assert hits("dropout or sgd", "Dropout or SGD") == ["title:Dropout", "title:or", "title:SGD"]
    assert hits("dropout or sgd", "Dropout") == []


# --------------------------------------------------------------------------------------- prefixes

def test_prefixes_match_word_starts():
    assert hits("optim*", "Optimizers and Optimization", "an optimal optim") == [
        "title:Optimizers", "title:Optimization", "abstract:optimal", "abstract:optim"]
    assert hits("optim*", "suboptimal") == []
    assert hits("llm*", "LLMs and LLM-based agents") == ["title:LLMs", "title:LLM"]
    assert parse("OPTIM*") == Prefix("optim")


def test_prefixes_compare_the_unfolded_word_too():
    assert hits("studi*", "Case Studies") == ["title:Studies"]  # folded "study" does not start with it
    assert hits("studies*", "Case Studies") == ["title:Studies"]
    assert hits("studi*", "a study") == []
    assert hits("optimizers*", "optimizer") == []


def test_prefix_falls_back_to_folded_words_for_plain_lists():
    fields = {"title": list(words("Case Studies of optimizers"))}  # no .raw: only folded words
    assert [h.term for h in compile_rule("optim*").find(fields)] == ["optim*"]
    assert compile_rule("studi*").find(fields) == []


# ------------------------------------------------------------------------------------------ fields

def test_fields_on_terms_phrases_prefixes_and_groups():
    assert hits("title:adam", "Adam", "adam") == ["title:Adam"]
    assert hits("abstract:adam", "Adam", "adam") == ["abstract:adam"]
    assert hits("title:adam", "SGD", "adam") == []
    assert hits('title:"learning rate"', "Learning rate", "learning rate") == ["title:Learning rate"]
    assert hits("abstract:optim*", "Optimizers", "optimal") == ["abstract:optimal"]
    assert hits("title:(adam OR sgd)", "SGD", "adam") == ["title:SGD"]
    assert hits("title:(adam sgd)", "Adam", "sgd") == []
    assert hits("title:(adam -sgd)", "Adam", "sgd") == ["title:Adam"]  # the NOT looks in the title only
    assert hits("title:(adam -sgd)", "Adam vs SGD", "") == []


def test_author_field_only_with_author_and_only_there():
    assert hits("author:hinton", "x", "", "Geoffrey Hinton, Yann LeCun") == ["author:Hinton"]
    assert hits('author:"yann lecun"', "x", "", "Geoffrey Hinton, Yann LeCun") == ["author:Yann LeCun"]
    assert hits("author:hinton", "Hinton", "hinton") == []  # no author field: simply no match
    assert hits("author:hinton", "Hinton", "hinton", "") == []
    assert hits("hinton", "x", "", "Geoffrey Hinton") == []  # no field: title or abstract, never author
    assert hits("-author:hinton", "x") == [] and matches("-author:hinton", "x")


def test_find_and_matches_without_any_field():
    assert compile_rule("adam").find({}) == [] and not compile_rule("adam").matches({})
    assert compile_rule("-adam").matches({})


# ------------------------------------------------------------------------------------ AND, OR, NOT

def test_and_not_and_minus():
    assert hits("diffusion AND distillation", "Diffusion", "distillation") == [
        "title:Diffusion", "abstract:distillation"]
    assert hits("diffusion AND distillation", "Diffusion") == []
    for rule in ("diffusion -survey", "diffusion NOT survey", "diffusion AND NOT survey", "diffusion AND -survey"):
        assert hits(rule, "Diffusion models") == ["title:Diffusion"], rule
        assert hits(rule, "Diffusion models", "a survey") == [], rule
        assert parse(rule) == And((Term("diffusion"), Not(Term("survey"))))


def test_hits_under_not_never_appear():
    assert hits("adam OR -sgd", "Adam and SGD") == ["title:Adam"]
    assert hits("adam OR NOT (sgd momentum)", "Adam and SGD") == ["title:Adam"]
    assert hits("adam OR -sgd", "Momentum") == [] and matches("adam OR -sgd", "Momentum")
    assert hits("-(-adam)", "Adam") == [] and matches("-(-adam)", "Adam")


def test_find_is_empty_when_the_rule_does_not_match():
    assert hits("adam sgd", "Adam") == []
    assert hits("(adam OR sgd) momentum", "Adam and SGD") == []
    assert not matches("(adam OR sgd) momentum", "Adam and SGD")


def test_pure_negation_matches_every_paper_without_the_term():
    for rule in ("-survey", "NOT survey", "NOT title:survey"):
        r = compile_rule(rule)
        assert r.matches(fields_of("Diffusion models")) and r.find(fields_of("Diffusion models")) == []
        assert not r.matches(fields_of("A survey of diffusion"))
        assert r.matches_without_terms
    assert compile_rule("adam OR -survey").matches_without_terms
    assert compile_rule("title:(-survey)").matches_without_terms
    assert not compile_rule("adam -survey").matches_without_terms
    assert not compile_rule("(adam OR sgd) -survey").matches_without_terms


@pytest.mark.parametrize("rule, tree", [
    ("a b OR c", Or((And((Term("a"), Term("b"))), Term("c")))),
    ("a AND b OR c", Or((And((Term("a"), Term("b"))), Term("c")))),
    ("a OR b c", Or((Term("a"), And((Term("b"), Term("c")))))),
    ("a OR b AND c", Or((Term("a"), And((Term("b"), Term("c")))))),
    ("(a OR b) c", And((Or((Term("a"), Term("b"))), Term("c")))),
    ("NOT a b", And((Not(Term("a")), Term("b")))),
    ("NOT a OR b", Or((Not(Term("a")), Term("b")))),
    ("-(a OR b) c", And((Not(Or((Term("a"), Term("b")))), Term("c")))),
    ("NOT NOT a", Not(Not(Term("a")))),
    ("--a", Not(Not(Term("a")))),
    ("a (b c) d", And((Term("a"), Term("b"), Term("c"), Term("d")))),  # flattened
    ("a OR (b OR c)", Or((Term("a"), Term("b"), Term("c")))),
    ("((a))", Term("a")),
    ('title:(a OR "b c") -abstract:d*', And((Field("title", Or((Term("a"), Phrase(("b", "c"))))),
                                              Not(Field("abstract", Prefix("d")))))),
    ("title:(-a)", Field("title", Not(Term("a")))),
    ('-"a b"', Not(Phrase(("a", "b")))),
    ("a-b", Phrase(("a", "b"))),
])
def test_precedence_not_then_and_then_or(rule, tree):
    assert parse(rule) == tree
    assert compile_rule(rule).ast == tree


def test_precedence_in_evaluation():
    assert matches("a b OR c", "c") and not matches("a (b OR c)", "c")
    assert matches("NOT a b", "b") and not matches("NOT (a b)", "a b")


# ------------------------------------------------------------------------------------------ errors

@pytest.mark.parametrize("rule, column, message", [
    ("", 1, "empty rule"),
    ("   ", 1, "empty rule"),
    ("OR adam", 1, "OR needs a term on each side"),
    ("adam OR", 6, "OR needs a term on each side"),
    ("adam OR OR sgd", 9, "OR needs a term on each side"),
    ("a AND", 3, "AND needs a term on each side"),
    ("AND a", 1, "AND needs a term on each side"),
    ("(OR a)", 2, "OR needs a term on each side"),
    ("NOT", 1, "NOT needs a term after it"),
    ("a NOT", 3, "NOT needs a term after it"),
    ("(a NOT)", 4, "NOT needs a term after it"),
    ('adam OR "learning', 9, "unclosed quote"),
    ('"a" "', 5, "unclosed quote"),
    ('adam ""', 6, "empty phrase"),
    ('" - "', 1, "empty phrase"),
    ("adam OR ---", 9, "no letters or digits"),
    ("adam -", 6, "no letters or digits"),
    ("diffusion AND (distillation", 15, "unclosed parenthesis"),
    ("((a)", 1, "unclosed parenthesis"),
    ("a (", 3, "unclosed parenthesis"),
    ("a ()", 3, "empty parentheses"),
    ("title:()", 7, "empty parentheses"),
    ("a) b", 2, "unmatched )"),
    (")", 1, "unmatched )"),
    ("(a))", 4, "unmatched )"),
    ("titel:x", 1, "unknown field 'titel'"),
    ("a abstarct:x", 3, "unknown field 'abstarct'"),
    ("re:invent", 1, "unknown field 're'"),
    ("title:", 1, "title: needs a word, a phrase or a group right after it"),
    ("title: adam", 1, "title: needs a word, a phrase or a group right after it"),
    ("a author:)", 3, "author: needs a word"),
    ("title:OR", 1, "title: needs a word"),
    ("title:-survey", 1, "title: cannot be followed by a NOT"),
    ("title:(a abstract:b)", 10, "fields do not nest"),
    ("title:title:a", 7, "fields do not nest"),
    ("a*b", 2, "* only works at the end of a word"),
    ("*optim", 1, "* only works at the end of a word"),
    ("optim**", 6, "* only works at the end of a word"),
    ("a *", 3, "* needs a word before it"),
    ("zero-sh*", 1, "a prefix must be one word"),
    ('"deep learn*"', 12, "* does not work inside quotes"),
])
def test_errors_name_the_column(rule, column, message):
    with pytest.raises(RuleError) as err:
        compile_rule(rule)
    assert err.value.column == column and message in str(err.value), str(err.value)
    assert err.value.rule == rule and err.value.hint
    lines = str(err.value).splitlines()
    assert lines[0] == f"column {column}: {err.value.message.split(': ', 1)[1].splitlines()[0]}"
    assert lines[1] == f"    {rule}"
    assert lines[2].index("^") - 4 == column - 1


@pytest.mark.parametrize("rule, hint", [
    ("titel:x", "did you mean title:?"),
    ("athor:x", "did you mean author:?"),
    ("re:invent", '"re:invent"'),
    ("title:-survey", "-title:word"),
    ("a -", "-word"),
    ('"unclosed', 'close the phrase'),
])
def test_errors_give_a_helpful_hint(rule, hint):
    with pytest.raises(RuleError) as err:
        compile_rule(rule)
    assert hint in err.value.hint


def test_unclosed_parenthesis_message_has_the_caret_under_the_paren():
    with pytest.raises(RuleError) as err:
        compile_rule("diffusion AND (distillation")
    assert str(err.value).splitlines()[:3] == [
        "column 15: unclosed parenthesis",
        "    diffusion AND (distillation",
        "                  ^",
    ]


# -------------------------------------------------------------------------------- printing, caching

@pytest.mark.parametrize("rule, printed", [
    ('adam OR "learning rate"', 'adam OR "learning rate"'),
    ("zero-shot OR sgd", '"zero shot" OR sgd'),
    ("a", "a"),
    ("Optimizers", "optimizer"),
    ("a AND b OR c", "a b OR c"),
    ("a AND (b OR c)", "a (b OR c)"),
    ("NOT a AND NOT (b c)", "-a -(b c)"),
    ("(a OR b) OR (c d)", "a OR b OR c d"),
    ('title:(diffusion OR "flow matching") -survey', 'title:(diffusion OR "flow matching") -survey'),
    ("title:(adam)", "title:adam"),
    ("NOT title:(NOT a)", "-title:(-a)"),
    ("llm* AND (reasoning OR \"chain of thought\")", 'llm* (reasoning OR "chain of thought")'),
    ("and OR not", "and OR not"),
])
def test_str_prints_minimal_equivalent_query(rule, printed):
    compiled = compile_rule(rule)
    assert str(compiled) == printed
    again = compile_rule(str(compiled))
    assert again.ast == compiled.ast and str(again) == printed
    assert str(compiled.ast) == printed


def test_rule_keeps_source_and_is_cached():
    r = compile_rule("adam  OR sgd")
    assert r.source == "adam  OR sgd" and compile_rule("adam  OR sgd") is r


def test_hits_are_sorted_by_field_then_position():
    found = compile_rule("sgd OR adam").find(fields_of("SGD or Adam", "adam, then sgd"))
    assert found == [Hit("title", 0, 3, "sgd"), Hit("title", 7, 11, "adam"), Hit("abstract", 0, 4, "adam"),
                     Hit("abstract", 11, 14, "sgd")]
    assert [h.term for h in compile_rule('"flow matching" OR flow*').find(fields_of("Flow matching"))] == [
        "flow*", "flow matching"]


# -------------------------------------------------------------------------- docs/rules.md is exact

DOC = (Path(__file__).resolve().parents[1] / "docs" / "rules.md").read_text(encoding="utf-8")


def doc_section(title: str) -> str:
    return DOC.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def table_rows(section: str) -> list[list[str]]:
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in doc_section(section).splitlines()
            if line.startswith("| `")]
    return [[c.strip("`") for c in row] for row in rows]


def test_doc_examples_compile():
    topics = tomllib.loads(re.search(r"```toml\n(.*?)```", DOC, re.S).group(1))["topics"]
    assert len(topics) >= 8
    for rule in topics.values():
        compile_rule(rule)
    for row in table_rows("Examples"):
        compile_rule(row[0])


def test_doc_precedence_and_printing_tables_are_right():
    rows = table_rows("AND, OR, NOT and parentheses")
    assert len(rows) >= 5
    for written, means in rows:
        if means.startswith("("):  # an equivalent rule; the others are prose
            assert parse(written) == parse(means), written
    rows = table_rows("How digestmail writes a rule back")
    assert len(rows) >= 5
    for written, printed in rows:
        assert str(compile_rule(written)) == printed


def test_doc_error_examples_are_the_real_messages():
    blocks = re.findall(r"```text\n(.*?)```", doc_section("Errors"), re.S)
    assert len(blocks) >= 15
    seen = set()
    for block in blocks[1:]:
        lines = block.splitlines()
        rule = lines[1][4:]
        with pytest.raises(RuleError) as err:
            compile_rule(rule)
        assert str(err.value) == block.rstrip("\n"), rule
        seen.add(err.value.message.split(": ", 1)[1].split("\n")[0].split(" '")[0])
    assert len(seen) >= 15
    first = blocks[0].splitlines()
    with pytest.raises(RuleError) as err:
        compile_rule(first[1][4:])
    assert first[0].endswith(str(err.value).splitlines()[0])
