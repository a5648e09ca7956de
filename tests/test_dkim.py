"""digestmail.dkim: signatures that dkimpy verifies against a stub DNS answer, and that tampering breaks."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import re
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digestmail import message
from digestmail.dkim import DkimSigner
from digestmail.errors import ConfigError
from digestmail.models import RenderedEmail

# dkimpy, the independent verifier: a test-only dependency, skipped without it except in CI.
dkim = __import__("dkim") if os.environ.get("CI") == "true" else pytest.importorskip("dkim")

DOMAIN = "example.org"
SELECTOR = "digest2026"
NOW = dt.datetime(2026, 11, 23, 8, 0, 0, tzinfo=dt.timezone.utc)
DATE = dt.datetime(2026, 11, 23, 9, 30, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))
SENDER = ("Trending Papers", "papers@example.org")
TO = ("Ada Lovelace", "ada@example.org")
LIST_HEADERS = (b"List-Id: Trending Papers <papers.example.org>\r\n"
                b"List-Unsubscribe: <https://papers.example.org/u/TOKEN123>,\r\n"
                b" <mailto:unsubscribe@example.org?subject=unsubscribe>\r\n"
                b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
                b"Precedence: bulk\r\n")
TEXT = "3 new papers for you, Ada\n\n1. Warmup-Free Adam\n   topic optimizers: Adam\n\nüñíçødé ✓ 🎉\n"
HTML = "<html><body><p style=\"color:#111\">Warmup-Free Adam &amp; more</p>\n</body></html>\n"
LONG_TEXT = "".join(f"{i}. A paper about optimizers, diffusion and reasoning — ünïcödé {'word ' * 14}\n"
                    for i in range(600))
LONG_HTML = "<html><body>" + "".join(f"<tr><td style=\"padding:8px\">card {i} “quoted” — {'x' * 90}</td></tr>\n"
                                      for i in range(400)) + "</body></html>\n"


def pem(key: object) -> bytes:
    return key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def signer(rsa_key: rsa.RSAPrivateKey) -> DkimSigner:
    return DkimSigner(DOMAIN, SELECTOR, pem(rsa_key))


def txt_record(key: object) -> bytes:
    """The DNS TXT answer, computed here from the public key (independently of DkimSigner.dns_record)."""
    pub = key.public_key()  # type: ignore[attr-defined]
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return b"v=DKIM1; k=ed25519; p=" + base64.b64encode(raw)
    der = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


def verify(data: bytes, key: object, domain: str = DOMAIN, selector: str = SELECTOR) -> bool:
    """dkimpy's verdict, with DNS answered by a stub that knows exactly one name."""
    expected = f"{selector}._domainkey.{domain}.".encode()

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        return txt_record(key) if name.rstrip(b".") + b"." == expected else None

    return bool(dkim.verify(data, dnsfunc=dnsfunc))


def build(subject: str = "3 new papers for you: Warmup-Free Adam", *, text: str = TEXT, html: str = HTML,
          list_headers: bool = True) -> bytes:
    """A message from digestmail.message.build, with the list headers the delivery code adds
    (written by message.ListHeaders where the builder has it, else spliced in by hand)."""
    kwargs = {}
    if list_headers and hasattr(message, "ListHeaders"):
        kwargs["list_headers"] = message.ListHeaders(
            "Trending Papers", "papers.example.org",
            ("https://papers.example.org/u/TOKEN123", "mailto:unsubscribe@example.org?subject=unsubscribe"))
    data = message.build(RenderedEmail(subject, html, text), sender=SENDER, to=TO,
                         message_id="ed-2026-11-23.ada@example.org", date=DATE, **kwargs)
    if list_headers and b"\r\nList-Unsubscribe:" not in data.partition(b"\r\n\r\n")[0]:
        head, _, body = data.partition(b"\r\n\r\n")
        data = head + b"\r\n" + LIST_HEADERS + b"\r\n" + body
    return data


def sig_header(signed: bytes) -> bytes:
    """The raw DKIM-Signature field (folded, with CRLFs) at the top of a signed message."""
    m = re.match(rb"DKIM-Signature:.*?\r\n(?![ \t])", signed, re.S)
    assert m, signed[:200]
    return m.group()


def tags(signed: bytes) -> dict[str, str]:
    value = sig_header(signed).partition(b":")[2].decode("ascii")
    value = re.sub(r"\s+", "", value)
    return dict(t.split("=", 1) for t in value.split(";") if t)


