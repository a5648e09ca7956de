"""The IMAP source against a real dovecot on 127.0.0.1 (see imap_server.py): TLS, UIDs, flags, moves."""

from __future__ import annotations

import email
import email.message
import email.policy
import email.utils
import imaplib
import itertools
import os
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from digestmail.config import ImapSettings
from digestmail.errors import ConfigError
from digestmail.sources import imap
from digestmail.sources.imap import KEYWORD, ImapError, ImapMessage, ImapSource

from .conftest import trending

sys.path.insert(0, str(Path(__file__).resolve().parent))
from imap_server import Dovecot, DovecotError, dovecot_binary, free_port  # noqa: E402

# UTF-8 and IMAP-quoting troublemakers: the login must carry them intact.
PASSWORD = 'Pässwörd "quoted" \\ 1'
USERS = [f"reader{i}" for i in range(1, 25)]
ASCII_USER, ASCII_PASSWORD = "oldtimer", 'plain "quoted" \\ ascii'

Papers = list[tuple[str, str]]
DIGESTS: list[tuple[str, Papers]] = [
    ("Nov 20", [("Gradient Noise Shapes Adam's Implicit Bias",
                 "We show that the adaptive optimizer Adam prefers flat minima because of gradient noise, "
                 "and derive a schedule-free learning rate from it."),
                ("Tiny Federated Adapters for Keyboards",
                 "Federated training of low-rank adapters on phones matches centralised tuning.")]),
    ("Nov 21", [("One-Step Video Diffusion by Score Distillation",
                 "We distil a video diffusion model into a one-step sampler and keep its motion.")]),
    ("Nov 22", [("Retrieval Heads Explain Long-Context Failures",
                 "A handful of attention heads does the retrieval in long-context transformers."),
                ("Dishwasher-Loading Robots from Two Hundred Demos",
                 "Diffusion policies trained on teleoperated demos load dishwashers in new homes.")]),
]


def digest_email(date_line: str, papers: Papers, to: str) -> bytes:
    msg = email.message.EmailMessage(policy=email.policy.SMTP)
    msg["From"] = "AK <digest@papers.example.org>"
    msg["To"] = f"{to}@example.org"
    msg["Subject"] = f"Trending papers, {date_line}"
    msg["Date"] = "Sun, 22 Nov 2026 07:00:00 +0000"
    msg["Message-ID"] = email.utils.make_msgid(domain="papers.example.org")
    msg.set_content(trending(date_line, papers))
    return msg.as_bytes()


def body_of(message: ImapMessage) -> str:
    parsed = email.message_from_bytes(message.data, policy=email.policy.default)
    return parsed.get_content()


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dovecot(tmp_path_factory: pytest.TempPathFactory):
    if dovecot_binary() is None:
        reason = "dovecot is not installed (Debian package dovecot-imapd)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the IMAP tests, but {reason}")
        pytest.skip(reason)
    log_copy = tmp_path_factory.mktemp("dovecot") / "dovecot.log"
    try:
        users = {ASCII_USER: ASCII_PASSWORD} | {u: PASSWORD for u in USERS}
        server = Dovecot(users, log_copy=log_copy).start()
    except DovecotError as exc:
        pytest.fail(f"dovecot did not start: {exc}")
    try:
        yield server
    finally:
        server.stop()


_fresh = itertools.count()


@pytest.fixture
def user(dovecot: Dovecot) -> Iterator[str]:
    """A login nobody has used yet: an empty mailbox.

    What dovecot logged during the test is printed at teardown; pytest shows it when the test fails.
    """
    start = len(dovecot.log())
    yield USERS[next(_fresh)]
    print("dovecot's log during this test:\n" + dovecot.log()[start:])


def settings(server: Dovecot, user: str, **changes: object) -> ImapSettings:
    base = ImapSettings(host=server.host, port=server.imaps_port, security="tls", username=user,
                        password_env="DIGESTMAIL_TEST_IMAP_PASSWORD", folder="INBOX", after="flag",
                        timeout=5, ca_file=server.ca_file)
    return replace(base, **changes)  # type: ignore[arg-type]


def deliver(server: Dovecot, user: str, folder: str = "INBOX",
            digests: list[tuple[str, Papers]] = DIGESTS) -> list[int]:
    return [server.append(user, folder, digest_email(d, p, user)) for d, p in digests]


# -- reading, flagging, remembering ---------------------------------------------------------------


