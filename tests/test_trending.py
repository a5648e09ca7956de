"""The trending-papers page parser: layout, years without a year, tolerance, golden output."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from pathlib import Path

import pytest

from digestmail import sources
from digestmail.errors import DigestError
from digestmail.sources import trending

from .conftest import trending as make_digest

DATA = Path(__file__).parent / "data"
TODAY = dt.date(2026, 11, 23)


def as_json(digest) -> dict:
    d = dataclasses.asdict(digest)
    d["date"] = digest.date.isoformat()
    return json.loads(json.dumps(d))  # tuples become lists, as in the golden file


def test_golden_small_digest():
    digest = sources.parse_digest((DATA / "trending-small.txt").read_bytes(), TODAY)
    golden = DATA / "trending-small.expected.json"
    if os.environ.get("DIGESTMAIL_UPDATE_GOLDEN"):
        golden.write_text(json.dumps(as_json(digest), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    assert as_json(digest) == json.loads(golden.read_text(encoding="utf-8"))


def test_crlf_bom_and_trailing_spaces_parse_the_same():
    plain = sources.parse_digest((DATA / "trending-small.txt").read_bytes(), TODAY)
    crlf = sources.parse_digest((DATA / "trending-small-crlf-bom.txt").read_bytes(), TODAY)
    assert [(e.title, e.abstract) for e in crlf.entries] == [(e.title, e.abstract) for e in plain.entries]
    assert crlf.date == plain.date == dt.date(2024, 2, 29)  # the latest Feb 29 not after today
    assert plain.entries[1].title == "Grokking Modular Arithmetic with Weight Decay"  # trailing spaces gone


@pytest.mark.parametrize("line, today, expected", [
    ("Mar 12", TODAY, dt.date(2026, 3, 12)),
    ("Nov 23", TODAY, dt.date(2026, 11, 23)),
    ("Nov 24", TODAY, dt.date(2025, 11, 24)),
    ("Dec 31", TODAY, dt.date(2025, 12, 31)),
    ("Jun 6", TODAY, dt.date(2026, 6, 6)),
    ("Feb 29", dt.date(2028, 3, 1), dt.date(2028, 2, 29)),
    ("March 3", TODAY, dt.date(2026, 3, 3)),
    ("Jan 1", dt.date(2027, 1, 1), dt.date(2027, 1, 1)),
])
def test_date_line_resolves_to_latest_date_not_after_today(line, today, expected):
    digest = trending.parse(make_digest(line, [("T", "A")]), today)
    assert digest.date == expected


def test_extra_blank_lines_and_missing_new_line_are_tolerated():
    text = "\n\n\nGet trending papers in your email inbox!\n\n\n\nMar 12\n\n\n\nTitle one\nAbstract one\n\n\n\nTitle two\n\nAbstract two\n"
    digest = sources.parse_digest(text.encode(), TODAY)
    assert [(e.title, e.abstract) for e in digest.entries] == [("Title one", "Abstract one"), ("Title two", "Abstract two")]
    assert [e.line for e in digest.entries] == [12, 17]


def test_last_title_without_abstract_is_kept_with_a_warning():
    text = make_digest("Mar 12", [("Title one", "Abstract one")]) + "Lonely title\n"
    digest = sources.parse_digest(text.encode(), TODAY)
    assert digest.entries[-1].title == "Lonely title" and digest.entries[-1].abstract == ""
    assert any("no abstract" in w for w in digest.warnings)


def test_latin1_file_is_read_with_a_warning():
    text = make_digest("Mar 12", [("Café Robots", "Übung macht den Meister.")])
    digest = sources.parse_digest(text.encode("latin-1"), TODAY)
    assert digest.entries[0].title == "Café Robots"
    assert any("Latin-1" in w for w in digest.warnings)


@pytest.mark.parametrize("data, reason", [
    (b"", "empty"),
    (b"   \n\n \r\n", "empty"),
    (b"\x00\x01\x02binary\x00", "binary"),
    (b"Dear all,\nthe meeting moved to Tuesday.\n", "not a digest format"),
    ("Get trending papers in your email inbox!\n\nSubscribe\n\nTitle\n\nAbstract\n".encode(), "expected the header"),
    (b"Get trending papers in your email inbox!\n\nFeb 30\n\nT\n\nA\n", "not a calendar date"),
    (b"Get trending papers in your email inbox!\n\nMar 12\n", "no papers"),
    (b"Get trending papers in your email inbox!\n\nSubscribe\n", "no date line"),
])
def test_bad_input_is_refused_with_a_reason(data, reason):
    with pytest.raises(DigestError) as err:
        sources.parse_digest(data, TODAY)
    assert reason in str(err.value)
    assert err.value.exit_code == 1


@pytest.mark.shared
def test_the_five_real_digests(shared):
    counts, dates = {}, {}
    for path in sorted((shared / "digests").glob("*.txt")):
        digest = sources.parse_digest(path.read_bytes(), TODAY)
        counts[path.name] = len(digest.entries)
        dates[path.name] = digest.date
        assert not digest.warnings
        assert all(e.title and e.abstract for e in digest.entries)
    assert counts == {"000_9b4fa1a6d085343e.txt": 63, "001_61e24ded52ccfcb2.txt": 80,
                      "002_5993e97d02e33066.txt": 51, "003_cff20595b6311c36.txt": 57,
                      "004_50d4bebf1de016f8.txt": 68}
    assert dates["004_50d4bebf1de016f8.txt"] == dt.date(2026, 6, 6)
    assert sorted(dates.values())[:4] == [dt.date(2026, 3, d) for d in (11, 12, 13, 14)]
