"""Delivery through the outbox: queue each edition, hand it over, record the outcome (never lose, never double).

For each subscriber with enough new papers, an edition is queued in the outbox (its key makes a
re-run of the same cycle a no-op), marked `sending`, handed to the transport, and on the server's
acceptance marked `sent` together with its ledger rows. A temporary failure defers it with
exponential backoff and jitter; a permanent one fails it and suppresses the address. Deferred and
crash-interrupted editions are rebuilt from their stored papers and moment, so a retry sends the
same Message-ID and Date.
"""

from __future__ import annotations

import collections
import datetime as dt
import itertools
import logging
import random
import threading
from collections.abc import Callable, Iterable, Iterator, Sized
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from . import collect
from .buildpool import MIN_EDITIONS, BuildPool, processes_for, prompt_readers
from .config import Config, Retry
from .editions import Builder, Recipe
from .errors import DeliveryError, DigestmailError
from .message import Envelope
from .models import Edition, Pick, Subscriber
from .select import edition_key
from .store import OutboxRow, Queued, Store
from .transport import Outgoing, Transport

log = logging.getLogger("digestmail")
T = TypeVar("T")


LISTED = 1_000  # addresses listed per outcome in a report; the counts are always complete


@dataclass
class DeliveryReport:
    """What a delivery did: complete counts, and the first LISTED addresses of each outcome (a run for
    100,000 subscribers keeps its memory for the work, not for a list of everyone it mailed)."""

    sent: list[dict[str, Any]] = field(default_factory=list)
    deferred: list[dict[str, str]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)  # no email, and why
    counts: collections.Counter[str] = field(default_factory=collections.Counter)
    skipped_by_reason: collections.Counter[str] = field(default_factory=collections.Counter)
    recovered: int = 0  # editions a crash had left in `sending`

    def add(self, outcome: str, entry: dict[str, Any]) -> None:
        """Count one `sent`, `deferred`, `failed` or `skipped` entry, and list it while there is room."""
        self.counts[outcome] += 1
        if outcome == "skipped":
            self.skipped_by_reason[entry["reason"].split(" (")[0]] += 1
        elif outcome == "sent" and entry.get("retry"):
            self.counts["retried"] += 1
        listed: list[dict[str, Any]] = getattr(self, outcome)
        if len(listed) < LISTED:
            listed.append(entry)


BATCH = 32  # subscribers looked up and queued together (a few ms of choosing: `stop` is still prompt)
AHEAD = 8  # editions chosen and handed to the build processes before the transport asks for them


def ahead(items: Iterable[T], n: int, when: Callable[[], bool] = lambda: True) -> Iterator[T]:
    """The same items, each produced up to `n` items before it is asked for while `when()` holds
    (so builds in other processes run in parallel with the sending)."""
    waiting: collections.deque[T] = collections.deque()
    for item in items:
        waiting.append(item)
        if len(waiting) > (n if when() else 0):
            yield waiting.popleft()
    yield from waiting


def next_attempt(attempts: int, retry: Retry, now: dt.datetime, rng: random.Random) -> dt.datetime:
    """base * 2^(attempts-1), capped at max, times a jitter in [0.8, 1.2) so retries do not bunch up."""
    delay = min(retry.base * (2 ** max(attempts - 1, 0)), retry.max)
    return now + delay * (0.8 + 0.4 * rng.random())


@dataclass
class Job:
    """One edition on its way: its outbox row, and what the report says once it is sent."""

    oid: int
    edition: Edition
    attempts: int  # attempts before this one
    matched: int | None = None


