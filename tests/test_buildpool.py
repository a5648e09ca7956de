"""Emails built in a build process are the very bytes the sending process would have built, and a
run's report keeps complete counts however many addresses it lists."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from digestmail.buildpool import MIN_EDITIONS
from digestmail.deliver import LISTED, DeliveryReport

from .conftest import trending

NOW = "2026-11-23T08:00:00+00:00"
READERS = MIN_EDITIONS + 40  # enough that the build process starts with the first email


def make(root: Path, build_processes: int, key: bytes) -> Path:
    (root / "inbox").mkdir(parents=True)
    (root / "inbox" / "2026-11-22.txt").write_text(trending("Nov 22", [
        (f"Adam Variant {i} for Noisy Labels", f"We study the Adam optimizer, variant {i}, on noisy labels.")
        for i in range(4)]), encoding="utf-8")
    (root / "subscribers.csv").write_text("email,name,query,max_papers\n" + "".join(
        f"r{i:03d}@example.org,Réader {i},adam,{1 + i % 4}\n" for i in range(READERS)), encoding="utf-8")
    (root / "dkim.pem").write_bytes(key)
    cfg = root / "digestmail.toml"
    cfg.write_text(f"""subscribers_file = "subscribers.csv"
[store]
path = "store.sqlite3"
[sources]
inbox = "inbox"
archive = false
[delivery]
transport = "file"
outbox = "outbox"
from = "Trending Papers <papers@example.org>"
build_processes = {build_processes}
[delivery.dkim]
domain = "example.org"
selector = "mail"
key_file = "dkim.pem"
""", encoding="utf-8")
    return cfg


def run(cfg: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "digestmail", "--config", str(cfg), "--now", NOW, "run", "--json"],
                          capture_output=True, text=True, timeout=300, cwd=cfg.parent)


def test_emails_built_in_another_process_are_byte_identical(tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    here, there = run(make(tmp_path / "here", 0, key)), run(make(tmp_path / "pool", 1, key))
    for result in (here, there):
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["counts"]["sent"] == READERS
    assert "other process" not in here.stderr
    assert "building the emails in 1 other process" in there.stderr

    ours = {p.name: p.read_bytes() for p in (tmp_path / "here" / "outbox").glob("*.eml")}
    theirs = {p.name: p.read_bytes() for p in (tmp_path / "pool" / "outbox").glob("*.eml")}
    assert len(ours) == READERS and ours.keys() == theirs.keys()
    differing = [name for name in ours if ours[name] != theirs[name]]
    assert differing == []  # rendering, MIME and the DKIM signature: the same bytes either way
    assert all(b"DKIM-Signature:" in data for data in theirs.values())


def test_a_report_lists_at_most_listed_addresses_but_counts_them_all():
    report = DeliveryReport()
    for i in range(LISTED + 7):
        report.add("sent", {"email": f"r{i}@example.org", "retry": i % 2 == 0})
        report.add("skipped", {"email": f"s{i}@example.org", "reason": "suppressed (refused)" if i % 3
                               else "no matching papers"})
    report.add("failed", {"email": "x@example.org", "error": "550"})
    assert len(report.sent) == LISTED and report.sent[0]["email"] == "r0@example.org"
    assert len(report.skipped) == LISTED
    assert report.counts["sent"] == report.counts["skipped"] == LISTED + 7
    assert report.counts["retried"] == (LISTED + 8) // 2
    assert report.counts["failed"] == 1 and report.failed == [{"email": "x@example.org", "error": "550"}]
    assert report.skipped_by_reason == {"suppressed": sum(1 for i in range(LISTED + 7) if i % 3),
                                        "no matching papers": sum(1 for i in range(LISTED + 7) if not i % 3)}
