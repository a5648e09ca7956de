"""The SQLite store: migrations once, ingest idempotent, subscribers synced, ledger per message."""

from __future__ import annotations

import datetime as dt
import sqlite3

import pytest

from digestmail.errors import StoreError
from digestmail.models import Digest, Entry, Subscriber
from digestmail.store import MIGRATIONS, Store

NOW = dt.datetime(2026, 11, 23, 8, tzinfo=dt.timezone.utc)


def digest(*titles: str) -> Digest:
    return Digest("trending", dt.date(2026, 11, 20), tuple(Entry(t, f"About {t}.") for t in titles))


def test_migrations_run_once_and_are_recorded(tmp_path):
    path = tmp_path / "s.sqlite3"
    Store(path).close()
    Store(path).close()
    with sqlite3.connect(path) as db:
        names = [r[0] for r in db.execute("SELECT name FROM migrations")]
        assert names == [name for name, _ in MIGRATIONS]
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_add_digest_counts_new_and_known(tmp_path):
    with Store(tmp_path / "s.sqlite3") as store:
        first = store.add_digest("a.txt", "sha-a", digest("A", "B"), ["k:a", "k:b"], NOW)
        second = store.add_digest("b.txt", "sha-b", digest("B", "C"), ["k:b", "k:c"], NOW)
        assert (first.new_papers, first.known_papers) == (2, 0)
        assert (second.new_papers, second.known_papers) == (1, 1)
        assert store.has_digest("sha-a") and not store.has_digest("sha-x")
        counts = store.counts()
        assert (counts["papers"], counts["entries"], counts["digests"]) == (3, 4, 2)
        store.sync_subscribers([Subscriber("a@example.org", topics=("t",))], NOW)
        (sid, _), = store.active_subscribers()
        by_key = {p.key: p.digest_count for p in store.unsent_papers(sid)}
        assert by_key == {"k:a": 1, "k:b": 2, "k:c": 1}


def test_same_sha_twice_is_refused_by_the_schema(tmp_path):
    with Store(tmp_path / "s.sqlite3") as store:
        store.add_digest("a.txt", "sha-a", digest("A"), ["k:a"], NOW)
        with pytest.raises(sqlite3.IntegrityError):
            store.add_digest("a2.txt", "sha-a", digest("Z"), ["k:z"], NOW)
        assert store.counts()["papers"] == 1  # the failed transaction left nothing behind


def test_sync_upserts_and_deactivates(tmp_path):
    with Store(tmp_path / "s.sqlite3") as store:
        store.sync_subscribers([Subscriber("a@example.org", topics=("t",)),
                                Subscriber("b@example.org", topics=("t",))], NOW)
        store.sync_subscribers([Subscriber("B@example.org", name="Bee", topics=("u",), max_papers=3)], NOW)
        active = [s for _, s in store.active_subscribers()]
        assert [(s.email, s.name, s.topics, s.max_papers) for s in active] == [("b@example.org", "Bee", ("u",), 3)]
        assert store.find_subscriber("a@example.org") is None


def test_sync_failing_halfway_keeps_the_old_list(tmp_path):
    def broken():
        yield Subscriber("c@example.org", topics=("t",))
        raise ValueError("bad row")

    with Store(tmp_path / "s.sqlite3") as store:
        store.sync_subscribers([Subscriber("a@example.org", topics=("t",))], NOW)
        with pytest.raises(ValueError):
            store.sync_subscribers(broken(), NOW)
        assert [s.email for _, s in store.active_subscribers()] == ["a@example.org"]


def test_active_subscribers_pages_through_a_long_list(tmp_path):
    with Store(tmp_path / "s.sqlite3") as store:
        store.sync_subscribers((Subscriber(f"u{i}@example.org", topics=("t",)) for i in range(1234)), NOW)
        emails = [s.email for _, s in store.active_subscribers()]
        assert len(emails) == 1234 and len(set(emails)) == 1234


def test_ledger_hides_sent_papers(tmp_path):
    with Store(tmp_path / "s.sqlite3") as store:
        store.add_digest("a.txt", "sha-a", digest("A", "B"), ["k:a", "k:b"], NOW)
        store.sync_subscribers([Subscriber("a@example.org", topics=("t",)),
                                Subscriber("b@example.org", topics=("t",))], NOW)
        (sa, _), (sb, _) = store.active_subscribers()
        paper_a = next(p for p in store.unsent_papers(sa) if p.key == "k:a")
        store.record_delivery(sa, [paper_a.id], "m1@example.org", NOW)
        store.record_delivery(sa, [paper_a.id], "m1@example.org", NOW)  # idempotent
        assert [p.key for p in store.unsent_papers(sa)] == ["k:b"]
        assert [p.key for p in store.unsent_papers(sb)] == ["k:a", "k:b"]
        assert store.counts()["messages_sent"] == 1


def test_unopenable_store_is_a_clear_error(tmp_path):
    (tmp_path / "dir.sqlite3").mkdir()
    with pytest.raises(StoreError) as err:
        Store(tmp_path / "dir.sqlite3")
    assert "cannot open the store" in str(err.value)
