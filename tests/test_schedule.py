"""The schedule's pure logic: DST in both directions, catch-up windows, time zones, 6-field cron."""

from __future__ import annotations

import datetime as dt

import pytest

from digestmail.errors import ConfigError
from digestmail.schedule import Schedule, due, next_fire, wall_clock

U = dt.timezone.utc


def at(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=U)


def keys(schedule: Schedule, since: dt.datetime, now: dt.datetime) -> list[str]:
    return [k for k, _ in due(schedule, since, now)]


def test_autumn_0230_berlin_is_one_edition():
    """The cron trigger fires at 02:30 CEST and again at 02:30 CET: one wall-clock time, one key."""
    assert keys(Schedule("30 2 * * *", "Europe/Berlin"), at(2026, 10, 24, 12), at(2026, 10, 26, 12)) == \
        ["2026-10-25T02:30:00", "2026-10-26T02:30:00"]


def test_spring_0230_berlin_does_not_exist_and_is_still_sent_once():
    fires = due(Schedule("30 2 * * *", "Europe/Berlin"), at(2026, 3, 28, 12), at(2026, 3, 30, 12))
    assert [k for k, _ in fires] == ["2026-03-29T02:30:00", "2026-03-30T02:30:00"]
    assert fires[0][1].astimezone(U) == at(2026, 3, 29, 1, 30)  # the gap: sent an hour "late", once


def test_new_york_both_changes():
    ny = Schedule("30 1 * * *", "America/New_York")
    assert keys(ny, at(2026, 10, 31, 12), at(2026, 11, 2, 12)) == ["2026-11-01T01:30:00", "2026-11-02T01:30:00"]
    spring = due(Schedule("30 2 * * *", "America/New_York"), at(2026, 3, 7, 12), at(2026, 3, 9, 12))
    assert [k for k, _ in spring] == ["2026-03-08T02:30:00", "2026-03-09T02:30:00"]


def test_seconds_cron_through_the_repeated_hour_keeps_every_wall_clock_time_once():
    fires = keys(Schedule("*/10 * * * * *", "Europe/Berlin"), at(2026, 10, 25, 0), at(2026, 10, 25, 2))
    assert len(fires) == len(set(fires)) == 360
    assert fires[0] == "2026-10-25T02:00:10" and fires[-1] == "2026-10-25T03:00:00"


def test_catch_up_after_downtime_and_nothing_twice():
    daily = Schedule("0 8 * * *", "UTC")
    # Down from 07:00 to 09:30: the 08:00 edition is due once on return, within a 12 h catch-up.
    assert keys(daily, at(2026, 11, 23, 9, 30) - dt.timedelta(hours=12), at(2026, 11, 23, 9, 30)) == \
        ["2026-11-23T08:00:00"]
    # Down for longer than the catch-up window: that edition is not sent late.
    assert keys(daily, at(2026, 11, 23, 21) - dt.timedelta(hours=12), at(2026, 11, 23, 21)) == []
    # Overlapping checks: each window is (since, now]; the next starts where this one ended.
    assert keys(daily, at(2026, 11, 23, 7), at(2026, 11, 23, 8)) == ["2026-11-23T08:00:00"]
    assert keys(daily, at(2026, 11, 23, 8), at(2026, 11, 23, 9)) == []


def test_two_subscribers_in_different_time_zones():
    now = at(2026, 11, 23, 14)
    tokyo, berlin = Schedule("0 8 * * *", "Asia/Tokyo"), Schedule("0 8 * * *", "Europe/Berlin")
    assert keys(tokyo, now - dt.timedelta(hours=24), now) == ["2026-11-23T08:00:00"]
    assert due(tokyo, now - dt.timedelta(hours=24), now)[0][1].astimezone(U) == at(2026, 11, 22, 23)
    assert due(berlin, now - dt.timedelta(hours=24), now)[0][1].astimezone(U) == at(2026, 11, 23, 7)
    assert next_fire(berlin, now).astimezone(U) == at(2026, 11, 24, 7)


def test_six_field_cron_has_seconds_first():
    assert keys(Schedule("*/15 * * * * *", "UTC"), at(2026, 1, 1), at(2026, 1, 1, 0, 1)) == \
        [f"2026-01-01T00:00:{s:02d}" for s in (15, 30, 45)] + ["2026-01-01T00:01:00"]
    assert wall_clock(at(2026, 7, 1, 6), "Europe/Berlin") == "2026-07-01T08:00:00"


@pytest.mark.parametrize("cron, tz, message", [
    ("0 8 * *", "UTC", "4 fields"),
    ("61 8 * * *", "UTC", "61"),
    ("0 8 * * *", "Mars/Olympus", "unknown time zone"),
])
def test_bad_schedules_are_config_errors(cron, tz, message):
    with pytest.raises(ConfigError) as err:
        due(Schedule(cron, tz), at(2026, 1, 1), at(2026, 1, 2))
    assert message in str(err.value)
