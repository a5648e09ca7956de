"""Source health (pure): tell "nothing arrived" from "arrived, nothing new" from "fine"."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

# The states: never (nothing has ever arrived), stale (nothing for longer than expect_every), failing
# (the last poll rejected input), quiet (digests came but held no new papers since), ok.


def source_health(status: Mapping[str, Any] | None, expect_every: dt.timedelta | None,
                  now: dt.datetime) -> dict[str, Any]:
    """One source's status row (from the store) judged against its expected cadence."""
    status = dict(status or {})
    arrival = _time(status.get("last_arrival"))
    new = _time(status.get("last_new_papers"))
    stale = bool(expect_every and (arrival is None or now - arrival > expect_every))
    if arrival is None:
        state = "stale" if expect_every and _time(status.get("last_poll")) else "never"
    elif stale:
        state = "stale"
    elif status.get("last_error"):
        state = "failing"
    elif new is None or new < arrival:
        state = "quiet"
    else:
        state = "ok"
    silent_for = (now - arrival) if arrival else None
    return {**status, "expect_every": _human(expect_every), "stale": stale, "state": state,
            "silent_for": _human(silent_for)}


def _time(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def _human(delta: dt.timedelta | None) -> str | None:
    """'2d 3h', '45m', '30s' — how an admin reads a duration."""
    if delta is None:
        return None
    seconds = int(delta.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "", f"{minutes}m" if minutes and not days else "",
             f"{secs}s" if secs and not days and not hours else ""]
    return " ".join(p for p in parts if p) or "0s"
