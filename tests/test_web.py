"""`digestmail serve` as a real process on loopback: the unsubscribe page, RFC 8058 one-click, and the
next run skipping the address. Spoken to over real HTTP (http.client: it never follows redirects)."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import http.client
import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pytest

from digestmail import tokens
from digestmail.store import Store

from .conftest import NOW, cli, trending, write_config

SECRET_ENV = "DIGESTMAIL_TEST_WEB_SECRET"
SECRET = "7f3c1e0b9a4d4f25b8e6c2a1d0f9e8b7-test-only"
ENV = {SECRET_ENV: SECRET}
NEXT_DAY = (dt.datetime.fromisoformat(NOW) + dt.timedelta(days=1)).isoformat()
ONE_CLICK = {"Content-Type": "application/x-www-form-urlencoded"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
WEB = f"""
[web]
base_url = "https://papers.example.org"
listen = "127.0.0.1:0"
secret_env = "{SECRET_ENV}"
"""
SUBSCRIBERS = """
[topics]
diffusion = "diffusion"

[[subscribers]]
email = "ada@example.org"
name = "Ada"
topics = ["diffusion"]

[[subscribers]]
email = "bob@example.org"
name = "Bob"
topics = ["diffusion"]
"""


def token(address: str, purpose: str = tokens.UNSUBSCRIBE, secret: str = SECRET) -> str:
    return tokens.make(secret.encode(), address, purpose)


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: str


class Server:
    """`python -m digestmail --config PATH serve` on a port the kernel picks, stopped by SIGTERM."""

    def __init__(self, config: Path, env: dict[str, str]) -> None:
        full_env = {k: v for k, v in os.environ.items() if k != "DIGESTMAIL_CONFIG"} | env
        self.proc = subprocess.Popen([sys.executable, "-m", "digestmail", "--config", str(config), "serve"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, env=full_env)
        self.lines: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.port = self._wait_for_port(timeout=20)
        self._wait_healthy(timeout=10)

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            self._lines.put(line)
        self._lines.put(None)

    def _wait_for_port(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                self.stop()
                pytest.fail(f"digestmail serve exited with {self.proc.returncode}:\n{''.join(self.lines)}")
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)/", line)
            if m:
                return int(m.group(1))
        self.stop()
        pytest.fail(f"digestmail serve did not say where it listens within {timeout}s:\n{''.join(self.lines)}")

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.request("GET", "/healthz").status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"/healthz did not answer within {timeout}s:\n{''.join(self.lines)}")

    def request(self, method: str, path: str, body: bytes | str | None = None,
                headers: dict[str, str] | None = None, chunked: bool = False) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            if chunked:
                data = body.encode() if isinstance(body, str) else body
                conn.request(method, path, body=iter([data]), headers=headers or {}, encode_chunked=True)
            else:
                conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return Reply(resp.status, resp.headers, resp.read().decode("utf-8"))
        finally:
            conn.close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._reader.join(timeout=10)
        return self.proc.returncode


@dataclass
class Site:
    folder: Path
    config: Path
    server: Server

    def suppression(self, address: str) -> dict[str, str] | None:
        with Store(self.folder / "store.sqlite3") as store:
            return next((s for s in store.suppressions() if s["email"].lower() == address.lower()), None)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("web")
    config = write_config(folder, SUBSCRIBERS, head=WEB)
    (folder / "inbox" / "day1.txt").write_text(trending("Nov 22", [
        ("Fast Diffusion Sampling", "We sample diffusion models in four steps."),
        ("Cooking with Graphs", "Nothing about the topic here."),
    ]), encoding="utf-8")
    server = Server(config, ENV)
    yield Site(folder, config, server)
    code = server.stop()
    assert server.proc.poll() is not None, "the server process is still running"
    assert code == 0, "".join(server.lines)
    assert "Traceback" not in "".join(server.lines), "".join(server.lines)


def assert_secure(reply: Reply) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert reply.headers.get(name) == value, (name, reply.status)
    assert reply.headers.get("Set-Cookie") is None
    assert reply.headers.get("Server") is None


# -- the page ---------------------------------------------------------------------------------

def test_healthz_answers_ok(site: Site):
    reply = site.server.request("GET", "/healthz")
    assert (reply.status, reply.body) == (200, "ok")


def test_get_shows_the_page_and_does_not_unsubscribe(site: Site):
    path = f"/u/{token('reader@example.org')}"
    for method in ("GET", "GET", "HEAD"):
        reply = site.server.request(method, path)
        assert reply.status == 200
        assert reply.headers.get_content_type() == "text/html"
    reply = site.server.request("GET", path)
    assert "Unsubscribe reader@example.org from Trending Papers" in reply.body
    assert re.search(r'<form method="post">', reply.body)  # posts back to the same URL
    assert '<html lang="en">' in reply.body and "<title>" in reply.body
    assert not re.search(r"\b(src|href)\s*=|@import|url\(", reply.body), "no external resources"
    assert site.suppression("reader@example.org") is None


def test_one_click_post_unsubscribes_with_200_no_redirect_no_cookie(site: Site):
    path = f"/u/{token('click@example.org')}"
    reply = site.server.request("POST", path, "List-Unsubscribe=One-Click", ONE_CLICK)
    assert reply.status == 200
    assert reply.headers.get("Location") is None and reply.headers.get("Set-Cookie") is None
    assert "click@example.org" in reply.body and "unsubscribed" in reply.body
    first = site.suppression("click@example.org")
    assert first is not None and (first["reason"], first["detail"]) == ("unsubscribed", "one-click")

    again = site.server.request("POST", path, "List-Unsubscribe=One-Click", ONE_CLICK)
    assert again.status == 200 and again.headers.get("Set-Cookie") is None
    assert site.suppression("click@example.org") == first  # idempotent: nothing rewritten

    page = site.server.request("GET", path)
    assert page.status == 200 and "already unsubscribed" in page.body
    assert "<button" not in page.body


def test_the_pages_own_form_post_unsubscribes(site: Site):
    path = f"/u/{token('Form@Example.org')}"
    reply = site.server.request("POST", path, "confirm=unsubscribe", ONE_CLICK)
    assert reply.status == 200
    found = site.suppression("form@example.org")
    assert found is not None and (found["reason"], found["detail"]) == ("unsubscribed", "web page")


def test_multipart_one_click_body_is_accepted(site: Site):
    boundary = "----digestmailtest"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\n"
            f"One-Click\r\n--{boundary}--\r\n")
    reply = site.server.request("POST", f"/u/{token('multi@example.org')}", body,
                                {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert reply.status == 200
    found = site.suppression("multi@example.org")
    assert found is not None and found["detail"] == "one-click"


def test_a_post_that_does_not_ask_to_unsubscribe_is_refused(site: Site):
    path = f"/u/{token('vague@example.org')}"
    for body in ("", "List-Unsubscribe=Maybe", "hello"):
        assert site.server.request("POST", path, body, ONE_CLICK).status == 400
    assert site.suppression("vague@example.org") is None


def test_tampered_tokens_get_400_and_change_nothing(site: Site):
    good = token("victim@example.org")
    payload, _, signature = good.rpartition(".")
    other_payload = token("attacker@example.org").rpartition(".")[0]
    bad = [
        f"{payload}.{('B' if signature[0] == 'A' else 'A')}{signature[1:]}",  # signature changed
        f"{other_payload}.{signature}",  # another address under this signature
        token("victim@example.org", secret="another key"),  # signed with a different key
        payload, "x", "." * 40, "a" * 5000,
    ]
    for t in bad:
        path = "/u/" + urllib.parse.quote(t, safe="")
        get = site.server.request("GET", path)
        assert get.status == 400, t
        assert "victim@example.org" not in get.body and "attacker@example.org" not in get.body
        post = site.server.request("POST", path, "List-Unsubscribe=One-Click", ONE_CLICK)
        assert post.status == 400, t
        assert_secure(post)
    assert site.suppression("victim@example.org") is None
    assert site.suppression("attacker@example.org") is None


def test_a_token_made_for_another_purpose_gets_400(site: Site):
    path = f"/u/{token('purpose@example.org', purpose='manage')}"
    assert site.server.request("GET", path).status == 400
    assert site.server.request("POST", path, "List-Unsubscribe=One-Click", ONE_CLICK).status == 400
    assert site.suppression("purpose@example.org") is None


def test_the_address_is_html_escaped(site: Site):
    address = "\"<script>alert(1)</script>&<b>x</b>'\"@example.org"
    path = f"/u/{token(address)}"
    for reply in (site.server.request("GET", path),
                  site.server.request("POST", path, "List-Unsubscribe=One-Click", ONE_CLICK)):
        assert reply.status == 200
        assert "<script>" not in reply.body and "<b>x</b>" not in reply.body
        assert "&lt;script&gt;alert(1)&lt;/script&gt;&amp;&lt;b&gt;x&lt;/b&gt;" in reply.body


def test_security_headers_on_every_response(site: Site):
    t = token("headers@example.org")
    replies = [
        site.server.request("GET", f"/u/{t}"),
        site.server.request("GET", "/u/not-a-token"),
        site.server.request("GET", "/healthz"),
        site.server.request("GET", "/nowhere"),
        site.server.request("PUT", f"/u/{t}", "x"),
        site.server.request("POST", f"/u/{t}", "x" * 10_000, ONE_CLICK),
        site.server.request("POST", f"/u/{t}", "List-Unsubscribe=One-Click", ONE_CLICK),
    ]
    assert [r.status for r in replies] == [200, 400, 200, 404, 405, 413, 200]
    for reply in replies:
        assert_secure(reply)


def test_unknown_paths_are_404(site: Site):
    for path in ("/", "/u/", f"/u/{token('x@example.org')}/more", "/admin", "/healthz/x"):
        reply = site.server.request("GET", path)
        assert reply.status == 404, path
        assert "Page not found" in reply.body


def test_large_bodies_are_refused(site: Site):
    path = f"/u/{token('big@example.org')}"
    body = "List-Unsubscribe=One-Click&pad=" + "x" * 8192
    assert site.server.request("POST", path, body, ONE_CLICK).status == 413
    assert site.server.request("POST", path, body, ONE_CLICK, chunked=True).status == 413
    assert site.suppression("big@example.org") is None
    # a body just under the limit is fine
    small = "List-Unsubscribe=One-Click&pad=" + "x" * 3000
    assert site.server.request("POST", path, small, ONE_CLICK).status == 200


def test_concurrent_unsubscribes_all_land(site: Site):
    addresses = [f"many{i}@example.org" for i in range(12)]
    statuses: list[int] = []

    def post(address: str) -> None:
        statuses.append(site.server.request("POST", f"/u/{token(address)}", "List-Unsubscribe=One-Click",
                                            ONE_CLICK).status)

    threads = [threading.Thread(target=post, args=(a,)) for a in addresses]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert statuses == [200] * len(addresses)
    assert all(site.suppression(a) for a in addresses)


# -- the whole loop: an email's own link, then the next run -----------------------------------------

def test_one_click_from_the_email_and_the_next_run_skips_the_address(site: Site):
    first = cli("--config", site.config, "--now", NOW, "run", "--json", env=ENV)
    assert first.returncode == 0, first.stderr
    assert sorted(s["email"] for s in json.loads(first.stdout)["sent"]) == ["ada@example.org", "bob@example.org"]

    # the List-Unsubscribe link of Ada's email, sent to the local server
    emails = [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
              for p in sorted((site.folder / "outbox").rglob("*.eml"))]
    ada = next(m for m in emails if "ada@example.org" in str(m["To"]))
    assert ada["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = re.search(r"<(https://papers\.example\.org/u/[^>]+)>", str(ada["List-Unsubscribe"])).group(1)
    path = urllib.parse.urlsplit(url).path
    assert site.server.request("GET", path).status == 200
    assert site.suppression("ada@example.org") is None  # looking is not unsubscribing
    reply = site.server.request("POST", path, "List-Unsubscribe=One-Click", ONE_CLICK)
    assert reply.status == 200 and reply.headers.get("Set-Cookie") is None
    assert "ada@example.org" in reply.body

    # a new digest with a matching paper: Bob gets it, Ada is skipped as unsubscribed
    (site.folder / "inbox" / "day2.txt").write_text(trending("Nov 23", [
        ("Diffusion Transformers at Scale", "Scaling diffusion backbones."),
    ]), encoding="utf-8")
    second = cli("--config", site.config, "--now", NEXT_DAY, "run", "--json", env=ENV)
    assert second.returncode == 0, second.stderr
    report = json.loads(second.stdout)
    assert [s["email"] for s in report["sent"]] == ["bob@example.org"]
    # The JSON report counts skips by kind ("suppressed (unsubscribed)" -> "suppressed")
    assert (report["skipped"], report["skipped_by_reason"]) == (1, {"suppressed": 1})
    assert report["suppressed"] >= 1
    assert site.suppression("ada@example.org")["reason"] == "unsubscribed"
    recipients = [str(email.message_from_bytes(p.read_bytes(), policy=email.policy.default)["To"])
                  for p in (site.folder / "outbox").rglob("*.eml")]
    assert sum("ada@example.org" in r for r in recipients) == 1  # only the email before unsubscribing
    assert sum("bob@example.org" in r for r in recipients) == 2


# -- the command's errors -----------------------------------------------------------------------

def test_serve_help():
    result = cli("serve", "--help")
    assert result.returncode == 0
    assert "unsubscribe" in result.stdout.lower() and "[web]" in result.stdout


def test_serve_without_web_table_exits_2(tmp_path: Path):
    config = write_config(tmp_path, SUBSCRIBERS)
    result = cli("--config", config, "serve", env=ENV)
    assert result.returncode == 2
    assert "[web]" in result.stderr and "Traceback" not in result.stderr


def test_serve_without_the_secret_in_the_environment_exits_2(tmp_path: Path):
    config = write_config(tmp_path, SUBSCRIBERS, head=WEB)
    env = {k: v for k, v in os.environ.items() if k != SECRET_ENV}
    result = subprocess.run([sys.executable, "-m", "digestmail", "--config", str(config), "serve"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2
    assert SECRET_ENV in result.stderr and SECRET not in result.stderr + result.stdout
    assert not (tmp_path / "store.sqlite3").exists(), "nothing opened before the config is complete"


def test_serve_on_a_busy_port_exits_2(tmp_path: Path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        config = write_config(tmp_path, SUBSCRIBERS, head=WEB.replace("127.0.0.1:0", f"127.0.0.1:{port}"))
        result = cli("--config", config, "serve", env=ENV)
    assert result.returncode == 2, result.stderr
    assert "cannot listen on 127.0.0.1" in result.stderr and "web.listen" in result.stderr
