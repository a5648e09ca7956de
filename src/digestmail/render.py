"""Editions to subject, HTML and text (pure): MJML compiled once, then Jinja per subscriber.

The MJML template is compiled to HTML once, with its Jinja tags left in as text; each email is then
one Jinja render of that HTML (autoescaped: every piece of digest text is data). Everything that
depends only on the paper (links, trimmed and wrapped text) is computed once per paper, and what
depends on the subscriber's matches (highlights, chips) once per distinct match. The variables the
templates see are documented in docs/templates.md.
"""

from __future__ import annotations

import datetime as dt
import re
import textwrap
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jinja2
import mjml

from . import message
from .errors import ConfigError
from .models import Edition, Match, Paper, Pick, RenderedEmail, Subscriber

_CACHE_LIMIT = 4096  # entries per cache (a rendered card is a few KB); cleared when full: memory stays flat
HTML_TEMPLATE = "digest.mjml.j2"
TEXT_TEMPLATE = "digest.txt.j2"
SUBJECT_TEMPLATE = "subject.txt.j2"
TEXT_WIDTH = 78
ABSTRACT_CHARS = 500  # about three sentences: enough to judge a paper, short enough to scan
# Gmail clips an HTML part beyond 102 KB ("[Message clipped]"); stay clear of it, counted as sent.
HTML_LIMIT = 100_000
# When an email would pass HTML_LIMIT, abstracts are first cut to these lengths, then papers move
# from cards to the "and N more papers" list, lowest-ranked first.
SHORTER_ABSTRACTS = (400, 240)
MAX_AUTHORS = 4  # more than this: "A, B, C et al."
SHOWN_AUTHORS = 3
MAX_CODE_LINKS = 3
_SPACE = re.compile(r"\s+")
# C0 and C1 controls and DEL: never shown (an ESC sequence could restyle a terminal, a NUL breaks the
# Subject header). Replaced one for one by a space, so match offsets stay valid.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# http(s) only: `javascript:`, `data:` and the like never become links.
_URL = re.compile(r"(?<![\w/])https?://[^\s<>\"'`{}|\\^\[\]]+", re.I)
_CODE_HOSTS = ("github.com", "gitlab.com", "huggingface.co")


def default_templates() -> Path:
    """The packaged templates (a wheel), else the repository's `templates/` (an editable checkout)."""
    packaged = Path(str(resources.files("digestmail"))) / "templates"
    if (packaged / HTML_TEMPLATE).is_file():
        return packaged
    return Path(__file__).resolve().parents[2] / "templates"


@dataclass(frozen=True)
class Part:
    """A run of text, whether a rule matched it (for highlighting), and the http(s) URL it links to."""

    text: str
    hit: bool
    url: str | None = None


