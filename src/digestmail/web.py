"""`digestmail serve`: the unsubscribe pages and RFC 8058 one-click endpoint (the only starlette/uvicorn user).

    GET  /u/{token}   a page naming the address, with a button; never changes anything (mail scanners
                      and link previews follow links)
    POST /u/{token}   unsubscribes: the one-click body `List-Unsubscribe=One-Click` (RFC 8058) or the
                      page's own form; 200 with a short page, no redirect, no cookie, idempotent
    GET  /healthz     "ok"

A token is the signed address (tokens.py); a tampered one, or one made for another purpose, gets 400.
Unsubscribing adds a suppression ("unsubscribed"), which every later run honours. Each request opens
the store in the worker thread that uses it (sqlite3 connections belong to one thread) and closes it
again; the store is WAL, so `digestmail run` can write meanwhile.
"""

from __future__ import annotations

import datetime as dt
import email.parser
import email.policy
import logging
import signal
import socket
import threading
import urllib.parse
from collections.abc import Callable
from typing import Any

import jinja2
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import tokens
from .config import Config
from .errors import ConfigError, DigestmailError
from .store import Store

log = logging.getLogger("digestmail.web")

LIST_NAME = "Trending Papers"  # as the emails call themselves (editions.Builder's renderer title)
MAX_BODY = 4096  # bytes; a one-click body is 26
MAX_TOKEN = 1024  # characters; a real token is well under 200
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
ONE_CLICK = "one-click"
WEB_PAGE = "web page"

StoreOpener = Callable[[], Store]


