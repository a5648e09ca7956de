"""Editions to subject, HTML and text (pure): MJML compiled once, then Jinja per subscriber.

The MJML template is compiled to HTML once, with its Jinja tags left in as text; each email is then
one Jinja render of that HTML (autoescaped: every piece of digest text is data). Everything that
depends only on the paper (links, trimmed and wrapped text) is computed once per paper, and each
piece that depends on the subscriber's matches once per distinct value of what it depends on: the
title's highlights on the title's spans, the abstract's on the spans inside the trimmed abstract.
In a real run most (paper, match) pairs are new, but these pieces mostly are not.

Those cached lists are `_Shared`, and a template loop over one that can only depend on the list
(see `_memoise_loops`) is rendered once per list: the HTML of the highlighted title, the abstract
and the links is then reused, byte for byte, by every email that shows the same list. The variables
the templates see are documented in docs/templates.md.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import jinja2
import markupsafe
import mjml
from jinja2 import nodes
from markupsafe import Markup

from . import message
from .errors import ConfigError
from .models import Edition, Match, Paper, Pick, RenderedEmail, Subscriber

_CACHE_LIMIT = 4096  # papers (and limits) whose static part is kept; cleared when full: memory stays flat
# Least recently used pieces kept per kind (highlighted titles, abstracts, author lines, topic lists),
# ~6 KB a kind's worth with their HTML. In bench/build.py's run (10,000 subscribers, 1,000 papers)
# 2048 keeps ~50-55% of the titles and abstracts for ~12 MB; 4096 (~70%) cost 12 MB more for no CPU
# time we could measure, and a run's memory (150 MB for everything) is the tighter budget.
_PIECES = 2048
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


class Part(NamedTuple):
    """A run of text, whether a rule matched it (for highlighting), and the http(s) URL it links to."""

    text: str
    hit: bool
    url: str | None = None


# Parts made in C (~47 an email, most of them new): a frozen dataclass's __init__ cost ~450 ns each,
# a NamedTuple's Python-level __new__ ~210, this ~145 (each measured alone).
_part = functools.partial(tuple.__new__, Part)


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
    return _split(text, merge_spans(spans, len(text)), links)


def merge_spans(spans: Iterable[tuple[int, int]], length: int) -> tuple[tuple[int, int], ...]:
    """The spans as split_parts highlights them in a text of `length` characters: clipped to it,
    empty ones dropped, overlapping or touching ones merged, in order. Two span lists with the same
    merge highlight the same characters (the key the renderer caches highlighted text under)."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):  # clipping keeps the order of the starts, so sorting first is the same
        if start < 0:
            start = 0
        if end > length:
            end = length
        if start >= end:
            continue
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return tuple(merged)


def _split(text: str, merged: tuple[tuple[int, int], ...], links: Iterable[tuple[int, int, str]]) -> list[Part]:
    parts: list[Part] = []
    pos = 0
    for start, end in merged:
        if start > pos:
            parts.append(_part((text[pos:start], False, None)))
        parts.append(_part((text[start:end], True, None)))
        pos = end
    if pos < len(text):
        parts.append(_part((text[pos:], False, None)))
    if links:  # (most texts have none: no list made for them)
        links = [(s, e, u) for s, e, u in links if 0 <= s < e <= len(text)]
        if links:
            return _with_links(parts, links)
    return parts


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
            out.append(_part((part.text[a - pos:b - pos], part.hit and url is None, url)))
        pos = end
    return out


def sent_size(html: str) -> int:
    """The HTML's size as sent (base64, as message.py writes it): what Gmail's clipping limit is checked
    against here, the conservative reading of a limit that is not clearly specified."""
    return message.html_size(html)


