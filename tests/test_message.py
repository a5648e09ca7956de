"""digestmail.message: the bytes it writes parse back, with the stdlib, to exactly what went in."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import email
import email.header
import email.message
import email.policy
import re
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digestmail import message
from digestmail.errors import HeaderError
from digestmail.models import RenderedEmail

SENDER = ("Trending Papers", "papers@example.org")
TO = ("Ada Lovelace", "ada@example.org")
MESSAGE_ID = "abc.123@example.org"
DATE = dt.datetime(2026, 11, 23, 8, 0, 0, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30)))
HEADERS = {"From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type"}
TEXT = ("3 new papers for you, Ada\n\n1. Warmup-Free Adam\n   topic optimizers: Adam\n\n"
        "   A line with trailing spaces   \n   = signs =3D and dots\n.\n.leading dot\n"
        "From the start of a line\n" + "long " * 60 + "\nüñíçødé ✓ 🎉\n")
HTML = "<html><body><p style=\"color:#111\">Warmup-Free Adam &amp; more</p>\n" + "<td>x</td>" * 120 + "</body></html>\n"


def build(subject: str = "3 new papers for you: Warmup-Free Adam", *, text: str = TEXT, html: str = HTML,
          sender: tuple[str, str] = SENDER, to: tuple[str, str] = TO, message_id: str = MESSAGE_ID,
          date: dt.datetime = DATE, eight_bit: bool = False) -> bytes:
    data = message.build(RenderedEmail(subject, html, text), sender=sender, to=to, message_id=message_id,
                         date=date, eight_bit=eight_bit)
    assert_wire_ready(data)  # every message any test here builds
    assert_parts_fit(data)
    return data


def assert_wire_ready(data: bytes) -> None:
    """What SMTP's DATA needs, so the sender can pass the bytes as they are: CRLF line ends only (no
    bare CR or LF), a final CRLF, and no line starting with "." (nothing to dot-stuff)."""
    rest = data.replace(b"\r\n", b"")
    assert b"\r" not in rest and b"\n" not in rest, "a bare CR or LF"
    assert data.endswith(b"\r\n")
    assert not data.startswith(b".") and b"\r\n." not in data, "a line starts with a dot"


def assert_parts_fit(data: bytes) -> None:
    """Each part's lines within its encoding's limit: 76 characters for quoted-printable and base64
    (RFC 2045), 998 octets for a part as it is (RFC 5322), whose bytes are also all valid UTF-8
    (and ASCII when it says 7bit)."""
    for part in parse(data).iter_parts():
        cte = part["Content-Transfer-Encoding"]
        raw = part.get_payload(decode=False).encode("utf-8", "surrogateescape")
        lines = raw.replace(b"\r\n", b"\n").split(b"\n")
        assert max(map(len, lines)) <= (76 if cte in ("quoted-printable", "base64") else 998), cte
        if cte in ("7bit", "8bit"):
            raw.decode("ascii" if cte == "7bit" else "utf-8")


def parse(data: bytes) -> email.message.EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    return msg


def header_lines(data: bytes) -> list[bytes]:
    head, sep, _ = data.partition(b"\r\n\r\n")
    assert sep, "no blank line between header and body"
    return head.split(b"\r\n")


def lf(text: str) -> str:
    """Line ends normalised and trailing blanks dropped: the two things build() changes in a body."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(line.rstrip(" \t") for line in lines)


def assert_encoded_words_sound(data: bytes) -> None:
    """RFC 2047: each encoded word is at most 75 characters and decodes on its own (no split UTF-8)."""
    head = data.partition(b"\r\n\r\n")[0].decode("ascii")
    for word in re.findall(r"=\?[^?\s]*\?[bBqQ]\?[^?\s]*\?=", head):
        assert len(word) <= 75, word
        assert word.lower().startswith("=?utf-8?b?"), word
        base64.b64decode(word[10:-2], validate=True).decode("utf-8")


def raw_field(data: bytes, field: str) -> str:
    """The raw, unfolded value of one header field, straight from the bytes."""
    compat = email.message_from_bytes(data, policy=email.policy.compat32)
    values = compat.get_all(field, [])
    assert len(values) == 1
    return re.sub(r"\r?\n", "", values[0])


