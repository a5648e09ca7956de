"""Selection, checked by properties: the bitmask index's candidates, ranking and explanations agree with a
plain reference built on Rule.matches and Rule.find (themselves checked against a naive matcher in
test_rules_reference.py).

The reference reads docs/selection.md literally: a candidate matches a topic or the query and not the
exclude; relevance sums, per distinct positive term, 3 if it is in the title, else 2 among the
authors, else 1 in the abstract; ties go by standing, title and id; an explanation lists the matching
sources, every hit Rule.find reports, and the words as the paper writes them.
"""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digestmail import rules
from digestmail.index import PaperIndex, standing
from digestmail.models import Match, Paper, Subscriber
from digestmail.rules import Field, Not, Phrase, Prefix, Term, compile_rule, words
from digestmail.select import Selector

from .test_rules_reference import MADE_UP, queries, ref_text, seed_papers

T0 = dt.datetime(2026, 11, 23, 8, tzinfo=dt.timezone.utc)
FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def made_papers(rows: list[tuple[str, str, str]]) -> list[Paper]:
    """Papers with varied standing, and each title twice (ties broken by standing, then id)."""
    out = []
    for i, (title, abstract, authors) in enumerate(rows + rows[:4]):
        out.append(Paper(id=i + 1, key=f"k{i}", title=title, abstract=abstract, first_seen=T0,
                         authors=tuple(authors.split(", ")) if authors else (), digest_count=1 + i % 3,
                         upvotes=(i * 37) % 50 or None, last_digest_date=T0.date(), last_ingested=T0))
    return out


PAPERS = made_papers(MADE_UP)


def fields_of(paper: Paper) -> dict[str, rules.Words]:
    return {"title": words(paper.title), "abstract": words(paper.abstract), "author": words(", ".join(paper.authors))}


def leaves(node: rules.Node, scope: tuple[str, ...] = rules.DEFAULT_SCOPE):
    if isinstance(node, (Term, Phrase, Prefix)):
        yield node, scope
    elif isinstance(node, Field):
        yield from leaves(node.child, (node.name,))
    elif not isinstance(node, Not):
        for child in node.children:
            yield from leaves(child, scope)


def relevance(sources: list[rules.Rule], paper: Paper) -> int:
    fields = fields_of(paper)

    def has(leaf, name):
        return name in scope and rules.Rule("", Field(name, leaf)).matches(fields)

    total = 0
    for leaf, scope in dict.fromkeys(pair for rule in sources for pair in leaves(rule.ast)):
        total += 3 if has(leaf, "title") else 2 if has(leaf, "author") else 1 if has(leaf, "abstract") else 0
    return total


def explanation(sources: list[tuple[str, rules.Rule]], paper: Paper) -> Match:
    fields = fields_of(paper)
    texts = {"title": paper.title, "abstract": paper.abstract, "author": ", ".join(paper.authors)}
    order = {"title": 0, "author": 1, "abstract": 2}
    topics, hits, reasons = [], [], []
    for name, rule in sources:
        if not rule.matches(fields):
            continue
        found = sorted(rule.find(fields), key=lambda h: (order[h.field], h.start))
        topics.append(name)
        hits.extend(found)
        shown: dict[str, str] = {}
        for h in found:
            shown.setdefault(h.term, texts[h.field][h.start:h.end])
        label = "your query" if name == "query" else f"topic {name}"
        reasons.append(f"{label}: {', '.join(shown.values())}" if shown else label)
    in_order = sorted(hits, key=lambda h: (order[h.field], h.start))
    return Match(topics=tuple(topics), terms=tuple(dict.fromkeys(h.term for h in in_order)),
                 spans=tuple(sorted({(h.field, h.start, h.end, h.term) for h in hits})), reason=" · ".join(reasons))


texts = st.builds(ref_text, queries, st.booleans())
subscribers = st.fixed_dictionaries({
    "topics": st.lists(texts, min_size=0, max_size=4),
    "query": st.one_of(st.just(""), texts),
    "exclude": st.one_of(st.just(""), st.just(""), texts),
    "max_papers": st.integers(1, 6),
    "min_papers": st.integers(1, 3),
})


