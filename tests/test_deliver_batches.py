"""Editions are chosen and queued in batches: a stop between two messages takes back what was queued
but never handed over, so nothing is left `sending` or `queued` and the next run completes the rest."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

from digestmail import pipeline
from digestmail.config import load_config
from digestmail.deliver import BATCH, deliver_all
from digestmail.transport import FileTransport

from .conftest import trending, write_config

NOW = dt.datetime(2026, 11, 23, 8, tzinfo=dt.timezone.utc)
READERS = BATCH + 8  # more than one batch


class StopsAfterFirst(FileTransport):
    """A file outbox that sets `stop` once the first message is written (as SIGTERM might)."""

    def __init__(self, outbox: Path, stop: threading.Event) -> None:
        super().__init__(outbox)
        self.stop = stop

    def send_many(self, items, done) -> None:  # type: ignore[no-untyped-def]
        def recorded(item, error) -> None:  # type: ignore[no-untyped-def]
            done(item, error)
            self.stop.set()

        super().send_many(items, recorded)


def test_a_stop_withdraws_the_rest_of_the_batch_and_the_next_run_sends_it(tmp_path):
    cfg = write_config(tmp_path, "[topics]\nadam = \"adam\"\n" + "".join(
        f'[[subscribers]]\nemail = "r{i:02d}@example.org"\ntopics = ["adam"]\n' for i in range(READERS)))
    (tmp_path / "inbox" / "d.txt").write_text(trending("Nov 22", [("Adam at scale", "We tune Adam.")]),
                                              encoding="utf-8")
    config = load_config(cfg)
    stop = threading.Event()
    with pipeline.open_store(config, NOW) as store:
        pipeline.ingest_sources(store, config, NOW)
        first = deliver_all(store, config, StopsAfterFirst(tmp_path / "outbox", stop), NOW, stop=stop)
        assert first.counts["sent"] == 1
        assert store.outbox_counts() == {"queued": 0, "sending": 0, "sent": 1, "deferred": 0, "failed": 0}
        (_, _), (second_reader, _), *_ = store.active_subscribers()
        assert store.taken_papers(second_reader) == set()  # their edition was taken back whole

        second = deliver_all(store, config, FileTransport(tmp_path / "outbox"), NOW)
        assert second.counts["sent"] == READERS - 1 and second.recovered == 0
    written = sorted(p.name.split("_", 1)[1] for p in (tmp_path / "outbox").glob("*.eml"))
    assert written == sorted(f"r{i:02d}@example.org.eml" for i in range(READERS))  # each once
