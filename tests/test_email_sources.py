"""Digests that arrive as mail: one .eml message, HTML-only mail, attachments, and splitting mbox files."""

from __future__ import annotations

import datetime as dt
import email.utils
import mailbox
from email.message import EmailMessage
from pathlib import Path

import pytest

from digestmail import sources
from digestmail.errors import DigestError
from digestmail.sources import emails

from .conftest import trending as make_digest

FORMATS = Path(__file__).parent / "data" / "formats"
DATA = Path(__file__).parent / "data"
TODAY = dt.date(2026, 11, 23)


def message(body: str | None = None, *, date: dt.datetime | None = dt.datetime(2026, 3, 12, 7, 30,
                                                                             tzinfo=dt.timezone.utc),
            subject: str = "Daily papers", html: str | None = None, cte: str | None = "8bit",
            attachments: tuple[tuple[str, bytes, str], ...] = ()) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Papers <papers@example.org>"
    msg["To"] = "me@example.org"
    msg["Subject"] = subject
    if date is not None:
        msg["Date"] = email.utils.format_datetime(date)
    msg["Message-ID"] = email.utils.make_msgid(domain="example.org")
    if body is not None:
        msg.set_content(body, cte=cte) if cte else msg.set_content(body)
    if html is not None:
        if body is None:
            msg.set_content(html, subtype="html")
        else:
            msg.add_alternative(html, subtype="html")
    for filename, data, ctype in attachments:
        maintype, subtype = ctype.split("/")
        if body is None and html is None and not msg.get_content_type().startswith("multipart"):
            msg.set_content("See the attachment.")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg


def entries(digest):
    return [(e.title, e.abstract, e.line, e.arxiv_id, e.github, e.kind, e.published) for e in digest.entries]


SMALL = (DATA / "trending-small.txt").read_text(encoding="utf-8")


# -- one message -------------------------------------------------------------------------------

def test_plain_text_message_holds_a_trending_digest():
    plain = sources.parse_digest(SMALL.encode(), TODAY)
    digest = sources.parse_digest(bytes(message(SMALL)), TODAY)
    assert digest.format == "email/trending"
    assert entries(digest) == entries(plain)
    assert not digest.warnings


@pytest.mark.parametrize("cte", ["8bit", "quoted-printable", "base64"])
def test_transfer_encodings_give_the_same_entries(cte):
    plain = sources.parse_digest(SMALL.encode(), TODAY)
    assert entries(sources.parse_digest(bytes(message(SMALL, cte=cte)), TODAY)) == entries(plain)


def test_the_message_date_resolves_the_year():
    text = make_digest("Dec 30", [("Title", "Abstract.")])
    sent = dt.datetime(2026, 1, 2, 9, 0, tzinfo=dt.timezone.utc)
    assert sources.parse_digest(bytes(message(text, date=sent)), TODAY).date == dt.date(2025, 12, 30)
    # the plain file, read on TODAY, would have said 2026-12-30 is in the future and taken 2025 too,
    # but a Nov 1 line shows the difference: the mail of Jan 2 means last year's Nov 1
    text = make_digest("Nov 1", [("Title", "Abstract.")])
    assert sources.parse_digest(text.encode(), TODAY).date == dt.date(2026, 11, 1)
    assert sources.parse_digest(bytes(message(text, date=sent)), TODAY).date == dt.date(2025, 11, 1)


def test_a_message_from_the_future_or_without_date_uses_today():
    text = make_digest("Nov 1", [("Title", "Abstract.")])
    future = dt.datetime(2027, 1, 1, tzinfo=dt.timezone.utc)
    digest = sources.parse_digest(bytes(message(text, date=future)), TODAY)
    assert digest.date == dt.date(2026, 11, 1) and any("after today" in w for w in digest.warnings)
    digest = sources.parse_digest(bytes(message(text, date=None)), TODAY)
    assert digest.date == dt.date(2026, 11, 1) and any("no readable Date" in w for w in digest.warnings)


def test_html_only_message_with_a_trending_page():
    html = (FORMATS / "trending.html").read_text(encoding="utf-8")
    digest = sources.parse_digest(bytes(message(html=html)), TODAY)
    assert digest.format == "email/trending"
    assert [(e.title, e.github, e.arxiv_id) for e in digest.entries] == [
        ("Sparse Mixtures of Tiny Experts", "https://github.com/tiny/moe", None),
        ("Café Robots Learn From Videos", None, "2603.01234"),
    ]
    assert digest.entries[0].abstract.startswith("We route each token to two of 512 tiny experts & match")
    assert digest.date == dt.date(2026, 3, 12)


