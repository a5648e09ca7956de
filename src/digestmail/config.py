"""The TOML config: one table of every key, validated at load; errors name the file and dotted key."""

from __future__ import annotations

import csv
import datetime as dt
import difflib
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import rules
from .errors import ConfigError, RuleError
from .message import ADDRESS, control_character
from .schedule import Schedule, trigger
from .models import Subscriber

DEFAULT_PATH = "digestmail.toml"
TRANSPORTS = ("file", "maildir", "smtp")
MAX_PAPERS = 50
# Deliberately strict and ASCII-only: an address goes into SMTP envelopes and headers verbatim.
_EMAIL = ADDRESS


@dataclass(frozen=True)
class Key:
    """One config key: its type, default (None = required) and the help the example file carries."""

    type: type
    default: Any
    help: str


# Every key digestmail reads, by table. `topics` is a free mapping and `subscribers` a list of
# tables; both are described separately below.
SCHEMA: dict[str, dict[str, Key]] = {
    "": {
        "subscribers_file": Key(str, "", "CSV of subscribers (email,name,topics,query,max_papers,…)"),
    },
    "store": {
        "path": Key(str, "digestmail.sqlite3", "SQLite file holding papers, subscribers and the ledger"),
    },
    "sources": {
        "inbox": Key(str, "inbox", "folder of incoming digest files"),
        "archive": Key(bool, True, "move processed inbox files to done/ and rejected ones to rejected/"),
        "expect_every": Key(str, "", "flag the inbox as stale when nothing arrives for this long, e.g. '36h'"),
        "poll_interval": Key(str, "5m", "how often `digestmail daemon` looks for new digests"),
    },
    "schedule": {
        "cron": Key(str, "0 8 * * *", "when editions go out: 5 cron fields, or 6 with seconds first"),
        "timezone": Key(str, "UTC", "the time zone the cron is read in (IANA name)"),
        "catch_up": Key(str, "12h", "an edition missed while the daemon was down is sent if it is at most this late"),
    },
    "sources.imap": {
        "host": Key(str, "", "IMAP server whose folder receives the digests"),
        "port": Key(int, 0, "0 means the usual port: 993 for tls, 143 for starttls and none"),
        "security": Key(str, "tls", "tls | starttls | none (none refuses a username)"),
        "username": Key(str, "", "login name"),
        "password_env": Key(str, "", "name of the environment variable holding the password"),
        "folder": Key(str, "INBOX", "the folder to read"),
        "after": Key(str, "flag", "what to do with a read message: 'flag' (keyword $Digestmail + \\Seen) "
                                  "or 'move:FOLDER'"),
        "timeout": Key(int, 30, "seconds to wait for the server at each step"),
        "ca_file": Key(str, "", "PEM file of CA certificates to trust instead of the system's"),
        "expect_every": Key(str, "", "flag this source as stale after this long without a message"),
    },
    "sources.maildir": {
        "path": Key(str, "", "a Maildir folder whose new messages are digests (moved to cur/ when read)"),
        "expect_every": Key(str, "", "flag this source as stale after this long without a message"),
    },
    "delivery": {
        "transport": Key(str, "file", "file | maildir | smtp"),
        "outbox": Key(str, "outbox", "folder the file transport writes .eml files to (a Maildir for maildir)"),
        "from": Key(str, None, "sender, e.g. 'Trending Papers <papers@example.org>'"),
        "build_processes": Key(int, 1, "processes that render and sign emails while this one sends, from a "
                                       "run's 201st email on (0: all in one process)"),
    },
    "delivery.retry": {
        "base": Key(str, "60s", "first wait after a temporary failure (4xx, timeout); doubles each time"),
        "max": Key(str, "6h", "the longest wait between two attempts"),
        "give_up_after": Key(str, "2d", "an edition still failing this long after it was made is marked failed"),
    },
    "admin": {
        "email": Key(str, "", "receives a short report when a run fails, deliveries fail or a source goes stale"),
        "report_every": Key(str, "24h", "the same problem is reported again at most this often"),
    },
    "web": {
        "base_url": Key(str, "", "public https URL of `digestmail serve`, e.g. https://papers.example.org"),
        "listen": Key(str, "127.0.0.1:8025", "host:port `digestmail serve` listens on (put a TLS proxy in front)"),
        "secret_env": Key(str, "", "name of the environment variable holding the key that signs unsubscribe links"),
        "unsubscribe_mailto": Key(str, "", "an address that also takes unsubscribe requests by mail (optional)"),
    },
    "delivery.dkim": {
        "domain": Key(str, "", "sign every email with DKIM for this domain (d=); empty: no signing"),
        "selector": Key(str, "", "the DNS selector (s=): the key is published at SELECTOR._domainkey.DOMAIN"),
        "key_file": Key(str, "", "PEM private key (RSA 2048+ or Ed25519); keep it readable by digestmail only"),
    },
    "delivery.smtp": {
        "host": Key(str, "", "SMTP server (required when transport = \"smtp\")"),
        "port": Key(int, 0, "0 means the usual port: 587 for starttls, 465 for tls, 25 for none"),
        "security": Key(str, "starttls", "starttls | tls | none (none refuses a username)"),
        "username": Key(str, "", "login name; empty for no AUTH"),
        "password_env": Key(str, "", "name of the environment variable holding the password"),
        "timeout": Key(int, 30, "seconds to wait for the server at each step"),
        "ca_file": Key(str, "", "PEM file of CA certificates to trust instead of the system's"),
        "max_connections": Key(int, 4, "connections kept open to the server and used at once (1 to 100)"),
        "rate_per_second": Key(int, 0, "at most this many messages a second (0: as fast as the server takes them)"),
        "max_per_hour": Key(int, 0, "at most this many messages an hour; the rest are deferred (0: no limit)"),
    },
    "render": {
        "title": Key(str, "Trending Papers", "the newsletter's name, at the top of every email and in its List-Id"),
        "templates": Key(str, "", "folder with your own digest.mjml.j2, digest.txt.j2 or subject.txt.j2; "
                                  "missing ones come from the defaults (docs/templates.md)"),
        "abstract_chars": Key(int, 500, "abstracts are cut at a word boundary to at most this many characters"),
        "unsubscribe_url": Key(str, "", "the footer's unsubscribe link (https or mailto; {email} is the "
                                        "subscriber's address); empty: mailto the sender"),
        "manage_url": Key(str, "", "the footer's 'manage your topics' link, like unsubscribe_url; "
                                   "empty: mailto the sender"),
    },
}
SUBSCRIBER_KEYS: dict[str, Key] = {
    "email": Key(str, None, "address the edition is sent to"),
    "name": Key(str, "", "how the email greets them"),
    "topics": Key(list, [], "names of [topics] rules"),
    "query": Key(str, "", "an own rule, matched beside the topics"),
    "max_papers": Key(int, 10, "at most this many papers in one email (1 to 50)"),
    "min_papers": Key(int, 1, "fewer matches than this means no email this time (the report says so)"),
    "exclude": Key(str, "", "a rule: matching papers are never sent"),
    "backfill_days": Key(int, 7, "a new subscriber also gets papers from digests up to this many days older"),
    "schedule": Key(str, "", "this subscriber's own cron (default: [schedule] cron)"),
    "timezone": Key(str, "", "this subscriber's time zone (default: [schedule] timezone)"),
}
TABLES = {t for t in SCHEMA if t and "." not in t} | {"topics", "subscribers"}
SECURITY = ("starttls", "tls", "none")
_DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}


