"""Large mbox files: read message by message (memory does not grow with the file), every message a
digest of its own, and the same messages fed again skipped by their sha256."""

from __future__ import annotations

import datetime as dt
import shutil
import tracemalloc
from pathlib import Path

from digestmail import pipeline
from digestmail.sources.files import read_units
from digestmail.store import Store

from .conftest import trending

NOW = dt.datetime(2026, 11, 23, 8, tzinfo=dt.timezone.utc)


def write_mbox(path: Path, n: int) -> Path:
    """An mbox of `n` one-paper digests; every tenth abstract starts with `From ` (quoted, or it would
    read as a separator: it follows a blank line)."""
    # A number at both ends: every title is its own paper, in identity blocks of its own.
    return write_digests(path, [("Nov 20", [(f"{i} Robots That Cook Dinner {i}",
                                             f"From then on, robot {i} cooks." if i % 10 == 0
                                             else f"We cook dinner number {i}.")]) for i in range(n)])


def write_digests(path: Path, digests: list[tuple[str, list[tuple[str, str]]]]) -> Path:
    """An mbox of trending-papers digests: (date line, papers) each, a `From ` line in a body quoted."""
    with path.open("wb") as out:
        for i, (day, papers) in enumerate(digests):
            body = trending(day, papers).replace("\nFrom ", "\n>From ")
            out.write(f"From papers@example.org Fri Nov 20 07:00:00 2026\nFrom: papers@example.org\n"
                      f"To: me@example.org\nSubject: Papers {i}\nDate: Fri, 20 Nov 2026 07:00:00 +0000\n"
                      f"Content-Type: text/plain; charset=utf-8\n\n{body}\n".encode())
    return path


def test_digests_past_those_held_in_memory_are_stored_in_date_order_too(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "HELD", 2)  # four of the six wait in the temporary file
    days = [f"Nov {d}" for d in (6, 2, 5, 1, 4, 3)]
    box = write_digests(tmp_path / "days.mbox", [(day, [(f"Paper of {day}", f"Abstract of {day}.")])
                                                  for day in days])
    with Store(tmp_path / "s.sqlite3") as store:
        report, _ = pipeline.ingest(store, [box], NOW)
        assert [f.status for f in report.files] == ["ingested"] * 6
        assert [f.digest_date for f in report.files] == [f"2026-11-0{day[-1]}" for day in days]  # as read
        stored = sorted(store.papers_seen_since(None), key=lambda p: p.id)
        assert [p.title for p in stored] == [f"Paper of Nov {d}" for d in range(1, 7)]  # oldest digest first


def test_an_ingest_holds_a_bounded_number_of_parsed_digests(tmp_path, monkeypatch):
    # Digests of 20 papers with long abstracts (~50 KB each once parsed, like a Hugging Face day): past
    # HELD of them, the rest wait pickled in a temporary file, not in memory.
    monkeypatch.setattr(pipeline, "HELD", 4)
    papers = [(f"{k} Paper on robots", " ".join(["robots cook dinner"] * 80) + f" {k}.") for k in range(20)]
    one = write_digests(tmp_path / "one.mbox", [("Nov 20", papers)])
    tracemalloc.start()
    try:
        (unit,) = read_units([one])
        digest = pipeline.sources.parse_digest(unit.data, NOW.date())
        del unit
        held_one = tracemalloc.get_traced_memory()[0]
        del digest
    finally:
        tracemalloc.stop()
    n = 80
    # A number at both ends of every title: each paper is its own, not a candidate match of the others.
    box = write_digests(tmp_path / "many.mbox", [(f"Nov {1 + i % 28}", [(f"{i} {t} {i}", a) for t, a in papers])
                                                  for i in range(n)])
    with Store(tmp_path / "s.sqlite3") as store:
        tracemalloc.start()
        try:
            report, _ = pipeline.ingest(store, [box], NOW)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert [f.status for f in report.files] == ["ingested"] * n
        assert store.counts()["papers"] == 20 * n
    # All of them held would be 80 digests' worth (measured: ~75); HELD of them, the one being stored
    # and the reports of all 80 are ~14.
    assert peak < 20 * held_one, (peak, held_one)


