"""The pages behind the links in every email, served by a real uvicorn on 127.0.0.1."""

from __future__ import annotations

import email
import email.policy
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from newsletter.app import App
from newsletter.render.links import Signer, secret_keys
from newsletter.store.db import session_scope
from newsletter.store.models import Event, Subscriber
from newsletter.web import create_app

from .conftest import free_port


@pytest.fixture
def site(world) -> Iterator[tuple[str, Any, Any, Signer]]:  # type: ignore[no-untyped-def]
    import uvicorn

    settings, engine = world
    port = free_port()
    settings = settings.replace(web={"base_url": f"http://127.0.0.1:{port}"})
    app = App(settings, engine)
    server = uvicorn.Server(uvicorn.Config(create_app(app), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    with session_scope(engine) as s:
        signer = Signer(secret_keys(settings, s))
    yield f"http://127.0.0.1:{port}", settings, engine, signer
    server.should_exit = True
    thread.join(5)


def sub_id(engine: Any, address: str) -> int:
    with session_scope(engine) as s:
        found = s.scalar(select(Subscriber.id).where(Subscriber.email == address))
        assert found is not None
        return int(found)


def status_of(engine: Any, address: str) -> str:
    with session_scope(engine) as s:
        return str(s.scalar(select(Subscriber.status).where(Subscriber.email == address)))


def test_one_click_unsubscribe_rfc8058(site) -> None:  # type: ignore[no-untyped-def]
    url, _, engine, signer = site
    token = signer.token("unsubscribe", sub_id(engine, "ada@example.org"))
    # A GET (a link scanner, a prefetch) unsubscribes nobody: it shows a button.
    page = httpx.get(f"{url}/unsubscribe/{token}")
    assert page.status_code == 200 and "<form method=\"post\">" in page.text
    assert status_of(engine, "ada@example.org") == "active"
    # What a mail client sends for List-Unsubscribe-Post.
    r = httpx.post(f"{url}/unsubscribe/{token}", content="List-Unsubscribe=One-Click",
                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200
    assert status_of(engine, "ada@example.org") == "unsubscribed"
    assert httpx.post(f"{url}/unsubscribe/{token}").status_code == 200  # idempotent
    with session_scope(engine) as s:
        kinds = list(s.scalars(select(Event.kind).where(Event.kind == "unsubscribed")))
    assert kinds == ["unsubscribed"]


def test_tampered_tokens_are_refused(site) -> None:  # type: ignore[no-untyped-def]
    url, _, engine, signer = site
    token = signer.token("unsubscribe", sub_id(engine, "ada@example.org"))
    forged = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    assert httpx.post(f"{url}/unsubscribe/{forged}").status_code == 400
    other_purpose = signer.token("preferences", sub_id(engine, "ada@example.org"))
    assert httpx.post(f"{url}/unsubscribe/{other_purpose}").status_code == 400
    assert status_of(engine, "ada@example.org") == "active"


def test_rotated_keys_still_verify(site) -> None:  # type: ignore[no-untyped-def]
    url, settings, engine, signer = site
    old_token = signer.token("unsubscribe", sub_id(engine, "grace@example.org"))
    with session_scope(engine) as s:
        old_key = secret_keys(settings, s)[0]
    rotated = Signer(["new-key", old_key])  # newest first
    assert rotated.verify("unsubscribe", old_token)[0] == sub_id(engine, "grace@example.org")
    assert Signer(["new-key"]).token("unsubscribe", 1) == rotated.token("unsubscribe", 1)


def test_preferences_show_picks_and_validate(site) -> None:  # type: ignore[no-untyped-def]
    url, _, engine, signer = site
    token = signer.token("preferences", sub_id(engine, "grace@example.org"))
    page = httpx.get(f"{url}/preferences/{token}")
    assert page.status_code == 200 and "matched: " in page.text
    bad = httpx.post(f"{url}/preferences/{token}", data={"keywords": "x^0", "tz": "UTC",
                                                         "hour": "7", "status": "active"})
    assert bad.status_code == 400 and "weight must be above 0" in bad.text
    ok = httpx.post(f"{url}/preferences/{token}", data={
        "keywords": "diffusion models, -video", "tz": "Europe/Paris", "hour": "6",
        "status": "paused"})
    assert ok.status_code == 200 and "Saved." in ok.text
    with session_scope(engine) as s:
        sub = s.scalar(select(Subscriber).where(Subscriber.email == "grace@example.org"))
        assert sub is not None
        assert (sub.keywords, sub.tz, sub.send_hour, sub.status) == (
            "diffusion models, -video", "Europe/Paris", 6, "paused")


def test_subscribe_confirm_in_a_real_browser(site) -> None:  # type: ignore[no-untyped-def]
    """Double opt-in, clicked through in Debian's chromium: the form, the email in the
    outbox, the confirmation link."""
    from playwright.sync_api import sync_playwright

    from newsletter.render.screenshots import CHROMIUM_ARGS

    from .test_browser import ensure_chromium

    url, settings, engine, _ = site
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=ensure_chromium(), args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(url + "/")
        page.fill("#email", "New.Person@Example.org")
        page.fill("#keywords", 'state space models, "mixture of experts"')
        page.click("button[type=submit]")
        assert "Check your inbox" in page.content()
        assert status_of(engine, "new.person@example.org") == "pending"
        outbox = Path(settings.outbox.path)
        [eml] = [f for f in outbox.glob("*.eml") if "confirm" in f.name]
        msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.strict)
        text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        link = re.search(r"(http://127\.0\.0\.1:\d+/confirm/\S+)", text)
        assert link is not None
        page.goto(link.group(1))
        assert "You are subscribed" in page.content()
        assert status_of(engine, "new.person@example.org") == "active"
        # A bad keyword profile is explained on the form, nothing stored.
        page.goto(url + "/")
        page.fill("#email", "other@example.org")
        page.fill("#keywords", '"unclosed')
        page.click("button[type=submit]")
        assert "unclosed quote" in page.inner_text("[role=alert]")
        browser.close()
    with session_scope(engine) as s:
        assert s.scalar(select(Subscriber).where(Subscriber.email == "other@example.org")) \
            is None


def test_view_in_browser_and_paper_pages(site) -> None:  # type: ignore[no-untyped-def]
    import datetime as dt

    from newsletter.delivery.runs import run_send

    url, settings, engine, signer = site
    summary = run_send(settings, engine, dt.date(2025, 12, 26))
    ada = sub_id(engine, "ada@example.org")
    page = httpx.get(f"{url}/view/{signer.token('view', ada, summary.edition.id)}")
    assert page.status_code == 200 and "new papers for you" in page.text
    link = re.search(r'href="(http://127\.0\.0\.1:\d+/papers/[^"]+)"', page.text)
    assert link is not None
    paper = httpx.get(link.group(1))
    assert paper.status_code == 200 and "<h1>" in paper.text
    assert httpx.get(f"{url}/view/{signer.token('view', ada, 999)}").status_code == 404


@pytest.mark.parametrize("provider, payload, expected", [
    ("sendgrid", [{"email": "ada@example.org", "event": "bounce", "type": "bounce"},
                  {"email": "grace@example.org", "event": "spamreport"},
                  {"email": "alan@example.org", "event": "delivered"}],
     {"ada@example.org": "bounced", "grace@example.org": "complained",
      "alan@example.org": "active"}),
    ("postmark", {"RecordType": "Bounce", "Type": "HardBounce", "Email": "Ada@Example.org"},
     {"ada@example.org": "bounced"}),
    ("postmark", {"RecordType": "Bounce", "Type": "SoftBounce", "Email": "ada@example.org"},
     {"ada@example.org": "active"}),
    ("mailgun", {"event-data": {"event": "failed", "severity": "permanent",
                                "recipient": "ada@example.org"}},
     {"ada@example.org": "bounced"}),
    ("ses", {"Type": "Notification", "Message": '{"notificationType": "Complaint", '
             '"complaint": {"complainedRecipients": [{"emailAddress": "ada@example.org"}]}}'},
     {"ada@example.org": "complained"}),
    ("resend", {"type": "email.bounced", "data": {"to": ["ada@example.org"]}},
     {"ada@example.org": "bounced"}),
])
def test_bounce_and_complaint_webhooks(site, provider: str, payload: Any,  # type: ignore[no-untyped-def]
                                       expected: dict[str, str]) -> None:
    url, _, engine, signer = site
    token = signer.token("webhook", 0)
    r = httpx.post(f"{url}/webhooks/{provider}/{token}", json=payload)
    assert r.status_code == 200, r.text
    for address, status in expected.items():
        assert status_of(engine, address) == status, address


def test_webhooks_need_the_signed_token(site) -> None:  # type: ignore[no-untyped-def]
    url, _, engine, signer = site
    body = {"RecordType": "SpamComplaint", "Email": "ada@example.org"}
    assert httpx.post(f"{url}/webhooks/postmark/forged.token", json=body).status_code == 404
    other = signer.token("unsubscribe", 0)
    assert httpx.post(f"{url}/webhooks/postmark/{other}", json=body).status_code == 404
    assert httpx.post(f"{url}/webhooks/nosuch/{signer.token('webhook', 0)}",
                      json=body).status_code == 404
    bad = httpx.post(f"{url}/webhooks/postmark/{signer.token('webhook', 0)}",
                     content=b"{not json", headers={"content-type": "application/json"})
    assert bad.status_code == 400
    assert status_of(engine, "ada@example.org") == "active"
