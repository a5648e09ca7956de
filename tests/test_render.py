"""digestmail.render: escaping, compile-once soundness, highlighting, trimming and text layout."""

from __future__ import annotations

import datetime as dt
import html
import itertools
import re

import jinja2
import mjml
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digestmail import render, select
from digestmail.index import PaperIndex
from digestmail.models import Edition, Paper, Pick, Subscriber

NOW = dt.datetime(2026, 11, 23, 8, 0, tzinfo=dt.timezone.utc)
TOPICS = {"optimizers": "optimizer OR adam", "federated": "federated", "diffusion": 'diffusion OR "flow matching"'}
ADA = Subscriber(email="ada@example.org", name="Ada", topics=("optimizers",))
_ids = itertools.count(1)


def paper(title: str, abstract: str, digest_count: int = 1) -> Paper:
    # Fresh ids: the renderer caches the wrapped text of a paper by id.
    pid = next(_ids)
    return Paper(id=pid, key=f"key-{pid}", title=title, abstract=abstract, first_seen=NOW,
                 digest_count=digest_count)


def edition(papers: list[Paper], subscriber: Subscriber = ADA, topics: dict[str, str] = TOPICS) -> Edition:
    """Picks made the way select.py makes them, in the given order; every paper must match."""
    selector = select.Selector(topics, PaperIndex(papers), NOW)
    picks = []
    for p in papers:
        match = selector.explain(subscriber, p)
        assert match.topics, f"{p.title!r} does not match {subscriber.topics}"
        picks.append(Pick(p, match))
    return Edition(subscriber=subscriber, subscriber_id=1, picks=tuple(picks), created=NOW,
                   key=select.edition_key(subscriber.email, NOW))


def collapse(text: str) -> str:
    return " ".join(text.split())


def visible(markup: str) -> str:
    """The text a reader sees: tags, comments and the head dropped, entities decoded."""
    body = markup.partition("<body")[2]
    body = re.sub(r"<!--.*?-->", "", body, flags=re.S)
    return html.unescape(re.sub(r"<[^>]*>", " ", body))


@pytest.fixture(scope="module")
def renderer() -> render.Renderer:
    return render.Renderer(sender_line="Sent by Trending Papers · digestmail")


# -- escaping -----------------------------------------------------------------------------------

CORPUS = [
    "<script>alert(1)</script>",
    "Tom & Jerry",
    "{{ 7*7 }}",
    "{% if true %}x{% endif %}",
    "</mj-text></mj-column><mj-raw><b>raw</b></mj-raw>",
    "{\\name}",
    "javascript:alert(1)",
    "emoji 🎉🧪👩‍🔬",
    "中文标题 日本語",
    "RTL \u202eevil\u202c mark",
    'quotes "double" and \'single\'',
    "<img src=x onerror=alert(1)>",
]


@pytest.mark.parametrize("nasty", CORPUS, ids=range(len(CORPUS)))
def test_hostile_text_is_escaped_in_html_and_verbatim_in_text(renderer, nasty):
    title = f"Adam {nasty} optimizer"
    abstract = f"adam {nasty} end."  # short enough that wrapping cannot split it
    out = renderer.render(edition([paper(title, abstract)]))

    low = out.html.lower()
    assert "<script" not in low and "<img" not in low and "<b>raw" not in low
    assert "</mj-" not in low and "<mj-" not in low
    assert not re.search(r"""href=["']?\s*javascript:""", low)
    assert "49" not in out.html  # {{ 7*7 }} is text, never evaluated
    shown = collapse(visible(out.html))
    assert collapse(f"Adam {nasty} optimizer") in shown
    assert collapse(f"{nasty} end.") in shown
    if "&" in nasty:
        assert nasty.replace("&", "&amp;") in out.html and nasty not in out.html
    if '"' in nasty:
        assert '"double"' not in out.html  # never raw inside markup, where it could end an attribute

    assert collapse(title) in collapse(out.text)
    assert collapse(abstract) in collapse(out.text)
    assert "49" not in out.text
    assert title in out.subject


def test_subject_holds_the_first_title_with_whitespace_collapsed(renderer):
    first = paper("  Warmup-Free   Adam:\n  Stable\tTraining  ", "An optimizer study.", digest_count=3)
    second = paper("Another optimizer", "More adam.")
    out = renderer.render(edition([first, second]))
    assert out.subject == "2 new papers for you: Warmup-Free Adam: Stable Training"
    assert "\n" not in out.subject and "  " not in out.subject
    single = renderer.render(edition([paper("Adam only", "x")]))
    assert single.subject == "1 new paper for you: Adam only"


def test_every_pick_appears_in_order_in_both_parts(renderer):
    titles = ["Adam first", "Second optimizer paper", "Third adam paper"]
    out = renderer.render(edition([paper(t, "adam") for t in titles]))
    shown = visible(out.html)
    assert [shown.index(t) for t in titles] == sorted(shown.index(t) for t in titles)
    assert [out.text.index(t) for t in titles] == sorted(out.text.index(t) for t in titles)
    assert "1. Adam first" in out.text and "3. Third adam paper" in out.text


