"""Golden files of whole rendered emails: HTML, text and the message, compared byte for byte.

A change to the templates or the renderer shows up here as a diff to review. After a deliberate change,
regenerate with `DIGESTMAIL_UPDATE_GOLDEN=1 python3 -m pytest tests/test_render_golden.py` and read
the diff of tests/data/render/ before committing. Message-ID, Date and MIME boundaries are normalised.
"""

from __future__ import annotations

import datetime as dt
import base64
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from digestmail import message, render, select
from digestmail.index import PaperIndex
from digestmail.models import Edition, Paper, Pick, Subscriber

from .conftest import ROOT

GOLDEN = ROOT / "tests" / "data" / "render"
UPDATE = os.environ.get("DIGESTMAIL_UPDATE_GOLDEN") == "1"
NOW = dt.datetime(2026, 11, 23, 8, 0, tzinfo=dt.timezone.utc)
TOPICS = {"optimizers": 'optimizer OR adam OR "learning rate"', "diffusion": 'diffusion OR "flow matching"',
          "people": "author:hinton"}


def make_edition(sub: Subscriber, papers: list[Paper]) -> Edition:
    selector = select.Selector(TOPICS, PaperIndex(papers, NOW.date()), NOW)
    picks = tuple(Pick(p, selector.explain(sub, p)) for p in papers)
    assert all(p.match.topics for p in picks)
    return Edition(sub, 1, picks, NOW, select.edition_key(sub.email, NOW))


def paper(i: int, title: str, abstract: str, **kw) -> Paper:
    return Paper(id=i, key=f"key-{i}", title=title, abstract=abstract, first_seen=NOW, **kw)


def ada() -> tuple[render.Renderer, Edition]:
    """A typical email: arXiv ids, authors, upvotes, code and project links, a title-only paper."""
    papers = [
        paper(1, "Warmup-Free Adam: Stable Training Without a Learning Rate Schedule",
              "We study why the Adam optimizer needs a warmup phase and show that a simple rescaling of the "
              "second-moment estimate removes the need for it. Across language and vision models up to 7B "
              "parameters, our variant matches tuned warmup schedules while using a constant learning rate. "
              "Code: https://github.com/example/warmup-free-adam.",
              authors=("Ada Lovelace", "Grace Hopper", "Alan Turing", "Edsger Dijkstra", "Barbara Liskov"),
              arxiv_id="2411.01234", upvotes=42, digest_count=3),
        paper(2, "Flow Matching in One Step with Consistency Distillation",
              "Diffusion and flow matching models need many steps. We distil them into a single step and "
              "train the student with the Adam optimizer at a fraction of the cost.",
              authors=("Kim Lee", "Sam Park"), arxiv_id="2411.04321", github="https://github.com/example/one-step",
              project_page="https://one-step.example.org", upvotes=7, digest_count=2),
        paper(3, "Sharpness-Aware Optimizers at Scale",
              "Sharpness-aware minimisation improves generalisation but doubles the cost of every step. We "
              "share the ascent step across micro-batches."),
    ]
    sub = Subscriber(email="ada@example.org", name="Ada", topics=("optimizers", "diffusion"), query='"one step"')
    r = render.Renderer(title="Trending Papers", sender_line="Sent by Trending Papers <papers@example.org>",
                        unsubscribe_url="https://papers.example.org/u?email={email}",
                        manage_url="mailto:papers@example.org?subject=change%20my%20topics")
    return r, make_edition(sub, papers)


def hostile() -> tuple[render.Renderer, Edition]:
    """Digest text that tries to be markup, template code or a link, and Unicode of every kind."""
    papers = [
        paper(11, "Adam <script>alert(1)</script> & {{ 7*7 }} {% if true %}x{% endif %}",
              "The optimizer </mj-text></mj-column><mj-raw><b>raw</b></mj-raw> {\\name} javascript:alert(1) "
              "<img src=x onerror=alert(1)> \"double\" and 'single' https://example.org/?a=1&b=<2>",
              authors=("O'Brien & Co", "<b>Bold</b>", "\u202eevil\u202c", "Geoffrey Hinton", "E", "F"),
              github="javascript:alert(1)", project_page="data:text/html,x"),
        paper(12, "最適化 Adam の研究 🎉🧪👩‍🔬", "中文标题 日本語 optimizer עברית \u200f mark."),
    ]
    sub = Subscriber(email="x@example.org", name="<Ada & \"Co\">", topics=("optimizers", "people"))
    return render.Renderer(sender_line="Sent by x"), make_edition(sub, papers)


