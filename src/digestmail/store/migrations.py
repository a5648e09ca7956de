"""The store's schema as an append-only list of named migrations (SQL or a function each)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from .. import identity

# Append-only: each migration runs once, in its own transaction, and is recorded by name.
# Never edit or reorder an entry that has shipped; add a new one. A step is SQL or a function.
Step = str | Callable[[sqlite3.Connection], None]
MIGRATIONS: list[tuple[str, Step]] = []
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


def _backfill_title_keys(db: sqlite3.Connection) -> None:
    for paper_id, title in db.execute("SELECT id, title FROM papers").fetchall():
        k = identity.title_keys(title)
        db.execute("UPDATE papers SET title_norm = ?, title_compact = ?, title_head = ?, title_tail = ? "
                   "WHERE id = ?", (k.normal, k.compact, k.head, k.tail, paper_id))


migration(("0002_provenance", """
ALTER TABLE papers ADD COLUMN arxiv_id TEXT;
ALTER TABLE papers ADD COLUMN title_norm TEXT NOT NULL DEFAULT '';
ALTER TABLE papers ADD COLUMN title_compact TEXT NOT NULL DEFAULT '';
ALTER TABLE papers ADD COLUMN title_head TEXT NOT NULL DEFAULT '';
ALTER TABLE papers ADD COLUMN title_tail TEXT NOT NULL DEFAULT '';
ALTER TABLE papers ADD COLUMN authors TEXT NOT NULL DEFAULT '[]';
ALTER TABLE papers ADD COLUMN categories TEXT NOT NULL DEFAULT '[]';
ALTER TABLE papers ADD COLUMN keywords TEXT NOT NULL DEFAULT '[]';
ALTER TABLE papers ADD COLUMN github TEXT;
ALTER TABLE papers ADD COLUMN project_page TEXT;
ALTER TABLE papers ADD COLUMN updated_at TEXT;
CREATE UNIQUE INDEX papers_arxiv ON papers(arxiv_id) WHERE arxiv_id IS NOT NULL;
CREATE INDEX papers_title_norm ON papers(title_norm);
CREATE INDEX papers_title_compact ON papers(title_compact);
CREATE INDEX papers_title_head ON papers(title_head);
CREATE INDEX papers_title_tail ON papers(title_tail);
ALTER TABLE paper_digests ADD COLUMN upvotes INTEGER;
ALTER TABLE digests ADD COLUMN source TEXT NOT NULL DEFAULT 'files';
CREATE INDEX digests_source ON digests(source, digest_date);
-- One row per source: what the last poll saw, so a quiet day and a broken feed look different.
CREATE TABLE source_status (
    source TEXT PRIMARY KEY,
    last_poll TEXT,
    last_arrival TEXT,
    last_new_papers TEXT,
    last_error TEXT
);
"""))
migration(("0003_backfill_title_keys", _backfill_title_keys))
def _backfill_folded_titles(db: sqlite3.Connection) -> None:
    for paper_id, title in db.execute("SELECT id, title FROM papers").fetchall():
        db.execute("UPDATE papers SET title_folded = ? WHERE id = ?", (identity.title_keys(title).folded, paper_id))


migration(("0004_subscriber_selection", """
ALTER TABLE subscribers ADD COLUMN min_papers INTEGER NOT NULL DEFAULT 1;
ALTER TABLE subscribers ADD COLUMN exclude TEXT NOT NULL DEFAULT '';
ALTER TABLE subscribers ADD COLUMN backfill_days INTEGER NOT NULL DEFAULT 7;
CREATE INDEX digests_ingested ON digests(ingested_at);
"""))
# Plural-folded titles get their own indexed column, so identity rule 4a is one lookup, and the
# head/tail scan for typos only has to look at titles of about the same length.
migration(("0005_folded_titles", """
ALTER TABLE papers ADD COLUMN title_folded TEXT NOT NULL DEFAULT '';
CREATE INDEX papers_title_folded ON papers(title_folded);
"""))
migration(("0006_backfill_folded_titles", _backfill_folded_titles))
# Head and tail blocks now carry the title's length (identity._blocks): recompute them.
migration(("0007_length_blocks", _backfill_title_keys))
# Equal normalised titles have equal compact titles, and lookups go by the compact one: an index
# that only slowed every insert down.
migration(("0008_drop_title_norm_index", "DROP INDEX papers_title_norm"))
# Where a polled source (an IMAP folder) got to: its UIDVALIDITY and the last UID read.
migration(("0009_source_cursor", """
CREATE TABLE source_cursor (
    source TEXT PRIMARY KEY,
    uidvalidity INTEGER NOT NULL,
    last_uid INTEGER NOT NULL
);
"""))
# The outbox: one row per (subscriber, edition), queued -> sending -> sent | deferred | failed. The
# papers of an edition enter the ledger in the transaction that marks it sent. Suppressed addresses
# (a permanent bounce, an unsubscribe) are skipped at send time, whatever the config says.
migration(("0010_outbox", """
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY,
    edition_key TEXT NOT NULL UNIQUE,
    subscriber_id INTEGER NOT NULL REFERENCES subscribers(id),
    message_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'sending', 'sent', 'deferred', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt TEXT,
    updated_at TEXT NOT NULL,
    last_error TEXT
);
CREATE INDEX outbox_due ON outbox(state, next_attempt);
CREATE INDEX outbox_subscriber ON outbox(subscriber_id, state);
CREATE TABLE outbox_papers (
    outbox_id INTEGER NOT NULL REFERENCES outbox(id),
    paper_id INTEGER NOT NULL REFERENCES papers(id),
    position INTEGER NOT NULL,
    PRIMARY KEY (outbox_id, paper_id)
);
CREATE INDEX outbox_papers_paper ON outbox_papers(paper_id);
CREATE TABLE suppressions (
    email TEXT PRIMARY KEY COLLATE NOCASE,
    reason TEXT NOT NULL,
    detail TEXT,
    at TEXT NOT NULL
);
"""))
# Per-subscriber schedules, and which scheduled wall-clock times were already handled per schedule.
migration(("0011_schedules", """
ALTER TABLE subscribers ADD COLUMN schedule TEXT NOT NULL DEFAULT '';
ALTER TABLE subscribers ADD COLUMN timezone TEXT NOT NULL DEFAULT '';
CREATE INDEX subscribers_schedule ON subscribers(schedule, timezone, active);
CREATE TABLE schedule_runs (
    schedule TEXT NOT NULL,
    wall_clock TEXT NOT NULL,
    done_at TEXT NOT NULL,
    PRIMARY KEY (schedule, wall_clock)
);
"""))
# Which problems the admin was told about, and when: the same one is reported at most once per period.
migration(("0012_admin_reports", """
CREATE TABLE admin_reports (
    fingerprint TEXT PRIMARY KEY,
    reported_at TEXT NOT NULL
);
"""))
# The latest report of each kind of run ("run", a daemon's schedule), for `status`.
migration(("0013_run_reports", """
CREATE TABLE run_reports (
    kind TEXT PRIMARY KEY,
    at TEXT NOT NULL,
    report TEXT NOT NULL
);
"""))


def _hashed_title_keys(db: sqlite3.Connection) -> None:
    for column in ("folded_hash", "head_hash", "tail_hash"):
        db.execute(f"ALTER TABLE papers ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0")
    for index in ("papers_title_compact", "papers_title_head", "papers_title_tail", "papers_title_folded"):
        db.execute(f"DROP INDEX {index}")
    rows = []
    for paper_id, normal, folded in db.execute("SELECT id, title_norm, title_folded FROM papers").fetchall():
        k = identity.stored_keys(normal, folded)
        rows.append((identity.key_hash(k.folded), identity.key_hash(k.head), identity.key_hash(k.tail), paper_id))
    # The retired columns are emptied, not dropped: DROP COLUMN needs SQLite 3.35.
    db.executemany("UPDATE papers SET folded_hash = ?, head_hash = ?, tail_hash = ?, title_compact = '', "
                   "title_head = '', title_tail = '' WHERE id = ?", rows)
    for column in ("folded_hash", "head_hash", "tail_hash"):
        db.execute(f"CREATE INDEX papers_{column} ON papers({column})")


# Title lookups go by integer hashes of the folded title and of the head and tail blocks (identity.key_hash):
# indexes a fifth of the size, so each digest rewrites far fewer index pages. Compact titles lose their
# index: equal ones share a head block. title_compact, title_head and title_tail are no longer used.
migration(("0014_hashed_title_keys", _hashed_title_keys))


# Nothing looks outbox papers up by paper (every query goes by edition), and papers are never deleted:
# the index only cost each queued edition a few more pages to write.
migration(("0015_drop_outbox_papers_paper_index", """
DROP INDEX outbox_papers_paper;
"""))


# An edition's papers enter the ledger in the statement that marks it sent, whoever marks it: one
# UPDATE, its own transaction, where mark_sent paid for four statements per message (BEGIN, UPDATE,
# INSERT … SELECT, COMMIT). Only a change to 'sent' writes them, so marking a sent edition again adds nothing.
# (`; END` shares a line: Store splits a SQL step at each ';' that ends a line.)
migration(("0016_ledger_by_trigger", """
CREATE TRIGGER outbox_sent_ledger AFTER UPDATE OF state ON outbox
WHEN new.state = 'sent' AND old.state <> 'sent'
BEGIN
    INSERT OR IGNORE INTO deliveries (subscriber_id, paper_id, message_id, sent_at)
    SELECT new.subscriber_id, paper_id, new.message_id, new.updated_at FROM outbox_papers WHERE outbox_id = new.id; END
"""))


# Editions in `sending` leave outbox_due: most are queued as sending and marked sent a moment later,
# and each cost the index a page when queued and another when marked sent (one of the ~8 pages a sent
# message wrote, measured). Queries that use the index say its WHERE too (outbox.py, _INDEXED);
# `sending` rows are found through outbox_subscriber.
migration(("0017_outbox_due_without_sending", """
DROP INDEX outbox_due;
CREATE INDEX outbox_due ON outbox(state, next_attempt) WHERE state <> 'sending';
"""))


# The hourly sending limit counts the editions sent in the last hour, and `status` lists the latest
# failures: with only (state, next_attempt), both read every sent or failed edition ever (millions
# after a year of daily digests; 159 ms a run at a million, measured). Sent and failed editions never have a next
# attempt (mark_sent and mark_failed clear it; made sure of here), so with updated_at last in the same
# index both are a range read of it. Still one index entry per edition, as before.
migration(("0018_outbox_due_by_time", """
UPDATE outbox SET next_attempt = NULL WHERE state IN ('sent', 'failed') AND next_attempt IS NOT NULL;
DROP INDEX outbox_due;
CREATE INDEX outbox_due ON outbox(state, next_attempt, updated_at) WHERE state <> 'sending';
"""))
