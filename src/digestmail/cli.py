"""The command line: `digestmail [--config PATH] COMMAND`; every error is reported here, once."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import traceback
from pathlib import Path
from typing import Any

import click

from . import pipeline, progress, render
from .config import Config, config_path, load_config
from .errors import ConfigError, DigestmailError, RuleError
from .index import PaperIndex
from .rules import compile_rule
from .schedule import next_fire
from .store import Store

log = logging.getLogger("digestmail")
_state: dict[str, Any] = {"verbose": False}


class Context:
    """What every command needs: the config (loaded on first use) and the clock."""

    def __init__(self, config_option: str | None, now: dt.datetime) -> None:
        self.config_option = config_option
        self.now = now
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(config_path(self.config_option))
        return self._config


def _parse_now(value: str | None) -> dt.datetime:
    if not value:
        return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter("use an ISO date or time, e.g. 2026-11-23T08:00:00+00:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def _version(ctx: click.Context, _: click.Parameter, value: bool) -> None:
    """click's version_option, but the version is only looked up when asked for."""
    if value and not ctx.resilient_parsing:
        from . import __version__

        click.echo(f"digestmail, version {__version__}")
        ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_option", metavar="PATH",
              help="Config file [default: $DIGESTMAIL_CONFIG or ./digestmail.toml].")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging, and tracebacks on errors.")
@click.option("--now", metavar="ISO", help="Act as if the clock read this (tests, replays); default: now.")
@click.option("--log-format", type=click.Choice(["human", "json"]), default="human", show_default=True,
              help="Log lines for people, or one JSON object per line for log collectors.")
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_version,
              help="Show the version and exit.")
@click.pass_context
def cli(ctx: click.Context, config_option: str | None, verbose: bool, now: str | None, log_format: str) -> None:
    """Turn paper digests into one personalised email per subscriber, never a paper twice."""
    _state["verbose"] = verbose
    progress.setup_logging(verbose, json_lines=log_format == "json")
    ctx.obj = Context(config_option, _parse_now(now))


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with a report per file.")
@click.pass_obj
def ingest(obj: Context, paths: tuple[Path, ...], as_json: bool) -> int:
    """Read digests from PATHS (files or folders), or from the configured inbox.

    Each file is checked by its sha256: the same file twice changes nothing. A file that is not a
    readable digest is reported with the reason and the others still land (exit 1).
    """
    config = obj.config
    with pipeline.open_store(config, obj.now) as store:
        if paths:
            report = pipeline.ingest_paths(store, paths, obj.now, progress.track)
        else:
            report = pipeline.ingest_sources(store, config, obj.now, progress.track)
    if as_json:
        _echo_json(report.as_dict())
    else:
        for f in report.files:
            detail = f.reason if f.status == "rejected" else \
                f"{f.format}, {f.digest_date}, {f.entries} entries, {f.new_papers} new papers"
            click.echo(f"{f.status:9} {f.path}: {detail}")
        if not report.files:
            click.echo("no digest files found")
    for error in report.errors:
        click.echo(f"error: {error}", err=True)
    return 1 if report.partial else 0


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the run report as one JSON object.")
@click.pass_obj
def run(obj: Context, as_json: bool) -> int:
    """Ingest the inbox, then send each subscriber one email with their unsent matching papers.

    One delivery at a time per store: while a daemon (or another run) holds the store, this exits 2.
    """
    from .lock import InstanceLock

    lock = InstanceLock(obj.config.store_path)
    lock.acquire()  # two deliveries at once could pick the same papers for the same subscriber
    try:
        report = pipeline.run(obj.config, obj.now, progress.track)
    finally:
        lock.release()
    if as_json:
        _echo_json(report.as_dict())
    else:
        ing = report.ingest.as_dict()
        click.echo(f"ingested {ing['ingested']} digests ({ing['new_papers']} new papers), "
                   f"{ing['duplicate']} already known, {ing['rejected']} rejected")
        counts = report.counts
        retried = counts["retried"]
        click.echo(f"sent {counts['sent']} emails" + (f" ({retried} retried)" if retried else "")
                   + f" via {report.transport} ({report.transport_to}), {counts['deferred']} deferred, "
                   f"{counts['failed']} failed, {counts['skipped']} subscribers skipped")
        reasons = report.as_dict()["skipped_by_reason"]
        if reasons:
            click.echo("  skipped: " + ", ".join(f"{n} {why}" for why, n in sorted(reasons.items())))
        if report.delivery.recovered:
            click.echo(f"  {report.delivery.recovered} editions interrupted by a crash were sent again")
        for d in report.deferred:
            click.echo(f"  deferred {d['email']} until {d['until']}: {d['error']}", err=True)
        for f in report.failed:
            click.echo(f"  failed {f['email']}: {f['error']}", err=True)
        unlisted = counts["deferred"] + counts["failed"] - len(report.deferred) - len(report.failed)
        if unlisted:
            click.echo(f"  … and {unlisted} more deferred or failed (`digestmail status` lists the failures)",
                       err=True)
        for name, h in report.sources.items():
            if h["stale"]:
                click.echo(f"source {name} is STALE: nothing arrived for {h['silent_for'] or 'ever'} "
                           f"(expected every {h['expect_every']})")
            elif h["state"] == "quiet" and not ing["new_papers"]:
                click.echo(f"source {name}: digests arrive but held no new papers")
    return report.exit_code


