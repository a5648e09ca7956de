"""SMTP delivery end to end: the real CLI in a subprocess against a real (recording) SMTP server."""

from __future__ import annotations

import base64
import email
import email.header
import email.utils
import email.message
import email.policy
import json
import os
import re
import ssl
import subprocess
from pathlib import Path

import pytest

from digestmail import message, tokens

from .smtp_server import HOST, PASSWORD_ENV, SECRET_ENV, Received, SmtpServer
from .smtp_server import run_cli as _run_cli

NOW = "2026-11-23T08:00:00+00:00"
LATER = "2026-11-24T08:00:00+00:00"
SENDER = "papers@example.org"

DIGEST = """new

Get trending papers in your email inbox!

Subscribe

byAK and the research community

Nov 22

Sharpness-Aware Adam for Noisy Labels

We show that the Adam optimizer overfits noisy labels through sharp minima and add a cheap sharpness penalty to its update. The variant keeps the speed of Adam and gains four points on noisy CIFAR.

Federated Speech Recognition with Tiny Adapters

A federated recipe that trains tiny adapters for speech recognition on phones, robust to clients that drop out and to skewed accents.

Score Distillation for Video Diffusion

We distil a video diffusion model into a four-step sampler with score distillation, keeping motion quality while cutting inference cost tenfold.

Retrieval Heads in Long-Context Transformers

A small set of attention heads does the retrieval in long-context transformers; pruning them breaks needle-in-a-haystack tests.
"""

SUBSCRIBERS = """
[topics]
optimizers = "optimizer OR adam"
federated = "federated"
diffusion = "diffusion OR \\"flow matching\\""
robots = "robot OR manipulation"

[[subscribers]]
email = "ada@example.org"
name = "Ada Lovelace"
topics = ["optimizers"]

[[subscribers]]
email = "grace@example.org"
name = "Grace Hopper"
topics = ["federated", "diffusion"]

[[subscribers]]
email = "linus@example.org"
name = "Linus"
topics = ["robots"]
"""


def write_config(root: Path, port: int, *, security: str = "none", username: str = "",
                 password_env: str = "", ca_file: Path | None = None, extra: str = "", smtp_extra: str = "",
                 subscribers: str = SUBSCRIBERS, inbox_files: dict[str, str] | None = None) -> Path:
    """An smtp-transport config in `root`; the inbox gets DIGEST (or `inbox_files`) the first time only.

    `extra` is more TOML placed before the subscribers (e.g. [web] or [delivery.dkim] tables).
    """
    inbox = root / "inbox"
    if not inbox.exists():  # written once: a rewrite for a second run must not look like new mail
        inbox.mkdir()
        for name, text in (inbox_files or {"2026-11-22-trending.txt": DIGEST}).items():
            (inbox / name).write_text(text, encoding="utf-8")
    smtp = [f'host = "{HOST}"', f"port = {port}", f'security = "{security}"', "timeout = 5"]
    if username:
        smtp.append(f'username = "{username}"')
    if password_env:
        smtp.append(f'password_env = "{password_env}"')
    if ca_file is not None:
        smtp.append(f"ca_file = {json.dumps(str(ca_file))}")
    if smtp_extra:
        smtp.append(smtp_extra)
    cfg = root / "digestmail.toml"
    cfg.write_text("\n".join([
        "[store]", 'path = "store.sqlite3"', "",
        "[sources]", 'inbox = "inbox"', "",
        "[delivery]", 'transport = "smtp"', f'from = "Trending Papers <{SENDER}>"', "",
        "[delivery.smtp]", *smtp, "",
        extra, "",
        subscribers,
    ]), encoding="utf-8")
    return cfg


