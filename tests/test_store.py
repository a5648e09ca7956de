"""The SQLite store: migrations once, ingest idempotent, subscribers synced, ledger per message."""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
from pathlib import Path

import pytest

from digestmail import identity
from digestmail.errors import StoreError
from digestmail.models import Digest, Entry, Subscriber
from digestmail.store import MIGRATIONS, Queued, Store

NOW = dt.datetime(2026, 11, 23, 8, tzinfo=dt.timezone.utc)


def unsent(store: Store, subscriber_id: int) -> list:
    """Every stored paper the ledger has not recorded as sent to this subscriber, in id order."""
    every = store.candidate_papers(dt.datetime.min.replace(tzinfo=dt.timezone.utc))
    sent = store.already_sent(subscriber_id, [p.id for p in every])
    return [p for p in every if p.id not in sent]


def digest(*entries: str | Entry) -> Digest:
    return Digest("trending", dt.date(2026, 11, 20),
                  tuple(e if isinstance(e, Entry) else Entry(e, f"About {e}.") for e in entries))


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
        first = store.add_digest("a.txt", "sha-a", digest("A", "B"), NOW)
        second = store.add_digest("b.txt", "sha-b", digest("B", "C"), NOW)
        assert (first.new_papers, first.known_papers) == (2, 0)
        assert (second.new_papers, second.known_papers) == (1, 1)
        assert store.has_digest("sha-a") and not store.has_digest("sha-x")
        counts = store.counts()
        assert (counts["papers"], counts["entries"], counts["digests"]) == (3, 4, 2)
        store.sync_subscribers([Subscriber("a@example.org", topics=("t",))], NOW)
        (sid, _), = store.active_subscribers()
        by_key = {p.key: p.digest_count for p in unsent(store, sid)}
        assert by_key == {"title:a": 1, "title:b": 2, "title:c": 1}


def test_same_sha_twice_is_refused_by_the_schema(tmp_path):
    with Store(tmp_path / "s.sqlite3") as store:
        store.add_digest("a.txt", "sha-a", digest("A"), NOW)
        with pytest.raises(sqlite3.IntegrityError):
            store.add_digest("a2.txt", "sha-a", digest("Z"), NOW)
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
        store.add_digest("a.txt", "sha-a", digest("A", "B"), NOW)
        store.sync_subscribers([Subscriber("a@example.org", topics=("t",)),
                                Subscriber("b@example.org", topics=("t",))], NOW)
        (sa, _), (sb, _) = store.active_subscribers()
        paper_a = next(p for p in unsent(store, sa) if p.key == "title:a")
        oid = store.queue_edition("e1", sa, "m1@example.org", NOW, [paper_a.id])
        assert store.queue_edition("e1", sa, "m1@example.org", NOW, [paper_a.id]) is None  # a re-run
        assert store.taken_papers(sa) == {paper_a.id}  # on its way: never picked again
        assert [p.key for p in unsent(store, sa)] == ["title:a", "title:b"]  # queued is not sent
        store.mark_sending(oid, NOW)
        store.mark_sent(oid, NOW)
        assert store.taken_papers(sa) == {paper_a.id}  # now from the ledger
        assert store.taken_papers(sa, from_paper_id=paper_a.id + 1) == set()
        assert store.taken_papers(sb) == set()
        assert [p.key for p in unsent(store, sa)] == ["title:b"]
        assert [p.key for p in unsent(store, sb)] == ["title:a", "title:b"]
        assert store.counts()["messages_sent"] == 1


def test_papers_sent_is_the_ledger_count(tmp_path):
    with Store(tmp_path / "s.sqlite3") as store:
        store.add_digest("a.txt", "sha-a", digest("A", "B", "C"), NOW)
        store.sync_subscribers([Subscriber("a@example.org", topics=("t",)),
                                Subscriber("b@example.org", topics=("t",))], NOW)
        (sa, _), (sb, _) = store.active_subscribers()
        a, b, c = sorted(p.id for p in unsent(store, sa))
        assert store.counts()["papers_sent"] == 0
        for key, sid, ids in (("e1", sa, [a, b]), ("e2", sb, [a]), ("e3", sa, [b, c])):  # e3: b again, ignored
            oid = store.queue_edition(key, sid, f"{key}@example.org", NOW, ids)
            store.mark_sending(oid, NOW)
            store.mark_sent(oid, NOW)
        (ledger,) = store.db.execute("SELECT COUNT(*) FROM deliveries").fetchone()
        assert ledger == 4 and store.counts()["papers_sent"] == 4


