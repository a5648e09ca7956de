"""When editions are due (pure: the clock is a parameter). APScheduler's cron trigger gives the fire
times; an edition is keyed by the schedule's *local wall-clock* time, so the autumn 02:30 that a cron
trigger fires twice (CEST, then CET), a restart, or two overlapping checks all name the same edition.

A daemon asks `due(schedule, since, now)` on every tick: the wall-clock times that fell in
(since, now]. At start, `since` is `now - catch_up`, so an edition missed while the daemon was down
is sent once when it comes back, within the catch-up window.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    from apscheduler.triggers.cron import CronTrigger

_FIELDS = ("minute", "hour", "day", "month", "day_of_week")


@dataclass(frozen=True)
class Schedule:
    """A cron expression in a time zone; `name` keys it in the store ("default", or the subscriber's)."""

    cron: str
    timezone: str

    @property
    def name(self) -> str:
        return f"{self.cron} @ {self.timezone}"


def trigger(schedule: Schedule, where: str = "schedule.cron") -> CronTrigger:
    """The cron trigger: 5 fields, or 6 with a leading seconds field; errors name the config key."""
    # Imported here: a build process loads the config's types but never a schedule (3 MB less each).
    from apscheduler.triggers.cron import CronTrigger

    try:
        tz = zoneinfo.ZoneInfo(schedule.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"unknown time zone {schedule.timezone!r}", where=where.replace("cron", "timezone"),
                          hint="use an IANA name like UTC, Europe/Berlin or America/New_York") from None
    parts = schedule.cron.split()
    if len(parts) not in (5, 6):
        raise ConfigError(f"{schedule.cron!r} has {len(parts)} fields", where=where,
                          hint="cron has 5 fields (minute hour day month weekday), or 6 with seconds first")
    fields = dict(zip(("second",) + _FIELDS if len(parts) == 6 else _FIELDS, parts))
    if len(parts) == 5:
        fields["second"] = "0"
    try:
        return CronTrigger(timezone=tz, **fields)
    except ValueError as exc:
        raise ConfigError(f"{schedule.cron!r}: {exc}", where=where,
                          hint='e.g. "0 8 * * *" for 08:00 every day, "*/10 * * * * *" for every 10 seconds') from None


def wall_clock(moment: dt.datetime, timezone: str) -> str:
    """The local wall-clock time of a fire, without its offset: what the admin wrote and the key uses."""
    return moment.astimezone(zoneinfo.ZoneInfo(timezone)).replace(tzinfo=None).isoformat(timespec="seconds")


def due(schedule: Schedule, since: dt.datetime, now: dt.datetime, limit: int = 1000) -> list[tuple[str, dt.datetime]]:
    """(wall-clock key, fire time) of each fire in (since, now], each wall-clock time once, oldest first."""
    cron = trigger(schedule)
    out: dict[str, dt.datetime] = {}
    cursor = since + dt.timedelta(microseconds=1)
    for _ in range(limit * 4):
        fire = cron.get_next_fire_time(None, cursor)
        if fire is None or fire > now:
            break
        if fire < cursor:
            # APScheduler 3.11 keeps answering the second 02:30 of an autumn night however late we
            # ask. Every wall-clock time of that repeated hour is already due: go on from its end.
            local = fire.astimezone(zoneinfo.ZoneInfo(schedule.timezone)).replace(tzinfo=None)
            end = local.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
            # (Asking from exactly the end works: that local time is unambiguous, and it is inclusive.)
            cursor = max(cursor, end.replace(tzinfo=zoneinfo.ZoneInfo(schedule.timezone)).astimezone(dt.timezone.utc))
            continue
        out.setdefault(wall_clock(fire, schedule.timezone), fire)
        if len(out) >= limit:
            break
        cursor = fire + dt.timedelta(microseconds=1)
    return list(out.items())


def next_fire(schedule: Schedule, now: dt.datetime) -> dt.datetime | None:
    """The first fire strictly after now (for `status`)."""
    return trigger(schedule).get_next_fire_time(None, now + dt.timedelta(microseconds=1))
