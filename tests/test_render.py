"""digestmail.render: escaping, compile-once soundness, highlighting, trimming and text layout."""

from __future__ import annotations

import dataclasses
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
    # One card: its title and its "Paper" link.
    assert out.html.count("https://arxiv.org/search/?query=Adam+one&amp;searchtype=title") == 2
    assert "{%" not in out.html and "{{" not in out.html


# -- highlighting ---------------------------------------------------------------------------------

def hit(tag: str, word: str) -> str:
    """A highlighted word: its own element with a background colour (attributes in any order)."""
    return rf'<{tag} [^>]*style="[^"]*background-color[^"]*"[^>]*>{word}</{tag}>'


def test_matched_words_are_highlighted(renderer):
    out = renderer.render(edition([paper("Warmup-Free Adam: Stable Training",
                                         "We study why the optimizer needs warmup; adam again.")]))
    assert re.search(hit("span", "Adam"), out.html)
    assert re.search(hit("strong", "optimizer"), out.html)
    assert re.search(hit("strong", "adam"), out.html)
    assert not re.search(r"<(span|strong)[^>]*>(Warmup|Stable|study|warmup)", out.html)
    assert re.search(r'<span class="dm-topic"[^>]*>optimizers</span>', out.html)  # the topic's chip
    assert "topic optimizers: Adam, optimizer" in out.text


def test_highlight_uses_the_paper_spelling_and_plural(renderer):
    out = renderer.render(edition([paper("Optimizers compared", "Two ADAM variants")]))
    assert re.search(hit("span", "Optimizers"), out.html)
    assert re.search(hit("strong", "ADAM"), out.html)


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


# -- the card: links, authors, chips ------------------------------------------------------------

def rich(title: str = "Warmup-Free Adam", abstract: str = "We study the Adam optimizer.", **kw) -> Paper:
    pid = next(_ids)
    return Paper(id=pid, key=f"key-{pid}", title=title, abstract=abstract, first_seen=NOW, **kw)


def hrefs(markup: str) -> list[str]:
    return [html.unescape(h) for h in re.findall(r'href="([^"]*)"', markup)]


def test_arxiv_papers_link_to_the_abstract_page_and_the_pdf(renderer):
    out = renderer.render(edition([rich(arxiv_id="2411.01234")]))
    assert "https://arxiv.org/abs/2411.01234" in hrefs(out.html) and "https://arxiv.org/pdf/2411.01234" in hrefs(out.html)
    assert not any("arxiv.org/search" in h for h in hrefs(out.html))
    assert "   Paper: https://arxiv.org/abs/2411.01234\n   PDF: https://arxiv.org/pdf/2411.01234" in out.text


def test_code_and_project_links_from_the_digest_and_the_abstract(renderer):
    abstract = ("We study the Adam optimizer. Code: https://github.com/org/repo. Weights at "
                "(https://huggingface.co/org/model), docs https://example.org/docs, page https://org.github.io/p/.")
    p = rich(abstract=abstract, arxiv_id="2411.01234", github="https://github.com/org/repo/",
             project_page="https://project.example.org")
    out = renderer.render(edition([p]))
    links = render.paper_links(p, [u for _, _, u in render.find_urls(abstract)])
    assert [(l.label, l.url) for l in links] == [
        ("Paper", "https://arxiv.org/abs/2411.01234"), ("PDF", "https://arxiv.org/pdf/2411.01234"),
        ("Code", "https://github.com/org/repo/"), ("Code 2", "https://huggingface.co/org/model"),
        ("Project page", "https://project.example.org")]
    for url in ("https://github.com/org/repo", "https://huggingface.co/org/model", "https://example.org/docs"):
        assert url in hrefs(out.html)  # every http(s) URL in the abstract is a link, without its punctuation
    assert "   Code 2: https://huggingface.co/org/model\n   Project page: https://project.example.org" in out.text
    no_page = rich(abstract=abstract)
    assert render.paper_links(no_page, [u for _, _, u in render.find_urls(abstract)])[-1] == \
        render.Link("Project page", "https://org.github.io/p/")