def test_nothing_deletes_from_the_ledger():
    # counts()["papers_sent"] reads the ledger's largest rowid as its count: that holds only while
    # rows are never deleted or replaced.
    source = Path(__file__).parents[1] / "src" / "digestmail"
    for path in source.rglob("*.py"):
        text = re.sub(r"\s+", " ", path.read_text(encoding="utf-8")).upper()
        for statement in ("DELETE FROM DELIVERIES", "REPLACE INTO DELIVERIES", "OR REPLACE INTO DELIVERIES",
                          "UPDATE DELIVERIES", "DROP TABLE DELIVERIES"):
            assert statement not in text, (path, statement)


def test_unopenable_store_is_a_clear_error(tmp_path):
    (tmp_path / "dir.sqlite3").mkdir()
    with pytest.raises(StoreError) as err:
        Store(tmp_path / "dir.sqlite3")
    assert "cannot open the store" in str(err.value)


def papers(store: Store) -> list:
    store.sync_subscribers([Subscriber("probe@example.org", topics=("t",))], NOW)
    (sid, _), = store.active_subscribers()
    return unsent(store, sid)


TITLE = "Vision Transformers Need Registers for Clean Attention Maps"


def test_title_first_then_arxiv_id_is_one_paper(tmp_path):
    with Store(tmp_path / "s.sqlite3") as store:
        store.add_digest("a", "1", digest(TITLE), NOW)
        r = store.add_digest("b", "2", digest(Entry(TITLE.upper(), "x", arxiv_id="2309.16588",
                                                    authors=("T. Darcet",), upvotes=42)), NOW)
        assert (r.new_papers, r.known_papers) == (0, 1)
        r = store.add_digest("c", "3", digest(Entry("Another title entirely", "y", arxiv_id="2309.16588")), NOW)
        assert r.known_papers == 1  # found by id, whatever the title says
        (p,) = papers(store)
        assert (p.key, p.arxiv_id, p.authors, p.upvotes, p.digest_count) == \
            ("arxiv:2309.16588", "2309.16588", ("T. Darcet",), 42, 3)


def test_arxiv_id_first_then_title_is_one_paper(tmp_path):
    with Store(tmp_path / "s.sqlite3") as store:
        store.add_digest("a", "1", digest(Entry(TITLE, "x", arxiv_id="2309.16588")), NOW)
        assert store.add_digest("b", "2", digest(TITLE.replace(" ", "  ") + "."), NOW).known_papers == 1


def test_near_identical_titles_merge_and_different_papers_do_not(tmp_path):
    with Store(tmp_path / "s.sqlite3") as store:
        store.add_digest("a", "1", digest(TITLE, "GPT-3 Technical Report and Beyond It",
                                          "Masked Autoencoders Are Scalable Vision Learners"), NOW)
        r = store.add_digest("b", "2", digest(
            "Vision Transformer Needs Registers for Clean Attention Map",   # plurals: same paper
            "Vision Transformers Need Registers for Clean Atention Maps",   # a typo: same paper
            "Vision-Transformers Need Registers for Clean Attention Maps",  # hyphen: same paper
            "GPT-4 Technical Report and Beyond It",                         # another number
            "Masked Autoencoders As Scalable Vision Learners",              # another word
        ), NOW)
        assert (r.new_papers, r.known_papers) == (2, 1)


def test_different_arxiv_ids_never_merge(tmp_path):
    with Store(tmp_path / "s.sqlite3") as store:
        store.add_digest("a", "1", digest(Entry(TITLE, "x", arxiv_id="2309.16588")), NOW)
        r = store.add_digest("b", "2", digest(Entry(TITLE, "x", arxiv_id="2401.00001")), NOW)
        assert r.new_papers == 1


def test_an_arxiv_id_a_paper_takes_holds_for_the_rest_of_the_digest(tmp_path):
    with Store(tmp_path / "s.sqlite3") as store:
        store.add_digest("a", "1", digest(TITLE), NOW)  # known by its title only
        r = store.add_digest("b", "2", digest(
            Entry(TITLE, "x", arxiv_id="2309.16588"),                   # the paper, which takes this id
            Entry(TITLE.upper(), "y", arxiv_id="2401.00001"),           # another id: another paper
            Entry("Another title entirely", "z", arxiv_id="2309.16588"),  # the id just taken: the paper
        ), NOW)
        assert (r.new_papers, r.known_papers) == (1, 1)
        assert sorted((p.arxiv_id, p.digest_count) for p in papers(store)) == [("2309.16588", 2), ("2401.00001", 1)]


