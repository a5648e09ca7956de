"""Digests, papers, subscribers, the ledger and source health: the store's tables for ingest and selection."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from json.encoder import encode_basestring_ascii as _json_string
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, NamedTuple

from .. import identity
from ..models import Digest, Entry, Paper, Subscriber

@dataclass(frozen=True)
class IngestResult:
    """What adding one digest did: its id and how many of its papers were new to the store."""

    digest_id: int
    new_papers: int
    known_papers: int
    updated_papers: int = 0  # replacements of known papers (arXiv listings)


_last_iso: tuple[object, str] = (None, "")


def _iso(moment: dt.datetime | dt.date) -> str:
    # A run stamps every row with the same `now`: its text is kept (by identity; datetimes are immutable).
    global _last_iso
    if _last_iso[0] is moment:
        return _last_iso[1]
    text = moment.isoformat()
    _last_iso = (moment, text)
    return text


def _json_list(values: tuple[str, ...]) -> str:
    # What json.dumps gives for a list of strings, at a third of its cost (once per new paper);
    # most papers have no categories or keywords at all.
    return f"[{', '.join(map(_json_string, values))}]" if values else "[]"


# A paper row with its provenance aggregated over the digests it appeared in
# (FROM papers p JOIN paper_digests pd JOIN digests d … GROUP BY p.id).
_PAPER_COLUMNS = ("p.id, p.key, p.title, p.abstract, p.first_seen, COUNT(pd.digest_id), p.authors, p.arxiv_id, "
                  "MAX(pd.upvotes), p.github, p.project_page, p.categories, p.keywords, MAX(d.digest_date), "
                  "MAX(d.ingested_at)")
_PAPERS_FROM = ("FROM papers p JOIN paper_digests pd ON pd.paper_id = p.id "
                "JOIN digests d ON d.id = pd.digest_id ")


def _paper(r: tuple) -> Paper:  # type: ignore[type-arg]
    return Paper(id=r[0], key=r[1], title=r[2], abstract=r[3], first_seen=dt.datetime.fromisoformat(r[4]),
                 digest_count=r[5], authors=tuple(json.loads(r[6])), arxiv_id=r[7], upvotes=r[8],
                 github=r[9], project_page=r[10], categories=tuple(json.loads(r[11])),
                 keywords=tuple(json.loads(r[12])), last_digest_date=dt.date.fromisoformat(r[13]),
                 last_ingested=dt.datetime.fromisoformat(r[14]))


class _Hashes(NamedTuple):
    """A title's hashes as the indexes hold them (identity.key_hash): its plural-folded form, and the
    head and tail blocks a title one edit away can have (the middle one of each three is its own)."""

    folded: int
    heads: tuple[int, ...]
    tails: tuple[int, ...]

    @classmethod
    def of(cls, keys: identity.TitleKeys) -> _Hashes:
        probes = identity.probe_hashes(keys)
        return cls(identity.key_hash(keys.folded), probes[:3], probes[3:])

    def stored(self) -> tuple[int, int, int]:
        """folded_hash, head_hash, tail_hash of the paper's row."""
        return self.folded, self.heads[1], self.tails[1]


