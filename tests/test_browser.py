"""How the emails look, in Debian's chromium driven by Playwright (never a downloaded
browser): every link present, nothing overflowing at 600 px and at 375 px, dark mode."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from .editions_support import run_preview

DAY = dt.date(2025, 12, 26)


@pytest.fixture
def previews(world, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    settings, engine = world
    from newsletter.store import subscribers
    from newsletter.store.db import session_scope

    hostile = ("<script>alert(1)</script> " + "Unbreakable" * 300 + " tokens attention, "
               "تعلم الآلة, 🚀")
    with session_scope(engine) as s:
        subscribers.add(s, "hostile@example.org", keywords=hostile[:190].replace(",", " ")
                        .replace("<", "").replace(">", "") + ", attention")
    out = tmp_path / "preview"
    run_preview(settings, engine, DAY, out)
    return out


def offline_guard(seen: list[str]) -> Any:
    """A route handler that lets local files through, refuses the network, and notes all."""

    def guard(route: Any) -> None:
        seen.append(route.request.url)
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            route.abort()

    return guard


@pytest.mark.parametrize("width", [600, 375])
def test_emails_in_chromium(browser: Any, previews: Path, width: int) -> None:
    files = sorted(previews.glob("*.html"))
    assert len(files) >= 8
    for html in files:
        page = browser.new_page(viewport={"width": width, "height": 900})
        requested: list[str] = []
        page.route("**/*", offline_guard(requested))
        page.goto(html.resolve().as_uri())
        overflow = page.evaluate(
            "() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{html.name} overflows by {overflow}px at {width}px"
        links = page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
        visible_texts = page.eval_on_selector_all("a[href]", "els => els.map(e => e.innerText)")
        assert any("/unsubscribe/" in u for u in links), html.name
        assert any("/preferences/" in u for u in links), html.name
        assert any("/view/" in u for u in links), html.name
        assert "Unsubscribe" in visible_texts and "Manage preferences" in visible_texts
        titles = page.eval_on_selector_all("a.title-link", "els => els.map(e => e.innerText)")
        papers = page.eval_on_selector_all("a.title-link", "els => els.map(e => e.href)")
        assert titles and all(t.strip() for t in titles) and all(papers)
        assert page.evaluate("() => document.querySelectorAll('script').length") == 0
        # nothing is fetched from the network when opening the email
        assert not [u for u in requested if not u.startswith("file:")]
        page.close()


def test_dark_mode_has_readable_contrast(browser: Any, previews: Path) -> None:
    html = previews / "ada@example.org.html"
    page = browser.new_page(viewport={"width": 600, "height": 900}, color_scheme="dark")
    page.goto(html.resolve().as_uri())
    colors = page.evaluate("""() => {
      const el = document.querySelector('.excerpt');
      const card = el.closest('td');
      return [getComputedStyle(el).color, getComputedStyle(card).backgroundColor];
    }""")
    page.close()

    def lum(css: str) -> float:
        r, g, b = [int(x) / 255 for x in css[css.index("(") + 1: css.index(")")].split(",")[:3]]
        f = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
        return 0.2126 * f[0] + 0.7152 * f[1] + 0.0722 * f[2]

    fg, bg = lum(colors[0]), lum(colors[1])
    ratio = (max(fg, bg) + 0.05) / (min(fg, bg) + 0.05)
    assert bg < 0.1, colors  # a dark background
    assert ratio >= 4.5, (colors, ratio)  # WCAG AA for body text