def replace_header(data: bytes, name: bytes, new_line: bytes) -> bytes:
    """Swap one (possibly folded) header field for another line."""
    pattern = re.compile(rb"^" + re.escape(name) + rb":.*?\r\n(?![ \t])", re.M | re.S | re.I)
    out, n = pattern.subn(lambda _: new_line + b"\r\n", data, count=1)
    assert n == 1
    return out


# -- verifies ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("subject", [
    "3 new papers for you: Warmup-Free Adam",
    "Neue Arbeiten für Sie: Größenordnungen — “Diffusion” ✓ 🎉",
    "論文のお知らせ: 拡散モデルと強化学習の最新動向について、今週の十本",
    "A very long plain subject " + "about optimizers and learning rates " * 6,
    "=?utf-8?q?looks_encoded?= but is not",
])
@pytest.mark.parametrize("long_body", [False, True])
def test_dkimpy_verifies_signed_messages(signer: DkimSigner, rsa_key: rsa.RSAPrivateKey, subject: str,
                                         long_body: bool) -> None:
    data = build(subject, text=LONG_TEXT if long_body else TEXT, html=LONG_HTML if long_body else HTML)
    if long_body:
        assert len(data) > 90_000
    signed = signer.sign(data, NOW)
    assert signed.endswith(data) and signed[:-len(data)] == sig_header(signed)  # exactly prepended
    assert verify(signed, rsa_key)


def test_tags_are_relaxed_simple_rsa_sha256_with_the_given_time(signer: DkimSigner) -> None:
    t = tags(signer.sign(build(), NOW))
    assert t["v"] == "1" and t["a"] == "rsa-sha256" and t["c"] == "relaxed/simple"
    assert t["d"] == DOMAIN and t["s"] == SELECTOR
    assert t["t"] == str(int(NOW.timestamp())) == "1795420800"
    assert "x" not in t and "l" not in t  # no expiry unless asked; never a body length
    assert list(t)[-1] == "b"


def test_expire_after_adds_x(rsa_key: rsa.RSAPrivateKey) -> None:
    s = DkimSigner(DOMAIN, SELECTOR, pem(rsa_key), expire_after=dt.timedelta(days=7))
    signed = s.sign(build(), dt.datetime.now(dt.timezone.utc))
    t = tags(signed)
    assert int(t["x"]) - int(t["t"]) == 7 * 86400
    assert verify(signed, rsa_key)


def test_signed_headers_present_ones_with_oversigning(signer: DkimSigner) -> None:
    h = tags(signer.sign(build(), NOW))["h"].split(":")
    assert h == ["from", "from", "to", "to", "subject", "subject", "date", "message-id", "mime-version",
                 "content-type", "list-id", "list-unsubscribe", "list-unsubscribe", "list-unsubscribe-post",
                 "list-unsubscribe-post"]
    assert "list-unsubscribe-post" not in [x.decode() for x in dkim.DKIM.SHOULD]  # why we list our own
    # Absent headers are not listed: a message without list headers signs only what it has.
    h = tags(signer.sign(build(list_headers=False), NOW))["h"].split(":")
    assert not any(x.startswith("list-") for x in h) and "precedence" not in h


def test_signature_header_lines_fit_78(signer: DkimSigner) -> None:
    for subject in ("short", "ü" * 200):
        head = sig_header(signer.sign(build(subject, text=LONG_TEXT), NOW))
        assert head.endswith(b"\r\n") and head.count(b"\n") == head.count(b"\r\n")
        lines = head[:-2].split(b"\r\n")
        assert len(lines) > 1 and all(len(line) <= 78 for line in lines), lines
        assert all(line[:1] == b" " for line in lines[1:])


def test_deterministic_for_a_fixed_now(signer: DkimSigner) -> None:
    data = build(text=LONG_TEXT)
    assert signer.sign(data, NOW) == signer.sign(data, NOW)
    later = signer.sign(data, NOW + dt.timedelta(seconds=1))
    assert later != signer.sign(data, NOW) and tags(later)["t"] == str(int(NOW.timestamp()) + 1)
    # The timestamp is the instant, whatever zone `now` is written in.
    assert signer.sign(data, NOW.astimezone(dt.timezone(dt.timedelta(hours=-7)))) == signer.sign(data, NOW)


def test_dns_record_matches_the_key(signer: DkimSigner, rsa_key: rsa.RSAPrivateKey) -> None:
    assert signer.dns_record().encode() == txt_record(rsa_key)
    assert signer.record_name == "digest2026._domainkey.example.org"