@pytest.mark.parametrize("bad", ["javascript:alert(1)", "JaVaScRiPt:alert(1)", "data:text/html,<b>x</b>",
                                 "vbscript:msgbox", "ftp://example.org/x", "//evil.example.org/x"])
def test_only_http_urls_become_links(renderer, bad):
    p = rich(abstract=f"We study the Adam optimizer: {bad} and more.", github=bad, project_page=bad)
    out = renderer.render(edition([p]))
    assert all(h.startswith(("https://", "http://", "mailto:")) for h in hrefs(out.html)), hrefs(out.html)
    assert collapse(f"{bad} and more.") in collapse(visible(out.html))
    assert f"Code: {bad}" not in out.text and f"Project page: {bad}" not in out.text


def test_long_author_lists_are_shortened_keeping_matched_authors():
    authors = ("Ada Lovelace", "Grace Hopper", "Alan Turing", "Edsger Dijkstra", "Barbara Liskov", "Geoffrey Hinton")
    joined = ", ".join(authors)
    assert render.short_authors(authors, [])[0] == "Ada Lovelace, Grace Hopper, Alan Turing et al."
    assert render.short_authors(authors[:4], [])[0] == ", ".join(authors[:4])
    start = joined.index("Hinton")
    text, parts = render.short_authors(authors, [(start, start + 6)])
    assert text == "Ada Lovelace, Grace Hopper, Alan Turing, …, Geoffrey Hinton"
    assert [p.text for p in parts if p.hit] == ["Hinton"]
    start = joined.index("Dijkstra")
    assert render.short_authors(authors, [(start, start + 8)])[0] == \
        "Ada Lovelace, Grace Hopper, Alan Turing, Edsger Dijkstra et al."
    assert render.short_authors((), []) == ("", [])


def test_author_rules_highlight_the_author(renderer):
    authors = ("Ada Lovelace", "Grace Hopper", "Alan Turing", "Edsger Dijkstra", "Barbara Liskov", "Geoffrey Hinton")
    sub = Subscriber(email="h@example.org", query="author:hinton")
    out = renderer.render(edition([rich(title="Capsules", abstract="Routing.", authors=authors)], sub))
    assert re.search(hit("span", "Hinton"), out.html)
    assert "Ada Lovelace, Grace Hopper, Alan Turing, …, Geoffrey Hinton" in collapse(visible(out.html))
    assert "   Ada Lovelace, Grace Hopper, Alan Turing, …, Geoffrey Hinton\n" in out.text


def test_chips_name_the_topics_your_query_trending_and_upvotes(renderer):
    sub = Subscriber(email="g@example.org", topics=("optimizers",), query="warmup")
    out = renderer.render(edition([rich(abstract="Adam without warmup.", digest_count=3, upvotes=42)], sub))
    chips = re.findall(r'<span class="dm-(topic|query|trending|upvotes)"[^>]*>(?:<span aria-hidden="true">[^<]*</span>)?'
                       r'([^<]*)</span>', out.html)
    assert chips == [("topic", "optimizers"), ("query", "your query"), ("trending", "trending · in 3 digests"),
                     ("upvotes", "42 upvotes")]
    assert "topic optimizers: Adam · your query: Warmup · trending in 3 digests · 42 upvotes" in collapse(out.text)
    assert "\n     42 upvotes\n" in out.text  # wrapped between the items, never inside one