_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str, where: str) -> dt.timedelta:
    """'90s', '5m', '36h', '2d', '1w' -> timedelta; anything else is a ConfigError naming the key."""
    m = _DURATION.match(text)
    if not m or int(m.group(1)) == 0:
        raise ConfigError(f"{text!r} is not a duration", where=where,
                          hint="write a positive number and a unit: 90s, 5m, 36h, 2d or 1w")
    return dt.timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])


def secret(variable: str, key: str, hint: str) -> str:
    """A secret from the environment variable the config names at `key`; never from the file itself."""
    value = os.environ.get(variable) if variable else None
    if not value:
        raise ConfigError(f"the environment variable {variable or '(none named)'} is not set", where=key, hint=hint)
    return value


@dataclass(frozen=True)
class SourceSettings:
    """One place digests arrive from, and how often the admin expects something there."""

    name: str  # "inbox", "maildir", "imap": also the key the store records its health under
    path: Path | None
    expect_every: dt.timedelta | None


@dataclass(frozen=True)
class ImapSettings:
    """[sources.imap]: a mailbox folder polled by UID; read messages are flagged or moved."""

    host: str
    port: int
    security: str
    username: str
    password_env: str
    folder: str
    after: str  # "flag" or "move:FOLDER"
    timeout: int
    ca_file: Path | None

    def password(self) -> str:
        return secret(self.password_env, "sources.imap.password_env", "export the IMAP password in the "
                      "variable named by password_env")


