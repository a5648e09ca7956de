"""End to end through the CLI: the real digests in, exactly the right emails out, never twice."""

from __future__ import annotations

import email
import email.policy
import json
import re
import shutil
import sqlite3
from pathlib import Path

import pytest

from .conftest import NOW, cli, trending, write_config

TOPICS = """
[topics]
federated = "federated"
grokking = "grokking"
nothing = "xylophonic OR zebrafish"

[[subscribers]]
email = "fed@example.org"
name = "Fed"
topics = ["federated"]
max_papers = 50

[[subscribers]]
email = "grok@example.org"
name = "Grok"
topics = ["grokking"]
max_papers = 50

[[subscribers]]
email = "none@example.org"
topics = ["nothing"]
"""


def key(title: str) -> str:
    """This test's own idea of "the same title", independent of digestmail.identity."""
    return re.sub(r"[^0-9a-z]+", " ", title.lower().replace("'", "")).strip()


def seed_papers(shared: Path) -> dict[str, tuple[str, str]]:
    """key -> (title, abstract) over the five seeds, read with nothing but the README's description."""
    papers = {}
    for path in sorted((shared / "digests").glob("*.txt")):
        lines = [l.strip() for l in path.read_text(encoding="utf-8").splitlines() if l.strip()][5:]
        for title, abstract in zip(lines[0::2], lines[1::2]):
            papers.setdefault(key(title), (title, abstract))
    return papers


def expected(papers: dict[str, tuple[str, str]], word: str) -> set[str]:
    pattern = re.compile(rf"(?<![0-9a-z]){word}(?![0-9a-z])", re.I)
    return {k for k, (t, a) in papers.items() if pattern.search(t) or pattern.search(a)}


def emails(outbox: Path) -> dict[str, list[email.message.EmailMessage]]:
    out: dict[str, list] = {}
    for path in sorted(outbox.glob("*.eml")) if outbox.exists() else []:
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        out.setdefault(msg["To"].addresses[0].addr_spec, []).append(msg)
    return out


def titles_in(msg, papers: dict[str, tuple[str, str]]) -> set[str]:
    """Keys of the seed papers listed in the text part; checks the count of numbered items too."""
    text = msg.get_body(("plain",)).get_content()
    items = re.findall(r"^\d+\. ", text, re.M)
    flat = " ".join(text.split())
    found = {k for k, (t, _) in papers.items() if " ".join(t.split()) in flat}
    assert len(items) == len(found), "every listed item is a known paper, listed once"
    return found


@pytest.fixture
def setup(tmp_path, shared):
    config = write_config(tmp_path, TOPICS)
    for path in (shared / "digests").glob("*.txt"):
        shutil.copy(path, tmp_path / "inbox" / path.name)
    return tmp_path, config


