"""A digest's preferences link travels with every forwarded copy: it may unsubscribe
and change preferences, but downloading the subscriber's data and erasing them take
a link emailed to their own address (``newsletter/web/owner.py``). Read through a
real SMTP server (aiosmtpd on 127.0.0.1), as the subscriber's mailbox would."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import re
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from newsletter.config import WebConfig
from newsletter.errors import InputError
from newsletter.render.links import issue_hour
from newsletter.service.bounces import fetch
from newsletter.service.subscribers import MAILBOX_LINK_SENT, Mailbox, request_mailbox_link
from newsletter.store.db import get_engine, session_scope
from newsletter.store.models import Delivery, Edition, Event, MailReport, Subscriber

from .test_bounces import KEYS, VERP, config, drop, dsn, maildir
from .web_support import Site, post_form, running_site


@pytest.fixture
def site(world, smtp_sink) -> Iterator[Site]:  # type: ignore[no-untyped-def]
    settings, engine = world
    smtp = settings.replace(transport={"backend": "smtp", "max_attempts": 1},
                            smtp={"host": "127.0.0.1", "port": smtp_sink.port})
    with running_site(smtp, engine) as s:
        yield s


def mails_to(sink: Any, address: str) -> list[EmailMessage]:
    return [email.message_from_bytes(raw, policy=email.policy.strict)  # type: ignore[misc]
            for rcpt, raw in sink.messages if rcpt == address]


def link_in(msg: EmailMessage, site: Site, purpose: str) -> str:
    body = msg.get_body(("plain",))
    assert body is not None
    found = re.search(re.escape(site.url) + f"/{purpose}/" + r"\S+", body.get_content())
    assert found, body.get_content()
    return found.group(0)


def test_a_forwarded_preferences_link_only_asks_and_the_emailed_link_acts(
        site: Site, smtp_sink: Any) -> None:
    """Whoever holds a forwarded digest's preferences link gets neither the data nor
    the erasure: GET changes and shows nothing, the POST emails the owner. The owner's
    emailed links download and erase; a second request within the interval sends
    nothing (a forwarded link cannot flood the mailbox)."""
    forwardee = httpx.Client(timeout=30)
    ada, grace = site.sub_id("ada@example.org"), site.sub_id("grace@example.org")
    offer = forwardee.get(site.links.preferences(ada, "data"))
    assert offer.status_code == 200 and "attachment" not in offer.headers.get(
        "content-disposition", "")
    assert offer.headers["content-type"].startswith("text/html")
    assert "Email me the link" in offer.text and '"votes"' not in offer.text
    sent = post_form(forwardee, site.links.preferences(ada, "data"), {})
    assert sent.status_code == 200 and "on its way to ada@example.org" in sent.text
    assert post_form(forwardee, site.links.preferences(grace, "erase"), {}).status_code == 200
    assert site.status("grace@example.org") == "active"  # the old POST erased here
    again = post_form(forwardee, site.links.preferences(ada, "erase"), {})
    assert again.status_code == 429 and "Already sent" in again.text

    [to_ada] = mails_to(smtp_sink, "ada@example.org")
    [to_grace] = mails_to(smtp_sink, "grace@example.org")
    assert "digest@example.org" in str(to_ada["From"]) and to_ada["To"] == "ada@example.org"
    assert to_ada["Subject"].startswith("Your data from")
    assert to_grace["Subject"].startswith("Delete your subscription")
    owner = httpx.Client(timeout=30)
    data = owner.get(link_in(to_ada, site, "data"))
    assert data.status_code == 200 and "attachment" in data.headers["content-disposition"]
    exported = data.json()
    assert exported["subscriber"]["email"] == "ada@example.org"
    assert [e["detail"] for e in exported["events"] if e["kind"] == "mailbox_link_sent"
            ] == [{"purpose": "data"}]
    erase = link_in(to_grace, site, "erase")
    assert "Delete everything about grace@example.org" in owner.get(erase).text
    assert site.status("grace@example.org") == "active"  # GET erases nothing
    assert post_form(owner, erase, {}).status_code == 200
    assert site.status("grace@example.org") is None
    with session_scope(site.engine) as s:
        assert s.scalar(select(func.count()).select_from(Event).where(
            Event.subscriber_id == ada, Event.kind == "mailbox_link_sent")) == 1


def test_emailed_links_expire_and_each_works_for_its_own_purpose_only(site: Site) -> None:
    client = httpx.Client(timeout=30)
    ada = site.sub_id("ada@example.org")
    links, hours = site.links, site.settings.web.mailbox_link_hours
    stale = links.mailbox_link("data", ada, issue_hour() - hours - 1)
    expired = client.get(stale)
    assert expired.status_code == 400 and "expired" in expired.text
    assert client.get(links.mailbox_link("data", ada, issue_hour() - hours)).status_code == 200
    gone = post_form(client, links.mailbox_link("erase", ada), {},  # a fresh page's form
                     links.mailbox_link("erase", ada, issue_hour() - hours - 1))
    assert gone.status_code == 400 and site.status("ada@example.org") == "active"

    prefs_token = links.preferences(ada).rsplit("/", 1)[1]
    data_token = links.mailbox_link("data", ada).rsplit("/", 1)[1]
    erase_token = links.mailbox_link("erase", ada).rsplit("/", 1)[1]
    for path in (f"/data/{prefs_token}", f"/erase/{prefs_token}", f"/erase/{data_token}",
                 f"/data/{erase_token}", f"/preferences/{data_token}",
                 f"/preferences/{erase_token}/data", f"/unsubscribe/{erase_token}"):
        assert client.get(site.url + path).status_code == 400, path
    for purpose, token in (("data", prefs_token), ("erase", prefs_token),
                           ("preferences", data_token), ("erase", data_token)):
        with pytest.raises(InputError):
            site.signer.claims(purpose, token)
    assert site.status("ada@example.org") == "active"


def test_two_requests_at_once_take_one_slot(db_url: str) -> None:
    """Two POSTs racing for the same address: the second waits for the first's
    transaction and finds the slot taken. (On PostgreSQL both counted no event before
    either committed, and both emailed a link.)"""
    engine = get_engine(db_url)
    with session_scope(engine) as s:
        sub = Subscriber(email="ada@example.org", keywords="attention")
        s.add(sub)
        s.flush()
        sub_id = sub.id
    limits = WebConfig()
    second: list[Mailbox | None] = []

    def other() -> None:
        with session_scope(engine) as s:
            second.append(request_mailbox_link(s, sub_id, "erase", limits))

    racer = threading.Thread(target=other)
    with session_scope(engine) as s:
        first = request_mailbox_link(s, sub_id, "data", limits)
        s.flush()
        racer.start()
        racer.join(1)  # it must not get past the first's uncommitted slot meanwhile
    racer.join(30)
    assert first is not None and second == [None]
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Event).where(
            Event.subscriber_id == sub_id, Event.kind == MAILBOX_LINK_SENT)) == 1


def test_no_link_goes_to_a_stopped_address_and_only_our_own_links_act(
        site: Site, smtp_sink: Any) -> None:
    """An address that bounced or marked our mail as spam is sent nothing, this link
    included (the page says whom to write to); a data or erasure token without the
    subscriber's nonce (a pre-nonce link for an id that still honours those) or with
    an issue hour still to come was never one we made, and is refused."""
    client = httpx.Client(timeout=30)
    ada, grace = site.sub_id("ada@example.org"), site.sub_id("grace@example.org")
    with session_scope(site.engine) as s:
        s.get(Subscriber, grace).status = "complained"  # type: ignore[union-attr]
    site.starlette.state.web.legacy_link_max_id = max(ada, grace)  # pre-nonce links honoured
    refused = post_form(client, site.links.preferences(grace, "data"), {})
    assert refused.status_code == 409 and "digest@example.org" in refused.text
    assert mails_to(smtp_sink, "grace@example.org") == []
    # nonce-less, for an id whose nonce-less links still open its preferences
    assert client.get(site.url + "/preferences/"
                      + site.signer.token("preferences", ada)).status_code == 200
    for purpose in ("data", "erase"):
        bare = site.signer.token(purpose, ada, issue_hour())
        assert client.get(f"{site.url}/{purpose}/{bare}").status_code == 400, purpose
        ahead = site.links.mailbox_link(purpose, ada, issue_hour() + 2)
        assert client.get(ahead).status_code == 400, purpose
    assert post_form(client, site.links.mailbox_link("erase", ada), {},
                     site.links.mailbox_link("erase", ada, issue_hour() + 2)
                     ).status_code == 400
    assert site.status("ada@example.org") == "active"
    assert client.get(site.links.mailbox_link("data", ada)).status_code == 200


def soft_bounced(site: Site, tmp_path: Path) -> int:
    """grace@example.org's id, after an email of hers (ranked for "attention") came back
    from a full mailbox: read from the bounce mailbox, as ``bounces fetch`` reads it."""
    grace = site.sub_id("grace@example.org")
    with session_scope(site.engine) as s:
        edition = Edition(day=dt.date(2026, 12, 1), slot="")
        s.add(edition)
        s.flush()
        sent = Delivery(edition_id=edition.id, subscriber_id=grace, day=edition.day,
                        status="sent", keywords="attention",
                        message_id="<g1.x@digest.example.org>")
        s.add(sent)
        s.flush()
        delivery = sent.id
    box = maildir(tmp_path / "bounces")
    drop(box, dsn(VERP.address(delivery, grace), "grace@example.org", "4.2.2"))
    assert fetch(site.engine, config(box), KEYS).counts["soft"] == 1
    assert site.status("grace@example.org") == "active"
    return grace


def test_the_bounce_reports_about_a_reader_are_in_their_data_and_go_with_the_erasure(
        site: Site, smtp_sink: Any, tmp_path: Path) -> None:
    """A bounce mailbox report about a reader's email (their mailbox was full: they
    still receive, so they can ask for the links) names their address and their mail
    server's words. Their download shows it, and their erasure deletes it: it stayed,
    its subscriber unset, with the address in it, in the database file the erasure
    promises to leave without the address."""
    grace = soft_bounced(site, tmp_path)
    client = httpx.Client(timeout=30)
    assert post_form(client, site.links.preferences(grace, "data"), {}).status_code == 200
    [mail] = mails_to(smtp_sink, "grace@example.org")
    [report] = client.get(link_in(mail, site, "data")).json()["mail_reports"]
    assert report["kind"] == "soft" and "4.2.2" in report["detail"]["reason"]
    assert post_form(client, site.links.mailbox_link("erase", grace), {}).status_code == 200
    with session_scope(site.engine) as s:
        assert s.scalars(select(MailReport.detail)).all() == []
    stored = Path(site.settings.database.url.removeprefix("sqlite:///"))
    for path in (stored, stored.with_name(stored.name + "-wal")):
        assert not path.exists() or b"grace@example.org" not in path.read_bytes(), path


def test_each_email_in_the_data_says_what_it_was_ranked_for_and_why_it_failed(
        site: Site, tmp_path: Path) -> None:
    """A delivery row keeps the keywords its papers were picked for and, when it went
    wrong, its mail server's reason: about the reader, so in their download (which
    gave only the day, status, papers and time)."""
    grace = soft_bounced(site, tmp_path)
    data = httpx.get(site.links.mailbox_link("data", grace), timeout=30).json()
    [delivery] = data["deliveries"]
    assert delivery["keywords"] == "attention"
    assert "4.2.2" in delivery["reason"] and delivery["error"] == ""


def test_the_erasure_pages_say_that_the_readers_own_sign_up_brings_them_back(
        site: Site, smtp_sink: Any) -> None:
    """After "delete me" the address can come back only through a sign-up its owner
    confirms (the kept hash stops imports and operators, not them). The erasure page
    said no one could subscribe it again, "you included", and the page after it that
    it "cannot be added again": a reader who later wants the digest back was told
    they never can, and then signing up worked."""
    client = httpx.Client(timeout=30)
    ada = site.sub_id("ada@example.org")
    assert post_form(client, site.links.preferences(ada, "erase"), {}).status_code == 200
    [mail] = mails_to(smtp_sink, "ada@example.org")
    erase = link_in(mail, site, "erase")
    offer = " ".join(client.get(erase).text.split())
    done = post_form(client, erase, {})
    assert done.status_code == 200 and site.status("ada@example.org") is None
    said = " ".join(done.text.split())
    for page in (offer, said):
        assert "you included" not in page and "cannot be added again" not in page, page
        assert "sign up again and confirm" in page, page
    post_form(client, site.url + "/", {"email": "ada@example.org", "keywords": "gnn",
                                       "tz": "UTC", "hour": "7"}, site.url + "/subscribe")
    site.wait_background()
    confirm = link_in(mails_to(smtp_sink, "ada@example.org")[-1], site, "confirm")
    back = post_form(client, confirm, {})
    assert back.status_code == 200 and site.status("ada@example.org") == "active"


@pytest.mark.slow  # an outside checker, a Perl process per message
def test_the_emailed_links_are_not_scored_as_spam(site: Site, smtp_sink: Any) -> None:
    """The data and erasure emails, as they reached the mailbox, through SpamAssassin
    (local tests only): a score of at most 0.0, as the digests have (test_mail.py)."""
    from .test_mail import spamassassin

    client = httpx.Client(timeout=30)
    for address, purpose in (("ada@example.org", "data"), ("grace@example.org", "erase")):
        sent = post_form(client, site.links.preferences(site.sub_id(address), purpose), {})
        assert sent.status_code == 200, sent.text
        [raw] = [data for rcpt, data in smtp_sink.messages if rcpt == address]
        score, rules = spamassassin(raw)
        assert score <= 0.0, (purpose, score, rules)
