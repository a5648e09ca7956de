"""Build processes: each future gets the bytes of its own edition, a refusal comes back as one, and
a build process that dies fails what it had, never leaves a future waiting. Each paper crosses to a
build process once, and the bytes stay those built here: when papers repeat, change under the same
id, or are forgotten to keep memory bounded."""

from __future__ import annotations

import datetime as dt
import os
import pickle
import signal
from dataclasses import replace

import pytest

from digestmail import buildpool
from digestmail.buildpool import BuildPool, BuildProcessError
from digestmail.compose import Composer, Recipe
from digestmail.config import RenderSettings, load_config
from digestmail.editions import Builder
from digestmail.errors import DigestmailError
from digestmail.models import Edition, Match, Paper, Pick, Piece, Subscriber

from .conftest import write_config

NOW = dt.datetime(2026, 11, 23, 8, tzinfo=dt.timezone.utc)
RECIPE = Recipe("Trending Papers <papers@example.org>", RenderSettings(), None, None, None)


MATCH = Match(("optimizers",), ("adam",), (("title", 0, 4, "adam"),), "topic optimizers: Adam")


def paper(i: int) -> Paper:
    return Paper(id=i, key=f"k{i}", title=f"Adam Variant {i} for Noisy Labels", first_seen=NOW,
                 abstract=f"We study the Adam optimizer, variant {i}, on noisy labels. " * (1 + i % 5),
                 authors=("A. Author", f"B. Author {i}"), arxiv_id=f"2611.{10000 + i}", upvotes=i)


def edition(i: int, name: str = "", papers: tuple[Paper, ...] | None = None) -> Edition:
    sub = Subscriber(email=f"r{i}@example.org", name=name or f"Réader {i}", topics=("optimizers",))
    picks = tuple(Pick(p, MATCH) for p in (papers if papers is not None else (paper(i),)))
    return Edition(sub, i, picks, NOW, key=f"20261123080000.{i:016x}")


def built_there(editions: list[Edition], processes: int = 1) -> tuple[list[bytes], BuildPool]:
    pool = BuildPool(RECIPE, processes)
    try:
        futures = [pool.submit(ed) for ed in editions]
        return [f.result(timeout=60) for f in futures], pool
    finally:
        pool.close()


def test_each_future_gets_the_bytes_built_here_for_its_own_edition():
    editions = [edition(i) for i in range(40)]
    pool = BuildPool(RECIPE, 2)
    try:
        futures = [pool.submit(ed) for ed in editions]  # all ahead, spread over both processes
        got = [f.result(timeout=60) for f in futures]
    finally:
        pool.close()
    composer = Composer(RECIPE)
    assert got == [composer.build(ed)[1] for ed in editions]


def test_a_refused_edition_comes_back_as_a_digestmail_error_and_the_next_one_still_builds():
    bad = edition(1, name="Bell\x07 Reader")
    with pytest.raises(DigestmailError) as here:
        Composer(RECIPE).build(bad)
    pool = BuildPool(RECIPE, 1)
    try:
        failed, fine = pool.submit(bad), pool.submit(edition(2))
        with pytest.raises(DigestmailError) as there:
            failed.result(timeout=60)
        assert str(there.value) == str(here.value)
        assert fine.result(timeout=60) == Composer(RECIPE).build(edition(2))[1]
    finally:
        pool.close()


def test_a_killed_build_process_fails_its_futures_and_every_later_one():
    pool = BuildPool(RECIPE, 1)
    try:
        pool.submit(edition(1)).result(timeout=60)  # started
        os.kill(pool.pids[0], signal.SIGKILL)
        futures = [pool.submit(edition(i)) for i in range(2, 12)]
        for f in futures:
            with pytest.raises(BuildProcessError, match="exit code -9"):
                f.result(timeout=60)
        with pytest.raises(BuildProcessError):
            pool.submit(edition(20)).result(timeout=60)
    finally:
        pool.close()


def test_closing_finishes_what_was_submitted_and_ends_the_process():
    pool = BuildPool(RECIPE, 1)
    futures = [pool.submit(edition(i)) for i in range(8)]
    (pid,) = pool.pids
    pool.close()
    assert all(len(f.result(timeout=0)) > 1000 for f in futures)
    assert pool.processes[0].proc.returncode == 0
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(RuntimeError):
        pool.submit(edition(9))


