"""The email looks the same as it did before the renderer was made faster.

The reference is the renderer as it was (tests/look/: the templates of that time,
compiled the way they were: MJML, then every style inlined, then Jinja), fed the same
context the renderer builds now. The email under test is the HTML part as a mail
client gets it: taken out of the MIME bytes and decoded. Both are screenshotted in
Debian's chromium at 600 and 375 px, light and dark, whole pages, and compared pixel
by pixel (in the browser's canvas, so no image library is needed). The links a reader
can follow are compared too.
"""

from __future__ import annotations

import base64
import datetime as dt
import email
import email.policy
from pathlib import Path
from typing import Any

import css_inline
import jinja2
import mjml
import pytest

from newsletter.config import RenderConfig, WebConfig
from newsletter.render.compile import _expand
from newsletter.render.renderer import Recipient
from newsletter.render.samples import (
    DAY,
    SampleSet,
    hostile_papers,
    sample_papers,
    sample_subscribers,
)
from newsletter.render.screenshots import screenshot_file

pytestmark = pytest.mark.slow

REFERENCE = Path(__file__).parent / "look" / "templates"
SHOTS = [(600, "light"), (375, "light"), (600, "dark"), (375, "dark")]

DIFF_JS = """async ([a, b]) => {
  const load = src => new Promise((ok, bad) => {
    const i = new Image(); i.onload = () => ok(i); i.onerror = bad; i.src = src; });
  const [x, y] = await Promise.all([load(a), load(b)]);
  if (x.width !== y.width || x.height !== y.height)
    return {size: [x.width, x.height, y.width, y.height], n: -1};
  const c = document.createElement('canvas');
  c.width = x.width; c.height = x.height;
  const g = c.getContext('2d', {willReadFrequently: true});
  g.drawImage(x, 0, 0);
  const p = g.getImageData(0, 0, c.width, c.height).data;
  g.clearRect(0, 0, c.width, c.height);
  g.drawImage(y, 0, 0);
  const q = g.getImageData(0, 0, c.width, c.height).data;
  let n = 0, top = -1, bottom = -1;
  for (let i = 0; i < p.length; i += 4) {
    if (p[i] !== q[i] || p[i + 1] !== q[i + 1] || p[i + 2] !== q[i + 2] || p[i + 3] !== q[i + 3]) {
      n++; const row = Math.floor(i / 4 / c.width);
      if (top < 0) top = row; bottom = row;
    }
  }
  return {n, top, bottom, size: [x.width, x.height]};
}"""


def reference_template() -> jinja2.Template:
    """The digest template compiled as it was: MJML, all styles inlined, then Jinja."""
    source = "\n".join(text for _, text, _ in _expand(REFERENCE, "digest.mjml"))
    html = mjml.mjml2html(source, disable_comments=True, fonts={})
    html = css_inline.CSSInliner(keep_style_tags=True, load_remote_stylesheets=False
                                 ).inline(html)
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True)
    return env.from_string(html)


def html_part(data: bytes) -> str:
    msg = email.message_from_bytes(data, policy=email.policy.strict)
    part = msg.get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content())


def cases() -> dict[str, tuple[SampleSet, Recipient]]:
    web = WebConfig(base_url="https://papers-digest.net")
    rows = sample_papers()
    for i, r in enumerate(rows):  # some listed as featured by their source (the meta line)
        if i % 4 == 0:
            r.featured = DAY - dt.timedelta(days=(i // 4) % 2)
    sample = SampleSet(rows, web=web)
    mallory = Recipient(7, "mallory@example.org", "Mallory <x>",
                        "attention, author:\"Eve O'Hara\"")
    return {
        "sample": (sample, sample_subscribers()[0]),
        "trending": (sample, Recipient(99, "nobody@example.org", "Nobody",
                                       "medieval falconry")),
        "thumbnails": (SampleSet(hostile_papers(), web=web,
                                 render=RenderConfig(images="remote")), mallory),
    }


def links(browser: Any, page_file: Path) -> list[tuple[str, str]]:
    page = browser.new_page()
    try:
        page.route("**/*", lambda route: route.abort()
                   if not route.request.url.startswith("file:") else route.continue_())
        page.goto(page_file.resolve().as_uri())
        return [tuple(x) for x in page.eval_on_selector_all(
            "a[href]", "els => els.map(e => [e.href, e.innerText])")]
    finally:
        page.close()


def pixel_diff(browser: Any, a: Path, b: Path) -> dict[str, Any]:
    page = browser.new_page()
    try:
        urls = ["data:image/png;base64," + base64.b64encode(p.read_bytes()).decode()
                for p in (a, b)]
        return dict(page.evaluate(DIFF_JS, urls))
    finally:
        page.close()


# "thumbnails" is the hostile digest (hostile titles, authors, links) with images on
@pytest.mark.parametrize("name", ["sample", "trending", "thumbnails"])
def test_email_looks_as_before(browser: Any, tmp_path: Path, name: str) -> None:
    sample, who = cases()[name]
    picks, explanations, trending = sample.choose(who)
    context = sample.renderer.context(who, picks, explanations, trending)
    before = tmp_path / "before.html"
    before.write_text(reference_template().render(context), encoding="utf-8")
    after = tmp_path / "after.html"
    rendered = sample.renderer.render(who, picks, explanations, trending)
    after.write_text(html_part(rendered.message.data), encoding="utf-8")
    assert len(links(browser, after)) >= 8
    assert links(browser, after) == links(browser, before)
    for width, scheme in SHOTS:
        shots = [screenshot_file(browser, f, tmp_path / f"{f.stem}-{width}-{scheme}.png",
                                 width=width, scheme=scheme) for f in (before, after)]
        diff = pixel_diff(browser, *shots)
        assert diff["n"] == 0, f"{name} at {width} px, {scheme}: {diff}"