class _Candidates:
    """Every stored paper a digest's entries could be, fetched with a few IN queries per digest and then
    matched in Python by identity's rules (one query per entry made ingest 3x slower).

    The indexes hold hashes of the title keys (identity.key_hash): a hash only finds candidates, the
    titles themselves decide. Equal compact titles start alike and have the same length, so the head
    block lookup finds them too and compact titles need no index of their own.
    """

    _COLUMNS = "SELECT id, arxiv_id, title_norm, title_folded, head_hash, tail_hash FROM papers WHERE "

    def __init__(self, db: sqlite3.Connection, entries: Sequence[Entry], hashes: list[_Hashes]) -> None:
        self.arxiv: dict[str, int] = {}
        self.ids: dict[int, str | None] = {}  # paper -> its arXiv id
        self.compact: dict[str, list[int]] = {}  # compact title -> papers
        self.folded: dict[str, list[int]] = {}  # plural-folded title -> papers
        # head or tail block hash -> papers (near_duplicate then compares the titles)
        self.blocks: dict[int, list[tuple[int, identity.TitleKeys]]] = {}
        wanted = {
            "arxiv_id": {e.arxiv_id for e in entries if e.arxiv_id},
            "folded_hash": {h.folded for h in hashes},
            "head_hash": {p for h in hashes for p in h.heads},
            "tail_hash": {p for h in hashes for p in h.tails},
        }
        # When every entry has an arXiv id (a Hugging Face day, an arXiv listing), a title can only
        # lead to a paper without one: a paper with another id is never merged, one with the same id
        # comes by id. Papers with an id are then neither fetched nor filed by title.
        self.ids_only = all(e.arxiv_id for e in entries)
        by_title = " AND arxiv_id IS NULL" if self.ids_only else ""
        rows: dict[int, tuple[str | None, str, str, int, int]] = {}
        for column, values in wanted.items():
            ordered = sorted(values)
            where = "" if column == "arxiv_id" else by_title
            for i in range(0, len(ordered), 500):  # SQLite's bound-parameter limit
                chunk = ordered[i:i + 500]
                for pid, *row in db.execute(f"{self._COLUMNS}{column} IN ({','.join('?' * len(chunk))}){where}",
                                            chunk):
                    rows[pid] = row  # type: ignore[assignment]
        for pid, (arxiv, normal, folded, head, tail) in sorted(rows.items()):
            self.add(pid, arxiv, identity.stored_keys(normal, folded), head, tail)

    def add(self, pid: int, arxiv: str | None, keys: identity.TitleKeys, head: int, tail: int) -> None:
        self.ids[pid] = None
        self.identify(pid, arxiv)
        if arxiv and self.ids_only:
            return  # found by its id or not at all (see __init__)
        self.compact.setdefault(keys.compact, []).append(pid)
        self.folded.setdefault(keys.folded, []).append(pid)
        for k in (head, tail):
            self.blocks.setdefault(k, []).append((pid, keys))

    def identify(self, pid: int, arxiv: str | None) -> None:
        """A paper without an arXiv id takes this one (as its row just did): a later entry with the
        same id is then that paper, and one with another id is not."""
        if arxiv and not self.ids[pid]:
            self.ids[pid] = arxiv
            self.arxiv.setdefault(arxiv, pid)

    def find(self, entry: Entry, keys: identity.TitleKeys, hashed: _Hashes) -> int | None:
        """The paper this entry is, by identity's rules in order (docs/identity.md), or None if new."""
        arxiv, ids = entry.arxiv_id, self.ids
        if arxiv and arxiv in self.arxiv:
            return self.arxiv[arxiv]
        # Below, `ids[pid] in (None, arxiv)`: two different arXiv ids are two papers.
        # The normalised title is covered by its compact form.
        for pid in (*self.compact.get(keys.compact, ()), *self.folded.get(keys.folded, ())):
            if not arxiv or ids[pid] in (None, arxiv):
                return pid
        for k in (*hashed.heads, *hashed.tails):
            for pid, theirs in self.blocks.get(k, ()):
                if (not arxiv or ids[pid] in (None, arxiv)) and identity.near_duplicate(keys, theirs):
                    return pid
        return None