def wrap(text: str, indent: str = "", hang: str = "", width: int = TEXT_WIDTH) -> str:
    """Fill to `width` without ever breaking a word or a URL at a hyphen (a link must stay whole).

    Exactly textwrap.fill(..., break_on_hyphens=False, break_long_words=False) of the text with its
    whitespace runs made single spaces (tests/test_render.py checks it against textwrap), at a
    fraction of the cost (see _fill).
    """
    text = _single_spaced(text)
    return _fill(text, indent, hang, width) if text else ""


def _single_spaced(text: str) -> str:
    """Whitespace runs made single spaces, none at either end."""
    # Printable text has no whitespace but " " (every other kind is a control or a separator).
    return text.strip(" ") if "  " not in text and text.isprintable() else _SPACE.sub(" ", text).strip()


def _fill(text: str, indent: str, hang: str, width: int) -> str:
    """wrap() of text that is _single_spaced already and not empty. With only single spaces,
    textwrap's filling is "each line up to the last space that fits, or one whole word if none
    does", which str.rfind finds at C speed."""
    room = width - len(indent)
    if len(text) <= room:
        return indent + text
    lines, pos, prefix = [], 0, indent
    while len(text) - pos > room:
        cut = text.rfind(" ", pos, pos + room + 1) if room > 0 else -1  # (a negative end counts from the end)
        if cut < 0:  # the next word alone is longer than a line: it gets a line of its own
            cut = text.find(" ", pos)
            if cut < 0:
                break
        lines.append(prefix + text[pos:cut])
        pos, prefix, room = cut + 1, hang, width - len(hang)
    lines.append(prefix + text[pos:])
    return "\n".join(lines)


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


class _Shared(list):  # type: ignore[type-arg]
    """A list the renderer keeps and never changes, and the HTML of each memoised template loop over
    it (`html`, by loop): it is rendered once for as long as the list is cached, and dropped with it."""

    __slots__ = ("html",)

    def __init__(self, items: Iterable[Any] = ()) -> None:
        super().__init__(items)
        self.html: dict[int, Markup] = {}


# The C function markupsafe.escape wraps (markupsafe 3); without it, templates keep markupsafe.escape.
_escape_inner = getattr(markupsafe, "_escape_inner", None)


# -- template loops rendered once per shared list ------------------------------------------------

_LOOPS = itertools.count()  # one key per memoised loop, across templates: HTML is never mixed up
_PREFIX = "_dm_"  # the names this adds to a template; one that uses them is left as it is
_HTML_VAR = _PREFIX + "html"
_PURE_FILTERS = frozenset(
    "abs attr batch capitalize center count d default dictsort e escape filesizeformat first float forceescape "
    "format groupby indent int items join last length list lower max min pprint replace reverse round safe "
    "slice sort string striptags sum title tojson trim truncate unique upper urlencode urlize wordcount "
    "wordwrap xmlattr".split())  # the built-in ones, less random and those that look others up by name
_PURE_TESTS = frozenset(jinja2.defaults.DEFAULT_TESTS)
_PURE_NODES = (nodes.Output, nodes.TemplateData, nodes.If, nodes.Const, nodes.Tuple, nodes.List, nodes.Dict,
               nodes.Pair, nodes.Keyword, nodes.CondExpr, nodes.Getattr, nodes.Getitem, nodes.Slice, nodes.Concat,
               nodes.Compare, nodes.Operand, nodes.BinExpr, nodes.UnaryExpr, nodes.MarkSafe,
               nodes.MarkSafeIfAutoescape)


def _names(target: nodes.Node) -> set[str]:
    return {n.name for n in target.find_all(nodes.Name)} | ({target.name} if isinstance(target, nodes.Name) else set())


def _pure(node: nodes.Node, bound: frozenset[str]) -> bool:
    """Whether `node`'s output or value depends on nothing but the values of the names in `bound`: no
    other variable, no call (a call may have effects), no random filter, no assignment or include."""
    if isinstance(node, nodes.For):
        return _pure(node.iter, bound) and _pure_loop(node, bound)
    if isinstance(node, nodes.Name):
        return node.ctx == "load" and node.name in bound
    if isinstance(node, nodes.Filter):
        if node.node is None or node.name not in _PURE_FILTERS:
            return False
    elif isinstance(node, nodes.Test):
        if node.name not in _PURE_TESTS:
            return False
    elif not isinstance(node, _PURE_NODES):
        return False
    return all(_pure(child, bound) for child in node.iter_child_nodes())