def test_poll_reads_each_digest_once(dovecot: Dovecot, user: str, monkeypatch: pytest.MonkeyPatch) -> None:
    deliver(dovecot, user)
    monkeypatch.setattr(imap, "BATCH", 2)  # two FETCH rounds for three messages
    with ImapSource(settings(dovecot, user), PASSWORD) as source:
        messages = source.poll(None)
        assert len(messages) == 3, dovecot.log()
        assert [m.uid for m in messages] == sorted({m.uid for m in messages})
        assert [body_of(m).splitlines()[8] for m in messages] == ["Nov 20", "Nov 21", "Nov 22"]
        assert all("Get trending papers in your email inbox!" in body_of(m) for m in messages)
        assert messages[0].label == f"imap://{user}@127.0.0.1/INBOX;UID={messages[0].uid}"
        assert len({m.uidvalidity for m in messages}) == 1
        # BODY.PEEK: reading marks nothing.
        assert all("\\Seen" not in f for f in dovecot.flags(user, "INBOX").values())
        state = messages[-1].state
        # `UID N:*` still answers the highest UID when nothing is newer: it must not come back.
        assert source.poll(state) == []
        for m in messages:
            source.done(m)
    flags = dovecot.flags(user, "INBOX")
    assert all("\\Seen" in f and KEYWORD in f for f in flags.values()), flags

    with ImapSource(settings(dovecot, user), PASSWORD) as again:
        assert again.poll(state) == []
        assert again.poll(None) == [], "the keyword must keep flagged messages out even without a state"
        new_uid = deliver(dovecot, user, digests=DIGESTS[:1])[0]
        (new,) = again.poll(state)
        assert new.uid == new_uid > state[1]
        assert [m.uid for m in again.poll(None)] == [new_uid]


def test_move_to_another_folder(dovecot: Dovecot, user: str) -> None:
    deliver(dovecot, user)
    with ImapSource(settings(dovecot, user, after="move:Processed"), PASSWORD) as source:
        messages = source.poll(None)
        assert len(messages) == 3
        for m in messages:
            source.done(m)
        assert source.poll(None) == []
    assert dovecot.uids(user, "INBOX") == []
    assert len(dovecot.uids(user, "Processed")) == 3, dovecot.log()


@pytest.mark.parametrize("missing", [("MOVE",), ("MOVE", "UIDPLUS")],
                         ids=["copy+uid-expunge", "copy+expunge"])
def test_move_without_the_move_extension(dovecot: Dovecot, user: str, missing: tuple[str, ...]) -> None:
    deliver(dovecot, user, digests=DIGESTS[:2])
    dovecot.append(user, "Archive", digest_email("Nov 1", DIGESTS[0][1], user))  # the target already exists
    with ImapSource(settings(dovecot, user, after="move:Archive"), PASSWORD) as source:
        messages = source.poll(None)
        source._caps = source._caps - set(missing)  # as if the server did not advertise them
        for m in messages:
            source.done(m)
    assert dovecot.uids(user, "INBOX") == []
    assert len(dovecot.uids(user, "Archive")) == 3


def test_flag_without_custom_keywords(dovecot: Dovecot, user: str) -> None:
    deliver(dovecot, user, digests=DIGESTS[:1])
    with ImapSource(settings(dovecot, user), PASSWORD) as source:
        (message,) = source.poll(None)
        source._keywords = False  # as if PERMANENTFLAGS had neither \* nor $Digestmail
        source.done(message)
    assert dovecot.flags(user, "INBOX")[message.uid].split() == ["\\Seen"]


def test_folder_names_beyond_ascii(dovecot: Dovecot, user: str) -> None:
    deliver(dovecot, user, digests=DIGESTS[:2])
    with ImapSource(settings(dovecot, user, after="move:Traités"), PASSWORD) as source:
        for m in source.poll(None):
            source.done(m)
    assert len(dovecot.uids(user, "Trait&AOk-s")) == 2  # modified UTF-7 on the wire (RFC 3501)
    with ImapSource(settings(dovecot, user, folder="Traités"), PASSWORD) as source:
        assert [body_of(m).splitlines()[8] for m in source.poll(None)] == ["Nov 20", "Nov 21"]


def test_uidvalidity_change_starts_over(dovecot: Dovecot, user: str) -> None:
    deliver(dovecot, user, "Feed", DIGESTS[:2])
    with ImapSource(settings(dovecot, user, folder="Feed"), PASSWORD) as source:
        old = source.poll(None)
        state = old[-1].state
    client = dovecot.connect(user)
    try:
        assert client.delete('"Feed"')[0] == "OK"
    finally:
        client.logout()
    (uid,) = deliver(dovecot, user, "Feed", DIGESTS[2:])
    assert uid <= state[1]  # without the reset, this message would never be read
    with ImapSource(settings(dovecot, user, folder="Feed"), PASSWORD) as source:
        (new,) = source.poll(state)
        assert new.uid == uid and new.uidvalidity != state[0]
        assert "Nov 22" in body_of(new)
        source.done(old[0])  # a UID from the old folder names another message now: left alone
        assert KEYWORD not in dovecot.flags(user, "Feed")[uid]
        source.done(new)
        assert source.poll(None) == []


