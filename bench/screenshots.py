"""Regenerate the README's pictures of the sample digest: desktop (600 px), mobile
(375 px) and dark mode, in Debian's chromium, from the same sample the mail tests check.

    python bench/screenshots.py            # writes docs/digest-{desktop,mobile,dark}.png

The top of each email is kept (``MAX_HEIGHT`` CSS pixels) so the committed PNGs stay
small; ``--full`` keeps whole pages.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from newsletter.config import Settings  # noqa: E402
from newsletter.render.samples import sample_digests  # noqa: E402
from newsletter.render.screenshots import launch, screenshot_file  # noqa: E402

MAX_HEIGHT = 1500
SHOTS = {"desktop": (600, "light"), "mobile": (375, "light"), "dark": (600, "dark")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--full", action="store_true", help="whole pages, not the top")
    args = parser.parse_args()
    settings = Settings().replace(
        sender={"from_address": "digest@papers-digest.net", "list_id": "digest.papers-digest.net",
                "postal_address": "Research Digest, 12 Quay Street, Galway, Ireland"},
        web={"base_url": "https://papers-digest.net"})
    html = sample_digests(sender=settings.sender, web=settings.web)["sample"].html
    args.out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        page = Path(tmp) / "sample.html"
        page.write_text(html, encoding="utf-8")
        browser = launch(p)
        try:
            for label, (width, scheme) in SHOTS.items():
                target = args.out / f"digest-{label}.png"
                screenshot_file(browser, page, target, width=width, scheme=scheme,
                                max_height=0 if args.full else MAX_HEIGHT)
                print(f"{target.relative_to(ROOT)}: {target.stat().st_size // 1024} KB")
        finally:
            browser.close()


if __name__ == "__main__":
    main()
