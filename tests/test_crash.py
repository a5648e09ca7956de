"""Crash test: `digestmail run` for 300 subscribers is SIGKILLed at random moments, five times, and
restarted with the same `--now` (the same cycle); then one run goes to the end.

Counted at a real SMTP server: nobody lost (every subscriber got a message) and at most one duplicate
per kill (a message the server took whose 250 the killed process never recorded). The server takes a
little time per message and records each one *before* that delay — a server that queued the message and
then lost the client — so a kill during the delay makes exactly the duplicate the outbox allows.
"""

from __future__ import annotations

import collections
import email
import email.policy
import random
import subprocess
import sys
import time
from pathlib import Path

from .conftest import trending
from .smtp_server import HOST, SmtpServer, run_json

NOW = "2026-11-23T08:00:00+00:00"
SUBSCRIBERS = 300
KILLS = 5
SEED = 20261123
DATA_DELAY = 0.025  # seconds the server takes per message (one at a time): 300 take ~7.5 s, so kills land mid-run


def write_config(root: Path, port: int) -> Path:
    (root / "inbox").mkdir()
    (root / "inbox" / "2026-11-22.txt").write_text(trending("Nov 22", [
        (f"Adam Variant {i} for Noisy Labels", f"We study the Adam optimizer, variant {i}.") for i in range(3)]),
        encoding="utf-8")
    (root / "subscribers.csv").write_text("email,name,query\n" + "".join(
        f"reader{i:03d}@example.org,Reader {i},adam\n" for i in range(SUBSCRIBERS)), encoding="utf-8")
    cfg = root / "digestmail.toml"
    cfg.write_text(f"""subscribers_file = "subscribers.csv"
[store]
path = "store.sqlite3"
[sources]
inbox = "inbox"
[delivery]
transport = "smtp"
from = "Trending Papers <papers@example.org>"
[delivery.smtp]
host = "{HOST}"
port = {port}
security = "none"
timeout = 5
""", encoding="utf-8")
    return cfg


def message_id(data: bytes) -> str:
    return str(email.message_from_bytes(data, policy=email.policy.default)["Message-ID"])


def test_sigkill_five_times_loses_nobody_and_duplicates_at_most_once_per_kill(tmp_path, capsys):
    rng = random.Random(SEED)
    started = time.monotonic()
    with SmtpServer(data_delay=DATA_DELAY) as server:
        cfg = write_config(tmp_path, server.port)
        kills = []  # (seconds after start, messages the server had before, after, still running when killed)
        for _ in range(KILLS):
            delay = rng.uniform(0.2, 1.5)
            before = len(server.messages)
            proc = subprocess.Popen([sys.executable, "-m", "digestmail", "--config", str(cfg), "--now", NOW, "run"],
                                    cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                time.sleep(delay)
                alive = proc.poll() is None
                proc.kill()  # SIGKILL: no cleanup, no atexit, no rollback
            finally:
                proc.wait(timeout=30)
            kills.append((round(delay, 2), before, len(server.messages), alive))

        before_final = len(server.messages)
        code, report, stderr = run_json(cfg, now=NOW)
        assert code == 0, (report, stderr)

        counts = collections.Counter(m.rcpt_tos for m in server.messages)
        expected = {(f"reader{i:03d}@example.org",) for i in range(SUBSCRIBERS)}
        lost = expected - set(counts)
        duplicates = sum(n - 1 for n in counts.values())
        killed_while_sending = sum(1 for _, b, a, alive in kills if alive and a > b)
        with capsys.disabled():
            print(f"\ncrash test: kills (at s, messages before, after, alive) {kills}; "
                  f"final run sent {len(report['sent'])} (recovered {report['recovered']}), "
                  f"server got {len(server.messages)} messages for {len(counts)} subscribers: "
                  f"{len(lost)} lost, {duplicates} duplicates; {time.monotonic() - started:.1f}s")

        assert not lost, sorted(lost)[:10]
        assert set(counts) == expected  # nobody else either
        assert duplicates <= KILLS, counts.most_common(KILLS + 1)
        # A duplicate is the same edition again (same Message-ID), never a second edition.
        by_rcpt = collections.defaultdict(set)
        for m in server.messages:
            by_rcpt[m.rcpt_tos].add(message_id(m.data))
        assert all(len(ids) == 1 for ids in by_rcpt.values())
        assert len({next(iter(ids)) for ids in by_rcpt.values()}) == SUBSCRIBERS
        # The kills did interrupt deliveries, and the final run had work left.
        assert killed_while_sending >= 1, kills
        assert len(server.messages) > before_final, "the kills left nothing to finish: the test proved nothing"
        assert report["failed"] == [] and report["deferred"] == []

        # The cycle is done: the same --now again sends nothing.
        code, again, stderr = run_json(cfg, now=NOW)
        assert code == 0 and again["sent"] == [], (again, stderr)
        assert sum(collections.Counter(m.rcpt_tos for m in server.messages).values()) == len(server.messages)
        assert len(server.messages) == SUBSCRIBERS + duplicates