class Deliverer:
    """Sends editions through one transport and records every outcome in the store.

    Editions stream through: while the transport sends one, the next is chosen and queued here and
    built (here, or in a build process for large runs). Each outcome is recorded as it comes, the
    250 before the next message can finish, so a crash leaves at most one message sent but not
    recorded.
    """

    def __init__(self, store: Store, config: Config, builder: Builder, transport: Transport,
                 now: dt.datetime, rng: random.Random | None = None) -> None:
        self.store, self.config, self.builder, self.transport, self.now = store, config, builder, transport, now
        self.rng = rng or random.Random()
        self.pool: BuildPool | None = None  # started for a large run (early_pool), or once it proves large
        self.built_here = 0
        self.report = DeliveryReport()
        self.touched: set[int] = set()  # subscribers whose edition failed or was deferred in this run

    def deliver(self, jobs: Iterable[Job]) -> None:
        """Build and send each job, recording each outcome as the transport reports it."""
        sender = self.builder.sender[1]

        def outgoing() -> Iterator[Outgoing]:
            for job in jobs:
                edition = job.edition
                data: bytes | Future[bytes]
                if self.pool is None and self.built_here >= MIN_EDITIONS and self.config.build_processes:
                    self.use_pool(BuildPool(self.builder.recipe, processes_for(self.config.build_processes)))
                if self.pool is not None:
                    data = self.pool.submit(edition)
                else:
                    self.built_here += 1
                    try:
                        data = self.builder.build(edition)[1]
                    except DigestmailError as exc:
                        data = Future()
                        data.set_exception(exc)
                yield Outgoing(Envelope(sender, (edition.subscriber.email,)), edition.key, data, job, ready=True)

        # Once builds go to other processes, choose a few editions ahead so those never wait. Each
        # 250 goes to the store's sent journal at once, to its tables in batches (store/outbox.py).
        with self.store.recording_sends():
            self.transport.send_many(ahead(outgoing(), AHEAD, lambda: self.pool is not None), self._done)

    def use_pool(self, pool: BuildPool) -> None:
        """Build the emails from now on in these build processes."""
        self.pool = pool
        self.builder.release()  # its templates and caches are the build processes' now
        n = len(pool.processes)
        log.info("building %s emails in %d other process%s", "the rest of the" if self.built_here else "the",
                 n, "es" if n > 1 else "")

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    def _done(self, item: Outgoing, error: DigestmailError | None) -> None:
        job: Job = item.tag
        sub, edition = job.edition.subscriber, job.edition
        if isinstance(error, DeliveryError):
            self._failed(job.oid, edition, job.attempts + 1, error)
        elif error is not None:  # e.g. a value that cannot go into a header: retrying cannot help
            self.store.mark_failed(job.oid, self.now, str(error))
            self.report.add("failed", {"email": sub.email, "error": str(error)})
            log.error("could not build the email for %s: %s", sub.email, error)
        else:
            self.store.mark_sent(job.oid, self.now)
            self.report.add("sent", {"email": sub.email, "papers": len(edition.picks),
                                     "matched": job.matched if job.matched is not None else len(edition.picks),
                                     "retry": job.attempts > 0, "message_id": self.builder.message_id(edition)})
            log.info("sent %d papers to %s", len(edition.picks), sub.email)

    def _failed(self, oid: int, edition: Edition, attempts: int, exc: DeliveryError) -> None:
        email = edition.subscriber.email
        too_old = self.now - edition.created >= self.config.retry.give_up_after
        self.touched.add(edition.subscriber_id)
        if exc.permanent or too_old:
            reason = str(exc) if exc.permanent else f"gave up after {attempts} attempts: {exc}"
            self.store.mark_failed(oid, self.now, reason)
            if exc.refused:  # the server refused the address itself: never again
                self.store.suppress(email, "refused", str(exc), self.now)
            self.report.add("failed", {"email": email, "error": reason})
            log.error("delivery to %s failed for good: %s", email, reason)
            return
        until = next_attempt(attempts, self.config.retry, self.now, self.rng)
        self.store.mark_deferred(oid, self.now, until, str(exc))
        self.report.add("deferred", {"email": email, "error": str(exc), "until": until.isoformat()})
        log.warning("delivery to %s deferred until %s: %s", email, until.isoformat(timespec="seconds"), exc)

    def retries(self) -> Iterator[Job]:
        """What is queued or due again: editions deferred earlier, or interrupted by a crash."""
        for row in self.store.due(self.now):
            try:
                edition = self._rebuild(row)
            except DigestmailError as exc:
                self.store.mark_failed(row.id, self.now, str(exc))
                continue
            if edition is not None:
                self.store.mark_sending(row.id, self.now)
                yield Job(row.id, edition, row.attempts)

    def _rebuild(self, row: OutboxRow) -> Edition | None:
        found = self.store.subscriber_by_id(row.subscriber_id)
        if found is None or (reason := self.store.suppression(found.email)):
            why = f"suppressed ({reason})" if found is not None else "no longer a subscriber"
            self.store.mark_failed(row.id, self.now, why)
            self.report.add("skipped", {"email": found.email if found else "?", "reason": why})
            return None
        picks = self.builder.picks_for(found, self.store.papers_by_ids(row.paper_ids))
        return Edition(subscriber=found, subscriber_id=row.subscriber_id, picks=picks, created=row.created_at,
                       key=row.edition_key)

    def new_editions(self, subscribers: Iterable[tuple[int, Subscriber]], key_of: Callable[[Subscriber], str] | None,
                     stop: threading.Event | None) -> Iterator[Job]:
        """One new edition per subscriber (under `key_of(sub)`, by default made from the subscriber and
        `now`), unless that edition exists already; the jobs to send them, in order."""
        stopping = stop.is_set if stop is not None else lambda: False
        pending = iter(subscribers)
        while batch := list(itertools.islice(pending, BATCH)):
            jobs = [] if stopping() else self._new_batch(batch, key_of)
            for i, job in enumerate(jobs):
                if stopping():
                    # Queued but not begun: taken back, so the next run starts these afresh.
                    self.store.withdraw([j.oid for j in jobs[i:]])
                    break
                yield job
            if stopping():
                log.info("stopping: the remaining subscribers wait for the next run")
                return

    def _new_batch(self, batch: list[tuple[int, Subscriber]], key_of: Callable[[Subscriber], str] | None
                   ) -> list[Job]:
        """Look up, choose and queue a batch of subscribers' editions: four statements for the batch
        instead of four per subscriber."""
        keys = [key_of(sub) if key_of else edition_key(sub.email, self.now) for _, sub in batch]
        existing = self.store.existing_editions(keys)
        suppressed = self.store.suppressed_among([sub.email for _, sub in batch])
        taken = self.store.taken_papers_of([sid for sid, _ in batch], self.builder.first_id)
        chosen: list[tuple[Queued, Edition, int]] = []
        for (sid, sub), key in zip(batch, keys):
            if key in existing or sid in self.touched:
                continue  # this cycle ran already for them, or their retry just failed: not twice in one run
            if reason := suppressed.get(sub.email):
                self.report.add("skipped", {"email": sub.email, "reason": f"suppressed ({reason})"})
                continue
            try:
                choice = self.builder.choose(self.store, sid, sub, taken.get(sid, ()))
            except DigestmailError as exc:  # one subscriber's trouble never stops the others
                self._could_not(sub, exc)
                continue
            if choice.skipped:
                self.report.add("skipped", {"email": sub.email, "reason": choice.skipped})
                log.log(logging.INFO if choice.matched else logging.DEBUG, "nothing sent to %s: %s",
                        sub.email, choice.skipped)
                continue
            edition = Edition(subscriber=sub, subscriber_id=sid, picks=choice.picks, created=self.now, key=key)
            chosen.append((Queued(key, sid, self.builder.message_id(edition), self.now,
                                  tuple(p.paper.id for p in choice.picks)), edition, choice.matched))
        if not chosen:
            return []
        try:
            oids = self.store.queue_editions([queued for queued, _, _ in chosen], sending=True)
        except DigestmailError as exc:
            for _, edition, _ in chosen:
                self._could_not(edition.subscriber, exc)
            return []
        # None: queued meanwhile by another run
        return [Job(oid, edition, 0, matched) for oid, (_, edition, matched) in zip(oids, chosen) if oid is not None]

    def _could_not(self, sub: Subscriber, exc: DigestmailError) -> None:
        self.report.add("failed", {"email": sub.email, "error": str(exc)})
        log.error("could not deliver to %s: %s", sub.email, exc)