def _pure_loop(loop: nodes.For, bound: frozenset[str] = frozenset()) -> bool:
    """Whether a loop's output depends on nothing but the items it loops over (and `bound`)."""
    own = bound | _names(loop.target)
    return (not loop.recursive and (loop.test is None or _pure(loop.test, own))
            and all(_pure(n, own | {"loop"}) for n in loop.body) and all(_pure(n, bound) for n in loop.else_))


def _clone(value: Any) -> Any:
    """A copy of a template's syntax tree (copy.deepcopy would copy the Environment too)."""
    if isinstance(value, nodes.Node):
        new = object.__new__(type(value))
        for name in value.fields:
            setattr(new, name, _clone(getattr(value, name)))
        for name in value.attributes:
            setattr(new, name, getattr(value, name, None))
        return new
    if isinstance(value, list):
        return [_clone(v) for v in value]
    return value


def _memoised(loop: nodes.For) -> nodes.Node:
    """`{% for x in items %}…{% endfor %}` → its HTML kept on `items` when that is a _Shared list:

        {% if items is _dm_kept(K) %}{{ items | _dm_kept(K) }}
        {% elif items is _dm_shared %}{% set _dm_html %}{% for x in items %}…{% endfor %}{% endset %}
            {{ _dm_html | _dm_keep(K, items) }}
        {% else %}{% for x in items %}…{% endfor %}{% endif %}

    The loop's output depends on nothing but `items` (see _pure), so the kept HTML is exactly what
    rendering the loop again would give."""
    number = next(_LOOPS)

    def items() -> nodes.Expr:
        return _clone(loop.iter)

    def call(kind: type, value: nodes.Node, name: str, *args: nodes.Expr) -> nodes.Expr:
        return kind(value, _PREFIX + name, list(args), [], None, None)

    kept = nodes.Output([call(nodes.Filter, items(), "kept", nodes.Const(number))])
    keep = [nodes.AssignBlock(nodes.Name(_HTML_VAR, "store"), None, [_clone(loop)]),
            nodes.Output([call(nodes.Filter, nodes.Name(_HTML_VAR, "load"), "keep", nodes.Const(number), items())])]
    out = nodes.If(call(nodes.Test, items(), "kept", nodes.Const(number)), [kept],
                   [nodes.If(call(nodes.Test, items(), "shared"), keep, [], [])], [loop])
    out.set_lineno(loop.lineno)
    if loop.environment is not None:
        out.set_environment(loop.environment)
    return out


def _memoise_loops(body: list[nodes.Node]) -> None:
    """Replace every pure loop (at any depth, outside macros, calls and filter or autoescape blocks,
    whose evaluation context could differ from one use to the next) by its _memoised form."""
    for i, node in enumerate(body):
        if isinstance(node, nodes.For):
            pure = _pure_loop(node)
            _memoise_loops(node.body)
            _memoise_loops(node.else_)
            if pure:
                body[i] = _memoised(node)
        elif isinstance(node, nodes.If):
            _memoise_loops(node.body)
            for branch in node.elif_:
                _memoise_loops(branch.body)
            _memoise_loops(node.else_)


def _is_kept(value: Any, key: int) -> bool:
    return type(value) is _Shared and key in value.html


def _kept(value: _Shared, key: int) -> Markup:
    return value.html[key]


def _keep(html: Markup, key: int, value: _Shared) -> Markup:
    value.html[key] = html
    return html


