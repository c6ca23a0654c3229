"""Every subscriber page in Debian's chromium (Playwright): the flows clicked through
as a person would, under the real Content-Security-Policy, and axe-core on each page
(no serious or critical violation)."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .web_support import Site, running_site

pytestmark = pytest.mark.browser


@pytest.fixture
def site(world) -> Iterator[Site]:  # type: ignore[no-untyped-def]
    settings, engine = world
    with running_site(settings, engine) as s:
        yield s




def axe_problems(page: Any) -> list[str]:
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    return [f"{v['id']} ({v['impact']}): {v['help']}"
            for v in results.response["violations"] if v["impact"] in ("serious", "critical")]


def test_sign_up_confirm_preferences_in_chromium(site: Site, browser: Any) -> None:
    """The whole double opt-in in a browser whose zone is Asia/Tokyo: the zone is
    preselected by the external script (CSP allows it; no violation is reported)."""
    context = browser.new_context(timezone_id="Asia/Tokyo")
    page = context.new_page()
    csp_errors: list[str] = []
    page.on("console", lambda m: csp_errors.append(m.text)
            if "Content Security Policy" in m.text else None)
    page.goto(site.url + "/")
    assert page.input_value("#tz") == "Asia/Tokyo"
    page.fill("#email", "New.Person@Example.org")
    page.fill("#keywords", 'state space models, "mixture of experts"')
    page.select_option("#hour", "8")
    page.click("button[type=submit]")
    assert "Check your inbox" in page.content()
    site.wait_background()
    assert site.status("new.person@example.org") == "pending"
    [eml] = [f for f in Path(site.settings.outbox.path).glob("*.eml")]
    msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.strict)
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    link = re.search(r"(http://127\.0\.0\.1:\d+/confirm/\S+)", text)
    assert link is not None
    page.goto(link.group(1))
    assert site.status("new.person@example.org") == "pending"  # the page alone confirms nothing
    page.click("button[type=submit]")
    assert "You are subscribed" in page.content()
    assert site.status("new.person@example.org") == "active"
    page.click("text=Tune your keywords")
    assert page.input_value("#tz") == "Asia/Tokyo" and page.input_value("#hour") == "8"
    page.fill("#keywords", "diffusion models")
    page.click("button:has-text('Save')")
    assert "Saved." in page.content()
    # A bad keyword profile on the sign-up form is explained; nothing stored.
    page.goto(site.url + "/")
    page.fill("#email", "other@example.org")
    page.fill("#keywords", '"unclosed')
    page.click("button[type=submit]")
    assert "unclosed quote" in page.inner_text("[role=alert]")
    site.wait_background()
    assert site.status("other@example.org") is None
    assert not csp_errors, csp_errors
    context.close()


def test_unsubscribe_resubscribe_and_erase_in_chromium(site: Site, browser: Any) -> None:
    page = browser.new_page()
    ada = site.sub_id("ada@example.org")
    page.goto(site.links.unsubscribe(ada))
    page.click("button:has-text('Unsubscribe')")
    assert site.status("ada@example.org") == "unsubscribed"
    page.click("text=Changed your mind?")
    page.click("button:has-text('Resubscribe')")
    assert site.status("ada@example.org") == "active"
    page.goto(site.links.mailbox_link("erase", ada))
    page.click("button:has-text('Delete my data')")
    assert "Deleted" in page.content() and site.status("ada@example.org") is None


def test_clickjacking_is_blocked(site: Site, browser: Any) -> None:
    """The one-button page cannot be framed by another site."""
    page = browser.new_page()
    url = site.links.unsubscribe(site.sub_id("ada@example.org"))
    page.set_content(f'<iframe id="f" src="{url}" width="600" height="400"></iframe>')
    page.wait_for_timeout(1000)
    frame = page.frame_locator("#f")
    assert frame.locator("button").count() == 0


def test_cross_site_form_post_is_refused(site: Site, browser: Any, http_server: Any) -> None:
    """A page elsewhere that posts a sign-up (or preferences) form to us is refused,
    even after the visitor has our CSRF cookie."""
    page = browser.new_page()
    page.goto(site.url + "/")  # the visitor has our cookie
    token = page.input_value("input[name=csrf]")
    from .conftest import Route

    evil = http_server.add("/evil", Route(body=(
        f'<form method="post" action="{site.url}/subscribe"><input name="csrf" '
        f'value="{token}"><input name="email" value="victim@example.org">'
        '<button>go</button></form>').encode(), headers={"Content-Type": "text/html"}))
    page.goto(evil)
    page.click("button")
    page.wait_for_load_state()
    assert "another site" in page.content() or "expired" in page.content()
    site.wait_background()
    assert site.status("victim@example.org") is None


def test_axe_on_every_page(site: Site, browser: Any) -> None:
    from .editions_support import run_send

    summary = run_send(site.settings, site.engine, dt.date(2025, 12, 26))
    grace = site.sub_id("grace@example.org")
    links = site.links
    pages = {
        "sign-up": site.url + "/",
        "confirm": links.confirm(grace),
        "unsubscribe": links.unsubscribe(grace),
        "preferences": links.preferences(grace),
        "archive": links.preferences(grace, "archive"),
        "ask to erase": links.preferences(grace, "erase"),
        "erase": links.mailbox_link("erase", grace),
        "view": links.view(grace, summary.edition.id),
        "404": site.url + "/nothing",
        "bad link": site.url + "/preferences/not-a-token",
    }
    page = browser.new_page()
    problems: dict[str, list[str]] = {}
    for name, url in pages.items():
        page.goto(url)
        problems[name] = axe_problems(page)
    # The form with an error, and a paper page linked from preferences.
    page.goto(site.url + "/")
    page.fill("#email", "x@")
    page.evaluate("document.querySelector('#email').type = 'text'")
    page.click("button[type=submit]")
    problems["sign-up error"] = axe_problems(page)
    page.goto(links.preferences(grace))
    page.click(".pick a >> nth=0")
    problems["paper"] = axe_problems(page)
    page.goto(links.preferences(grace))
    page.click("button:has-text('Save')")
    problems["preferences saved"] = axe_problems(page)
    assert {k: v for k, v in problems.items() if v} == {}
    assert len(problems) >= 12