def deliver_all(store: Store, config: Config, transport: Transport, now: dt.datetime,
                progress: Callable[..., Any] | None = None, *, stop: threading.Event | None = None,
                subscribers: Iterable[tuple[int, Subscriber]] | None = None,
                key_of: Callable[[Subscriber], str] | None = None, recover: bool = True,
                pool: BuildPool | None = None) -> DeliveryReport:
    """Recover what a crash interrupted, retry what is due, then one new edition per subscriber.

    `subscribers` defaults to every active one; `key_of` names each one's edition (by default the
    subscriber and `now`: running the same cycle twice is a no-op). `stop`, once set, ends the loop
    between two subscribers: the editions in flight finish and the outbox stays consistent. `pool`:
    build processes started earlier (`early_pool`), used from the first email and closed here.
    """
    builder = Builder.for_store(config, store, now)
    deliverer = Deliverer(store, config, builder, transport, now)
    expected: int | None = None  # how many subscribers this run is for, when that is known
    if subscribers is None:
        expected = store.active_count()
    elif isinstance(subscribers, Sized):
        expected = len(subscribers)
    if pool is None and expected is not None:
        pool = early_pool(config, expected, builder.recipe)
    if pool is not None:
        deliverer.use_pool(pool)
    with collect.seldom(), prompt_readers():
        try:
            _count_last_hour(store, transport, now)
            if recover:
                deliverer.report.recovered = store.recover_sending(now)
                if deliverer.report.recovered:
                    log.warning("%d editions were interrupted while sending; sending them again",
                                deliverer.report.recovered)
                deliverer.deliver(deliverer.retries())  # all of them first: a failed retry skips that subscriber below
            if subscribers is None:
                subscribers = store.active_subscribers()
                if progress is not None:
                    subscribers = progress(subscribers, expected, "delivering")
            deliverer.deliver(deliverer.new_editions(subscribers, key_of, stop))
        finally:
            deliverer.close()
    return deliverer.report


