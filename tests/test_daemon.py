"""`digestmail daemon` end to end: real subprocesses against a recording SMTP server on loopback.

Every daemon runs with a seconds-level cron (`*/2 * * * * *`), polls its inbox every second and logs to
a file; every wait is bounded (the server's recorded messages or the daemon's log, polled against a
deadline) and every daemon still running at teardown is killed with its process group. The daemon's
log is in every assertion message.
"""

from __future__ import annotations

import collections
import datetime as dt
import email
import email.policy
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .conftest import trending
from .smtp_server import HOST, PASSWORD_ENV, SECRET_ENV, Received, SmtpServer

CRON = "*/2 * * * * *"
SCHEDULE_NAME = f"{CRON} @ UTC"

TOPICS = """
[topics]
optimizers = "optimizer OR adam"
federated = "federated"
robots = "robot OR manipulation"
"""

SUBSCRIBERS = """
[[subscribers]]
email = "ada@example.org"
name = "Ada Lovelace"
topics = ["optimizers"]

[[subscribers]]
email = "grace@example.org"
name = "Grace Hopper"
topics = ["federated"]

[[subscribers]]
email = "linus@example.org"
name = "Linus"
topics = ["robots"]
"""

DIGEST_1 = trending("Nov 22", [
    ("Sharpness-Aware Adam for Noisy Labels", "We show that the Adam optimizer overfits noisy labels."),
    ("Federated Speech Recognition with Tiny Adapters", "A federated recipe that trains tiny adapters on phones."),
    ("Score Distillation for Video Diffusion", "We distil a video diffusion model into a four-step sampler."),
])
DIGEST_2 = trending("Nov 23", [
    ("Dexterous Robot Manipulation from Play Data", "A robot learns manipulation from unlabelled play."),
    ("Adam Without Second Moments", "We remove the second-moment estimate from the Adam optimizer."),
    ("Retrieval Heads in Long-Context Transformers", "A small set of attention heads does the retrieval."),
])


# -- helpers --------------------------------------------------------------------------------------


def write_config(root: Path, port: int, *, subscribers: str = SUBSCRIBERS, extra: str = "",
                 topics: str = TOPICS, cron: str = CRON) -> Path:
    """An smtp-transport config polling `inbox` every second and sending on a seconds-level cron."""
    (root / "inbox").mkdir(exist_ok=True)
    cfg = root / "digestmail.toml"
    cfg.write_text(f"""{extra}
[store]
path = "store.sqlite3"

[sources]
inbox = "inbox"
poll_interval = "1s"

[schedule]
cron = "{cron}"

[delivery]
transport = "smtp"
from = "Trending Papers <papers@example.org>"

[delivery.retry]
base = "1s"

[delivery.smtp]
host = "{HOST}"
port = {port}
security = "none"
timeout = 5
{topics}
{subscribers}
""", encoding="utf-8")
    return cfg


def drop(root: Path, name: str, text: str) -> None:
    """Put a digest into the inbox whole (written beside it, then renamed in), as a mail filter would."""
    staging = root / "staging"
    staging.mkdir(exist_ok=True)
    (staging / name).write_text(text, encoding="utf-8")
    os.replace(staging / name, root / "inbox" / name)


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("DIGESTMAIL_CONFIG", PASSWORD_ENV, SECRET_ENV)}