def run_cli(cfg: Path, *args: str, now: str = NOW,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return _run_cli(cfg, *args, now=now, env=env)


def parse(received: Received) -> email.message.EmailMessage:
    msg = email.message_from_bytes(received.data, policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    return msg


@pytest.fixture
def smtp_server():
    """A plain SMTP server (no STARTTLS, no AUTH) that records every message and command."""
    with SmtpServer() as server:
        yield server


@pytest.fixture
def auth_server():
    """Offers AUTH even in clear text, but never STARTTLS: a client that logs in anyway is caught."""
    with SmtpServer(offer_auth=True) as server:
        yield server


def test_run_delivers_one_message_per_matching_subscriber(tmp_path, smtp_server):
    cfg = write_config(tmp_path, smtp_server.port)
    result = run_cli(cfg, "run")
    assert result.returncode == 0, result.stderr
    assert f"sent 2 emails via smtp ({HOST}:{smtp_server.port}), 0 deferred, 0 failed, 1 subscribers skipped" \
        in result.stdout

    by_rcpt = {m.rcpt_tos: m for m in smtp_server.messages}
    assert len(smtp_server.messages) == 2
    assert set(by_rcpt) == {("ada@example.org",), ("grace@example.org",)}
    assert all(m.mail_from == SENDER for m in smtp_server.messages)
    assert not any("linus@example.org" in m.rcpt_tos for m in smtp_server.messages)

    expected = {
        "ada@example.org": ("Ada Lovelace", ["Sharpness-Aware Adam for Noisy Labels"]),
        "grace@example.org": ("Grace Hopper", ["Federated Speech Recognition with Tiny Adapters",
                                               "Score Distillation for Video Diffusion"]),
    }
    for addr, (name, titles) in expected.items():
        msg = parse(by_rcpt[(addr,)])
        assert msg.defects == []
        (to,) = msg["To"].addresses
        assert (to.display_name, to.addr_spec) == (name, addr)
        (sender,) = msg["From"].addresses
        assert sender.addr_spec == SENDER
        assert msg.get_all("Bcc") is None and msg.get_all("Cc") is None
        assert msg.get_content_type() == "multipart/alternative"
        text = msg.get_body(("plain",)).get_content()
        for title in titles:
            assert title in text
        assert "Retrieval Heads" not in text
        # The text part (“quoted” topics, "…") as UTF-8 as it is, announced as RFC 6152 asks.
        assert msg.get_body(("plain",))["Content-Transfer-Encoding"] == "8bit"
        assert "BODY=8BITMIME" in by_rcpt[(addr,)].mail_options
        plural = "s" if len(titles) > 1 else ""
        assert str(msg["Subject"]) == f"{len(titles)} new paper{plural} for you: {titles[0]}"
        assert msg["Message-ID"].endswith("@example.org>")

    # A connection for each message at most (the pool opens them as it needs them), each closed
    # politely; nobody tried to log in.
    connections = smtp_server.commands.count("EHLO") + smtp_server.commands.count("HELO")
    assert 1 <= connections <= 2
    assert smtp_server.commands.count("DATA") == 2
    assert smtp_server.commands.count("QUIT") == connections
    assert "AUTH" not in smtp_server.commands


def test_a_pool_of_connections_sends_at_once_yet_records_each_250_before_the_next(tmp_path):
    """max_connections = 3: envelopes go out on three connections at once, but the server never has
    two messages whose answer is still pending (the window a crash could turn into duplicates)."""
    readers = "".join(f'[[subscribers]]\nemail = "r{i:02d}@example.org"\ntopics = ["optimizers"]\n\n'
                      for i in range(30))
    with SmtpServer(data_delay=0.01) as server:
        cfg = write_config(tmp_path, server.port, subscribers=SUBSCRIBERS.split("[[subscribers]]")[0] + readers,
                           smtp_extra="max_connections = 3")
        result = run_cli(cfg, "run", "--json")
        assert result.returncode == 0, result.stderr
        assert sorted(r for m in server.messages for r in m.rcpt_tos) == [f"r{i:02d}@example.org" for i in range(30)]
        assert server.recorder.connections == 3
        assert server.commands.count("QUIT") == 3
        assert server.recorder.most_in_data == 1
        # The pool at work: while one message waited for its answer, the other connections had
        # theirs under way (one connection at a time would never have a second MAIL open then).
        assert server.recorder.most_open_while_in_data >= 2


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-command-at-a-time"])
def test_a_server_without_8bitmime_gets_the_quoted_printable_message(tmp_path, pipelining):
    # The same run to a server that offers 8BITMIME and to one that does not: the second gets each
    # message with its text part in quoted-printable (7-bit data, no BODY=), the rest unchanged.
    got = {}
    for offered in (True, False):
        root = tmp_path / f"8bitmime-{offered}"
        root.mkdir()
        with SmtpServer(eight_bit_mime=offered, pipelining=pipelining) as server:
            result = run_cli(write_config(root, server.port), "run")
            assert result.returncode == 0, result.stderr
            assert "sent 2 emails" in result.stdout
            got[offered] = {m.rcpt_tos: m for m in server.messages}
    assert set(got[True]) == set(got[False]) == {("ada@example.org",), ("grace@example.org",)}
    for rcpt, eight in got[True].items():
        seven = got[False][rcpt]
        assert not eight.data.isascii() and seven.data.isascii()
        assert "BODY=8BITMIME" in eight.mail_options and not any(o.startswith("BODY") for o in seven.mail_options)
        plain = parse(seven).get_body(("plain",))
        assert plain["Content-Transfer-Encoding"] == "quoted-printable"
        assert plain.get_content() == parse(eight).get_body(("plain",)).get_content()
        assert seven.data == message.seven_bit(eight.data)
        assert parse(seven).get_body(("html",)).get_content() == parse(eight).get_body(("html",)).get_content()


def test_second_run_sends_nothing(tmp_path, smtp_server):
    cfg = write_config(tmp_path, smtp_server.port)
    assert run_cli(cfg, "run").returncode == 0
    assert len(smtp_server.messages) == 2
    again = run_cli(cfg, "run", now=LATER)
    assert again.returncode == 0, again.stderr
    assert "sent 0 emails" in again.stdout
    assert len(smtp_server.messages) == 2


def test_starttls_not_offered_fails_without_auth_or_message(tmp_path, auth_server):
    cfg = write_config(tmp_path, auth_server.port, security="starttls", username="papers-bot",
                       password_env=PASSWORD_ENV)
    result = run_cli(cfg, "run", env={PASSWORD_ENV: "s3cret-pa55"})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "STARTTLS" in result.stderr
    # Not failed for good: deferred, and retried by the next run once its time has come.
    assert "deferred ada@example.org" in result.stderr and "deferred grace@example.org" in result.stderr
    assert "s3cret-pa55" not in result.stdout + result.stderr
    assert auth_server.messages == []
    assert auth_server.auth_attempts == []
    assert not {"AUTH", "MAIL", "RCPT", "DATA"} & set(auth_server.commands)
    assert "EHLO" in auth_server.commands  # the client did connect, and stopped there

    # A failure never marks papers as sent: once the transport works, both editions go out.
    cfg = write_config(tmp_path, auth_server.port, security="none")
    retry = run_cli(cfg, "run", now=LATER)
    assert retry.returncode == 0, retry.stderr
    assert sorted(m.rcpt_tos for m in auth_server.messages) == [("ada@example.org",), ("grace@example.org",)]
    assert auth_server.auth_attempts == []


def test_username_without_tls_is_a_config_error(tmp_path, smtp_server):
    cfg = write_config(tmp_path, smtp_server.port, security="none", username="papers-bot",
                       password_env=PASSWORD_ENV)
    result = run_cli(cfg, "run", env={PASSWORD_ENV: "s3cret-pa55"})
    assert result.returncode == 2
    assert "delivery.smtp.username" in result.stderr
    assert smtp_server.messages == [] and smtp_server.commands == []


def test_unset_password_variable_is_a_config_error(tmp_path, smtp_server):
    cfg = write_config(tmp_path, smtp_server.port, security="starttls", username="papers-bot",
                       password_env=PASSWORD_ENV)
    result = run_cli(cfg, "run")  # PASSWORD_ENV is removed from the child's environment
    assert result.returncode == 2
    assert PASSWORD_ENV in result.stderr
    assert smtp_server.messages == [] and smtp_server.commands == []


# -- TLS: STARTTLS and implicit TLS with a self-signed CA ------------------------------------------------

LOGIN = ("papers-bot", "s3cret-pa55")


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    """A throwaway CA (trustme) and a server certificate for 127.0.0.1: (server context, CA PEM path)."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert(HOST, "localhost")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    ca_file = tmp_path_factory.mktemp("ca") / "test-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return server_ctx, ca_file


@pytest.fixture
def starttls_server(tls):
    """Offers STARTTLS and requires it before anything else; AUTH (after TLS only) accepts LOGIN."""
    with SmtpServer(tls_context=tls[0], require_starttls=True, login=LOGIN) as server:
        yield server


def assert_delivered_to_ada_and_grace(server: SmtpServer) -> None:
    assert sorted(m.rcpt_tos for m in server.messages) == [("ada@example.org",), ("grace@example.org",)]
    for m in server.messages:
        assert parse(m).defects == []


def test_starttls_with_ca_file_logs_in_after_tls_and_delivers(tmp_path, tls, starttls_server):
    cfg = write_config(tmp_path, starttls_server.port, security="starttls", username=LOGIN[0],
                       password_env=PASSWORD_ENV, ca_file=tls[1])
    result = run_cli(cfg, "run", env={PASSWORD_ENV: LOGIN[1]})
    assert result.returncode == 0, result.stdout + result.stderr
    assert_delivered_to_ada_and_grace(starttls_server)

    sessions = [log for log in starttls_server.recorder.sessions if log]  # not the server's own start-up probe
    assert 1 <= len(sessions) <= 2  # the pool opens a connection per message at most
    for log in sessions:  # on every connection of the pool:
        verbs = [v for v, _ in log]
        assert verbs[:2] == ["EHLO", "STARTTLS"] and log[0] == ("EHLO", False) and log[1] == ("STARTTLS", False)
        # Everything after STARTTLS travels inside TLS: a fresh EHLO, then AUTH, then the mail.
        assert all(over_tls for _, over_tls in log[2:]), log
        assert verbs[2] == "EHLO" and verbs.index("AUTH") < verbs.index("MAIL")
    assert starttls_server.recorder.logins == [(starttls_server.auth_attempts[0], LOGIN[0], True)] * len(sessions)
    assert LOGIN[1] not in result.stdout + result.stderr


def test_starttls_without_ca_file_refuses_the_certificate_and_sends_nothing(tmp_path, starttls_server):
    cfg = write_config(tmp_path, starttls_server.port, security="starttls", username=LOGIN[0],
                       password_env=PASSWORD_ENV)  # no ca_file: the system CAs do not know ours
    result = run_cli(cfg, "run", "--json", env={PASSWORD_ENV: LOGIN[1]})
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["sent"] == [] and report["failed"] == []
    assert sorted(d["email"] for d in report["deferred"]) == ["ada@example.org", "grace@example.org"]
    for d in report["deferred"]:
        assert re.search(r"certificate verify failed|CERTIFICATE_VERIFY_FAILED", d["error"]), d
        assert "ca_file" in d["error"], d  # the hint says what to fix
    assert starttls_server.messages == [] and starttls_server.auth_attempts == []
    assert not {"AUTH", "MAIL", "RCPT", "DATA"} & set(starttls_server.commands)
    assert "STARTTLS" in starttls_server.commands  # it tried, and stopped at the handshake


def test_implicit_tls_with_ca_file(tmp_path, tls):
    with SmtpServer(ssl_context=tls[0], login=LOGIN) as server:
        cfg = write_config(tmp_path, server.port, security="tls", username=LOGIN[0], password_env=PASSWORD_ENV,
                           ca_file=tls[1])
        result = run_cli(cfg, "run", env={PASSWORD_ENV: LOGIN[1]})
        assert result.returncode == 0, result.stdout + result.stderr
        assert_delivered_to_ada_and_grace(server)
        assert "STARTTLS" not in server.commands
        assert all(over_tls for _, over_tls in server.recorder.command_log), server.recorder.command_log
        assert [(login, over_tls) for _, login, over_tls in server.recorder.logins] == \
            [(LOGIN[0], True)] * server.recorder.connections


def test_implicit_tls_without_ca_file_sends_nothing(tmp_path, tls):
    with SmtpServer(ssl_context=tls[0], login=LOGIN) as server:
        cfg = write_config(tmp_path, server.port, security="tls", username=LOGIN[0], password_env=PASSWORD_ENV)
        result = run_cli(cfg, "run", env={PASSWORD_ENV: LOGIN[1]})
        assert result.returncode == 1, result.stdout + result.stderr
        assert "certificate verify failed" in result.stderr.lower() or "CERTIFICATE_VERIFY_FAILED" in result.stderr
        assert server.messages == [] and server.commands == []  # no SMTP command ever got through


def test_wrong_password_suppresses_nobody(tmp_path, tls, starttls_server):
    cfg = write_config(tmp_path, starttls_server.port, security="starttls", username=LOGIN[0],
                       password_env=PASSWORD_ENV, ca_file=tls[1])
    result = run_cli(cfg, "run", "--json", env={PASSWORD_ENV: "not-the-password"})
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert starttls_server.messages == [] and starttls_server.auth_attempts
    assert report["suppressed"] == 0, report["failed"]
    # With the right password, the same subscribers still get their papers.
    retry = run_cli(cfg, "run", now=LATER, env={PASSWORD_ENV: LOGIN[1]})
    assert retry.returncode == 0, retry.stderr
    assert_delivered_to_ada_and_grace(starttls_server)


# -- header injection: names and titles that try to add headers or recipients -----------------------------

# (subscriber name, digest title): titles can carry CR/LF (the config refuses them in names), names
# and titles both carry encoded words and header-looking text. Each title has its own keyword, so
# each subscriber's only paper — and so their Subject — is that title.
INJECTION = [
    ("=?utf-8?q?=0D=0ABcc:_x@evil.org?=", "Alpha gains\r\nBcc: x@evil.org"),
    ("Eve <eve@evil.org>, Bcc: x@evil.org", "Bravo =?utf-8?q?=0D=0ABcc:_x@evil.org?= tricks"),
    ('Mallory "Bcc: x@evil.org" \\', "Charlie\nTo: victim@evil.org\n\nInjected body"),
    ("Bcc: x@evil.org", "Delta\u2028Bcc: x@evil.org\u2029Cc: y@evil.org"),
    ("=?utf-8?b?DQpCY2M6IHhAZXZpbC5vcmc=?=", "Echo\x85Bcc: x@evil.org =?utf-8?b?DQpCY2M6IHhAZXZpbC5vcmc=?="),
    ("x@evil.org", "Foxtrot Bcc: x@evil.org, Cc: y@evil.org <z@evil.org>"),
    ('"Quoted", <y@evil.org>; Cc: z@evil.org', "Golf\r\n\r\n<html><body>injected</body></html>"),
    ("Zoë Ünïcödé — ✓ " + "Long " * 20, "Hotel " + "word " * 30 + "\r\nBcc: x@evil.org\r\n" + "more " * 10),
    ("", "India\tBcc:\tx@evil.org\vCc: y@evil.org\fTo: z@evil.org"),
]
KEYWORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india"]
BASE_HEADERS = {"from", "to", "subject", "date", "message-id", "list-id", "precedence", "mime-version",
                "content-type"}


def hf_json(titles: list[str], *, ensure_ascii: bool = True) -> str:
    """A Hugging Face daily-papers JSON list (see tests/data/formats/hf-list.json) with these titles,
    on one line; every non-ASCII character \\u-escaped unless `ensure_ascii` is false."""
    return json.dumps([{"paper": {"id": f"2611.{10000 + i}", "title": t, "summary": f"An abstract number {i}.",
                                  "authors": [{"name": "A. Author"}], "upvotes": 3,
                                  "publishedAt": "2026-11-21T10:00:00.000Z"},
                        "publishedAt": "2026-11-22T10:00:00.000Z", "title": t}
                       for i, t in enumerate(titles)], ensure_ascii=ensure_ascii)


def raw_header_fields(data: bytes) -> list[tuple[str, str]]:
    """(name, unfolded raw value) of every header field, read with nothing but the RFC 5322 grammar."""
    head, sep, _ = data.partition(b"\r\n\r\n")
    assert sep, "no end of header"
    fields: list[list[str]] = []
    for line in head.decode("ascii").split("\r\n"):
        if line[:1] in (" ", "\t"):
            fields[-1][1] += line
        else:
            name, colon, value = line.partition(":")
            assert colon and re.fullmatch(r"[\x21-\x39\x3b-\x7e]+", name), line
            fields.append([name, value])
    return [(n, v) for n, v in fields]


def injection_subscribers() -> str:
    lines = ["[topics]", 'unused = "xylophonic"', ""]
    for i, ((name, _), word) in enumerate(zip(INJECTION, KEYWORDS)):
        lines += ["[[subscribers]]", f'email = "reader{i}@example.org"',
                  f"name = {json.dumps(name, ensure_ascii=False)}", f'query = "title:{word}"', ""]
    return "\n".join(lines)


def check_no_injection(received: Received, addr: str, name: str, title: str, extra: set[str] = frozenset()) -> None:
    data = received.data
    assert received.rcpt_tos == (addr,), received.rcpt_tos
    assert data.count(b"\r") == data.count(b"\n") == data.count(b"\r\n"), "a bare CR or LF"
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))
    fields = raw_header_fields(data)
    names = [n.lower() for n, _ in fields]
    assert sorted(names) == sorted(BASE_HEADERS | extra), names  # each exactly once, nothing else
    # What two independent parsers make of it: one recipient, no Cc/Bcc, the texts back intact.
    for policy in (email.policy.default, email.policy.compat32):
        msg = email.message_from_bytes(data, policy=policy)
        assert msg.get_all("Bcc") is None and msg.get_all("Cc") is None
        assert len(msg.get_all("To")) == 1 and len(msg.get_all("Subject")) == 1
        assert email.utils.getaddresses(msg.get_all("To"))[0][1] == addr
        assert [p.get_content_type() for p in msg.walk()] == ["multipart/alternative", "text/plain", "text/html"]
        for part in msg.walk():
            assert not {k.lower() for k in part.keys()} & {"bcc", "cc", "to"} or part is msg
    msg = parse(received)
    assert msg.defects == [] and all(not p.defects for p in msg.walk())
    (to,) = msg["To"].addresses
    # (The stdlib's address parser keeps the folding space between two encoded words of a display
    # name, RFC 2047 §6.2 says to drop it; email.header.decode_header is exact.)
    assert to.addr_spec == addr and " ".join(to.display_name.split()) == " ".join(name.split())
    raw_to = dict((n.lower(), v) for n, v in raw_header_fields(data))["to"].strip()
    if "=?" in raw_to:  # encoded words: decoded exactly (their text is never parsed as addresses)
        decoded = str(email.header.make_header(email.header.decode_header(raw_to)))
        assert " ".join(decoded.split()) == " ".join(f"{name} <{addr}>".split()), decoded
    else:  # plain or a quoted string
        assert email.utils.getaddresses([raw_to]) == [(name.strip(), addr)], raw_to
    assert str(msg["Subject"]) == "1 new paper for you: " + " ".join(title.split())


def test_header_injection_corpus_adds_no_header_or_recipient(tmp_path, smtp_server):
    titles = [t for _, t in INJECTION]
    cfg = write_config(tmp_path, smtp_server.port, subscribers=injection_subscribers(),
                       inbox_files={"hf-2026-11-22.json": hf_json(titles)})
    result = run_cli(cfg, "run", "--json")
    report = json.loads(result.stdout)
    assert report["ingest"]["new_papers"] == len(titles), report["ingest"]
    assert result.returncode == 0, (report["failed"], result.stderr)
    assert len(smtp_server.messages) == len(INJECTION)
    assert all(not m.data.startswith(b"Bcc") for m in smtp_server.messages)
    by_rcpt = {m.rcpt_tos[0]: m for m in smtp_server.messages}
    for i, (name, title) in enumerate(INJECTION):
        check_no_injection(by_rcpt[f"reader{i}@example.org"], f"reader{i}@example.org", name, title)
    assert not any("evil.org" in r for m in smtp_server.messages for r in m.rcpt_tos)
    assert smtp_server.commands.count("RCPT") == len(INJECTION)


def test_control_characters_in_a_title_do_not_stop_the_email(tmp_path, smtp_server):
    """A title with NUL, ESC, DEL or a C1 control cannot go into a Subject as it is; the email still goes
    out (the controls replaced), rather than failing that subscriber's edition run after run."""
    titles = ["Alpha \x1b[31mred\x1b[0m and \x00 nul \x7f del \x9b csi", "Bravo fine title"]
    subs = "\n".join(["[[subscribers]]", 'email = "reader0@example.org"', 'query = "title:alpha"', "",
                      "[[subscribers]]", 'email = "reader1@example.org"', 'query = "title:bravo"'])
    cfg = write_config(tmp_path, smtp_server.port, subscribers=subs,
                       inbox_files={"hf-2026-11-22.json": hf_json(titles)})
    result = run_cli(cfg, "run", "--json")
    report = json.loads(result.stdout)
    assert report["ingest"]["new_papers"] == 2, report["ingest"]
    assert sorted(m.rcpt_tos for m in smtp_server.messages)[-1] == ("reader1@example.org",)  # the other one went
    assert report["failed"] == [], report["failed"]
    assert sorted(m.rcpt_tos for m in smtp_server.messages) == [("reader0@example.org",), ("reader1@example.org",)]
    for m in smtp_server.messages:
        subject = str(parse(m)["Subject"])
        assert not re.search("[\x00-\x1f\x7f-\x9f]", subject), repr(subject)
    assert result.returncode == 0, result.stderr


def test_json_digest_with_raw_line_separators_in_a_title_is_read_as_json(tmp_path):
    titles = [t for _, t in INJECTION]
    inbox = tmp_path / "in"
    inbox.mkdir()
    (inbox / "hf.json").write_text(hf_json(titles, ensure_ascii=False), encoding="utf-8")
    cfg = write_config(tmp_path, 25, subscribers=injection_subscribers())
    result = run_cli(cfg, "ingest", str(inbox), "--json")
    report = json.loads(result.stdout)
    assert report["files"][0]["format"] is not None, report["files"][0]["reason"]
    assert report["new_papers"] == len(titles)


# -- one-click unsubscribe headers (RFC 8058) and DKIM over the bytes the server received -------------------

WEB_SECRET = "test-secret-" + "0123456789abcdef" * 2
BASE_URL = "https://papers.example.org"
DKIM_DOMAIN, DKIM_SELECTOR = "example.org", "digest2026"


def web_table(mailto: str = "") -> str:
    lines = ["[web]", f'base_url = "{BASE_URL}"', f'secret_env = "{SECRET_ENV}"']
    if mailto:
        lines.append(f'unsubscribe_mailto = "{mailto}"')
    return "\n".join(lines)


def one_field(data: bytes, name: str) -> str:
    """The one (unfolded) raw value of a header field; fails if it is absent or repeated."""
    values = [v for n, v in raw_header_fields(data) if n.lower() == name.lower()]
    assert len(values) == 1, (name, values)
    return " ".join(values[0].split())


def check_list_headers(received: Received, *, mailto: str = "") -> None:
    (addr,) = received.rcpt_tos
    unsubscribe = one_field(received.data, "List-Unsubscribe")
    m = re.fullmatch(re.escape(f"<{BASE_URL}/u/") + r"([A-Za-z0-9_.-]+)>"
                     + (re.escape(f", <mailto:{mailto}?subject=unsubscribe>") if mailto else ""), unsubscribe)
    assert m, unsubscribe
    assert tokens.read(WEB_SECRET.encode(), m.group(1)) == addr
    assert tokens.read(b"another secret", m.group(1)) is None
    assert one_field(received.data, "List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"
    assert one_field(received.data, "Precedence") == "bulk"
    assert re.fullmatch(r".*<[A-Za-z0-9.-]+\.[A-Za-z0-9-]+>", one_field(received.data, "List-Id"))


def test_one_click_unsubscribe_headers(tmp_path, smtp_server):
    cfg = write_config(tmp_path, smtp_server.port, extra=web_table())
    result = run_cli(cfg, "run", env={SECRET_ENV: WEB_SECRET})
    assert result.returncode == 0, result.stderr
    assert len(smtp_server.messages) == 2
    tokens_seen = set()
    for received in smtp_server.messages:
        check_list_headers(received)
        tokens_seen.add(one_field(received.data, "List-Unsubscribe"))
        assert parse(received).defects == []
    assert len(tokens_seen) == 2  # one token per subscriber
    assert WEB_SECRET not in result.stdout + result.stderr


def test_unsubscribe_mailto_is_listed_after_the_https_uri(tmp_path, smtp_server):
    cfg = write_config(tmp_path, smtp_server.port, extra=web_table("unsubscribe@example.org"))
    result = run_cli(cfg, "run", env={SECRET_ENV: WEB_SECRET})
    assert result.returncode == 0, result.stderr
    for received in smtp_server.messages:
        check_list_headers(received, mailto="unsubscribe@example.org")


def test_web_without_its_secret_is_a_config_error(tmp_path, smtp_server):
    cfg = write_config(tmp_path, smtp_server.port, extra=web_table())
    result = run_cli(cfg, "run")  # SECRET_ENV removed from the child's environment
    assert result.returncode == 2, result.stdout + result.stderr
    assert SECRET_ENV in result.stderr
    assert smtp_server.messages == []


def test_dkim_signed_bytes_verify_with_dkimpy_and_sign_list_unsubscribe_post(tmp_path, smtp_server):
    dkim = __import__("dkim") if os.environ.get("CI") == "true" else pytest.importorskip("dkim")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "dkim.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)
    expected_name = f"{DKIM_SELECTOR}._domainkey.{DKIM_DOMAIN}.".encode()

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name.rstrip(b".") + b"." == expected_name else None

    extra = web_table() + "\n\n" + "\n".join(["[delivery.dkim]", f'domain = "{DKIM_DOMAIN}"',
                                              f'selector = "{DKIM_SELECTOR}"', 'key_file = "dkim.pem"'])
    cfg = write_config(tmp_path, smtp_server.port, extra=extra)
    result = run_cli(cfg, "run", env={SECRET_ENV: WEB_SECRET})
    assert result.returncode == 0, result.stderr
    assert len(smtp_server.messages) == 2
    for received in smtp_server.messages:
        data = received.data
        assert data.startswith(b"DKIM-Signature:")
        assert dkim.verify(data, dnsfunc=dnsfunc), received.rcpt_tos
        check_list_headers(received)
        sig = re.sub(r"\s+", "", one_field(data, "DKIM-Signature"))
        tags = dict(t.split("=", 1) for t in sig.split(";") if t)
        signed = tags["h"].split(":")
        assert {"from", "to", "subject", "date", "message-id", "list-unsubscribe", "list-unsubscribe-post"} \
            <= set(signed), signed
        assert tags["d"] == DKIM_DOMAIN and tags["s"] == DKIM_SELECTOR and tags["c"] == "relaxed/simple"
        # Signed bodies stay 7-bit (RFC 6376 5.3): nothing a relay could re-encode under the signature.
        assert data.isascii() and not any(o.startswith("BODY") for o in received.mail_options)
        assert parse(received).get_body(("plain",))["Content-Transfer-Encoding"] == "quoted-printable"
        # The signature covers what a receiver acts on: a changed unsubscribe link no longer verifies.
        tampered = re.sub(rb"/u/[A-Za-z0-9_.-]+>", b"/u/forged>", data, count=1)
        assert tampered != data and not dkim.verify(tampered, dnsfunc=dnsfunc)