def overflow() -> tuple[render.Renderer, Edition]:
    """More papers than fit: abstracts shortened, then the rest listed as "And N more papers"."""
    papers = [paper(100 + i, f"Adam variant {i}: an optimizer for everyone",
                    f"We study the Adam optimizer, variant {i}. " + "More words about training. " * 30,
                    arxiv_id=f"2411.{i:05d}") for i in range(14)]
    sub = Subscriber(email="grace@example.org", topics=("optimizers",), max_papers=14)
    return render.Renderer(html_limit=38_000, sender_line="Sent by papers@example.org"), make_edition(sub, papers)


CASES: dict[str, Callable[[], tuple[render.Renderer, Edition]]] = {"ada": ada, "hostile": hostile, "overflow": overflow}


def normalise(eml: str) -> str:
    """Message-ID, Date and boundaries change with the clock and the domain: replace them."""
    boundaries = set(re.findall(r'boundary="([^"]+)"', eml))
    for i, b in enumerate(sorted(boundaries)):
        eml = eml.replace(b, f"BOUNDARY-{i}")
    eml = re.sub(r"^Message-ID: <[^>]*>", "Message-ID: <MESSAGE-ID>", eml, flags=re.M)
    return re.sub(r"^Date: .*$", "Date: DATE", eml, flags=re.M)


def check(path: Path, actual: str) -> None:
    if UPDATE or not path.exists():
        if not UPDATE and os.environ.get("CI") == "true":
            pytest.fail(f"golden file {path.name} is missing; generate it with DIGESTMAIL_UPDATE_GOLDEN=1")
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8", newline="") as f:
            f.write(actual)
        return
    with path.open(encoding="utf-8", newline="") as f:
        expected = f.read()
    assert actual == expected, (f"{path.name} differs from the golden file; if the change is intended, "
                                "rerun with DIGESTMAIL_UPDATE_GOLDEN=1 and review the diff")


@pytest.mark.parametrize("name", CASES)
def test_golden(name):
    renderer, ed = CASES[name]()
    out = renderer.render(ed)
    data = message.build(out, sender=("Trending Papers", "papers@example.org"),
                         to=(ed.subscriber.name, ed.subscriber.email), message_id=f"{ed.key}@example.org",
                         date=ed.created)
    check(GOLDEN / f"{name}.subject.txt", out.subject + "\n")
    check(GOLDEN / f"{name}.html", out.html)
    check(GOLDEN / f"{name}.txt", out.text)
    eml = data.decode("ascii")
    # The HTML part is base64: check it decodes to the .html golden, and keep the .eml golden readable.
    head, sep, rest = eml.partition("Content-Transfer-Encoding: base64\r\n\r\n")
    encoded, end, tail = rest.partition("\r\n--")
    assert sep and base64.b64decode(encoded).decode("utf-8") == out.html
    eml = head + sep + f"[base64 of {name}.html]" + end + tail
    check(GOLDEN / f"{name}.eml", normalise(eml))


def test_golden_emails_are_what_the_issue_asks_for():
    """The goldens are reviewed by eye; these are the facts a review must never miss."""
    html = (GOLDEN / "ada.html").read_text(encoding="utf-8")
    assert 'lang="en"' in html and 'name="color-scheme" content="light dark"' in html
    assert 'href="https://arxiv.org/abs/2411.01234"' in html and 'href="https://arxiv.org/pdf/2411.04321"' in html
    assert 'href="https://github.com/example/one-step"' in html and "Project page" in html
    assert "https://arxiv.org/search/?query=Sharpness-Aware" in html
    assert 'href="https://papers.example.org/u?email=ada@example.org"' in html
    hostile_html = (GOLDEN / "hostile.html").read_text(encoding="utf-8")
    assert "<script" not in hostile_html and "{{ 7*7 }}" in hostile_html and "49" not in hostile_html
    assert 'href="javascript' not in hostile_html.lower() and 'href="data:' not in hostile_html
    overflow_html = (GOLDEN / "overflow.html").read_text(encoding="utf-8")
    assert "And 6 more papers" in overflow_html and overflow_html.count('<h2 class="dm-ink" dir="auto"') == 8
    assert len(re.findall(r"^\d+\. ", (GOLDEN / "overflow.txt").read_text(encoding="utf-8"), re.M)) == 14