@dataclass(frozen=True)
class WebSettings:
    """[web]: where unsubscribe links point and how they are signed."""

    base_url: str
    host: str
    port: int
    secret_env: str
    unsubscribe_mailto: str

    def secret(self) -> bytes:
        return secret(self.secret_env, "web.secret_env",
                      "export a long random key there, e.g. `openssl rand -hex 32`").encode()


@dataclass(frozen=True)
class DkimSettings:
    """[delivery.dkim]: sign the final bytes of every message."""

    domain: str
    selector: str
    key_file: Path

    def key(self) -> bytes:
        try:
            return self.key_file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the DKIM key: {exc.strerror}", where="delivery.dkim.key_file",
                              hint="check the path and that digestmail may read it") from None


@dataclass(frozen=True)
class Retry:
    """[delivery.retry]: exponential backoff for temporary failures."""

    base: dt.timedelta
    max: dt.timedelta
    give_up_after: dt.timedelta


@dataclass(frozen=True)
class SmtpSettings:
    """[delivery.smtp]: where and how to hand messages to an SMTP server."""

    host: str
    port: int
    security: str
    username: str
    password_env: str
    timeout: int
    ca_file: Path | None
    rate_per_second: int = 0
    max_per_hour: int = 0
    max_connections: int = 4

    def password(self) -> str | None:
        """The password from the environment (never from the file); None when no login is configured."""
        if not self.username:
            return None
        return secret(self.password_env, "delivery.smtp.password_env", "export the SMTP password in the "
                      "variable named by password_env")


@dataclass(frozen=True)
class RenderSettings:
    """[render]: how emails look; the URLs are placeholders until the web endpoints fill real ones."""

    title: str = "Trending Papers"
    templates: Path | None = None
    abstract_chars: int = 500
    unsubscribe_url: str = ""
    manage_url: str = ""


@dataclass(frozen=True)
class Config:
    """The validated configuration; paths are absolute (relative ones are taken from the file's folder)."""

    path: Path
    store_path: Path
    inbox: Path
    archive: bool
    sources: tuple[SourceSettings, ...]
    imap: ImapSettings | None
    transport: str
    outbox: Path
    sender: str
    topics: Mapping[str, str]
    subscribers: tuple[Subscriber, ...]
    subscribers_file: Path | None
    retry: Retry
    schedule: Schedule = Schedule("0 8 * * *", "UTC")
    catch_up: dt.timedelta = dt.timedelta(hours=12)
    poll_interval: dt.timedelta = dt.timedelta(minutes=5)
    dkim: DkimSettings | None = None
    web: WebSettings | None = None
    admin_email: str = ""
    admin_report_every: dt.timedelta = dt.timedelta(hours=24)
    smtp: SmtpSettings | None = None
    render: RenderSettings = RenderSettings()
    build_processes: int = 1


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate the config file; raise ConfigError naming the file and the key."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist",
                          hint="pass --config PATH, set DIGESTMAIL_CONFIG, or copy config.example.toml "
                               "to ./digestmail.toml") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError("config file is not UTF-8", where=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", where=str(path),
                          hint="see config.example.toml for the syntax") from None
    return _validate(data, path.resolve())


