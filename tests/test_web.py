"""The pages behind the links in every email, served by a real uvicorn on 127.0.0.1
and probed the way people, browsers, link scanners and attackers use them."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select, update

from newsletter.errors import ConfigError
from newsletter.render.links import Signer
from newsletter.store.db import session_scope
from newsletter.store.lifecycle import pause, unsubscribe
from newsletter.store.models import Entry, Event, Subscriber, Suppression, Vote

from .web_support import CSRF, TLS, Site, post_form, running_site


@pytest.fixture
def site(world) -> Iterator[Site]:  # type: ignore[no-untyped-def]
    settings, engine = world
    with running_site(settings, engine) as s:
        yield s


def confirm_links(settings: Any) -> list[str]:
    out = []
    for eml in sorted(Path(settings.outbox.path).glob("*.eml")):
        msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.strict)
        text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        found = re.search(r"(http://127\.0\.0\.1:\d+/confirm/\S+)", text)
        if found:
            out.append(found.group(1))
    return out


def test_one_click_unsubscribe_rfc8058(site: Site) -> None:
    url = site.links.unsubscribe(site.sub_id("ada@example.org"))
    # GET and HEAD (link scanners, prefetch) unsubscribe nobody: GET shows one button.
    page = httpx.get(url)
    assert page.status_code == 200 and '<form method="post">' in page.text
    assert httpx.head(url).status_code == 200
    assert site.status("ada@example.org") == "active"
    # What a mail client sends for List-Unsubscribe-Post: no cookie, no CSRF token.
    r = httpx.post(url, content="List-Unsubscribe=One-Click",
                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200
    assert site.status("ada@example.org") == "unsubscribed"
    assert httpx.post(url).status_code == 200  # idempotent
    again = httpx.get(url)  # the link followed again: says so, offers no button
    assert again.status_code == 200 and "gets no more emails" in again.text
    assert '<form method="post">' not in again.text and "Changed your mind?" in again.text
    with session_scope(site.engine) as s:
        events = list(s.scalars(select(Event).where(Event.kind == "unsubscribed")))
    assert [e.detail for e in events] == [{"one_click": True, "by": "web"}]


def test_tokens_tampered_or_outside_their_alphabet_are_400(site: Site) -> None:
    ada = site.sub_id("ada@example.org")
    token = site.signer.token("unsubscribe", ada)
    forged = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    assert httpx.post(f"{site.url}/unsubscribe/{forged}").status_code == 400
    other = site.signer.token("preferences", ada)
    assert httpx.post(f"{site.url}/unsubscribe/{other}").status_code == 400
    for route in ("unsubscribe", "preferences", "confirm", "view", "feed"):
        for bad in (token + "é", "é" * 10, token[:5] + "%00" + token[6:], token + "=",
                    "%FF%FE", token.replace(".", "%C2%A0")):
            path = f"{site.url}/{route}/{bad}" + (".atom" if route == "feed" else "")
            for method in ("GET", "POST"):
                r = httpx.request(method, path, verify=TLS)
                expected = 400 if method == "GET" or route in (
                    "unsubscribe", "preferences", "confirm") else 405
                assert r.status_code == expected, (route, bad, method, r.status_code)
    assert site.status("ada@example.org") == "active"


def test_security_headers_and_styled_errors(site: Site) -> None:
    r = httpx.get(site.url + "/")
    csp = r.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp and "<script>" not in r.text and " style=" not in r.text
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert "strict-transport-security" not in r.headers  # http base_url
    for path, method, status in (("/nothing", "GET", 404), ("/", "DELETE", 405),
                                 ("/webhooks/x/y", "GET", 405)):
        page = httpx.request(method, site.url + path)
        assert page.status_code == status
        assert page.headers["content-type"].startswith("text/html")
        assert '<link rel="stylesheet"' in page.text and "<h1>" in page.text
        assert page.headers["x-content-type-options"] == "nosniff"
    # A reload of the sign-up result shows the form.
    again = httpx.get(site.url + "/subscribe")
    assert again.status_code == 200 and 'name="email"' in again.text


def test_hsts_when_https(world) -> None:  # type: ignore[no-untyped-def]
    from starlette.testclient import TestClient

    from newsletter.app import App
    from newsletter.web import create_app

    settings, engine = world
    app = create_app(App(settings.replace(web={"base_url": "https://digest.example.org"}),
                         engine))
    r = TestClient(app).get("/")
    assert "max-age=" in r.headers["strict-transport-security"]


def test_sign_up_confirm_flow_limits_and_no_enumeration(site: Site) -> None:
    client = httpx.Client()
    form = {"email": "New.Person@Example.org", "keywords": "state space models",
            "tz": "Europe/Paris", "hour": "6", "website": ""}
    answers = []
    for _ in range(5):
        r = post_form(client, site.url + "/", form, site.url + "/subscribe")
        assert r.status_code == 200
        answers.append(r.text)
    site.wait_background()
    assert site.status("new.person@example.org") == "pending"
    links = confirm_links(site.settings)
    assert len(links) == 1  # five posts, one email: one per address per 15 minutes
    # The same answer for an active and a pending address (and no email to the active one).
    active = post_form(client, site.url + "/", form | {"email": "ada@example.org"},
                       site.url + "/subscribe")
    site.wait_background()

    def strip(text: str) -> str:
        return re.sub(r'name="csrf" value="[0-9a-f]+"', "", text)

    assert strip(active.text) == strip(answers[0])
    assert len(confirm_links(site.settings)) == 1
    # GET (a scanner) shows one button and changes nothing; the POST confirms.
    page = client.get(links[0])
    assert page.status_code == 200 and page.text.count("<button") == 1
    assert httpx.head(links[0]).status_code == 200
    assert site.status("new.person@example.org") == "pending"
    done = post_form(client, links[0], {})
    assert done.status_code == 200 and "You are subscribed" in done.text
    with session_scope(site.engine) as s:
        sub = s.scalar(select(Subscriber).where(Subscriber.email == "new.person@example.org"))
        assert sub is not None
        assert (sub.status, sub.tz, sub.send_hour) == ("active", "Europe/Paris", 6)
    # The honeypot: a bot that fills every field gets the same page and nothing happens.
    bot = post_form(client, site.url + "/", form | {"email": "bot@example.org",
                                                    "website": "http://spam"},
                    site.url + "/subscribe")
    site.wait_background()
    assert bot.status_code == 200 and site.status("bot@example.org") is None


def test_sign_up_refusals(site: Site) -> None:
    client = httpx.Client()
    base = {"keywords": "diffusion", "tz": "UTC", "hour": "7"}
    # Cross-origin posts and posts without the token are refused.
    ok_token = post_form(client, site.url + "/", base | {"email": "x@example.org"},
                         site.url + "/subscribe")
    assert ok_token.status_code == 200
    cross = client.post(site.url + "/subscribe", data=base | {"email": "y@example.org"},
                        headers={"Origin": "https://evil.example"})
    assert cross.status_code == 403
    no_token = httpx.post(site.url + "/subscribe", data=base | {"email": "y@example.org"})
    assert no_token.status_code == 403
    # Unicode addresses: a clear error, nothing stored.
    for bad in ("dé@example.org", "用户@例子.广告", "a@b", ""):
        r = post_form(client, site.url + "/", base | {"email": bad}, site.url + "/subscribe")
        assert r.status_code == 400 and 'role="alert"' in r.text, bad
    site.wait_background()
    with session_scope(site.engine) as s:
        assert s.scalar(select(func.count()).select_from(Subscriber)
                        .where(Subscriber.email.like("%é%"))) == 0
        assert s.scalar(select(func.count()).select_from(Subscriber)
                        .where(Subscriber.email == "y@example.org")) == 0
    # A form over the 1 MB cap.
    huge = client.post(site.url + "/subscribe", content=b"email=" + b"a" * 1_100_000,
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert huge.status_code == 413
    # The per-client limit.
    codes = [post_form(client, site.url + "/", base | {"email": f"p{i}@example.org"},
                       site.url + "/subscribe").status_code for i in range(12)]
    assert 429 in codes and codes[0] == 200


def test_confirm_links_expire(world) -> None:  # type: ignore[no-untyped-def]
    settings, engine = world
    with running_site(settings, engine, confirm_hours=2) as site:
        with session_scope(engine) as s:
            s.add(Subscriber(email="late@example.org", status="pending"))
        sid = site.sub_id("late@example.org")
        hour = int(time.time() // 3600)
        old = site.links.confirm(sid, issued=hour - 3)
        client = httpx.Client()
        assert client.get(old).status_code == 400
        assert client.post(old).status_code == 400
        fresh = site.links.confirm(sid, issued=hour - 1)
        assert post_form(client, fresh, {}).status_code == 200
        assert site.status("late@example.org") == "active"


@pytest.mark.slow  # ~2.5 s: the preferences page ranked on each save
def test_preferences_save_pause_resubscribe(site: Site) -> None:
    client = httpx.Client()
    grace = site.sub_id("grace@example.org")
    url = site.links.preferences(grace)
    page = client.get(url)
    assert page.status_code == 200 and "matched: " in page.text
    assert re.search(r'<a href="http://127\.0\.0\.1:\d+/papers/[^"]+"><strong>', page.text)
    assert "grace@example.org · daily" in page.text
    with session_scope(site.engine) as s:  # the state line says how often mail comes
        s.execute(update(Subscriber).where(Subscriber.id == grace)
                  .values(frequency="weekly:fri"))
    assert "grace@example.org · weekly on Friday" in client.get(url).text
    bad = post_form(client, url, {"action": "save", "keywords": "x^0", "tz": "UTC", "hour": "7",
                                  "status": "active"})
    assert bad.status_code == 400 and "weight must be above 0" in bad.text
    ok = post_form(client, url, {"action": "save", "keywords": "diffusion models, -video",
                                 "tz": "Europe/Paris", "hour": "6", "status": "paused"})
    assert ok.status_code == 200 and "Saved." in ok.text
    with session_scope(site.engine) as s:
        sub = s.get(Subscriber, grace)
        assert sub is not None
        assert (sub.keywords, sub.tz, sub.send_hour, sub.status) == (
            "diffusion models, -video", "Europe/Paris", 6, "paused")
    assert client.post(url, data={"action": "save", "keywords": "x"}).status_code == 403
    httpx.post(site.links.unsubscribe(grace))
    page = client.get(url)
    assert "Resubscribe" in page.text and "Daily" not in page.text
    back = post_form(client, url, {"action": "resubscribe"})
    assert back.status_code == 200 and site.status("grace@example.org") == "active"
    with session_scope(site.engine) as s:
        kinds = list(s.scalars(select(Event.kind).where(Event.subscriber_id == grace)
                               .order_by(Event.id)))
    assert kinds[-4:] == ["paused", "preferences", "unsubscribed", "resubscribed"]


@pytest.mark.slow  # ~2.5 s: a send, export and erasure
def test_data_export_erasure_and_suppression(site: Site, cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client = httpx.Client()
    ada = site.sub_id("ada@example.org")
    data = client.get(site.links.mailbox_link("data", ada))
    assert data.status_code == 200 and "attachment" in data.headers["content-disposition"]
    exported = data.json()
    assert exported["subscriber"]["email"] == "ada@example.org"
    assert client.get(site.links.mailbox_link("erase", ada)).status_code == 200
    assert site.status("ada@example.org") == "active"  # GET erases nothing
    gone = post_form(client, site.links.mailbox_link("erase", ada), {})
    assert gone.status_code == 200 and site.status("ada@example.org") is None
    with session_scope(site.engine) as s:
        assert s.scalar(select(func.count()).select_from(Suppression)) == 1
        leftovers = [e.detail for e in s.scalars(select(Event))]
    assert "ada@example.org" not in json.dumps(leftovers)
    # An import does not bring the address back; a sign-up waits for its owner's own
    # confirmation (test_hardening: test_n11_an_erased_persons_own_sign_up).
    csv = tmp_path / "people.csv"
    csv.write_text("email,name,keywords,tz,hour\nADA@example.org,Ada,,UTC,7\nnew@example.org,,,,\n")
    r = cli("subscribers", "import", str(csv),
            env={"NEWSLETTER_DATABASE__URL": str(site.engine.url)})
    assert r.code == 0 and "asked to be erased" in r.stderr, r.stderr
    assert site.status("ada@example.org") is None and site.status("new@example.org") == "active"
    post_form(client, site.url + "/", {"email": "ada@example.org", "keywords": "gnn", "tz": "UTC",
                                       "hour": "7"}, site.url + "/subscribe")
    site.wait_background()
    assert site.status("ada@example.org") == "pending"
    with session_scope(site.engine) as s:
        assert s.scalar(select(func.count()).select_from(Suppression)) == 1


@pytest.mark.slow  # ~2.5 s: a send, every page rendered
def test_archive_feed_view_and_paper_pages(site: Site) -> None:
    import feedparser

    from .editions_support import run_send

    # A preview's "view in browser" (edition 0, nothing stored yet) renders.
    assert httpx.get(site.links.view(site.sub_id("grace@example.org"), 0)).status_code == 200
    # ... and for a weekly subscriber it is the week's email, as `send` would make it
    with session_scope(site.engine) as s:
        s.execute(update(Subscriber).where(Subscriber.email == "grace@example.org")
                  .values(frequency="weekly:fri"))
    weekly = httpx.get(site.links.view(site.sub_id("grace@example.org"), 0))
    assert weekly.status_code == 200 and "for you this week" in weekly.text
    with session_scope(site.engine) as s:
        s.execute(update(Subscriber).where(Subscriber.email == "grace@example.org")
                  .values(frequency="daily"))
    summary = run_send(site.settings, site.engine, dt.date(2025, 12, 26))
    ada = site.sub_id("ada@example.org")
    view = httpx.get(site.links.view(ada, summary.edition.id))
    assert view.status_code == 200 and "for you" in view.text
    assert "script-src" not in view.headers["content-security-policy"]
    # A web version's address gets shared: its links to the reader's preferences and
    # to unsubscribe lead to a page that says where the reader's own are (the email)
    hrefs = re.findall(r'href="([^"]+)"', view.text)
    assert not [h for h in hrefs if "/preferences/" in h or "/unsubscribe/" in h], hrefs
    assert hrefs.count(site.url + "/manage") >= 2  # "Manage preferences", "Unsubscribe"
    manage = httpx.get(site.url + "/manage")
    assert manage.status_code == 200 and "links at its foot" in manage.text
    assert any(h.startswith(site.url + "/feedback/up/") for h in hrefs)  # votes stay
    archive = httpx.get(site.links.preferences(ada, "archive"))
    assert archive.status_code == 200 and "Dec 26, 2025" in archive.text
    feed = httpx.get(site.links.feed(ada))
    assert feed.headers["content-type"].startswith("application/atom+xml")
    parsed = feedparser.parse(feed.content)
    assert not parsed.bozo, parsed.get("bozo_exception")
    assert parsed.version == "atom10" and len(parsed.entries) >= 1
    assert parsed.entries[0].link.startswith(site.url + "/papers/")
    paper = httpx.get(parsed.entries[0].link)
    assert paper.status_code == 200 and "Read the paper" in paper.text
    assert httpx.get(site.links.view(ada, 999)).status_code == 404


def test_paper_page_without_url_links_somewhere(site: Site) -> None:
    from newsletter.store.models import Entry

    with session_scope(site.engine) as s:
        s.add(Entry(id="t:abc", title="A Page-Dump Paper", abstract="x",
                    published=dt.date(2025, 3, 4), url=""))
        s.add(Entry(id="t:def", title="Another", abstract="y", arxiv_id="2501.00001", url=""))
        s.add(Entry(id="t:bad", title="Hostile", abstract="z", url="javascript:alert(1)",
                    code_url='https://github.com/x/y"onclick="x'))
    hostile = httpx.get(site.links.paper("t:bad")).text
    assert "javascript:" not in hostile and 'onclick="x' not in hostile
    assert 'href="https://github.com/x/y%22onclick=%22x"' in hostile
    page = httpx.get(site.links.paper("t:abc"))
    assert "Mar 4, 2025" in page.text
    assert "https://arxiv.org/search/?searchtype=title&amp;query=A%20Page-Dump%20Paper" in page.text
    assert 'href="https://arxiv.org/abs/2501.00001"' in httpx.get(site.links.paper("t:def")).text


def test_key_rotation_refuses_to_break_sent_links(world) -> None:  # type: ignore[no-untyped-def]
    from newsletter.app import App
    from newsletter.store.key_use import fingerprint
    from newsletter.web import create_app

    settings, engine = world

    def web(*keys: str, retired: tuple[str, ...] = ()) -> None:
        create_app(App(settings.replace(web={"secret_keys": list(keys),
                                             "retired_keys": list(retired)}), engine))

    # The stored key never signed anything: a configured key replaces it freely.
    web("first-key")
    # Once the server signed with it, it is kept.
    with pytest.raises(ConfigError, match="retired_keys"):
        web("brand-new")
    web("brand-new", "first-key")
    web("brand-new", retired=(fingerprint("first-key"),))
    old = Signer(["first-key"]).token("unsubscribe", 1)
    assert Signer(["brand-new", "first-key"]).verify("unsubscribe", old) == [1]


def test_web_command_refuses_unretired_key(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = {"NEWSLETTER_DATABASE__URL": f"sqlite:///{tmp_path}/k.db",
           "NEWSLETTER_OUTBOX__PATH": str(tmp_path / "outbox")}
    assert cli("demo", env=env).code == 0  # the stored key signs the demo's links
    r = cli("web", "--port", "1", env=env | {"NEWSLETTER_WEB__SECRET_KEYS": "fresh-key"})
    assert r.code != 0 and "retired_keys" in r.stderr and len(r.stderr.splitlines()) == 1
    shown = json.loads(cli("keys", "show", env=env).stdout)
    assert shown["stored_fingerprint"] and shown["stored_key"]


@pytest.mark.slow  # ~6 s: a send, a render process, two sites
def test_ranking_and_rendering_in_the_render_process(world) -> None:  # type: ignore[no-untyped-def]
    """With ``render_processes`` (the default in production), preferences and view in
    browser are answered from the render process, the same as in-process."""
    from .editions_support import run_send

    settings, engine = world
    summary = run_send(settings, engine, dt.date(2025, 12, 26))
    with running_site(settings, engine, render_processes=1) as site:
        grace = site.sub_id("grace@example.org")
        client = httpx.Client(timeout=120)
        prefs = client.get(site.links.preferences(grace))
        assert prefs.status_code == 200 and "matched: " in prefs.text
        view = client.get(site.links.view(grace, summary.edition.id))
        assert view.status_code == 200 and "for you" in view.text
        assert site.starlette.state.web.pool is not None
    with running_site(settings, engine) as site:
        same = httpx.get(site.links.preferences(grace), timeout=60)
        picks = re.findall(r"<strong>(.*?)</strong>", same.text)
        assert picks and picks == re.findall(r"<strong>(.*?)</strong>", prefs.text)


@pytest.mark.slow  # ~2.5 s: the preferences page ranked twice
def test_preferences_keep_a_zone_outside_the_list(site: Site) -> None:
    """A subscriber imported with a zone the select does not list keeps it on save."""
    with session_scope(site.engine) as s:
        s.add(Subscriber(email="us@example.org", tz="US/Eastern", keywords="gnn"))
    client = httpx.Client()
    url = site.links.preferences(site.sub_id("us@example.org"))
    assert "<option selected>US/Eastern</option>" in client.get(url).text
    ok = post_form(client, url, {"action": "save", "keywords": "gnn", "tz": "US/Eastern",
                                 "hour": "7", "status": "active"})
    assert ok.status_code == 200


def test_a_failed_confirmation_send_is_logged(world, caplog) -> None:  # type: ignore[no-untyped-def]
    """The page cannot say the email failed (that would tell whether the address is
    known), so the failure goes to the log, with the reason."""
    import logging

    from .conftest import free_port

    settings, engine = world
    dead = settings.replace(transport={"backend": "smtp", "max_attempts": 1},
                            smtp={"host": "127.0.0.1", "port": free_port(), "timeout": 2})
    caplog.set_level(logging.INFO, logger="newsletter.web.signup")
    with running_site(dead, engine) as site:
        r = post_form(httpx.Client(), site.url + "/", {"email": "z@example.org",
                                                       "keywords": "diffusion",
                                                       "tz": "UTC", "hour": "7"},
                      site.url + "/subscribe")
        assert r.status_code == 200 and "Check your inbox" in r.text
        site.wait_background(30)
    errors = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert errors and "confirmation email" in errors[0].getMessage()


@given(st.text(max_size=60))
def test_any_token_text_is_refused_cleanly(text: str) -> None:
    """Whatever text a URL carries as a token, verifying it is a valid result or an
    InputError (a 400), never another exception (a 500)."""
    from newsletter.errors import InputError

    signer = Signer(["k"])
    for purpose in ("unsubscribe", "confirm", "view"):
        try:
            values = signer.verify(purpose, text)
        except InputError:
            continue
        assert signer.token(purpose, *values) == text


def test_a_vote_after_unsubscribing_is_not_recorded(site: Site) -> None:
    """A vote link in an old email, pressed after unsubscribing: the page says the vote
    is not recorded and offers the subscription's page, never the button; a POST (a
    page opened before unsubscribing) stores nothing. A paused reader still votes."""
    sub_id = site.sub_id("ada@example.org")
    with session_scope(site.engine) as s:
        paper = s.scalar(select(Entry.id).limit(1))
    link = site.links.votes(sub_id, str(paper))["more"]
    with session_scope(site.engine) as s:
        sub = s.get(Subscriber, sub_id)
        assert sub is not None
        pause(s, sub, by="test")
    with httpx.Client(timeout=30) as client:
        page = client.get(link)
        assert page.status_code == 200 and '<form method="post"' in page.text
        with session_scope(site.engine) as s:
            sub = s.get(Subscriber, sub_id)
            assert sub is not None
            unsubscribe(s, sub, by="test")
        stale = client.get(link)  # (also the CSRF cookie the POST below carries)
        assert stale.status_code == 200 and "Votes are not recorded" in stale.text
        assert '<form method="post"' not in stale.text
        assert "unsubscribed" in stale.text and "/preferences/" in stale.text
        posted = client.post(link, data={"csrf": CSRF.search(page.text).group(1)},  # type: ignore[union-attr]
                             headers={"Origin": site.url})
        assert posted.status_code == 409 and "not recorded" in posted.text
    with session_scope(site.engine) as s:
        assert s.scalar(select(func.count()).select_from(Vote)) == 0
