"""Every real digest format through the CLI: exact paper counts, one paper across formats, bad input."""

from __future__ import annotations

import ast
import email.message
import json
import mailbox
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from .conftest import NOW, cli, trending, write_config

BODY = '[topics]\nx = "robots"\n'


def title_key(title: str) -> str:
    return re.sub(r"[^0-9a-z]+", " ", title.lower().replace("'", "").replace("\u2019", "")).strip()


def hf_items(path: Path) -> list[dict]:
    data = json.loads(path.read_text(encoding="utf-8"))
    items = data["data"] if isinstance(data, dict) else data
    return [ast.literal_eval(i) if isinstance(i, str) else i for i in items]


def listing_papers(path: Path) -> list[tuple[str, str]]:
    """(arXiv id, title) of each block with both, read with regexes and nothing else; a repeated id once."""
    out: list[tuple[str, str]] = []
    for block in path.read_text(encoding="utf-8").split("\\\\\n"):
        ident = re.search(r"^arXiv:(\d{4}\.\d{4,5})", block, re.M)
        title = re.search(r"^Title: (.*(?:\n[ \t]+.*)*)", block, re.M)
        if ident and title and ident.group(1) not in {i for i, _ in out}:
            out.append((ident.group(1), " ".join(title.group(1).split())))
    return out


def expected_distinct(shared: Path) -> tuple[int, dict[str, int]]:
    """Union of every (id, title) seen, joined when ids match or titles match: this test's own count."""
    records: list[tuple[str | None, str]] = []
    per_file: dict[str, int] = {}
    for path in sorted((shared / "digests").glob("*.txt")):
        lines = [l.strip() for l in path.read_text(encoding="utf-8").splitlines() if l.strip()][5:]
        records += [(None, t) for t in lines[0::2]]
        per_file[path.name] = len(lines[0::2])
    for path in sorted((shared / "data" / "hf-daily-api").glob("*.json")):
        items = hf_items(path)
        records += [(i["paper"]["id"], " ".join(i["paper"]["title"].split())) for i in items]
        per_file[path.name] = len(items)
    ns = {"a": "http://www.w3.org/2005/Atom"}
    entries = ET.parse(shared / "data" / "arxiv-atom" / "arxiv-api-query.xml").getroot().findall("a:entry", ns)
    for e in entries:
        ident = re.search(r"abs/(.+?)(?:v\d+)?$", e.find("a:id", ns).text).group(1)
        records.append((ident, " ".join(e.find("a:title", ns).text.split())))
    per_file["arxiv-api-query.xml"] = len(entries)
    for path in sorted((shared / "data" / "arxiv-listing-email").glob("*.txt")):
        papers = listing_papers(path)
        records += papers
        per_file[path.name] = len(papers)
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    for ident, title in records:
        nodes = [f"t:{title_key(title)}"] + ([f"i:{ident}"] if ident else [])
        for n in nodes[1:]:
            parent[find(n)] = find(nodes[0])
        find(nodes[0])
    return len({find(n) for n in parent}), per_file


@pytest.mark.shared
def test_every_real_format_lands_once(tmp_path, shared):
    config = write_config(tmp_path, BODY)
    inbox = tmp_path / "inbox"
    sources = [*(shared / "digests").glob("*.txt"), *(shared / "data" / "hf-daily-api").glob("*.json"),
               shared / "data" / "arxiv-atom" / "arxiv-api-query.xml",
               *(shared / "data" / "arxiv-listing-email").glob("*.txt")]
    for path in sources:
        shutil.copy(path, inbox / path.name)
    result = cli("--config", config, "--now", NOW, "ingest", "--json")
    report = json.loads(result.stdout)
    files = {Path(f["path"]).name: f for f in report["files"]}
    assert result.returncode == 0, [f for f in report["files"] if f["status"] != "ingested"]
    distinct, per_file = expected_distinct(shared)
    assert {name: files[name]["entries"] for name in per_file} == per_file
    assert files["malformed.txt"]["warnings"]  # its broken blocks are reported, its good ones land
    status = json.loads(cli("--config", config, "status", "--json").stdout)
    assert status["papers"] == distinct
    assert report["new_papers"] == distinct
    assert {f["format"] for f in report["files"]} == {"trending", "hf-json", "feed", "arxiv-listing"}