def test_a_digest_whose_entries_all_have_ids_finds_by_title_only_papers_without_one(tmp_path):
    # Such a digest leaves papers with an id out of its title lookups: check both kinds still resolve.
    other = "Masked Autoencoders Are Scalable Vision Learners"
    with Store(tmp_path / "s.sqlite3") as store:
        store.add_digest("a", "1", digest(TITLE, Entry(other, "x", arxiv_id="2111.06377")), NOW)
        r = store.add_digest("b", "2", digest(
            Entry("Vision Transformer Needs Registers for Clean Attention Map", "y", arxiv_id="2309.16588"),
            Entry(other, "z", arxiv_id="2401.00001"),           # the title of a paper with another id
            Entry(other.upper(), "w", arxiv_id="2111.06377"),   # that paper, by its id
        ), NOW)
        assert (r.new_papers, r.known_papers) == (1, 2)
        r = store.add_digest("c", "3", digest(Entry(other.lower(), "v"), Entry(TITLE, "u", arxiv_id="2309.16588")), NOW)
        assert (r.new_papers, r.known_papers) == (0, 2)  # without an id: the first paper of that title
        assert sorted((p.arxiv_id, p.digest_count) for p in papers(store)) == \
            [("2111.06377", 3), ("2309.16588", 3), ("2401.00001", 1)]


def test_replacements_update_known_papers_and_are_never_new(tmp_path):
    with Store(tmp_path / "s.sqlite3") as store:
        store.add_digest("a", "1", digest(Entry(TITLE, "old abstract", arxiv_id="2309.16588")), NOW)
        r = store.add_digest("b", "2", digest(
            Entry(TITLE + " (revised)", "new abstract", arxiv_id="2309.16588", kind="replacement"),
            Entry("Unknown replaced paper", "z", arxiv_id="2101.00001", kind="replacement")), NOW)
        assert (r.new_papers, r.known_papers, r.updated_papers) == (0, 0, 1)
        (p,) = papers(store)
        assert p.abstract == "new abstract" and p.title.endswith("(revised)") and p.digest_count == 1


def test_outbox_states_recovery_and_suppressions(tmp_path):
    later = NOW + dt.timedelta(minutes=5)
    with Store(tmp_path / "s.sqlite3") as store:
        store.add_digest("a.txt", "sha-a", digest("A", "B", "C"), NOW)
        store.sync_subscribers([Subscriber("a@example.org", topics=("t",))], NOW)
        ((sid, _),) = store.active_subscribers()
        ids = [p.id for p in unsent(store, sid)]
        first = store.queue_edition("e1", sid, "m1@x.org", NOW, ids[:1])
        second = store.queue_edition("e2", sid, "m2@x.org", NOW, ids[1:2])
        third = store.queue_edition("e3", sid, "m3@x.org", NOW, ids[2:])
        store.mark_sending(first, NOW)  # ... and the process dies here
        store.mark_sending(second, NOW)
        store.mark_deferred(second, NOW, later, "451 try later")
        store.mark_sending(third, NOW)
        store.mark_failed(third, NOW, "550 no such user")
        assert store.outbox_counts() == {"queued": 0, "sending": 1, "sent": 0, "deferred": 1, "failed": 1}
        assert store.recover_sending(NOW) == 1
        assert [r.edition_key for r in store.due(NOW)] == ["e1"]
        due = store.due(later)
        assert [(r.edition_key, r.attempts, r.paper_ids) for r in due] == [("e1", 1, (ids[0],)), ("e2", 1, (ids[1],))]
        assert store.failures()[0]["error"] == "550 no such user"
        store.suppress("A@example.org", "refused", "550 no such user", NOW)
        assert store.suppression("a@example.org") == "refused"
        assert store.unsuppress("a@example.org") and store.suppression("a@example.org") is None


