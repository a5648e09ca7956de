"""Build messages in other processes while this one selects, records and sends: both cores at work.

Rendering, building and signing an email is pure and costs about as much CPU as selecting it and
talking SMTP together, so a large run hands it to worker processes. Each worker gets the run's
Recipe once (the config as loaded, the secrets as read: no second read of the environment or the
key file) and then one edition per task; it returns the finished bytes.

Workers are started with `spawn`: the daemon runs jobs in threads, and forking a threaded process
can copy a held lock. A worker never sends anything, so a crash of the main process loses nothing
here: the editions it had queued stay `sending` in the outbox and are sent at the next start.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os

from .editions import Composer, Recipe
from .errors import DigestmailError
from .models import Edition

MIN_EDITIONS = 200  # built here first: a smaller run never pays ~0.5 s to start a process

_composer: Composer | None = None


def _start(recipe: Recipe) -> None:
    global _composer
    _composer = Composer(recipe)


def _build(edition: Edition) -> bytes:
    assert _composer is not None
    try:
        return _composer.build(edition)[1]
    except DigestmailError as exc:
        # Re-raised as the base class with the whole text: subclasses with extra fields do not
        # survive the pickling back to the main process.
        raise DigestmailError(str(exc)) from None


def processes_for(configured: int) -> int:
    """How many build processes to start: as configured, but never more than the other cores."""
    return min(configured, max((os.cpu_count() or 1) - 1, 1))


class BuildPool:
    """`submit(edition)` → a future of its message bytes, built in another process."""

    def __init__(self, recipe: Recipe, processes: int) -> None:
        self.pool = concurrent.futures.ProcessPoolExecutor(
            processes, mp_context=multiprocessing.get_context("spawn"), initializer=_start, initargs=(recipe,))

    def submit(self, edition: Edition) -> concurrent.futures.Future[bytes]:
        return self.pool.submit(_build, edition)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