def test_a_dropped_connection_is_reopened(dovecot: Dovecot, user: str) -> None:
    deliver(dovecot, user, digests=DIGESTS[:1])
    with ImapSource(settings(dovecot, user), PASSWORD) as source:
        (first,) = source.poll(None)
        assert source._conn is not None
        source._conn.sock.shutdown(socket.SHUT_RDWR)  # the server timed the idle session out, say
        source.done(first)
        assert source.poll(None) == []


def test_login_without_sasl_plain(dovecot: Dovecot, user: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that only takes LOGIN: quoted ASCII works; a non-ASCII password is refused up front."""
    original = imaplib.IMAP4._get_capabilities

    def without_plain(self: imaplib.IMAP4) -> None:
        original(self)
        self.capabilities = tuple(c for c in self.capabilities if c != "AUTH=PLAIN")

    monkeypatch.setattr(imaplib.IMAP4, "_get_capabilities", without_plain)
    monkeypatch.setattr(imaplib.IMAP4, "authenticate", None)  # must not be called
    with ImapSource(settings(dovecot, ASCII_USER), ASCII_PASSWORD) as source:
        assert source.poll(None) == []
    with pytest.raises(ConfigError, match="only offers LOGIN"), \
            ImapSource(settings(dovecot, user), PASSWORD) as source:
        source.poll(None)


# -- TLS ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_tls_and_starttls_with_ca_file(dovecot: Dovecot, user: str, security: str) -> None:
    deliver(dovecot, user, digests=DIGESTS[:1])
    port = dovecot.imaps_port if security == "tls" else dovecot.imap_port
    with ImapSource(settings(dovecot, user, security=security, port=port), PASSWORD) as source:
        assert len(source.poll(None)) == 1
        assert source._conn is not None and source._conn.sock.version() in ("TLSv1.2", "TLSv1.3")


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_an_untrusted_certificate_is_refused(dovecot: Dovecot, user: str, security: str) -> None:
    port = dovecot.imaps_port if security == "tls" else dovecot.imap_port
    source = ImapSource(settings(dovecot, user, security=security, port=port, ca_file=None), PASSWORD)
    with pytest.raises(ConfigError) as caught, source:
        source.poll(None)
    text = str(caught.value)
    assert "certificate is not trusted" in text and "system's CA certificates" in text
    assert f"127.0.0.1:{port}" in text and "ca_file" in text
    assert f"user=<{user}>" not in dovecot.log(), "no login may happen over an unverified connection"


@pytest.mark.parametrize(("greeting", "error"), [("OK", "does not offer STARTTLS"),
                                                  ("PREAUTH", "PREAUTH before TLS")])
def test_no_password_without_tls(greeting: str, error: str) -> None:
    with FakeImapServer(greeting) as fake:
        s = ImapSettings(host="127.0.0.1", port=fake.port, security="starttls", username="ada",
                         password_env="X", folder="INBOX", after="flag", timeout=5, ca_file=None)
        with pytest.raises(ConfigError, match=error), ImapSource(s, "secret") as source:
            source.poll(None)
    assert fake.lines, "the client never spoke"
    assert not any(w in line.upper() for line in fake.lines for w in ("LOGIN", "AUTHENTICATE", "SECRET"))


def test_tls_on_the_starttls_port_is_a_network_error(dovecot: Dovecot, user: str) -> None:
    with pytest.raises(ImapError) as caught, \
            ImapSource(settings(dovecot, user, port=dovecot.imap_port), PASSWORD) as source:
        source.poll(None)
    assert "cannot connect over TLS" in str(caught.value) and "SSL" in str(caught.value)


def test_nothing_listening_is_a_network_error() -> None:
    s = ImapSettings(host="127.0.0.1", port=free_port(), security="tls", username="ada", password_env="X",
                     folder="INBOX", after="flag", timeout=5, ca_file=None)
    with pytest.raises(ImapError) as caught, ImapSource(s, "secret") as source:
        source.poll(None)
    assert caught.value.exit_code == 1 and f"127.0.0.1:{s.port}" in str(caught.value)


# -- wrong settings -------------------------------------------------------------------------------


def test_a_wrong_password_is_a_config_error(dovecot: Dovecot, user: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGESTMAIL_TEST_IMAP_PASSWORD", "not the password")
    s = settings(dovecot, user)
    with pytest.raises(ConfigError) as caught, ImapSource(s, s.password()) as source:
        source.poll(None)
    text = str(caught.value)
    assert "127.0.0.1 refused the login" in text and user in text, text
    assert "AUTHENTICATIONFAILED" in text and "$DIGESTMAIL_TEST_IMAP_PASSWORD" in text
    assert "not the password" not in text


def test_moving_into_the_folder_itself_is_refused(dovecot: Dovecot, user: str) -> None:
    deliver(dovecot, user, digests=DIGESTS[:1])
    with ImapSource(settings(dovecot, user, after="move:INBOX"), PASSWORD) as source:
        (message,) = source.poll(None)
        with pytest.raises(ConfigError, match="moves messages into the folder they are read from"):
            source.done(message)
    assert dovecot.uids(user, "INBOX") == [message.uid]


def test_a_missing_folder_is_a_config_error(dovecot: Dovecot, user: str) -> None:
    deliver(dovecot, user, "Digests", DIGESTS[:1])
    with pytest.raises(ConfigError) as caught, ImapSource(settings(dovecot, user, folder="Digest"),
                                                          PASSWORD) as source:
        source.poll(None)
    text = str(caught.value)
    assert "'Digest' does not exist on 127.0.0.1" in text and "sources.imap.folder" in text
    assert "did you mean 'Digests'?" in text


# -- a fake server for what dovecot will not do ---------------------------------------------------


class FakeImapServer:
    """Greets (OK or PREAUTH), answers CAPABILITY without STARTTLS, records every line it is sent."""

    def __init__(self, greeting: str = "OK") -> None:
        self.greeting = greeting
        self.lines: list[str] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(5)
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        try:
            conn, _ = self._sock.accept()
        except OSError:
            return
        with conn, conn.makefile("rb") as reader:
            conn.settimeout(5)
            conn.sendall(f"* {self.greeting} fake IMAP ready\r\n".encode())
            try:
                for raw in reader:
                    line = raw.decode(errors="replace").rstrip("\r\n")
                    self.lines.append(line)
                    tag, _, rest = line.partition(" ")
                    verb = rest.split(" ")[0].upper()
                    if verb == "CAPABILITY":
                        conn.sendall(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n"
                                     + tag.encode() + b" OK done\r\n")
                    elif verb == "LOGOUT":
                        conn.sendall(b"* BYE bye\r\n" + tag.encode() + b" OK done\r\n")
                        return
                    else:
                        conn.sendall(tag.encode() + b" OK whatever\r\n")
            except OSError:
                return

    def __enter__(self) -> FakeImapServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sock.close()
        self._thread.join(timeout=5)


# -- through the CLI ------------------------------------------------------------------------------


def test_cli_ingests_the_folder_once(dovecot: Dovecot, user: str, tmp_path: Path) -> None:
    """Three digests in the folder: the first run ingests and mails them, the second reads nothing."""
    import json

    from .conftest import NOW, cli, write_config

    deliver(dovecot, user)
    head = (f'[sources.imap]\nhost = "{dovecot.host}"\nport = {dovecot.imaps_port}\nusername = "{user}"\n'
            f'password_env = "DM_IMAP_PW"\nca_file = "{dovecot.ca_file}"\nexpect_every = "2d"\n')
    body = '[topics]\nfed = "federated OR diffusion"\n[[subscribers]]\nemail = "a@example.org"\ntopics = ["fed"]\n'
    config = write_config(tmp_path, head + body)
    env = {"DM_IMAP_PW": PASSWORD}
    first = cli("--config", config, "--now", NOW, "run", "--json", env=env)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    files = report["ingest"]["files"]
    assert [f["status"] for f in files] == ["ingested"] * 3
    assert all(f["path"].startswith("imap://") and f["format"] == "email/trending" for f in files)
    assert report["ingest"]["new_papers"] == 5 and len(report["sent"]) == 1
    assert report["sources"]["imap"]["state"] == "ok"
    second = cli("--config", config, "--now", NOW, "ingest", "--json", env=env)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["files"] == []
    assert set(dovecot.flags(user, "INBOX").values()) == {dovecot.flags(user, "INBOX")[1]}
    assert all(KEYWORD in f for f in dovecot.flags(user, "INBOX").values())
    wrong = cli("--config", config, "--now", NOW, "ingest", env={"DM_IMAP_PW": "wrong"})
    assert wrong.returncode == 2 and "refused the login" in wrong.stderr
