"""Headless Chromium, the only place digestmail starts a browser: screenshots and layout checks.

Chromium is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: JSON messages
ending in NUL on fds 3 and 4), not with `--screenshot --window-size`: a headless window is never
narrower than 500 px for scripts and `--dump-dom`, and only the protocol can set an exact 375 px
viewport, emulate dark mode and capture the whole page. Each browser gets a fresh profile in a
temporary folder that is removed afterwards.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import DigestmailError

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync", "--hide-scrollbars",
         "--disable-extensions", "--disable-default-apps", "--mute-audio", "--remote-debugging-pipe")
INSTALL_HINT = ("install it with `apt-get install chromium` (Debian, Ubuntu), or set DIGESTMAIL_CHROMIUM "
                "to a Chromium or Chrome binary")


class BrowserError(DigestmailError):
    """Chromium is missing, would not start, or did not answer in time."""


def find_chromium() -> str | None:
    """$DIGESTMAIL_CHROMIUM if set, else the first Chromium or Chrome on the PATH."""
    chosen = os.environ.get("DIGESTMAIL_CHROMIUM")
    if chosen:
        return chosen if os.access(chosen, os.X_OK) else None
    return next((found for name in NAMES if (found := shutil.which(name))), None)


@dataclass(frozen=True)
class Shot:
    """One screenshot: the PNG and the page's size in CSS pixels at that viewport width."""

    png: bytes
    width: int
    height: int
    scroll_width: int


class Chromium:
    """One headless Chromium process; `with Chromium() as browser: browser.screenshot(...)`."""

    def __init__(self, binary: str | None = None, *, timeout: float = 60) -> None:
        self.binary = binary or find_chromium()
        if not self.binary:
            raise BrowserError("no headless Chromium found (needed for screenshots)", hint=INSTALL_HINT)
        self.timeout = timeout
        self._profile = tempfile.TemporaryDirectory(prefix="digestmail-chromium-")
        # Our ends of the two pipes; Chromium reads commands on fd 3 and writes answers on fd 4.
        to_child, self._write = _high_pipe()
        self._read, from_child = _high_pipe()

        def plumb() -> None:  # in the child, before exec
            os.dup2(to_child, 3)
            os.dup2(from_child, 4)

        try:
            self.proc = subprocess.Popen(
                [self.binary, *FLAGS, f"--user-data-dir={self._profile.name}", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                pass_fds=(3, 4), preexec_fn=plumb, start_new_session=True)
        except OSError as exc:
            self._cleanup()
            raise BrowserError(f"cannot start {self.binary}: {exc.strerror}", hint=INSTALL_HINT) from None
        finally:
            os.close(to_child)
            os.close(from_child)
        self._buffer = b""
        self._ids = 0
        self._events: list[dict[str, Any]] = []

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self._send("Browser.close", wait=False)
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired, BrowserError):
                try:  # its own session: the group is this Chromium and its helpers, nothing else
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        for fd in (getattr(self, "_write", -1), getattr(self, "_read", -1)):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._write = self._read = -1
        self._profile.cleanup()

    # -- the protocol ------------------------------------------------------------------------------

    def _send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
              *, wait: bool = True) -> dict[str, Any]:
        self._ids += 1
        msg: dict[str, Any] = {"id": self._ids, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._write, json.dumps(msg).encode() + b"\0")
        if not wait:
            return {}
        want = self._ids
        while True:
            answer = self._next()
            if answer.get("id") == want:
                if "error" in answer:
                    raise BrowserError(f"Chromium: {method} failed: {answer['error'].get('message')}")
                result: dict[str, Any] = answer.get("result", {})
                return result
            if "method" in answer:
                self._events.append(answer)

    def _next(self) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self._read, selectors.EVENT_READ)
            while b"\0" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise BrowserError(f"Chromium did not answer within {self.timeout:.0f} s")
                chunk = os.read(self._read, 1 << 20)
                if not chunk:
                    raise BrowserError("Chromium exited unexpectedly", hint=INSTALL_HINT)
                self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        answer: dict[str, Any] = json.loads(raw)
        return answer

    def _wait_event(self, method: str, session: str) -> None:
        while True:
            for i, ev in enumerate(self._events):
                if ev.get("method") == method and ev.get("sessionId") == session:
                    del self._events[i]
                    return
            ev = self._next()
            if "method" in ev:
                self._events.append(ev)

    # -- pages -----------------------------------------------------------------------------------

    def open(self, url: str, width: int, *, dark: bool = False, height: int = 800) -> Page:
        """A new tab at exactly `width` CSS pixels, light or dark, with `url` loaded."""
        target = self._send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self._send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session, target, width)
        page.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        page.call("Emulation.setEmulatedMedia",
                  {"features": [{"name": "prefers-color-scheme", "value": "dark" if dark else "light"}]})
        page.call("Page.enable")
        page.call("Page.navigate", {"url": url})
        self._wait_event("Page.loadEventFired", session)
        return page

    def screenshot(self, html: Path, width: int, *, dark: bool = False) -> Shot:
        """The whole page of an HTML file at `width` CSS pixels."""
        page = self.open(html.resolve().as_uri(), width, dark=dark)
        try:
            return page.screenshot()
        finally:
            page.close()


class Page:
    """One tab of a Chromium, attached in flat mode (commands carry its session id)."""

    def __init__(self, browser: Chromium, session: str, target: str, width: int) -> None:
        self.browser, self.session, self.target, self.width = browser, session, target, width

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.browser._send(method, params, self.session)

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page."""
        found = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in found:
            raise BrowserError(f"script failed: {found['exceptionDetails'].get('text')}")
        return found["result"].get("value")

    def screenshot(self) -> Shot:
        size = self.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
        scroll_width, height = int(size[0]), int(size[1])
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": self.width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        data = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": False})["data"]
        return Shot(base64.b64decode(data), self.width, height, scroll_width)

    def close(self) -> None:
        self.browser._send("Target.closeTarget", {"targetId": self.target})


def _high_pipe() -> tuple[int, int]:
    """A pipe whose ends are above fd 4 (so the child's dup2 onto 3 and 4 never clobbers them)."""
    r, w = os.pipe()
    ends = tuple(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (r, w))
    os.close(r)
    os.close(w)
    return ends[0], ends[1]


def screenshots(html: Path, shots: list[tuple[int, bool, Path]], *, timeout: float = 60) -> list[Shot]:
    """Write a PNG of `html` for each (width, dark, png path), with one browser."""
    out = []
    with Chromium(timeout=timeout) as browser:
        for width, dark, png in shots:
            shot = browser.screenshot(html, width, dark=dark)
            png.write_bytes(shot.png)
            out.append(shot)
    return out