def test_a_batch_is_queued_looked_up_and_withdrawn_together(tmp_path):
    with Store(tmp_path / "s.sqlite3") as store:
        store.add_digest("a.txt", "sha-a", digest("A", "B", "C"), NOW)
        store.sync_subscribers([Subscriber("a@example.org"), Subscriber("b@example.org")], NOW)
        (sa, _), (sb, _) = store.active_subscribers()
        ids = [p.id for p in unsent(store, sa)]
        assert store.queue_edition("old", sa, "m0@x.org", NOW, ids[:1]) is not None
        oids = store.queue_editions([Queued("old", sa, "m1@x.org", NOW, (ids[1],)),  # exists: None
                                     Queued("e2", sa, "m2@x.org", NOW, tuple(ids[1:])),
                                     Queued("e3", sb, "m3@x.org", NOW, tuple(ids))], sending=True)
        assert oids[0] is None and None not in oids[1:]
        assert store.existing_editions(["old", "e2", "e3", "nope"]) == {"old", "e2", "e3"}
        assert store.outbox_counts()["sending"] == 2
        assert store.taken_papers(sb) == set(ids)  # on its way: never picked again
        store.mark_sent(oids[1], NOW)
        store.withdraw([oids[1], oids[2]])  # the sent one stays; the other was never handed over
        assert store.existing_editions(["e2", "e3"]) == {"e2"}
        assert store.taken_papers(sb) == set()
        assert store.db.execute("SELECT COUNT(*) FROM outbox_papers WHERE outbox_id = ?", (oids[2],)).fetchone() == (0,)
        store.suppress("B@Example.org", "unsubscribed", "", NOW)
        # As given → reason, compared as the table does (ASCII case folded)
        assert store.suppressed_among(["a@example.org", "b@example.ORG", "B@EXAMPLE.ORG"]) == {
            "b@example.ORG": "unsubscribed", "B@EXAMPLE.ORG": "unsubscribed"}
        assert store.suppressed_among([]) == {}


def test_equal_compact_titles_are_found_without_an_index_of_their_own(tmp_path):
    with Store(tmp_path / "s.sqlite3") as store:
        store.add_digest("a", "1", digest("Pre-Training", "Don't Stop Pretraining Language Models Too Early"), NOW)
        r = store.add_digest("b", "2", digest("pretraining", "Dont Stop Pre-training Language-Models Too Early"), NOW)
        assert (r.new_papers, r.known_papers) == (0, 2)


def test_titles_whose_hashes_collide_stay_two_papers(tmp_path):
    a, b = "Sparse Continual Meets Action", "Sparse Distribution Meets Convergence"
    assert identity.key_hash(identity.title_keys(a).folded) == identity.key_hash(identity.title_keys(b).folded)
    with Store(tmp_path / "s.sqlite3") as store:
        store.add_digest("a", "1", digest(a), NOW)
        assert store.add_digest("b", "2", digest(b), NOW).new_papers == 1
        assert store.add_digest("c", "3", digest("Sparse Continual Meet Actions"), NOW).known_papers == 1
        assert sorted(p.title for p in papers(store)) == [a, b]