def decoded_display_name(data: bytes, field: str) -> str:
    """The display name of the one address in `field`, decoded as RFC 2047 says.

    CPython before the fix for gh-128110 keeps the space between two adjacent encoded words of a
    display name (RFC 2047 §6.2 says to drop it), so a name encoded as several words is decoded with
    `email.header.decode_header`, which follows the RFC; plain and quoted names use the header parser.
    """
    msg = parse(data)
    addresses = msg[field].addresses
    assert len(addresses) == 1, addresses
    phrase = raw_field(data, field).rpartition("<")[0].strip()
    if phrase.startswith("=?"):
        return str(email.header.make_header(email.header.decode_header(phrase)))
    return addresses[0].display_name


# -- structure ----------------------------------------------------------------------------------

def test_headers_decode_to_exactly_the_inputs():
    data = build()
    msg = parse(data)
    assert msg.defects == []
    assert set(msg.keys()) == HEADERS and len(msg.keys()) == len(HEADERS)
    assert str(msg["Subject"]) == "3 new papers for you: Warmup-Free Adam"
    (sender,) = msg["From"].addresses
    assert (sender.display_name, sender.addr_spec) == SENDER
    (to,) = msg["To"].addresses
    assert (to.display_name, to.addr_spec) == TO
    assert msg["Date"].datetime == DATE
    assert msg["Date"].datetime.utcoffset() == dt.timedelta(hours=5, minutes=30)
    assert msg["Message-ID"] == f"<{MESSAGE_ID}>"
    assert msg["MIME-Version"] == "1.0"
    for name in msg.keys():
        assert msg[name].defects == (), name


def test_multipart_alternative_plain_then_html_with_exact_bodies():
    msg = parse(build())
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    for part, expected, cte in zip(parts, (TEXT, HTML), ("quoted-printable", "base64")):
        assert part.defects == []
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] == cte
        assert lf(part.get_content()) == lf(expected)


@pytest.mark.parametrize("text", [
    "", "no newline at the end", "crlf\r\nlines\r\n", "lone\rcarriage return\r", "\n\n\nblank lines\n\n",
    "=?utf-8?q?x?= =3D =\n", "--=_dm_abc123exampleorg\n--=_dm_abc123exampleorg--\n",
    "x" * 5000 + "\n", "tab\tand trailing tab\t\nnul \x00 byte\n",
])
def test_body_edge_cases_round_trip(text):
    msg = parse(build(text=text, html=text))
    assert msg.defects == []
    parts = list(msg.iter_parts())
    assert len(parts) == 2
    for part in parts:
        assert lf(part.get_content()) == lf(text)


def test_every_line_ends_in_crlf_and_fits():
    data = build()
    assert b"\n" not in data.replace(b"\r\n", b"") and b"\r" not in data.replace(b"\r\n", b"")
    assert data.endswith(b"\r\n")
    lines = data.split(b"\r\n")[:-1]
    assert all(len(line) <= 998 for line in lines)
    assert all(len(line) <= 78 for line in header_lines(data))


def body_lines(data: bytes) -> list[bytes]:
    return data.partition(b"\r\n\r\n")[2].split(b"\r\n")


def test_quoted_printable_lines_fit_76():
    # RFC 2045 6.7: encoded lines are at most 76 characters; long lines get soft breaks.
    text = "word " * 100 + "end\n" + "é" * 200 + "\n" + "=" * 100 + "\n"
    data = build(text=text, html=text)
    assert all(len(line) <= 76 for line in body_lines(data))
    assert sum(line.endswith(b"=") for line in body_lines(data)) >= 6


@pytest.mark.parametrize("n", [74, 75])
def test_quoted_printable_line_ending_in_a_space_fits_76(n):
    data = build(text="a" * n + " \nnext é\n")  # (not ASCII: quoted-printable, not 7bit)
    assert all(len(line) <= 76 for line in body_lines(data))


def test_long_plain_subject_folds_within_78_octets():
    subject = " ".join(["Warmup-Free", "Adam:", "Stable", "Training", "Without", "a", "Learning", "Rate"] * 8)
    data = build(subject)
    assert all(len(line) <= 78 for line in header_lines(data))
    assert len([line for line in header_lines(data) if line.startswith(b" ")]) >= 3
    assert str(parse(data)["Subject"]) == subject


def test_message_id_is_used_as_given():
    msg = parse(build(message_id="20261123080000.0123456789abcdef@papers.example.org"))
    assert msg["Message-ID"] == "<20261123080000.0123456789abcdef@papers.example.org>"


# -- non-ASCII and encoded-word lookalikes ---------------------------------------------------------

