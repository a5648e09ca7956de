"""One cycle: ingest digests -> select per subscriber -> render -> build -> deliver -> record."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import logging
import pickle
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

from . import admin, message, sources
from .config import Config, ImapSettings, iter_subscribers_file, parse_address
from .errors import ConfigError, DigestError, DigestmailError
from .health import source_health
from .schedule import Schedule
from .models import Digest, Edition, RenderedEmail, Subscriber
from .deliver import LISTED, DeliveryReport, deliver_all, early_pool
from .editions import Builder
from .select import Choice, edition
from .sources import files as disk
from .sources.files import Unit, expand, inbox_files, maildir_new, read_units
from .sources.imap import ImapError, ImapSource
from .store import Store
from .transport import Transport, make_transport

log = logging.getLogger("digestmail")
T = TypeVar("T")
# Wraps a long iteration with progress display: (items, total, label) -> items.
Progress = Callable[[Iterable[T], int | None, str], Iterable[T]]


def no_progress(items: Iterable[T], total: int | None, label: str) -> Iterable[T]:
    return items


@dataclass
class FileReport:
    """What became of one input file."""

    path: str
    format: str | None = None
    status: str = "rejected"  # ingested | duplicate | rejected
    reason: str | None = None
    digest_date: str | None = None
    entries: int = 0
    new_papers: int = 0
    known_papers: int = 0
    updated_papers: int = 0
    warnings: list[str] = field(default_factory=list)


@dataclass
class IngestReport:
    files: list[FileReport] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # a source that could not be read at all

    @property
    def rejected(self) -> list[FileReport]:
        return [f for f in self.files if f.status == "rejected"]

    @property
    def partial(self) -> bool:
        return bool(self.rejected or self.errors)

    def as_dict(self) -> dict[str, Any]:
        totals = {s: sum(f.status == s for f in self.files) for s in ("ingested", "duplicate", "rejected")}
        return {"files": [asdict(f) for f in self.files], **totals,
                "new_papers": sum(f.new_papers for f in self.files), "errors": self.errors}


@dataclass
class RunReport:
    ingest: IngestReport
    delivery: DeliveryReport = field(default_factory=DeliveryReport)
    transport: str = ""
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)  # health after this run's ingest
    outbox: dict[str, int] = field(default_factory=dict)  # editions by state after the run
    suppressed: int = 0
    transport_to: str = ""  # the transport's destination: a folder, or host:port

    # The report's lists, by name (the CLI and the tests read these).
    @property
    def sent(self) -> list[dict[str, Any]]:
        return self.delivery.sent

    @property
    def failed(self) -> list[dict[str, str]]:
        return self.delivery.failed

    @property
    def deferred(self) -> list[dict[str, str]]:
        return self.delivery.deferred

    @property
    def skipped(self) -> list[dict[str, str]]:
        return self.delivery.skipped

    @property
    def counts(self) -> dict[str, int]:
        """Complete counts of sent, deferred, failed, skipped and retried (the lists stop at LISTED)."""
        return {k: self.delivery.counts[k] for k in ("sent", "deferred", "failed", "skipped", "retried")}

    @property
    def exit_code(self) -> int:
        counts = self.counts
        return 1 if counts["failed"] or counts["deferred"] or self.ingest.partial else 0

    def as_dict(self) -> dict[str, Any]:
        counts = self.counts
        return {"ingest": self.ingest.as_dict(), "transport": self.transport,
                "transports": {self.transport: {"to": self.transport_to, "sent": counts["sent"],
                                                "deferred": counts["deferred"], "failed": counts["failed"]}}
                if self.transport else {},
                "counts": counts, "listed_at_most": LISTED,
                "sent": self.sent,
                "deferred": self.deferred, "failed": self.failed, "skipped": counts["skipped"],
                "skipped_by_reason": dict(self.delivery.skipped_by_reason), "recovered": self.delivery.recovered,
                "suppressed": self.suppressed, "outbox": self.outbox, "sources": self.sources}


def all_subscribers(config: Config) -> Iterator[Subscriber]:
    """Inline subscribers, then the CSV file's, streamed; an address in both is an error."""
    inline = {s.email.lower() for s in config.subscribers}
    yield from config.subscribers
    if config.subscribers_file:
        for s in iter_subscribers_file(config.subscribers_file, config.topics):
            if s.email.lower() in inline:
                raise ConfigError(f"{s.email} is also configured in [[subscribers]]", where=s.where)
            yield s