def test_editions_larger_than_the_pipe_are_written_as_the_build_process_reads_and_come_back_in_order():
    # Editions of ~200 KB each: the pipe holds less than one, so submitting waits for the build
    # process (while it starts, then edition by edition) and the reader must drain every result.
    big = [edition(i) for i in range(12)]
    big = [Edition(e.subscriber, e.subscriber_id, (Pick(replace(e.picks[0].paper, abstract="x " * 100_000),
                                                        e.picks[0].match),), NOW, e.key) for e in big]
    pool = BuildPool(RECIPE, 1)
    try:
        futures = [pool.submit(ed) for ed in big]
        assert not any(f.cancel() for f in futures)  # handed over: each is running, its result will come
        composer = Composer(RECIPE)
        assert [f.result(timeout=60) for f in futures] == [composer.build(ed)[1] for ed in big]
    finally:
        pool.close()


def test_a_result_written_in_pieces_arrives_whole(monkeypatch):
    # writev may take part of what it is given (a signal, a full pipe on some systems): what is left
    # goes in later calls, in order. Here each call takes at most 1,000 bytes of a real pipe.
    real = os.writev
    calls = []

    def partial(fd, views):
        calls.append(1)
        budget, taken = 1000, []
        for view in views:
            taken.append(bytes(view[:budget]))
            budget -= len(taken[-1])
            if not budget:
                break
        return real(fd, taken)

    monkeypatch.setattr(buildpool.os, "writev", partial)
    head, body = b"head:", bytes(range(256)) * 40
    read_end, write_end = os.pipe()
    try:
        buildpool._write_all(write_end, head, body)
        os.close(write_end)
        received = b""
        while chunk := os.read(read_end, 65536):
            received += chunk
    finally:
        os.close(read_end)
    assert received == head + body
    assert len(calls) == -(-len(head + body) // 1000)


def test_a_builder_that_let_go_of_its_composer_builds_the_same_bytes_again(tmp_path):
    config = load_config(write_config(tmp_path, """
        [topics]
        opt = "adam"
        """))
    builder = Builder(config, [], NOW)
    editions = [edition(i) for i in range(3)]
    before = [builder.build(ed)[1] for ed in editions]
    held = builder.composer
    builder.release()
    assert [builder.message_id(ed) for ed in editions] == [held.message_id(ed) for ed in editions]
    assert [builder.build(ed)[1] for ed in editions] == before
    assert builder.composer is not held


def test_papers_shared_by_editions_cross_once_per_process_and_build_the_same_bytes():
    papers = [paper(i) for i in range(6)]
    editions = [edition(i, papers=(papers[i % 6], papers[(i * 5 + 1) % 6], papers[(i + 3) % 6])) for i in range(40)]
    got, pool = built_there(editions, 2)
    composer = Composer(RECIPE)
    assert got == [composer.build(ed)[1] for ed in editions]
    for process in pool.processes:  # what each was sent: these very objects, once
        assert process.frames.known.keys() <= {p.id for p in papers}
        assert all(process.frames.known[pid] is papers[pid] for pid in process.frames.known)


def test_matches_made_from_pieces_cross_unmerged_and_build_the_same_bytes(held):
    # As selection makes them: one piece per topic, shared by every subscriber with that topic.
    adam = Piece(("adam",), ((0, 0, 0, "adam"),), (("title", 0, 4, "adam"),), "Adam")
    noisy = Piece(("noisy labels",), ((0, 19, 0, "noisy labels"),), (("title", 19, 31, "noisy labels"),), "Noisy Labels")
    papers = [paper(i) for i in range(5)]
    editions = []
    for i in range(12):
        topics = ("optimizers", "robust") if i % 3 else ("optimizers",)
        parts = (adam, noisy) if i % 3 else (adam,)
        sub = Subscriber(email=f"r{i}@example.org", name=f"Reader {i}", topics=topics)
        picks = tuple(Pick(p, Match.of(topics, parts)) for p in papers[i % 5:] + papers[:i % 5])
        editions.append(Edition(sub, i, picks, NOW, key=f"20261123080000.{i:016x}"))
    frames = buildpool._Frames()
    for ed in editions:
        there = buildpool._edition(pickle.loads(buildpool._receive(frames.frame(ed))))
        assert there == ed
        assert all(pick.match._merged is None for pick in there.picks)  # merged only where rendered
    assert editions[1].picks[0].match.reason == "topic optimizers: Adam · topic robust: Noisy Labels"
    got, _ = built_there(editions)
    composer = Composer(RECIPE)
    assert got == [composer.build(ed)[1] for ed in editions]


@pytest.fixture
def held(monkeypatch):
    """A build process's papers, for frames taken in by this process."""
    held: dict[int, Paper] = {}
    monkeypatch.setattr(buildpool, "_held", held)
    return held


def sent_in(frame: bytes) -> list[int]:
    """The ids of the papers a frame brings in full."""
    n = buildpool._PAPERS.unpack_from(frame)[1]
    return sorted(p.id for p in pickle.loads(frame[buildpool._PAPERS.size:buildpool._PAPERS.size + n])) if n else []


def test_a_paper_is_sent_again_when_it_changed_under_its_id_and_not_for_an_equal_copy(held):
    before = paper(3)
    after = replace(before, title="Adam Variant 3, Revised", upvotes=250)
    again = replace(after)  # equal, not the same object: a retry's paper, read from the store again
    editions = [edition(1, papers=(before, paper(4))), edition(2, papers=(before,)),
                edition(3, papers=(after, paper(4))), edition(4, papers=(again,))]
    frames = buildpool._Frames()
    sent = []
    for ed in editions:
        frame = frames.frame(ed)
        sent.append(sent_in(frame))
        there = buildpool._edition(pickle.loads(buildpool._receive(frame)))
        assert there == ed  # field by field: the changed title and upvotes too
        assert all(pick.paper is held[pick.paper.id] for pick in there.picks)
    assert sent == [[3, 4], [], [3], []]
    assert held[3] == after and frames.known[3] is after


def test_two_papers_with_one_id_in_one_edition_both_arrive_as_they_are(held):
    one, other = paper(7), replace(paper(8), id=7)
    editions = [edition(1, papers=(one, other)), edition(2, papers=(other, one)), edition(3, papers=(one, one))]
    frames = buildpool._Frames()
    for ed in editions:
        assert buildpool._edition(pickle.loads(buildpool._receive(frames.frame(ed)))) == ed
    got, _ = built_there(editions)
    composer = Composer(RECIPE)
    assert got == [composer.build(ed)[1] for ed in editions]


def test_past_the_cap_both_sides_forget_every_paper_and_start_over(held, monkeypatch):
    monkeypatch.setattr(buildpool, "KNOWN_PAPERS", 4)
    papers = [paper(i) for i in range(9)]
    editions = [edition(i, papers=(papers[i % 9], papers[(i * 4 + 2) % 9])) for i in range(30)]
    frames = buildpool._Frames()
    forgot = 0
    for ed in editions:
        frame = frames.frame(ed)
        forgot += buildpool._PAPERS.unpack_from(frame)[0] & buildpool._FORGET
        assert buildpool._edition(pickle.loads(buildpool._receive(frame))) == ed
        assert len(held) <= 4 + 2 and held.keys() == frames.known.keys()
    assert forgot >= 5
    got, _ = built_there(editions)  # and through a real build process
    composer = Composer(RECIPE)
    assert got == [composer.build(ed)[1] for ed in editions]


def test_a_paper_the_build_process_lacks_fails_loudly_with_its_traceback():
    pool = BuildPool(RECIPE, 1)
    try:
        pool.submit(edition(1)).result(timeout=60)
        pool.processes[0].frames.known[2] = paper(2)  # as if sent, but it never was: a bug in the protocol
        with pytest.raises(BuildProcessError, match="KeyError: 2"):
            pool.submit(edition(2)).result(timeout=60)
        assert pool.submit(edition(3)).result(timeout=60) == Composer(RECIPE).build(edition(3))[1]
    finally:
        pool.close()


def test_an_edition_that_cannot_be_pickled_changes_nothing_the_next_frames_rely_on(held, monkeypatch):
    monkeypatch.setattr(buildpool, "KNOWN_PAPERS", 2)
    a, b, c = paper(1), paper(2), paper(3)
    frames = buildpool._Frames()
    first = edition(1, papers=(a, b))
    assert buildpool._edition(pickle.loads(buildpool._receive(frames.frame(first)))) == first
    with pytest.raises(AttributeError, match="pickle"):
        frames.frame(replace(edition(2, papers=(c,)), key=lambda: "no"))  # two known: the cap says forget
    after = edition(3, papers=(a,))
    frame = frames.frame(after)
    assert buildpool._PAPERS.unpack_from(frame)[0] & buildpool._FORGET and sent_in(frame) == [1]
    assert buildpool._edition(pickle.loads(buildpool._receive(frame))) == after and set(held) == {1}