TRICKY = [
    "Ünïcödé Àccents: naïve café résumé",
    "Emoji 🎉🔥🧪 and ZWJ 👩‍🔬 families 👨‍👩‍👧",
    "中文标题：大型语言模型的训练 日本語のタイトル 한국어 제목",
    "RTL \u202eevil.exe\u202c and Hebrew עברית and Arabic العربية \u200f",
    "=?utf-8?q?=0D=0ABcc:_evil@x.org?=",
    "=?utf-8?b?DQpCY2M6IGV2aWxAeC5vcmc=?=",
    "Re: =?ISO-8859-1?Q?Andr=E9?= Pirard =?utf-8?b?QmNjOiBldmlsQHgub3Jn?= tail",
    "?= =? =?? ?=?= =?utf-8?",
    "Long " + "Ωmega " * 60 + "end",
    "x" * 300,
    "word " * 200,
    "  double  spaces and trailing space ",
    "non\u00a0breaking\u00a0spaces",
    'quotes "double" and \'single\' and \\backslash\\ and (parens) <angle> ;:,',
]


@pytest.mark.parametrize("subject", TRICKY, ids=range(len(TRICKY)))
def test_tricky_subjects_decode_exactly_and_inject_nothing(subject):
    data = build(subject.lstrip())
    msg = parse(data)
    assert msg.defects == []
    assert str(msg["Subject"]) == subject.lstrip()
    assert set(msg.keys()) == HEADERS and len(msg.keys()) == len(HEADERS)
    assert msg.get_all("Bcc") is None and msg.get_all("Cc") is None
    assert not re.search(rb"^(bcc|cc):", data, re.IGNORECASE | re.MULTILINE)
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))
    assert len(list(msg.iter_parts())) == 2
    assert_encoded_words_sound(data)


@pytest.mark.parametrize("name", [n.strip() for n in TRICKY if "  " not in n] + [
    "Ada", "Ada Lovelace", "O'Brien", "Lovelace, Ada", "Dr. Ada (Countess)", "a@b.org", "<ada@evil.org>",
    'Ada "the first" Lovelace', "back\\slash", "semi;colon:colon", "=?utf-8?q?evil?= <evil@x.org>",
], ids=repr)
def test_tricky_display_names_decode_exactly(name):
    data = build(sender=(name, "papers@example.org"), to=(name, "ada@example.org"))
    msg = parse(data)
    assert msg.defects == []
    assert set(msg.keys()) == HEADERS
    for field, addr in (("From", "papers@example.org"), ("To", "ada@example.org")):
        assert msg[field].defects == ()
        (parsed,) = msg[field].addresses
        assert parsed.addr_spec == addr
        assert decoded_display_name(data, field) == name
    assert msg.get_all("Bcc") is None and msg.get_all("Cc") is None
    assert_encoded_words_sound(data)


def test_empty_display_name_gives_a_bare_address():
    msg = parse(build(to=("", "ada@example.org")))
    (to,) = msg["To"].addresses
    assert (to.display_name, to.addr_spec) == ("", "ada@example.org")


@pytest.mark.parametrize("subject", ["é" * 100, "Long " + "Ωmega " * 60, "x" * 70 + " tail"],
                         ids=["accents", "greek", "70-char-word"])
def test_long_subject_header_lines_fit_78_octets(subject):
    data = build(subject)
    assert str(parse(data)["Subject"]) == subject
    assert all(len(line) <= 78 for line in header_lines(data))


@pytest.mark.parametrize("name", ["Ada  Lovelace", " Ada", "Ada "])
def test_display_name_whitespace_is_kept(name):
    data = build(to=(name, "ada@example.org"))
    assert decoded_display_name(data, "To") == name


# -- header injection --------------------------------------------------------------------------

CONTROL = ["\r", "\n", "\r\n", "\x00", "\t", "\x0b", "\x0c", "\x1b", "\x1f", "\x7f", "\r\nBcc: evil@x.org"]


@pytest.mark.parametrize("bad", CONTROL, ids=repr)
@pytest.mark.parametrize("where", ["subject", "sender_name", "to_name", "sender_addr", "to_addr", "message_id"])
def test_control_characters_are_refused(where, bad):
    kwargs: dict = {}
    if where == "subject":
        kwargs["subject"] = f"Hello{bad}World"
    elif where == "sender_name":
        kwargs["sender"] = (f"Trending{bad}Papers", "papers@example.org")
    elif where == "to_name":
        kwargs["to"] = (f"Ada{bad}", "ada@example.org")
    elif where == "sender_addr":
        kwargs["sender"] = ("Trending Papers", f"papers{bad}@example.org")
    elif where == "to_addr":
        kwargs["to"] = ("Ada", f"ada@example.org{bad}")
    else:
        kwargs["message_id"] = f"abc.123{bad}@example.org"
    with pytest.raises(HeaderError):
        build(**kwargs)


