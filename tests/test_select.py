"""Selection: the bitmask index agrees with the rules, the window, exclude, min/max, ranking and reasons."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
from pathlib import Path

import hypothesis
import pytest
from hypothesis import strategies as st

from digestmail import index, select
from digestmail.index import PaperIndex
from digestmail.models import Paper, Subscriber
from digestmail.rules import WORD, compile_rule
from digestmail.select import Selector

from .conftest import NOW, cli, trending, write_config

T0 = dt.datetime(2026, 11, 23, 8, tzinfo=dt.timezone.utc)
_ids = itertools.count(1)


def paper(title: str, abstract: str = "", *, digests: int = 1, upvotes: int | None = None, age_days: int = 0,
          ingested: dt.datetime = T0, authors: tuple[str, ...] = ()) -> Paper:
    pid = next(_ids)
    return Paper(id=pid, key=f"k{pid}", title=title, abstract=abstract, first_seen=ingested, digest_count=digests,
                 upvotes=upvotes, authors=authors, last_digest_date=T0.date() - dt.timedelta(days=age_days),
                 last_ingested=ingested)


def sub(**kw) -> Subscriber:
    return Subscriber(**{"email": "a@example.org", "topics": ("opt",), "joined_at": T0, **kw})


TOPICS = {"opt": "optimizer OR adam", "fed": "federated", "robots": "robot*"}


def titles(choice) -> list[str]:
    return [p.paper.title for p in choice.picks]


def choose(selector: Selector, subscriber: Subscriber):
    """What the pipeline does, less the ledger: candidates from the index, then the choice."""
    return selector.choose(subscriber, selector.candidates(subscriber))


def test_title_hits_outrank_abstract_hits_and_more_terms_rank_higher():
    papers = [paper("Robots in kitchens", "We use the Adam optimizer."),        # 2 terms, abstract: 2
              paper("Adam at scale", "Nothing else."),                          # 1 term, title: 3
              paper("Adam optimizer tricks", "Nothing else."),                  # 2 terms, title: 6
              paper("Zebra", "An optimizer.")]                                  # 1 term, abstract: 1
    s = Selector(TOPICS, PaperIndex(papers, T0.date()), T0)
    choice = choose(s, sub())
    assert titles(choice) == ["Adam optimizer tricks", "Adam at scale", "Robots in kitchens", "Zebra"]


def test_trending_upvotes_and_recency_break_equal_relevance_then_title():
    papers = [paper("B adam", age_days=30), paper("A adam", age_days=30), paper("C adam", digests=3, age_days=30),
              paper("D adam", upvotes=255, age_days=30), paper("E adam", age_days=1)]
    s = Selector(TOPICS, PaperIndex(papers, T0.date()), T0)
    # C: +2 trending; D: +4 upvotes; E: +2 recency; A and B tie and go by title.
    assert titles(choose(s, sub())) == ["D adam", "C adam", "E adam", "A adam", "B adam"]


def test_max_papers_and_min_papers():
    papers = [paper(f"Adam {i}") for i in range(5)]
    s = Selector(TOPICS, PaperIndex(papers, T0.date()), T0)
    assert len(choose(s, sub(max_papers=3)).picks) == 3
    below = choose(s, sub(min_papers=6, max_papers=10))
    assert below.picks == () and below.skipped == "below min_papers (5 < 6)" and below.matched == 5
    assert s.choose(sub(), 0).skipped == "no matching papers"


def test_exclude_and_window():
    old = T0 - dt.timedelta(days=10)
    papers = [paper("Adam survey"), paper("Adam method"), paper("Adam old", ingested=old),
              paper("Adam week", ingested=T0 - dt.timedelta(days=6))]
    index = PaperIndex(papers, T0.date())
    s = Selector(TOPICS, index, T0)
    chosen = {p.title for p in index.papers_in(s.candidates(sub(exclude="survey")))}
    assert chosen == {"Adam method", "Adam week"}  # backfill 7 days: the 10-day-old one is out
    assert {p.title for p in index.papers_in(s.candidates(sub(backfill_days=0)))} == {"Adam survey", "Adam method"}
    assert {p.title for p in index.papers_in(s.candidates(sub(backfill_days=30)))} == {p.title for p in papers}


def test_reasons_name_topics_and_words_as_written():
    papers = [paper("Federated Adam", "Robotics and an optimizer for robots.")]
    s = Selector(TOPICS, PaperIndex(papers, T0.date()), T0)
    (pick,) = choose(s, sub(topics=("opt", "fed", "robots"), query='"for robots"')).picks
    assert pick.match.topics == ("opt", "fed", "robots", "query")
    assert pick.match.reason == ("topic opt: Adam, optimizer · topic fed: Federated · topic robots: Robotics"
                                 " · your query: for robots")
    title_spans = [(s_, e) for f, s_, e, _ in pick.match.spans if f == "title"]
    assert [papers[0].title[s_:e] for s_, e in title_spans] == ["Federated", "Adam"]


def test_author_rules_and_negative_only_topics():
    papers = [paper("A study", "x", authors=("Geoffrey Hinton", "Ada Lovelace")), paper("B study", "x")]
    s = Selector({"people": "author:hinton", "nosurvey": "-survey"}, PaperIndex(papers, T0.date()), T0)
    (pick,) = choose(s, sub(topics=("people",))).picks
    assert pick.paper.title == "A study" and pick.match.reason == "topic people: Hinton"
    both = choose(s, sub(topics=("nosurvey",)))
    assert titles(both) == ["A study", "B study"] and both.picks[0].match.reason == "topic nosurvey"


def test_spans_are_every_occurrence_even_side_by_side():
    papers = [paper("Adam adam ADAM", "Deep deep deep nets; no no-no no.", authors=("Ada Adams", "Adam"))]
    s = Selector({"a": 'adam OR "deep deep" OR author:ada*', "b": '"no no"'}, PaperIndex(papers, T0.date()), T0)
    (pick,) = choose(s, sub(topics=("a", "b"))).picks
    fields = s.index.fields(0)
    expected = sorted({(h.field, h.start, h.end, h.term) for rule in ('adam OR "deep deep" OR author:ada*', '"no no"')
                       for h in compile_rule(rule).find(fields)})
    assert list(pick.match.spans) == expected
    assert [(f, s_, e) for f, s_, e, _ in pick.match.spans if f == "title"] == [("title", 0, 4), ("title", 5, 9),
                                                                                 ("title", 10, 14)]
    assert len([1 for f, _, _, t in pick.match.spans if t == "deep deep"]) == 2  # they overlap
    assert len([1 for f, _, _, t in pick.match.spans if t == "no no"]) == 3
    assert pick.match.reason == "topic a: Adam, Ada, Deep deep · topic b: no no"


# -- the index agrees with the rules on the real digests --------------------------------------------------

def seed_papers(shared: Path) -> list[Paper]:
    seen: dict[str, Paper] = {}
    for path in sorted((shared / "digests").glob("*.txt")):
        lines = [l.strip() for l in path.read_text(encoding="utf-8").splitlines() if l.strip()][5:]
        for title, abstract in zip(lines[0::2], lines[1::2]):
            seen.setdefault(title.lower(), paper(title, abstract))
    return list(seen.values())


def toks(text: str) -> list[str]:
    return re.findall(r"[^\W_]+", text.lower())


def has(ws: list[str], *alternatives: str) -> bool:
    return any(w in alternatives for w in ws)


def phrase(ws: list[str], *seq: str) -> bool:
    return any(ws[i:i + len(seq)] == list(seq) for i in range(len(ws)))


def starts(ws: list[str], prefix: str) -> bool:
    return any(w.startswith(prefix) for w in ws)


# Each rule with this test's own reading of it over (title words, abstract words).
REALISTIC = {
    "federated": lambda t, a: has(t + a, "federated"),
    "grokking": lambda t, a: has(t + a, "grokking"),
    "diffusion -survey": lambda t, a: has(t + a, "diffusion", "diffusions") and not has(t + a, "survey", "surveys"),
    '"in-context learning"': lambda t, a: phrase(t, "in", "context", "learning") or phrase(a, "in", "context", "learning"),
    'title:(llm* OR "language model")': lambda t, a: starts(t, "llm") or phrase(t, "language", "model") or phrase(t, "language", "models"),
    "optimizer OR adam": lambda t, a: has(t + a, "optimizer", "optimizers", "adam"),
    "reinforcement learning": lambda t, a: has(t + a, "reinforcement") and has(t + a, "learning"),
    'quantiz* OR "low bit"': lambda t, a: starts(t + a, "quantiz") or phrase(t, "low", "bit") or phrase(a, "low", "bit"),
    "title:benchmark* NOT abstract:survey": lambda t, a: starts(t, "benchmark") and not has(a, "survey", "surveys"),
    "(vision OR visual) AND transformer": lambda t, a: has(t + a, "vision", "visual") and has(t + a, "transformer", "transformers"),
    'robot* OR "embodied agent"': lambda t, a: starts(t + a, "robot") or phrase(t, "embodied", "agent") or phrase(a, "embodied", "agent") or phrase(t, "embodied", "agents") or phrase(a, "embodied", "agents"),
    '"chain of thought" OR cot': lambda t, a: phrase(t + ["|"] + a, "chain", "of", "thought") or has(t + a, "cot"),
    "title:graph -abstract:neural": lambda t, a: has(t, "graph", "graphs") and not has(a, "neural"),
}


@pytest.mark.shared
@pytest.mark.parametrize("rule", list(REALISTIC))
def test_realistic_rules_over_the_seeds(shared, rule):
    papers = seed_papers(shared)
    assert len(papers) == 251
    index = PaperIndex(papers, T0.date())
    got = {p.title for p in index.papers_in(index.match(compile_rule(rule)))}
    expected = {p.title for p in papers if REALISTIC[rule](toks(p.title), toks(p.abstract))}
    assert got == expected
    assert all(compile_rule(rule).matches(index.fields(index.position[p.id])) == (p.title in got) for p in papers)


@pytest.mark.shared
def test_realistic_rules_find_something(shared):
    papers = seed_papers(shared)
    index = PaperIndex(papers, T0.date())
    counts = {r: bin(index.match(compile_rule(r))).count("1") for r in REALISTIC}
    assert sum(1 for c in counts.values() if c) >= 11, counts  # the corpus exercises the rules


# -- through the CLI ---------------------------------------------------------------------------------------

CONFIG = """
[topics]
opt = "optimizer OR adam"
robots = "robot*"

