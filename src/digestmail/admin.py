"""The admin's report (pure): what went wrong in a run, as a short plain email, or nothing at all.

A report is due when a run could not finish (an error), deliveries failed for good, or a source went
stale. Each problem has a fingerprint; the caller sends a report only when it has a fingerprint not
reported within `[admin] report_every`, so a source that stays stale for a week mails once a day,
not once a minute.
"""

from __future__ import annotations

import datetime as dt
import html
from dataclasses import dataclass
from typing import Any

from .models import RenderedEmail


@dataclass(frozen=True)
class Problem:
    fingerprint: str  # stable across runs for the same problem: what "reported already" is keyed by
    line: str


def problems(report: dict[str, Any] | None, health: dict[str, dict[str, Any]], error: str | None = None) -> list[Problem]:
    """The problems in a run report (`RunReport.as_dict()`), the sources' health, and a run error."""
    out: list[Problem] = []
    if error:
        out.append(Problem(f"error:{error.splitlines()[0]}", f"The run stopped with an error: {error}"))
    for name, h in health.items():
        if h.get("stale"):
            out.append(Problem(f"stale:{name}", f"Source {name} is stale: nothing arrived for "
                                                f"{h.get('silent_for') or 'ever'} (expected every {h.get('expect_every')})."))
    for f in (report or {}).get("failed", []):
        out.append(Problem(f"failed:{f['email']}:{f['error'][:80]}", f"Delivery to {f['email']} failed: {f['error']}"))
    rejected = [f for f in (report or {}).get("ingest", {}).get("files", []) if f.get("status") == "rejected"]
    if rejected:
        out.append(Problem("rejected:" + ",".join(sorted(f["path"] for f in rejected))[:200],
                           f"{len(rejected)} digest file(s) were rejected: "
                           + "; ".join(f"{f['path']}: {(f.get('reason') or '').splitlines()[0]}" for f in rejected[:5])))
    return out


def render(found: list[Problem], now: dt.datetime, title: str) -> RenderedEmail:
    lines = [f"{title}: {len(found)} problem(s) at {now.isoformat(timespec='seconds')}", ""]
    lines += [f"- {p.line}" for p in found]
    lines += ["", "`digestmail status` shows the details. This report repeats at most once per "
                  "[admin] report_every for the same problem."]
    text = "\n".join(lines) + "\n"
    page = ("<!doctype html><html lang=\"en\"><body><pre style=\"font:14px/1.5 monospace;white-space:pre-wrap\">"
            + html.escape(text) + "</pre></body></html>\n")
    subject = f"[{title}] {len(found)} problem(s): {found[0].line[:80]}"
    return RenderedEmail(subject=" ".join(subject.split()), html=page, text=text)
