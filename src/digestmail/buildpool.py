"""Build messages in other processes while this one selects, records and sends: both cores at work.

Rendering, building and signing an email is pure and costs about as much CPU as selecting it and
talking SMTP together, so a large run hands it to build processes. Each gets the run's Recipe once
(the config as loaded, the secrets as read: no second read of the environment or the key file) and
then one edition at a time; it returns the finished bytes, in the order it got the editions.

A build process is a new interpreter, not a copy of this one (the daemon runs jobs in threads, and
forking a threaded process can copy a held lock), that imports only compose.py and talks over its
stdin and stdout: a length-prefixed frame per edition in, the bytes out. Not multiprocessing's
pool: under spawn it also starts a resource-tracker process (15 MB more for the run, and nothing
here needs it) and loads its own machinery on both sides. A build process never sends anything,
so a crash of the main process loses nothing here: the editions it had queued stay `sending` in
the outbox and are sent at the next start; the build process sees its stdin end and exits.

Each paper crosses to a build process once: a run has ~1,000 papers for 10,000 editions of 10
picks, and pickling them into every edition was about half of what handing one over cost, here
and there (~120 µs to pickle, ~50 µs to unpickle; ~55 and ~28 µs without them). Every frame is
length-prefixed (">I"); the first is the pickled Recipe, each later one is

    flags (1 byte), n (">I") | n bytes: a pickled tuple of Papers | the edition as plain values, pickled

The papers are those the process does not hold yet (or holds in another version: see
`_Frames`); it keeps them by id, replacing any older one, before it reads the edition, which names
its papers by id. Flag `_FORGET`: drop every paper held first.
"""

from __future__ import annotations

import collections
import contextlib
import io
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import traceback
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any, BinaryIO

from . import collect
from .compose import Composer, Recipe
from .errors import DigestmailError
from .models import Edition, Match, Paper, Pick, Subscriber

MIN_EDITIONS = 200  # built here first: a smaller run never pays ~0.3 s to start a process

_LENGTH = struct.Struct(">I")
_PAPERS = struct.Struct(">BI")  # flags, length of the papers' pickle
_FORGET = 1
# A run's papers are bounded by its candidates: ~1,000 in the cycle bench, which a build process
# then holds for the run (~2.5 MB). This is a backstop for a store with far more: past it both sides
# start over, so the papers held stay under ~26 MB a process and the worst case is sending some again.
KNOWN_PAPERS = 10_000
_RESULT = struct.Struct(">BI")  # kind, length
_READ_BUFFER = 256 * 1024
_BYTES, _REFUSED, _BROKEN = 0, 1, 2  # the message; a DigestmailError's text; any other error's traceback
# The child's sys.path is the parent's (as multiprocessing's spawn does), so it imports the same code.
_BOOT = "import sys; sys.path[:] = sys.argv[1:]; from digestmail.buildpool import serve; serve()"


# While build processes run, the event loop thread runs Python for milliseconds at a time (choosing,
# framing, sending), and a reader thread that has a result in hand waits for the GIL until the
# interpreter's switch interval forces a hand-over: 5 ms by default. Meanwhile the next result
# (~60 KB: the 64 KB pipe holds about one) waits in the pipe, and the build process with it (the
# likely reason; what was measured is the effect). Interleaved 10k cycle runs took 1.38–1.41x the
# mean of the two processes' CPU seconds in wall time at 5 ms (8 runs), 1.34–1.36x at 1 ms (4 runs),
# 1.32–1.39x at 0.2 ms (6 runs), at the same CPU.
READER_SWITCH = 0.001


@contextlib.contextmanager
def prompt_readers() -> Iterator[None]:
    """While the block runs, a thread waiting for the GIL gets it within READER_SWITCH seconds (or as
    it did, if sooner). Process-wide, like collect.seldom: the daemon's other threads switch as often."""
    before = sys.getswitchinterval()
    if before <= READER_SWITCH:  # (set again, a value read back would shrink by a microsecond)
        yield
        return
    sys.setswitchinterval(READER_SWITCH)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


class BuildProcessError(RuntimeError):
    """A build process failed in a way no retry fixes (a bug, or it was killed): the run stops."""


def processes_for(configured: int) -> int:
    """How many build processes to start: as configured, but never more than the other cores."""
    return min(configured, max((os.cpu_count() or 1) - 1, 1))


def _read_exactly(stream: BinaryIO, n: int) -> bytes | None:
    data = stream.read(n)
    return data if len(data) == n else None  # None: the other side is gone


