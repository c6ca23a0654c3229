"""The generic bounce webhook for the operator's own scripts: the URL's secret token
is the proof; hard, soft (counted toward [bounces] soft_limit like the mailbox's)
and complaint reports, by address or by the Message-ID a delivery was sent with."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import select

from newsletter.config import WebhooksConfig
from newsletter.store.db import session_scope
from newsletter.store.models import Delivery, Edition, Event, Subscriber
from newsletter.web.webhooks.base import Rejected, WebhookRequest
from newsletter.web.webhooks.generic import Generic

from .test_bounces_wiring import bounce_count
from .web_support import Site, running_site


@pytest.fixture
def site(world) -> Iterator[Site]:  # type: ignore[no-untyped-def]
    settings, engine = world
    with running_site(settings.replace(bounces={"soft_limit": 3}), engine) as s:
        yield s


def test_hard_soft_and_complaint_reports(site: Site) -> None:
    url = site.hook("generic")
    assert httpx.post(url[:-3] + "xyz", json={"email": "ada@example.org", "type": "hard"}
                      ).status_code == 404
    for bad in ({"email": "ada@example.org", "type": "medium"},
                {"email": "ada@example.org", "message_id": "<x@y>", "type": "hard"},
                {"type": "hard"}, [1], "x"):
        assert httpx.post(url, json=bad).status_code == 400, bad
    assert httpx.post(url, content=b"{not json").status_code == 400
    assert site.status("ada@example.org") == "active"

    hard = httpx.post(url, json={"email": "Ada@Example.org", "type": "hard",
                                 "reason": "550 5.1.1 no such user"})
    assert hard.status_code == 200 and hard.text == "1 subscribers updated"
    assert site.status("ada@example.org") == "bounced"

    before = bounce_count("soft")
    soft = {"email": "grace@example.org", "type": "soft", "reason": "452 mailbox full"}
    assert httpx.post(url, json=[soft, soft]).text == "0 subscribers updated"
    assert site.status("grace@example.org") == "active"
    assert httpx.post(url, json=soft).text == "1 subscribers updated"  # the third: soft_limit
    assert site.status("grace@example.org") == "bounced"
    assert bounce_count("soft") - before == 3

    alan = site.sub_id("alan@example.org")
    with session_scope(site.engine) as s:
        edition = Edition(day=dt.date(2026, 12, 1), slot="")
        s.add(edition)
        s.flush()
        s.add(Delivery(edition_id=edition.id, subscriber_id=alan,
                       day=edition.day, status="sent", message_id="<m.7@digest.example.org>"))
    complaint = {"message_id": "m.7@digest.example.org", "type": "complaint"}
    assert httpx.post(url, json=complaint).text == "1 subscribers updated"
    assert site.status("alan@example.org") == "complained"
    nobody = {"email": "nobody@example.org", "type": "hard"}
    assert httpx.post(url, json=nobody).text == "0 subscribers updated"

    with session_scope(site.engine) as s:
        event = s.scalars(select(Event).join(Subscriber, Subscriber.id == Event.subscriber_id)
                          .where(Subscriber.email == "ada@example.org",
                                 Event.kind == "bounced")).one()
        assert event.detail["by"] == "webhook:generic"
        assert event.detail["reason"] == "550 5.1.1 no such user"


def test_webhooks_urls_lists_the_generic_one(cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {"NEWSLETTER_DATABASE__URL": f"sqlite:///{tmp_path}/w.db",
           "NEWSLETTER_WEB__BASE_URL": "https://digest.example.org"}
    urls = json.loads(cli("webhooks", "urls", "--json", env=env).stdout)
    assert urls["generic"].startswith("https://digest.example.org/webhooks/generic/")
    rotated = cli("webhooks", "rotate", "generic", env=env)
    assert rotated.code == 0 and rotated.stdout.strip() != urls["generic"]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["email", "message_id", "type", "reason", "x"]), inner, max_size=4),
    max_leaves=20)


@hsettings(max_examples=100, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(JSON)
def test_any_json_is_accepted_or_refused_cleanly(value: Any) -> None:
    async def fetch(url: str) -> bytes:
        raise AssertionError(url)

    verifier = Generic(WebhooksConfig(), fetcher=fetch)
    try:
        notices = asyncio.run(verifier.accept(WebhookRequest({}, json.dumps(value).encode())))
    except Rejected as exc:
        assert exc.status == 400
    else:
        assert all(k.partition(":")[0] in ("hard", "soft", "complaint") for _, k in notices)