def test_plain_part_is_preferred_over_html_and_html_is_the_fallback():
    html = (FORMATS / "trending.html").read_text(encoding="utf-8")
    both = sources.parse_digest(bytes(message(SMALL, html=html)), TODAY)
    assert both.entries[0].title == "Sparse Mixtures of Tiny Experts" and len(both.entries) == 3
    # a plain part that is only "view this mail in a browser": the HTML part is the digest
    teaser = sources.parse_digest(bytes(message("View this email in your browser.", html=html)), TODAY)
    assert len(teaser.entries) == 2 and teaser.format == "email/trending"


@pytest.mark.parametrize("name, fmt, ctype", [
    ("hf-wrapper.json", "email/hf-json", "application/json"),
    ("atom.xml", "email/feed", "application/atom+xml"),
    ("listing.txt", "email/arxiv-listing", "text/plain"),
])
def test_digest_as_an_attachment(name, fmt, ctype):
    data = (FORMATS / name).read_bytes()
    msg = message("Today's digest is attached.", attachments=((name, data, ctype),))
    digest = sources.parse_digest(bytes(msg), TODAY)
    assert digest.format == fmt
    assert entries(digest) == entries(sources.parse_digest(data, TODAY))


def test_listing_in_the_body_keeps_its_own_date():
    text = (FORMATS / "listing.txt").read_text(encoding="utf-8")
    sent = dt.datetime(2026, 2, 9, 1, 5, tzinfo=dt.timezone.utc)
    digest = sources.parse_digest(bytes(message(text, date=sent)), TODAY)
    assert digest.format == "email/arxiv-listing" and digest.date == dt.date(2026, 2, 9)
    assert any("line 29: block without an arXiv id" in w for w in digest.warnings)  # body lines
    # read before it went out: never after the message's own date
    early = dt.datetime(2026, 2, 7, 12, 0, tzinfo=dt.timezone.utc)
    assert sources.parse_digest(bytes(message(text, date=early)), TODAY).date == dt.date(2026, 2, 7)


def test_latin1_body_is_decoded_by_its_charset():
    text = make_digest("Mar 12", [("Café Robots", "Übung macht den Meister.")])
    msg = EmailMessage()
    msg["From"], msg["Subject"], msg["Date"] = "a@example.org", "x", "Thu, 12 Mar 2026 08:00:00 +0000"
    msg.set_content(text.encode("latin-1"), maintype="text", subtype="plain", cte="8bit",
                    params={"charset": "iso-8859-1"})
    digest = sources.parse_digest(bytes(msg), TODAY)
    assert digest.entries[0].title == "Café Robots" and not digest.warnings


def test_a_message_that_is_not_a_digest():
    with pytest.raises(DigestError) as err:
        sources.parse_digest(bytes(message("Lunch on Friday?\n\nCheers")), TODAY)
    assert "whose text is not a digest" in str(err.value) and "Daily papers" in str(err.value)
    assert "trending" in (err.value.hint or "")
    with pytest.raises(DigestError, match="without a text part"):
        msg = message(None)
        msg.set_content(b"\x89PNG", maintype="image", subtype="png")
        sources.parse_digest(bytes(msg), TODAY)


def test_a_forwarded_message_is_read_through():
    inner = message(SMALL, date=dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc), subject="Trending")
    outer = message("FYI, see the forwarded digest.", subject="Fwd: Trending")
    outer.add_attachment(inner)
    digest = sources.parse_digest(bytes(outer), TODAY)
    assert digest.format == "email/trending" and len(digest.entries) == 3


@pytest.mark.parametrize("text, expected", [
    ("From: a@b\nSubject: x\n\nbody", True),
    ("Received: from x\n by y\nDate: Thu, 12 Mar 2026 08:00:00 +0000\nX-Any: 1\n\nbody", True),
    ("From MAILER-DAEMON Thu Mar 12 08:00:00 2026\nFrom: a@b\nSubject: x\n\nbody", True),
    ("Subject: only one header\n\nbody", False),
    ("Title: A\nAuthors: B\n\nnot mail", False),
    ("new\n\nGet trending papers in your email inbox!\n", False),
    ("Dear all,\nDate: tomorrow\n", False),
    ("[{\"paper\": {}}]", False),
])
def test_looks_like_a_message(text, expected):
    assert emails.looks_like(text) is expected