@cli.command()
@click.argument("email")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Folder to write the .html, .txt and .eml files to.")
@click.option("--png", is_flag=True,
              help="Also screenshot the HTML at 600 and 375 px wide, light and dark (needs chromium).")
@click.pass_obj
def preview(obj: Context, email: str, out_dir: Path, png: bool) -> int:
    """Render EMAIL's next email to files, without sending or recording anything.

    With --png, a headless Chromium (Debian package `chromium`, or $DIGESTMAIL_CHROMIUM) also takes
    full-page screenshots: .600.png, .375.png, .600-dark.png and .375-dark.png. Without Chromium the
    other files are still written, and the command exits 2 saying how to install it.
    """
    result = pipeline.preview(obj.config, email, obj.now)
    if isinstance(result, pipeline.Choice):
        click.echo(f"nothing to send to {email} now: {result.skipped}")
        return 0
    edition, rendered, data = result
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"preview-{email}"
    for suffix, content in ((".html", rendered.html.encode()), (".txt", rendered.text.encode()), (".eml", data)):
        stem.with_name(stem.name + suffix).write_bytes(content)
        click.echo(f"wrote {stem}{suffix}")
    click.echo(f"subject: {rendered.subject}  ({len(edition.picks)} papers)")
    if png:
        from . import browser  # the only module that starts a browser

        shots = [(width, dark, stem.with_name(f"{stem.name}.{width}{'-dark' if dark else ''}.png"))
                 for dark in (False, True) for width in (600, 375)]
        try:
            done = browser.screenshots(stem.with_name(stem.name + ".html"), shots)
        except browser.BrowserError as exc:
            exc.message += " (the .html, .txt and .eml files are written)"
            raise
        for (_, _, path), shot in zip(shots, done):
            click.echo(f"wrote {path} ({shot.width}x{shot.height} px)")
    return 0


@cli.group()
def rules() -> None:
    """Try topic rules against the stored papers, and see why a subscriber gets what they get."""


def _highlight(text: str, spans: list[tuple[int, int]]) -> str:
    out = []
    for part in render.split_parts(text, spans):
        out.append(click.style(part.text, bold=True, fg="yellow") if part.hit else part.text)
    return "".join(out)