def test_abstract_chars_and_the_footer_links_are_configurable():
    r = render.Renderer(title="Lab Papers", abstract_chars=120, unsubscribe_url="https://x.example.org/u?e={email}",
                        manage_url="mailto:papers@example.org?subject=topics")
    long_abstract = "We study the Adam optimizer in depth. " * 20
    out = r.render(edition([paper("Adam", long_abstract)], Subscriber(email="a+b@example.org", topics=("optimizers",))))
    shown = collapse(visible(out.html))
    assert "Lab Papers" in shown and "We study the Adam optimizer in depth. We study the Adam optimizer" in shown
    assert len(max(re.findall(r"We study[^…]*…", shown), key=len)) <= 121
    assert "https://x.example.org/u?e=a%2Bb@example.org" in hrefs(out.html)
    assert "mailto:papers@example.org?subject=topics" in hrefs(out.html)
    assert "Unsubscribe: https://x.example.org/u?e=a%2Bb@example.org" in out.text
    given = r.render(edition([paper("Adam", "x")]), unsubscribe_url="https://real.example.org/u/TOKEN")
    assert "https://real.example.org/u/TOKEN" in hrefs(given.html) and "x.example.org" not in given.html


def test_the_footer_says_why_in_words(renderer):
    both = Subscriber(email="g@example.org", topics=("optimizers", "federated", "diffusion"), query='"one step"')
    out = renderer.render(edition([paper("Adam", "x")], both))
    assert ('You get this email because you follow the topics “optimizers”, “federated” and “diffusion”, and '
            'your own query ("one step").') in collapse(visible(out.html))
    only = renderer.render(edition([paper("Adam", "x")], ADA))
    assert "you follow the topic “optimizers”." in collapse(only.text)


# -- size: Gmail clips beyond 102 KB --------------------------------------------------------------

GMAIL_CLIP = 102 * 1024


def long_paper(i: int) -> Paper:
    words = " ".join(f"word{j}" for j in range(150))
    return rich(title=f"Adam variant number {i} with a long and descriptive title about optimizers",
                abstract=f"We study the Adam optimizer, variant {i}. {words} https://github.com/org/repo{i}",
                authors=tuple(f"Author {i}-{k}" for k in range(8)), arxiv_id=f"2411.{i:05d}", upvotes=i,
                digest_count=2)


def test_sixty_papers_stay_under_gmail_clipping_with_an_overflow_list(renderer):
    from digestmail import message

    papers = [long_paper(i) for i in range(60)]
    out = renderer.render(edition(papers))
    assert len(out.html.encode()) < GMAIL_CLIP
    assert message.html_size(out.html) < GMAIL_CLIP  # even as sent, base64
    shown = collapse(visible(out.html))
    cards = out.html.count('<h2 class="dm-ink" dir="auto"')
    assert 10 <= cards < 60
    assert f"And {60 - cards} more papers" in shown
    # Best first: the cards are the first papers, the list holds the rest, in order.
    positions = [shown.index(f"Adam variant number {i} with") for i in range(60)]
    assert positions == sorted(positions)
    assert "…" in shown and "word140" not in shown  # abstracts were cut before papers were moved
    assert out.subject.startswith("60 new papers for you")
    assert "And" in out.text and f"\n{cards + 1}. Adam variant number {cards} with" in out.text
    assert len(re.findall(r"^\d+\. ", out.text, re.M)) == 60
    assert long_lines(out.text) == []


def test_three_papers_keep_their_full_abstracts(renderer):
    papers = [long_paper(i) for i in range(3)]
    out = renderer.render(edition(papers))
    shown = html.unescape(re.sub(r"<[^>]*>", "", out.html))  # tags dropped, not spaced: runs stay joined
    assert "more papers" not in shown and out.html.count('<h2 class="dm-ink" dir="auto"') == 3
    for p in papers:
        assert render.trim(p.abstract, render.ABSTRACT_CHARS) in shown


def test_even_the_title_list_is_cut_when_it_cannot_fit():
    tiny = render.Renderer(html_limit=20_000)
    out = tiny.render(edition([long_paper(i) for i in range(60)]))
    assert render.sent_size(out.html) <= 20_000
    assert "And 59 more papers" in collapse(visible(out.html)) and "more not listed here" in out.html


def test_sent_size_is_the_base64_size_as_sent():
    import base64

    from digestmail import message

    for text in ("plain <a href=\"x\">ascii</a>\n" * 500, "中文标题 日本語 = é" * 800, "🎉=" * 3000, "x"):
        body = message._lines76(message.base64_body(text))
        assert render.sent_size(text) == len(body)
        assert base64.b64decode(body).decode("utf-8") == text