@pytest.mark.parametrize("value", ["non-ascii é", "émoji 🎉", "RTL \u202e"])
def test_control_check_accepts_printable_unicode(value):
    # The refusal is specific: printable non-ASCII must still go through (encoded).
    assert str(parse(build(value))["Subject"]) == value


@pytest.mark.parametrize("bad", ["\x85", "\x80", "\x9f"], ids=repr)
def test_c1_control_characters_are_refused(bad):
    with pytest.raises(HeaderError):
        build(f"Hello{bad}World")


@pytest.mark.parametrize("addr", ["", "ada", "ada@", "@example.org", "ada @example.org", "ada@exa mple.org",
                                  "ädä@example.org", "ada@exämple.org", "ada@example.org>"])
def test_malformed_addresses_are_refused(addr):
    with pytest.raises(HeaderError):
        build(to=("Ada", addr))


@pytest.mark.parametrize("addr", ["x>,y@evil.org", "a(b)@x.org", "a;b@x.org", 'a"b@x.org', "a<b@x.org"])
def test_addresses_with_specials_are_refused(addr):
    with pytest.raises(HeaderError):
        build(to=("Ada", addr))


@pytest.mark.parametrize("message_id", ["", "no-at-sign", "<abc@example.org>", "abc@ex ample.org",
                                        "ünï@example.org"])
def test_malformed_message_ids_are_refused(message_id):
    with pytest.raises(HeaderError):
        build(message_id=message_id)


# -- properties ---------------------------------------------------------------------------------

# Zl/Zp (U+2028, U+2029) are line breaks to str.splitlines(), so message.check refuses them too.
PRINTABLE = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=200)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(subject=PRINTABLE)
def test_any_printable_subject_round_trips(subject):
    # Leading whitespace is dropped by every parser from an unstructured header; the renderer strips it.
    subject = subject.lstrip(" ")
    data = build(subject)
    msg = parse(data)
    assert str(msg["Subject"]) == subject
    assert set(msg.keys()) == HEADERS and len(msg.keys()) == len(HEADERS)
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))
    assert_encoded_words_sound(data)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(name=PRINTABLE)
def test_any_printable_display_name_round_trips(name):
    # Runs of spaces in a plain phrase mean one space (see test_display_name_whitespace_is_kept).
    if name.isascii():
        name = re.sub(" +", " ", name).strip(" ")
    data = build(sender=(name, "papers@example.org"), to=(name, "ada@example.org"))
    msg = parse(data)
    assert set(msg.keys()) == HEADERS and len(msg.keys()) == len(HEADERS)
    for field, addr in (("From", "papers@example.org"), ("To", "ada@example.org")):
        (parsed,) = msg[field].addresses
        assert parsed.addr_spec == addr
        assert decoded_display_name(data, field) == name
    assert_encoded_words_sound(data)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(name=st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=60, max_size=300))
def test_any_ascii_display_name_round_trips_on_short_lines(name):
    # Long words and long quoted names go as encoded words: no header line passes RFC 5322's 78.
    name = re.sub(" +", " ", name).strip(" ")
    data = build(sender=(name, "papers@example.org"), to=(name, "ada@example.org"))
    for field in ("From", "To"):
        assert decoded_display_name(data, field) == name
    assert all(len(line) <= 78 for line in header_lines(data))
    assert_encoded_words_sound(data)


@pytest.mark.parametrize("name", ["Ada " + "x" * 200 + " Lovelace", "Lovelace, Ada " + "(Analytical Engine) " * 6,
                                  "y" * 73], ids=["long-word", "long-quoted", "73"])
def test_display_names_with_long_words_fit_78_octets(name):
    data = build(sender=(name.strip(), "papers@example.org"), to=(name.strip(), "ada@example.org"))
    for field in ("From", "To"):
        assert decoded_display_name(data, field) == name.strip()
    assert all(len(line) <= 78 for line in header_lines(data))


def test_a_display_name_that_fits_stays_readable():
    data = build(sender=("y" * 70, "papers@example.org"))
    assert data.startswith(b"From: " + b"y" * 70 + b"\r\n <papers@example.org>\r\n")


