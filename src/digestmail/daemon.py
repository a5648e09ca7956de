"""`digestmail daemon`: poll the sources, send each schedule's editions, retry what is due, for months.

APScheduler (3.11, AsyncIOScheduler) only drives three interval jobs — poll, tick, retry — with
coalescing, one instance each and a generous misfire grace. *When editions are due* is decided by
schedule.py from the clock and the store, not by APScheduler's cron bookkeeping, so none of its
known traps reach a subscriber: a job skipped across a restart is caught up by the next tick (within
`[schedule] catch_up`), the autumn double fire of 02:30 names the same edition (keys are local
wall-clock times), and a crash mid-send leaves outbox rows that the next start sends again.

Jobs run one at a time in a worker thread (each opens its own store connection), so the event loop
stays free for signals. SIGTERM/SIGINT: stop scheduling, let the edition in flight finish (bounded),
exit 0. SIGHUP: reload the config; an invalid one is logged and the old one kept. One daemon per
store: a second exits 2 with "already running (pid N)".
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from . import admin, pipeline
from .config import load_config
from .deliver import deliver_all, retry_due
from .errors import ConfigError, DigestmailError
from .lock import InstanceLock
from .schedule import Schedule, due
from .select import scheduled_key
from .store import Store
from .transport import make_transport

log = logging.getLogger("digestmail")
STOP_GRACE = 30.0  # seconds the edition in flight may take after SIGTERM


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Daemon:
    def __init__(self, config_path: Path, clock: Callable[[], dt.datetime] = utc_now) -> None:
        self.config_path = config_path
        self.config = load_config(config_path)
        self.clock = clock
        self.stop = threading.Event()
        self.busy = threading.Lock()
        self.checked: dict[str, dt.datetime] = {}  # per schedule: fire times up to here are handled
        self.scheduler: AsyncIOScheduler | None = None

    # -- the jobs (synchronous; run in a worker thread, one at a time) -------------------------------

    def poll(self) -> None:
        now = self.clock()
        with pipeline.open_store(self.config, now) as store:
            report = pipeline.ingest_sources(store, self.config, now)
            self._report(store, admin.problems({"ingest": report.as_dict()},
                                               pipeline.source_health_now(store, self.config, now)), now)
        if report.files:
            log.info("poll: %d digests read, %d new papers", len(report.files),
                     sum(f.new_papers for f in report.files))

    def tick(self) -> None:
        """Send every edition whose scheduled time has come and was not handled yet."""
        now = self.clock()
        with pipeline.open_store(self.config, now) as store:
            for group, schedule in pipeline.schedules_of(self.config, store):
                started = store.schedule_started(schedule.name)
                if started is None:  # a new schedule starts from now: nothing before it to catch up
                    store.mark_schedule_started(schedule.name, now)
                    started = now
                since = max(self.checked.get(schedule.name, now - self.config.catch_up),
                            now - self.config.catch_up, started)
                fires = [(wall, fire) for wall, fire in due(schedule, since, now, limit=100_000)
                         if not store.schedule_done(schedule.name, wall)]
                if fires:
                    # Several missed fires (downtime) make one edition, the latest: coalesced, sent once.
                    wall, _ = fires[-1]
                    if len(fires) > 1:
                        log.info("%s: %d missed times since %s; sending one edition, for %s", schedule.name,
                                 len(fires), fires[0][0], wall)
                    self._send_scheduled(store, group, schedule, wall, now)
                    if self.stop.is_set():
                        return  # interrupted: the next start takes up this wall-clock time again
                    for missed, _ in fires:
                        store.mark_schedule_done(schedule.name, missed, now)
                self.checked[schedule.name] = now

    def _send_scheduled(self, store: Store, group: tuple[str, str], schedule: Schedule, wall: str,
                        now: dt.datetime) -> None:
        log.info("editions for %s at %s", schedule.name, wall)
        transport = make_transport(self.config)
        try:
            report = deliver_all(store, self.config, transport, now, stop=self.stop,
                                 subscribers=store.active_subscribers(group), recover=False,
                                 key_of=lambda sub: scheduled_key(sub.email, schedule.name, wall))
        finally:
            transport.close()
        counts = report.counts
        log.info("%s at %s: %d sent, %d deferred, %d failed, %d skipped", schedule.name, wall,
                 counts["sent"], counts["deferred"], counts["failed"], counts["skipped"])
        store.save_report(f"schedule {schedule.name}", {
            "wall_clock": wall, "sent": counts["sent"], "deferred": report.deferred[:50],
            "failed": report.failed[:50], "skipped": counts["skipped"]}, now)
        self._report(store, admin.problems({"failed": report.failed}, {}), now)

    def _report(self, store: Store, found: list[admin.Problem], now: dt.datetime) -> None:
        if not self.config.admin_email or not found:
            return
        transport = make_transport(self.config)
        try:
            pipeline.notify_admin(store, self.config, transport, found, now)
        finally:
            transport.close()

    def retry(self) -> None:
        now = self.clock()
        with pipeline.open_store(self.config, now) as store:
            if not store.due(now):
                return
            transport = make_transport(self.config)
            try:
                report = retry_due(store, self.config, transport, now)
            finally:
                transport.close()
            self._report(store, admin.problems({"failed": report.failed}, {}), now)
        log.info("retries: %(sent)d sent, %(deferred)d deferred again, %(failed)d failed", report.counts)

    def recover(self) -> None:
        """At start: editions a crash left in `sending` go back to the queue; the retry job sends them."""
        now = self.clock()
        with pipeline.open_store(self.config, now) as store:
            count = store.recover_sending(now)
        if count:
            log.warning("%d editions were interrupted while sending; they are sent again", count)

    def reload(self) -> None:
        try:
            config = load_config(self.config_path)
        except DigestmailError as exc:
            log.error("SIGHUP: the new config is invalid, keeping the old one: %s", exc)
            return
        if config.store_path != self.config.store_path:
            log.error("SIGHUP: [store] path changed; restart the daemon to move to the new store (kept %s)",
                      self.config.store_path)
            return
        old_poll = self.config.poll_interval
        self.config = config
        if config.poll_interval != old_poll and self.scheduler is not None:
            self.scheduler.reschedule_job("poll", trigger="interval", seconds=config.poll_interval.total_seconds())
        log.info("SIGHUP: config reloaded from %s", self.config_path)

    # -- the loop ----------------------------------------------------------------------------------

    def _job(self, work: Callable[[], None]) -> Callable[[], Any]:
        async def run() -> None:
            if self.stop.is_set():
                return
            await asyncio.to_thread(self._locked, work)
        run.__name__ = work.__name__
        return run

    def _locked(self, work: Callable[[], None]) -> None:
        with self.busy:
            if self.stop.is_set():
                return
            try:
                work()
            except DigestmailError as exc:  # logged; the daemon goes on, the next run tries again
                log.error("%s failed: %s", work.__name__, exc)
                self._job_failed(work.__name__, str(exc))
            except Exception as exc:  # noqa: BLE001 - a bug in one job must not end a daemon meant to run for months
                log.exception("%s crashed", work.__name__)
                self._job_failed(work.__name__, f"{type(exc).__name__}: {exc}")

    def _job_failed(self, job: str, error: str) -> None:
        """Tell the admin (once per period) that a whole job fails; never let that raise."""
        try:
            now = self.clock()
            with Store(self.config.store_path) as store:
                self._report(store, admin.problems(None, {}, f"the {job} job: {error}"), now)
        except Exception:  # noqa: BLE001 - the store or the transport is what fails: the log has it
            log.debug("could not report the failing %s job", job, exc_info=True)

    def check(self) -> None:
        """Fail at start, not every second later: the store opens, the secrets are there, the DKIM key
        parses (errors are ConfigError/StoreError: exit 2)."""
        now = self.clock()
        with pipeline.open_store(self.config, now):
            pass
        if self.config.web is not None:
            self.config.web.secret()
        make_transport(self.config).close()
        if self.config.dkim is not None:
            from .dkim import DkimSigner

            DkimSigner(self.config.dkim.domain, self.config.dkim.selector, self.config.dkim.key())

    async def main(self) -> int:
        lock = InstanceLock(self.config.store_path)
        lock.acquire()
        try:
            self.check()
            self._locked(self.recover)
            stopped = asyncio.Event()
            loop = asyncio.get_running_loop()

            def request_stop(signame: str) -> None:
                log.info("%s: finishing the edition in flight, then stopping", signame)
                self.stop.set()
                stopped.set()

            loop.add_signal_handler(signal.SIGTERM, request_stop, "SIGTERM")
            loop.add_signal_handler(signal.SIGINT, request_stop, "SIGINT")
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.run_in_executor(None, self._locked, self.reload))
            scheduler = self.scheduler = AsyncIOScheduler(timezone=dt.timezone.utc, job_defaults={
                "coalesce": True, "max_instances": 1, "misfire_grace_time": 3600})
            start = dt.datetime.now(dt.timezone.utc)
            poll_s = self.config.poll_interval.total_seconds()
            scheduler.add_job(self._job(self.poll), "interval", seconds=poll_s, next_run_time=start, id="poll")
            scheduler.add_job(self._job(self.tick), "interval", seconds=1,
                              next_run_time=start + dt.timedelta(seconds=0.5), id="tick")
            scheduler.add_job(self._job(self.retry), "interval", seconds=15,
                              next_run_time=start + dt.timedelta(seconds=0.7), id="retry")
            scheduler.start()
            log.info("daemon started (pid %d): polling every %ss, default schedule %s", os.getpid(),
                     int(poll_s), self.config.schedule.name)
            await stopped.wait()
            # No new jobs, then let the one in flight finish: shutdown() would cancel it.
            scheduler.pause()
            finished = await asyncio.to_thread(self.busy.acquire, True, STOP_GRACE)
            if not finished:
                # A send stuck longer than the grace: leave now. Its outbox row stays `sending` and is
                # sent again at the next start, as after a crash (at most one duplicate, never a loss).
                log.warning("the job in flight did not finish within %ss; stopping anyway", STOP_GRACE)
                logging.shutdown()
                os._exit(0)
            self.busy.release()
            scheduler.shutdown(wait=False)
            log.info("daemon stopped")
            return 0
        finally:
            lock.release()


def run_daemon(config_path: Path) -> int:
    return asyncio.run(Daemon(config_path).main())
