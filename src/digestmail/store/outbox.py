"""The outbox and suppressions: every edition's state, so a crash or a refusal never loses or doubles mail.

    queued --> sending --> sent                (the ledger rows are written in the same transaction)
                  |------> deferred --> (due) --> sending ...   (4xx, timeouts, dropped connections)
                  '------> failed               (5xx, or deferred for longer than max_retry_age)

A row left in `sending` by a crash is queued again at the next start: the message may have reached
the server before the crash, so that is at most one duplicate per crash, and never a loss.

During a delivery (`recording_sends()`), each 250 is recorded at once in the sent journal, a file
beside the store (STORE-sent: a line "outbox-id time" per message, one write), and reaches the
tables with the store's next transaction, at the latest SENT_BATCH messages later. A write to a file
survives the process as well as a transaction does in WAL with synchronous=NORMAL (neither is synced
to the disk), and the next start's recover_sending marks what the journal holds as sent before it
queues the rest again: the bound stays one duplicate per crash. A transaction per message cost ~70 µs
of CPU (its commit, and the ledger rows); in batches of 32 (a run queues editions 32 at a time, and
that transaction takes the marks along), ~42 µs a message, and ~27 in batches of 100.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from ..errors import StoreError
from .papers import _iso

PENDING = ("queued", "sending", "deferred")
# outbox_due's WHERE (migration 0017): SQLite uses a partial index only for a query that states it.
_INDEXED = "state <> 'sending'"
# Rows in `sending` are not in outbox_due: outbox_subscriber finds them, one short look per subscriber
# (every outbox row has one: a foreign key), where a scan would read every edition ever sent.
_SENDING = "state = 'sending' AND subscriber_id IN (SELECT id FROM subscribers)"
SENT_BATCH = 64  # sends recorded in the journal before their transaction is made, at most
_MARK_SENT = "UPDATE outbox SET state = 'sent', updated_at = ?, next_attempt = NULL, last_error = NULL WHERE id = ?"


@dataclass(frozen=True)
class Queued:
    """An edition about to enter the outbox."""

    key: str
    subscriber_id: int
    message_id: str
    created: dt.datetime
    paper_ids: tuple[int, ...]


@dataclass(frozen=True)
class OutboxRow:
    id: int
    edition_key: str
    subscriber_id: int
    message_id: str
    created_at: dt.datetime
    state: str
    attempts: int
    paper_ids: tuple[int, ...]


class OutboxMixin:
    """Store methods for delivery; `db` and `transaction()` come from Store."""

    db: sqlite3.Connection
    path: Path
    transaction: Callable[[], AbstractContextManager[sqlite3.Connection]]
    _sent: list[tuple[int, str]]
    _journal: int | None

    def existing_editions(self, keys: Sequence[str]) -> set[str]:
        """Which of these edition keys are in the outbox already (one query for a batch of subscribers)."""
        return {k for (k,) in self.db.execute(
            f"SELECT edition_key FROM outbox WHERE edition_key IN ({','.join('?' * len(keys))})", keys)}

    def queue_edition(self, key: str, subscriber_id: int, message_id: str, created: dt.datetime,
                      paper_ids: Iterable[int], *, sending: bool = False) -> int | None:
        """Queue one edition with its papers (already `sending`, one transaction saved, when it is sent
        right away); None when that edition key exists already (a re-run)."""
        return self.queue_editions([Queued(key, subscriber_id, message_id, created, tuple(paper_ids))],
                                   sending=sending)[0]

    def queue_editions(self, editions: Sequence[Queued], *, sending: bool = False) -> list[int | None]:
        """Queue editions in one transaction (a write transaction costs ~0.1 ms, most of it whatever
        the batch: pages rewritten once, not once per edition); for each its outbox id, or None when
        its key exists already. Queued as `sending`, an edition a crash catches before its turn is
        sent at the next start like any interrupted one: late, never lost or doubled."""
        state, attempts = ("sending", 1) if sending else ("queued", 0)
        oids: list[int | None] = []
        papers: list[tuple[int, int, int]] = []
        with self.transaction() as db:
            for e in editions:
                cur = db.execute(
                    "INSERT OR IGNORE INTO outbox (edition_key, subscriber_id, message_id, created_at, state, "
                    "attempts, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (e.key, e.subscriber_id, e.message_id, _iso(e.created), state, attempts, _iso(e.created)))
                if not cur.rowcount:
                    oids.append(None)
                    continue
                oid = cur.lastrowid
                assert oid is not None
                papers += [(oid, p, i) for i, p in enumerate(e.paper_ids)]
                oids.append(oid)
            db.executemany("INSERT INTO outbox_papers VALUES (?, ?, ?)", papers)  # one call for the batch
        return oids

    def _set(self, db: sqlite3.Connection, oid: int, state: str, now: dt.datetime, **extra: object) -> None:
        cols = "".join(f", {k} = ?" for k in extra)
        db.execute(f"UPDATE outbox SET state = ?, updated_at = ?{cols} WHERE id = ?",
                   (state, _iso(now), *extra.values(), oid))

    def mark_sending(self, oid: int, now: dt.datetime) -> None:
        with self.transaction() as db:
            self._set(db, oid, "sending", now)
            db.execute("UPDATE outbox SET attempts = attempts + 1 WHERE id = ?", (oid,))

    def mark_sent(self, oid: int, now: dt.datetime) -> None:
        """The server said 250: the edition is sent and its papers enter the ledger, together (the
        trigger outbox_sent_ledger writes them, within the statement's transaction). Inside
        recording_sends(), recorded in the sent journal now and in the tables with the next
        transaction (see the module's doc)."""
        at = _iso(now)
        if self._journal is not None:
            try:
                os.write(self._journal, b"%d %s\n" % (oid, at.encode()))
            except OSError:
                pass  # (a full disk, say): recorded by a transaction of its own, as outside
            else:
                self._sent.append((oid, at))
                if len(self._sent) >= SENT_BATCH:
                    self.commit_sent()
                return
        self.db.execute(_MARK_SENT, (at, oid))

    @property
    def sent_journal(self) -> Path:
        return self.path.with_name(self.path.name + "-sent")

    @contextlib.contextmanager
    def recording_sends(self) -> Iterator[None]:
        """A delivery: mark_sent records in the sent journal, and what it recorded is in the tables
        when this ends (or, if that fails, at the next start's recover_sending)."""
        try:
            self._journal = os.open(self.sent_journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError:  # (a read-only folder, say): a transaction per message, as outside
            yield
            return
        failed = True
        try:
            yield
            failed = False
        finally:
            try:
                self.commit_sent()
            except StoreError:
                if not failed:
                    raise  # (else the delivery's own error says more; the journal keeps the sends)
            finally:
                os.close(self._journal)
                self._journal = None
                if not self._sent:
                    self._sent_written(0)

    def commit_sent(self) -> None:
        """Write the sends mark_sent has recorded only in the journal (a transaction does it first thing)."""
        if self._sent:
            try:
                with self.transaction():
                    pass
            except sqlite3.Error as exc:
                raise StoreError(f"cannot record sent messages: {exc}", where=str(self.path),
                                 hint=f"they stay in {self.sent_journal.name}; the next run records them") from None

    def _write_sent(self, db: sqlite3.Connection, sent: list[tuple[int, str]]) -> None:
        db.executemany(_MARK_SENT, [(at, oid) for oid, at in sent])

    def _sent_written(self, n: int) -> None:
        """The first n recorded sends are in the tables: the journal is emptied once none is left."""
        del self._sent[:n]
        if self._sent:
            return
        if self._journal is not None:
            os.ftruncate(self._journal, 0)  # (O_APPEND: the next line goes to the new end)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.sent_journal)

    def _replay_sent(self) -> None:
        """Take up the marks a journal holds that its process never wrote to the tables (it was killed,
        or its last transaction failed). A line cut short (a crash in the middle of its write) or
        garbled is skipped: its message is requeued."""
        try:
            data = self.sent_journal.read_bytes()
        except FileNotFoundError:
            return
        for line in data.split(b"\n"):
            oid, _, at = line.partition(b" ")
            try:
                when = dt.datetime.fromisoformat(at.decode("ascii"))
                if oid.isdigit() and when.tzinfo is not None:
                    self._sent.append((int(oid), _iso(when)))
            except (UnicodeDecodeError, ValueError):
                continue
        if not self._sent:
            self._sent_written(0)

    def withdraw(self, oids: Sequence[int]) -> None:
        """Take back editions queued as `sending` but never handed over (the run is stopping): as if
        they had not been queued, so the next run chooses those subscribers' papers afresh."""
        if oids:
            taken = f"SELECT id FROM outbox WHERE state = 'sending' AND id IN ({','.join('?' * len(oids))})"
            with self.transaction() as db:
                db.execute(f"DELETE FROM outbox_papers WHERE outbox_id IN ({taken})", oids)
                db.execute(f"DELETE FROM outbox WHERE id IN ({taken})", oids)

    def mark_deferred(self, oid: int, now: dt.datetime, until: dt.datetime, error: str) -> None:
        with self.transaction() as db:
            self._set(db, oid, "deferred", now, next_attempt=_iso(until), last_error=error)

    def mark_failed(self, oid: int, now: dt.datetime, error: str) -> None:
        with self.transaction() as db:
            self._set(db, oid, "failed", now, next_attempt=None, last_error=error)

    def recover_sending(self, now: dt.datetime) -> int:
        """Queue again what a crash left in `sending`, less what its sent journal says was sent
        (marked sent first); returns how many."""
        self._replay_sent()
        with self.transaction() as db:
            return db.execute("UPDATE outbox SET state = 'queued', updated_at = ?, last_error = "
                              f"'interrupted while sending; retried' WHERE {_SENDING}",
                              (_iso(now),)).rowcount

    def due(self, now: dt.datetime) -> list[OutboxRow]:
        """Queued editions, and deferred ones whose time has come, oldest first."""
        rows = self.db.execute(
            "SELECT id, edition_key, subscriber_id, message_id, created_at, state, attempts FROM outbox "
            f"WHERE {_INDEXED} AND state IN ('queued', 'deferred') AND (state = 'queued' OR next_attempt <= ?) "
            "ORDER BY id",  # not an OR of both states: SQLite would scan the table, unable to use outbox_due
            (_iso(now),)).fetchall()
        out = []
        for r in rows:
            papers = tuple(p for (p,) in self.db.execute(
                "SELECT paper_id FROM outbox_papers WHERE outbox_id = ? ORDER BY position", (r[0],)))
            out.append(OutboxRow(r[0], r[1], r[2], r[3], dt.datetime.fromisoformat(r[4]), r[5], r[6], papers))
        return out

    def taken_papers(self, subscriber_id: int, from_paper_id: int = 0) -> set[int]:
        """Papers this subscriber was sent, or that wait in an edition on its way to them (queued,
        sending, deferred): never picked again. Only ids from `from_paper_id` on: a run's candidates
        are recent papers, and the ledger's key (subscriber, paper) makes that a short range scan."""
        return self.taken_papers_of([subscriber_id], from_paper_id).get(subscriber_id, set())

    def taken_papers_of(self, subscriber_ids: Sequence[int], from_paper_id: int = 0) -> dict[int, set[int]]:
        """taken_papers for a batch of subscribers in one statement (a delivery chooses a batch at a
        time): subscriber id → papers, for those that have any."""
        out: dict[int, set[int]] = {}
        marks = ",".join("?" * len(subscriber_ids))
        for sid, paper in self.db.execute(
                f"SELECT subscriber_id, paper_id FROM deliveries WHERE subscriber_id IN ({marks}) AND paper_id >= ? "
                "UNION ALL SELECT o.subscriber_id, op.paper_id FROM outbox o JOIN outbox_papers op ON op.outbox_id = o.id "
                f"WHERE o.subscriber_id IN ({marks}) AND o.state IN ({','.join('?' * len(PENDING))})",
                (*subscriber_ids, from_paper_id, *subscriber_ids, *PENDING)):
            found = out.get(sid)
            if found is None:
                found = out[sid] = set()
            found.add(paper)
        return out

    def sent_since(self, moment: dt.datetime) -> int:
        """Editions marked sent at or after `moment` (what an hourly sending limit counts)."""
        # A sent edition has no next attempt: stated, so this is a range of outbox_due (migration 0018).
        return int(self.db.execute(f"SELECT COUNT(*) FROM outbox WHERE {_INDEXED} AND state = 'sent' AND "
                                   "next_attempt IS NULL AND updated_at >= ?", (_iso(moment),)).fetchone()[0])

    def outbox_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(("queued", "sending", "sent", "deferred", "failed"), 0)
        counts.update(self.db.execute(f"SELECT state, COUNT(*) FROM outbox WHERE {_INDEXED} GROUP BY state"))
        counts["sending"] = self.db.execute(f"SELECT COUNT(*) FROM outbox WHERE {_SENDING}").fetchone()[0]
        return counts

    def failures(self, limit: int = 50) -> list[dict[str, str]]:
        """The latest failed editions with their addresses and errors, for the report and status."""
        return [{"email": e, "error": err, "at": at} for e, err, at in self.db.execute(
            "SELECT s.email, o.last_error, o.updated_at FROM outbox o JOIN subscribers s ON s.id = o.subscriber_id "
            f"WHERE o.{_INDEXED} AND o.state = 'failed' AND o.next_attempt IS NULL ORDER BY o.updated_at DESC "
            "LIMIT ?", (limit,))]

    # -- suppressions --------------------------------------------------------------------------

    def suppress(self, email: str, reason: str, detail: str, now: dt.datetime) -> None:
        """Never send to this address again (a 5xx refusal, an unsubscribe), whatever the config says."""
        with self.transaction() as db:
            db.execute("INSERT INTO suppressions VALUES (?, ?, ?, ?) ON CONFLICT (email) DO UPDATE SET "
                       "reason = excluded.reason, detail = excluded.detail, at = excluded.at",
                       (email, reason, detail, _iso(now)))

    def unsuppress(self, email: str) -> bool:
        with self.transaction() as db:
            return db.execute("DELETE FROM suppressions WHERE email = ?", (email,)).rowcount > 0

    def suppression(self, email: str) -> str | None:
        row = self.db.execute("SELECT reason FROM suppressions WHERE email = ?", (email,)).fetchone()
        return row[0] if row else None

    def suppressed_among(self, emails: Sequence[str]) -> dict[str, str]:
        """Those of these addresses that are suppressed (compared as the table does, ASCII case
        folded), each as given → its reason: one query for a batch of subscribers."""
        if not emails:
            return {}
        return dict(self.db.execute(
            f"WITH given(email) AS (VALUES {','.join(['(?)'] * len(emails))}) "
            "SELECT given.email, s.reason FROM suppressions s JOIN given ON s.email = given.email", emails))

    def suppressions(self) -> list[dict[str, str]]:
        return [{"email": e, "reason": r, "detail": d or "", "at": a} for e, r, d, a in
                self.db.execute("SELECT email, reason, detail, at FROM suppressions ORDER BY at")]

    # -- admin reports --------------------------------------------------------------------------

    def unreported(self, fingerprints: Iterable[str], now: dt.datetime, every: dt.timedelta) -> set[str]:
        """The fingerprints not reported within `every` before now."""
        fresh = set()
        for fp in fingerprints:
            row = self.db.execute("SELECT reported_at FROM admin_reports WHERE fingerprint = ?", (fp,)).fetchone()
            if row is None or now - dt.datetime.fromisoformat(row[0]) >= every:
                fresh.add(fp)
        return fresh

    def mark_reported(self, fingerprints: Iterable[str], now: dt.datetime) -> None:
        with self.transaction() as db:
            db.executemany("INSERT INTO admin_reports VALUES (?, ?) ON CONFLICT (fingerprint) DO UPDATE SET "
                           "reported_at = excluded.reported_at", [(fp, _iso(now)) for fp in fingerprints])

    # -- run reports ----------------------------------------------------------------------------

    def save_report(self, kind: str, report: dict[str, object], now: dt.datetime) -> None:
        """Keep the latest report of this kind of run (what `status` shows as the last run)."""
        with self.transaction() as db:
            db.execute("INSERT INTO run_reports VALUES (?, ?, ?) ON CONFLICT (kind) DO UPDATE SET "
                       "at = excluded.at, report = excluded.report",
                       (kind, _iso(now), json.dumps(report, default=str)))

    def last_reports(self) -> dict[str, dict[str, object]]:
        return {kind: {"at": at, **json.loads(report)} for kind, at, report in
                self.db.execute("SELECT kind, at, report FROM run_reports ORDER BY at")}