def check(papers: list[Paper], drawn: dict, shared_topics: dict[str, str] | None = None) -> None:
    topics = dict(shared_topics or {})
    names = []
    for i, text in enumerate(drawn["topics"]):
        names.append(f"t{i}")
        topics[f"t{i}"] = text
    sub = Subscriber(email="a@example.org", topics=tuple(names) + ("unknown",), query=drawn["query"],
                     exclude=drawn["exclude"], max_papers=drawn["max_papers"], min_papers=drawn["min_papers"],
                     joined_at=T0)
    selector = Selector(topics, PaperIndex(papers, T0.date()), T0)
    sources = [(name, compile_rule(topics[name])) for name in names]
    if sub.query:
        sources.append(("query", compile_rule(sub.query)))
    exclude = compile_rule(sub.exclude) if sub.exclude else None

    matching = [p for p in papers if any(rule.matches(fields_of(p)) for _, rule in sources)
                and not (exclude is not None and exclude.matches(fields_of(p)))]
    got = selector.candidates(sub)
    assert sorted(p.id for p in selector.index.papers_in(got)) == sorted(p.id for p in matching)

    score = {p.id: relevance([rule for _, rule in sources], p) for p in matching}
    ranked = sorted(matching, key=lambda p: (-score[p.id], -standing(p, T0.date()), p.title.casefold(), p.id))
    choice = selector.choose(sub, got)
    if not matching:
        assert choice.skipped == "no matching papers"
        return
    if len(matching) < sub.min_papers:
        assert choice.skipped == f"below min_papers ({len(matching)} < {sub.min_papers})"
        return
    best = ranked[:sub.max_papers]
    assert [pick.paper.id for pick in choice.picks] == [p.id for p in best]
    assert [r for _, r in selector.rank(sub, got, sub.max_papers)] == [score[p.id] for p in best]
    for pick in choice.picks:
        assert selector.score(sub, pick.paper)[0] == score[pick.paper.id]
        assert pick.match == explanation(sources, pick.paper), pick.paper.title
        assert selector.explain(sub, pick.paper) == pick.match  # again, from the caches


@FAST
@given(subscribers)
def test_selection_agrees_with_the_reference_on_made_up_papers(drawn):
    check(PAPERS, drawn)


@FAST
@given(subscribers, st.sampled_from(sorted(MADE_UP)))
def test_explanations_agree_with_the_reference_for_every_matching_paper(drawn, row):
    """Every paper a subscriber's rules match is explained as the reference does, picked or not."""
    papers = made_papers([row])
    topics = {f"t{i}": text for i, text in enumerate(drawn["topics"])}
    sub = Subscriber(email="a@example.org", topics=tuple(topics), query=drawn["query"], joined_at=T0)
    selector = Selector(topics, PaperIndex(papers, T0.date()), T0)
    sources = [(name, compile_rule(text)) for name, text in topics.items()]
    if sub.query:
        sources.append(("query", compile_rule(sub.query)))
    for paper in papers:
        assert selector.explain(sub, paper) == explanation(sources, paper)


@pytest.mark.shared
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drawn=subscribers)
def test_selection_agrees_with_the_reference_on_the_real_digests(shared, drawn):
    check(made_papers(seed_papers(shared / "digests")[:120]), drawn)


def test_a_term_two_rules_ask_for_counts_once():
    papers = made_papers(MADE_UP)
    drawn = {"topics": ["adam OR sgd", "adam -survey", "title:adam"], "query": "adam", "exclude": "",
             "max_papers": 5, "min_papers": 1}
    check(papers, drawn)
    selector = Selector({"a": "adam OR sgd", "b": "adam"}, PaperIndex(papers, T0.date()), T0)
    sub = Subscriber(email="a@example.org", topics=("a", "b"), joined_at=T0)
    first = papers[0]  # "Adam Is Not All You Need: Studies of SGD Optimizers": adam and sgd in the title
    assert selector.score(sub, first)[0] == 3 + 3