def open_store(config: Config, now: dt.datetime) -> Store:
    """Open the store and make the configured subscriber list the active one."""
    store = Store(config.store_path)
    try:
        store.sync_subscribers(all_subscribers(config), now)
    except BaseException:
        store.close()
        raise
    return store


# -- ingest ---------------------------------------------------------------------------------

def _parse(unit: Unit, today: dt.date) -> tuple[FileReport, Digest | None]:
    report = FileReport(path=unit.label)
    if unit.error:
        report.reason = unit.error
        return report, None
    try:
        digest = sources.parse_digest(unit.data, today)
    except DigestError as exc:
        report.reason = str(exc)
        return report, None
    report.format, report.digest_date = digest.format, digest.date.isoformat()
    report.entries, report.warnings = len(digest.entries), list(digest.warnings)
    return report, digest


def _store(store: Store, report: FileReport, digest: Digest | None, unit: Unit, now: dt.datetime,
           source: str) -> None:
    """Store one parsed unit (or log why it was rejected), filling in its report."""
    if digest is None:
        log.warning("rejected %s: %s", report.path, report.reason)
        return
    if store.has_digest(unit.sha256):
        report.status = "duplicate"
        log.info("skipped %s: already ingested", report.path)
        return
    result = store.add_digest(unit.label, unit.sha256, digest, now, source)
    report.status, report.new_papers, report.known_papers = "ingested", result.new_papers, result.known_papers
    report.updated_papers = result.updated_papers
    for w in report.warnings:
        log.warning("%s: %s", report.path, w)
    log.info("ingested %s: %s %s, %d entries, %d new papers", report.path, digest.format, digest.date,
             len(digest.entries), result.new_papers)


HELD = 64  # parsed digests an ingest keeps in memory; later ones wait in a temporary file


class _Parked:
    """Parsed digests waiting to be stored in date order: the first HELD in memory, the rest pickled
    into a temporary file, so that a batch of years of digests (an archive's mbox) does not sit in
    memory whole (~60 KB a Hugging Face day). Each is let go once taken. A digest's handle is its
    place in memory (from 0 up) or in the file (from -1 down)."""

    def __init__(self) -> None:
        self.held: list[Digest | None] = []
        self.spilled: list[tuple[int, int]] = []  # (offset, length) in `file`
        self.file: IO[bytes] | None = None
        self.spilling = True  # until the temporary file fails us

    def park(self, digest: Digest) -> int:
        if len(self.held) >= HELD and self.spilling:
            try:
                if self.file is None:
                    self.file = tempfile.TemporaryFile(prefix="digestmail-ingest-")
                data = pickle.dumps(digest, pickle.HIGHEST_PROTOCOL)
                offset = self.file.seek(0, io.SEEK_END)
                self.file.write(data)
                self.file.flush()  # a full disk fails here, not when the digest is read back
                self.spilled.append((offset, len(data)))
                return -len(self.spilled)
            except OSError as exc:  # no writable temporary folder, or it is full: memory it is
                log.warning("cannot park digests in a temporary file (%s); the rest of this batch stays "
                            "in memory", exc)
                self.spilling = False
        self.held.append(digest)
        return len(self.held) - 1

    def take(self, handle: int) -> Digest:
        if handle >= 0:
            digest, self.held[handle] = self.held[handle], None
            assert digest is not None, "a parked digest is taken once"
            return digest
        assert self.file is not None
        offset, length = self.spilled[-handle - 1]
        self.file.seek(offset)
        return pickle.loads(self.file.read(length))  # type: ignore[no-any-return]

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def ingest(store: Store, paths: Iterable[Path], now: dt.datetime, progress: Progress[Any] = no_progress,
           *, source: str = "files") -> tuple[IngestReport, dict[Path, list[FileReport]]]:
    """Parse every unit, then store the good ones oldest digest first; a bad one never stops the rest.

    Returns the report and, per file read, the reports of its units (an mbox has several), so the
    caller can archive each file by what became of it.
    """
    files = list(paths)
    # Per unit: its report, its digest's date, where its parsed digest is parked (None: rejected).
    parsed: list[tuple[FileReport, dt.date, int | None, Unit]] = []
    parked = _Parked()
    try:
        for path in progress(files, len(files), "reading digests"):  # by file: an mbox counts once
            for unit in read_units([path]):
                report, digest = _parse(unit, now.date())
                parsed.append((report, digest.date if digest else dt.date.min,
                               parked.park(digest) if digest else None,
                               Unit(unit.label, unit.origin, b"", unit.sha256)))  # drop the bytes
        # Digest-date order, so "first seen" and the ledger follow the digests' own chronology.
        for report, _, at, unit in sorted(parsed, key=lambda t: (t[1], t[0].path)):
            _store(store, report, parked.take(at) if at is not None else None, unit, now, source)
    finally:
        parked.close()
    by_file: dict[Path, list[FileReport]] = {}
    for report, _, _, unit in parsed:
        by_file.setdefault(unit.origin, []).append(report)
    return IngestReport([r for r, _, _, _ in parsed]), by_file


