"""One delivery at a time per store: an exclusive lock file beside it, held by the daemon or a run.

Its own module: `digestmail run` takes it too, and importing it from daemon.py loaded APScheduler's
scheduler, executors and job stores with it (and through them multiprocessing): ~25 ms of every run's
start, for nothing a run uses.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from .errors import ConfigError


class InstanceLock:
    """An exclusive lock beside the store (`<store>.lock`, holding the pid), released when the process ends."""

    def __init__(self, store_path: Path) -> None:
        self.path = store_path.with_name(store_path.name + ".lock")
        self.handle: IO[str] | None = None

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "a+", encoding="ascii")
        except OSError as exc:
            raise ConfigError(f"cannot create the lock file: {exc.strerror}", where=str(self.path),
                              hint="check [store] path: its folder must exist and be writable") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            pid = handle.read().strip() or "?"
            handle.close()
            raise ConfigError(f"already running (pid {pid})", where=str(self.path),
                              hint="one daemon per store; stop the other one first") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self.handle = handle

    def release(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None
