"""Build processes: each future gets the bytes of its own edition, a refusal comes back as one, and
a build process that dies fails what it had, never leaves a future waiting."""

from __future__ import annotations

import datetime as dt
import os
import signal
from dataclasses import replace

import pytest

from digestmail.buildpool import BuildPool, BuildProcessError
from digestmail.compose import Composer, Recipe
from digestmail.config import RenderSettings, load_config
from digestmail.editions import Builder
from digestmail.errors import DigestmailError
from digestmail.models import Edition, Match, Paper, Pick, Subscriber

from .conftest import write_config

NOW = dt.datetime(2026, 11, 23, 8, tzinfo=dt.timezone.utc)
RECIPE = Recipe("Trending Papers <papers@example.org>", RenderSettings(), None, None, None)


def edition(i: int, name: str = "") -> Edition:
    paper = Paper(id=i, key=f"k{i}", title=f"Adam Variant {i} for Noisy Labels", first_seen=NOW,
                  abstract=f"We study the Adam optimizer, variant {i}, on noisy labels. " * (1 + i % 5),
                  authors=("A. Author", f"B. Author {i}"), arxiv_id=f"2611.{10000 + i}", upvotes=i)
    match = Match(("optimizers",), ("adam",), (("title", 0, 4, "adam"),), "topic optimizers: Adam")
    sub = Subscriber(email=f"r{i}@example.org", name=name or f"Réader {i}", topics=("optimizers",))
    return Edition(sub, i, (Pick(paper, match),), NOW, key=f"20261123080000.{i:016x}")


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


def test_a_cancelled_future_is_skipped_and_the_rest_keep_their_order():
    # Editions of ~200 KB each: the pipe holds less than one, so while the build process is still
    # starting, the writer has taken at most the first two.
    big = [edition(i) for i in range(12)]
    big = [Edition(e.subscriber, e.subscriber_id, (Pick(replace(e.picks[0].paper, abstract="x " * 100_000),
                                                        e.picks[0].match),), NOW, e.key) for e in big]
    pool = BuildPool(RECIPE, 1)
    try:
        futures = [pool.submit(ed) for ed in big]
        assert all(f.cancel() for f in futures[4::2])
        composer = Composer(RECIPE)
        for i, f in enumerate(futures):
            if i < 4 or i % 2:
                assert f.result(timeout=60) == composer.build(big[i])[1]
    finally:
        pool.close()


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
