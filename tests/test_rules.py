"""Rules (first version): words and phrases joined by OR, whole words, light plural folding."""

from __future__ import annotations

import pytest

from digestmail.errors import RuleError
from digestmail.rules import compile_rule, singular, words


def hits(rule: str, title: str, abstract: str = "") -> list[str]:
    found = compile_rule(rule).find({"title": words(title), "abstract": words(abstract)})
    return [f"{h.field}:{(title if h.field == 'title' else abstract)[h.start:h.end]}" for h in found]


def test_whole_words_case_insensitive():
    assert hits("adam", "ADAM beats SGD") == ["title:ADAM"]
    assert hits("adam", "Adamant optimisers", "madam") == []


def test_phrases_and_hyphens():
    assert hits('"learning rate"', "A Learning-Rate Free Method") == ["title:Learning-Rate"]
    assert hits("zero-shot", "", "zero shot and Zero-Shot") == ["abstract:zero shot", "abstract:Zero-Shot"]
    assert hits("gradient", "", "gradient-based methods") == ["abstract:gradient"]
    assert hits('"learning rate"', "rate learning") == []


def test_or_and_adjacent_words():
    assert hits("optimizer OR adam", "Adam", "an optimizer") == ["title:Adam", "abstract:optimizer"]
    assert hits("flow matching", "Flow Matching at scale") == ["title:Flow Matching"]


@pytest.mark.parametrize("plural, singular_form", [
    ("optimizers", "optimizer"), ("studies", "study"), ("boxes", "box"), ("processes", "process"),
    ("images", "image"), ("analysis", "analysis"), ("loss", "loss"), ("gas", "gas"),
])
def test_light_plural_folding(plural, singular_form):
    assert singular(plural) == singular_form
    assert hits(singular_form, plural.title()) == [f"title:{plural.title()}"]


def test_non_ascii_words():
    assert hits("café", "Un Café pour robots") == ["title:Café"]
    assert hits("schrödinger", "Schrodinger bridges") == []


@pytest.mark.parametrize("rule, column, message", [
    ("", 1, "empty rule"),
    ("   ", 1, "empty rule"),
    ("OR adam", 1, "OR needs a term"),
    ("adam OR", 7, "OR needs a term"),
    ("adam OR OR sgd", 9, "OR needs a term"),
    ('adam OR "learning', 9, "unclosed quote"),
    ("adam OR ---", 9, "no letters or digits"),
])
def test_errors_name_the_column(rule, column, message):
    with pytest.raises(RuleError) as err:
        compile_rule(rule)
    assert err.value.column == column and message in str(err.value)
    caret_line = str(err.value).splitlines()[2]
    assert caret_line.index("^") - 4 == column - 1


def test_str_round_trips():
    for rule in ['adam OR "learning rate"', "zero-shot OR sgd", "a"]:
        compiled = compile_rule(rule)
        assert compile_rule(str(compiled)).terms == compiled.terms
