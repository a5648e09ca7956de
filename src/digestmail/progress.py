"""Progress for long work: a rich bar on a terminal, plain log lines (from the pipeline) elsewhere."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

T = TypeVar("T")
_console = Console(stderr=True)


def interactive() -> bool:
    return sys.stderr.isatty()


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, message (and the traceback, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        data = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"), "level": record.levelname.lower(),
                "message": record.getMessage()}
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


def setup_logging(verbose: bool, json_lines: bool = False) -> None:
    """Log lines on stderr: rich on a terminal, timestamped plain lines otherwise, or JSON lines."""
    level = logging.DEBUG if verbose else logging.INFO
    if json_lines:
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    elif interactive():
        handler = RichHandler(console=_console, show_path=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger("digestmail")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # APScheduler's own lines in the same format; its "skipped: maximum number of running instances"
    # is expected (a long delivery coalesces the ticks behind it) and only worth a debug line.
    sched = logging.getLogger("apscheduler")
    sched.handlers[:] = [handler]
    sched.setLevel(logging.DEBUG if verbose else logging.ERROR)
    sched.propagate = False


def track(items: Iterable[T], total: int | None, label: str) -> Iterator[T]:
    """Yield the items, drawing a bar on a terminal; off a terminal the per-item log lines suffice."""
    if not interactive():
        yield from items
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=_console, transient=True) as bar:
        task = bar.add_task(label, total=total)
        for item in items:
            yield item
            bar.advance(task)