def _escape(value: Any) -> str:
    """markupsafe.escape for the template's output, without wrapping the result in a new Markup: the
    compiled template only ever joins what it outputs into one string (a block it captures is wrapped
    in Markup again), so the characters are all that counts, and they are the same."""
    if type(value) is str:
        return _escape_inner(value)  # type: ignore[misc]
    if type(value) is Markup:
        return value
    return markupsafe.escape(value)


def _html_template(env: jinja2.Environment, source: str) -> jinja2.Template:
    """The compiled HTML template with its pure loops memoised (see _memoised) and a cheaper escape
    for its output (an email outputs ~150 values)."""
    tree = env.parse(source)
    if _PREFIX not in source:
        env.tests.update({_PREFIX + "kept": _is_kept, _PREFIX + "shared": lambda v: type(v) is _Shared})
        env.filters.update({_PREFIX + "kept": _kept, _PREFIX + "keep": _keep})
        _memoise_loops(tree.body)
    template = env.from_string(tree)
    namespace = template.root_render_func.__globals__  # the compiled module's: `escape` is only used for output
    if _escape_inner is not None and namespace.get("escape") is markupsafe.escape:
        namespace["escape"] = _escape
    return template


# -- the renderer ---------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)  # hashed by identity: a key of the caches below
class _Static:
    """What one paper contributes to any email, at one abstract length."""

    fields: dict[str, Any]
    title: str  # printable, as the title's spans index it
    authors: tuple[str, ...]  # printable
    abstract: str  # trimmed, a prefix of the paper's printable abstract (plus "…")
    links: tuple[tuple[int, int, str], ...]  # URLs wholly inside the trimmed abstract
    chips: tuple[Chip, ...]  # trending and upvotes
    extra: str  # the same for the text part's reason line, each item's spaces NULs (never broken)


