"""SMTP delivery end to end: the real CLI in a subprocess against a real (recording) SMTP server."""

from __future__ import annotations

import email
import email.message
import email.policy
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from smtp_server import HOST, Received, SmtpServer  # noqa: E402

NOW = "2026-11-23T08:00:00+00:00"
LATER = "2026-11-24T08:00:00+00:00"
SENDER = "papers@example.org"
PASSWORD_ENV = "DIGESTMAIL_TEST_SMTP_PASSWORD"

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
                 password_env: str = "") -> Path:
    inbox = root / "inbox"
    if not inbox.exists():  # written once: a rewrite for a second run must not look like new mail
        inbox.mkdir()
        (inbox / "2026-11-22-trending.txt").write_text(DIGEST, encoding="utf-8")
    smtp = [f'host = "{HOST}"', f"port = {port}", f'security = "{security}"', "timeout = 5"]
    if username:
        smtp.append(f'username = "{username}"')
    if password_env:
        smtp.append(f'password_env = "{password_env}"')
    cfg = root / "digestmail.toml"
    cfg.write_text("\n".join([
        "[store]", 'path = "store.sqlite3"', "",
        "[sources]", 'inbox = "inbox"', "",
        "[delivery]", 'transport = "smtp"', f'from = "Trending Papers <{SENDER}>"', "",
        "[delivery.smtp]", *smtp, "",
        SUBSCRIBERS,
    ]), encoding="utf-8")
    return cfg


def run_cli(cfg: Path, *args: str, now: str = NOW,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in (PASSWORD_ENV, "DIGESTMAIL_CONFIG")}
    return subprocess.run([sys.executable, "-m", "digestmail", "--config", str(cfg), "--now", now, *args],
                          capture_output=True, text=True, timeout=120, env={**base, **(env or {})},
                          cwd=cfg.parent)


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
    assert "sent 2 emails via smtp, 0 deferred, 0 failed, 1 subscribers skipped" in result.stdout

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
        plural = "s" if len(titles) > 1 else ""
        assert str(msg["Subject"]) == f"{len(titles)} new paper{plural} for you: {titles[0]}"
        assert msg["Message-ID"].endswith("@example.org>")

    # One connection for both messages, closed politely; nobody tried to log in.
    assert smtp_server.commands.count("EHLO") + smtp_server.commands.count("HELO") == 1
    assert smtp_server.commands.count("DATA") == 2
    assert smtp_server.commands[-1] == "QUIT"
    assert "AUTH" not in smtp_server.commands


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