def _store_before(path, last: str) -> sqlite3.Connection:
    """A store with the migrations up to `last` applied, as Store applied them then."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE migrations (name TEXT PRIMARY KEY, applied_at TEXT)")
    names = [name for name, _ in MIGRATIONS]
    for name, step in MIGRATIONS[:names.index(last) + 1]:
        db.execute("BEGIN")
        if callable(step):
            step(db)
        else:
            for statement in step.split(";\n"):
                if statement.strip():
                    db.execute(statement)
        db.execute("INSERT INTO migrations VALUES (?, ?)", (name, NOW.isoformat()))
        db.execute("COMMIT")
    return db


OLD_PAPERS = [  # (title, arXiv id) as stored before title keys were hashed
    (TITLE, None),
    ("Masked Autoencoders Are Scalable Vision Learners", "2111.06377"),
    ("GPT-3 Technical Report and Beyond It", None),
    ("Pre-Training Transformers", None),
]


def test_a_store_from_before_hashed_title_keys_upgrades_and_finds_the_same_papers(tmp_path):
    path = tmp_path / "old.sqlite3"
    db = _store_before(path, "0013_run_reports")
    db.execute("INSERT INTO digests (id, path, sha256, format, digest_date, ingested_at, entries) "
               "VALUES (1, 'old.txt', 'sha-old', 'trending', '2026-11-01', ?, ?)", (NOW.isoformat(), len(OLD_PAPERS)))
    for pid, (title, arxiv) in enumerate(OLD_PAPERS, start=1):
        k = identity.title_keys(title)  # the columns the store kept then, as it filled them
        db.execute("INSERT INTO papers (id, key, title, abstract, first_seen, arxiv_id, title_norm, title_compact, "
                   "title_head, title_tail, title_folded) VALUES (?, ?, ?, 'x', ?, ?, ?, ?, ?, ?, ?)",
                   (pid, identity.paper_key(title, arxiv), title, NOW.isoformat(), arxiv, k.normal, k.compact,
                    k.head, k.tail, k.folded))
        db.execute("INSERT INTO paper_digests (paper_id, digest_id, position) VALUES (?, 1, ?)", (pid, pid))
    db.close()

    with Store(path) as store:
        indexes = {r[0] for r in store.db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"papers_folded_hash", "papers_head_hash", "papers_tail_hash"} <= indexes
        assert not any(name.startswith("papers_title_") for name in indexes)
        r = store.add_digest("new.txt", "sha-new", digest(
            TITLE.upper(),                                                  # the normalised title
            "Vision Transformer Needs Registers for Clean Attention Map",   # plurals folded
            Entry("Another title entirely", "y", arxiv_id="2111.06377"),    # the arXiv id
            "GPT-3 Technical Report and Beyond Itt",                        # a typo
            "Pretraining Transformers",                                     # the compact title
            "GPT-4 Technical Report and Beyond It",                         # another number: new
            Entry("Masked Autoencoders Are Scalable Vision Learners", "z", arxiv_id="2401.00001"),  # new
        ), NOW)
        assert (r.new_papers, r.known_papers) == (2, 4)
        assert store.counts()["papers"] == len(OLD_PAPERS) + 2


def ledger(store: Store) -> list[tuple]:
    return store.db.execute("SELECT subscriber_id, paper_id, message_id, sent_at FROM deliveries "
                            "ORDER BY subscriber_id, paper_id").fetchall()


def test_marking_sent_records_exactly_the_editions_papers_once(tmp_path):
    later, latest = NOW + dt.timedelta(hours=1), NOW + dt.timedelta(hours=2)
    with Store(tmp_path / "s.sqlite3") as store:
        store.add_digest("a.txt", "sha-a", digest("A", "B", "C", "D"), NOW)
        store.sync_subscribers([Subscriber("a@example.org"), Subscriber("b@example.org")], NOW)
        (sa, _), (sb, _) = store.active_subscribers()
        a, b, c, d = [p.id for p in unsent(store, sa)]
        e1, e2, e3 = store.queue_editions([Queued("e1", sa, "m1@x.org", NOW, (a, b)),
                                           Queued("e2", sb, "m2@x.org", NOW, (c,)),
                                           Queued("e3", sa, "m3@x.org", NOW, (b, d))], sending=True)
        # Every state but sent leaves the ledger alone.
        store.mark_deferred(e1, NOW, later, "451 later")
        store.mark_failed(e2, NOW, "550 no")
        store.recover_sending(NOW)
        store.mark_sending(e1, later)
        assert ledger(store) == []
        store.mark_sent(e1, later)
        assert ledger(store) == [(sa, a, "m1@x.org", later.isoformat()), (sa, b, "m1@x.org", later.isoformat())]
        store.mark_sent(e1, latest)  # again (a re-run): nothing added, nothing moved
        assert len(ledger(store)) == 2 and store.sent_since(later) == 1 and store.sent_since(latest) == 1
        store.mark_sent(e2, latest)  # failed, then sent after all
        store.mark_sent(e3, latest)  # b went out in m1 already: the ledger keeps that message
        assert ledger(store) == [(sa, a, "m1@x.org", later.isoformat()), (sa, b, "m1@x.org", later.isoformat()),
                                 (sa, d, "m3@x.org", latest.isoformat()), (sb, c, "m2@x.org", latest.isoformat())]
        assert store.outbox_counts()["sent"] == 3
        assert store.counts()["messages_sent"] == 3
        assert store.taken_papers(sa) == {a, b, d} and store.taken_papers(sb) == {c}


def test_an_edition_is_marked_sent_with_its_ledger_rows_or_not_at_all(tmp_path):
    with Store(tmp_path / "s.sqlite3") as store:
        store.add_digest("a.txt", "sha-a", digest("A", "B"), NOW)
        store.sync_subscribers([Subscriber("a@example.org")], NOW)
        ((sid, _),) = store.active_subscribers()
        ids = tuple(p.id for p in unsent(store, sid))
        (oid,) = store.queue_editions([Queued("e1", sid, "m1@x.org", NOW, ids)], sending=True)
        # The ledger refuses its second row, as a full disk or a crash halfway would stop it.
        store.db.execute(f"CREATE TEMP TRIGGER refuse BEFORE INSERT ON main.deliveries WHEN new.paper_id = {ids[1]} "
                         "BEGIN SELECT RAISE(ABORT, 'refused'); END")
        with pytest.raises(sqlite3.IntegrityError):
            store.mark_sent(oid, NOW)
        assert ledger(store) == [] and store.outbox_counts()["sending"] == 1
        store.db.execute("DROP TRIGGER temp.refuse")
        store.mark_sent(oid, NOW)
        assert [r[1] for r in ledger(store)] == sorted(ids) and store.outbox_counts()["sent"] == 1


def test_a_store_from_before_the_ledger_trigger_keeps_its_rows_and_records_the_rest(tmp_path):
    path = tmp_path / "old.sqlite3"
    db = _store_before(path, "0015_drop_outbox_papers_paper_index")
    db.execute("INSERT INTO papers (id, key, title, abstract, first_seen) VALUES (1, 'title:a', 'A', 'x', ?), "
               "(2, 'title:b', 'B', 'x', ?)", (NOW.isoformat(), NOW.isoformat()))
    db.execute("INSERT INTO subscribers (id, email, name, topics, query, max_papers, joined_at) "
               "VALUES (1, 'a@example.org', '', '[]', '', 5, ?)", (NOW.isoformat(),))
    # Sent by the old mark_sent (with its ledger row), and editions on their way when the old version stopped.
    db.executemany("INSERT INTO outbox (id, edition_key, subscriber_id, message_id, created_at, state, attempts, "
                   "next_attempt, updated_at) VALUES (?, ?, 1, ?, ?, ?, 1, ?, ?)",
                   [(i, f"e{i}", f"m{i}@x.org", NOW.isoformat(), state, NOW.isoformat(), NOW.isoformat())
                    for i, state in enumerate(("sent", "deferred", "sending", "queued", "failed"), start=1)])
    db.executemany("INSERT INTO outbox_papers VALUES (?, ?, 0)", [(1, 1), (2, 2), (3, 1), (4, 2), (5, 1)])
    db.execute("INSERT INTO deliveries VALUES (1, 1, 'm1@x.org', ?)", (NOW.isoformat(),))
    db.close()

    with Store(path) as store:
        assert ledger(store) == [(1, 1, "m1@x.org", NOW.isoformat())]
        assert store.outbox_counts() == {"queued": 1, "sending": 1, "sent": 1, "deferred": 1, "failed": 1}
        assert store.taken_papers(1) == {1, 2} and store.sent_since(NOW) == 1
        assert store.recover_sending(NOW) == 1
        assert [r.id for r in store.due(NOW)] == [2, 3, 4]
        assert store.failures()[0]["email"] == "a@example.org"
        store.mark_sending(2, NOW)
        store.mark_sent(2, NOW)
        store.mark_sent(1, NOW)  # sent before the upgrade: its row is not written twice
        assert ledger(store) == [(1, 1, "m1@x.org", NOW.isoformat()), (1, 2, "m2@x.org", NOW.isoformat())]
        assert store.outbox_counts() == {"queued": 2, "sending": 0, "sent": 2, "deferred": 0, "failed": 1}


def test_outbox_lookups_go_through_an_index(tmp_path):
    """No outbox query reads every row: after a year the outbox holds millions of sent editions."""
    with Store(tmp_path / "s.sqlite3") as store:
        store.add_digest("a.txt", "sha-a", digest("A", "B"), NOW)
        store.sync_subscribers([Subscriber("a@example.org")], NOW)
        ((sid, _),) = store.active_subscribers()
        (oid,) = store.queue_editions([Queued("e1", sid, "m1@x.org", NOW, (1, 2))], sending=True)
        statements: list[str] = []
        store.db.set_trace_callback(statements.append)
        store.due(NOW), store.recover_sending(NOW), store.sent_since(NOW), store.outbox_counts()
        store.failures(), store.taken_papers(sid), store.existing_editions(["e1"]), store.withdraw([oid])
        store.db.set_trace_callback(None)
        plans = {sql: [row[-1] for row in store.db.execute(f"EXPLAIN QUERY PLAN {sql}")]
                 for sql in statements if "outbox" in sql and not sql.startswith(("BEGIN", "COMMIT"))}
        assert len(plans) >= 9
        scans = {sql: plan for sql, plan in plans.items() if any(p in ("SCAN outbox", "SCAN o") for p in plan)}
        assert scans == {}


def test_taken_papers_of_a_batch_are_each_subscribers_own(tmp_path):
    with Store(tmp_path / "s.sqlite3") as store:
        store.add_digest("a.txt", "sha-a", digest("A", "B", "C", "D", "E"), NOW)
        store.sync_subscribers([Subscriber(f"{n}@example.org") for n in "abcd"], NOW)
        (sa, _), (sb, _), (sc, _), (sd, _) = store.active_subscribers()
        a, b, c, d, e = [p.id for p in unsent(store, sa)]
        e1, e2, e3, e4 = store.queue_editions([Queued("e1", sa, "m1@x.org", NOW, (a, b)),  # sent: the ledger
                                               Queued("e2", sa, "m2@x.org", NOW, (c,)),  # on its way
                                               Queued("e3", sb, "m3@x.org", NOW, (b, e)),  # failed: free again
                                               Queued("e4", sc, "m4@x.org", NOW, (d,))], sending=True)
        store.mark_sent(e1, NOW)
        store.mark_failed(e3, NOW, "550 no")
        store.mark_deferred(e4, NOW, NOW, "451 later")
        ids = [sa, sb, sc, sd]
        assert store.taken_papers_of(ids) == {sa: {a, b, c}, sc: {d}}
        assert store.taken_papers_of(ids) == {s: store.taken_papers(s) for s in ids if store.taken_papers(s)}
        assert store.taken_papers_of(ids, from_paper_id=b + 1) == {sa: {c}, sc: {d}}  # the ledger from there on
        assert store.taken_papers_of([sd]) == {}


def test_the_last_hours_sends_and_the_latest_failures_are_read_by_time_not_all_of_them(tmp_path):
    """The hourly limit's count and status's latest failures read a range of outbox_due (state, no next
    attempt, time), never every sent or failed edition ever; a store from before 0018 gets its sent and
    failed editions' next attempts cleared, so none drops out of that range."""
    path = tmp_path / "old.sqlite3"
    db = _store_before(path, "0017_outbox_due_without_sending")
    db.execute("INSERT INTO subscribers (id, email, name, topics, query, max_papers, joined_at) "
               "VALUES (1, 'a@example.org', '', '[]', '', 5, ?)", (NOW.isoformat(),))
    hour = dt.timedelta(hours=1)
    rows = [(i, f"e{i}", f"m{i}@x.org", state, (NOW - age).isoformat(), next_attempt)
            for i, (state, age, next_attempt) in enumerate([
                ("sent", 3 * hour, None), ("sent", hour / 2, None), ("sent", hour / 4, NOW.isoformat()),
                ("failed", 2 * hour, NOW.isoformat()), ("failed", hour / 3, None), ("deferred", hour, NOW.isoformat())],
                start=1)]
    db.executemany("INSERT INTO outbox (id, edition_key, subscriber_id, message_id, created_at, state, attempts, "
                   "next_attempt, updated_at) VALUES (?, ?, 1, ?, ?, ?, 1, ?, ?)",
                   [(i, k, m, at, state, nxt, at) for i, k, m, state, at, nxt in rows])
    db.close()
    with Store(path) as store:
        assert store.sent_since(NOW - hour) == 2  # both recent ones, the one with a stale next attempt too
        assert [f["at"] for f in store.failures()] == [rows[4][4], rows[3][4]]  # newest first
        assert store.counts()["messages_sent"] == 3
        statements: list[str] = []
        store.db.set_trace_callback(statements.append)
        store.sent_since(NOW - hour), store.failures()
        store.db.set_trace_callback(None)
        sent_since, failures = ([row[-1] for row in store.db.execute(f"EXPLAIN QUERY PLAN {sql}")]
                                for sql in statements)
    assert sent_since == ["SEARCH outbox USING COVERING INDEX outbox_due "
                          "(state=? AND next_attempt=? AND updated_at>?)"], sent_since
    assert any("outbox_due (state=? AND next_attempt=?)" in step for step in failures), failures
    assert not any("TEMP B-TREE" in step for step in failures), failures  # in the index's order: no sort


