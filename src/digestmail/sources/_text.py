"""Small pure helpers shared by the format parsers: decoding bytes, folding text, finding links."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from html.parser import HTMLParser

from ..errors import DigestError
from ..identity import arxiv_id, arxiv_ids_in

__all__ = ["arxiv_id", "arxiv_ids_in", "collapse", "decode", "first_arxiv_id", "github_in", "html_to_text", "latest_not_after",
           "lines_of"]

_SPACE = re.compile(r"\s+")
# A GitHub repository link: the owner and repository name, whatever path follows (`/tree/main/x`).
_GITHUB = re.compile(r"https?://(?:www\.)?github\.com/([A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)/"
                     r"([A-Za-z0-9._-]+)", re.I)
_NOT_REPOS = {"features", "orgs", "topics", "sponsors", "settings", "marketplace", "about", "login"}
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")


def collapse(text: str | None) -> str:
    """Every run of whitespace (arXiv's hard line breaks, NBSP, tabs) as one space; ends trimmed."""
    if not text:
        return ""
    # Most titles, names and abstracts need at most their line breaks turned into spaces: then a
    # text whose only whitespace is single spaces is already folded, at half the cost of splitting
    # it into words. Beyond ASCII, isprintable() is the test (it also rules out NBSP and the like).
    flat = text.replace("\n", " ").strip()
    if "  " not in flat and (_no_odd_ascii_space(flat) if flat.isascii() else flat.isprintable()):
        return flat
    return " ".join(flat.split())  # str.split() knows Unicode whitespace; 5x faster than re.sub


def _no_odd_ascii_space(text: str) -> bool:
    """No whitespace but ' ' in an ASCII text that has no '\n' (what else str.split() splits on).

    Eight single-character searches (memchr) cost a tenth of isprintable() on an abstract; other
    control characters do not matter here: split() keeps them inside their word.
    """
    return ("\t" not in text and "\r" not in text and "\x0b" not in text and "\x0c" not in text
            and "\x1c" not in text and "\x1d" not in text and "\x1e" not in text and "\x1f" not in text)


def decode(data: bytes) -> tuple[str, list[str]]:
    """Bytes to text: UTF-8 (BOM allowed), UTF-16 with a BOM, else Latin-1 with a warning.

    Binary data, and UTF-16 without a byte-order mark (every other byte NUL), are refused with the reason.
    """
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            return data.decode("utf-16"), []
        except UnicodeDecodeError as exc:
            raise DigestError(f"starts with a UTF-16 byte-order mark but does not decode as UTF-16 "
                              f"(byte {exc.start})", hint="save the file as UTF-8") from None
    head = data[:8192]
    if b"\x00" in head:
        even, odd = head[0::2], head[1::2]
        if len(head) >= 4 and any(a.count(0) >= 0.9 * len(a) and b.count(0) <= 0.1 * len(b)
                                  for a, b in ((even, odd), (odd, even))):
            raise DigestError("looks like UTF-16 text without a byte-order mark (every other byte is NUL)",
                              hint="save the file as UTF-8")
        raise DigestError("binary data (NUL bytes), not a text digest")
    try:
        text, warnings = data.decode("utf-8-sig"), []
    except UnicodeDecodeError as exc:
        text, warnings = data.decode("latin-1"), [f"not valid UTF-8 (byte {exc.start}); read as Latin-1"]
    sample = text[:8192]
    if sample and len(_CONTROL.findall(sample)) > 0.05 * len(sample):
        raise DigestError("binary data (control characters), not a text digest")
    return text, warnings


def github_in(*texts: str | None) -> str | None:
    """The first GitHub repository linked in the texts, as `https://github.com/OWNER/REPO`."""
    for text in texts:
        for m in _github_links(text or ""):
            owner, repo = m.group(1), m.group(2).rstrip(".")
            if repo.lower().endswith(".git"):
                repo = repo[:-4]
            if owner.lower() not in _NOT_REPOS and repo:
                return f"https://github.com/{owner}/{repo}"
    return None


def _github_links(text: str) -> Iterator[re.Match[str]]:
    """What _GITHUB.finditer(text) yields, trying the pattern only where a link can start.

    Every match has its "://" 4 or 5 characters in (`http://`, `https://`; no case variants), so
    the case-insensitive pattern is tried at those two places per "://" instead of at every
    character of an abstract (which made this a fifth of parsing a Hugging Face file).
    """
    pos = 0  # matches do not overlap: the next one starts at or after the end of the last
    scheme_end = text.find("://")
    while scheme_end >= 0:
        for start in (scheme_end - 5, scheme_end - 4):
            if start >= pos and (m := _GITHUB.match(text, start)):
                yield m
                pos = m.end()
                break
        scheme_end = text.find("://", max(scheme_end + 3, pos))


def first_arxiv_id(*texts: str | None) -> str | None:
    """The id of the first arxiv.org/abs|pdf link in the texts (version dropped)."""
    for text in texts:
        ids = arxiv_ids_in(text or "")
        if ids:
            return ids[0]
    return None


def lines_of(text: str, offsets: list[int]) -> list[int]:
    """The 1-based lines of ascending offsets, counting each stretch of text once (not once per offset)."""
    lines, line, pos = [], 1, 0
    for offset in offsets:
        line += text.count("\n", pos, offset)
        pos = offset
        lines.append(line)
    return lines


def latest_not_after(dates: list[dt.date], today: dt.date) -> dt.date | None:
    """The latest of `dates` that is not after `today` (None when there is none)."""
    usable = [d for d in dates if d <= today]
    return max(usable) if usable else None


class _TextExtractor(HTMLParser):
    _BLOCK = {"p", "div", "br", "li", "ul", "ol", "tr", "table", "h1", "h2", "h3", "h4", "h5", "h6",
              "section", "article", "header", "footer", "main", "nav", "blockquote", "pre", "hr", "dd",
              "dt", "dl", "title", "body", "html", "td", "th", "aside", "figure", "figcaption", "form"}
    _SKIP = {"script", "style", "head", "template", "noscript"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0
        self.pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self.skipping += 1
        elif tag in self._BLOCK:
            self.pre += tag == "pre"
            self.parts.append("\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self._BLOCK:
            self.pre = max(0, self.pre - (tag == "pre"))
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:  # source line breaks are spaces; only block elements break lines
            self.parts.append(data if self.pre else _SPACE.sub(" ", data))


def html_to_text(markup: str) -> str:
    """Visible text of an HTML document: block elements become line breaks, inline runs are folded.

    Whitespace inside a block is folded to single spaces (as a browser shows it), so a title split
    over source lines stays one line; paragraphs come out separated by a blank line.
    """
    parser = _TextExtractor()
    parser.feed(markup)
    parser.close()
    lines = [collapse(chunk) for chunk in "".join(parser.parts).split("\n")]
    out: list[str] = []
    for line in lines:
        if line:
            out.append(line)
        elif out and out[-1]:
            out.append("")
    return "\n".join(out).strip() + "\n"
