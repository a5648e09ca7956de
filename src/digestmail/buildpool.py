"""Build messages in other processes while this one selects, records and sends: both cores at work.

Rendering, building and signing an email is pure and costs about as much CPU as selecting it and
talking SMTP together, so a large run hands it to build processes. Each gets the run's Recipe once
(the config as loaded, the secrets as read: no second read of the environment or the key file) and
then one edition at a time; it returns the finished bytes, in the order it got the editions.

A build process is a new interpreter, not a copy of this one (the daemon runs jobs in threads, and
forking a threaded process can copy a held lock), that imports only compose.py and talks over its
stdin and stdout: a length-prefixed pickle per edition in, the bytes out. Not multiprocessing's
pool: under spawn it also starts a resource-tracker process (15 MB more for the run, and nothing
here needs it) and loads its own machinery on both sides. A build process never sends anything,
so a crash of the main process loses nothing here: the editions it had queued stay `sending` in
the outbox and are sent at the next start; the build process sees its stdin end and exits.
"""

from __future__ import annotations

import collections
import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import threading
import traceback
from concurrent.futures import Future
from typing import BinaryIO

from .compose import Composer, Recipe
from .errors import DigestmailError
from .models import Edition

MIN_EDITIONS = 200  # built here first: a smaller run never pays ~0.3 s to start a process

_LENGTH = struct.Struct(">I")
_RESULT = struct.Struct(">BI")  # kind, length
_BYTES, _REFUSED, _BROKEN = 0, 1, 2  # the message; a DigestmailError's text; any other error's traceback
# The child's sys.path is the parent's (as multiprocessing's spawn does), so it imports the same code.
_BOOT = "import sys; sys.path[:] = sys.argv[1:]; from digestmail.buildpool import serve; serve()"


class BuildProcessError(RuntimeError):
    """A build process failed in a way no retry fixes (a bug, or it was killed): the run stops."""


def processes_for(configured: int) -> int:
    """How many build processes to start: as configured, but never more than the other cores."""
    return min(configured, max((os.cpu_count() or 1) - 1, 1))


def _read_exactly(stream: BinaryIO, n: int) -> bytes | None:
    data = stream.read(n)
    return data if len(data) == n else None  # None: the other side is gone


def serve() -> None:
    """A build process's life: a Recipe, then editions, from stdin; for each, in order, the message
    bytes (or why not) on stdout. It ends when its stdin does."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the run's to handle: it closes our stdin
    results = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print must not land in the results
    editions = sys.stdin.buffer
    composer: Composer | None = None
    while (head := _read_exactly(editions, _LENGTH.size)) is not None:
        frame = _read_exactly(editions, _LENGTH.unpack(head)[0])
        if frame is None:
            break
        item = pickle.loads(frame)
        if composer is None:
            composer = Composer(item)  # the first frame is the Recipe
            continue
        try:
            kind, out = _BYTES, composer.build(item)[1]
        except DigestmailError as exc:  # only its text crosses: subclasses' extra fields would not
            kind, out = _REFUSED, str(exc).encode("utf-8", "surrogateescape")
        except Exception:
            kind, out = _BROKEN, traceback.format_exc().encode("utf-8", "replace")
        try:
            results.write(_RESULT.pack(kind, len(out)))
            results.write(out)
            results.flush()
        except BrokenPipeError:  # the run is gone
            break


class _Process:
    """One build process: a thread writes editions to it, another reads the results back in order."""

    def __init__(self, recipe: Recipe) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _BOOT, *sys.path],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.todo: queue.SimpleQueue[tuple[Future[bytes] | None, bytes] | None] = queue.SimpleQueue()
        self.running: collections.deque[Future[bytes]] = collections.deque()  # written, result not read yet
        self.lock = threading.Lock()  # `broken` and what is running change together
        self.broken: str | None = None
        # Each counter has one writer thread, so no lock: submitted - answered - dropped is the load.
        self.submitted = self.answered = self.dropped = 0
        self.todo.put((None, pickle.dumps(recipe, pickle.HIGHEST_PROTOCOL)))
        self.writer = threading.Thread(target=self._write, name="build-writer", daemon=True)
        self.reader = threading.Thread(target=self._read, name="build-reader", daemon=True)
        self.writer.start()
        self.reader.start()

    @property
    def load(self) -> int:
        return self.submitted - self.answered - self.dropped

    def submit(self, frame: bytes) -> Future[bytes]:
        future: Future[bytes] = Future()
        self.submitted += 1
        self.todo.put((future, frame))
        return future

    def _write(self) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        while (item := self.todo.get()) is not None:
            future, frame = item
            if future is not None:
                # Once running it cannot be cancelled, so the reader may always set its result.
                if not future.set_running_or_notify_cancel():
                    self.dropped += 1
                    continue
                with self.lock:
                    broken = self.broken
                    if broken is None:
                        self.running.append(future)
                if broken is not None:
                    self.dropped += 1
                    future.set_exception(BuildProcessError(broken))
                    continue
            try:
                stdin.write(_LENGTH.pack(len(frame)))
                stdin.write(frame)
                stdin.flush()
            except OSError:  # it died: the reader fails what is running, this loop the rest
                pass
        try:
            stdin.close()
        except OSError:
            pass

    def _read(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        try:
            while (head := _read_exactly(stdout, _RESULT.size)) is not None:
                kind, length = _RESULT.unpack(head)
                data = _read_exactly(stdout, length)
                if data is None:
                    break
                future = self.running.popleft()
                self.answered += 1
                if kind == _BYTES:
                    future.set_result(data)
                elif kind == _REFUSED:
                    future.set_exception(DigestmailError(data.decode("utf-8", "surrogateescape")))
                else:
                    future.set_exception(BuildProcessError("building an email failed:\n" + data.decode("utf-8")))
        except OSError:
            pass
        code = self.proc.wait()
        with self.lock:
            self.broken = f"the build process ended (exit code {code})"
            lost, self.running = self.running, collections.deque()
        for future in lost:
            self.answered += 1
            future.set_exception(BuildProcessError(self.broken))

    def close(self) -> None:
        """Let it finish what it was given, then end: its stdin closes, and it exits."""
        self.todo.put(None)
        self.writer.join()
        self.reader.join()
        assert self.proc.stdout is not None
        self.proc.stdout.close()


class BuildPool:
    """`submit(edition)` → a future of its message bytes, built in another process."""

    def __init__(self, recipe: Recipe, processes: int) -> None:
        self.processes = [_Process(recipe) for _ in range(max(processes, 1))]
        self.closed = False

    @property
    def pids(self) -> list[int]:
        return [p.proc.pid for p in self.processes]

    def submit(self, edition: Edition) -> Future[bytes]:
        if self.closed:
            raise RuntimeError("the build pool is closed")
        frame = pickle.dumps(edition, pickle.HIGHEST_PROTOCOL)
        return min(self.processes, key=lambda p: p.load).submit(frame)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            for p in self.processes:
                p.close()
