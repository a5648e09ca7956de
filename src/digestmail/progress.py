"""Progress for long work: a rich bar on a terminal, plain log lines (from the pipeline) elsewhere."""

from __future__ import annotations

import functools
import json
import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from rich.console import Console

T = TypeVar("T")


@functools.cache
def _console() -> Console:
    """The one rich console (on stderr) the log lines and the progress bars share; rich is imported
    on a terminal only (~35 ms a start otherwise)."""
    from rich.console import Console

    return Console(stderr=True)


def interactive() -> bool:
    return sys.stderr.isatty()


class PlainFormatter(logging.Formatter):
    """"time LEVEL message", the time as logging.Formatter writes it, made once a second (a large run
    logs a line per email; formatting the time each time was ~1 µs of the ~8 a line cost)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s")
        self._second: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        second = int(record.created)
        if second != self._second[0]:
            self._second = (second, time.strftime(self.default_time_format, self.converter(record.created)))
        return f"{self._second[1]},{int(record.msecs):03d}"

    def format(self, record: logging.LogRecord) -> str:
        # What logging.Formatter.format makes of our format, without its general steps (the style
        # object, the format's test for a time, the %-formatting of the record's whole __dict__).
        if record.exc_info or record.exc_text or record.stack_info:
            return super().format(record)
        record.message = record.getMessage()
        return f"{self.formatTime(record)} {record.levelname} {record.message}"


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
    # A large run logs a line per email. Our formats show none of the caller's file, line, thread or
    # process, and finding them is half of what a log call costs (~15 µs a line, ~8 without): the
    # logging HOWTO's "Optimization" switches.
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    if json_lines:
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    elif interactive():
        from rich.logging import RichHandler

        handler = RichHandler(console=_console(), show_path=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(PlainFormatter())
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
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=_console(), transient=True) as bar:
        task = bar.add_task(label, total=total)
        for item in items:
            yield item
            bar.advance(task)
