"""The admin hears about problems once per period: stale sources, rejected digests, failed deliveries."""

from __future__ import annotations

import datetime as dt
import email
import email.policy

from digestmail import admin

from .conftest import cli, trending, write_config

BODY = '[admin]\nemail = "admin@example.org"\nreport_every = "24h"\n[topics]\nx = "robots"\n' \
       '[[subscribers]]\nemail = "a@example.org"\ntopics = ["x"]\n'


def admin_mails(outbox) -> list[email.message.EmailMessage]:
    out = []
    for path in sorted(outbox.glob("*.eml")):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        if msg["To"] == "admin@example.org":
            out.append(msg)
    return out


def at(hours: float) -> str:
    return (dt.datetime(2026, 11, 23, 8, tzinfo=dt.timezone.utc) + dt.timedelta(hours=hours)).isoformat()


def test_stale_source_and_rejected_file_are_reported_once_per_period(tmp_path):
    config = write_config(tmp_path, BODY)
    config.write_text(config.read_text().replace('inbox = "inbox"', 'inbox = "inbox"\nexpect_every = "1h"'))
    inbox = tmp_path / "inbox"
    (inbox / "a.txt").write_text(trending("Nov 22", [("Robots That Cook", "We cook with robots.")]))
    assert cli("--config", config, "--now", at(0), "run").returncode == 0
    assert admin_mails(tmp_path / "outbox") == []  # all fine: no report

    (inbox / "junk.txt").write_text("not a digest\n")
    assert cli("--config", config, "--now", at(2), "run").returncode == 1
    (report,) = admin_mails(tmp_path / "outbox")
    text = report.get_body(("plain",)).get_content()
    assert "Source inbox is stale" in text and "junk.txt" in text and "problem(s)" in report["Subject"]

    assert cli("--config", config, "--now", at(3), "run").returncode == 0  # still stale: already told
    assert len(admin_mails(tmp_path / "outbox")) == 1
    assert cli("--config", config, "--now", at(27), "run").returncode == 0  # a day later: told again
    assert len(admin_mails(tmp_path / "outbox")) == 2


def test_problems_are_fingerprinted_stably():
    report = {"failed": [{"email": "b@example.org", "error": "550 no such user"}],
              "ingest": {"files": [{"path": "x.txt", "status": "rejected", "reason": "empty"}]}}
    health = {"inbox": {"stale": True, "silent_for": "2d", "expect_every": "1d"}, "imap": {"stale": False}}
    found = admin.problems(report, health)
    assert [p.fingerprint for p in found] == ["stale:inbox", "failed:b@example.org:550 no such user",
                                              "rejected:x.txt"]
    assert admin.problems(report, health) == found
    rendered = admin.render(found, dt.datetime(2026, 11, 23, tzinfo=dt.timezone.utc), "digestmail")
    assert "3 problem(s)" in rendered.subject and "<pre" in rendered.html and "550 no such user" in rendered.text