def test_a_word_no_header_line_can_hold_is_refused():
    # An address is never split, and one of 1,000 characters cannot fit in RFC 5322's 998.
    with pytest.raises(HeaderError, match="To header would hold a 1012-character word"):
        build(to=("", "a" * 1000 + "@example.org"))
    with pytest.raises(HeaderError, match="List-Unsubscribe"):
        message.ListHeaders("Trending Papers", "digest.example.org",
                            ("https://example.org/u/" + "t" * 1000,)).lines()


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\u0085"])
def test_unicode_line_separators_are_refused(separator):
    """str.splitlines() breaks lines at these, so a header must never carry one."""
    with pytest.raises(HeaderError):
        build(f"line{separator}Bcc: evil@example.org")
    with pytest.raises(HeaderError):
        build(to=(f"Ada{separator}Bcc: evil@example.org", "ada@example.org"))


# -- ready for DATA as it is ----------------------------------------------------------------------

DOTTED = [
    ".", "..", ".leading dot", "..two dots", ". dot and space", "x" * 75 + ".after a soft break",
    "x" * 74 + "..", "é" * 25 + ".", "=" * 25 + ".x", "." + "y" * 200, ("a." * 60 + "\n") * 3,
    "x" * 75 + " .", "x" * 75 + ".\n.", "\t.", ".\t", "x" * 76 + ".", "x" * 150 + ".abc",
]


def text_part(data: bytes) -> str:
    return list(parse(data).iter_parts())[0].get_content()


@pytest.mark.parametrize("eight_bit", [False, True])
@pytest.mark.parametrize("text", DOTTED, ids=range(len(DOTTED)))
def test_lines_starting_with_a_dot_are_encoded_and_decode_the_same(text, eight_bit):
    data = build(text=text + "\n", eight_bit=eight_bit)
    assert lf(text_part(data)) == lf(text + "\n")


LINES = st.lists(st.builds(lambda dot, body, pad: dot + pad * "x" + body,
                           st.sampled_from(["", ".", "..", ". "]),
                           st.text(st.sampled_from(list("ab .=é\t🎉")), max_size=90),
                           st.integers(0, 80)), max_size=8)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(lines=LINES, end=st.sampled_from(["", "\n", "\r\n"]), eight_bit=st.booleans())
def test_any_text_with_dots_is_wire_ready_and_round_trips(lines, end, eight_bit):
    # Dots at the start of lines and wherever a long line may be soft-broken (build checks the rest).
    text = end.join(lines) + end if end else "\n".join(lines)
    data = build(text=text, html=text, eight_bit=eight_bit)
    parts = list(parse(data).iter_parts())
    assert lf(parts[0].get_content()) == lf(text)
    assert lf(parts[1].get_content()) == lf(text)


def test_quoted_printable_without_dots_is_b2a_qp_unchanged():
    # The usual text part: its bytes are binascii.b2a_qp's (the golden files pin them too).
    import binascii

    text = "1. Warmup-Free Adam: Stable Training\n   topic optimizers: Adam · 42 upvotes\n" + "word " * 40 + "end\n"
    assert message.qp(text) == binascii.b2a_qp(text.encode(), istext=True).replace(b"\n", b"\r\n")


# -- the text part as it is: 7bit, 8bit -----------------------------------------------------------

def cte(data: bytes) -> str:
    return list(parse(data).iter_parts())[0]["Content-Transfer-Encoding"]


@pytest.mark.parametrize("text, plain, eight", [
    ("ASCII only\n   indented, = signs and dots. End.\n", "7bit", "7bit"),
    ("Müller · “quoted” … 🎉\n", "quoted-printable", "8bit"),
    ("x" * 998 + "\né\n", "quoted-printable", "8bit"),  # RFC 5322's longest line
    ("x" * 999 + "\né\n", "quoted-printable", "quoted-printable"),
    ("é\n.leading dot\n", "quoted-printable", "quoted-printable"),  # SMTP would end the data there
    (".é\n", "quoted-printable", "quoted-printable"),
    ("é\r\nCRLF\n", "quoted-printable", "quoted-printable"),
    ("é\x00\n", "quoted-printable", "quoted-printable"),
    ("é =_dm_ looks like our boundaries\n", "quoted-printable", "quoted-printable"),
    ("ASCII but a dot\n.x\n", "quoted-printable", "quoted-printable"),
])
def test_the_text_part_goes_as_it_is_where_that_is_safe(text, plain, eight):
    for eight_bit, expected in ((False, plain), (True, eight)):
        data = build(text=text, eight_bit=eight_bit)
        assert cte(data) == expected
        assert lf(text_part(data)) == lf(text)