class _Frames:
    """The frames for one build process: `frame(edition)` is the papers the process does not hold yet,
    then the edition as plain values (tuples, strings, numbers, datetimes), each paper as its id and
    each match as its topics and pieces (models.Match: what each topic hits, ~140 bytes). Plain
    values pickle in C with no call back into Python per object: a Pickler with a reducer_override
    for the papers took ~115 µs an edition, this ~45–50 µs.

    `known` is what the process holds, as sent. A paper is sent again when it differs from that by
    equality, not just identity: a retry's edition comes back from the store as new objects, mostly
    equal (and then not resent), but a paper whose upvotes changed since keeps its id and must reach
    the process in its new version. Two different papers with one id in one edition (no store makes
    that, but nothing forbids it) cannot both be held: the second goes in place, in full.
    """

    def __init__(self) -> None:
        self.known: dict[int, Paper] = {}
        self.new: dict[int, Paper] = {}  # this frame's papers to send
        self.forget = False  # the next frame tells the process to drop every paper it holds
        # One Pickler for every edition's pickle (not the papers': see frame): pickle.dumps makes a
        # new one each time, and its memo table grew from empty (zeroed at each step) and was freed
        # again, for the ~150 objects of an edition (~28 -> ~23 µs a frame, the same bytes).
        self._out = io.BytesIO()
        self._pickler = pickle.Pickler(self._out, pickle.HIGHEST_PROTOCOL)

    def _dumps(self, value: object) -> bytes:
        out = self._out
        try:
            self._pickler.dump(value)
            return out.getvalue()
        finally:  # (also when it failed halfway: the next frame starts clean)
            out.seek(0)
            out.truncate()
            self._pickler.clear_memo()

    def frame(self, edition: Edition) -> bytes:
        if len(self.known) >= KNOWN_PAPERS:
            self.known.clear()
            self.forget = True  # until a frame carries it: encoding this edition may still fail
        self.new.clear()
        sub = edition.subscriber
        plain = (tuple(vars(sub).values()) if type(sub) is Subscriber else sub, edition.subscriber_id,
                 tuple(map(self._pick, edition.picks)), edition.created, edition.key)
        body = self._dumps(plain)
        # (A Pickler of their own: clear_memo zeroes the memo table at the largest size it ever had,
        # and a frame of new papers, some thousands of objects, made each later frame's clear ~3 µs.)
        papers = pickle.dumps(tuple(self.new.values()), pickle.HIGHEST_PROTOCOL) if self.new else b""
        self.known.update(self.new)
        flags = _FORGET if self.forget else 0
        self.forget = False
        return b"".join((_PAPERS.pack(flags, len(papers)), papers, body))

    def _pick(self, pick: Pick) -> tuple[object, ...]:
        """(the paper's id, or the paper in full; the topics; their pieces as plain tuples, or else
        the merged match)."""
        paper = pick.paper
        ref: int | Paper = paper.id
        sent = self.new.get(paper.id) or self.known.get(paper.id)
        if sent is not paper and sent != paper:
            if paper.id in self.new:
                ref = paper
            else:
                self.new[paper.id] = paper
        match = pick.match
        pieces = match._pieces
        if pieces is None:
            return ref, match.topics, None, (match.terms, match.spans, match.reason)
        return ref, match.topics, tuple(map(tuple, pieces)), None


# A build process's papers, by id.
_held: dict[int, Paper] = {}


def _receive(frame: bytes) -> memoryview:
    """Take a frame's papers into `_held`; its edition's pickle."""
    flags, n = _PAPERS.unpack_from(frame)
    if flags & _FORGET:
        _held.clear()
    view, start = memoryview(frame), _PAPERS.size + n
    if n:
        _held.update((paper.id, paper) for paper in pickle.loads(view[_PAPERS.size:start]))
    return view[start:]


def _edition(plain: tuple[Any, ...]) -> Edition:
    """The edition `_Frames.frame` encoded, with the papers held. Its pieces stay plain tuples: Match
    reads a Piece's four fields by position."""
    sub, sid, picks, created, key = plain
    return Edition(Subscriber(*sub) if type(sub) is tuple else sub, sid, tuple(
        Pick(_held[ref] if type(ref) is int else ref,
             Match.of(topics, pieces) if pieces is not None else Match(topics, *merged))
        for ref, topics, pieces, merged in picks), created, key)