def ingest_imap(store: Store, settings: ImapSettings, now: dt.datetime) -> IngestReport:
    """Poll the IMAP folder from where the last poll stopped, in UID order.

    Each message is stored, then the cursor advances, then the message is flagged or moved: a crash
    between two steps re-reads it, and its sha256 makes that a no-op.
    """
    report = IngestReport()
    with ImapSource(settings, settings.password()) as imap:
        for msg in imap.iter_messages(store.cursor(imap.url)):
            unit = Unit(msg.label, Path(), msg.data, msg.sha256)
            file_report, digest = _parse(unit, now.date())
            _store(store, file_report, digest, unit, now, "imap")
            store.set_cursor(imap.url, msg.state)
            imap.done(msg)  # rejected messages too, or every poll would reject them again
            report.files.append(file_report)
    return report


def ingest_sources(store: Store, config: Config, now: dt.datetime,
                   progress: Progress[Any] = no_progress) -> IngestReport:
    """Read every configured source, archive what was read, and record each source's health."""
    total = IngestReport()
    for src in config.sources:
        if src.name == "imap":
            assert config.imap is not None
            try:
                report = ingest_imap(store, config.imap, now)
            except ImapError as exc:  # the server is down or dropped us: the other sources still run
                log.error("IMAP source failed: %s", exc)
                store.record_poll("imap", now, arrived=0, new_papers=0, error=str(exc))
                total.errors.append(f"imap: {exc}")
                continue
            _record(store, src.name, report, now)
            total.files.extend(report.files)
            continue
        assert src.path is not None
        files = inbox_files(src.path) if src.name == "inbox" else maildir_new(src.path)
        report, by_file = ingest(store, files, now, progress, source=src.name)
        for path, reports in by_file.items():
            failed = [r for r in reports if r.status == "rejected"]
            # A report on the file itself rather than one of its messages (an mbox that could not be
            # read to its end) rejects the file even when messages before the error were stored: fed
            # again later, those are skipped by their sha256 and the rest is not lost.
            whole = any(r.path == str(path) for r in failed)
            reason = "\n".join(f"{r.path}: {r.reason}" for r in failed) \
                if failed and (whole or len(failed) == len(reports)) else None
            if src.name == "maildir":
                disk.mark_seen(path, src.path, flagged=reason is not None)
            elif config.archive:
                disk.archive(path, src.path, rejected_reason=reason)
        _record(store, src.name, report, now)
        total.files.extend(report.files)
    return total


def _record(store: Store, source: str, report: IngestReport, now: dt.datetime) -> None:
    arrived = sum(r.status != "rejected" for r in report.files)
    error = f"{len(report.rejected)} rejected" if report.rejected else None
    store.record_poll(source, now, arrived=arrived, new_papers=sum(r.new_papers for r in report.files),
                      error=error)


def ingest_paths(store: Store, paths: Iterable[Path], now: dt.datetime,
                 progress: Progress[Any] = no_progress) -> IngestReport:
    """Explicit files and folders: read and reported, never moved."""
    return ingest(store, expand(paths), now, progress, source="files")[0]


# -- the cycle ----------------------------------------------------------------------------