@pytest.mark.shared
def test_ingest_counts_and_dates(setup, shared):
    folder, config = setup
    result = cli("--config", config, "--now", NOW, "ingest", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert sorted(f["digest_date"] for f in report["files"]) == \
        ["2026-03-11", "2026-03-12", "2026-03-13", "2026-03-14", "2026-06-06"]
    assert sum(f["entries"] for f in report["files"]) == 319
    assert report["new_papers"] == 251 and report["ingested"] == 5
    status = json.loads(cli("--config", config, "status", "--json").stdout)
    assert (status["papers"], status["entries"], status["digests"]) == (251, 319, 5)
    # Stored in digest-date order, whatever the file names say.
    with sqlite3.connect(folder / "store.sqlite3") as db:
        dates = [r[0] for r in db.execute("SELECT digest_date FROM digests ORDER BY id")]
    assert dates == sorted(dates)
    # Processed files moved to done/; the same files dropped in again change nothing.
    assert sorted(p.name for p in (folder / "inbox" / "done").iterdir()) == \
        sorted(p.name for p in (shared / "digests").glob("*.txt"))
    for path in (folder / "inbox" / "done").iterdir():
        shutil.copy(path, folder / "inbox" / path.name)
    again = json.loads(cli("--config", config, "--now", NOW, "ingest", "--json").stdout)
    assert again["duplicate"] == 5 and again["new_papers"] == 0


@pytest.mark.shared
def test_run_sends_each_matching_paper_once(setup, shared):
    folder, config = setup
    papers = seed_papers(shared)
    fed, grok = expected(papers, "federated"), expected(papers, "grokking")
    assert fed and grok  # the seeds do mention both

    first = cli("--config", config, "--now", NOW, "run")
    assert first.returncode == 0, first.stderr
    sent = emails(folder / "outbox")
    assert sorted(sent) == ["fed@example.org", "grok@example.org"]
    assert len(sent["fed@example.org"]) == len(sent["grok@example.org"]) == 1
    assert titles_in(sent["fed@example.org"][0], papers) == fed
    assert titles_in(sent["grok@example.org"][0], papers) == grok

    second = cli("--config", config, "--now", "2026-11-23T09:00:00+00:00", "run")
    assert second.returncode == 0, second.stderr
    assert len(list((folder / "outbox").glob("*.eml"))) == 2

    # A new digest: one known federated paper under a re-cased, re-punctuated title, one new one.
    old_title = papers[sorted(fed)[0]][0]
    variant = "  ".join(old_title.upper().replace(":", " :").split(" ")) + "."
    (folder / "inbox" / "later.txt").write_text(trending("Nov 22", [
        (variant, "Same paper, reformatted."),
        ("Federated Averaging Without a Server", "We remove the server from federated averaging."),
    ]), encoding="utf-8")
    third = cli("--config", config, "--now", "2026-11-23T10:00:00+00:00", "run")
    assert third.returncode == 0, third.stderr
    sent = emails(folder / "outbox")
    assert len(sent["fed@example.org"]) == 2 and len(sent["grok@example.org"]) == 1
    latest = max(sent["fed@example.org"], key=lambda m: m["Date"].datetime)
    text = latest.get_body(("plain",)).get_content()
    assert "Federated Averaging Without a Server" in text
    assert len(re.findall(r"^\d+\. ", text, re.M)) == 1
    assert "none@example.org" not in sent


def test_bad_config_exits_2_naming_the_key(tmp_path):
    config = write_config(tmp_path, '[topics]\nx = "y"\n[[subscribers]]\nemail = "a@example.org"\ntopics = ["x"]\nmax_paper = 3\n')
    result = cli("--config", config, "run")
    assert result.returncode == 2
    assert "subscribers[0].max_paper" in result.stderr and "did you mean subscribers[0].max_papers" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_config_and_missing_inbox_exit_2(tmp_path):
    result = cli("--config", tmp_path / "nope.toml", "run")
    assert result.returncode == 2 and "does not exist" in result.stderr
    config = write_config(tmp_path, '[topics]\nx = "y"\n')
    (tmp_path / "inbox").rmdir()
    result = cli("--config", config, "run")
    assert result.returncode == 2
    assert "inbox folder" in result.stderr and "does not exist" in result.stderr and "sources.inbox" in result.stderr


def test_config_from_environment(tmp_path):
    config = write_config(tmp_path, '[topics]\nx = "y"\n')
    result = cli("ingest", env={"DIGESTMAIL_CONFIG": str(config)}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr and "no digest files found" in result.stdout


def test_one_unreadable_digest_does_not_stop_the_others(tmp_path):
    config = write_config(tmp_path, '[topics]\nx = "robots"\n[[subscribers]]\nemail = "a@example.org"\ntopics = ["x"]\n')
    inbox = tmp_path / "inbox"
    (inbox / "good.txt").write_text(trending("Nov 20", [("Robots That Cook", "We cook with robots.")]))
    (inbox / "garbage.bin").write_bytes(bytes(range(256)) * 4)
    (inbox / "dangling.txt").symlink_to(tmp_path / "missing-target.txt")
    (inbox / "prose.txt").write_text("Hello, this is not a digest.\n")
    result = cli("--config", config, "--now", NOW, "ingest", "--json")
    assert result.returncode == 1
    files = {Path(f["path"]).name: f for f in json.loads(result.stdout)["files"]}
    assert files["good.txt"]["status"] == "ingested" and files["good.txt"]["new_papers"] == 1
    for name in ("garbage.bin", "dangling.txt", "prose.txt"):
        assert files[name]["status"] == "rejected" and files[name]["reason"], name
    assert [p.name for p in (inbox / "done").iterdir()] == ["good.txt"]
    rejected = sorted(p.name for p in (inbox / "rejected").iterdir())
    assert rejected == sorted(n + s for n in ("dangling.txt", "garbage.bin", "prose.txt") for s in ("", ".reason"))
    assert "not a digest format" in (inbox / "rejected" / "prose.txt.reason").read_text()
    assert [p.name for p in inbox.iterdir() if p.is_file()] == []
    run = cli("--config", config, "--now", NOW, "run")
    assert run.returncode == 0, run.stderr  # the bad files are out of the way now
    assert len(emails(tmp_path / "outbox")["a@example.org"]) == 1


def test_preview_records_nothing(tmp_path):
    config = write_config(tmp_path, '[topics]\nx = "robots"\n[[subscribers]]\nemail = "a@example.org"\nname = "Ann"\ntopics = ["x"]\n')
    (tmp_path / "inbox" / "d.txt").write_text(trending("Nov 20", [("Robots That Cook", "We cook with robots.")]))
    assert cli("--config", config, "--now", NOW, "ingest").returncode == 0
    for _ in range(2):
        result = cli("--config", config, "--now", NOW, "preview", "a@example.org", "--out", tmp_path / "pv")
        assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in (tmp_path / "pv").iterdir())
    assert names == ["preview-a@example.org.eml", "preview-a@example.org.html", "preview-a@example.org.txt"]
    assert "Robots That Cook" in (tmp_path / "pv" / "preview-a@example.org.html").read_text()
    assert not (tmp_path / "outbox").exists()
    status = json.loads(cli("--config", config, "status", "--json").stdout)
    assert status["messages_sent"] == 0
    unknown = cli("--config", config, "preview", "b@example.org", "--out", tmp_path / "pv")
    assert unknown.returncode == 2 and "not a subscriber" in unknown.stderr


@pytest.mark.parametrize("command", [[], ["ingest"], ["run"], ["preview"], ["status"]])
def test_every_command_has_help(command):
    result = cli(*command, "--help")
    assert result.returncode == 0 and "Usage:" in result.stdout
    assert len(result.stdout.split("\n\n")[1].strip()) > 20  # a real description, not just usage


def test_unknown_command_is_a_usage_error():
    result = cli("frobnicate")
    assert result.returncode == 2 and "No such command" in result.stderr


def test_maildir_transport(tmp_path):
    import mailbox

    config = write_config(tmp_path, '[topics]\nx = "robots"\n[[subscribers]]\nemail = "a@example.org"\nname = "Ann"\ntopics = ["x"]\n')
    config.write_text(config.read_text().replace('transport = "file"', 'transport = "maildir"'))
    (tmp_path / "inbox" / "d.txt").write_text(trending("Nov 20", [("Robots That Cook", "We cook with robots.")]))
    result = cli("--config", config, "--now", NOW, "run")
    assert result.returncode == 0, result.stderr
    box = mailbox.Maildir(tmp_path / "outbox", create=False)
    (msg,) = list(box)
    assert msg["To"] == "Ann <a@example.org>" and "Robots That Cook" in msg["Subject"]
    assert not any((tmp_path / "outbox" / "tmp").iterdir())


def test_status_shows_the_last_run_and_the_outbox(tmp_path):
    config = write_config(tmp_path, '[topics]\nx = "robots"\n[[subscribers]]\nemail = "a@example.org"\ntopics = ["x"]\n')
    (tmp_path / "inbox" / "d.txt").write_text(trending("Nov 20", [("Robots That Cook", "We cook with robots.")]))
    assert cli("--config", config, "--now", NOW, "run").returncode == 0
    status = json.loads(cli("--config", config, "--now", NOW, "status", "--json").stdout)
    run = status["last_runs"]["run"]
    assert (run["sent"], run["new_papers"], run["failed"], run["at"]) == (1, 1, [], NOW)
    assert status["outbox"]["sent"] == 1 and status["suppressed"] == []
    assert status["schedules"][0]["next_run"].startswith("2026-11-24T08:00:00")
    human = cli("--config", config, "--now", NOW, "status").stdout
    assert "last run at" in human and "1 sent" in human and "outbox" in human