class Daemon:
    """One `digestmail daemon` subprocess in its own process group, logging to files beside the config."""

    def __init__(self, cfg: Path, *options: str, name: str = "daemon") -> None:
        self.cfg = cfg
        self.stdout_path = cfg.parent / f"{name}.stdout"
        self.stderr_path = cfg.parent / f"{name}.stderr"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "digestmail", "--config", str(cfg), *options, "daemon"],
                stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=cfg.parent, env=clean_env(),
                start_new_session=True)
        self.pid = self.proc.pid

    @property
    def log(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def diagnostics(self) -> str:
        code = self.proc.poll()
        state = "running" if code is None else f"exited {code}"
        out = self.stdout_path.read_text(encoding="utf-8", errors="replace")
        return f"\n--- daemon pid {self.pid} ({state}) stderr ---\n{self.log}" + \
            (f"--- stdout ---\n{out}" if out else "")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait_log(self, text: str, timeout: float, count: int = 1) -> None:
        """Until `text` occurs `count` times in the log (or the daemon exits, or the deadline passes)."""
        wait_for(lambda: self.log.count(text) >= count, timeout, f"{count}x {text!r} in the log", self)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then the exit code (the deadline is part of what is tested)."""
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"no exit within {timeout}s of SIGTERM" + self.diagnostics()) from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass


def wait_for(condition: Callable[[], bool], timeout: float, what: str, daemon: Daemon | None = None,
             extra: Callable[[], str] = lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if daemon is not None and not daemon.alive():
            break  # it will not get better
        time.sleep(0.05)
    if condition():
        return
    raise AssertionError(f"waited {timeout}s for {what}: {extra()}" + (daemon.diagnostics() if daemon else ""))


def fires_seen(daemon: Daemon) -> int:
    """How many scheduled editions the daemon has handled so far (one log line each)."""
    return daemon.log.count("editions for ")


def counts(server: SmtpServer) -> collections.Counter[str]:
    return collections.Counter(rcpt for m in list(server.messages) for rcpt in m.rcpt_tos)


def parse(message: Received) -> email.message.EmailMessage:
    return email.message_from_bytes(message.data, policy=email.policy.default)  # type: ignore[return-value]


def text_of(message: Received) -> str:
    msg = parse(message)
    part = msg.get_body(("plain",))
    assert part is not None
    return part.get_content()


def status(cfg: Path) -> dict:
    result = subprocess.run([sys.executable, "-m", "digestmail", "--config", str(cfg), "status", "--json"],
                            capture_output=True, text=True, timeout=60, cwd=cfg.parent, env=clean_env())
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def servers() -> Iterator[Callable[..., SmtpServer]]:
    started: list[SmtpServer] = []

    def start(**kwargs: object) -> SmtpServer:
        server = SmtpServer(**kwargs).start()  # type: ignore[arg-type]
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def daemons(servers: Callable[..., SmtpServer]) -> Iterator[Callable[..., Daemon]]:
    """Starts daemons; whatever is still running at the end is killed (before the servers stop)."""
    started: list[Daemon] = []

    def start(cfg: Path, *options: str, name: str = "daemon") -> Daemon:
        daemon = Daemon(cfg, *options, name=name)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.kill()


# -- the tests ------------------------------------------------------------------------------------


def test_digests_reach_matching_subscribers_once_and_a_later_digest_makes_a_second_edition(
        tmp_path, servers, daemons):
    server = servers()
    cfg = write_config(tmp_path, server.port)
    daemon = daemons(cfg)
    daemon.wait_log("daemon started", 15)

    # A digest dropped into the inbox reaches every matching subscriber within a few fires.
    drop(tmp_path, "2026-11-22.txt", DIGEST_1)
    wait_for(lambda: set(counts(server)) >= {"ada@example.org", "grace@example.org"}, 12,
             "ada and grace to get their first edition", daemon, lambda: str(counts(server)))
    first = fires_seen(daemon)
    assert "ingested" in daemon.log and (tmp_path / "inbox" / "done" / "2026-11-22.txt").exists(), \
        daemon.diagnostics()

    # Nothing is new: several more fires, not one more message.
    daemon.wait_log("editions for ", 12, count=first + 3)
    assert counts(server) == {"ada@example.org": 1, "grace@example.org": 1}, daemon.diagnostics()
    by_rcpt = {m.rcpt_tos[0]: m for m in server.messages}
    assert "Sharpness-Aware Adam" in text_of(by_rcpt["ada@example.org"])
    assert "Federated Speech" in text_of(by_rcpt["grace@example.org"])
    assert "Federated" not in text_of(by_rcpt["ada@example.org"])

    # `status --json` while the daemon runs: the schedule's last and next run, the outbox.
    running = status(cfg)
    assert running["outbox"] == {"queued": 0, "sending": 0, "sent": 2, "deferred": 0, "failed": 0}, running
    (sched,) = running["schedules"]
    assert sched["schedule"] == SCHEDULE_NAME, running
    assert sched["last_run"] is not None and sched["next_run"] is not None, running
    last_run = dt.datetime.fromisoformat(sched["last_run"]).replace(tzinfo=dt.timezone.utc)  # UTC wall clock
    next_run = dt.datetime.fromisoformat(sched["next_run"])
    assert last_run < next_run <= last_run + dt.timedelta(seconds=10), running
    assert next_run.second % 2 == 0 and last_run.second % 2 == 0, running
    assert running["messages_sent"] == 2 and running["sources"]["inbox"]["state"] == "ok", running

    # A later digest: a second edition for ada (a new Adam paper), a first for linus (robots),
    # nothing for grace.
    drop(tmp_path, "2026-11-23.txt", DIGEST_2)
    wait_for(lambda: counts(server)["ada@example.org"] == 2 and counts(server)["linus@example.org"] == 1, 12,
             "the second digest's editions", daemon, lambda: str(counts(server)))
    second = fires_seen(daemon)
    daemon.wait_log("editions for ", 12, count=second + 2)
    assert counts(server) == {"ada@example.org": 2, "grace@example.org": 1, "linus@example.org": 1}, \
        daemon.diagnostics()

    ada = [m for m in server.messages if m.rcpt_tos == ("ada@example.org",)]
    again = text_of(ada[1])
    assert "Adam Without Second Moments" in again and "Sharpness-Aware Adam" not in again, again
    assert parse(ada[0])["Message-ID"] != parse(ada[1])["Message-ID"]
    linus = text_of(server.delivered_to("linus@example.org")[0])
    assert "Dexterous Robot Manipulation" in linus and "Adam" not in linus, linus

    assert daemon.stop() == 0, daemon.diagnostics()
    assert "daemon stopped" in daemon.log, daemon.diagnostics()

    # ... and after it stopped.
    after = status(cfg)
    assert after["outbox"] == {"queued": 0, "sending": 0, "sent": 4, "deferred": 0, "failed": 0}, after
    assert after["messages_sent"] == 4 and after["digests"] == 2, after
    (sched,) = after["schedules"]
    assert sched["last_run"] >= running["schedules"][0]["last_run"] and sched["next_run"], after


SUBSCRIBER_COUNT = 200


def test_sigterm_mid_delivery_exits_0_and_a_restart_completes_it(tmp_path, servers, daemons):
    server = servers(data_delay=0.025)  # 200 messages take several seconds
    (tmp_path / "subscribers.csv").write_text("email,name,query\n" + "".join(
        f"reader{i:03d}@example.org,Reader {i},adam\n" for i in range(SUBSCRIBER_COUNT)), encoding="utf-8")
    cfg = write_config(tmp_path, server.port, subscribers="", extra='subscribers_file = "subscribers.csv"')
    drop(tmp_path, "2026-11-22.txt", DIGEST_1)
    expected = {f"reader{i:03d}@example.org" for i in range(SUBSCRIBER_COUNT)}

    first = daemons(cfg, name="first")
    wait_for(lambda: len(server.messages) >= 5, 20, "the first messages", first)
    stopped_at = time.monotonic()
    assert first.stop(timeout=15) == 0, first.diagnostics()
    took = time.monotonic() - stopped_at
    assert took < 10, f"SIGTERM took {took:.1f}s" + first.diagnostics()
    assert "SIGTERM: finishing the edition in flight" in first.log, first.diagnostics()
    sent_before = len(server.messages)
    assert sent_before < SUBSCRIBER_COUNT, "the delivery ended before SIGTERM: the test proved nothing"

    # The outbox is consistent: nothing left `sending`, everything the server took is recorded sent.
    between = status(cfg)
    assert between["outbox"]["sending"] == 0 and between["outbox"]["queued"] == 0, between
    assert between["outbox"]["sent"] in (sent_before, sent_before - 1), (sent_before, between)

    second = daemons(cfg, name="second")
    wait_for(lambda: set(counts(server)) >= expected, 30, "every subscriber to have a message", second,
             lambda: f"{len(set(counts(server)) & expected)} of {SUBSCRIBER_COUNT}")
    assert second.stop() == 0, second.diagnostics()

    got = counts(server)
    assert set(got) == expected, set(got) ^ expected
    duplicates = sum(n - 1 for n in got.values())
    assert duplicates <= 1, (got.most_common(3), first.diagnostics(), second.diagnostics())
    final = status(cfg)
    assert final["outbox"]["sending"] == 0 and final["outbox"]["failed"] == 0, final
    assert final["messages_sent"] == SUBSCRIBER_COUNT, final


def test_second_daemon_is_refused_and_sighup_reloads_only_a_valid_config(tmp_path, servers, daemons):
    server = servers()
    subscribers = SUBSCRIBERS.split("[[subscribers]]\nemail = \"linus")[0]  # ada and grace
    cfg = write_config(tmp_path, server.port, subscribers=subscribers)
    good = cfg.read_text(encoding="utf-8")
    daemon = daemons(cfg)
    daemon.wait_log("daemon started", 15)

    # One daemon per store: a second one exits 2 naming the first one's pid.
    other = subprocess.run([sys.executable, "-m", "digestmail", "--config", str(cfg), "daemon"],
                           capture_output=True, text=True, timeout=30, cwd=tmp_path, env=clean_env())
    assert other.returncode == 2, (other.returncode, other.stderr, daemon.diagnostics())
    assert f"already running (pid {daemon.pid})" in other.stderr, other.stderr
    assert daemon.alive(), daemon.diagnostics()

    # A broken config on SIGHUP: logged with its reason, the old one keeps running and delivering.
    cfg.write_text(good.replace('optimizers = "optimizer OR adam"', 'optimizers = "optimizer OR (adam"'),
                   encoding="utf-8")
    daemon.signal(signal.SIGHUP)
    daemon.wait_log("SIGHUP: the new config is invalid, keeping the old one", 10)
    assert "unclosed parenthesis" in daemon.log and "topics.optimizers" in daemon.log, daemon.diagnostics()
    drop(tmp_path, "2026-11-22.txt", DIGEST_1)
    wait_for(lambda: counts(server) == {"ada@example.org": 1, "grace@example.org": 1}, 12,
             "the digest dropped after a broken SIGHUP to be delivered", daemon, lambda: str(counts(server)))
    assert daemon.alive(), daemon.diagnostics()

    # A valid changed config on SIGHUP takes effect: a new subscriber gets their edition (the papers
    # that arrived just before they joined, within backfill_days); nobody else gets anything again.
    cfg.write_text(good + '\n[[subscribers]]\nemail = "hopper@example.org"\ntopics = ["federated"]\n',
                   encoding="utf-8")
    daemon.signal(signal.SIGHUP)
    daemon.wait_log("SIGHUP: config reloaded", 10)
    wait_for(lambda: counts(server)["hopper@example.org"] == 1, 12, "the new subscriber's edition", daemon,
             lambda: str(counts(server)))
    daemon.wait_log("editions for ", 10, count=fires_seen(daemon) + 1)
    assert counts(server) == {"ada@example.org": 1, "grace@example.org": 1, "hopper@example.org": 1}, \
        daemon.diagnostics()
    assert "Federated Speech" in text_of(server.delivered_to("hopper@example.org")[0])
    assert daemon.stop() == 0, daemon.diagnostics()


def _json_lines(text: str) -> list[dict]:
    lines = []
    for line in text.splitlines():
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            raise AssertionError(f"not a JSON line: {line!r}\n--- stderr ---\n{text}") from None
        assert isinstance(obj, dict) and {"time", "level", "message"} <= set(obj), line
        lines.append(obj)
    return lines


def test_log_format_json_makes_every_stderr_line_a_json_object(tmp_path, servers, daemons):
    server = servers()
    cfg = write_config(tmp_path, server.port)
    drop(tmp_path, "2026-11-22.txt", DIGEST_1)
    (tmp_path / "inbox" / "broken.txt").write_bytes(b"\x00\x01 not a digest")  # a warning line too
    daemon = daemons(cfg, "--log-format", "json")
    wait_for(lambda: len(counts(server)) == 2, 15, "the first editions", daemon)
    daemon.wait_log("editions for ", 10, count=fires_seen(daemon) + 1)
    assert daemon.stop() == 0, daemon.diagnostics()
    lines = _json_lines(daemon.log)
    messages = [line["message"] for line in lines]
    assert any(m.startswith("daemon started") for m in messages), messages
    assert any(m.startswith("sent 1 papers to ada@example.org") for m in messages), messages
    assert any(line["level"] == "warning" and "broken.txt" in line["message"] for line in lines), messages
    assert messages[-1] == "daemon stopped", messages


def test_log_format_json_holds_during_a_delivery_longer_than_the_tick(tmp_path, servers, daemons):
    server = servers(data_delay=0.8)  # two messages take more than the 1 s tick interval
    cfg = write_config(tmp_path, server.port)
    drop(tmp_path, "2026-11-22.txt", DIGEST_1)
    daemon = daemons(cfg, "--log-format", "json")
    wait_for(lambda: len(counts(server)) == 2, 15, "the first editions", daemon)
    daemon.wait_log("editions for ", 10, count=fires_seen(daemon) + 1)
    assert daemon.stop() == 0, daemon.diagnostics()
    _json_lines(daemon.log)


def test_an_interrupted_first_edition_is_taken_up_at_restart(tmp_path, servers, daemons):
    server = servers(data_delay=0.1)
    (tmp_path / "subscribers.csv").write_text("email,name,query\n" + "".join(
        f"reader{i:02d}@example.org,Reader {i},adam\n" for i in range(30)), encoding="utf-8")
    # Once a minute, a few seconds from now: the restart below comes long before the next fire.
    second = (dt.datetime.now(dt.timezone.utc).second + 4) % 60
    cfg = write_config(tmp_path, server.port, subscribers="", extra='subscribers_file = "subscribers.csv"',
                       cron=f"{second} * * * * *")
    drop(tmp_path, "2026-11-22.txt", DIGEST_1)
    first = daemons(cfg, name="first")
    wait_for(lambda: len(server.messages) >= 3, 15, "the first messages", first)
    assert first.stop() == 0, first.diagnostics()
    assert len(server.messages) < 30
    server.recorder.data_delay = 0.0
    restarted = daemons(cfg, name="second")
    wait_for(lambda: len(counts(server)) == 30, 6, "the interrupted edition to be completed", restarted,
             lambda: f"{len(counts(server))} of 30")


def test_a_missing_secret_stops_the_daemon_at_start(tmp_path, servers, daemons):
    server = servers()
    cfg = write_config(tmp_path, server.port)
    cfg.write_text(cfg.read_text(encoding="utf-8").replace(
        'security = "none"', f'security = "starttls"\nusername = "papers"\npassword_env = "{PASSWORD_ENV}"'),
        encoding="utf-8")
    daemon = daemons(cfg)  # clean_env() leaves PASSWORD_ENV out
    wait_for(lambda: not daemon.alive(), 3, "the daemon to refuse to start", daemon)
    assert daemon.proc.returncode == 2 and PASSWORD_ENV in daemon.log, daemon.diagnostics()


def test_an_unusable_store_folder_is_a_clean_error(tmp_path, servers):
    server = servers()
    cfg = write_config(tmp_path, server.port)
    (tmp_path / "notafolder").write_text("", encoding="utf-8")
    cfg.write_text(cfg.read_text(encoding="utf-8").replace(
        'path = "store.sqlite3"', 'path = "notafolder/store.sqlite3"'), encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "digestmail", "--config", str(cfg), "daemon"],
                            capture_output=True, text=True, timeout=30, cwd=tmp_path, env=clean_env())
    assert result.returncode == 2 and "error:" in result.stderr and "Traceback" not in result.stderr, \
        (result.returncode, result.stderr)


def test_run_refuses_while_the_store_is_held(tmp_path):
    """`run` next to a daemon (or an overlapping cron run) exits 2 instead of delivering twice."""
    from digestmail.daemon import InstanceLock

    from .conftest import cli as run_cli_simple
    from .conftest import write_config as simple_config

    config = simple_config(tmp_path, '[topics]\nx = "robots"\n[[subscribers]]\nemail = "a@example.org"\ntopics = ["x"]\n')
    lock = InstanceLock(tmp_path / "store.sqlite3")
    lock.acquire()
    try:
        result = run_cli_simple("--config", config, "run")
        assert result.returncode == 2 and "already running" in result.stderr
    finally:
        lock.release()
    assert run_cli_simple("--config", config, "run").returncode == 0


def test_sighup_applies_a_new_poll_interval(tmp_path, servers, daemons):
    """Polling every hour, then SIGHUP with poll_interval = 1s: a digest dropped after it is delivered."""
    server = servers()
    cfg = write_config(tmp_path, server.port)
    fast = cfg.read_text(encoding="utf-8")
    cfg.write_text(fast.replace('poll_interval = "1s"', 'poll_interval = "1h"'), encoding="utf-8")
    daemon = daemons(cfg)
    daemon.wait_log("daemon started", 15)
    time.sleep(1.5)  # the first poll, at start, has run: the next one would be an hour away
    drop(tmp_path, "2026-11-22.txt", DIGEST_1)
    time.sleep(2.5)
    assert sum(counts(server).values()) == 0, daemon.diagnostics()
    cfg.write_text(fast, encoding="utf-8")
    daemon.signal(signal.SIGHUP)
    daemon.wait_log("SIGHUP: config reloaded", 10)
    wait_for(lambda: sum(counts(server).values()) >= 1, 15, "delivery once polling every second", daemon,
             lambda: str(counts(server)))
    assert daemon.stop() == 0, daemon.diagnostics()