# -- tampering breaks it ------------------------------------------------------------------------------


def test_tampering_breaks_the_signature(signer: DkimSigner, rsa_key: rsa.RSAPrivateKey) -> None:
    signed = signer.sign(build(text=LONG_TEXT), NOW)
    assert verify(signed, rsa_key)
    head, _, body = signed.partition(b"\r\n\r\n")
    top = sig_header(signed)
    rest = signed[len(top):]
    cases = {
        "subject changed": replace_header(signed, b"Subject", b"Subject: 3 new papers for you: Buy now"),
        "body changed": head + b"\r\n\r\n" + body[:-60] + bytes([body[-60] ^ 1]) + body[-59:],
        "body byte appended": signed[:-2] + b"x\r\n",
        "second From on top": top + b"From: Mallory <mallory@example.net>\r\n" + rest,
        "second From below": head + b"\r\nFrom: Mallory <mallory@example.net>\r\n\r\n" + body,
        "second Subject below": head + b"\r\nSubject: Urgent\r\n\r\n" + body,
        "second To below": head + b"\r\nTo: eve@example.net\r\n\r\n" + body,
        "second List-Unsubscribe below": head + b"\r\nList-Unsubscribe: <https://evil.example/u>\r\n\r\n" + body,
        "second List-Unsubscribe on top": top + b"List-Unsubscribe: <https://evil.example/u>\r\n" + rest,
        "second List-Unsubscribe-Post below":
            head + b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\n" + body,
        "List-Unsubscribe changed": replace_header(signed, b"List-Unsubscribe",
                                                   b"List-Unsubscribe: <https://evil.example/u>"),
        "Date changed": replace_header(signed, b"Date", b"Date: Tue, 24 Nov 2026 09:30:00 +0100"),
        "d= changed": signed.replace(b"d=example.org", b"d=example.com", 1),
    }
    for what, data in cases.items():
        assert data != signed, what
        assert not verify(data, rsa_key, domain="example.com" if what == "d= changed" else DOMAIN), what


def test_oversigning_alone_catches_an_added_list_unsubscribe(rsa_key: rsa.RSAPrivateKey) -> None:
    """Without the extra h= entry, a List-Unsubscribe added on top would verify (bottom-up matching)."""
    data = build()
    plain = DkimSigner(DOMAIN, SELECTOR, pem(rsa_key), oversign=()).sign(data, NOW)
    over = DkimSigner(DOMAIN, SELECTOR, pem(rsa_key)).sign(data, NOW)
    evil = b"List-Unsubscribe: <https://evil.example/u>\r\n"
    for signed, expect in ((plain, True), (over, False)):
        top = sig_header(signed)
        assert verify(top + evil + signed[len(top):], rsa_key) is expect


def test_unsigned_header_added_in_transit_still_verifies(signer: DkimSigner, rsa_key: rsa.RSAPrivateKey) -> None:
    """The control for the tampering tests: a Received line on top is what relays legitimately add."""
    signed = signer.sign(build(), NOW)
    assert verify(b"Received: from relay.example.net by mx.example.org; Mon, 23 Nov 2026\r\n" + signed, rsa_key)
    assert not verify(signed, rsa_key, selector="other")


# -- agrees with dkimpy's own signer -----------------------------------------------------------------


