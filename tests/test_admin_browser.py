"""The operator console in Debian's chromium (Playwright): after a real ``newsletter
send`` to an SMTP sink, log in, check the dashboard against ``newsletter status
--json``, find one subscriber among 10,000, edit them, preview their email, send a
test to the sink, and retry a failed delivery. axe-core on every page; 375 px wide
and dark mode too. With NEWSLETTER_DOCS_SCREENSHOTS=1 the pages are saved as
docs/admin-*.png for docs/operations.md."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from newsletter.store.db import session_scope
from newsletter.store.models import Delivery, Subscriber
from newsletter.store.subscribers import add, import_csv

from .conftest import ROOT
from .test_admin import PASSWORD, Console, start_console

pytestmark = pytest.mark.browser
SHOTS = os.environ.get("NEWSLETTER_DOCS_SCREENSHOTS") == "1"
NEEDLE = "needle.person@research.example"


@pytest.fixture
def sent_world(world, smtp_sink, cli,  # type: ignore[no-untyped-def]
               sqlite_url: str) -> Iterator[tuple[Console, Any, dict[str, Any]]]:
    """An edition really sent through SMTP (one deferred: refused for now), then 10,000 more
    subscribers, and the console serving it all with the same SMTP sink."""
    settings, engine = world
    with session_scope(engine) as s:
        add(s, "flaky@example.org", keywords="vision transformer, diffusion")
    smtp_sink.faults["flaky@example.org"] = ["451 4.3.0 try again later"]
    env = {"NEWSLETTER_DATABASE__URL": sqlite_url, "NEWSLETTER_TRANSPORT__BACKEND": "smtp",
           "NEWSLETTER_SMTP__PORT": str(smtp_sink.port), "NEWSLETTER_TRANSPORT__MAX_ATTEMPTS": "1"}
    sent = cli("send", "--yes", "--force", env=env)  # demo defaults to a local sink
    assert sent.code == 0 and "deferred 1 " in sent.stderr, sent.stderr  # not a failure
    status = cli("status", "--json", env=env)
    assert status.code == 0, status.stderr
    rows = ["email,name,keywords,tz,hour"] + [
        f"person{i:05d}@bulk.example,,{'gnn' if i % 2 else 'diffusion models'},UTC,7"
        for i in range(9_999)] + [f"{NEEDLE},Needle,graph neural networks,UTC,7"]
    with session_scope(engine) as s:
        assert import_csv(s, "\n".join(rows).encode(), "bulk.csv").added == 10_000
    # a compliant sender: the console's retry holds the compliance gate, as `send` does
    console_settings = settings.replace(
        transport={"backend": "smtp", "max_attempts": 1},
        smtp={"port": smtp_sink.port},
        sender={"from_address": "digest@papers-mail.net",
                "postal_address": "Papers Mail, 1 Quay Street, Dublin D02, Ireland"})
    for console in start_console(console_settings, engine,
                                 base_url="https://digest.papers-mail.net"):
        yield console, smtp_sink, json.loads(status.stdout)




def check_page(page: Any, name: str) -> None:
    """No serious or critical axe-core violation, nothing wider than the screen, no
    request leaving 127.0.0.1, and a screenshot for docs/operations.md when asked."""
    from axe_playwright_python.sync_playwright import Axe

    violations = [v for v in Axe().run(page).response["violations"]
                  if v["impact"] in ("serious", "critical")]
    assert not violations, (name, [(v["id"], v["nodes"][0]["html"]) for v in violations])
    if SHOTS:
        page.screenshot(path=str(ROOT / "docs" / f"admin-{name}.png"))


def narrow_ok(browser: Any, console: Console, storage: Any, paths: list[str]) -> None:
    ctx = browser.new_context(viewport={"width": 375, "height": 800}, storage_state=storage)
    page = ctx.new_page()
    for path in paths:
        page.goto(console.url + path)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 376, (path, width)
    if SHOTS:
        page.goto(console.url + "/")
        page.screenshot(path=str(ROOT / "docs" / "admin-dashboard-375.png"))
    ctx.close()


def test_console_end_to_end(sent_world, browser) -> None:  # type: ignore[no-untyped-def]
    console, sink, status = sent_world
    requests: list[str] = []
    csp_errors: list[str] = []
    ctx = browser.new_context(viewport={"width": 1000, "height": 760})
    page = ctx.new_page()
    page.on("request", lambda r: requests.append(r.url))
    page.on("console", lambda m: csp_errors.append(m.text)
            if "Content Security Policy" in m.text else None)

    # Log in (the next= target survives the login).
    page.goto(console.url + "/subscribers")
    assert "/admin/login" in page.url
    check_page(page, "login")
    page.fill("#name", "ops")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    assert page.url.endswith("/admin/subscribers")

    # The dashboard's counts are `newsletter status --json`'s.
    page.goto(console.url + "/")
    row = page.locator(f"#editions tr[data-edition='{status['edition']}']")
    shown = {state: int(row.locator(f"td[data-state='{state}']").inner_text())
             for state in status["counts"]}
    assert shown == status["counts"]
    assert shown["sent"] == 8 and shown["deferred"] == 1 and shown["failed"] == 0
    assert page.locator("svg.chart").count() == 2
    assert "10009 in all" in page.locator("#subscriber-counts").inner_text().replace(",", "")
    check_page(page, "dashboard")

    # Find one subscriber among 10,000, open and edit them.
    page.goto(console.url + "/subscribers")
    assert page.locator("#subscribers tbody tr").count() == console.settings.admin.page_size
    page.fill("#q", "needle")
    page.click("form[role=search] button[type=submit]")
    assert page.locator("#subscribers tbody tr").count() == 1
    check_page(page, "subscribers")
    page.click(f"text={NEEDLE}")
    page.fill("#keywords", "vision transformer, -medical")
    page.select_option("#status", "active")
    page.fill("#hour", "9")
    page.click("form.narrow button[type=submit]")
    assert page.locator("text=Saved.").count() == 1
    with session_scope(console.engine) as s:
        sub = s.scalar(select(Subscriber).where(Subscriber.email == NEEDLE))
        assert sub is not None and (sub.keywords, sub.send_hour) == (
            "vision transformer, -medical", 9)
    assert "edited" in page.locator("#events").inner_text()
    check_page(page, "subscriber")

    # Preview their email: the picks and why, the HTML in a sandboxed frame, the text
    # part, the headers; nothing written.
    page.click("text=Preview their next email")
    why = page.locator("#why li")
    assert why.count() >= 1 and "vision transformer" in why.first.inner_text()
    frame = page.locator("iframe.email")
    assert frame.get_attribute("sandbox") == ""
    email_frame = page.frame_locator("iframe.email")
    assert email_frame.locator("text=papers matched your interests").count() >= 1
    assert "vision transformer" in page.locator("#text-part").inner_text().lower()
    headers = page.locator("#headers").inner_text()
    assert "List-Unsubscribe-Post" in headers and NEEDLE in headers
    subject = page.locator("#result-h").inner_text().split(": ", 1)[1]
    with session_scope(console.engine) as s:
        assert s.scalar(select(Delivery).join(Subscriber).where(
            Subscriber.email == NEEDLE)) is None
    check_page(page, "preview")

    # Send a test of that email to the sink.
    before = len(sink.messages)
    page.fill("#to", "Inbox.Test@Example.org")
    page.click("text=Send test")
    assert page.locator("#test-sent").inner_text() == "Test sent to inbox.test@example.org."
    assert len(sink.messages) == before + 1
    rcpt, data = sink.messages[-1]
    assert rcpt == "inbox.test@example.org"
    assert re.search(rb"^To: inbox.test@example.org\r?$", data, re.M)
    assert subject.encode()[:30] in data.replace(b"\r\n ", b" ")

    # The edition: the deferred row with its error and next try, then retry it now
    # through the ledger.
    page.goto(f"{console.url}/editions/{status['edition']}?state=deferred")
    ledger = page.locator("#ledger").inner_text()
    assert "flaky@example.org" in ledger and "451" in ledger
    assert status["deferred"][0]["next_try"][:16].replace("T", " ") in ledger
    assert "tried again automatically" in page.locator("#deferred-note").inner_text()
    assert page.locator("#offered tbody tr").count() >= 10
    check_page(page, "edition")
    page.click("text=Retry failed and deferred deliveries now")  # answered at once, sent
    assert ("1 failed (transient, expired, refused for size or content) and deferred deliveries "
            "queued again; sending them in the background") in page.content()  # sent later
    deadline = time.monotonic() + 60
    while True:  # until the ledger records it
        with session_scope(console.engine) as s:
            states = dict(s.execute(select(Subscriber.email, Delivery.status).join(Subscriber)
                                    .where(Delivery.edition_id == status["edition"])).all())
        if states["flaky@example.org"] == "sent" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert states["flaky@example.org"] == "sent"
    assert sink.count("flaky@example.org") == 1
    assert list(states.values()).count("sent") == 9

    # Papers, searchable, with their source.
    page.goto(console.url + "/papers")
    page.fill("#q", "Vision Transformers")
    page.click("form[role=search] button[type=submit]")
    first = page.locator("#papers tbody tr").first
    assert "Vision Transformer" in first.inner_text()
    assert first.locator("td").last.inner_text().strip()  # where it came from
    check_page(page, "papers")

    # An error page looks like the rest.
    assert page.goto(console.url + "/editions/987654").status == 404
    assert "no such edition" in page.content()
    check_page(page, "error")

    # Nothing went anywhere but this server, and the CSP was never in the way.
    assert all(u.startswith(("http://127.0.0.1", "data:", "about:")) for u in requests), requests
    assert not csp_errors, csp_errors

    # Dark mode follows the system; 375 px wide works.
    dark = browser.new_context(color_scheme="dark", storage_state=ctx.storage_state(),
                               viewport={"width": 1000, "height": 760})
    dpage = dark.new_page()
    dpage.goto(console.url + "/")
    bg = dpage.evaluate("getComputedStyle(document.querySelector('main')).backgroundColor")
    assert bg == "rgb(22, 27, 34)"
    check_page(dpage, "dashboard-dark")
    dark.close()
    narrow_ok(browser, console, ctx.storage_state(), [
        "/", "/subscribers", "/papers", f"/editions/{status['edition']}",
        f"/preview?subscriber={NEEDLE}"])
    ctx.close()


def test_setup_page_without_operators(world, browser) -> None:  # type: ignore[no-untyped-def]
    settings, engine = world
    for console in start_console(settings, engine, user=False):
        page = browser.new_page()
        assert page.goto(console.url + "/").status == 503
        assert "newsletter admin add-user NAME" in page.content()
        check_page(page, "setup")
        page.close()