# -- the same bytes, cheaper ------------------------------------------------------------------------

WRAP_WORDS = st.sampled_from(["a", "bb", "optimizer", "x" * 30, "https://github.com/org/a-very-long-repository-name",
                              "well-known", "é", "🎉", "\0", "-", " ", "  ", "\t", "\n", "\xa0", "\u3000", "\x1c"])


@settings(max_examples=1000, deadline=None, derandomize=True)
@given(words=st.lists(WRAP_WORDS, max_size=40), indent=st.sampled_from(["", " ", "   ", "     " * 3]),
       hang=st.sampled_from(["", "   ", "     "]), width=st.integers(1, 90))
def test_wrap_is_textwrap_fill(words, indent, hang, width):
    import textwrap

    text = "".join(words)
    expected = textwrap.fill(re.sub(r"\s+", " ", text).strip(), width, initial_indent=indent,
                             subsequent_indent=hang, break_on_hyphens=False, break_long_words=False)
    assert render.wrap(text, indent, hang, width) == expected


def test_printable_text_has_no_whitespace_but_spaces():
    # wrap() skips the whitespace regex for printable text on this ground.
    assert [c for c in map(chr, range(0x110000)) if c.isprintable() and c != " " and re.match(r"\s", c)] == []


@settings(max_examples=300, deadline=None, derandomize=True)
@given(text=st.text(max_size=30),
       spans=st.lists(st.tuples(st.integers(-5, 40), st.integers(-5, 40)), max_size=6))
def test_spans_with_the_same_merge_split_the_same(text, spans):
    merged = render.merge_spans(spans, len(text))
    assert render.split_parts(text, merged) == render.split_parts(text, spans)
    assert render.merge_spans(merged, len(text)) == merged
    assert all(0 <= s < e <= len(text) for s, e in merged)
    assert all(a[1] < b[0] for a, b in zip(merged, merged[1:]))  # apart: touching ones were merged


def plain_html(renderer: render.Renderer) -> jinja2.Template:
    """The HTML template as Jinja compiles it, without the memoised loops or the cheaper escape."""
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(mjml.mjml2html(renderer.html_source, disable_comments=True, fonts={}))


SHARED_PAPERS = [
    rich(title="Adam for federated diffusion", abstract="An optimizer for federated diffusion. " * 20,
         authors=("Ada Lovelace", "Grace Hopper"), arxiv_id="2411.00002", upvotes=3, digest_count=2),
    rich(title="Flow matching <fast> & federated", abstract="Flow matching with adam: https://x.org/a-b. " * 5),
    rich(title="Optimizers compared", abstract="We compare the Adam optimizer \"and\" federated ones."),
]
SHARED_READERS = [Subscriber(email=f"r{i}@example.org", name=f"R {i}", topics=topics) for i, topics in enumerate(
    [("optimizers",), ("federated",), ("optimizers", "federated"), ("diffusion", "federated", "optimizers"),
     ("optimizers",), ("federated",)])]


def shared_editions() -> list[Edition]:
    out = []
    for sub in SHARED_READERS:
        selector = select.Selector(TOPICS, PaperIndex(SHARED_PAPERS), NOW)
        picks = tuple(Pick(p, m) for p in SHARED_PAPERS if (m := selector.explain(sub, p)).topics)
        out.append(Edition(sub, 1, picks, NOW, select.edition_key(sub.email, NOW)))
    return out


def test_loops_over_shared_pieces_render_once_and_the_same():
    r = render.Renderer(sender_line="x")
    plain = plain_html(r)
    for ed in shared_editions() * 2:  # the second time round, every shared piece's HTML is kept
        ctx = r.context(ed)
        assert r.html.render(ctx) == plain.render(ctx)
    kept = [p for p in ctx["papers"] if p.links.html and p.title_parts.html and p.abstract_parts.html]
    assert kept, "nothing was memoised: the test above would prove nothing"