@rules.command("test")
@click.argument("query")
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), help="Only papers in digests dated this day or later.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_obj
def rules_test(obj: Context, query: str, since: dt.datetime | None, as_json: bool) -> int:
    """Run QUERY against the stored papers (a backtest) and show what it matches, and where.

    A syntax error is reported with its column and exits 2. Quote the query for the shell:
    digestmail rules test 'title:(diffusion OR "flow matching") -survey'
    """
    try:
        rule = compile_rule(query)
    except RuleError as exc:
        raise ConfigError(str(exc)) from None
    with pipeline.open_store(obj.config, obj.now) as store:
        index = PaperIndex(store.papers_seen_since(since.date() if since else None), obj.now.date())
        matched = sorted(index.papers_in(index.match(rule)), key=lambda p: (p.title.casefold(), p.id))
        dates = store.digest_dates_of(p.id for p in matched)
    results = []
    for p in matched:
        hits = rule.find(index.fields(index.position[p.id]))
        results.append((p, hits))
    if as_json:
        _echo_json({"query": query, "normalised": str(rule), "papers": [
            {"key": p.key, "title": p.title, "digest_dates": dates[p.id],
             "spans": [{"field": h.field, "start": h.start, "end": h.end, "term": h.term} for h in hits]}
            for p, hits in results]})
        return 0
    for p, hits in results:
        title_spans = [(h.start, h.end) for h in hits if h.field == "title"]
        where = sorted({h.field for h in hits})
        click.echo(f"- {_highlight(p.title, title_spans)}")
        click.echo(f"    {', '.join(dates[p.id])}" + (f"; matched in {', '.join(where)}" if where else ""))
        for h in hits:
            if h.field == "abstract":
                start = max(0, h.start - 40)
                snippet = p.abstract[start:h.end + 40].replace("\n", " ")
                click.echo(f"    …{_highlight(snippet, [(h.start - start, h.end - start)])}…")
                break
    click.echo(f"{len(results)} of {len(index)} papers match {str(rule)!r}")
    return 0


@rules.command("explain")
@click.argument("email")
@click.pass_obj
def rules_explain(obj: Context, email: str) -> int:
    """What EMAIL would receive next, ranked, with the score and the reason for each paper."""
    sub, choice, builder = pipeline.explain(obj.config, email, obj.now)
    plan = builder.selector.plan(sub)
    click.echo(f"{sub.email}: max {sub.max_papers}, min {sub.min_papers} papers, backfill {sub.backfill_days} days")
    for name, rule in plan.sources:
        click.echo(f"  {'query' if name == 'query' else 'topic ' + name}: {rule}")
    if plan.exclude is not None:
        click.echo(f"  exclude: {plan.exclude}")
    if choice.skipped:
        click.echo(f"no email now: {choice.skipped}")
        return 0
    click.echo(f"{len(choice.picks)} of {choice.matched} unsent matching papers would be sent:")
    for n, pick in enumerate(choice.picks, start=1):
        relevance, standing = builder.selector.score(sub, pick.paper)
        click.echo(f"{n:3}. {pick.paper.title}")
        click.echo(f"     relevance {relevance}, standing {standing:.1f} (in {pick.paper.digest_count} digests"
                   + (f", {pick.paper.upvotes} upvotes" if pick.paper.upvotes else "") + f"): {pick.match.reason}")
    return 0


def _existing_store(config: Config) -> Store:
    if not config.store_path.exists():
        raise ConfigError(f"no store at {config.store_path} yet", where="store.path",
                          hint="run `digestmail ingest` or `digestmail run` first")
    return Store(config.store_path)


@cli.command()
@click.argument("emails", nargs=-1, required=True)
@click.option("--reason", default="by the admin", show_default=True, help="Why, as status shows it.")
@click.pass_obj
def suppress(obj: Context, emails: tuple[str, ...], reason: str) -> int:
    """Never send to EMAILS again (a complaint, a bounce seen elsewhere), whatever the config says.

    Editions already queued or deferred for them are skipped at their next attempt.
    """
    with _existing_store(obj.config) as store:
        for email in emails:
            store.suppress(email, "admin", reason, obj.now)
            click.echo(f"suppressed {email}")
    return 0


