"""The sign-up limits hold however many sign-ups arrive at once: the per-address ones
([web] confirm_interval_minutes, confirms_per_day) when the same address is typed by
several visitors together, and the all-clients one ([web] signups_per_hour) when
several web processes share one database. Real databases and real threads: the
races are PostgreSQL's (READ COMMITTED lets two transactions count the same events
before either commits)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from newsletter.config import WebConfig
from newsletter.service import subscribers
from newsletter.service.subscribers import CONFIRMATION_SENT, Reserved
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
