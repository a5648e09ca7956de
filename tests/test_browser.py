"""The email in a real headless Chromium: no sideways scrolling at 375 px, readable contrast in light and
dark mode, and `preview --png` through the CLI. Skipped without Chromium, except in CI."""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path

import pytest

from digestmail import browser, render

from digestmail.models import Subscriber

from .conftest import NOW, cli, trending, write_config
from .test_render_golden import CASES, make_edition, paper


@pytest.fixture(scope="module")
def chromium():
    if browser.find_chromium() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must run the browser tests, but no chromium was found (apt-get install chromium)")
        pytest.skip("no headless Chromium here (apt-get install chromium)")
    with browser.Chromium(timeout=60) as b:
        yield b


def worst_case() -> str:
    """Everything that could push a phone layout sideways: unbroken words and URLs, long chip rows."""
    long_word = "Supercalifragilisticexpialidocious" * 3
    url = "https://github.com/an-organisation-with-a-long-name/a-repository-with-an-even-longer-name/tree/main/src"
    papers = [
        paper(1, f"Adam {long_word} optimizer", f"The optimizer {long_word} {url} and 中文标题日本語中文标题日本語中文标题日本語.",
              authors=tuple(f"Author{'x' * 40}{i}" for i in range(6)), arxiv_id="2411.01234",
              github=url, project_page=url + "/page", upvotes=12345, digest_count=5),
        paper(2, "Flow matching, diffusion and the Adam optimizer, all at once", "Diffusion. " * 80,
              arxiv_id="2411.04321"),
    ]
    sub = Subscriber(email="a-very-long-address-for-testing@example.org", name="Ada " + "Lovelace" * 6,
                     topics=("optimizers", "diffusion", "people"), query='"flow matching" OR diffusion')
    return render.Renderer(sender_line="Sent by " + "A" * 80).render(make_edition(sub, papers)).html


OVERFLOW = """(() => {
  const width = document.documentElement.clientWidth;
  const wide = [];
  for (const el of document.body.querySelectorAll('*')) {
    const r = el.getBoundingClientRect();
    if (r.width > 0 && r.right > width + 0.5) wide.push(`${el.tagName}.${el.className} ends at ${Math.round(r.right)}`);
  }
  return {innerWidth, scrollWidth: document.documentElement.scrollWidth, wide: wide.slice(0, 5)};
})()"""

# WCAG 2 contrast of every visible text run against the background it is drawn on (layers composited).
CONTRAST = """(() => {
  const rgba = c => { const m = c.match(/rgba?\\(([^)]+)\\)/); if (!m) return null;
    const p = m[1].split(',').map(Number); return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1]; };
  const lum = c => 0.2126 * ch(c[0]) + 0.7152 * ch(c[1]) + 0.0722 * ch(c[2]);
  const ch = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
  const backdrop = el => { const layers = [];
    for (let e = el; e; e = e.parentElement) { const c = rgba(getComputedStyle(e).backgroundColor);
      if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; } }
    let out = [255, 255, 255];
    for (const c of layers.reverse()) out = out.map((v, k) => c[k] * c[3] + v * (1 - c[3]));
    return out; };
  const found = [];
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walk.nextNode()) {
    const node = walk.currentNode, el = node.parentElement;
    if (!node.textContent.trim() || el.closest('[aria-hidden="true"]')) continue;
    const r = el.getBoundingClientRect(), st = getComputedStyle(el);
    if (!r.width || !r.height || st.visibility === 'hidden' || st.opacity === '0') continue;
    const a = lum(rgba(st.color)), b = lum(backdrop(el));
    found.push([(Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05), node.textContent.trim().slice(0, 30), st.color, b]);
  }
  found.sort((x, y) => x[0] - y[0]);
  return {worst: found.slice(0, 3), on_light: found.filter(f => f[3] > 0.4).map(f => f[1]),
          on_dark: found.filter(f => f[3] < 0.1).map(f => f[1])};
})()"""