def test_a_large_mbox_is_ingested_message_by_message(tmp_path):
    n = 2000
    box = write_mbox(tmp_path / "big.mbox", n)
    with Store(tmp_path / "s.sqlite3") as store:
        report, by_file = pipeline.ingest(store, [box], NOW)
        assert [f.status for f in report.files] == ["ingested"] * n
        assert [f.path for f in report.files][:2] == [f"{box}#1", f"{box}#2"]
        assert {f.format for f in report.files} == {"email/trending"}
        assert list(by_file) == [box] and len(by_file[box]) == n
        counts = store.counts()
        assert (counts["digests"], counts["papers"], counts["entries"]) == (n, n, n)
        (paper,) = [p for p in store.papers_seen_since(None) if p.title == "10 Robots That Cook Dinner 10"]
        assert paper.abstract == "From then on, robot 10 cooks."  # unquoted

        # The same messages again, in a copy of the file: each one is known by its sha256.
        again, _ = pipeline.ingest(store, [shutil.copy(box, tmp_path / "copy.mbox")], NOW)
        assert [f.status for f in again.files] == ["duplicate"] * n
        assert store.counts()["digests"] == n


def _peak_while_reading(path: Path) -> tuple[int, int]:
    """(units, peak bytes Python allocated) while every unit of the file is read and let go."""
    tracemalloc.start()
    try:
        units = 0
        for unit in read_units([path]):
            assert unit.sha256 and not unit.error
            units += 1
        return units, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_reading_an_mbox_holds_one_message_at_a_time(tmp_path):
    small = write_mbox(tmp_path / "small.mbox", 200)
    large = write_mbox(tmp_path / "large.mbox", 4000)
    assert large.stat().st_size > 1_000_000
    units_small, peak_small = _peak_while_reading(small)
    units_large, peak_large = _peak_while_reading(large)
    assert (units_small, units_large) == (200, 4000)
    # Twenty times the messages, about the same peak: a few buffers and one message, not the file.
    assert peak_large < 2 * peak_small + 64_000
    assert peak_large < large.stat().st_size / 20


def test_a_file_level_error_leaves_the_messages_read_and_names_the_file(tmp_path):
    missing = tmp_path / "gone.mbox"
    folder = tmp_path / "folder.mbox"
    folder.mkdir()
    units = list(read_units([missing, folder]))
    assert [u.label for u in units] == [str(missing), str(folder)]
    assert all(u.error.startswith("cannot read the file") and not u.data for u in units)


def test_reading_progress_counts_files_not_messages(tmp_path):
    box = write_mbox(tmp_path / "five.mbox", 5)
    page = tmp_path / "page.txt"
    page.write_text(trending("Nov 21", [("A page's paper", "Its abstract.")]), encoding="utf-8")
    seen: list[tuple[int | None, int]] = []

    def progress(items, total, label):
        count = 0
        for count, item in enumerate(items, start=1):
            yield item
        seen.append((total, count))

    with Store(tmp_path / "s.sqlite3") as store:
        report, _ = pipeline.ingest(store, [box, page], NOW, progress)
    assert len(report.files) == 6
    assert seen == [(2, 2)]  # two files of two, not six messages of two


def test_without_a_temporary_folder_the_digests_stay_in_memory(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(pipeline, "HELD", 1)
    monkeypatch.setattr(pipeline.tempfile, "tempdir", str(tmp_path / "missing"))  # a folder that is not there
    box = write_digests(tmp_path / "days.mbox", [(f"Nov {d}", [(f"Paper of Nov {d}", "An abstract.")])
                                                  for d in (3, 1, 2)])
    with Store(tmp_path / "s.sqlite3") as store:
        report, _ = pipeline.ingest(store, [box], NOW)
        assert [f.status for f in report.files] == ["ingested"] * 3
        stored = sorted(store.papers_seen_since(None), key=lambda p: p.id)
        assert [p.title for p in stored] == [f"Paper of Nov {d}" for d in (1, 2, 3)]
    assert "stays in memory" in caplog.text