@pytest.mark.shared
def test_wrapped_digests_give_the_same_papers(tmp_path, shared):
    """The seeds as plain files, as .eml files, in an mbox and in a Maildir: the same 251 papers."""
    seeds = sorted((shared / "digests").glob("*.txt"))

    def as_message(path: Path) -> email.message.EmailMessage:
        msg = email.message.EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "papers@example.org", "admin@example.org", "Trending papers"
        msg["Date"] = "Mon, 23 Nov 2026 07:00:00 +0000"
        msg.set_content(path.read_text(encoding="utf-8"))
        return msg

    counts = {}
    for kind in ("plain", "eml", "mbox", "maildir"):
        folder = tmp_path / kind
        folder.mkdir()
        head = ""
        if kind == "maildir":
            box = mailbox.Maildir(folder / "Maildir", create=True)
            for path in seeds:
                box.add(as_message(path))
            head = '[sources.maildir]\npath = "Maildir"\n'
        config = write_config(folder, head + BODY)
        inbox = folder / "inbox"
        if kind == "plain":
            for path in seeds:
                shutil.copy(path, inbox / path.name)
        elif kind == "eml":
            for path in seeds:
                (inbox / (path.stem + ".eml")).write_bytes(as_message(path).as_bytes())
        elif kind == "mbox":
            box = mailbox.mbox(inbox / "digests.mbox")
            for path in seeds:
                box.add(as_message(path))
            box.flush()
        result = cli("--config", config, "--now", NOW, "ingest", "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        report = json.loads(result.stdout)
        assert report["ingested"] == 5
        status = json.loads(cli("--config", config, "status", "--json").stdout)
        counts[kind] = (status["papers"], status["entries"])
        if kind == "maildir":
            assert not any((folder / "Maildir" / "new").iterdir())
            assert all(p.name.endswith(":2,S") for p in (folder / "Maildir" / "cur").iterdir())
            again = json.loads(cli("--config", config, "--now", NOW, "ingest", "--json").stdout)
            assert again["files"] == []  # read messages are not read again
    assert set(counts.values()) == {(251, 319)}, counts


def test_bad_input_corpus_is_rejected_file_by_file(tmp_path):
    config = write_config(tmp_path, BODY)
    inbox = tmp_path / "inbox"
    corpus = {
        "empty.txt": b"",
        "garbage.bin": bytes(range(256)) * 8,
        "truncated.json": b'[{"paper": {"id": "2401.00001", "title": "A paper", "summ',
        "prose.txt": b"Dear colleagues,\n\nthe seminar moves to Thursday.\n\nBest, Ada\n",
        "utf16.txt": trending("Nov 20", [("Robots", "We study robots.")]).encode("utf-16-le"),
        "nothing.json": b"[]",
        "notxml.xml": b"<html><body>Not a feed</body></html>",
    }
    for name, data in corpus.items():
        (inbox / name).write_bytes(data)
    (inbox / "good.txt").write_text(trending("Nov 20", [("Robots That Cook", "We cook with robots.")]))
    result = cli("--config", config, "--now", NOW, "ingest", "--json")
    assert result.returncode == 1
    files = {Path(f["path"]).name: f for f in json.loads(result.stdout)["files"]}
    assert files["good.txt"]["status"] == "ingested"
    for name in corpus:
        assert files[name]["status"] == "rejected" and files[name]["reason"], name
        assert (inbox / "rejected" / name).exists() and (inbox / "rejected" / f"{name}.reason").exists()
    assert "truncated" in files["truncated.json"]["reason"].lower()
    human = cli("--config", config, "--now", NOW, "ingest", *[inbox / "rejected" / n for n in corpus])
    assert human.returncode == 1
    assert sum(line.startswith("rejected ") for line in human.stdout.splitlines()) == len(corpus)


def test_source_health_tells_quiet_from_stale(tmp_path):
    config = write_config(tmp_path, BODY, head='', inbox="inbox")
    text = config.read_text().replace('inbox = "inbox"', 'inbox = "inbox"\nexpect_every = "36h"')
    config.write_text(text)

    def status(now: str) -> dict:
        return json.loads(cli("--config", config, "--now", now, "status", "--json").stdout)["sources"]["inbox"]

    digest = trending("Nov 20", [("Robots That Cook", "We cook with robots.")])
    (tmp_path / "inbox" / "a.txt").write_text(digest)
    assert cli("--config", config, "--now", "2026-11-20T08:00:00+00:00", "run").returncode == 0
    assert status("2026-11-20T09:00:00+00:00")["state"] == "ok"
    # The same papers again under another name: a digest arrived, but nothing new.
    (tmp_path / "inbox" / "b.txt").write_text(digest.replace("Nov 20", "Nov 21"))
    assert cli("--config", config, "--now", "2026-11-21T08:00:00+00:00", "run").returncode == 0
    quiet = status("2026-11-21T09:00:00+00:00")
    assert quiet["state"] == "quiet" and not quiet["stale"]
    # Nothing at all for two days: stale, and the run says so.
    run = cli("--config", config, "--now", "2026-11-23T09:00:00+00:00", "run")
    assert run.returncode == 0 and "STALE" in run.stdout and "inbox" in run.stdout
    stale = status("2026-11-23T09:00:00+00:00")
    assert stale["state"] == "stale" and stale["stale"] and stale["silent_for"] == "2d 1h"
    human = cli("--config", config, "--now", "2026-11-23T09:00:00+00:00", "status").stdout
    assert "source inbox: stale" in human and "expected every 1d 12h" in human