# -- pages ------------------------------------------------------------------------------------

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex, nofollow">
<title>{{ heading }} · {{ list_name }}</title>
<style>
  :root { color-scheme: light dark; }
  body { margin: 0; font: 1.0625rem/1.55 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
         color: #1b1b1f; background: #f6f6f8; }
  main { max-width: 34rem; margin: 12vh auto 2rem; padding: 2rem 1.75rem; background: #fff;
         border-radius: 12px; box-shadow: 0 1px 3px rgba(0, 0, 0, .12); }
  h1 { font-size: 1.5rem; line-height: 1.25; margin: 0 0 1rem; }
  p { margin: 0 0 1rem; }
  .address { font-weight: 600; overflow-wrap: anywhere; }
  button { font: inherit; font-weight: 600; color: #fff; background: #1d4ed8; border: 0; border-radius: 8px;
           padding: .75rem 1.25rem; cursor: pointer; max-width: 100%; overflow-wrap: anywhere; text-align: left; }
  button:hover { background: #1e40af; }
  button:focus-visible { outline: 3px solid #f59e0b; outline-offset: 3px; }
  .small { font-size: .9rem; color: #4b4b55; margin-top: 1.5rem; }
  @media (prefers-color-scheme: dark) {
    body { color: #ececf1; background: #16161a; }
    main { background: #222228; box-shadow: none; }
    .small { color: #b4b4bf; }
  }
</style>
</head>
<body>
<main>
<h1>{{ heading }}</h1>
{%- if kind == "confirm" %}
<p>Do you want to stop receiving {{ list_name }} at <span class="address">{{ address }}</span>?</p>
<form method="post">
<input type="hidden" name="confirm" value="unsubscribe">
<button type="submit">Unsubscribe {{ address }} from {{ list_name }}</button>
</form>
<p class="small">Nothing changes until you press the button.</p>
{%- elif kind == "done" %}
<p><span class="address">{{ address }}</span> is unsubscribed from {{ list_name }} and will receive
no more of its emails.</p>
<p class="small">Unsubscribed by mistake? Ask the person who runs {{ list_name }} to add you again.</p>
{%- elif kind == "already" %}
<p><span class="address">{{ address }}</span> is already unsubscribed from {{ list_name }}: no more of its
emails will be sent there.</p>
{%- else %}
<p>{{ message }}</p>
{%- endif %}
</main>
</body>
</html>
"""
_TEMPLATE = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string(_PAGE)

_ERRORS = {
    400: ("This link does not work",
          "The unsubscribe link is incomplete or was changed. Open it again from the email, or use the "
          "Unsubscribe button of your mail program."),
    404: ("Page not found", "There is nothing at this address."),
    405: ("Not allowed", "This page cannot be used that way."),
    413: ("Request too large", "The request was larger than this page accepts."),
    503: ("Please try again in a minute", "The list is busy right now; nothing was changed."),
}


def _page(kind: str, status: int = 200, address: str = "", heading: str = "", message: str = "",
          headers: dict[str, str] | None = None) -> HTMLResponse:
    html = _TEMPLATE.render(kind=kind, heading=heading, address=address, message=message, list_name=LIST_NAME)
    return HTMLResponse(html, status_code=status, headers=headers)


def _error(status: int, message: str | None = None, headers: dict[str, str] | None = None) -> HTMLResponse:
    heading, default = _ERRORS.get(status, ("Something went wrong", "Please try again later."))
    return _page("error", status, heading=heading, message=message or default, headers=headers)


# -- the one-click body ---------------------------------------------------------------------------

def _fields(content_type: str, body: bytes) -> dict[str, str]:
    """Form fields of a urlencoded or multipart/form-data body (RFC 8058 allows both); first value wins."""
    ctype = content_type.split(";", 1)[0].strip().lower()
    if ctype == "multipart/form-data":
        head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1", "replace")
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
        out: dict[str, str] = {}
        if msg.is_multipart():
            for part in msg.iter_parts():
                name = part.get_param("name", header="content-disposition")
                payload = part.get_payload(decode=True)
                if isinstance(name, str) and isinstance(payload, bytes):
                    out.setdefault(name, payload.decode("utf-8", "replace").strip())
        return out
    # application/x-www-form-urlencoded, and clients that send the one-click pair without a type
    pairs = urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    out = {}
    for k, v in pairs:
        out.setdefault(k.strip(), v.strip())
    return out


def unsubscribe_kind(content_type: str, body: bytes) -> str | None:
    """"one-click" for an RFC 8058 body, "web page" for the page's form, None for anything else."""
    fields = _fields(content_type, body)
    if fields.get("List-Unsubscribe", "").lower() == "one-click":
        return ONE_CLICK
    if fields.get("confirm") == "unsubscribe":
        return WEB_PAGE
    return None


async def _read_body(request: Request) -> bytes | None:
    """The request body, or None when it is larger than MAX_BODY (read no further than that)."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


# -- the app ------------------------------------------------------------------------------------

_ADD = [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
_DROP = {k for k, _ in _ADD} | {b"set-cookie"}


class SecurityHeaders:
    """Set the security headers on every response (errors and 404s too) and drop any Set-Cookie."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                keep = [(k, v) for k, v in message.get("headers", []) if k.lower() not in _DROP]
                keep += _ADD
                message = {**message, "headers": keep}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            if not started:  # still answer with the headers; the error is logged by the server
                await _error(500)(scope, receive, send_with_headers)
            raise


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def create_app(config: Config, store_opener: StoreOpener, *,
               clock: Callable[[], dt.datetime] = _utcnow) -> Starlette:
    """The ASGI app. The signing key is read now, from the environment (`config.web.secret()`)."""
    if config.web is None:
        raise ConfigError("the unsubscribe server needs a [web] table", where="web.base_url",
                          hint="set [web] base_url and secret_env (see config.example.toml)")
    secret = config.web.secret()

    def state(address: str) -> str | None:
        with store_opener() as store:
            return store.suppression(address)

    def unsubscribe(address: str, how: str) -> bool:
        """Suppress the address; True when it was unsubscribed already (nothing is rewritten then)."""
        with store_opener() as store:
            if store.suppression(address) == "unsubscribed":
                return True
            store.suppress(address, "unsubscribed", how, clock())
            return False

    async def unsubscribe_page(request: Request) -> Response:
        token = request.path_params["token"]
        address = tokens.read(secret, token) if len(token) <= MAX_TOKEN else None
        if address is None:
            log.debug("refused a bad unsubscribe token on %s", request.method)
            return _error(400)
        try:
            if request.method != "POST":  # GET and HEAD only look
                reason = await run_in_threadpool(state, address)
                if reason == "unsubscribed":
                    return _page("already", address=address, heading="Already unsubscribed")
                return _page("confirm", address=address, heading="Unsubscribe?")
            body = await _read_body(request)
            if body is None:
                return _error(413, headers={"Connection": "close"})
            how = unsubscribe_kind(request.headers.get("content-type", ""), body)
            if how is None:
                return _error(400, "The request did not ask to unsubscribe. Open the link from the email "
                                   "and press the button.")
            already = await run_in_threadpool(unsubscribe, address, how)
        except DigestmailError as exc:  # the store cannot be opened (busy disk, permissions)
            log.error("unsubscribe page: %s", exc)
            return _error(503, headers={"Retry-After": "60"})
        if already:
            log.info("%s was already unsubscribed (%s)", address, how)
        else:
            log.info("unsubscribed %s (%s)", address, how)
        return _page("done", address=address, heading="You are unsubscribed")

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, headers=dict(exc.headers or {}))

    app = Starlette(
        routes=[Route("/u/{token}", unsubscribe_page, methods=["GET", "POST"]),
                Route("/healthz", healthz, methods=["GET"])],
        exception_handlers={HTTPException: http_error},
    )
    app.add_middleware(SecurityHeaders)
    return app


# -- the server -----------------------------------------------------------------------------------

def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, so a busy port is a clear configuration error (exit 2)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", where="web.listen",
                          hint="use host:port, e.g. 127.0.0.1:8025") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", where="web.listen",
                          hint="another program may listen there (or the port needs privileges): "
                               "change [web] listen") from None
    return sock


def serve(config: Config) -> None:
    """Answer unsubscribe links on [web] listen until SIGTERM or Ctrl-C. Config errors come first."""
    web = config.web
    if web is None:
        raise ConfigError("`digestmail serve` needs a [web] table", where=f"{config.path}: web.base_url",
                          hint="set [web] base_url (the public URL of this server) and secret_env")
    web.secret()  # the key must be in the environment before anything listens
    opener: StoreOpener = lambda: Store(config.store_path)  # noqa: E731
    with opener():  # create or migrate the store once, before requests open it concurrently
        pass
    app = create_app(config, opener)
    sock = _bind(web.host, web.port)
    host, port = sock.getsockname()[:2]
    server = uvicorn.Server(uvicorn.Config(
        app, log_config=None, access_log=False,  # access logs would hold tokens, i.e. addresses
        server_header=False, lifespan="off", timeout_keep_alive=5, limit_concurrency=200))
    shown = f"[{host}]" if ":" in host else host
    log.info("listening on http://%s:%d/ for unsubscribe links to %s/u/…", shown, port, web.base_url)
    stopped: list[int] = []
    previous: Any = None
    if threading.current_thread() is threading.main_thread():
        # uvicorn re-raises SIGTERM after its graceful shutdown; make that a clean exit (0).
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: stopped.append(signum))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    log.info("stopped")
