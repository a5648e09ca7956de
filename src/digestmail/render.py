"""Editions to subject, HTML and text (pure): MJML compiled once, then Jinja per subscriber."""

from __future__ import annotations

import re
import textwrap
import urllib.parse
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import mjml

from .errors import ConfigError
from .models import Edition, Paper, RenderedEmail

HTML_TEMPLATE = "digest.mjml.j2"
TEXT_TEMPLATE = "digest.txt.j2"
SUBJECT_TEMPLATE = "subject.txt.j2"
TEXT_WIDTH = 78
ABSTRACT_CHARS = 700
_SPACE = re.compile(r"\s+")


def default_templates() -> Path:
    """The packaged templates (a wheel), else the repository's `templates/` (an editable checkout)."""
    packaged = Path(str(resources.files("digestmail"))) / "templates"
    if (packaged / HTML_TEMPLATE).is_file():
        return packaged
    return Path(__file__).resolve().parents[2] / "templates"


@dataclass(frozen=True)
class Part:
    """A run of text and whether a rule matched it (for highlighting)."""

    text: str
    hit: bool


def trim(text: str, limit: int) -> str:
    """Cut at a word boundary before `limit` characters, marking the cut with an ellipsis."""
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit)
    return text[: cut if cut > limit // 2 else limit].rstrip(" ,;:.") + "…"


def split_parts(text: str, spans: list[tuple[int, int]]) -> list[Part]:
    """Split text into plain and highlighted runs; overlapping or touching spans merge, empty ones vanish."""
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
    return parts


def wrap(text: str, indent: str = "", hang: str = "", width: int = TEXT_WIDTH) -> str:
    """Fill to `width` without ever breaking a word or a URL at a hyphen (a link must stay whole)."""
    return textwrap.fill(_SPACE.sub(" ", text).strip(), width, initial_indent=indent, subsequent_indent=hang,
                         break_on_hyphens=False, break_long_words=False)


def title_search_url(title: str) -> str:
    """Where a paper known only by title can be found."""
    return "https://arxiv.org/search/?" + urllib.parse.urlencode({"query": title, "searchtype": "title"})


class Renderer:
    """Loads and compiles the templates once; `render()` is then cheap per subscriber."""

    def __init__(self, template_dir: Path | None = None, *, title: str = "Trending Papers",
                 sender_line: str = "") -> None:
        dirs = [str(template_dir)] if template_dir else []
        loader = jinja2.FileSystemLoader(dirs + [str(default_templates())])
        text_env = jinja2.Environment(loader=loader, autoescape=False, undefined=jinja2.StrictUndefined,
                                      keep_trailing_newline=False)
        html_env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
        try:
            source, filename, _ = loader.get_source(text_env, HTML_TEMPLATE)
            # MJML sees the Jinja tags as text and keeps them; Jinja then fills the compiled HTML.
            self.html = html_env.from_string(mjml.mjml2html(source, disable_comments=True, fonts={}))
            self.text = text_env.get_template(TEXT_TEMPLATE)
            self.subject = text_env.get_template(SUBJECT_TEMPLATE)
        except jinja2.TemplateError as exc:
            raise ConfigError(f"template error: {exc}", where=str(getattr(exc, "filename", "") or dirs),
                              hint="fix the template or remove it to fall back to the default") from None
        self.title = title
        self.sender_line = sender_line
        self._paper_text: dict[int, tuple[str, str]] = {}

    def _wrapped(self, paper: Paper) -> tuple[str, str]:
        # Wrapping is the costly part of the text email; it depends only on the paper, so once each.
        cached = self._paper_text.get(paper.id)
        if cached is None:
            # The template puts "NN. " before the title: leave room for it.
            title = wrap(paper.title, hang="    ", width=TEXT_WIDTH - 4)
            abstract = wrap(trim(_SPACE.sub(" ", paper.abstract), ABSTRACT_CHARS), "   ", "   ")
            cached = self._paper_text[paper.id] = (title, abstract)
        return cached

    def context(self, edition: Edition) -> dict[str, Any]:
        """The variables every template sees (documented in docs/templates.md)."""
        papers = []
        for pick in edition.picks:
            p, m = pick.paper, pick.match
            abstract = trim(p.abstract, ABSTRACT_CHARS)
            text_title, text_abstract = self._wrapped(p)
            papers.append({
                "title": _SPACE.sub(" ", p.title).strip(),
                "abstract": abstract,
                "url": title_search_url(p.title),
                "reason": m.reason,
                "topics": m.topics,
                "terms": m.terms,
                "digest_count": p.digest_count,
                "title_parts": split_parts(p.title, [(s, e) for f, s, e, _ in m.spans if f == "title"]),
                "abstract_parts": split_parts(abstract, [(s, e) for f, s, e, _ in m.spans if f == "abstract"]),
                "text_title": text_title,
                "text_abstract": text_abstract,
                "text_reason": wrap(m.reason + (f" · trending in {p.digest_count} digests"
                                                if p.digest_count > 1 else ""), "   ", "     "),
            })
        sub = edition.subscriber
        n = len(papers)
        follows = [f"topic “{t}”" for t in sub.topics] + ([f"the query “{sub.query}”"] if sub.query else [])
        greeting = f"{n} new paper{'s' if n != 1 else ''} for you" + (f", {sub.name}" if sub.name else "")
        return {
            "title": self.title,
            "edition_date": f"{edition.created:%A, %B} {edition.created.day}, {edition.created:%Y}",
            "greeting": greeting,
            "preheader": "; ".join(p["title"] for p in papers[:3]),
            "papers": papers,
            "subscriber": {"email": sub.email, "name": sub.name},
            "follows": ", ".join(follows),
            "text_footer": wrap(f"You get this email because you follow {', '.join(follows)}. "
                                "Each paper is sent to you once."),
            "sender_line": self.sender_line,
        }

    def render(self, edition: Edition) -> RenderedEmail:
        ctx = self.context(edition)
        subject = _SPACE.sub(" ", self.subject.render(ctx)).strip()
        return RenderedEmail(subject=subject, html=self.html.render(ctx), text=self.text.render(ctx) + "\n")
