"""Screenshots of rendered emails in Debian's chromium, driven by Playwright.

Only the system browser is used (``/usr/bin/chromium``): nothing is downloaded.
"""

from __future__ import annotations

import shutil
from pathlib import Path

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


def screenshot_dir(directory: Path) -> list[Path]:
    """A desktop and a mobile PNG next to every .html file in ``directory``."""
    from playwright.sync_api import sync_playwright

    made: list[Path] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            for html in sorted(directory.glob("*.html")):
                for label, width in WIDTHS.items():
                    page = browser.new_page(viewport={"width": width, "height": 800})
                    page.route("**/*", lambda route: route.abort()
                               if not route.request.url.startswith(("file:", "data:"))
                               else route.continue_())
                    page.goto(html.resolve().as_uri())
                    target = html.with_name(f"{html.stem}.{label}.png")
                    page.screenshot(path=str(target), full_page=True)
                    page.close()
                    made.append(target)
        finally:
            browser.close()
    return made