@cli.command()
@click.argument("emails", nargs=-1, required=True)
@click.pass_obj
def unsuppress(obj: Context, emails: tuple[str, ...]) -> int:
    """Send to EMAILS again: lift a suppression (an unsubscribe, a refusal, `suppress`).

    For a reader who subscribed again, or an address a server refused by mistake. The next run
    sends them what they have not had yet. Exit 1 if one of them was not suppressed.
    """
    missing = 0
    with _existing_store(obj.config) as store:
        for email in emails:
            if store.unsuppress(email):
                click.echo(f"{email} will get emails again")
            else:
                missing += 1
                click.echo(f"{email} was not suppressed", err=True)
    return 1 if missing else 0


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_obj
def status(obj: Context, as_json: bool) -> int:
    """Show what the store holds: digests, papers, subscribers, messages sent."""
    config = obj.config
    with _existing_store(config) as store:
        data: dict[str, Any] = dict(store.counts())
        last_date, last_ingest = store.last_ingest()
        data["last_digest_date"], data["last_ingest"] = last_date, last_ingest
        data["sources"] = pipeline.source_health_now(store, config, obj.now)
        data["outbox"] = store.outbox_counts()
        data["failures"] = store.failures(20)
        data["suppressed"] = store.suppressions()
        data["last_runs"] = store.last_reports()
        data["schedules"] = []
        for _, sched in pipeline.schedules_of(config, store):
            nxt = next_fire(sched, obj.now)
            data["schedules"].append({"schedule": sched.name, "last_run": store.last_schedule_run(sched.name),
                                      "next_run": nxt.isoformat() if nxt else None})
    if as_json:
        _echo_json(data)
        return 0
    for k, v in data.items():
        if k not in ("sources", "outbox", "failures", "suppressed", "schedules", "last_runs"):
            click.echo(f"{k.replace('_', ' '):18} {v if v is not None else '-'}")
    click.echo(f"{'outbox':18} " + ", ".join(f"{n} {state}" for state, n in data["outbox"].items()))
    for f in data["failures"]:
        click.echo(f"  failed {f['email']} at {f['at']}: {f['error']}")
    click.echo(f"{'suppressed':18} {len(data['suppressed'])}")
    for s in data["suppressed"]:
        click.echo(f"  {s['email']}: {s['reason']}" + (f" ({s['detail']})" if s["detail"] else "") + f" since {s['at']}")
    for s in data["schedules"]:
        click.echo(f"schedule {s['schedule']}: last {s['last_run'] or 'never'}, next {s['next_run'] or '-'}")
    for kind, r in data["last_runs"].items():
        click.echo(f"last {kind} at {r['at']}: {r.get('sent', 0)} sent, {len(r.get('deferred', []))} deferred, "
                   f"{len(r.get('failed', []))} failed, {r.get('skipped', 0)} skipped")
    for name, h in data["sources"].items():
        line = f"source {name}: {h['state']}"
        if h["silent_for"] is not None:
            line += f", last digest arrived {h['silent_for']} ago"
        if h.get("last_digest_date"):
            line += f" (dated {h['last_digest_date']})"
        if h["expect_every"]:
            line += f", expected every {h['expect_every']}"
        if h["state"] == "quiet":
            line += "; digests arrive but hold no new papers"
        click.echo(line)
    return 0


@cli.command()
@click.pass_obj
def serve(obj: Context) -> int:
    """Answer the unsubscribe links of the emails (RFC 8058 one-click) on [web] listen.

    GET /u/TOKEN shows a page with a button and changes nothing; POST /u/TOKEN unsubscribes, and
    every later run skips that address. GET /healthz answers "ok". Needs [web] base_url and the
    signing key in the environment variable named by [web] secret_env. Listens until SIGTERM or
    Ctrl-C; put a TLS proxy in front. Uses the real clock (not --now).
    """
    config = obj.config
    if config.web is None:
        raise ConfigError("`digestmail serve` needs a [web] table", where=f"{config.path}: web.base_url",
                          hint="set [web] base_url (the public URL of this server) and secret_env")
    config.web.secret()  # a missing key is a configuration error before anything is imported or bound
    try:
        from . import web
    except ImportError as exc:
        raise ConfigError(f"the unsubscribe server needs starlette and uvicorn ({exc})",
                          hint="pip install starlette uvicorn") from None
    web.serve(config)
    return 0


@cli.command()
@click.pass_obj
def daemon(obj: Context) -> int:
    """Run for good: poll the sources, send each subscriber's editions on their schedule, retry.

    Meant for systemd (see docs/deploy.md). SIGTERM or Ctrl-C finishes the edition in flight and exits
    0; SIGHUP reloads the config (an invalid one is logged and the old one kept). One daemon per store.
    """
    from .daemon import run_daemon

    obj.config  # load and check it before anything starts
    return run_daemon(config_path(obj.config_option))


def main() -> None:
    """Entry point: run the command, map errors to messages and exit codes (0 ok, 1 partial, 2 error)."""
    try:
        code = cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except DigestmailError as exc:
        if _state["verbose"]:
            traceback.print_exc()
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