def open_html(chromium: browser.Chromium, tmp_path: Path, markup: str, width: int, dark: bool = False):
    path = tmp_path / f"email-{width}-{dark}.html"
    path.write_text(markup, encoding="utf-8")
    return chromium.open(path.as_uri(), width, dark=dark)


def without_style_blocks(markup: str) -> str:
    """As a client that drops <style> shows it: only the inline styles and attributes are left."""
    return re.sub(r"<style[^>]*>.*?</style>", "", markup, flags=re.S)


@pytest.mark.parametrize("width", [375, 600])
@pytest.mark.parametrize("mode", ["light", "dark", "no-style-block"])
def test_no_horizontal_scrolling(chromium, tmp_path, width, mode):
    markup = worst_case()
    if mode == "no-style-block":
        markup = without_style_blocks(markup)
        assert "<style" not in markup
    page = open_html(chromium, tmp_path, markup, width, mode == "dark")
    try:
        found = page.evaluate(OVERFLOW)
    finally:
        page.close()
    assert found["innerWidth"] == width  # the viewport really is that narrow
    assert found["scrollWidth"] <= width and found["wide"] == [], found


@pytest.mark.parametrize("name", ["ada", "hostile", "overflow"])
@pytest.mark.parametrize("mode", ["light", "dark", "no-style-block"])
def test_every_text_has_aa_contrast(chromium, tmp_path, name, mode):
    renderer, ed = CASES[name]()
    markup = renderer.render(ed).html
    page = open_html(chromium, tmp_path, without_style_blocks(markup) if mode == "no-style-block" else markup,
                     375, mode == "dark")
    try:
        found = page.evaluate(CONTRAST)
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    finally:
        page.close()
    assert found["worst"] and found["worst"][0][0] >= 4.5, found["worst"]
    assert (background == "rgb(17, 19, 24)") == (mode == "dark")  # the dark palette applies in dark mode only
    # Every text sits on the palette of its mode: no light chip or card left over in dark mode.
    assert (found["on_dark"] if mode != "dark" else found["on_light"]) == []


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def preview_setup(tmp_path: Path) -> Path:
    config = write_config(tmp_path, '[topics]\nx = "robots"\n[[subscribers]]\nemail = "a@example.org"\n'
                                    'name = "Ann"\ntopics = ["x"]\n')
    (tmp_path / "inbox" / "d.txt").write_text(trending("Nov 20", [
        ("Robots That Cook", "We cook with robots. Code at https://github.com/example/robots-that-cook."),
        ("Robots That Clean", "Cleaning robots, at last.")]))
    assert cli("--config", config, "--now", NOW, "ingest").returncode == 0
    return config


def test_preview_png_through_the_cli(chromium, tmp_path):
    config = preview_setup(tmp_path)
    result = cli("--config", config, "--now", NOW, "preview", "a@example.org", "--out", tmp_path / "pv", "--png")
    assert result.returncode == 0, result.stderr
    stem = tmp_path / "pv" / "preview-a@example.org"
    for width in (600, 375):
        for suffix in ("", "-dark"):
            png = Path(f"{stem}.{width}{suffix}.png")
            w, h = png_size(png)
            assert w == width and h > 600, (png.name, w, h)  # the whole page, not one screenful
            assert f"wrote {png}" in result.stdout
    assert (tmp_path / "pv" / "preview-a@example.org.html").is_file()


def test_preview_png_without_chromium_says_how_to_install_it(tmp_path):
    config = preview_setup(tmp_path)
    result = cli("--config", config, "--now", NOW, "preview", "a@example.org", "--out", tmp_path / "pv", "--png",
                 env={"DIGESTMAIL_CHROMIUM": str(tmp_path / "no-such-chromium")})
    assert result.returncode == 2
    assert "apt-get install chromium" in result.stderr and "Traceback" not in result.stderr
    names = sorted(p.name for p in (tmp_path / "pv").iterdir())
    assert names == ["preview-a@example.org.eml", "preview-a@example.org.html", "preview-a@example.org.txt"]