def test_trending_badge_only_for_papers_in_several_digests(renderer):
    out = renderer.render(edition([paper("Adam once", "x"), paper("Adam thrice", "y", digest_count=3)]))
    assert out.html.count("in 3 digests") == 1 and "in 1 digests" not in out.html
    assert "trending in 3 digests" in out.text and "in 1 digests" not in out.text


# -- compile once, then fill ----------------------------------------------------------------------

def _jinja_then_mjml(renderer: render.Renderer, ed: Edition) -> str:
    source = (render.default_templates() / render.HTML_TEMPLATE).read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return mjml.mjml2html(env.from_string(source).render(renderer.context(ed)), disable_comments=True, fonts={})


def _between_tags(markup: str) -> str:
    return re.sub(r">\s+<", "><", markup).strip()


EDITIONS = {
    "one paper": lambda: edition([paper("Warmup free Adam", "We study the Adam optimizer and its warmup.")]),
    "three papers": lambda: edition([
        paper("Adam at scale", "An optimizer for large models", digest_count=4),
        paper("Federated tuning", "A federated recipe with an optimizer on phones", digest_count=2),
        paper("Flow matching in one step", "Diffusion and flow matching with the Adam optimizer"),
    ], Subscriber(email="grace@example.org", name="Grace", topics=("federated", "diffusion", "optimizers"),
                  query='"one step"')),
    "no name, query only": lambda: edition(
        [paper("Tokenizer bugs", "We collect forty tokenizer bugs")],
        Subscriber(email="x@example.org", query='tokenizer OR "language models"')),
}


@pytest.mark.parametrize("name", EDITIONS)
def test_compiled_once_equals_jinja_first_then_mjml(renderer, name):
    ed = EDITIONS[name]()
    fast = renderer.render(ed).html
    slow = _jinja_then_mjml(renderer, ed)
    assert _between_tags(fast) == _between_tags(slow)


def test_compiled_template_keeps_the_jinja_tags(renderer):
    # MJML must not have eaten or escaped the loop: with two papers there are two cards.
    out = renderer.render(edition([paper("Adam one", "a"), paper("Adam two", "b")]))
    shown = collapse(visible(out.html))
    assert shown.count("Adam one") == 2 and shown.count("Adam two") == 2  # preheader + card
    assert out.html.count("https://arxiv.org/search/?query=Adam+one&amp;searchtype=title") == 1
    assert "{%" not in out.html and "{{" not in out.html


# -- highlighting ---------------------------------------------------------------------------------

def test_matched_words_are_highlighted(renderer):
    out = renderer.render(edition([paper("Warmup-Free Adam: Stable Training",
                                         "We study why the optimizer needs warmup; adam again.")]))
    assert re.search(r'<span style="[^"]*background-color[^"]*">Adam</span>', out.html)
    assert re.search(r'<strong style="[^"]*">optimizer</strong>', out.html)
    assert re.search(r'<strong style="[^"]*">adam</strong>', out.html)
    assert not re.search(r"<(span|strong)[^>]*>(Warmup|Stable|study|warmup)", out.html)
    assert "topic optimizers: Adam, optimizer" in visible(out.html)
    assert "topic optimizers: Adam, optimizer" in out.text


def test_highlight_uses_the_paper_spelling_and_plural(renderer):
    out = renderer.render(edition([paper("Optimizers compared", "Two ADAM variants")]))
    assert re.search(r'<span style="[^"]*">Optimizers</span>', out.html)
    assert re.search(r'<strong style="[^"]*">ADAM</strong>', out.html)


def test_hits_past_the_trimmed_abstract_are_dropped(renderer):
    long_abstract = "word " * 200 + "adam"  # the hit lies beyond ABSTRACT_CHARS
    out = renderer.render(edition([paper("Adam long", long_abstract)]))
    assert not re.search(r"<strong[^>]*>adam</strong>", out.html)
    assert "…" in visible(out.html)


def parts(text, spans):
    return [(p.text, p.hit) for p in render.split_parts(text, spans)]


def test_split_parts_basic():
    assert parts("hello world", []) == [("hello world", False)]
    assert parts("hello world", [(0, 5)]) == [("hello", True), (" world", False)]
    assert parts("hello world", [(6, 11), (0, 5)]) == [("hello", True), (" ", False), ("world", True)]
    assert parts("", [(0, 3)]) == []


def test_split_parts_spans_past_the_end():
    assert parts("hello world", [(6, 50)]) == [("hello ", False), ("world", True)]
    assert parts("hello world", [(20, 30)]) == [("hello world", False)]
    assert parts("hello world", [(11, 12)]) == [("hello world", False)]


