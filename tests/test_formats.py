"""The other digest formats: Hugging Face daily-papers JSON, RSS/Atom, arXiv listing mailings; detection.

Small fixtures of our own in tests/data/formats/ (invented papers) with golden output, and the real
files in ../shared/data checked against counts computed here without the code under test.
"""

from __future__ import annotations

import ast
import dataclasses
import datetime as dt
import json
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from digestmail import sources
from digestmail.errors import DigestError
from digestmail.models import Digest
from digestmail.sources import _text, arxiv_listing, feed, hf_json, trending

from .conftest import trending as make_digest

FORMATS = Path(__file__).parent / "data" / "formats"
TODAY = dt.date(2026, 11, 23)


def fixture(name: str) -> bytes:
    return (FORMATS / name).read_bytes()


def as_json(digest: Digest) -> dict:
    d = dataclasses.asdict(digest)
    return json.loads(json.dumps(d, default=str))  # dates as ISO strings, tuples as lists


# -- golden files ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["hf-list.json", "hf-repr.json", "hf-wrapper.json", "atom.xml", "rss.xml",
                                  "listing.txt"])
def test_golden(name):
    digest = sources.parse_digest(fixture(name), TODAY)
    golden = FORMATS / (name.rsplit(".", 1)[0] + ".expected.json")
    if os.environ.get("DIGESTMAIL_UPDATE_GOLDEN"):
        golden.write_text(json.dumps(as_json(digest), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    assert as_json(digest) == json.loads(golden.read_text(encoding="utf-8"))


@pytest.mark.parametrize("name, fmt", [
    ("hf-list.json", "hf-json"), ("hf-repr.json", "hf-json"), ("hf-wrapper.json", "hf-json"),
    ("atom.xml", "feed"), ("rss.xml", "feed"), ("listing.txt", "arxiv-listing"),
])
def test_detected_by_content(name, fmt):
    assert sources.parse_digest(fixture(name), TODAY).format == fmt


# -- Hugging Face daily-papers JSON --------------------------------------------------------------

def test_hf_list_fields():
    digest = hf_json.parse(fixture("hf-list.json"), TODAY)
    first, second = digest.entries
    assert first.title == "Warmup-Free Adam: Stable Training Without a Schedule"  # hard break folded
    assert first.abstract == ("We remove the warmup phase from Adam. A bias-corrected second moment keeps "
                              "the first steps small.")
    assert (first.arxiv_id, first.authors, first.upvotes) == ("2601.01234", ("Ada Quill", "Bram Osei"), 42)
    assert first.github == "https://github.com/quill-lab/warmup-free-adam"
    assert first.project_page == "https://quill-lab.github.io/wfa/"
    assert first.keywords == ("Adam", "learning rate warmup", "second moment")
    assert first.published == dt.date(2026, 1, 14) and first.line == 2
    assert second.arxiv_id == "2601.05678"  # version dropped
    assert second.github == "https://github.com/chenli/tiny-routers"  # from the abstract, '.' trimmed
    assert second.line == 22
    # submittedOnDailyAt says which day's list this is
    assert digest.date == dt.date(2026, 1, 15)


def test_hf_malformed_items_are_skipped_with_warnings_naming_them():
    digest = hf_json.parse(fixture("hf-list.json"), TODAY)
    assert len(digest.entries) == 2
    assert digest.warnings == (
        "item 3 (line 33): an int, not an object; skipped",
        "item 4 (line 34): arXiv 2601.01234 again (first as item 1); skipped",
        "item 5 (line 42): no paper title; skipped",
    )


def test_hf_repr_string_items():
    digest = sources.parse_digest(fixture("hf-repr.json"), TODAY)
    assert [e.title for e in digest.entries] == ["Don't Forget the Bias: Calibrating Small Models",
                                                 "An Old-Style Identifier"]
    assert [e.arxiv_id for e in digest.entries] == ["2512.00042", "cs/0112017"]
    assert digest.entries[0].authors == ("Dana Fix",) and digest.entries[0].upvotes == 12
    assert [e.line for e in digest.entries] == [2, 3]
    assert digest.warnings == ("item 3 (line 4): a string that is neither a Python literal nor JSON; skipped",)
    # no submittedOnDailyAt: the latest publishedAt (the item's own one is when it was listed)
    assert digest.date == dt.date(2025, 12, 10)


def test_hf_wrapper_date_and_lines():
    digest = sources.parse_digest(fixture("hf-wrapper.json"), TODAY)
    assert digest.date == dt.date(2025, 12, 11)
    assert [e.line for e in digest.entries] == [6, 7]
    assert not digest.warnings


def test_hf_repr_strings_are_never_evaluated(tmp_path):
    marker = tmp_path / "pwned"
    hostile = f"__import__('pathlib').Path({str(marker)!r}).write_text('x')"
    good = {"paper": {"id": "2601.00001", "title": "Fine", "summary": "Ok."}}
    digest = hf_json.parse(json.dumps([hostile, repr(good)]), TODAY)
    assert [e.title for e in digest.entries] == ["Fine"]
    assert not marker.exists()
    assert "item 1" in digest.warnings[0] and "skipped" in digest.warnings[0]


def test_hf_wrapper_count_mismatch_is_a_warning():
    doc = {"status": "success", "date": "2026-01-02", "count": 3,
           "data": [{"paper": {"id": "2601.00002", "title": "One", "summary": "A."}}]}
    digest = hf_json.parse(json.dumps(doc), TODAY)
    assert any("count says 3" in w for w in digest.warnings)


def test_hf_wrapper_status_other_than_success_is_a_warning():
    doc = {"status": "partial", "data": [{"paper": {"id": "2601.00002", "title": "One", "summary": "A."}}]}
    assert "status is 'partial'" in hf_json.parse(json.dumps(doc), TODAY).warnings[0]


def test_hf_top_level_title_and_summary_are_the_fallback():
    doc = [{"paper": {"id": "2601.00003"}, "title": "Top\n  Level", "summary": "From the item."}]
    entry = hf_json.parse(json.dumps(doc), TODAY).entries[0]
    assert (entry.title, entry.abstract) == ("Top Level", "From the item.")


def test_hf_date_never_after_today():
    doc = {"date": "2026-12-01", "data": [{"paper": {"id": "2601.00004", "title": "T", "summary": "A."}}]}
    digest = hf_json.parse(json.dumps(doc), TODAY)
    assert digest.date == TODAY and any("after today" in w for w in digest.warnings)


@pytest.mark.parametrize("text, reason", [
    ("[]", "no papers"),
    ('{"status": "error", "message": "nope"}', "without a 'data' list"),
    ('{"data": {"a": 1}}', "not a list"),
    ('"just a string"', "not a digest format"),
    ("[1, 2, 3]", "none of the 3 items"),
    ('[{"paper": {"id": "2601.00005"', "truncated"),
    ('[{"paper": nope}]', "invalid JSON at line 1 column 12"),
])
def test_hf_refusals(text, reason):
    with pytest.raises(DigestError) as err:
        sources.parse_digest(text.encode(), TODAY)
    assert reason in str(err.value)


def test_hf_truncated_file_names_the_position():
    with pytest.raises(DigestError) as err:
        sources.parse_digest(fixture("hf-truncated.json"), TODAY)
    text = fixture("hf-truncated.json").decode()
    assert "truncated" in str(err.value)
    assert f"line {text.count(chr(10)) + 1}" in str(err.value)


# -- RSS / Atom --------------------------------------------------------------------------------

def test_atom_fields():
    digest = sources.parse_digest(fixture("atom.xml"), TODAY)
    assert digest.format == "feed" and digest.date == dt.date(2026, 2, 3)  # the feed's <updated>
    a, b, c = digest.entries
    assert a.title == "Second-Order Warmup for Sharpness-Aware Minimisation"
    assert (a.arxiv_id, a.authors, a.categories) == ("2601.04321", ("Grace Moss", "Hugo Tan"), ("cs.LG", "math.OC"))
    assert a.published == dt.date(2026, 1, 8) and a.github == "https://github.com/sam-lab/sow"
    assert b.arxiv_id == "math.OC/0309136"  # old-style id, version dropped
    assert b.abstract == "Armijo steps still work & are cheap."  # HTML summary reduced to text
    assert c.arxiv_id is None and c.published == dt.date(2026, 2, 2)  # updated when no published
    assert [e.line for e in digest.entries] == [6, 21, 30]


def test_arxiv_rss_ids_authors_and_announce_type():
    digest = sources.parse_digest(fixture("rss.xml"), TODAY)
    first, second = digest.entries
    assert (first.arxiv_id, second.arxiv_id) == ("2602.00111", "2602.00222")  # from oai:arXiv.org:IDvN
    assert first.authors == ("Jo Park", "Kai Lund")
    assert first.abstract == "We combine two regularisers and find they cancel out."
    assert first.categories == ("cs.LG", "stat.ML")
    assert digest.date == dt.date(2026, 2, 3)


@pytest.mark.parametrize("announce, kind", [("new", "new"), ("cross", "cross-list"), ("replace", "replacement"),
                                            ("replace-cross", "replacement")])
def test_arxiv_rss_announce_type_sets_kind(announce, kind):
    xml = ('<?xml version="1.0"?><rss version="2.0"><channel><title>t</title><item><title>P</title>'
           f'<description>arXiv:2602.00333v2 Announce Type: {announce} \nAbstract: Text.</description>'
           '<guid>oai:arXiv.org:2602.00333v2</guid></item></channel></rss>')
    entry = feed.parse(xml, TODAY).entries[0]
    assert (entry.kind, entry.abstract) == (kind, "Text.")


def test_feed_date_after_today_falls_back_to_entries():
    digest = feed.parse(fixture("atom.xml"), dt.date(2026, 1, 31))
    assert digest.date == dt.date(2026, 1, 20)  # latest entry date not after that today
    assert any("after today" in w for w in digest.warnings)


def test_broken_feed_keeps_what_it_can_read_or_refuses():
    text = fixture("atom.xml").decode()
    cut = text[: text.index("<entry>", text.index("</entry>"))] + "<entry><title>Half"
    digest = feed.parse(cut, TODAY)
    assert digest.entries[0].arxiv_id == "2601.04321"
    assert any("not well-formed" in w for w in digest.warnings)
    with pytest.raises(DigestError, match="no entries|cannot be read"):
        sources.parse_digest(b'<?xml version="1.0"?>\n<feed xmlns="http://www.w3.org/2005/Atom"><title>x</title></feed>', TODAY)


@pytest.mark.parametrize("text, expected", [
    ('<?xml version="1.0"?>\n<!-- a comment -->\n<!DOCTYPE rss>\n<rss version="2.0"><channel/></rss>', True),
    ('<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"></rdf:RDF>', True),
    ('<feed xmlns="http://www.w3.org/2005/Atom"/>', True),
    ('<!DOCTYPE html><html><head><link rel="alternate" type="application/rss+xml" href="/rss"></head></html>',
     False),
    ('<?xml version="1.0"?><rsstuff/>', False),
])
def test_feed_is_recognised_by_its_root_element(text, expected):
    assert feed.looks_like(text) is expected


# -- arXiv listing mailings ----------------------------------------------------------------------

def test_listing_entries_kinds_and_fields():
    digest = sources.parse_digest(fixture("listing.txt"), TODAY)
    assert [(e.arxiv_id, e.kind, e.line) for e in digest.entries] == [
        ("2602.04001", "new", 13), ("2602.04002", "new", 39), ("2602.03999", "cross-list", 50),
        ("2511.07777", "replacement", 62)]
    first = digest.entries[0]
    assert first.title == "Curriculum Dropout: Start Dense, End Sparse, and Never Look Back"  # folded title
    assert first.authors == ("Mara Velde", "Nils Okafor", "Priya Raman")  # affiliations dropped
    assert first.categories == ("cs.LG", "stat.ML")
    assert first.github == "https://github.com/velde/curriculum-dropout"  # from Comments
    assert first.abstract.startswith("We anneal the dropout rate") and first.abstract.endswith("more slowly.")
    assert first.published == dt.date(2026, 2, 4)
    assert digest.entries[1].authors == ("Olu Bello", "Quinn Harte")
    replacement = digest.entries[3]
    assert replacement.abstract == "" and replacement.published is None and replacement.title == "An Older Paper, Revised"


def test_listing_malformed_block_is_skipped_with_its_line():
    digest = sources.parse_digest(fixture("listing.txt"), TODAY)
    assert digest.warnings == ("line 29: block without an arXiv id ('A Block That Lost Its Identifier'); skipped",)


def test_listing_date_is_the_mailing_day():
    # window closing Friday 6 Feb 2026 -> announced Monday 9 Feb (GMT)
    assert sources.parse_digest(fixture("listing.txt"), TODAY).date == dt.date(2026, 2, 9)


@pytest.mark.parametrize("to_day, out", [
    (dt.date(2026, 1, 22), dt.date(2026, 1, 23)),  # Thu -> Fri
    (dt.date(2026, 1, 23), dt.date(2026, 1, 26)),  # Fri -> Mon
    (dt.date(2026, 1, 25), dt.date(2026, 1, 26)),  # Sun -> Mon
    (dt.date(2026, 12, 31), dt.date(2027, 1, 1)),
])
def test_announce_date(to_day, out):
    assert arxiv_listing.announce_date(to_day) == out


def test_listing_without_header_is_dated_by_its_latest_entry():
    text = fixture("listing.txt").decode()
    body = text[text.index("\\\\\narXiv:2602.04001"):]
    digest = arxiv_listing.parse(body, TODAY)
    assert digest.date == dt.date(2026, 2, 5) and len(digest.entries) == 4
    assert arxiv_listing.parse(body, dt.date(2026, 2, 4)).date == dt.date(2026, 2, 4)  # never after today


def test_listing_without_section_rules_reads_kind_from_the_block():
    text = ("\\\\\narXiv:2602.05555 (*cross-listing*)\nDate: Thu, 5 Feb 2026 10:00:00 GMT   (1kb)\n\n"
            "Title: Crossed\nAuthors: A. B\nCategories: math.OC cs.LG\n\\\\\n  Text.\n"
            "\\\\ ( https://arxiv.org/abs/2602.05555 ,  1kb)\n" + "-" * 78 + "\n"
            "\\\\\narXiv:2501.06666\nreplaced with revised version Thu, 5 Feb 2026 10:00:00 GMT   (2kb)\n\n"
            "Title: Replaced\nAuthors: C. D\nCategories: cs.LG\n\\\\ ( https://arxiv.org/abs/2501.06666 ,  2kb)\n")
    digest = sources.parse_digest(text.encode(), TODAY)
    assert [(e.arxiv_id, e.kind) for e in digest.entries] == [("2602.05555", "cross-list"),
                                                            ("2501.06666", "replacement")]


def test_listing_truncated_and_duplicate_blocks():
    block = ("\\\\\narXiv:2602.07777\nDate: Thu, 5 Feb 2026 10:00:00 GMT   (1kb)\n\nTitle: {t}\nAuthors: A\n"
             "Categories: cs.LG\n\\\\\n  Abstract of {t}.\n")
    text = (block.format(t="Whole") + "\\\\ ( https://arxiv.org/abs/2602.07777 ,  1kb)\n" + "-" * 78 + "\n"
            + block.format(t="Again") + "\\\\ ( https://arxiv.org/abs/2602.07777 ,  1kb)\n" + "-" * 78 + "\n"
            + block.replace("07777", "08888").format(t="Cut"))
    digest = arxiv_listing.parse(text, TODAY)
    assert [e.title for e in digest.entries] == ["Whole", "Cut"]
    assert digest.warnings[0] == "line 12: arXiv 2602.07777 again (first at line 1); skipped"
    assert "line 23: arXiv 2602.08888 ends without its closing" in digest.warnings[1]


def test_listing_with_no_readable_block_is_refused():
    with pytest.raises(DigestError, match="none of the 1 blocks"):
        sources.parse_digest(b"\\\\\narXiv:\nTitle: x\n\\\\\n  y\n", TODAY)


# -- trending pages: ids and code links in the text ---------------------------------------------

def test_trending_arxiv_id_and_github_from_the_text():
    text = make_digest("Mar 12", [
        ("Paper One (arxiv.org/abs/2603.01111v2)", "Abstract with https://github.com/a-b/c_d.git, done."),
        ("Paper Two", "See https://arxiv.org/pdf/hep-th/9901001v1 and https://github.com/x/y/tree/main/z."),
        ("Paper Three", "No links; github.io pages are not repositories: https://x.github.io/y"),
    ])
    e1, e2, e3 = trending.parse(text, TODAY).entries
    assert (e1.arxiv_id, e1.github) == ("2603.01111", "https://github.com/a-b/c_d")
    assert (e2.arxiv_id, e2.github) == ("hep-th/9901001", "https://github.com/x/y")
    assert (e3.arxiv_id, e3.github) == (None, None)


# -- bad input ------------------------------------------------------------------------------------

@pytest.mark.parametrize("data, reason", [
    (b"", "empty"),
    (b" \r\n\t\n", "empty"),
    (bytes(range(256)) * 4, "binary"),
    (bytes((i * 37 + 11) % 255 + 1 for i in range(2000)), "binary"),  # no NUL, but control characters
    (b'[{"paper": {"id": "2601.01234", "title": "Cut', "truncated"),
    (b"Dear colleagues,\n\nplease find attached the minutes of Tuesday's meeting.\n", "not a digest format"),
    ("Get trending papers in your email inbox!\n\nMar 12\n\nT\n\nA\n".encode("utf-16-le"), "UTF-16"),
    ("Get trending papers in your email inbox!\n\nMar 12\n\nT\n\nA\n".encode("utf-16-be"), "UTF-16"),
    (b"<html><body><p>Hello</p></body></html>", "not a digest format"),
    (b"<?xml version='1.0'?><note>hi</note>", "not a digest format"),
])
def test_bad_input_is_refused_with_a_reason(data, reason):
    with pytest.raises(DigestError) as err:
        sources.parse_digest(data, TODAY)
    assert reason in str(err.value)
    assert err.value.exit_code == 1


def test_unknown_format_hint_lists_the_formats():
    with pytest.raises(DigestError) as err:
        sources.parse_digest(b"just some prose\n", TODAY)
    for name in ("email", "hf-json", "feed", "arxiv-listing", "trending"):
        assert name in (err.value.hint or "")


def test_utf16_with_a_bom_is_read():
    text = make_digest("Mar 12", [("Café", "Ünïcode.")])
    digest = sources.parse_digest(text.encode("utf-16"), TODAY)
    assert digest.entries[0].title == "Café" and not digest.warnings


@pytest.mark.parametrize("module, name", [(hf_json, "hf-list.json"), (feed, "atom.xml"),
                                          (arxiv_listing, "listing.txt")])
def test_looks_like_is_specific(module, name):
    mine = fixture(name).decode()
    others = [fixture(n).decode() for n in ("hf-list.json", "atom.xml", "listing.txt") if n != name]
    others.append(make_digest("Mar 12", [("T", "A")]))
    assert module.looks_like(mine)
    assert not any(module.looks_like(o) for o in others)


# -- the real files in ../shared/data -----------------------------------------------------------

def _hf_items(path: Path) -> list[dict]:
    doc = json.loads(path.read_text(encoding="utf-8"))
    items = doc["data"] if isinstance(doc, dict) else doc
    return [ast.literal_eval(i) if isinstance(i, str) else i for i in items]


HF_DATES = {  # the day each file lists; 2025-03-12 carries no list date, so its latest publishedAt
    "2024-07-12.json": dt.date(2024, 7, 12), "2024-10-30.json": dt.date(2024, 10, 30),
    "2024-12-11.json": dt.date(2024, 12, 11), "2025-01-10.json": dt.date(2025, 1, 10),
    "2025-03-12.json": dt.date(2025, 3, 11), "2025-03-25.json": dt.date(2025, 3, 25),
    "2026-03-12.json": dt.date(2026, 3, 12), "2026-08-20.json": dt.date(2026, 8, 20),
}


@pytest.mark.shared
def test_real_hf_days(shared):
    paths = sorted((shared / "data" / "hf-daily-api").glob("*.json"))
    assert {p.name for p in paths} == set(HF_DATES)
    for path in paths:
        items = _hf_items(path)
        digest = sources.parse_digest(path.read_bytes(), TODAY)
        assert digest.format == "hf-json"
        assert len(digest.entries) == len(items), path.name
        assert [e.arxiv_id for e in digest.entries] == [i["paper"]["id"] for i in items]
        assert [e.title for e in digest.entries] == [" ".join(i["paper"]["title"].split()) for i in items]
        assert [e.upvotes for e in digest.entries] == [i["paper"]["upvotes"] for i in items]
        assert [len(e.authors) for e in digest.entries] == [len(i["paper"]["authors"]) for i in items]
        assert digest.date == HF_DATES[path.name], path.name
        assert not digest.warnings, path.name
        assert all(e.abstract and "\n" not in e.title and e.line > 0 for e in digest.entries)
        with_repo = [i["paper"]["githubRepo"] for i in items if i["paper"].get("githubRepo")]
        assert [e.github for e in digest.entries if e.github and e.github in with_repo] == with_repo


@pytest.mark.shared
def test_real_hf_repr_days_are_the_malformed_ones(shared):
    folder = shared / "data" / "hf-daily-api"
    for name in ("2024-12-11.json", "2025-01-10.json"):
        doc = json.loads((folder / name).read_text(encoding="utf-8"))
        items = doc["data"] if isinstance(doc, dict) else doc
        assert all(isinstance(i, str) for i in items)
        assert len(sources.parse_digest((folder / name).read_bytes(), TODAY).entries) == len(items)


@pytest.mark.shared
def test_real_atom_response(shared):
    path = shared / "data" / "arxiv-atom" / "arxiv-api-query.xml"
    ns = {"a": "http://www.w3.org/2005/Atom"}
    root = ET.parse(path).getroot()
    xml_entries = root.findall("a:entry", ns)
    ids = [re.sub(r"v\d+$", "", e.findtext("a:id", namespaces=ns).split("/abs/")[1]) for e in xml_entries]
    digest = sources.parse_digest(path.read_bytes(), TODAY)
    assert len(xml_entries) == len(digest.entries) == 100
    assert [e.arxiv_id for e in digest.entries] == ids
    assert [e.categories for e in digest.entries] == [
        tuple(c.get("term") for c in x.findall("a:category", ns)) for x in xml_entries]
    assert [len(e.authors) for e in digest.entries] == [len(x.findall("a:author", ns)) for x in xml_entries]
    assert digest.date == dt.date.fromisoformat(root.findtext("a:updated", namespaces=ns)[:10])
    assert all(e.title and e.abstract and e.published for e in digest.entries)
    assert not digest.warnings


@pytest.mark.shared
@pytest.mark.parametrize("name, date, warnings", [
    ("2026-01-23.txt", dt.date(2026, 1, 23), 0),
    ("2026-01-26.txt", dt.date(2026, 1, 26), 0),
    ("malformed.txt", dt.date(2026, 1, 22), 3),
])
def test_real_arxiv_listings(shared, name, date, warnings):
    path = shared / "data" / "arxiv-listing-email" / name
    text = path.read_text(encoding="utf-8")
    ids = list(dict.fromkeys(re.findall(r"^arXiv:(\S+)", text, re.M)))  # duplicates are dropped
    digest = sources.parse_digest(path.read_bytes(), TODAY)
    assert digest.format == "arxiv-listing"
    assert [e.arxiv_id for e in digest.entries] == ids
    assert digest.date == date
    assert len(digest.warnings) == warnings
    assert all(e.title and e.authors and e.categories and e.kind == "new" for e in digest.entries)
    lines = text.splitlines()
    assert all(lines[e.line - 1] == "\\\\" and lines[e.line] == f"arXiv:{e.arxiv_id}" for e in digest.entries)


@pytest.mark.shared
def test_real_malformed_listing_warnings_name_lines(shared):
    digest = sources.parse_digest((shared / "data" / "arxiv-listing-email" / "malformed.txt").read_bytes(), TODAY)
    assert [w.split(":")[0] for w in digest.warnings] == ["line 25", "line 35", "line 45"]
    assert "without an arXiv id" in digest.warnings[0]
    assert "cut short" in digest.warnings[1]
    assert "again" in digest.warnings[2]


# collapse and github_in take shortcuts (memchr searches, trying the link pattern only next to "://"):
# property-tested equal to the plain definitions, on text full of the characters that matter.
_TRICKY = st.text(st.sampled_from(list("ab .:/-_") + ["\t", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x1f", "\x00",
                                                     "\xa0", "\x85", "\u2028", "\u3000", "é", "ſ", "K"]))
_LINKY = st.lists(st.sampled_from(["://", "http", "https", "HTTPS", "github.com", "GitHub.COM", "www.", "/",
                                   "orgs", "topics/", "owner", "repo", ".git", ".", " ", "\n", "ſ", "x"]),
                  max_size=20).map("".join)


@given(st.one_of(_TRICKY, _LINKY))
def test_collapse_is_split_and_join(text):
    assert _text.collapse(text) == " ".join(text.split())


def _github_in_by_definition(text):
    for m in _text._GITHUB.finditer(text):
        owner, repo = m.group(1), m.group(2).rstrip(".")
        repo = repo[:-4] if repo.lower().endswith(".git") else repo
        if owner.lower() not in _text._NOT_REPOS and repo:
            return f"https://github.com/{owner}/{repo}"
    return None


@given(st.one_of(_LINKY, _TRICKY))
def test_github_in_finds_what_the_pattern_finds(text):
    assert [m.span() for m in _text._github_links(text)] == [m.span() for m in _text._GITHUB.finditer(text)]
    assert _text.github_in(text) == _github_in_by_definition(text)


def test_github_in_skips_pages_that_are_not_repositories():
    text = "See https://github.com/orgs/x and HTTP://WWW.GitHub.com/Owner/Repo.git/tree/main."
    assert _text.github_in(text) == "https://github.com/Owner/Repo"
    assert _text.github_in("no links", "http://example.org/a", None) is None
