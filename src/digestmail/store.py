"""The SQLite store (the only sqlite3 user): digests, papers, subscribers and the delivery ledger."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import StoreError
from .models import Digest, Paper, Subscriber

# Append-only: each migration runs once, in its own transaction, and is recorded by name.
# Never edit or reorder an entry that has shipped; add a new one.
MIGRATIONS: list[tuple[str, str]] = []
migration = MIGRATIONS.append

migration(("0001_initial", """
CREATE TABLE digests (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL UNIQUE,
    format TEXT NOT NULL,
    digest_date TEXT NOT NULL,
    ingested_at TEXT NOT NULL,
    entries INTEGER NOT NULL
);
CREATE TABLE papers (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    abstract TEXT NOT NULL,
    first_seen TEXT NOT NULL
);
CREATE TABLE paper_digests (
    paper_id INTEGER NOT NULL REFERENCES papers(id),
    digest_id INTEGER NOT NULL REFERENCES digests(id),
    position INTEGER NOT NULL,
    PRIMARY KEY (paper_id, digest_id)
);
CREATE INDEX paper_digests_digest ON paper_digests(digest_id);
CREATE TABLE subscribers (
    id INTEGER PRIMARY KEY,
    email TEXT NOT NULL UNIQUE COLLATE NOCASE,
    name TEXT NOT NULL,
    topics TEXT NOT NULL,
    query TEXT NOT NULL,
    max_papers INTEGER NOT NULL,
    joined_at TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 1,
    sync_generation INTEGER NOT NULL DEFAULT 0
);
-- The ledger: a row means this paper was handed over to this subscriber in that message.
CREATE TABLE deliveries (
    subscriber_id INTEGER NOT NULL REFERENCES subscribers(id),
    paper_id INTEGER NOT NULL REFERENCES papers(id),
    message_id TEXT NOT NULL,
    sent_at TEXT NOT NULL,
    PRIMARY KEY (subscriber_id, paper_id)
);
"""))


@dataclass(frozen=True)
class IngestResult:
    """What adding one digest did: its id and how many of its papers were new to the store."""

    digest_id: int
    new_papers: int
    known_papers: int


def _iso(moment: dt.datetime | dt.date) -> str:
    return moment.isoformat()


class Store:
    """One connection to the SQLite file; every write is one transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, isolation_level=None, timeout=10.0)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the store: {exc}", where=str(path),
                             hint="check [store] path and that the folder is writable") from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT, rolled back on any exception."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _migrate(self) -> None:
        self.db.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at TEXT)")
        done = {row[0] for row in self.db.execute("SELECT name FROM migrations")}
        for name, sql in MIGRATIONS:
            if name in done:
                continue
            with self.transaction() as db:
                for statement in sql.split(";\n"):
                    if statement.strip():
                        db.execute(statement)
                db.execute("INSERT INTO migrations VALUES (?, ?)",
                           (name, _iso(dt.datetime.now(dt.timezone.utc))))

    # -- digests and papers ------------------------------------------------------------------

    def has_digest(self, sha256: str) -> bool:
        return self.db.execute("SELECT 1 FROM digests WHERE sha256 = ?", (sha256,)).fetchone() is not None

    def add_digest(self, path: str, sha256: str, digest: Digest, keys: list[str],
                   ingested_at: dt.datetime) -> IngestResult:
        """Store a parsed digest and its papers in one transaction; `keys[i]` is entry i's paper key."""
        new = known = 0
        with self.transaction() as db:
            digest_id = db.execute(
                "INSERT INTO digests (path, sha256, format, digest_date, ingested_at, entries) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (path, sha256, digest.format, _iso(digest.date), _iso(ingested_at), len(digest.entries)),
            ).lastrowid
            for position, (entry, key) in enumerate(zip(digest.entries, keys)):
                row = db.execute("SELECT id, abstract FROM papers WHERE key = ?", (key,)).fetchone()
                if row is None:
                    paper_id = db.execute(
                        "INSERT INTO papers (key, title, abstract, first_seen) VALUES (?, ?, ?, ?)",
                        (key, entry.title, entry.abstract, _iso(ingested_at))).lastrowid
                    new += 1
                else:
                    paper_id = row[0]
                    known += 1
                    if not row[1] and entry.abstract:  # a later digest may complete a bare title
                        db.execute("UPDATE papers SET abstract = ? WHERE id = ?", (entry.abstract, paper_id))
                db.execute("INSERT OR IGNORE INTO paper_digests VALUES (?, ?, ?)",
                           (paper_id, digest_id, position))
        assert digest_id is not None
        return IngestResult(digest_id, new, known)

    def unsent_papers(self, subscriber_id: int) -> list[Paper]:
        """Papers never handed to this subscriber, with how many digests each appeared in."""
        rows = self.db.execute(
            "SELECT p.id, p.key, p.title, p.abstract, p.first_seen, COUNT(pd.digest_id) "
            "FROM papers p JOIN paper_digests pd ON pd.paper_id = p.id "
            "WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.subscriber_id = ? AND d.paper_id = p.id) "
            "GROUP BY p.id ORDER BY p.id", (subscriber_id,))
        return [Paper(id=r[0], key=r[1], title=r[2], abstract=r[3],
                      first_seen=dt.datetime.fromisoformat(r[4]), digest_count=r[5]) for r in rows]

    # -- subscribers -------------------------------------------------------------------------

    def sync_subscribers(self, subscribers: Iterable[Subscriber], now: dt.datetime) -> int:
        """Make the configured list the active one: upsert each, deactivate the ones not listed.

        Streams the iterable (a CSV of any size) inside one transaction, so a config error halfway
        leaves the previous list untouched.
        """
        count = 0
        with self.transaction() as db:
            generation = db.execute("SELECT COALESCE(MAX(sync_generation), 0) + 1 FROM subscribers").fetchone()[0]
            for s in subscribers:
                db.execute(
                    "INSERT INTO subscribers (email, name, topics, query, max_papers, joined_at, active, "
                    "sync_generation) VALUES (?, ?, ?, ?, ?, ?, 1, ?) "
                    "ON CONFLICT (email) DO UPDATE SET name = excluded.name, topics = excluded.topics, "
                    "query = excluded.query, max_papers = excluded.max_papers, active = 1, "
                    "sync_generation = excluded.sync_generation",
                    (s.email, s.name, json.dumps(list(s.topics)), s.query, s.max_papers, _iso(now), generation))
                count += 1
            db.execute("UPDATE subscribers SET active = 0 WHERE sync_generation != ?", (generation,))
        return count

    _SUBSCRIBER = "SELECT id, email, name, topics, query, max_papers FROM subscribers WHERE active = 1 "

    @staticmethod
    def _subscriber(r: tuple) -> tuple[int, Subscriber]:  # type: ignore[type-arg]
        return r[0], Subscriber(email=r[1], name=r[2], topics=tuple(json.loads(r[3])), query=r[4],
                                max_papers=r[5])

    def active_subscribers(self) -> Iterator[tuple[int, Subscriber]]:
        """Active subscribers in id order, read in pages so a large list is never held in memory."""
        last = 0
        while True:
            rows = self.db.execute(self._SUBSCRIBER + "AND id > ? ORDER BY id LIMIT 500", (last,)).fetchall()
            if not rows:
                return
            yield from map(self._subscriber, rows)
            last = rows[-1][0]

    def find_subscriber(self, email: str) -> tuple[int, Subscriber] | None:
        row = self.db.execute(self._SUBSCRIBER + "AND email = ?", (email,)).fetchone()
        return self._subscriber(row) if row else None

    # -- the ledger --------------------------------------------------------------------------

    def record_delivery(self, subscriber_id: int, paper_ids: Iterable[int], message_id: str,
                        sent_at: dt.datetime) -> None:
        """Write the ledger rows of one handed-over message, all or nothing."""
        with self.transaction() as db:
            db.executemany("INSERT OR IGNORE INTO deliveries VALUES (?, ?, ?, ?)",
                           [(subscriber_id, p, message_id, _iso(sent_at)) for p in paper_ids])

    def counts(self) -> dict[str, int]:
        """Totals for `status`."""
        q: Callable[[str], int] = lambda sql: self.db.execute(sql).fetchone()[0]
        return {
            "digests": q("SELECT COUNT(*) FROM digests"),
            "entries": q("SELECT COUNT(*) FROM paper_digests"),
            "papers": q("SELECT COUNT(*) FROM papers"),
            "subscribers": q("SELECT COUNT(*) FROM subscribers WHERE active = 1"),
            "messages_sent": q("SELECT COUNT(DISTINCT message_id) FROM deliveries"),
            "papers_sent": q("SELECT COUNT(*) FROM deliveries"),
        }

    def digest_dates(self) -> list[dt.date]:
        return [dt.date.fromisoformat(r[0]) for r in
                self.db.execute("SELECT DISTINCT digest_date FROM digests ORDER BY digest_date")]

    def last_ingest(self) -> tuple[str | None, str | None]:
        """(latest digest date, latest ingest time) or Nones when nothing was ingested yet."""
        row = self.db.execute("SELECT MAX(digest_date), MAX(ingested_at) FROM digests").fetchone()
        return row[0], row[1]