def _validate(data: dict[str, Any], path: Path) -> Config:
    where = str(path)
    _check_keys(data, set(SCHEMA[""]) | TABLES, "", where)
    values: dict[str, Any] = {}
    for table, keys in SCHEMA.items():
        section: Any = data
        for part in table.split(".") if table else ():
            section = section.get(part, {})
            if not isinstance(section, dict):
                raise ConfigError(f"[{table}] must be a table", where=f"{where}: {table}")
        if table:
            children = {t[len(table) + 1:] for t in SCHEMA if t.startswith(table + ".")}
            _check_keys(section, set(keys) | children, table + ".", where)
        for name, key in keys.items():
            dotted = f"{table}.{name}" if table else name
            values[dotted] = _value(section, name, key, dotted, where)

    transport = values["delivery.transport"]
    if transport not in TRANSPORTS:
        raise ConfigError(f"unknown transport {transport!r}", where=f"{where}: delivery.transport",
                          hint=f"use one of: {', '.join(TRANSPORTS)}")
    sender = values["delivery.from"]
    check_header_text(sender, f"{where}: delivery.from")
    if not _EMAIL.match(parse_address(sender)[1]):
        raise ConfigError(f"{sender!r} has no valid address", where=f"{where}: delivery.from",
                          hint="write it as 'Name <user@example.org>' or 'user@example.org'")

    topics = data.get("topics", {})
    if not isinstance(topics, dict):
        raise ConfigError("[topics] must be a table of name = \"rule\"", where=f"{where}: topics")
    for name, rule in topics.items():
        if not isinstance(rule, str):
            raise ConfigError("a topic's rule must be a string", where=f"{where}: topics.{name}")
        _check_rule(rule, f"{where}: topics.{name}")

    subs_raw = data.get("subscribers", [])
    if not isinstance(subs_raw, list):
        raise ConfigError("use [[subscribers]] (an array of tables)", where=f"{where}: subscribers")
    subscribers = tuple(_subscriber(s, f"subscribers[{i}]", where, topics) for i, s in enumerate(subs_raw))
    _check_unique(subscribers, where)

    base = path.parent
    sources = [SourceSettings("inbox", _path(base, values["sources.inbox"]), _duration(values, "sources.expect_every", where))]
    if values["sources.maildir.path"]:
        sources.append(SourceSettings("maildir", _path(base, values["sources.maildir.path"]),
                                      _duration(values, "sources.maildir.expect_every", where)))
    imap = _imap(values, base, where) if values["sources.imap.host"] else None
    if imap:
        sources.append(SourceSettings("imap", None, _duration(values, "sources.imap.expect_every", where)))
    smtp = None
    if transport == "smtp":
        smtp = _smtp(values, base, where)
    subs_file = values["subscribers_file"]
    return Config(
        path=path,
        store_path=_path(base, values["store.path"]),
        inbox=_path(base, values["sources.inbox"]),
        archive=values["sources.archive"],
        sources=tuple(sources),
        imap=imap,
        transport=transport,
        outbox=_path(base, values["delivery.outbox"]),
        sender=sender,
        topics=dict(topics),
        subscribers=subscribers,
        subscribers_file=_path(base, subs_file) if subs_file else None,
        retry=Retry(*(parse_duration(values[f"delivery.retry.{k}"], f"{where}: delivery.retry.{k}")
                      for k in ("base", "max", "give_up_after"))),
        schedule=_schedule(values["schedule.cron"], values["schedule.timezone"], f"{where}: schedule.cron"),
        catch_up=parse_duration(values["schedule.catch_up"], f"{where}: schedule.catch_up"),
        poll_interval=parse_duration(values["sources.poll_interval"], f"{where}: sources.poll_interval"),
        dkim=_dkim(values, base, where) if values["delivery.dkim.domain"] else None,
        web=_web(values, where) if values["web.base_url"] else None,
        admin_email=_admin_email(values["admin.email"], f"{where}: admin.email"),
        admin_report_every=parse_duration(values["admin.report_every"], f"{where}: admin.report_every"),
        smtp=smtp,
        render=_render(values, base, where, parse_address(sender)[1]),
        build_processes=_build_processes(values["delivery.build_processes"], f"{where}: delivery.build_processes"),
    )