def test_the_earliest_window_is_the_oldest_joined_at_less_its_backfill(tmp_path):
    with Store(tmp_path / "s.sqlite3") as store:
        store.sync_subscribers([Subscriber(f"{n}@example.org", backfill_days=3) for n in "abc"], NOW)
        later = NOW + dt.timedelta(days=2)
        store.sync_subscribers([*(Subscriber(f"{n}@example.org", backfill_days=3) for n in "abc"),
                                Subscriber("d@example.org", backfill_days=10),  # joins later, reaches further back
                                Subscriber("e@example.org", backfill_days=0)], later)
        assert store.earliest_window(later + dt.timedelta(days=5)) == later - dt.timedelta(days=10)
        store.sync_subscribers([Subscriber(f"{n}@example.org", backfill_days=3) for n in "abce"], later)  # d leaves
        assert store.earliest_window(later) == NOW - dt.timedelta(days=3)


# -- the sent journal: a 250 recorded at once, in the tables in batches -----------------------------

def sending_editions(store: Store, n: int) -> tuple[list[int], list[int]]:
    """n editions of one paper each, queued as sending for n subscribers: (outbox ids, subscriber ids)."""
    store.add_digest("a.txt", "sha-a", digest("A", "B"), NOW)
    store.sync_subscribers([Subscriber(f"r{i}@example.org") for i in range(n)], NOW)
    sids = [sid for sid, _ in store.active_subscribers()]
    paper = unsent(store, sids[0])[0].id
    oids = store.queue_editions([Queued(f"e{i}", sid, f"m{i}@x.org", NOW, (paper,)) for i, sid in enumerate(sids)],
                                sending=True)
    return oids, sids