def test_templates_get_their_globals_as_a_dict_and_render_the_same():
    # Each template's globals are a dict copy of Jinja's ChainMap (a cheaper context per render): the
    # same names and values, and the same output as the templates Jinja makes itself.
    r = render.Renderer(sender_line="x")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(render.default_templates())), autoescape=False,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=False)
    for ed in shared_editions():
        ctx = r.context(ed, unsubscribe_url="https://x.org/u", manage_url="https://x.org/m")
        assert r.text.render(ctx) == env.get_template(render.TEXT_TEMPLATE).render(ctx)
        assert r.subject.render(ctx) == env.get_template(render.SUBJECT_TEMPLATE).render(ctx)
        assert r.html.render(ctx) == plain_html(r).render(ctx)
    for template in (r.html, r.text, r.subject):
        assert type(template.globals) is dict and template.globals == dict(env.make_globals(None))


@pytest.mark.parametrize("loop, pure", [
    ("{% for part in paper.title_parts %}{{ part.text | upper }}{% endfor %}", True),
    ("{% for part in paper.title_parts %}{{ loop.index }}{% if part.hit %}<b>{% endif %}{% endfor %}", True),
    ("{% for a, b in paper.pairs %}{{ a }}{{ b.x }}{% else %}none{% endfor %}", True),
    ("{% for p in paper.parts if p.hit %}{% for c in p.text %}{{ c }}{% endfor %}{% endfor %}", True),
    ("{% for part in paper.title_parts %}{{ subscriber.email }}{% endfor %}", False),
    ("{% for part in paper.title_parts %}{{ paper.url }}{% endfor %}", False),
    ("{% for part in paper.title_parts %}{{ loop.cycle('a', 'b') }}{% endfor %}", False),
    ("{% for part in paper.title_parts %}{{ [1, 2] | random }}{% endfor %}", False),
    ("{% for part in paper.title_parts %}{% set x = part.text %}{{ x }}{% endfor %}", False),
    ("{% for part in paper.title_parts %}{{ part.text }}{% else %}{{ title }}{% endfor %}", False),
    ("{% for p in paper.parts %}{% for c in p.chars %}{% endfor %}{{ c }}{% endfor %}", False),
    ("{% for p in paper.parts if loop.index %}{% endfor %}", False),
    ("{% for p in paper.parts recursive %}{{ loop(p.children) }}{% endfor %}", False),
])
def test_only_loops_that_depend_on_their_items_alone_are_memoised(loop, pure):
    outer = next(jinja2.Environment(autoescape=True).parse(loop).find_all(jinja2.nodes.For))
    assert render._pure_loop(outer) == pure


def test_a_loop_that_shows_the_subscriber_is_rendered_for_each(tmp_path):
    (tmp_path / "digest.mjml.j2").write_text(
        "<mjml><mj-body><mj-section><mj-column><mj-raw>{% for paper in papers %}</mj-raw><mj-text>"
        "{% for part in paper.title_parts %}[{{ part.text }}|{{ subscriber.email }}]{% endfor %}"
        "{% for link in paper.links %}({{ link.label }}){% endfor %}"
        "</mj-text><mj-raw>{% endfor %}</mj-raw></mj-column></mj-section></mj-body></mjml>", encoding="utf-8")
    r = render.Renderer(tmp_path)
    plain = plain_html(r)
    for ed in shared_editions() * 2:
        ctx = r.context(ed)
        out = r.html.render(ctx)
        assert out == plain.render(ctx)
        shown = re.findall(r"\|(r\d@example\.org)\]", out)
        assert shown and set(shown) == {ed.subscriber.email}
    assert all(p.links.html and not p.title_parts.html for p in ctx["papers"])  # the pure loop only