class PapersMixin:
    """Store methods for ingest and selection; `db` and `transaction()` come from Store."""

    db: sqlite3.Connection
    transaction: Callable[[], AbstractContextManager[sqlite3.Connection]]

    # -- digests and papers ------------------------------------------------------------------

    def has_digest(self, sha256: str) -> bool:
        return self.db.execute("SELECT 1 FROM digests WHERE sha256 = ?", (sha256,)).fetchone() is not None

    def add_digest(self, path: str, sha256: str, digest: Digest, ingested_at: dt.datetime,
                   source: str = "files") -> IngestResult:
        """Store a parsed digest and its papers in one transaction, each entry matched to a known paper
        by identity's rules (arXiv id, title, near-identical title) or added as a new one."""
        new = known = updated = 0
        with self.transaction() as db:
            digest_id = db.execute(
                "INSERT INTO digests (path, sha256, format, digest_date, ingested_at, entries, source) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (path, sha256, digest.format, _iso(digest.date), _iso(ingested_at), len(digest.entries), source),
            ).lastrowid
            assert digest_id is not None
            seen: set[int] = set()
            links: list[tuple[int, int, int, int | None]] = []
            all_keys = [identity.title_keys(e.title) for e in digest.entries]
            hashes = [_Hashes.of(k) for k in all_keys]
            known_papers = _Candidates(db, digest.entries, hashes)
            # New papers are inserted in one executemany per digest, with ids we hand out ourselves
            # (safe: BEGIN IMMEDIATE holds the write lock); a row-by-row INSERT cost a third of ingest.
            next_id = db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM papers").fetchone()[0]
            pending: list[tuple[Any, ...]] = []
            now = _iso(ingested_at)
            for position, (entry, keys, hashed) in enumerate(zip(digest.entries, all_keys, hashes)):
                paper_id = known_papers.find(entry, keys, hashed)
                if paper_id is not None and pending:
                    self._insert_papers(db, pending)  # an update below must see every row
                if entry.kind == "replacement":
                    # A revised version: refresh what we know, but it is neither new nor "seen again".
                    if paper_id is not None:
                        self._update_paper(db, paper_id, entry, ingested_at, replace=True)
                        known_papers.identify(paper_id, entry.arxiv_id)
                        updated += 1
                    continue
                if paper_id is None:
                    paper_id, next_id = next_id, next_id + 1
                    pending.append(self._paper_row(paper_id, entry, keys, hashed, now))
                    # A later entry may be the same paper.
                    known_papers.add(paper_id, entry.arxiv_id, keys, hashed.heads[1], hashed.tails[1])
                    new += 1
                elif paper_id not in seen:
                    self._update_paper(db, paper_id, entry, ingested_at, replace=False)
                    known_papers.identify(paper_id, entry.arxiv_id)
                    known += 1
                seen.add(paper_id)
                links.append((paper_id, digest_id, position, entry.upvotes))
            self._insert_papers(db, pending)
            db.executemany("INSERT OR IGNORE INTO paper_digests (paper_id, digest_id, position, upvotes) "
                           "VALUES (?, ?, ?, ?)", links)
        return IngestResult(digest_id, new, known, updated)

    @staticmethod
    def _paper_row(paper_id: int, entry: Entry, keys: identity.TitleKeys, hashed: _Hashes,
                   now: str) -> tuple[Any, ...]:
        return (paper_id, identity.canonical_key(keys.normal, entry.arxiv_id), entry.title,
                entry.abstract, now, entry.arxiv_id, keys.normal, keys.folded, *hashed.stored(),
                _json_list(entry.authors), _json_list(entry.categories), _json_list(entry.keywords), entry.github,
                entry.project_page, now)

    @staticmethod
    def _insert_papers(db: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
        """Insert the pending new papers and empty the list."""
        db.executemany(
            "INSERT INTO papers (id, key, title, abstract, first_seen, arxiv_id, title_norm, title_folded, "
            "folded_hash, head_hash, tail_hash, authors, categories, keywords, github, project_page, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        rows.clear()

    @staticmethod
    def _update_paper(db: sqlite3.Connection, paper_id: int, entry: Entry, now: dt.datetime, *,
                      replace: bool) -> None:
        """Fill what the paper lacks from this entry; a replacement also overwrites title and abstract."""
        row = db.execute("SELECT arxiv_id, abstract, authors, categories, keywords, github, project_page "
                         "FROM papers WHERE id = ?", (paper_id,)).fetchone()
        arxiv, abstract, authors, categories, keywords, github, project = row
        if entry.arxiv_id and not arxiv:
            db.execute("UPDATE papers SET arxiv_id = ?, key = ? WHERE id = ?",
                       (entry.arxiv_id, identity.paper_key(entry.title, entry.arxiv_id), paper_id))
        if replace and entry.title:
            k = identity.title_keys(entry.title)
            db.execute("UPDATE papers SET title = ?, title_norm = ?, title_folded = ?, folded_hash = ?, "
                       "head_hash = ?, tail_hash = ? WHERE id = ?",
                       (entry.title, k.normal, k.folded, *_Hashes.of(k).stored(), paper_id))
        db.execute(
            "UPDATE papers SET abstract = ?, authors = ?, categories = ?, keywords = ?, github = ?, "
            "project_page = ?, updated_at = ? WHERE id = ?",
            (entry.abstract if entry.abstract and (replace or not abstract) else abstract,
             json.dumps(list(entry.authors)) if entry.authors and (replace or authors == "[]") else authors,
             json.dumps(list(entry.categories)) if entry.categories and categories == "[]" else categories,
             json.dumps(list(entry.keywords)) if entry.keywords and keywords == "[]" else keywords,
             github or entry.github, project or entry.project_page, _iso(now), paper_id))

    def candidate_papers(self, since: dt.datetime) -> list[Paper]:
        """Papers that appeared in a digest ingested at or after `since` (the selection window)."""
        rows = self.db.execute(
            f"SELECT {_PAPER_COLUMNS} {_PAPERS_FROM} WHERE p.id IN (SELECT pd2.paper_id FROM paper_digests pd2 "
            "JOIN digests d2 ON d2.id = pd2.digest_id WHERE d2.ingested_at >= ?) GROUP BY p.id ORDER BY p.id",
            (_iso(since),))
        return [_paper(r) for r in rows]

    def papers_seen_since(self, since: dt.date | None) -> list[Paper]:
        """Every paper listed in a digest dated `since` or later (all papers when None)."""
        rows = self.db.execute(
            f"SELECT {_PAPER_COLUMNS} {_PAPERS_FROM} WHERE p.id IN (SELECT pd2.paper_id FROM paper_digests pd2 "
            "JOIN digests d2 ON d2.id = pd2.digest_id WHERE d2.digest_date >= ?) GROUP BY p.id ORDER BY p.id",
            (_iso(since or dt.date.min),))
        return [_paper(r) for r in rows]

    def digest_dates_of(self, paper_ids: Iterable[int]) -> dict[int, list[str]]:
        """The dates of the digests each paper appeared in, oldest first."""
        ids = list(paper_ids)
        out: dict[int, list[str]] = {i: [] for i in ids}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            for pid, date in self.db.execute(
                    "SELECT DISTINCT pd.paper_id, d.digest_date FROM paper_digests pd JOIN digests d "
                    f"ON d.id = pd.digest_id WHERE pd.paper_id IN ({','.join('?' * len(chunk))}) "
                    "ORDER BY d.digest_date", chunk):
                out[pid].append(date)
        return out

    def papers_by_ids(self, paper_ids: Sequence[int]) -> list[Paper]:
        """These papers, in this order (an id that no longer exists is left out)."""
        ids = list(paper_ids)
        found: dict[int, Paper] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            for r in self.db.execute(f"SELECT {_PAPER_COLUMNS} {_PAPERS_FROM} WHERE p.id IN "
                                     f"({','.join('?' * len(chunk))}) GROUP BY p.id", chunk):
                paper = _paper(r)
                found[paper.id] = paper
        return [found[i] for i in ids if i in found]

    def earliest_window(self, now: dt.datetime) -> dt.datetime:
        """The oldest "papers since" any active subscriber has: joined_at less backfill_days."""
        earliest = now
        # DISTINCT: subscribers synced together share their joined_at, so there are few pairs to parse
        # (10,000 parsed one by one took ~60 ms of a run's start).
        for joined, backfill in self.db.execute(
                "SELECT DISTINCT joined_at, backfill_days FROM subscribers WHERE active = 1"):
            earliest = min(earliest, dt.datetime.fromisoformat(joined) - dt.timedelta(days=backfill))
        return earliest

    def already_sent(self, subscriber_id: int, paper_ids: Iterable[int]) -> set[int]:
        """Which of these papers the ledger says this subscriber has been sent."""
        ids = list(paper_ids)
        sent: set[int] = set()
        for i in range(0, len(ids), 500):  # stay under SQLite's bound-parameter limit
            chunk = ids[i:i + 500]
            sent.update(r[0] for r in self.db.execute(
                f"SELECT paper_id FROM deliveries WHERE subscriber_id = ? AND paper_id IN "
                f"({','.join('?' * len(chunk))})", (subscriber_id, *chunk)))
        return sent

    # -- subscribers -------------------------------------------------------------------------

    def sync_subscribers(self, subscribers: Iterable[Subscriber], now: dt.datetime) -> int:
        """Make the configured list the active one: upsert each, deactivate the ones not listed.

        Streams the iterable (a CSV of any size) inside one transaction, so a config error halfway
        leaves the previous list untouched.
        """
        count = 0

        def rows() -> Iterator[tuple[object, ...]]:
            nonlocal count
            for s in subscribers:
                count += 1
                yield (s.email, s.name, json.dumps(list(s.topics)), s.query, s.max_papers, s.min_papers, s.exclude,
                       s.backfill_days, s.schedule, s.timezone, joined, generation)

        joined = _iso(now)
        with self.transaction() as db:
            generation = db.execute("SELECT COALESCE(MAX(sync_generation), 0) + 1 FROM subscribers").fetchone()[0]
            # One executemany over a generator: still streamed, without a call from Python per row.
            db.executemany(
                "INSERT INTO subscribers (email, name, topics, query, max_papers, min_papers, exclude, "
                "backfill_days, schedule, timezone, joined_at, active, sync_generation) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?) "
                "ON CONFLICT (email) DO UPDATE SET name = excluded.name, topics = excluded.topics, "
                "query = excluded.query, max_papers = excluded.max_papers, min_papers = excluded.min_papers, "
                "exclude = excluded.exclude, backfill_days = excluded.backfill_days, "
                "schedule = excluded.schedule, timezone = excluded.timezone, active = 1, "
                "sync_generation = excluded.sync_generation", rows())
            db.execute("UPDATE subscribers SET active = 0 WHERE sync_generation != ?", (generation,))
        return count

    _SUBSCRIBER = ("SELECT id, email, name, topics, query, max_papers, min_papers, exclude, backfill_days, "
                   "joined_at, schedule, timezone FROM subscribers WHERE active = 1 ")

    @staticmethod
    def _subscriber(r: tuple) -> tuple[int, Subscriber]:  # type: ignore[type-arg]
        return r[0], Subscriber(email=r[1], name=r[2], topics=tuple(json.loads(r[3])), query=r[4],
                                max_papers=r[5], min_papers=r[6], exclude=r[7], backfill_days=r[8],
                                joined_at=dt.datetime.fromisoformat(r[9]), schedule=r[10], timezone=r[11])

    def schedules(self) -> list[tuple[str, str]]:
        """The distinct (own cron, own time zone) pairs of active subscribers; ("", "") is the default."""
        return [tuple(r) for r in self.db.execute(  # type: ignore[misc]
            "SELECT DISTINCT schedule, timezone FROM subscribers WHERE active = 1 ORDER BY 1, 2")]

    def schedule_done(self, schedule: str, wall_clock: str) -> bool:
        return self.db.execute("SELECT 1 FROM schedule_runs WHERE schedule = ? AND wall_clock = ?",
                               (schedule, wall_clock)).fetchone() is not None

    def mark_schedule_done(self, schedule: str, wall_clock: str, now: dt.datetime) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO schedule_runs VALUES (?, ?, ?)", (schedule, wall_clock, _iso(now)))

    def last_schedule_run(self, schedule: str) -> str | None:
        row = self.db.execute("SELECT MAX(wall_clock) FROM schedule_runs WHERE schedule = ? AND "
                              "wall_clock NOT LIKE 'started %'", (schedule,)).fetchone()
        return row[0]

    # A schedule's first sighting is a row "started <iso time>" in schedule_runs: a daemon never
    # catches up fires from before a schedule existed, but does resume its first interrupted edition.
    def schedule_started(self, schedule: str) -> dt.datetime | None:
        row = self.db.execute("SELECT MIN(wall_clock) FROM schedule_runs WHERE schedule = ? AND "
                              "wall_clock LIKE 'started %'", (schedule,)).fetchone()
        return dt.datetime.fromisoformat(row[0].removeprefix("started ")) if row[0] else None

    def mark_schedule_started(self, schedule: str, now: dt.datetime) -> None:
        self.mark_schedule_done(schedule, f"started {_iso(now)}", now)

    def active_count(self) -> int:
        """How many subscribers are active (counts() also scans the whole ledger)."""
        return int(self.db.execute("SELECT COUNT(*) FROM subscribers WHERE active = 1").fetchone()[0])

    def active_subscribers(self, schedule: tuple[str, str] | None = None) -> Iterator[tuple[int, Subscriber]]:
        """Active subscribers in id order (of one schedule when given), read in pages so a large list
        is never held in memory."""
        last = 0
        where, extra = ("AND schedule = ? AND timezone = ? ", tuple(schedule)) if schedule else ("", ())
        while True:
            rows = self.db.execute(self._SUBSCRIBER + where + "AND id > ? ORDER BY id LIMIT 500",
                                   (*extra, last)).fetchall()
            if not rows:
                return
            yield from map(self._subscriber, rows)
            last = rows[-1][0]

    def subscriber_by_id(self, subscriber_id: int) -> Subscriber | None:
        """An active subscriber by row id (None once they left the config)."""
        row = self.db.execute(self._SUBSCRIBER + "AND id = ?", (subscriber_id,)).fetchone()
        return self._subscriber(row)[1] if row else None

    def find_subscriber(self, email: str) -> tuple[int, Subscriber] | None:
        row = self.db.execute(self._SUBSCRIBER + "AND email = ?", (email,)).fetchone()
        return self._subscriber(row) if row else None

    # -- the ledger --------------------------------------------------------------------------

    # -- source health -----------------------------------------------------------------------

    def record_poll(self, source: str, now: dt.datetime, *, arrived: int, new_papers: int,
                    error: str | None = None) -> None:
        """Remember what one look at a source found: how many digests arrived, how many new papers."""
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO source_status (source) VALUES (?)", (source,))
            db.execute("UPDATE source_status SET last_poll = ?, last_error = ? WHERE source = ?",
                       (_iso(now), error, source))
            if arrived:
                db.execute("UPDATE source_status SET last_arrival = ? WHERE source = ?", (_iso(now), source))
            if new_papers:
                db.execute("UPDATE source_status SET last_new_papers = ? WHERE source = ?", (_iso(now), source))

    def cursor(self, source: str) -> tuple[int, int] | None:
        """(uidvalidity, last uid) a polled source reached, or None before its first poll."""
        row = self.db.execute("SELECT uidvalidity, last_uid FROM source_cursor WHERE source = ?", (source,)).fetchone()
        return (row[0], row[1]) if row else None

    def set_cursor(self, source: str, cursor: tuple[int, int]) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO source_cursor VALUES (?, ?, ?) ON CONFLICT (source) DO UPDATE SET "
                       "uidvalidity = excluded.uidvalidity, last_uid = excluded.last_uid", (source, *cursor))

    def source_status(self) -> dict[str, dict[str, str | None]]:
        """Per source: last poll, last arrival, last time new papers came, last error, last digest date."""
        out: dict[str, dict[str, str | None]] = {}
        for source, poll, arrival, new, error in self.db.execute(
                "SELECT source, last_poll, last_arrival, last_new_papers, last_error FROM source_status"):
            out[source] = {"last_poll": poll, "last_arrival": arrival, "last_new_papers": new,
                           "last_error": error, "last_digest_date": None, "last_ingest": None}
        for source, date, ingested in self.db.execute(
                "SELECT source, MAX(digest_date), MAX(ingested_at) FROM digests GROUP BY source"):
            entry = out.setdefault(source, {"last_poll": None, "last_arrival": None, "last_new_papers": None,
                                            "last_error": None})
            entry["last_digest_date"], entry["last_ingest"] = date, ingested
        return out

    def counts(self) -> dict[str, int]:
        """Totals for `status`."""
        q: Callable[[str], int] = lambda sql: self.db.execute(sql).fetchone()[0]
        return {
            "digests": q("SELECT COUNT(*) FROM digests"),
            "entries": q("SELECT COUNT(*) FROM paper_digests"),
            "papers": q("SELECT COUNT(*) FROM papers"),
            "subscribers": self.active_count(),
            # Counted in outbox_due, not as distinct message ids over the whole ledger (a sort of
            # millions of rows after a year).
            "messages_sent": q("SELECT COUNT(*) FROM outbox WHERE state <> 'sending' AND state = 'sent'"),
            # The ledger is append-only (nothing deletes from it, and an ignored INSERT takes no
            # rowid: tests/test_store.py checks both), so its largest rowid is its count, read from
            # the end of the table instead of counting tens of millions of rows after a year.
            "papers_sent": q("SELECT COALESCE(MAX(rowid), 0) FROM deliveries"),
        }

    def last_ingest(self) -> tuple[str | None, str | None]:
        """(latest digest date, latest ingest time) or Nones when nothing was ingested yet."""
        row = self.db.execute("SELECT MAX(digest_date), MAX(ingested_at) FROM digests").fetchone()
        return row[0], row[1]
