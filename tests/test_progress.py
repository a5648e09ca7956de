"""Long work shows a bar on a terminal and plain log lines elsewhere (cron, systemd, pipes)."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time

from .conftest import NOW, cli, trending, write_config

BODY = '[topics]\nx = "robots"\n[[subscribers]]\nemail = "a@example.org"\ntopics = ["x"]\n'


def fill_inbox(folder, n: int = 12) -> None:
    for i in range(n):
        (folder / "inbox" / f"d{i}.txt").write_text(
            trending(f"Nov {i + 1}", [(f"Robots number {i}", "We study robots.")]), encoding="utf-8")


def test_plain_log_lines_when_not_on_a_terminal(tmp_path):
    config = write_config(tmp_path, BODY)
    fill_inbox(tmp_path)
    result = cli("--config", config, "--now", NOW, "run")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert sum(" INFO ingested " in line for line in lines) == 12
    assert any(" INFO sent 10 papers to a@example.org" in line for line in lines)
    assert "\x1b[" not in result.stderr  # no terminal control codes in a log file


def test_progress_bar_on_a_terminal(tmp_path):
    config = write_config(tmp_path, BODY)
    fill_inbox(tmp_path)
    primary, secondary = pty.openpty()
    env = {**os.environ, "COLUMNS": "100", "TERM": "xterm-256color"}
    env.pop("DIGESTMAIL_CONFIG", None)
    proc = subprocess.Popen([sys.executable, "-m", "digestmail", "--config", str(config), "--now", NOW, "run"],
                            stdout=subprocess.PIPE, stderr=secondary, stdin=subprocess.DEVNULL, env=env)
    os.close(secondary)
    seen = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([primary], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    os.close(primary)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, seen.decode(errors="replace")
    assert b"sent 1 emails" in out
    text = seen.decode(errors="replace")
    assert "\x1b[" in text  # a terminal gets rich's rendering
    assert "reading digests" in text and "delivering" in text  # the bars, drawn while working


def test_version_is_looked_up_only_when_asked_for():
    # The package's version comes from its installed metadata, which costs every start: only --version reads it.
    import digestmail

    out = subprocess.run([sys.executable, "-m", "digestmail", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout == f"digestmail, version {digestmail.__version__}\n"
    probe = ("import sys, digestmail.cli; "
             "print(sorted(m for m in ('importlib.metadata', 'rich', 'feedparser') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"  # none of these load for a run that needs none of them


def test_plain_log_lines_read_as_the_standard_formatter_writes_them():
    import logging

    from digestmail.progress import PlainFormatter

    ours, standard = PlainFormatter(), logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    for created in (1_700_000_000.0, 1_700_000_000.999, 1_700_000_001.0004, 1_700_000_001.5, 1_800_000_000.25):
        record = logging.LogRecord("digestmail", logging.INFO, __file__, 1, "sent %d papers to %s", (10, "a@x.org"), None)
        record.created, record.msecs = created, int((created - int(created)) * 1000) + 0.0
        assert ours.format(record) == standard.format(record)
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        failed = logging.LogRecord("digestmail", logging.ERROR, __file__, 1, "tick failed: %s", ("x",), sys.exc_info())
    assert ours.format(failed) == standard.format(failed)
    assert "ValueError: boom" in ours.format(failed)


def test_a_run_loads_none_of_the_daemons_machinery(tmp_path):
    # A run takes the store's lock like the daemon does, but needs nothing of its scheduler: importing
    # that (and through it multiprocessing) cost every run ~25 ms of start. (The config's cron is still
    # checked, with APScheduler's cron trigger alone.)
    config = write_config(tmp_path, BODY)
    fill_inbox(tmp_path, 2)
    probe = ("import sys\nfrom digestmail.cli import main\n"
             f"sys.argv = ['digestmail', '--config', {str(config)!r}, '--now', {NOW!r}, 'run']\n"
             "try:\n    main()\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
             "print(sorted(m for m in ('digestmail.daemon', 'apscheduler.schedulers', 'apscheduler.executors', "
             "'multiprocessing') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert " INFO sent 2 papers to a@example.org" in out.stderr  # it did run
    assert out.stdout.strip().splitlines()[-1] == "[]"