def test_same_bh_and_h_as_dkimpy_sign(signer: DkimSigner, rsa_key: rsa.RSAPrivateKey,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    data = build("Größenordnungen ✓", text=LONG_TEXT, html=LONG_HTML)
    ours = tags(signer.sign(data, NOW))
    monkeypatch.setattr(time, "time", lambda: NOW.timestamp())
    theirs_signed = dkim.sign(data, SELECTOR.encode(), DOMAIN.encode(), pem(rsa_key),
                              canonicalize=(b"relaxed", b"simple"),
                              include_headers=[h.encode() for h in ours["h"].split(":")])
    theirs = tags(theirs_signed + data)
    assert theirs["bh"] == ours["bh"]
    assert (theirs["h"], theirs["t"], theirs["c"]) == (ours["h"], ours["t"], ours["c"])
    assert verify(theirs_signed + data, rsa_key)


def test_same_b_as_dkimpy_for_the_same_tags(signer: DkimSigner, rsa_key: rsa.RSAPrivateKey) -> None:
    """RSA PKCS#1 v1.5 is deterministic: dkimpy's header hashing and pure-Python RSA, fed our tag list
    (relaxed, as it is hashed), must produce our b= bit for bit."""
    for data in (build("Größenordnungen ✓", text=LONG_TEXT), build(list_headers=False)):
        signed = signer.sign(data, NOW)
        unfolded = re.sub(rb"\r\n", b"", sig_header(signed).partition(b":")[2])
        fields = [tuple(f.strip().split(b"=", 1)) for f in re.sub(rb"[ \t]+", b" ", unfolded).split(b";")]
        ours_b = dict(fields)[b"b"].replace(b" ", b"")
        fields = [(k, b"" if k == b"b" else v) for k, v in fields]
        d = dkim.DKIM(data)
        d.hasher = hashlib.sha256
        pk = dkim.crypto.parse_pem_private_key(pem(rsa_key))
        include = tuple(x.strip() for x in dict(fields)[b"h"].split(b":"))
        theirs = d.gen_header(fields, include, dkim.CanonicalizationPolicy.from_c_value(b"relaxed/simple"),
                              b"DKIM-Signature", pk)
        theirs_b = re.sub(rb"\s+", b"", re.search(rb"\bb=([A-Za-z0-9+/=\s]+)$", theirs).group(1))
        assert len(ours_b) == 344 and theirs_b == ours_b  # 2048-bit signature, base64


@pytest.mark.parametrize("body", [b"", b"\r\n", b"\r\n\r\n\r\n", b"one line", b"one line\r\n",
                                  b"one line\r\n\r\n\r\n", b"trailing blanks  \r\n \r\n\r\n",
                                  b"\r\n\r\nafter empty lines\r\n", b"tab\there  \r\n"])
def test_simple_body_canonicalisation(signer: DkimSigner, rsa_key: rsa.RSAPrivateKey, body: bytes) -> None:
    data = b"From: a@example.org\r\nSubject:  spaced \t out \r\n\tand folded  \r\n\r\n" + body
    signed = signer.sign(data, NOW)
    expected = base64.b64encode(hashlib.sha256(dkim.canonicalization.Simple.canonicalize_body(body)).digest())
    assert tags(signed)["bh"] == expected.decode()
    assert verify(signed, rsa_key)


def test_header_only_message_and_odd_spacing(signer: DkimSigner, rsa_key: rsa.RSAPrivateKey) -> None:
    data = b"From: a@example.org\r\nTO:\t b@example.org \r\nSubject:\r\n x\r\n"
    signed = signer.sign(data, NOW)
    assert tags(signed)["bh"] == base64.b64encode(hashlib.sha256(b"\r\n").digest()).decode()
    assert tags(signed)["h"] == "from:from:to:to:subject:subject"
    assert verify(signed, rsa_key)


def test_repeated_headers_are_all_signed_bottom_up(rsa_key: rsa.RSAPrivateKey) -> None:
    s = DkimSigner(DOMAIN, SELECTOR, pem(rsa_key), headers_to_sign=["From", "X-Tag"], oversign=["From"])
    data = b"X-Tag: one\r\nFrom: a@example.org\r\nX-Tag: two\r\n\r\nbody\r\n"
    signed = s.sign(data, NOW)
    assert tags(signed)["h"] == "from:from:x-tag:x-tag"
    assert verify(signed, rsa_key)
    assert not verify(signed.replace(b"X-Tag: one", b"X-Tag: 1"), rsa_key)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(subject=st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=120),
       text=st.text(max_size=400))
def test_any_built_message_verifies(signer: DkimSigner, rsa_key: rsa.RSAPrivateKey, subject: str,
                                    text: str) -> None:
    subject = re.sub("[\u2028\u2029\x85]", " ", subject)
    try:
        data = build(subject, text=text)
    except ValueError:  # a value message.build refuses (a control character): not ours to sign
        return
    assert verify(signer.sign(data, NOW), rsa_key)


# -- Ed25519 (RFC 8463) ---------------------------------------------------------------------------------


def test_ed25519_signature_verifies() -> None:
    pytest.importorskip("nacl", reason="dkimpy verifies ed25519-sha256 with PyNaCl")
    key = ed25519.Ed25519PrivateKey.generate()
    s = DkimSigner(DOMAIN, SELECTOR, pem(key))
    data = build("Ed25519 ✓", text=LONG_TEXT)
    signed = s.sign(data, NOW)
    assert tags(signed)["a"] == "ed25519-sha256"
    assert s.dns_record().encode() == txt_record(key)
    assert verify(signed, key)
    assert not verify(replace_header(signed, b"Subject", b"Subject: changed"), key)
    assert all(len(line) <= 78 for line in sig_header(signed)[:-2].split(b"\r\n"))


