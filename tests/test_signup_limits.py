"""The sign-up limits hold however many sign-ups arrive at once: the per-address ones
([web] confirm_interval_minutes, confirms_per_day) when the same address is typed by
several visitors together, and the all-clients and per-client ones ([web]
signups_per_hour, signups_per_client_per_hour) when several web processes share one
database. Real databases and real threads: the races are PostgreSQL's (READ COMMITTED
lets two transactions count the same events before either commits)."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, delete, func, select

from newsletter.config import WebConfig
from newsletter.service import subscribers
from newsletter.service.subscribers import CONFIRMATION_SENT, SIGN_UP_POSTED, Reserved
from newsletter.store.db import get_engine, session_scope
from newsletter.store.models import Event, Subscriber

RACERS = 8
ROUNDS = 15


def race(engine: Engine, work: Callable[[Any], Any], racers: int = RACERS) -> list[Any]:
    """``work(session)`` in ``racers`` threads at once, each in its own transaction on
    its own connection, released together; what each returned (or raised)."""
    start = threading.Barrier(racers)
    results: list[Any] = [None] * racers

    def one(i: int) -> None:
        try:
            with session_scope(engine) as s:
                if engine.dialect.name == "postgresql":  # (SQLite's one writer would
                    s.execute(select(1))  # hold the others before the start)
                start.wait(30)
                results[i] = work(s)
        except Exception as exc:  # noqa: BLE001 - the test reports it
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def confirmations(engine: Engine, address: str) -> int:
    with session_scope(engine) as s:
        return s.scalar(select(func.count(Event.id)).join(
            Subscriber, Subscriber.id == Event.subscriber_id).where(
            Subscriber.email == address, Event.kind == CONFIRMATION_SENT)) or 0


@pytest.mark.parametrize("known", [False, True], ids=["new-address", "known-address"])
@pytest.mark.parametrize("interval, per_day, allowed", [(15, 3, 1), (0, 3, 3)],
                         ids=["interval", "per-day"])
def test_sign_ups_of_one_address_at_once_send_no_more_than_its_limit(
        db_url: str, known: bool, interval: int, per_day: int, allowed: int) -> None:
    """Eight sign-ups of one address at the same moment, many times over: at most the
    limit's number of confirmations is reserved (one within the interval; with no
    interval, confirms_per_day), the rest are refused quietly (None, no error), and
    the events hold exactly the reservations made. Both a new address (no row to lock
    yet: the sign-ups race to create it) and one already known (an unsubscribed
    subscriber signing up again). On PostgreSQL, before the sign-ups were serialised,
    several sign-ups of a known address each counted no event and each sent a
    confirmation, and the racers for a new address failed on the duplicate row."""
    engine = get_engine(db_url)
    limits = WebConfig(confirm_interval_minutes=interval, confirms_per_day=per_day)
    for n in range(ROUNDS):
        address = f"victim{n}@example.org"
        if known:
            with session_scope(engine) as s:
                s.add(Subscriber(email=address, keywords="attention", status="unsubscribed"))
        form = subscribers.sign_up_form(address, "diffusion", "UTC", 7)
        results = race(engine, functools.partial(subscribers.sign_up, form=form, limits=limits))
        errors = [r for r in results if isinstance(r, Exception)]
        assert errors == [], f"round {n}: {errors[0]!r}"
        reserved = [r for r in results if isinstance(r, Reserved)]
        assert 1 <= len(reserved) <= allowed, f"round {n}: {len(reserved)} reserved"
        assert confirmations(engine, address) == len(reserved), f"round {n}"
        assert len({r.id for r in reserved}) == 1  # one subscriber row, however they raced


@pytest.mark.parametrize("limits, refused", [
    (WebConfig(signups_per_hour=3), "signups_per_hour"),
    (WebConfig(signups_per_client_per_hour=3), "signups_per_client_per_hour")],
    ids=["all-clients", "one-client"])
def test_sign_up_posts_at_once_take_no_more_than_the_hours_slots(
        pg_url: str, limits: WebConfig, refused: str) -> None:
    """Eight posts at once from one client, on PostgreSQL, many times over: exactly
    [web] signups_per_hour, or signups_per_client_per_hour, of them are let through
    (the rest refused by that limit), and the count holds them."""
    engine = get_engine(pg_url)
    for n in range(ROUNDS):
        with session_scope(engine) as s:
            s.execute(delete(Event).where(Event.kind == SIGN_UP_POSTED))
        results = race(engine, functools.partial(subscribers.take_sign_up_slot,
                                                  client="192.0.2.7", limits=limits))
        assert sorted(results, key=str) == [None] * 3 + [refused] * (RACERS - 3), (
            f"round {n}: {results}")
        with session_scope(engine) as s:
            assert s.scalar(select(func.count(Event.id)).where(
                Event.kind == SIGN_UP_POSTED)) == 3


def test_a_clients_sign_ups_are_counted_in_the_last_hour_only(sqlite_url: str) -> None:
    """[web] signups_per_client_per_hour counts the client's posts of the last hour:
    older ones are deleted and count no more, another client's never count, and an
    IPv6 client is its /64 (``client_key``), an IPv4-mapped one its IPv4 address."""
    import datetime as dt

    from newsletter.store.models import utcnow
    from newsletter.web.security import client_key

    engine = get_engine(sqlite_url)
    limits = WebConfig(signups_per_client_per_hour=2)
    hour_ago = utcnow() - dt.timedelta(minutes=61)
    with session_scope(engine) as s:
        for _ in range(2):
            s.add(Event(kind=SIGN_UP_POSTED, at=hour_ago, detail={"client": "192.0.2.7"}))

    def take(host: str) -> str | None:
        with session_scope(engine) as s:
            return subscribers.take_sign_up_slot(s, client_key(host), limits)

    assert [take("192.0.2.7"), take("::ffff:192.0.2.7"), take("192.0.2.7")] == [
        None, None, "signups_per_client_per_hour"]
    assert take("192.0.2.8") is None
    assert [take(f"2001:db8:aaaa:1::{i:x}") for i in range(1, 4)] == [
        None, None, "signups_per_client_per_hour"]
    assert take("2001:db8:aaaa:2::1") is None  # another /64
    with session_scope(engine) as s:
        assert s.scalar(select(func.count(Event.id)).where(
            Event.kind == SIGN_UP_POSTED, Event.at <= hour_ago)) == 0


def test_a_clients_sign_ups_are_counted_across_app_instances(
        db_url: str, tmp_path: Path) -> None:
    """Two web app instances on one database (as uvicorn's workers, or two hosts behind
    a load balancer): [web] signups_per_client_per_hour bounds one client's posts to
    both together, not to each; another client still signs up. Each instance counted
    in its own memory before, and a client had the limit once per instance."""
    from newsletter.config import Settings
    from newsletter.store.db import make_engine

    from .web_support import post_form, running_site

    settings = Settings().replace(
        database={"url": db_url}, outbox={"path": str(tmp_path / "outbox")},
        sender={"from_address": "digest@example.org"})
    engines = [get_engine(db_url), make_engine(db_url)]  # (two pools, as two processes)
    try:
        with running_site(settings, engines[0], signups_per_client_per_hour=3) as one, \
                running_site(settings, engines[1], signups_per_client_per_hour=3) as two:

            def sign_up(url: str, n: int, source: str = "127.0.0.1") -> int:
                transport = httpx.HTTPTransport(local_address=source)
                with httpx.Client(transport=transport, timeout=30) as c:
                    return post_form(c, url + "/subscribe", {
                        "email": f"crowd{n}@example.org", "keywords": "diffusion",
                        "tz": "UTC", "hour": "7"}).status_code

            sites = [one, two, one, two, one]
            codes = [sign_up(site.url, n) for n, site in enumerate(sites)]
            assert codes == [200, 200, 200, 429, 429]
            assert sign_up(two.url, 5, source="127.0.0.2") == 200
            one.wait_background()
            two.wait_background()
    finally:
        engines[1].dispose()


def test_the_hours_sign_ups_are_counted_across_web_processes(
        db_url: str, tmp_path: Path) -> None:
    """Two `newsletter web` processes on one database (as uvicorn's workers, or two
    hosts): [web] signups_per_hour bounds their posts together, not each one's. Each
    process counted in its own memory before, and the two let through twice the
    limit."""
    from .conftest import free_port
    from .test_admin import csrf_of
    from .test_hardening import wait_until_serving

    get_engine(db_url)  # migrated once, before both start
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")} | {
        "NEWSLETTER_DATABASE__URL": db_url, "NEWSLETTER_WEB__RENDER_PROCESSES": "0",
        "NEWSLETTER_WEB__SIGNUPS_PER_HOUR": "3",
        "NEWSLETTER_OUTBOX__PATH": str(tmp_path / "outbox")}
    bases, procs = [], []
    try:
        for _ in range(2):
            port = free_port()
            bases.append(f"http://127.0.0.1:{port}")
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "newsletter", "web", "--port", str(port)],
                env=env | {"NEWSLETTER_WEB__BASE_URL": bases[-1]},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for base in bases:
            wait_until_serving(base)

        def sign_up(base: str, n: int) -> int:
            with httpx.Client(base_url=base, timeout=30) as c:
                token = csrf_of(c, "/subscribe")
                return c.post("/subscribe", data={
                    "csrf": token, "email": f"crowd{n}@example.org", "keywords": "diffusion",
                    "tz": "UTC", "hour": "7"}).status_code

        first, second = bases
        assert [sign_up(first, 0), sign_up(first, 1)] == [200, 200]
        assert [sign_up(second, 2), sign_up(second, 3), sign_up(first, 4)] == [200, 429, 429]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