def serve() -> None:
    """A build process's life: a Recipe, then editions, from stdin; for each, in order, the message
    bytes (or why not) on stdout. It ends when its stdin does."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the run's to handle: it closes our stdin
    results = os.dup(1)
    os.dup2(2, 1)  # a stray print must not land in the results
    editions = sys.stdin.buffer

    def frames() -> Iterator[bytes]:
        while (head := _read_exactly(editions, _LENGTH.size)) is not None:
            if (frame := _read_exactly(editions, _LENGTH.unpack(head)[0])) is None:
                return
            yield frame

    received = frames()
    recipe = next(received, None)  # the first frame is the Recipe
    if recipe is None:
        return
    composer = Composer(pickle.loads(recipe))
    with collect.seldom():  # what a build makes is freed by reference counts
        for frame in received:
            # Outside the try: papers that cannot be taken in leave the process out of step with the
            # run, so that ends it instead.
            edition = _receive(frame)
            try:
                # Inside: a paper missing here is a bug, and its traceback should reach the run.
                kind, out = _BYTES, composer.build(_edition(pickle.loads(edition)))[1]
            except DigestmailError as exc:  # only its text crosses: subclasses' extra fields would not
                kind, out = _REFUSED, str(exc).encode("utf-8", "surrogateescape")
            except Exception:
                kind, out = _BROKEN, traceback.format_exc().encode("utf-8", "replace")
            try:
                _write_all(results, _RESULT.pack(kind, len(out)), out)
            except BrokenPipeError:  # the run is gone
                break
    # Every result is written and flushed, and nothing else here needs closing: end without the
    # interpreter's teardown, which freed the caches object by object (~0.15 s that the run waited
    # for at its end), as multiprocessing's workers end.
    sys.stderr.flush()
    os._exit(0)


def _write_all(fd: int, *chunks: bytes) -> None:
    """The chunks in one system call where the pipe takes them (a result's header and body written
    apart woke the run's reader twice, the second time to wait again for the body)."""
    views = [memoryview(c) for c in chunks]
    while views:
        n = os.writev(fd, views)
        while views and n >= len(views[0]):
            n -= len(views.pop(0))
        if n:
            views[0] = views[0][n:]


class _Process:
    """One build process: `submit` writes editions to it, a thread reads the results back in order."""

    def __init__(self, recipe: Recipe) -> None:
        # The results are read through a buffer larger than one (~60 KB): a read takes what the pipe
        # holds in one system call, and the reader thread waits for the GIL once a result, not once
        # for its header and again for each 8 KB of its body.
        self.proc = subprocess.Popen([sys.executable, "-c", _BOOT, *sys.path],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=_READ_BUFFER)
        self.running: collections.deque[Future[bytes]] = collections.deque()  # written, result not read yet
        self.lock = threading.Lock()  # `broken` and what is running change together
        self.broken: str | None = None
        # Each counter has one writer (`submit` under `encoding`, or the reader): submitted - answered -
        # dropped is the load.
        self.submitted = self.answered = self.dropped = 0
        # A frame relies on the papers of the frames before it, so frames are written in the order they
        # were encoded: `encoding` makes the two one step even if editions come from several threads.
        self.encoding = threading.Lock()
        self.frames = _Frames()
        self.reader = threading.Thread(target=self._read, name="build-reader", daemon=True)
        self.reader.start()
        self._write(pickle.dumps(recipe, pickle.HIGHEST_PROTOCOL))

    @property
    def load(self) -> int:
        return self.submitted - self.answered - self.dropped

    def submit(self, edition: Edition) -> Future[bytes]:
        future: Future[bytes] = Future()
        future.set_running_or_notify_cancel()  # running at once: the reader may always set its result
        with self.encoding:
            frame = self.frames.frame(edition)
            self.submitted += 1
            with self.lock:
                broken = self.broken
                if broken is None:
                    self.running.append(future)
            if broken is not None:
                self.dropped += 1
                future.set_exception(BuildProcessError(broken))
                return future
            self._write(frame)
        return future

    def _write(self, frame: bytes) -> None:
        """Written here, not by a thread of its own: waking one for every edition cost the sending
        thread more than the write (the reader always drains the results, so this never waits on a
        build process that waits on us)."""
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            stdin.write(_LENGTH.pack(len(frame)) + frame)
            stdin.flush()
        except (OSError, ValueError):  # it died (or was closed): the reader fails what is running
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
        with self.encoding:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            except OSError:
                pass
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
        return min(self.processes, key=lambda p: p.load).submit(edition)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            for p in self.processes:
                p.close()
