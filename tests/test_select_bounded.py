"""Selection's caches stay within their bounds however many subscribers pass, and what they hold never
changes a choice: tiny caches (evicting all the time) choose and explain exactly as roomy ones do."""

from __future__ import annotations

import datetime as dt
import random

from digestmail import index, select
from digestmail.index import PaperIndex
from digestmail.models import Paper, Subscriber
from digestmail.select import Selector

T0 = dt.datetime(2026, 11, 23, 8, tzinfo=dt.timezone.utc)
WORDS = ("adam optimizer learning rate diffusion model flow matching federated privacy transformer attention "
         "graph neural network policy robot manipulation language reasoning benchmark vision encoder image "
         "retrieval memory compression quantization sparse mixture experts").split()


def workload(n: int) -> tuple[dict[str, str], list[Paper], list[Subscriber]]:
    rng = random.Random(4)
    papers = [Paper(id=i + 1, key=f"k{i}", title=" ".join(rng.choices(WORDS, k=6)).title(),
                    abstract=" ".join(rng.choices(WORDS, k=60)), first_seen=T0, digest_count=1 + i % 3,
                    upvotes=i % 40, authors=(f"Author {i % 7}",), last_digest_date=T0.date(), last_ingested=T0)
              for i in range(120)]

    def rule() -> str:
        a, b = rng.sample(WORDS, 2)
        return rng.choice([a, f"{a} OR {b}", f'"{a} {b}"', f"{a} -{b}", f"{a[:4]}*", f"title:{a}", f"{a} {b}"])

    topics = {f"t{i}": rule() for i in range(30)}
    subs = [Subscriber(email=f"u{i}@example.org", topics=tuple(rng.sample(sorted(topics), rng.randint(0, 3))),
                       query=rule() if i % 2 else "", exclude=rule() if i % 5 == 0 else "", max_papers=5,
                       joined_at=T0)
            for i in range(n)]
    return topics, papers, subs


def sizes(selector: Selector) -> dict[str, int]:
    idx = selector.index
    return {"plans": len(selector._plans), "units": len(selector._units), "pieces": len(selector._pieces),
            "rules": len(idx._rules), "leaves": len(idx._leaves), "offsets": len(idx._offsets),
            "raw": len(idx._raw_joined)}


def test_tiny_caches_stay_within_bounds_and_choose_and_explain_as_roomy_ones_do(monkeypatch):
    topics, papers, subs = workload(400)
    roomy = Selector(topics, PaperIndex(papers, T0.date()), T0)
    expected = [roomy.choose(s, roomy.candidates(s)) for s in subs]

    bounds = {"PLAN_CACHE": 3, "RULE_CACHE": 4, "PIECE_CACHE": 8}
    for name, value in bounds.items():
        monkeypatch.setattr(select, name, value)
    monkeypatch.setattr(index, "RULES_CACHE", 4)
    monkeypatch.setattr(index, "LEAF_CACHE", 4)
    monkeypatch.setattr(index, "OFFSETS_CACHE", 2)
    tiny = Selector(topics, PaperIndex(papers, T0.date()), T0)
    limits = {"plans": 3, "units": 4, "pieces": 8, "rules": 4, "leaves": 4, "offsets": 6, "raw": 2}
    highest = dict.fromkeys(limits, 0)
    got = []
    for s in subs:
        got.append(tiny.choose(s, tiny.candidates(s)))
        for name, size in sizes(tiny).items():
            highest[name] = max(highest[name], size)
    assert got == expected
    assert sum(len(c.picks) for c in got) > 500  # the caches were used, and filled
    assert highest == limits


def test_own_queries_do_not_take_the_pieces_cache_from_topics():
    topics, papers, subs = workload(200)
    selector = Selector(topics, PaperIndex(papers, T0.date()), T0)
    for s in subs:
        selector.choose(s, selector.candidates(s))
    assert selector._pieces
    assert {source for source, _ in selector._pieces} <= set(topics.values())