def _build_processes(value: int, where: str) -> int:
    if not 0 <= value <= 64:
        raise ConfigError(f"build_processes must be between 0 and 64, not {value}", where=where,
                          hint="1 suits a 2-core machine; 0 builds every email in the sending process")
    return value


def _path(base: Path, value: str) -> Path:
    """Relative paths are taken from the config file's folder; `~` is the user's home."""
    return base / Path(value).expanduser()


def _duration(values: Mapping[str, Any], key: str, where: str) -> dt.timedelta | None:
    return parse_duration(values[key], f"{where}: {key}") if values[key] else None


def _admin_email(value: str, where: str) -> str:
    if value and not _EMAIL.match(value):
        raise ConfigError(f"{value!r} is not a valid email address", where=where)
    return value


def _schedule(cron: str, timezone: str, where: str) -> Schedule:
    schedule = Schedule(" ".join(cron.split()), timezone)
    trigger(schedule, where)  # raises ConfigError naming the key
    return schedule


def _dkim(values: Mapping[str, Any], base: Path, where: str) -> DkimSettings:
    for key in ("selector", "key_file"):
        if not values[f"delivery.dkim.{key}"]:
            raise ConfigError(f"DKIM signing needs {key}", where=f"{where}: delivery.dkim.{key}")
    return DkimSettings(values["delivery.dkim.domain"], values["delivery.dkim.selector"],
                        _path(base, values["delivery.dkim.key_file"]))


def _render(values: Mapping[str, Any], base: Path, where: str, sender: str) -> RenderSettings:
    v = {k.rpartition(".")[2]: val for k, val in values.items() if k.startswith("render.")}
    if not v["title"].strip():
        raise ConfigError("the title cannot be empty", where=f"{where}: render.title")
    check_header_text(v["title"], f"{where}: render.title")  # it names the list in List-Id
    templates = _path(base, v["templates"]) if v["templates"] else None
    if templates is not None and not templates.is_dir():
        raise ConfigError(f"template folder {templates} does not exist", where=f"{where}: render.templates",
                          hint="create it with the templates you change, or remove the key for the defaults")
    if v["abstract_chars"] < 100:
        raise ConfigError("abstract_chars must be at least 100", where=f"{where}: render.abstract_chars")
    urls = {}
    for key, subject in (("unsubscribe_url", "unsubscribe"), ("manage_url", "change%20my%20topics")):
        url = v[key] or f"mailto:{sender}?subject={subject}"
        if not re.fullmatch(r"(?:https?://[^\s/\"'<>]+|mailto:[^\s\"'<>]+)[^\s\"'<>]*", url, re.I):
            raise ConfigError(f"{url!r} is not an https, http or mailto URL", where=f"{where}: render.{key}",
                              hint="e.g. https://papers.example.org/unsubscribe?email={email}")
        urls[key] = url
    return RenderSettings(title=v["title"].strip(), templates=templates, abstract_chars=v["abstract_chars"], **urls)


MAX_BASE_URL = 500