def early_pool(config: Config, subscribers: int, recipe: Recipe | None = None) -> BuildPool | None:
    """Build processes for a run that will be large (MIN_EDITIONS subscribers or more), started now so
    that they boot while this process still reads the sources and the store (a smaller run starts
    them once it has built MIN_EDITIONS emails, if ever); else None."""
    if not config.build_processes or subscribers < MIN_EDITIONS:
        return None
    return BuildPool(recipe or Recipe.of(config), processes_for(config.build_processes))


def retry_due(store: Store, config: Config, transport: Transport, now: dt.datetime) -> DeliveryReport:
    """Only the retries: editions deferred earlier whose time has come (the daemon runs this often)."""
    deliverer = Deliverer(store, config, Builder(config, [], now), transport, now)
    _count_last_hour(store, transport, now)
    try:
        deliverer.deliver(deliverer.retries())
    finally:
        deliverer.close()
    return deliverer.report


def _count_last_hour(store: Store, transport: Transport, now: dt.datetime) -> None:
    """An hourly limit spans runs: tell the transport what the last hour already sent."""
    counted = getattr(transport, "already_sent", None)
    if counted is not None:
        counted(store.sent_since(now - dt.timedelta(hours=1)))


__all__ = ["LISTED", "DeliveryReport", "Deliverer", "Job", "Pick", "deliver_all", "early_pool", "next_attempt"]
