"""Match: made by selection from what each topic hits (its pieces), merged where it is read.

Selection's explanations are checked against a plain reference in test_select_reference.py (through
Match equality, which compares the merged values); these check the Match itself: made either way it
is the same value, it pickles as it was made, and a build process's plain-tuple pieces merge alike.
"""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from digestmail.models import Match, Piece

FIELDS = ("title", "author", "abstract")
TEXT_ORDER = {"title": 0, "author": 1, "abstract": 2}


@st.composite
def pieces(draw: st.DrawFn) -> Piece:
    """A piece as select._piece makes one: hits sorted, each distinct term's first hit in text order."""
    hits = draw(st.lists(st.tuples(st.sampled_from(FIELDS), st.integers(0, 60), st.integers(1, 8),
                                   st.sampled_from(["adam", "learning rate", "lr*", "transformer", "bert"])),
                         max_size=6, unique_by=lambda h: h[:2]))
    hits = sorted(((f, start, start + n, term) for f, start, n, term in hits),
                  key=lambda h: (TEXT_ORDER[h[0]], h[1]))
    shown: dict[str, str] = {}
    firsts = []
    for k, (f, start, _, term) in enumerate(hits):
        if term not in shown:
            shown[term] = term.upper()
            firsts.append((TEXT_ORDER[f], start, k, term))
    return Piece(tuple(shown), tuple(firsts), tuple(sorted(hits)), ", ".join(shown.values()))


def merged_by_hand(topics: tuple[str, ...], parts: tuple[Piece, ...]) -> Match:
    """The explanation as docs/selection.md states it, computed eagerly."""
    reasons = []
    for name, piece in zip(topics, parts):
        label = "your query" if name == "query" else f"topic {name}"
        reasons.append(f"{label}: {piece.shown}" if piece.shown else label)
    firsts = sorted((at, start, n, k, term) for n, piece in enumerate(parts) for at, start, k, term in piece.firsts)
    return Match(topics, tuple(dict.fromkeys(t for *_, t in firsts)),
                 tuple(sorted({s for piece in parts for s in piece.spans})), " · ".join(reasons))


topic_pieces = st.lists(st.tuples(st.sampled_from(["optimizers", "query", "nlp", "vision"]), pieces()),
                        min_size=1, max_size=4, unique_by=lambda t: t[0])


@given(topic_pieces)
def test_a_match_from_pieces_is_the_match_merged_by_hand(given_pieces):
    topics = tuple(t for t, _ in given_pieces)
    parts = tuple(p for _, p in given_pieces)
    lazy, eager = Match.of(topics, parts), merged_by_hand(topics, parts)
    assert (lazy.topics, lazy.terms, lazy.spans, lazy.reason) == (eager.topics, eager.terms, eager.spans, eager.reason)
    assert lazy == eager and eager == lazy and hash(lazy) == hash(eager)
    # A build process gets the pieces as plain tuples: the same match.
    assert Match.of(topics, tuple(map(tuple, parts))) == eager  # type: ignore[arg-type]


@given(topic_pieces)
def test_hits_and_the_reason_need_no_merge_and_agree_with_it(given_pieces):
    topics = tuple(t for t, _ in given_pieces)
    parts = tuple(p for _, p in given_pieces)
    lazy, eager = Match.of(topics, parts), merged_by_hand(topics, parts)
    assert lazy.reason == eager.reason and set(lazy.hits()) == set(eager.spans)
    assert lazy._merged is None  # neither merged the terms and spans
    assert sorted(set(eager.hits())) == list(eager.spans)  # a merged match's hits are its spans


@given(topic_pieces)
def test_a_match_pickles_as_it_was_made(given_pieces):
    topics = tuple(t for t, _ in given_pieces)
    parts = tuple(p for _, p in given_pieces)
    lazy = Match.of(topics, parts)
    back = pickle.loads(pickle.dumps(lazy, pickle.HIGHEST_PROTOCOL))
    assert back._pieces == parts and back._merged is None  # still unmerged: merging is the reader's work
    assert back == lazy
    eager = merged_by_hand(topics, parts)
    again = pickle.loads(pickle.dumps(eager))
    assert again._pieces is None and again == eager


def test_different_matches_differ():
    one = Piece(("adam",), ((0, 0, 0, "adam"),), (("title", 0, 4, "adam"),), "Adam")
    other = Piece(("adam",), ((2, 5, 0, "adam"),), (("abstract", 5, 9, "adam"),), "Adam")
    assert Match.of(("optimizers",), (one,)) != Match.of(("optimizers",), (other,))
    assert Match.of(("optimizers",), (one,)) != Match.of(("nlp",), (one,))
    assert Match.of(("optimizers",), (one,)) == Match(("optimizers",), ("adam",), (("title", 0, 4, "adam"),),
                                                       "topic optimizers: Adam")
    assert Match.of(("query",), (Piece((), (), (), ""),)).reason == "your query"  # a match by negation only


def test_a_match_is_immutable():
    match = Match(("optimizers",), ("adam",))
    with pytest.raises(AttributeError):
        match.topics = ("other",)  # type: ignore[misc]
    with pytest.raises(AttributeError):
        match.reason = "changed"  # type: ignore[misc]