def test_split_parts_overlaps_and_duplicates_highlight_the_union():
    for spans in ([(0, 5), (2, 8)], [(2, 8), (0, 5)], [(0, 8), (2, 5)], [(0, 5), (0, 5), (5, 8)]):
        got = render.split_parts("hello world", spans)
        assert "".join(p.text for p in got) == "hello world"
        assert "".join(p.text for p in got if p.hit) == "hello wo"
        assert all(p.text for p in got)
        assert got[-1] == render.Part("rld", False) and all(p.hit for p in got[:-1])


def test_split_parts_ignores_empty_spans():
    assert parts("hello world", [(3, 3)]) == [("hello world", False)]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(text=st.text(max_size=40),
       spans=st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50)).map(sorted).map(tuple), max_size=6))
def test_split_parts_property(text, spans):
    got = render.split_parts(text, spans)
    assert "".join(p.text for p in got) == text
    covered = {i for s, e in spans for i in range(s, min(e, len(text)))}
    pos = 0
    for p in got:
        for i in range(pos, pos + len(p.text)):
            assert (i in covered) == p.hit
        pos += len(p.text)


# -- trim ---------------------------------------------------------------------------------------

def test_trim_short_text_unchanged():
    assert render.trim("", 10) == ""
    assert render.trim("exactly10!", 10) == "exactly10!"
    assert render.trim("short", 700) == "short"


def test_trim_cuts_at_a_word_boundary_with_an_ellipsis():
    assert render.trim("one two three four", 10) == "one two…"
    assert render.trim("We study optimizers, and more", 22) == "We study optimizers…"  # ", " dropped too
    text = "lorem ipsum " * 100
    out = render.trim(text, 700)
    assert out.endswith("…") and len(out) <= 701
    assert text.startswith(out[:-1]) and text[len(out) - 1] == " "


def test_trim_hard_cuts_a_word_without_a_usable_space():
    assert render.trim("a" * 20, 10) == "a" * 10 + "…"
    assert render.trim("ab " + "c" * 20, 10) == "ab " + "c" * 7 + "…"


@settings(max_examples=500, deadline=None, derandomize=True)
@given(text=st.text(st.sampled_from("ab ,.;:é"), max_size=60), limit=st.integers(0, 60))
def test_trim_property(text, limit):
    out = render.trim(text, limit)
    if len(text) <= limit:
        assert out == text
        return
    assert out.endswith("…") and len(out) <= limit + 1
    kept = out[:-1]
    assert text.startswith(kept)
    if text.rfind(" ", 0, limit) > limit // 2:  # a usable space: the cut is at a word boundary
        assert text[len(kept)] in " ,;:."


# -- the text part ------------------------------------------------------------------------------

URL = re.compile(r"https?://\S+")


def long_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if len(line) > render.TEXT_WIDTH and not URL.search(line)]


def test_text_part_wraps_abstracts_and_short_titles(renderer):
    abstract = ("We study why the Adam optimizer needs a warmup phase and show that a simple rescaling of "
                "the second-moment estimate removes the need for it. " * 5)
    ed = edition([paper("Warmup-Free Adam", abstract), paper("Adam " + "short words " * 5, abstract)])
    out = renderer.render(ed)
    assert long_lines(out.text) == []
    assert out.text.endswith("\n") and not out.text.endswith("\n\n\n")
    assert "   Paper: https://arxiv.org/search/?query=Warmup-Free+Adam&searchtype=title" in out.text
    assert all(line.startswith("   ") for line in out.text.splitlines() if "rescaling" in line)


def test_text_title_lines_fit_78(renderer):
    title = "Adam " + " ".join(["optimizers"] * 6) + " and the learning rate free training recipe at scale"
    out = renderer.render(edition([paper(title, "x")]))
    assert collapse(title) in collapse(out.text)
    assert long_lines(out.text) == []


def test_text_reason_lines_fit_78(renderer):
    sub = Subscriber(email="grace@example.org", name="Grace", topics=("federated", "diffusion", "optimizers"),
                     query='"flow matching" OR phones')
    p = paper("Federated flow matching with Adam on phones",
              "A federated diffusion recipe: flow matching, an optimizer, phones.", digest_count=5)
    out = renderer.render(edition([p], sub))
    reasons = [line for line in out.text.splitlines() if line.startswith(("   topic ", "   your query"))]
    assert len(reasons) == 1
    assert long_lines("\n".join(reasons)) == []


def test_text_footer_lines_fit_78(renderer):
    sub = Subscriber(email="ada@example.org", name="Ada", topics=("optimizers",), query="learning rate")
    out = renderer.render(edition([paper("Adam", "x")], sub))
    assert long_lines(out.text) == []


def test_text_keeps_urls_in_abstracts_whole(renderer):
    url = "https://github.com/example-org/warmup-free-adam-optimizer-reference-implementation/tree/main"
    out = renderer.render(edition([paper("Warmup-Free Adam",
                                         f"We study the optimizer. Code and weights are at {url} for everyone.")]))
    assert any(url in line for line in out.text.splitlines())