def test_sends_reach_the_journal_at_once_and_the_tables_with_the_next_transaction(tmp_path):
    with Store(tmp_path / "s.sqlite3") as store:
        oids, sids = sending_editions(store, 4)
        with store.recording_sends():
            store.mark_sent(oids[0], NOW)
            store.mark_sent(oids[1], NOW)
            assert store.sent_journal.read_bytes() == f"{oids[0]} {NOW.isoformat()}\n{oids[1]} {NOW.isoformat()}\n".encode()
            assert store.outbox_counts()["sending"] == 4 and ledger(store) == []  # not yet in the tables
            # Any transaction writes them first: withdrawing what was never handed over spares them.
            store.withdraw(oids[1:3])
            assert store.outbox_counts() == {"queued": 0, "sending": 1, "sent": 2, "deferred": 0, "failed": 0}
            assert [row[0] for row in ledger(store)] == sids[:2]
            assert store.sent_journal.read_bytes() == b""  # emptied once they are in
            store.mark_sent(oids[3], NOW)
        # The end of the delivery writes the rest and removes the journal.
        assert store.outbox_counts()["sent"] == 3 and [row[0] for row in ledger(store)] == [sids[0], sids[1], sids[3]]
        assert not store.sent_journal.exists()


def test_a_batch_of_sends_is_written_without_waiting_for_another_transaction(tmp_path):
    from digestmail.store.outbox import SENT_BATCH

    with Store(tmp_path / "s.sqlite3") as store:
        oids, _ = sending_editions(store, SENT_BATCH + 1)
        with store.recording_sends():
            for oid in oids[:SENT_BATCH - 1]:
                store.mark_sent(oid, NOW)
            assert store.outbox_counts()["sent"] == 0
            store.mark_sent(oids[SENT_BATCH - 1], NOW)
            assert store.outbox_counts()["sent"] == SENT_BATCH and store.sent_journal.read_bytes() == b""
            store.mark_sent(oids[SENT_BATCH], NOW)
            assert store.outbox_counts()["sent"] == SENT_BATCH
        assert store.outbox_counts()["sent"] == SENT_BATCH + 1