class _PaperView:
    """A paper as the templates see it: attributes, not dict keys (Jinja reads those twice as fast),
    which are its __dict__ as `_paper` made it. `terms` (which the default templates do not show) is
    merged from the match only when a template reads it."""

    _match: Match

    @property
    def terms(self) -> tuple[str, ...]:
        return self._match.terms


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
            self.html = _html_template(html_env, mjml.mjml2html(source, disable_comments=True, fonts={}))
            self.text = text_env.get_template(TEXT_TEMPLATE)
            self.subject = text_env.get_template(SUBJECT_TEMPLATE)
            # Each render copies a template's globals into its new context and iterates them again: as
            # Jinja's live ChainMap over the environment's, that is done in Python (new_context took
            # ~18 µs, with a dict ~6.5, on the loaded VM). Our environments are our own, and nothing
            # changes their globals after this.
            for template in (self.html, self.text, self.subject):
                template.globals = dict(template.globals)
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
        self._wrapped: dict[str, str] = {}
        # functools' LRU caches: C-speed and safe across the daemon's threads.
        self._title_parts = functools.lru_cache(_PIECES)(self._make_title_parts)
        self._abstract_parts = functools.lru_cache(_PIECES)(self._make_abstract_parts)
        self._authors = functools.lru_cache(_PIECES)(self._make_authors)
        self._topics = functools.lru_cache(_PIECES)(self._make_topics)
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
            for cache in (self._title_parts, self._abstract_parts, self._authors, self._topics):
                cache.cache_clear()

    # -- per paper, once ------------------------------------------------------------------------

    def _text(self, text: str, indent: str = "   ", hang: str = "   ", width: int = TEXT_WIDTH) -> str:
        """Wrapped text for the plain part, memoised: the same abstract or footer recurs across emails."""
        key = f"{indent}\0{hang}\0{width}\0{text}"
        out = self._wrapped.get(key)
        if out is None:
            if len(self._wrapped) >= _CACHE_LIMIT:  # bounded across a 100k-subscriber run
                self._wrapped.clear()
            out = self._wrapped[key] = wrap(text, indent, hang, width)
        return out

    def _paper_static(self, paper: Paper, limit: int) -> _Static:
        key = (paper.id, limit)
        found = self._static.get(key)
        if found is not None:
            return found
        paper = _printable(paper)
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
            "code_urls": _Shared(l.url for l in links if l.label.startswith("Code")),
            "project_page": next((l.url for l in links if l.label == "Project page"), None),
            "links": _Shared(links),
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
        chips, extra = [], []
        if paper.digest_count > 1:
            chips.append(Chip(f"trending · in {paper.digest_count} digests", "trending"))
            extra.append(f"trending in {paper.digest_count} digests")
        if paper.upvotes:
            chips.append(Chip(f"{paper.upvotes} upvote{'s' if paper.upvotes != 1 else ''}", "upvotes"))
            extra.append(f"{paper.upvotes} upvote{'s' if paper.upvotes != 1 else ''}")
        if len(self._static) >= _CACHE_LIMIT:
            self._static.clear()
        found = self._static[key] = _Static(fields, paper.title, paper.authors, abstract,
                                            tuple(t for t in all_urls if t[1] <= kept), tuple(chips),
                                            " · ".join(e.replace(" ", "\0") for e in extra))
        return found

    # -- per paper and what of the match it shows, once -------------------------------------------

    def _make_title_parts(self, title: str, spans: tuple[tuple[int, int], ...]) -> _Shared:
        return _Shared(_split(title, spans, ()))

    def _make_abstract_parts(self, static: _Static, spans: tuple[tuple[int, int], ...]) -> _Shared:
        return _Shared(_split(static.abstract, spans, static.links))

    def _make_authors(self, static: _Static, spans: tuple[tuple[int, int], ...]) -> tuple[str, _Shared, str]:
        text, parts = short_authors(static.authors, spans)
        return text, _Shared(parts), self._text(text) if text else ""

    def _make_topics(self, topics: tuple[str, ...]) -> tuple[_Shared, tuple[Chip, ...]]:
        shown = ["your query" if t == "query" else t for t in topics]
        return _Shared(shown), tuple(Chip(t, "query" if t == "your query" else "topic") for t in shown)

    def _paper(self, pick: Pick, limit: int) -> _PaperView:
        """A paper as the templates see it."""
        m = pick.match
        static = self._paper_static(pick.paper, limit)
        title: list[tuple[int, int]] = []
        abstract: list[tuple[int, int]] = []
        author: list[tuple[int, int]] = []
        # The topics' hits as they come (merge_spans merges them per field), not m.spans: merging
        # every hit of every topic into one sorted list was ~6 % of building a message.
        for f, s, e, _ in m.hits():
            if f == "title":
                title.append((s, e))
            elif f == "abstract":
                abstract.append((s, e))
            elif f == "author":
                author.append((s, e))
        # Keyed by the static part (hashed by identity), not its tuple of authors, hashed anew each time.
        authors, author_parts, text_authors = self._authors(static, tuple(sorted(set(author))) if author else ())
        topics, chips = self._topics(m.topics)
        # wrap(" · ".join([reason, *extra])), with the reason made single-spaced on its own: the
        # extra items have no whitespace to fold.
        reason = _single_spaced(m.reason)
        if static.extra:
            reason = (reason + " · " if reason else "· ") + static.extra
        view = object.__new__(_PaperView)
        view.__dict__ = {
            **static.fields,
            "title_parts": self._title_parts(static.title, merge_spans(title, len(static.title))),
            "abstract_parts": self._abstract_parts(static, merge_spans(abstract, len(static.abstract))),
            "authors": authors,
            "author_parts": author_parts,
            "topics": topics,
            "_match": m,
            "reason": m.reason,
            "chips": [*chips, *static.chips],
            "text_authors": text_authors,
            # "42 upvotes" and "trending in 3 digests" never break across lines.
            "text_reason": _fill(reason, "   ", "     ", TEXT_WIDTH).replace("\0", " ") if reason else "",
        }
        return view

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
        follows = _follows(sub)
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
            "follows": follows,
            "text_footer": wrap(f"You get this email because you follow {follows}. "
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