def _web(values: Mapping[str, Any], where: str) -> WebSettings:
    base_url = values["web.base_url"].rstrip("/")
    if not re.match(r"^https?://[^\s/]+", base_url):
        raise ConfigError(f"{base_url!r} is not an http(s) URL", where=f"{where}: web.base_url",
                          hint="e.g. https://papers.example.org (mail clients need https for one-click)")
    if len(base_url) > MAX_BASE_URL:
        # Every email's List-Unsubscribe header holds it whole, with a token of ~300 characters for a
        # 254-character address, on one line of at most 998.
        raise ConfigError(f"the URL is {len(base_url)} characters long; at most {MAX_BASE_URL} fit in "
                          "an email's unsubscribe header", where=f"{where}: web.base_url")
    if not values["web.secret_env"]:
        raise ConfigError("unsubscribe links need a signing key", where=f"{where}: web.secret_env",
                          hint="name an environment variable holding a long random key")
    host, _, port = values["web.listen"].rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"{values['web.listen']!r} is not host:port", where=f"{where}: web.listen")
    mailto = values["web.unsubscribe_mailto"]
    if mailto and not _EMAIL.match(mailto):
        raise ConfigError(f"{mailto!r} is not an address", where=f"{where}: web.unsubscribe_mailto")
    return WebSettings(base_url, host.strip("[]"), int(port), values["web.secret_env"], mailto)


def _imap(values: Mapping[str, Any], base: Path, where: str) -> ImapSettings:
    v = {k.rpartition(".")[2]: val for k, val in values.items() if k.startswith("sources.imap.")}
    if v["security"] not in SECURITY:
        raise ConfigError(f"unknown security {v['security']!r}", where=f"{where}: sources.imap.security",
                          hint=f"use one of: {', '.join(SECURITY)}")
    if not v["username"] or not v["password_env"]:
        raise ConfigError("IMAP needs a username and password_env", where=f"{where}: sources.imap.username")
    if v["security"] == "none":
        raise ConfigError("refusing to send a password without TLS", where=f"{where}: sources.imap.security",
                          hint="use security = \"tls\" or \"starttls\"")
    if v["after"] != "flag" and not (v["after"].startswith("move:") and v["after"][5:].strip()):
        raise ConfigError(f"after must be 'flag' or 'move:FOLDER', not {v['after']!r}",
                          where=f"{where}: sources.imap.after")
    port = v["port"] or (993 if v["security"] == "tls" else 143)
    return ImapSettings(host=v["host"], port=port, security=v["security"], username=v["username"],
                        password_env=v["password_env"], folder=v["folder"], after=v["after"],
                        timeout=v["timeout"], ca_file=_path(base, v["ca_file"]) if v["ca_file"] else None)


def _smtp(values: Mapping[str, Any], base: Path, where: str) -> SmtpSettings:
    v = {k.rpartition(".")[2]: val for k, val in values.items() if k.startswith("delivery.smtp.")}
    if not v["host"]:
        raise ConfigError("transport = \"smtp\" needs a host", where=f"{where}: delivery.smtp.host")
    if v["security"] not in SECURITY:
        raise ConfigError(f"unknown security {v['security']!r}", where=f"{where}: delivery.smtp.security",
                          hint=f"use one of: {', '.join(SECURITY)}")
    if v["security"] == "none" and v["username"]:
        raise ConfigError("refusing to send a password without TLS", where=f"{where}: delivery.smtp.username",
                          hint="use security = \"starttls\" or \"tls\", or remove the username")
    if v["username"] and not v["password_env"]:
        raise ConfigError("a username needs password_env (the variable holding the password)",
                          where=f"{where}: delivery.smtp.password_env")
    for key in ("rate_per_second", "max_per_hour", "timeout"):
        if v[key] < 0:
            raise ConfigError(f"{key} cannot be negative", where=f"{where}: delivery.smtp.{key}")
    if not 1 <= v["max_connections"] <= 100:
        raise ConfigError(f"max_connections must be between 1 and 100, not {v['max_connections']}",
                          where=f"{where}: delivery.smtp.max_connections",
                          hint="most providers allow a few connections at once; 4 is a good start")
    return SmtpSettings(host=v["host"], port=v["port"] or _DEFAULT_PORTS[v["security"]],
                        security=v["security"], username=v["username"], password_env=v["password_env"],
                        timeout=v["timeout"], ca_file=_path(base, v["ca_file"]) if v["ca_file"] else None,
                        rate_per_second=v["rate_per_second"], max_per_hour=v["max_per_hour"],
                        max_connections=v["max_connections"])