def run(config: Config, now: dt.datetime, progress: Progress[Any] = no_progress) -> RunReport:
    """The main job: ingest every source, then deliver."""
    with open_store(config, now) as store:
        # Secrets first: a missing password or key is a config error before anything is ingested.
        if config.web is not None:
            config.web.secret()
        transport = make_transport(config)
        pool = early_pool(config, store.active_count())  # a large run's build processes boot while the sources are read
        try:
            ingested = ingest_sources(store, config, now, progress)
            health = source_health_now(store, config, now)
            for name, h in health.items():
                if h["stale"]:
                    log.warning("source %s is stale: nothing arrived for %s (expected every %s)", name,
                                h["silent_for"] or "ever", h["expect_every"])
            delivery = deliver_all(store, config, transport, now, progress, pool=pool)
            report = RunReport(ingested, delivery, transport.name, health, store.outbox_counts(),
                               len(store.suppressions()), transport.where)
            store.save_report("run", _summary(report.as_dict()), now)
            notify_admin(store, config, transport, admin.problems(report.as_dict(), health), now)
        finally:
            transport.close()
            if pool is not None:
                pool.close()  # deliver_all closed it already, unless ingest failed
        return report


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    """A run report small enough to keep: counts, and the addresses that failed or were deferred."""
    ingest = report.get("ingest", {})
    return {"ingested": ingest.get("ingested", 0), "rejected": ingest.get("rejected", 0),
            "new_papers": ingest.get("new_papers", 0), "sent": report.get("counts", {}).get("sent", 0),
            "deferred": report.get("deferred", [])[:50], "failed": report.get("failed", [])[:50],
            "skipped": report.get("skipped", 0), "skipped_by_reason": report.get("skipped_by_reason", {}),
            "recovered": report.get("recovered", 0)}


def schedules_of(config: Config, store: Store) -> list[tuple[tuple[str, str], Schedule]]:
    """Each distinct schedule among active subscribers: (what the store groups them by, the schedule)."""
    return [((cron, tz), Schedule(cron or config.schedule.cron, tz or config.schedule.timezone))
            for cron, tz in store.schedules()]


def source_health_now(store: Store, config: Config, now: dt.datetime) -> dict[str, dict[str, Any]]:
    recorded = store.source_status()
    return {s.name: source_health(recorded.get(s.name), s.expect_every, now) for s in config.sources}


def notify_admin(store: Store, config: Config, transport: Transport, found: list[admin.Problem],
                 now: dt.datetime) -> bool:
    """Mail the admin when there is a problem not reported within `[admin] report_every`."""
    if not config.admin_email or not found:
        return False
    fresh = store.unreported([p.fingerprint for p in found], now, config.admin_report_every)
    if not fresh:
        return False
    sender = parse_address(config.sender)
    domain = sender[1].rpartition("@")[2]
    digest = hashlib.sha256("|".join(sorted(fresh)).encode()).hexdigest()[:16]
    message_id = f"admin.{now:%Y%m%d%H%M%S}.{digest}@{domain}"
    data = message.build(admin.render(found, now, "digestmail"), sender=sender, to=("", config.admin_email),
                         message_id=message_id, date=now)
    try:
        transport.send(data, message.Envelope(sender[1], (config.admin_email,)), message_id.partition("@")[0])
    except DigestmailError as exc:  # the report is a courtesy: its failure must not fail the run
        log.error("could not send the admin report to %s: %s", config.admin_email, exc)
        return False
    store.mark_reported(fresh, now)
    log.info("reported %d problem(s) to %s", len(found), config.admin_email)
    return True


def explain(config: Config, email: str, now: dt.datetime) -> tuple[Subscriber, Choice, Builder]:
    """What `email` would get next and why, recording nothing."""
    with open_store(config, now) as store:
        found = store.find_subscriber(email)
        if found is None:
            raise ConfigError(f"{email} is not a subscriber", hint="check the address against the config")
        sid, sub = found
        builder = Builder.for_store(config, store, now)
        return sub, builder.choose(store, sid, sub), builder


def preview(config: Config, email: str, now: dt.datetime) -> tuple[Edition, RenderedEmail, bytes] | Choice:
    """The edition `email` would get next, rendered, without recording anything (or why there is none)."""
    sub, choice, builder = explain(config, email, now)
    if choice.skipped:
        return choice
    ed = edition(sub, 0, choice.picks, now)
    rendered, data = builder.build(ed)
    return ed, rendered, data