# -- errors ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key_pem", [
    b"",
    b"not a key at all",
    b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    "a str that is no PEM",
])
def test_unreadable_key_is_a_config_error_naming_key_file(key_pem: bytes) -> None:
    with pytest.raises(ConfigError) as err:
        DkimSigner(DOMAIN, SELECTOR, key_pem)
    assert "[delivery.dkim] key_file" in str(err.value) and err.value.where == "delivery.dkim.key_file"


def test_unsupported_keys_are_config_errors() -> None:
    short = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ConfigError, match="1024 bits") as err:
        DkimSigner(DOMAIN, SELECTOR, pem(short))
    assert "[delivery.dkim] key_file" in str(err.value)
    with pytest.raises(ConfigError, match="unsupported DKIM key type") as err:
        DkimSigner(DOMAIN, SELECTOR, pem(ec.generate_private_key(ec.SECP256R1())))
    assert "[delivery.dkim] key_file" in str(err.value)
    encrypted = short.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.BestAvailableEncryption(b"secret"))
    with pytest.raises(ConfigError, match="encrypted") as err:
        DkimSigner(DOMAIN, SELECTOR, encrypted)
    assert "[delivery.dkim] key_file" in str(err.value)


def test_traditional_rsa_pem_is_accepted(rsa_key: rsa.RSAPrivateKey) -> None:
    trad = rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                 serialization.NoEncryption())
    assert trad.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert verify(DkimSigner(DOMAIN, SELECTOR, trad).sign(build(), NOW), rsa_key)


def test_bad_domain_or_selector_is_a_config_error(rsa_key: rsa.RSAPrivateKey) -> None:
    for domain, selector, where in (("exa mple.org", SELECTOR, "delivery.dkim.domain"),
                                    ("example.org;x=1", SELECTOR, "delivery.dkim.domain"),
                                    (DOMAIN, "sel;ector", "delivery.dkim.selector"),
                                    (DOMAIN, "", "delivery.dkim.selector")):
        with pytest.raises(ConfigError) as err:
            DkimSigner(domain, selector, pem(rsa_key))
        assert err.value.where == where


def test_bad_messages_are_value_errors(signer: DkimSigner) -> None:
    with pytest.raises(ValueError, match="no From"):
        signer.sign(b"To: b@example.org\r\nSubject: x\r\n\r\nbody\r\n", NOW)
    with pytest.raises(ValueError, match="bare CR or LF"):
        signer.sign(b"From: a@example.org\r\n\r\nbody\nmore\r\n", NOW)
    with pytest.raises(ValueError, match="bare CR or LF"):
        signer.sign(b"From: a@example.org\r\nSubject: a\rb\r\n\r\nbody\r\n", NOW)
    with pytest.raises(ValueError, match="bare CR or LF"):
        signer.sign(b"From: a@example.org\n\nbody\n", NOW)
    with pytest.raises(ValueError, match="malformed header"):
        signer.sign(b"From: a@example.org\r\nnot a header\r\n\r\nbody\r\n", NOW)
    with pytest.raises(ValueError, match="malformed header"):  # obsolete WSP before the colon
        signer.sign(b"From : a@example.org\r\n\r\nbody\r\n", NOW)
    with pytest.raises(ValueError, match="continuation"):
        signer.sign(b" From: a@example.org\r\n\r\nbody\r\n", NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        signer.sign(build(), dt.datetime(2026, 11, 23, 8))
    with pytest.raises(TypeError):
        signer.sign(build().decode("ascii"), NOW)  # type: ignore[arg-type]


def test_bad_header_lists_are_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(ValueError, match="From"):
        DkimSigner(DOMAIN, SELECTOR, pem(rsa_key), headers_to_sign=["To", "Subject"])
    with pytest.raises(ValueError, match="not a header field name"):
        DkimSigner(DOMAIN, SELECTOR, pem(rsa_key), headers_to_sign=["From", "Bad Name"])
    with pytest.raises(ValueError, match="DKIM-Signature"):
        DkimSigner(DOMAIN, SELECTOR, pem(rsa_key), headers_to_sign=["From", "DKIM-Signature"])