# -- mbox ----------------------------------------------------------------------------------------

def test_split_mbox_unquotes_and_drops_separators():
    data = (b"From alice@example.org Thu Mar 12 08:00:00 2026\n"
            b"From: alice@example.org\nSubject: one\n\n"
            b"first body\n>From the start\n>>From quoted twice\n\n"
            b"From bob@example.org Fri Mar 13 08:00:00 2026\r\n"
            b"From: bob@example.org\r\nSubject: two\r\n\r\nsecond body\r\n")
    first, second = emails.split_mbox(data)
    assert first == (b"From: alice@example.org\nSubject: one\n\n"
                     b"first body\nFrom the start\n>From quoted twice\n")
    assert second == b"From: bob@example.org\r\nSubject: two\r\n\r\nsecond body\r\n"


def test_split_mbox_needs_a_blank_line_before_a_separator():
    data = (b"From a@example.org Thu Mar 12 08:00:00 2026\nSubject: one\n\nline\n"
            b"From b@example.org Thu Mar 12 08:00:00 2026\nstill the first message\n")
    assert len(emails.split_mbox(data)) == 1


def test_split_mbox_edge_cases():
    assert emails.split_mbox(b"") == []
    with pytest.raises(DigestError, match="not an mbox"):
        emails.split_mbox(b"From: a@b\nSubject: x\n\nbody\n")


def test_mbox_written_by_the_stdlib_round_trips(tmp_path):
    digests = [make_digest("Mar 12", [("Quoting Matters", "From the first line on, mbox quotes it.")]),
               SMALL]
    box = mailbox.mbox(tmp_path / "in.mbox")
    for text in digests:
        box.add(message(text))
    box.flush()
    box.close()
    data = (tmp_path / "in.mbox").read_bytes()
    assert b"\n>From the first line on" in data  # the writer quoted it
    parsed = [sources.parse_digest(m, TODAY) for m in emails.split_mbox(data)]
    assert [entries(d) for d in parsed] == [entries(sources.parse_digest(t.encode(), TODAY)) for t in digests]
    assert parsed[0].entries[0].abstract == "From the first line on, mbox quotes it."


def test_a_one_message_mbox_is_one_digest_and_a_longer_one_is_refused():
    one = b"From x@example.org Thu Mar 12 08:00:00 2026\n" + bytes(message(SMALL))
    assert len(sources.parse_digest(one, TODAY).entries) == 3
    with pytest.raises(DigestError, match="with 2 messages"):
        sources.parse_digest(one + b"\n" + one, TODAY)


# -- the real digests wrapped in mail --------------------------------------------------------------

def _real_texts(shared: Path) -> list[tuple[str, bytes]]:
    files = sorted((shared / "digests").glob("*.txt"))
    files += sorted((shared / "data" / "arxiv-listing-email").glob("*.txt"))
    return [(p.name, p.read_bytes()) for p in files]


@pytest.mark.shared
def test_real_digests_as_eml(shared):
    for name, data in _real_texts(shared):
        plain = sources.parse_digest(data, TODAY)
        wrapped = sources.parse_digest(bytes(message(data.decode("utf-8-sig"), date=None)), TODAY)
        assert wrapped.format == f"email/{plain.format}", name
        assert entries(wrapped) == entries(plain), name
        assert wrapped.date == plain.date, name
        assert [w.split(": ", 1)[1] for w in wrapped.warnings if w.startswith("text/plain")] == list(plain.warnings)


@pytest.mark.shared
def test_real_digests_in_one_mbox(shared, tmp_path):
    texts = _real_texts(shared)
    box = mailbox.mbox(tmp_path / "all.mbox")
    for _, data in texts:
        box.add(message(data.decode("utf-8-sig"), date=None))
    box.close()
    raw = (tmp_path / "all.mbox").read_bytes()
    quoted = sum(data.count(b"\nFrom ") for _, data in texts)
    assert quoted > 0 and raw.count(b"\n>From ") == quoted  # body lines that begin "From " got quoted
    messages = emails.split_mbox(raw)
    assert len(messages) == len(texts)
    for (name, data), msg in zip(texts, messages):
        assert entries(sources.parse_digest(msg, TODAY)) == entries(sources.parse_digest(data, TODAY)), name