def trim(text: str, limit: int) -> str:
    """Cut at a word boundary before `limit` characters, marking the cut with an ellipsis."""
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit)
    return text[: cut if cut > limit // 2 else limit].rstrip(" ,;:.") + "…"


def split_parts(text: str, spans: Iterable[tuple[int, int]],
                links: Iterable[tuple[int, int, str]] = ()) -> list[Part]:
    """Split text into plain and highlighted runs; overlapping or touching spans merge, empty ones
    vanish. `links` (start, end, url) further split the runs they cover, which then carry the URL."""
    merged: list[list[int]] = []
    for start, end in sorted((max(s, 0), min(e, len(text))) for s, e in spans):
        if start >= end:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    parts: list[Part] = []
    pos = 0
    for start, end in merged:
        if start > pos:
            parts.append(Part(text[pos:start], False))
        parts.append(Part(text[start:end], True))
        pos = end
    if pos < len(text):
        parts.append(Part(text[pos:], False))
    links = [(s, e, u) for s, e, u in links if 0 <= s < e <= len(text)]
    return _with_links(parts, links) if links else parts


def _with_links(parts: list[Part], links: list[tuple[int, int, str]]) -> list[Part]:
    cuts = sorted({p for s, e, _ in links for p in (s, e)})
    out: list[Part] = []
    pos = 0
    for part in parts:
        end = pos + len(part.text)
        points = [pos] + [c for c in cuts if pos < c < end] + [end]
        for a, b in zip(points, points[1:]):
            url = next((u for s, e, u in links if s <= a and b <= e), None)
            # A link is never highlighted inside: a word of a URL is not a word of the text.
            out.append(Part(part.text[a - pos:b - pos], part.hit and url is None, url))
        pos = end
    return out


def sent_size(html: str) -> int:
    """The HTML's size as sent (base64, as message.py writes it): what Gmail's clipping limit is checked
    against here, the conservative reading of a limit that is not clearly specified."""
    return message.html_size(html)


def wrap(text: str, indent: str = "", hang: str = "", width: int = TEXT_WIDTH) -> str:
    """Fill to `width` without ever breaking a word or a URL at a hyphen (a link must stay whole)."""
    return textwrap.fill(_SPACE.sub(" ", text).strip(), width, initial_indent=indent, subsequent_indent=hang,
                         break_on_hyphens=False, break_long_words=False)


def title_search_url(title: str) -> str:
    """Where a paper known only by title can be found."""
    return "https://arxiv.org/search/?" + urllib.parse.urlencode({"query": _SPACE.sub(" ", title).strip(),
                                                                  "searchtype": "title"})


def http_url(value: str | None) -> str | None:
    """The value if it is a plain http(s) URL (no spaces, quotes or control characters), else None."""
    if value and _URL.fullmatch(value.strip()):
        return value.strip()
    return None


def find_urls(text: str) -> list[tuple[int, int, str]]:
    """The http(s) URLs in running text as (start, end, url), without trailing punctuation or an
    unbalanced closing parenthesis: "(see https://x.org/a)." gives https://x.org/a."""
    found = []
    for m in _URL.finditer(text):
        url = m.group()
        while url and (url[-1] in ".,;:!?*" or (url[-1] == ")" and url.count("(") < url.count(")"))):
            url = url[:-1]
        if urllib.parse.urlsplit(url).hostname:
            found.append((m.start(), m.start() + len(url), url))
    return found


def _host(url: str) -> str:
    host = urllib.parse.urlsplit(url).hostname or ""
    return host[4:] if host.startswith("www.") else host


def _same_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return (_host(url) + parts.path.rstrip("/").removesuffix(".git")).casefold()


def is_code_url(url: str) -> bool:
    """A repository or model page: github.com, gitlab.com or huggingface.co with a path (not a
    Hugging Face paper page, which is about the paper, not its code)."""
    path = urllib.parse.urlsplit(url).path.strip("/")
    return _host(url) in _CODE_HOSTS and bool(path) and not (_host(url) == "huggingface.co" and
                                                              path.startswith("papers"))


@dataclass(frozen=True, slots=True)
class Link:
    """One of a paper's links: "Paper", "PDF", "Code" ("Code 2"…), "Project page"."""

    label: str
    url: str


@dataclass(frozen=True, slots=True)
class Chip:
    """A label on a paper's card; `kind` is "topic", "query", "trending" or "upvotes"."""

    label: str
    kind: str


def paper_links(paper: Paper, abstract_urls: Iterable[str] = ()) -> list[Link]:
    """Paper · PDF · Code · Project page, as far as they are known (http(s) URLs only)."""
    arxiv = urllib.parse.quote(paper.arxiv_id, safe="/.") if paper.arxiv_id else None
    links = [Link("Paper", f"https://arxiv.org/abs/{arxiv}" if arxiv else title_search_url(paper.title))]
    if arxiv:
        links.append(Link("PDF", f"https://arxiv.org/pdf/{arxiv}"))
    code: dict[str, str] = {}
    for url in [http_url(paper.github)] + [u for u in abstract_urls if is_code_url(u)]:
        if url and len(code) < MAX_CODE_LINKS:
            code.setdefault(_same_url(url), url)
    for n, url in enumerate(code.values(), start=1):
        links.append(Link("Code" if n == 1 else f"Code {n}", url))
    page = http_url(paper.project_page) or next((u for u in abstract_urls if _host(u).endswith(".github.io")), None)
    if page and _same_url(page) not in code:
        links.append(Link("Project page", page))
    return links


def short_authors(authors: tuple[str, ...], spans: Iterable[tuple[int, int]]) -> tuple[str, list[Part]]:
    """"A, B, C et al." for long lists, keeping any author a rule matched ("A, B, C, …, Hinton et al.");
    `spans` index ", ".join(authors), as select.py gives them. Returns the line and its parts."""
    starts, pos = [], 0
    for a in authors:
        starts.append(pos)
        pos += len(a) + 2
    spans = list(spans)
    if len(authors) <= MAX_AUTHORS:
        shown = list(range(len(authors)))
    else:
        hit = {i for i, s in enumerate(starts) for a, b in spans if a < s + len(authors[i]) and b > s}
        shown = sorted(set(range(SHOWN_AUTHORS)) | hit)
    text, new_spans, prev = "", [], -1
    for i in shown:
        if text:
            text += ", " if i == prev + 1 else ", …, "
        offset = len(text) - starts[i]
        text += authors[i]
        new_spans += [(max(a, starts[i]) + offset, min(b, starts[i] + len(authors[i])) + offset) for a, b in spans
                      if a < starts[i] + len(authors[i]) and b > starts[i]]
        prev = i
    if shown and shown[-1] < len(authors) - 1:
        text += " et al."
    return text, split_parts(text, new_spans)


def _printable(paper: Paper) -> Paper:
    """The paper with control characters in its title, abstract and authors replaced by spaces."""
    if not any(_CONTROL.search(t) for t in (paper.title, paper.abstract, *paper.authors)):
        return paper
    return replace(paper, title=_CONTROL.sub(" ", paper.title), abstract=_CONTROL.sub(" ", paper.abstract),
                               authors=tuple(_CONTROL.sub(" ", a) for a in paper.authors))


def _follows(sub: Subscriber) -> str:
    """'the topics “a” and “b”, and your own query (x OR y)', for "you get this email because you follow …"."""
    names = [f"“{t}”" for t in sub.topics]
    topics = ""
    if names:
        listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        topics = f"the topic{'s' if len(names) > 1 else ''} {listed}"
    query = f"your own query ({sub.query})" if sub.query else ""
    return (", and " if len(names) > 1 else " and ").join(x for x in (topics, query) if x)


@dataclass(frozen=True)
class _Static:
    """What one paper contributes to any email, at one abstract length."""

    fields: dict[str, Any]
    abstract: str  # trimmed, a prefix of the paper's abstract (plus "…")
    links: tuple[tuple[int, int, str], ...]  # URLs wholly inside the trimmed abstract


class Renderer:
    """Loads and compiles the templates once; `render()` is then cheap per subscriber.

    `template_dir` may hold any of the three templates; the others come from the defaults.
    `unsubscribe_url` and `manage_url` may contain `{email}` (the subscriber's address, URL-quoted);
    `render()` can also be given the real per-subscriber URLs.
    """

    def __init__(self, template_dir: Path | None = None, *, title: str = "Trending Papers",
                 sender_line: str = "", abstract_chars: int = ABSTRACT_CHARS, unsubscribe_url: str = "",
                 manage_url: str = "", html_limit: int = HTML_LIMIT) -> None:
        dirs = [str(template_dir)] if template_dir else []
        loader = jinja2.FileSystemLoader(dirs + [str(default_templates())])
        text_env = jinja2.Environment(loader=loader, autoescape=False, undefined=jinja2.StrictUndefined,
                                      keep_trailing_newline=False)
        html_env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
        filename = HTML_TEMPLATE
        try:
            source, filename, _ = loader.get_source(text_env, HTML_TEMPLATE)
            # MJML sees the Jinja tags as text and keeps them; Jinja then fills the compiled HTML.
            self.html_source = source
            self.html = html_env.from_string(mjml.mjml2html(source, disable_comments=True, fonts={}))
            self.text = text_env.get_template(TEXT_TEMPLATE)
            self.subject = text_env.get_template(SUBJECT_TEMPLATE)
        except jinja2.TemplateError as exc:
            raise ConfigError(f"template error: {exc}", where=str(getattr(exc, "filename", "") or dirs),
                              hint="fix the template or remove it to fall back to the default") from None
        except ValueError as exc:  # mjml-python: not MJML it can parse
            raise ConfigError(f"MJML error: {exc}", where=str(filename),
                              hint="fix the template or remove it to fall back to the default") from None
        self.title = title
        self.sender_line = sender_line
        self.abstract_chars = abstract_chars
        self.unsubscribe_url = unsubscribe_url
        self.manage_url = manage_url
        self.html_limit = html_limit
        self._static: dict[tuple[int, int], _Static] = {}
        self._picked: dict[tuple[int, int, Match], SimpleNamespace] = {}
        self._wrapped: dict[str, str] = {}
        if template_dir:
            self._check(dirs[0])

    def _check(self, folder: str) -> None:
        """Render a sample edition with each template now, so a broken override fails at start (naming
        its file), not in the middle of a run."""
        sample = Paper(id=-1, key="sample", title="A sample paper", abstract="An abstract.",
                       first_seen=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), authors=("A. Author",),
                       arxiv_id="2601.00001", upvotes=1, digest_count=2)
        edition = Edition(Subscriber(email="sample@example.org", name="Sample", topics=("sample",)), 0,
                          (Pick(sample, Match(("sample",), ("sample",), (), "topic sample: sample")),),
                          sample.first_seen)
        try:
            ctx = self.context(edition)
            for name, template in ((HTML_TEMPLATE, self.html), (TEXT_TEMPLATE, self.text),
                                   (SUBJECT_TEMPLATE, self.subject)):
                try:
                    template.render(ctx)
                except jinja2.TemplateError as exc:
                    where = Path(folder, name) if Path(folder, name).is_file() else default_templates() / name
                    raise ConfigError(f"template error: {exc}", where=str(where),
                                      hint="check the variable names against docs/templates.md") from None
        finally:
            self._static.clear()
            self._picked.clear()

    # -- per paper, once ------------------------------------------------------------------------

    def _text(self, text: str, indent: str = "   ", hang: str = "   ", width: int = TEXT_WIDTH) -> str:
        """Wrapped text for the plain part, memoised: the same reason or title recurs across emails."""
        key = f"{indent}\0{hang}\0{width}\0{text}"
        out = self._wrapped.get(key)
        if out is None:
            if len(self._wrapped) > 200_000:
                self._wrapped.clear()
            if len(self._wrapped) >= _CACHE_LIMIT:  # bounded across a 100k-subscriber run
                self._wrapped.clear()
            out = self._wrapped[key] = wrap(text, indent, hang, width)
        return out

    def _paper_static(self, paper: Paper, limit: int) -> _Static:
        key = (paper.id, limit)
        found = self._static.get(key)
        if found is not None:
            return found
        abstract = trim(paper.abstract, limit)
        kept = len(abstract) - (1 if abstract.endswith("…") and len(paper.abstract) > limit else 0)
        all_urls = find_urls(paper.abstract)
        links = paper_links(paper, [u for _, _, u in all_urls])
        title = _SPACE.sub(" ", paper.title).strip()
        fields = {
            "title": title,
            "url": links[0].url,
            "arxiv_id": paper.arxiv_id,
            "pdf_url": next((l.url for l in links if l.label == "PDF"), None),
            "code_urls": [l.url for l in links if l.label.startswith("Code")],
            "project_page": next((l.url for l in links if l.label == "Project page"), None),
            "links": links,
            "abstract": abstract,
            "abstract_trimmed": abstract != paper.abstract,
            "digest_count": paper.digest_count,
            "upvotes": paper.upvotes,
            "author_count": len(paper.authors),
            # The template puts "NN. " before the title: leave room for it.
            "text_title": wrap(title, hang="   ", width=TEXT_WIDTH - 4),
            # The text part keeps the configured length: Gmail clips HTML, not the plain part.
            "text_abstract": self._text(trim(_SPACE.sub(" ", paper.abstract), self.abstract_chars)),
            "text_links": "\n".join(f"   {l.label}: {l.url}" for l in links),
        }
        if len(self._static) >= _CACHE_LIMIT:
            self._static.clear()
        found = self._static[key] = _Static(fields, abstract, tuple(t for t in all_urls if t[1] <= kept))
        return found

    # -- per paper and match, once ----------------------------------------------------------------

    def _paper(self, pick: Pick, limit: int) -> SimpleNamespace:
        """A paper as the templates see it (attributes, not dict keys: Jinja reads those twice as fast)."""
        key = (pick.paper.id, limit, pick.match)
        found = self._picked.get(key)
        if found is not None:
            return found
        p, m = _printable(pick.paper), pick.match
        static = self._paper_static(p, limit)
        spans: dict[str, list[tuple[int, int]]] = {"title": [], "abstract": [], "author": []}
        for f, s, e, _ in m.spans:
            spans.setdefault(f, []).append((s, e))
        authors, author_parts = short_authors(p.authors, spans["author"])
        topics = ["your query" if t == "query" else t for t in m.topics]
        chips = [Chip(t, "query" if t == "your query" else "topic") for t in topics]
        extra = []
        if p.digest_count > 1:
            chips.append(Chip(f"trending · in {p.digest_count} digests", "trending"))
            extra.append(f"trending in {p.digest_count} digests")
        if p.upvotes:
            chips.append(Chip(f"{p.upvotes} upvote{'s' if p.upvotes != 1 else ''}", "upvotes"))
            extra.append(f"{p.upvotes} upvote{'s' if p.upvotes != 1 else ''}")
        found = SimpleNamespace(**static.fields, **{
            "title_parts": split_parts(p.title, spans["title"]),
            "abstract_parts": split_parts(static.abstract, spans["abstract"], static.links),
            "authors": authors,
            "author_parts": author_parts,
            "topics": topics,
            "terms": m.terms,
            "reason": m.reason,
            "chips": chips,
            "text_authors": self._text(authors) if authors else "",
            # "42 upvotes" and "trending in 3 digests" never break across lines.
            "text_reason": self._text(" · ".join([m.reason] + [e.replace(" ", "\0") for e in extra]),
                                      hang="     ").replace("\0", " "),
        })
        if len(self._picked) > 50_000:
            self._picked.clear()
        if len(self._picked) >= _CACHE_LIMIT:
            self._picked.clear()
        self._picked[key] = found
        return found

    # -- per subscriber ---------------------------------------------------------------------------

    def context(self, edition: Edition, *, unsubscribe_url: str | None = None, manage_url: str | None = None,
                cards: int | None = None, listed: int | None = None, limit: int | None = None) -> dict[str, Any]:
        """The variables every template sees (documented in docs/templates.md): the first `cards`
        picks as cards with abstracts cut to `limit`, the next `listed` in the "more papers" list."""
        picks = edition.picks
        limit = self.abstract_chars if limit is None else limit
        cards = len(picks) if cards is None else cards
        listed = len(picks) - cards if listed is None else listed
        papers = [self._paper(pick, limit) for pick in picks[:cards]]
        more = [self._paper(pick, limit) for pick in picks[cards:cards + listed]]
        sub = edition.subscriber
        n = len(picks)
        greeting = f"{n} new paper{'s' if n != 1 else ''} for you" + (f", {sub.name}" if sub.name else "")
        quoted = urllib.parse.quote(sub.email, safe="@")
        unsubscribe = (self.unsubscribe_url if unsubscribe_url is None else unsubscribe_url).replace("{email}", quoted)
        manage = (self.manage_url if manage_url is None else manage_url).replace("{email}", quoted)
        return {
            "title": self.title,
            "edition_date": f"{edition.created:%A, %B} {edition.created.day}, {edition.created:%Y}",
            "greeting": greeting,
            "count": n,
            "preheader": "; ".join(p.title for p in papers[:3]),
            "papers": papers,
            "more": more,
            "more_count": n - cards,
            "abstract_chars": limit,
            "subscriber": {"email": sub.email, "name": sub.name},
            "topics": list(sub.topics),
            "query": sub.query,
            "follows": (follows := _follows(sub)),
            "text_footer": self._text(f"You get this email because you follow {follows}. "
                                      "Each paper is sent to you once.", "", ""),
            "sender_line": self.sender_line,
            "unsubscribe_url": unsubscribe,
            "manage_url": manage,
        }

    def render(self, edition: Edition, *, unsubscribe_url: str | None = None,
               manage_url: str | None = None) -> RenderedEmail:
        """Subject, HTML and text of one edition. The HTML stays under `html_limit` bytes: abstracts
        are shortened first, then the lowest-ranked papers move to the "and N more papers" list."""
        urls = {"unsubscribe_url": unsubscribe_url, "manage_url": manage_url}
        try:
            ctx = self.context(edition, **urls)
            html = self.html.render(ctx)
            if not self._fits(html):
                ctx, html = self._fit(edition, urls)
            subject = _SPACE.sub(" ", _CONTROL.sub(" ", self.subject.render(ctx))).strip()
            return RenderedEmail(subject=subject, html=html, text=self.text.render(ctx) + "\n")
        except jinja2.TemplateError as exc:  # an override that breaks on this edition only
            raise ConfigError(f"template error: {exc}", where=str(getattr(exc, "filename", "") or "templates"),
                              hint="check the variable names against docs/templates.md") from None

    def _fits(self, html: str) -> bool:
        return sent_size(html) <= self.html_limit

    def _fit(self, edition: Edition, urls: dict[str, str | None]) -> tuple[dict[str, Any], str]:
        n = len(edition.picks)

        def attempt(limit: int, cards: int, listed: int) -> tuple[dict[str, Any], str, bool]:
            ctx = self.context(edition, limit=limit, cards=cards, listed=listed, **urls)
            html = self.html.render(ctx)
            return ctx, html, self._fits(html)

        limits = [lim for lim in SHORTER_ABSTRACTS if lim < self.abstract_chars] or [self.abstract_chars]
        for limit in limits:
            ctx, html, ok = attempt(limit, n, 0)
            if ok:
                return ctx, html
        # Fewest cards dropped: the largest number of cards (with every other paper listed) that fits.
        lo, hi = 1, n - 1
        best = None
        while lo <= hi:
            mid = (lo + hi) // 2
            ctx, html, ok = attempt(limit, mid, n - mid)
            if ok:
                best, lo = (ctx, html), mid + 1
            else:
                hi = mid - 1
        if best is not None:
            return best
        # Even one card and the whole list is too much: list as many titles as fit, count the rest.
        lo, hi, best = 0, n - 1, attempt(limit, 1, 0)[:2]
        while lo <= hi:
            mid = (lo + hi) // 2
            ctx, html, ok = attempt(limit, 1, mid)
            if ok:
                best, lo = (ctx, html), mid + 1
            else:
                hi = mid - 1
        return best