CRASH = """
import datetime as dt, os, sys
from digestmail.store import Store
store = Store(__import__("pathlib").Path(sys.argv[1]))
with store.recording_sends():
    for oid in map(int, sys.argv[2:]):
        store.mark_sent(oid, dt.datetime(2026, 11, 23, 9, tzinfo=dt.timezone.utc))
    os._exit(9)  # killed: no transaction, no cleanup
"""


def test_what_a_killed_process_recorded_only_in_the_journal_is_sent_at_the_next_start(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "s.sqlite3"
    with Store(path) as store:
        oids, sids = sending_editions(store, 4)
    killed = subprocess.run([sys.executable, "-c", CRASH, str(path), *map(str, oids[:2])], capture_output=True)
    assert killed.returncode == 9, killed.stderr
    with Store(path) as store:
        assert store.outbox_counts()["sending"] == 4 and ledger(store) == []
        assert len(store.sent_journal.read_bytes().splitlines()) == 2
        assert store.recover_sending(NOW) == 2  # the two the journal does not name go out again
        counts = store.outbox_counts()
        assert (counts["sent"], counts["queued"]) == (2, 2)
        later = (NOW + dt.timedelta(hours=1)).isoformat()
        assert [(row[0], row[3]) for row in ledger(store)] == [(sids[0], later), (sids[1], later)]
        assert not store.sent_journal.exists()


def test_a_torn_or_garbled_journal_line_is_skipped(tmp_path):
    with Store(tmp_path / "s.sqlite3") as store:
        oids, _ = sending_editions(store, 4)
        store.sent_journal.write_bytes(f"{oids[0]} {NOW.isoformat()}\n\x00\x00\x00\nnot a line\n"
                                       f"{oids[1]} 2026-11-23T09:00:00\n{oids[2]} 2026-11-2".encode())
        assert store.recover_sending(NOW) == 3  # only the first line is whole (the fourth has no zone)
        assert store.outbox_counts()["sent"] == 1 and not store.sent_journal.exists()


def test_without_a_journal_each_send_is_its_own_transaction(tmp_path):
    with Store(tmp_path / "s.sqlite3") as store:
        oids, _ = sending_editions(store, 2)
        store.sent_journal.mkdir()  # cannot be opened for writing, whoever we are
        with store.recording_sends():
            store.mark_sent(oids[0], NOW)
            assert store.outbox_counts()["sent"] == 1
        assert store.outbox_counts()["sent"] == 1 and store.sent_journal.is_dir()