def test_a_template_that_names_the_memo_variables_is_left_as_written(tmp_path):
    (tmp_path / "digest.mjml.j2").write_text(
        "<mjml><mj-body><mj-section><mj-column><mj-raw>{% set _dm_html = 'mine' %}{% for paper in papers %}"
        "</mj-raw><mj-text>{% for link in paper.links %}{{ link.label }}{% endfor %}{{ _dm_html }}</mj-text>"
        "<mj-raw>{% endfor %}</mj-raw></mj-column></mj-section></mj-body></mjml>", encoding="utf-8")
    r = render.Renderer(tmp_path)
    for ed in shared_editions() * 2:
        ctx = r.context(ed)
        assert r.html.render(ctx) == plain_html(r).render(ctx)
        assert "mine" in r.html.render(ctx)


# -- templates an admin overrides ---------------------------------------------------------------

def test_an_override_folder_replaces_only_the_templates_it_has(tmp_path):
    (tmp_path / "subject.txt.j2").write_text("{{ title }}: {{ count }} for {{ subscriber.email }}", encoding="utf-8")
    r = render.Renderer(tmp_path, title="Lab")
    out = r.render(edition([paper("Adam", "x")]))
    assert out.subject == "Lab: 1 for ada@example.org"
    assert "1. Adam" in out.text and "<mj-" not in out.html and "Adam" in visible(out.html)


def test_an_override_can_show_the_terms_and_reason_of_a_match_of_several_topics(tmp_path):
    # paper.terms is merged from the topics' hits only when a template reads it.
    (tmp_path / "subject.txt.j2").write_text(
        "{% for p in papers %}{{ p.terms|join(',') }}|{{ p.reason }}{% endfor %}", encoding="utf-8")
    r = render.Renderer(tmp_path)
    both = Subscriber(email="ada@example.org", name="Ada", topics=("optimizers", "federated"))
    ed = edition([paper("Federated Adam", "An optimizer for federated training.")], both)
    (pick,) = ed.picks
    assert pick.match.topics == ("optimizers", "federated")
    assert r.render(ed).subject == ("federated,adam,optimizer|topic optimizers: Adam, optimizer"
                                    " · topic federated: Federated")