def _check_keys(section: Mapping[str, Any], known: set[str], prefix: str, where: str) -> None:
    for name in section:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f"did you mean {prefix}{close[0]!s}?" if close else \
                f"known keys here: {', '.join(sorted(known))}"
            raise ConfigError(f"unknown key {prefix}{name}", where=f"{where}: {prefix}{name}", hint=hint)


def _value(section: Mapping[str, Any], name: str, key: Key, dotted: str, where: str) -> Any:
    if name not in section:
        if key.default is None:
            raise ConfigError(f"{dotted} is required ({key.help})", where=f"{where}: {dotted}")
        return key.default
    value = section[name]
    # bool is an int in Python; a max_papers of `true` is still a mistake.
    if not isinstance(value, key.type) or (key.type is int and isinstance(value, bool)):
        raise ConfigError(f"{dotted} must be {_type_name(key.type)}, not {_type_name(type(value))}",
                          where=f"{where}: {dotted}", hint=key.help)
    return value


def _type_name(t: type) -> str:
    return {str: "a string", int: "an integer", list: "a list", bool: "true or false",
            dict: "a table", float: "a number"}.get(t, t.__name__)


def _subscriber(raw: Any, dotted: str, where: str, topics: Mapping[str, str]) -> Subscriber:
    if not isinstance(raw, dict):
        raise ConfigError("each subscriber must be a table", where=f"{where}: {dotted}")
    _check_keys(raw, set(SUBSCRIBER_KEYS), dotted + ".", where)
    v = {name: _value(raw, name, key, f"{dotted}.{name}", where) for name, key in SUBSCRIBER_KEYS.items()}
    return make_subscriber(v, f"{where}: {dotted}", topics)


MAX_ADDRESS = 254  # RFC 5321's 256-octet path, less its angle brackets


def make_subscriber(v: Mapping[str, Any], where: str, topics: Mapping[str, str]) -> Subscriber:
    """Check one subscriber's values (from TOML or CSV) and build it; `where` prefixes every error."""
    email = v["email"].strip()
    if not _EMAIL.match(email):
        raise ConfigError(f"{email!r} is not a valid email address", where=f"{where}.email",
                          hint="an ASCII address like ada@example.org")
    if len(email) > MAX_ADDRESS:
        raise ConfigError(f"the address is {len(email)} characters long; an address has at most {MAX_ADDRESS} "
                          "(RFC 5321)", where=f"{where}.email", hint="check this row for a pasting mistake")
    check_header_text(v["name"], f"{where}.name")
    for t in v["topics"]:
        if not isinstance(t, str) or t not in topics:
            close = difflib.get_close_matches(str(t), sorted(topics), n=1)
            raise ConfigError(f"unknown topic {t!r}", where=f"{where}.topics",
                              hint=f"did you mean {close[0]!r}?" if close else
                              "define it under [topics] first")
    for rule_key in ("query", "exclude"):
        if v[rule_key]:
            _check_rule(v[rule_key], f"{where}.{rule_key}")
    if not 1 <= v["max_papers"] <= MAX_PAPERS:
        # Beyond about 60 cards even the "and N more" title list would not fit Gmail's 102 KB.
        raise ConfigError(f"max_papers must be between 1 and {MAX_PAPERS}", where=f"{where}.max_papers")
    if not 0 <= v["min_papers"] <= v["max_papers"]:
        raise ConfigError(f"min_papers must be between 0 and max_papers ({v['max_papers']})",
                          where=f"{where}.min_papers")
    if v["backfill_days"] < 0:
        raise ConfigError("backfill_days cannot be negative", where=f"{where}.backfill_days")
    if v["schedule"] or v["timezone"]:  # checked here; the default fills the other one in the store
        trigger(Schedule(v["schedule"] or "0 8 * * *", v["timezone"] or "UTC"), f"{where}.schedule")
    if not v["topics"] and not v["query"]:
        raise ConfigError("a subscriber needs topics or a query, or they would match nothing",
                          where=where)
    return Subscriber(email=email, name=v["name"].strip(), topics=tuple(v["topics"]), query=v["query"],
                      max_papers=v["max_papers"], min_papers=v["min_papers"], exclude=v["exclude"],
                      backfill_days=v["backfill_days"], schedule=" ".join(v["schedule"].split()),
                      timezone=v["timezone"], where=where)