[[subscribers]]
email = "max@example.org"
topics = ["opt"]
max_papers = 2

[[subscribers]]
email = "min@example.org"
topics = ["robots"]
min_papers = 3

[[subscribers]]
email = "ex@example.org"
topics = ["opt"]
exclude = "survey"
"""

PAPERS = [("Adam Optimizer Survey", "A survey of adaptive optimizers."),
          ("Adam Without Warmup", "We remove warmup from the Adam optimizer."),
          ("Sharp Minima", "An optimizer that avoids sharp minima."),
          ("Robots That Cook", "Robots cooking pasta.")]


def test_run_uses_selection(tmp_path):
    config = write_config(tmp_path, CONFIG)
    (tmp_path / "inbox" / "d.txt").write_text(trending("Nov 22", PAPERS))
    result = cli("--config", config, "--now", NOW, "run", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    sent = {s["email"]: s for s in report["sent"]}
    assert sent["max@example.org"]["papers"] == 2 and sent["max@example.org"]["matched"] == 3
    assert "min@example.org" not in sent and report["skipped_by_reason"] == {"below min_papers": 1}
    assert sent["ex@example.org"]["papers"] == 2
    ex = next((tmp_path / "outbox").glob("*ex@example.org.eml")).read_bytes().decode()
    assert "Survey" not in ex and "Adam Without Warmup" in ex
    mx = next((tmp_path / "outbox").glob("*max@example.org.eml")).read_bytes().decode()
    assert "Sharp Minima" not in mx  # two title hits beat one abstract hit
    # The third paper waits: the next run sends it, and only it.
    again = json.loads(cli("--config", config, "--now", "2026-11-23T09:00:00+00:00", "run", "--json").stdout)
    assert [(s["email"], s["papers"]) for s in again["sent"]] == [("max@example.org", 1)]


def test_rules_test_and_explain_commands(tmp_path):
    config = write_config(tmp_path, CONFIG)
    (tmp_path / "inbox" / "d.txt").write_text(trending("Nov 22", PAPERS))
    assert cli("--config", config, "--now", NOW, "ingest").returncode == 0
    out = json.loads(cli("--config", config, "rules", "test", "adam -survey", "--json").stdout)
    assert out["query"] == "adam -survey" and [p["title"] for p in out["papers"]] == ["Adam Without Warmup"]
    spans = out["papers"][0]["spans"]
    assert {(s["field"], s["term"]) for s in spans} == {("title", "adam"), ("abstract", "adam")}
    assert cli("--config", config, "rules", "test", "adam", "--since", "2026-11-23", "--json").stdout.count('"key"') == 0
    human = cli("--config", config, "rules", "test", "robot*")
    assert human.returncode == 0 and "Robots That Cook" in human.stdout and "1 of 4 papers" in human.stdout
    bad = cli("--config", config, "rules", "test", "adam AND (x")
    assert bad.returncode == 2 and "column 10: unclosed parenthesis" in bad.stderr
    explain = cli("--config", config, "--now", NOW, "rules", "explain", "max@example.org")
    assert explain.returncode == 0, explain.stderr
    assert "2 of 3 unsent matching papers" in explain.stdout and "topic opt: Adam, Optimizer" in explain.stdout
    lines = [l for l in explain.stdout.splitlines() if re.match(r"\s+\d+\. ", l)]
    assert [l.split(". ", 1)[1] for l in lines] == ["Adam Optimizer Survey", "Adam Without Warmup"]
    explain_min = cli("--config", config, "--now", NOW, "rules", "explain", "min@example.org")
    assert "no email now: below min_papers (1 < 3)" in explain_min.stdout


# -- the arithmetic underneath: plane sums and word offsets ---------------------------------------------

def _values(planes: tuple[int, ...], n: int) -> list[int]:
    return [sum((plane >> i & 1) << p for p, plane in enumerate(planes)) for i in range(n)]


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(st.lists(st.sampled_from([1, 3, 3, 3, 7]).flatmap(  # mostly a term's 0-3: two planes
    lambda top: st.lists(st.integers(0, top), min_size=40, max_size=40)), min_size=2, max_size=6))
def test_plane_sums_add_paper_by_paper(rows):
    """_sum (and its unrolled two-plane case) is addition, paper by paper, whatever the plane counts."""
    total: tuple[int, ...] = ()
    for k, row in enumerate(rows, start=1):
        planes = tuple(sum((v >> p & 1) << i for i, v in enumerate(row)) for p in range(max(row).bit_length()))
        assert _values(planes, 40) == row
        total = select._sum(total, planes)
        assert _values(total, 40) == [sum(col) for col in zip(*rows[:k])]


@pytest.mark.parametrize("text", ["", "-", "a", " Adam, learning-rate schedules ", "x_y __z__", "Schrödinger's café",
                                  "İstanbul ß ﬁ x² ½ ٣٤", "a\u00a0b\tc\nd", "ÜBER-straße 3D-GS"])
def test_word_offsets_are_the_rules_words(text):
    assert index._word_bounds(text) == [x for m in WORD.finditer(text) for x in m.span()]