def test_a_broken_override_fails_at_start_naming_the_file(tmp_path):
    from digestmail.errors import ConfigError

    (tmp_path / "digest.txt.j2").write_text("{{ papers[0].no_such_variable }}", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        render.Renderer(tmp_path)
    assert "no_such_variable" in str(err.value) and "digest.txt.j2" in str(err.value)
    (tmp_path / "digest.txt.j2").unlink()
    (tmp_path / "digest.mjml.j2").write_text("<mjml><mj-body><mj-section>", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        render.Renderer(tmp_path)
    assert "digest.mjml.j2" in str(err.value)


def test_every_template_variable_is_documented(renderer):
    from .conftest import ROOT

    doc = (ROOT / "docs" / "templates.md").read_text(encoding="utf-8")
    p = rich(authors=("A",), arxiv_id="2411.00001", github="https://github.com/o/r")
    ctx = renderer.context(edition([p]))
    for key in ctx:
        assert f"`{key}`" in doc, key
    for key in ctx["subscriber"]:
        assert f"`subscriber.{key}`" in doc, key
    view = ctx["papers"][0]
    properties = [name for name, value in vars(type(view)).items() if isinstance(value, property)]
    assert "terms" in properties  # made when read
    for key in [*vars(view), *properties]:
        if not key.startswith("_"):  # the view's own
            assert f"`paper.{key}`" in doc, key
    for name, cls in (("part", render.Part), ("link", render.Link), ("chip", render.Chip)):
        for field in cls._fields if issubclass(cls, tuple) else [f.name for f in dataclasses.fields(cls)]:
            assert f"`{name}.{field}`" in doc, f"{name}.{field}"


def test_the_preheader_is_hidden_but_not_low_contrast(renderer):
    out = renderer.render(edition([paper("Adam first", "x"), paper("Adam second", "y")]))
    body = out.html.partition("<body")[2]
    m = re.search(r'<div style="display:none;[^"]*">([^<]*)</div>', body)
    assert m and m.group(1) == "Adam first; Adam second"
    assert "color:#ffffff" not in m.group(0)  # white on the grey page: SpamAssassin's HTML_FONT_LOW_CONTRAST


def test_control_characters_never_reach_the_email(renderer):
    title = "Adam \x1b[31mred\x1b[0m and \x00 nul \x7f del \x9b csi"
    out = renderer.render(edition([paper(title, "The \x1b[2J optimizer \x07 rings.")]))
    for part in (out.subject, out.html, out.text):
        assert not re.search("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]", part)
    assert out.subject == "1 new paper for you: Adam [31mred [0m and nul del csi"
    assert re.search(hit("span", "Adam"), out.html) and re.search(hit("strong", "optimizer"), out.html)


# -- [render] in the config ---------------------------------------------------------------------

RENDER_BASE = '[delivery]\nfrom = "Papers <papers@example.org>"\n'


def load_render(tmp_path, table: str):
    from digestmail.config import load_config

    path = tmp_path / "c.toml"
    path.write_text(RENDER_BASE + "[render]\n" + table, encoding="utf-8")
    return load_config(path)


def test_render_settings_default_to_mailto_placeholders(tmp_path):
    settings = load_render(tmp_path, "").render
    assert settings.title == "Trending Papers" and settings.templates is None
    assert settings.abstract_chars == render.ABSTRACT_CHARS
    assert settings.unsubscribe_url == "mailto:papers@example.org?subject=unsubscribe"
    assert settings.manage_url.startswith("mailto:papers@example.org?subject=")
    (tmp_path / "mine").mkdir()
    settings = load_render(tmp_path, 'templates = "mine"\nabstract_chars = 300\n'
                                     'unsubscribe_url = "https://p.example.org/u?e={email}"\n').render
    assert settings.templates == tmp_path / "mine" and settings.abstract_chars == 300
    assert settings.unsubscribe_url == "https://p.example.org/u?e={email}"


@pytest.mark.parametrize("table, key, words", [
    ('templates = "nowhere"\n', "render.templates", "does not exist"),
    ("abstract_chars = 20\n", "render.abstract_chars", "at least 100"),
    ('abstract_chars = "long"\n', "render.abstract_chars", "must be an integer"),
    ('unsubscribe_url = "javascript:alert(1)"\n', "render.unsubscribe_url", "not an https, http or mailto URL"),
    ('manage_url = "https://x.example.org/a b"\n', "render.manage_url", "not an https, http or mailto URL"),
    ('title = "Papers\\r\\nBcc: x@y.org"\n', "render.title", "control character"),
    ('title = "  "\n', "render.title", "cannot be empty"),
    ('titel = "x"\n', "render.titel", "did you mean render.title"),
])
def test_render_settings_errors_name_the_key(tmp_path, table, key, words):
    from digestmail.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        load_render(tmp_path, table)
    assert f"c.toml: {key}" in str(err.value) and words in str(err.value)


def test_preview_uses_the_render_settings(tmp_path):
    from .conftest import NOW, cli, trending, write_config

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "subject.txt.j2").write_text("[{{ title }}] {{ papers[0].title }}", encoding="utf-8")
    config = write_config(tmp_path, '[render]\ntitle = "Lab Papers"\ntemplates = "mine"\nabstract_chars = 100\n'
                                    '[topics]\nx = "robots"\n[[subscribers]]\nemail = "a@example.org"\ntopics = ["x"]\n')
    (tmp_path / "inbox" / "d.txt").write_text(trending("Nov 20", [("Robots That Cook", "We cook with robots. " * 20)]))
    assert cli("--config", config, "--now", NOW, "ingest").returncode == 0
    result = cli("--config", config, "--now", NOW, "preview", "a@example.org", "--out", tmp_path / "pv")
    assert result.returncode == 0, result.stderr
    assert "subject: [Lab Papers] Robots That Cook" in result.stdout
    page = (tmp_path / "pv" / "preview-a@example.org.html").read_text(encoding="utf-8")
    assert "Lab Papers" in page and "mailto:papers@example.org?subject=unsubscribe" in page
    assert len(max(re.findall(r"We cook[^<]*…", page), key=len)) <= 101