def _check_unique(subscribers: tuple[Subscriber, ...], where: str) -> None:
    seen: dict[str, str] = {}
    for s in subscribers:
        key = s.email.lower()
        if key in seen:
            raise ConfigError(f"{s.email} is listed twice (also at {seen[key]})", where=s.where)
        seen[key] = s.where


def _check_rule(rule: str, where: str) -> None:
    try:
        rules.compile_rule(rule)
    except RuleError as exc:
        exc.where = where
        raise ConfigError(str(exc)) from None


def check_header_text(value: str, where: str) -> None:
    """Refuse control characters in text that will end up in a mail header."""
    bad = control_character(value)
    if bad is not None:
        raise ConfigError(f"contains the control character {bad!r}", where=where,
                          hint="mail headers cannot carry line breaks or control characters")


def parse_address(value: str) -> tuple[str, str]:
    """Split 'Name <addr>' or 'addr' into (name, addr) without the stdlib's lenient parser."""
    m = re.fullmatch(r"\s*(?:\"?([^\"<]*?)\"?\s*)?<([^<>\s]+)>\s*", value)
    if m:
        return (m.group(1) or "").strip(), m.group(2)
    return "", value.strip()


def iter_subscribers_file(path: Path, topics: Mapping[str, str]) -> Iterator[Subscriber]:
    """Stream subscribers from a CSV file; errors name the file and line."""
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"cannot read subscribers file: {exc.strerror}", where=str(path),
                          hint="fix subscribers_file in the config") from None
    with handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        twice = sorted({name for name in header if header.count(name) > 1})
        if twice:
            raise ConfigError(f"the header names {', '.join(twice)} more than once", where=f"{path}:1",
                              hint="keep one column of each")
        missing = {"email"} - set(header)
        unknown = set(header) - set(SUBSCRIBER_KEYS)
        if missing or unknown:
            raise ConfigError(f"header must name columns from {', '.join(SUBSCRIBER_KEYS)} "
                              f"(email required); got {', '.join(header or ['nothing'])}",
                              where=f"{path}:1")
        # The columns a file has, converted per row; the defaults of the others made once (a list of
        # 100,000 subscribers often has 3 or 4 of the 10).
        columns = [(name, SUBSCRIBER_KEYS[name], header.index(name)) for name in SUBSCRIBER_KEYS if name in header]
        defaults = {name: _csv_value(None, name, key, "") for name, key in SUBSCRIBER_KEYS.items() if name not in header}
        prefix = f"{path}:"
        for row in reader:
            if not row:  # a blank line, as csv.DictReader skips them
                continue
            where = prefix + str(reader.line_num)
            values = defaults.copy()
            width = len(row)
            for name, key, at in columns:
                values[name] = _csv_value(row[at] if at < width else None, name, key, where)
            yield make_subscriber(values, where, topics)


def _csv_value(cell: str | None, name: str, key: Key, where: str) -> Any:
    """A CSV cell as its key's type; empty means the default. Lists are separated by ';'."""
    cell = (cell or "").strip()
    if key.type is list:
        return [t.strip() for t in cell.split(";") if t.strip()]
    if not cell:
        return "" if key.default is None else key.default
    if key.type is int:
        try:
            return int(cell)
        except ValueError:
            raise ConfigError(f"{name} must be an integer, not {cell!r}", where=f"{where}.{name}") from None
    return cell


def config_path(option: str | None) -> Path:
    """The config file to use: --config, then $DIGESTMAIL_CONFIG, then ./digestmail.toml."""
    return Path(option or os.environ.get("DIGESTMAIL_CONFIG") or DEFAULT_PATH)