def test_an_8bit_text_part_is_the_texts_utf8_with_crlf_and_no_trailing_blanks():
    data = build(text="Müller et al.  \n   topic: “Adam” \t\n\nlast line", eight_bit=True)
    body = data.split(b"Content-Transfer-Encoding: 8bit\r\n\r\n")[1].split(b"\r\n--=_dm_")[0]
    assert body == "Müller et al.\r\n   topic: “Adam”\r\n\r\nlast line".encode()


# Mostly safe as it is (so 8bit), with now and then what is not: a leading dot, "=_", a CR, a NUL, a
# line over 998 octets.
TEXTS = st.lists(st.builds(lambda start, pad, body: start + pad * "x" + body,
                           st.sampled_from([""] * 8 + [" ", ".", "=_", "\r", "\x00"]),
                           st.sampled_from([0] * 5 + [5, 80, 950, 1000]),
                           st.text(st.sampled_from(list("ab .=é\t🎉")), max_size=40).map(lambda t: t.lstrip("."))),
                 max_size=5)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(lines=TEXTS, end=st.sampled_from(["", "\n"]))
def test_seven_bit_gives_the_quoted_printable_message_exactly(lines, end):
    text = "\n".join(lines) + end
    plain = build(text=text, html="<p>x</p>")
    eight = build(text=text, html="<p>x</p>", eight_bit=True)
    if cte(eight) == "8bit":
        assert not eight.isascii() and eight != plain
        assert message.seven_bit(eight) == plain
    else:  # ASCII (7bit) or not safe as it is: the same message either way
        assert eight == plain
        assert cte(plain) in ("7bit", "quoted-printable")
    assert lf(text_part(eight)) == lf(text)


def test_seven_bit_refuses_what_has_no_8bit_part():
    with pytest.raises(ValueError, match="8bit text part"):
        message.seven_bit(build(text="é\n"))


def test_a_signed_message_is_wire_ready_too():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from digestmail.dkim import DkimSigner

    key = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    signed = DkimSigner("example.org", "sel", key).sign(build(text=".hidden\n" + "x" * 75 + ".y\n"), DATE)
    assert_wire_ready(signed)


def test_the_html_part_is_encoded_from_its_own_string():
    # html_size keeps the last part's UTF-8 for build(); another string of the same length must never get it.
    a, b = "<p>café</p>" * 50, "<p>naïf</p>" * 50
    assert len(a) == len(b)
    message.html_size(a)
    assert base64.b64decode(message.base64_body(b)).decode("utf-8") == b
    assert message.html_size(b) == message.html_size(a)
    assert base64.b64decode(message.base64_body(a)).decode("utf-8") == a


@pytest.mark.parametrize("size", [0, 1, 56, 57, 58, 3647, 3648, 3649, 7296, 40_000])
def test_base64_lines_are_76_characters_but_the_last(size):
    # 3648 bytes of HTML are 64 lines of 76: the size where _lines76 changes how it cuts.
    html = ("<p>é</p>" * size)[:size]
    data = build(html=html)
    body = data.partition(b"Content-Transfer-Encoding: base64\r\n\r\n")[2].partition(b"\r\n\r\n--")[0]
    lines = body.split(b"\r\n")
    assert all(len(line) == 76 for line in lines[:-1]) and (0 < len(lines[-1]) <= 76 or html == "")
    assert base64.b64decode(body).decode("utf-8") == html


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=3000))
def test_the_html_part_is_the_standard_base64_of_its_utf8(html):
    assert message.base64_body(html) == binascii.b2a_base64(html.encode("utf-8"), newline=False)


def test_without_pybase64_the_standard_library_encodes_the_same_bytes(tmp_path):
    # pybase64 is a dependency, but a message must build the same where it cannot be imported.
    probe = ("import sys; sys.modules['pybase64'] = None\n"
             "from digestmail import message\n"
             "html = '<p>caf\\u00e9 ' * 5000\n"
             "import binascii; assert message._b64encode is not None\n"
             "assert message.base64_body(html) == binascii.b2a_base64(html.encode(), newline=False)\n"
             "print(message._b64encode.__module__)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "digestmail.message"  # the fallback, not pybase64's
