"""Screenshots of rendered emails in Debian's chromium, driven by Playwright.

Only the system browser is used (``/usr/bin/chromium``): nothing is downloaded.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from newsletter.errors import NewsletterError

WIDTHS = {"desktop": 600, "mobile": 375}
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    raise NewsletterError("chromium not found: install Debian's chromium package "
                          "(apt-get install chromium) for --screenshot")


def screenshot_file(browser: Any, html: Path, target: Path, *, width: int,
                    scheme: str = "light", max_height: int = 0) -> Path:
    """One PNG of ``html`` at ``width`` CSS pixels in the given colour scheme, offline
    (every request but the file itself is refused), the full page or its top
    ``max_height`` pixels."""
    page = browser.new_page(viewport={"width": width, "height": 800}, color_scheme=scheme)
    try:
        page.route("**/*", lambda route: route.abort()
                   if not route.request.url.startswith(("file:", "data:"))
                   else route.continue_())
        page.goto(html.resolve().as_uri())
        if max_height:
            height = min(max_height, int(page.evaluate("document.body.scrollHeight")))
            page.screenshot(path=str(target),
                            clip={"x": 0, "y": 0, "width": width, "height": height})
        else:
            page.screenshot(path=str(target), full_page=True)
    finally:
        page.close()
    return target


def launch(p: Any) -> Any:
    return p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)


def screenshot_dir(directory: Path) -> list[Path]:
    """A desktop and a mobile PNG next to every .html file in ``directory``."""
    from playwright.sync_api import sync_playwright

    made: list[Path] = []
    with sync_playwright() as p:
        browser = launch(p)
        try:
            for html in sorted(directory.glob("*.html")):
                for label, width in WIDTHS.items():
                    made.append(screenshot_file(
                        browser, html, html.with_name(f"{html.stem}.{label}.png"),
                        width=width))
        finally:
            browser.close()
    return made
