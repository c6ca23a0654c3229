"""One edition per subscriber per day, enforced by the database, whichever of `send`,
`send --slot`, `run` and workers ask; hourly slots that catch up by local day; a
graceful stop on SIGTERM; `send` before any ingest; `preview` in an empty folder."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, insert, select
from sqlalchemy import update as sqlalchemy_update
from sqlalchemy.exc import IntegrityError

from newsletter.app import App
from newsletter.config import Settings
from newsletter.delivery.edition import EditionConfig
from newsletter.delivery.scheduler import send_slot
from newsletter.delivery.slots import due_by_day, late_by_day, local_send_time
from newsletter.service.ingest import ingest
from newsletter.store.db import get_engine, session_scope
from newsletter.store.models import Delivery, Edition, Subscriber
from newsletter.store.subscribers import add

from .conftest import ROOT, SmtpSink
from .editions_support import run_preview, run_send

DAY = dt.date(2025, 12, 26)
SAMPLE = str(ROOT / "newsletter" / "data" / "sample_papers.json")
FEW = str(ROOT / "tests" / "payloads" / "dailypapers.json")  # 3 papers: quick editions


def populate(url: str, people: list[tuple[str, str, int]], papers: str = FEW) -> Settings:
    settings = Settings().replace(database={"url": url})
    engine = get_engine(url)
    with session_scope(engine) as s:
        ingest(settings.sources, s, [papers])
    with session_scope(engine) as s:
        for email, tz, hour in people:
            add(s, email, keywords="attention, diffusion", tz=tz, hour=hour)
    return settings


def cli_env(url: str, sink: SmtpSink | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env["NEWSLETTER_DATABASE__URL"] = url
    if sink is not None:
        env.update({"NEWSLETTER_TRANSPORT__BACKEND": "smtp",
                    "NEWSLETTER_SMTP__HOST": sink.host,
                    "NEWSLETTER_SMTP__PORT": str(sink.port),
                    "NEWSLETTER_TRANSPORT__BACKOFF_SECONDS": "0.01"})
    env.update(extra)
    return env


# ---- 1. the database allows one row per subscriber and day -------------------------


def test_the_database_refuses_a_second_row_for_the_same_day(db_url: str) -> None:
    populate(db_url, [("one@example.org", "UTC", 7)])
    engine = get_engine(db_url)
    with session_scope(engine) as s:
        sub_id = s.scalar(select(Subscriber.id))
        e1 = Edition(day=DAY, slot="", cutoff=dt.datetime(2025, 1, 1))
        e2 = Edition(day=DAY, slot="07", cutoff=dt.datetime(2025, 1, 1))
        s.add_all([e1, e2])
        s.flush()
        ids = (e1.id, e2.id)
    row = {"subscriber_id": sub_id, "day": DAY, "entry_ids": [], "details": {},
           "status": "pending", "reason": "", "attempts": 0, "last_error": "",
           "message_id": "", "lease_owner": ""}
    with session_scope(engine) as s:
        s.execute(insert(Delivery), [{**row, "edition_id": ids[0]}])
    with pytest.raises(IntegrityError), session_scope(engine) as s:
        s.execute(insert(Delivery), [{**row, "edition_id": ids[1]}])  # another edition, same day


@pytest.mark.slow  # ~4 s: two `newsletter send` processes
def test_slot_send_and_plain_send_at_once_send_each_person_once(
        db_url: str, smtp_sink: SmtpSink, tmp_path: Path) -> None:
    """`send --slot 07` and `send` as two real processes at the same moment, against a
    counting SMTP sink: exactly one message per subscriber (before: two editions and
    every subscriber twice)."""
    people = [(f"p{i}@example.org", "UTC", 7) for i in range(60)]
    populate(db_url, people)
    smtp_sink.delay = 0.005
    env = cli_env(db_url, smtp_sink, NEWSLETTER_SMTP__CONNECTIONS="2")
    base = [sys.executable, "-m", "newsletter", "send", "--yes", "--force",
            "--date", DAY.isoformat()]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
             for cmd in (base + ["--slot", "07"], base)]
    errs = [p.communicate(timeout=180)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    counts = {email: smtp_sink.count(email) for email, _, _ in people}
    assert set(counts.values()) == {1}, {k: v for k, v in counts.items() if v != 1}
    assert len(smtp_sink.messages) == len(people)
    with session_scope(get_engine(db_url)) as s:
        per = s.execute(select(Delivery.subscriber_id, func.count())
                        .group_by(Delivery.subscriber_id, Delivery.day)).all()
    assert {n for _, n in per} == {1} and len(per) == len(people)


def test_every_combination_of_runs_sends_once(db_url: str, tmp_path: Path) -> None:
    """send, send --slot (each hour), and the daemon's slot function, one after another
    and in any order: one row and one message per subscriber and day."""
    people = [("utc7@example.org", "UTC", 7), ("kol@example.org", "Asia/Kolkata", 9),
              ("ny@example.org", "America/New_York", 6)]
    settings = populate(db_url, people).replace(outbox={"path": str(tmp_path / "out")})
    engine = get_engine(db_url)
    app = App(settings, engine)
    send_slot(app, dt.datetime(2025, 12, 26, 7, tzinfo=dt.UTC))
    run_send(settings, engine, DAY)
    for hour in range(24):
        run_send(settings, engine, DAY, slot=f"{hour:02d}")
    run_send(settings, engine, DAY)
    with session_scope(engine) as s:
        rows = s.execute(select(Subscriber.email, Delivery.day, Delivery.status)
                         .join(Delivery)).all()
    per_day: dict[tuple[str, dt.date | None], int] = {}
    for email, day, _ in rows:
        per_day[(email, day)] = per_day.get((email, day), 0) + 1
    assert set(per_day.values()) == {1}
    assert {e for (e, d) in per_day if d == DAY} == {p[0] for p in people}
    eml = list((tmp_path / "out").glob("*.eml"))
    assert len(eml) == sum(1 for *_, status in rows if status == "sent")


# ---- 5. send before any ingest -----------------------------------------------------


def test_send_before_ingest_leaves_the_day_open(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    first = cli("send", "--yes")
    assert first.code == 0, first.stderr
    assert "no papers stored yet" in first.stderr and "newsletter ingest" in first.stderr
    assert cli("ingest", SAMPLE).code == 0
    assert cli("subscribers", "add", "ada@example.org", "--keywords", "diffusion").code == 0
    again = cli("send", "--yes")
    assert again.code == 0, again.stderr
    assert "planned 1" in again.stderr and "sent 1" in again.stderr
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 1
    # nothing new since: said so, and nothing planned
    third = cli("send", "--yes", "--date", (dt.date.today() + dt.timedelta(days=1)).isoformat())
    assert "no new papers since the last edition on" in third.stderr, third.stderr
    status = cli("status")
    assert "sent 1" in status.stdout and "no papers matched" not in status.stdout


def test_empty_picks_say_the_true_reason(world) -> None:  # type: ignore[no-untyped-def]
    settings, engine = world
    run_send(settings.replace(ranking={"trending": "none"}), engine, DAY)
    with session_scope(engine) as s:
        reasons = set(s.scalars(select(Delivery.reason).where(Delivery.status == "skipped")))
    assert reasons == {"no paper matched the profile (trending section off)"}


# ---- 6. preview never creates a database -------------------------------------------


def test_preview_in_an_empty_folder_creates_nothing(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = cli("preview")
    assert result.code != 0
    assert "no database yet" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "subscribers.db").exists()
    assert not list(tmp_path.iterdir())


_VOTE_LINK = re.compile(r"/feedback/up/[^/\s]+/([^\s\"<>]+)")


def _papers_by_reader(folder: Path) -> dict[str, list[str]]:
    """Each .eml's recipient and the papers it offers, in order (by their vote links)."""
    out = {}
    for path in folder.glob("*.eml"):
        msg = message_from_bytes(path.read_bytes(), policy=default_policy)
        text = msg.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
        out[str(msg["To"]).rpartition("<")[2].rstrip(">")] = _VOTE_LINK.findall(text)
    return out


def test_preview_of_a_slot_shows_what_that_slot_sends(db_url: str, tmp_path: Path) -> None:
    """`preview --slot HH` renders what `send --slot HH` then sends: the same readers
    (whose local time has passed, catch-up included), the same papers in the same
    order; later slots' previews leave out who has had the day's email."""
    people = [("utc7@example.org", "UTC", 7), ("kol@example.org", "Asia/Kolkata", 9),
              ("ny@example.org", "America/New_York", 6)]
    settings = populate(db_url, people, SAMPLE).replace(outbox={"path": str(tmp_path / "out")})
    engine = get_engine(db_url)
    report = run_preview(settings, engine, DAY, tmp_path / "pv07", slot="7")
    shown = _papers_by_reader(tmp_path / "pv07")
    # at 07 UTC, 07:00 in UTC and 12:30 in Kolkata have come; 06:00 in New York has not
    assert set(shown) == {"utc7@example.org", "kol@example.org"}, report.note
    assert all(shown.values())
    nobody = run_preview(settings, engine, DAY, tmp_path / "none", slot="07",
                         email="ny@example.org")
    assert "not due in that slot" in nobody.note and not nobody.outcomes
    assert run_send(settings, engine, DAY, slot="07").report.counts["sent"] == 2
    assert _papers_by_reader(tmp_path / "out") == shown
    later = run_preview(settings, engine, DAY, tmp_path / "pv11", slot="11")
    assert set(_papers_by_reader(tmp_path / "pv11")) == {"ny@example.org"}
    assert later.candidates > 0
    with session_scope(engine) as s:  # the previews wrote nothing
        assert s.scalar(select(func.count()).select_from(Delivery)) == 2


def daily_and_weekdays(url: str, tmp_path: Path, **where: Any
                       ) -> tuple[Settings, Any, list[dict[str, Any]]]:
    """A daily (d@) and a weekdays (w@) reader with the same keywords, at ``where``'s
    zone and hour; no papers yet. The settings (an outbox in ``tmp_path``), the engine
    and the sample papers to ingest day by day."""
    settings = Settings().replace(database={"url": url}, outbox={"path": str(tmp_path / "out")})
    engine = get_engine(url)
    with session_scope(engine) as s:
        for email_, freq in (("d@example.org", "daily"), ("w@example.org", "weekdays")):
            add(s, email_, keywords="diffusion, language models, graph, transformer",
                frequency=freq, **where)
    return settings, engine, json.loads(Path(SAMPLE).read_text())


def day_by_day(settings: Settings, engine: Any, tmp_path: Path, papers: list[Any],
               first: dt.date, days: int, sent: range | None = None) -> None:
    """60 more of ``papers`` ingested on each of ``days`` days from ``first``, each day
    (those in ``sent``: every one by default) sent after its papers came."""
    for i in range(days):
        chunk = tmp_path / f"day{i}.json"
        chunk.write_text(json.dumps(papers[i * 60:(i + 1) * 60]))
        with session_scope(engine) as s:
            ingest(settings.sources, s, [str(chunk)])
        if sent is None or i in sent:
            run_send(settings, engine, first + dt.timedelta(days=i))


def test_hourly_slots_give_a_weekdays_monday_the_weekends_papers(db_url: str,
                                                                tmp_path: Path) -> None:
    """The daemon's path: a daily and a weekdays reader in Kolkata at 09:00 (the 04 UTC
    slot), papers each day from Friday to Monday. On Monday the weekdays reader's
    email ranks the papers since their Friday one (Saturday's and Sunday's compete with
    Monday's); the daily reader's ranks Monday's alone."""
    settings, engine, papers = daily_and_weekdays(db_url, tmp_path, tz="Asia/Kolkata", hour=9)
    friday = dt.date(2026, 3, 6)
    arrived: dict[str, int] = {}
    for i in range(4):
        chunk = tmp_path / f"day{i}.json"
        chunk.write_text(json.dumps(papers[i * 60:(i + 1) * 60]))
        arrived.update({p["id"]: i for p in papers[i * 60:(i + 1) * 60]})
        with session_scope(engine) as s:
            ingest(settings.sources, s, [str(chunk)])
        run_send(settings, engine, friday + dt.timedelta(days=i), slot="04")
    with session_scope(engine) as s:
        rows = s.execute(select(Subscriber.email, Delivery.day, Delivery.entry_ids,
                                Delivery.details).join(Delivery)).all()
    days = {(e, d): ({arrived[i] for i in ids}, details) for e, d, ids, details in rows}
    monday = friday + dt.timedelta(days=3)
    assert sorted(d for e, d in days if e == "w@example.org") == [friday, monday]
    assert len([d for e, d in days if e == "d@example.org"]) == 4
    weekend, details = days["w@example.org", monday]
    assert weekend & {1, 2} and weekend <= {1, 2, 3}, weekend
    assert details == {"trending": False, "gap": True}
    assert days["d@example.org", monday][0] == {3}


def test_a_weekdays_monday_row_keeps_its_papers_for_a_later_worker(db_url: str,
                                                                   tmp_path: Path) -> None:
    """`send --queue` plans Monday, then a worker delivers: by then the only weekdays
    reader has switched to daily, yet their planned row is rendered over the papers it
    was ranked over (the weekend's with Monday's), none dropped."""
    from newsletter.service.editions import deliver_edition, plan_edition
    from newsletter.transports import make_transport

    settings, engine, papers = daily_and_weekdays(db_url, tmp_path)
    friday = dt.date(2026, 3, 6)
    # sent: Friday, and the daily reader's Saturday and Sunday
    day_by_day(settings, engine, tmp_path, papers, friday, 4, sent=range(3))
    config = EditionConfig.of(settings)
    planned = plan_edition(config, engine, friday + dt.timedelta(days=3))
    assert planned.edition is not None and planned.plan.planned == 2
    with session_scope(engine) as s:
        s.execute(sqlalchemy_update(Subscriber).values(frequency="daily"))
        [ids] = s.scalars(select(Delivery.entry_ids).where(
            Delivery.status == "pending", Delivery.details["gap"].as_boolean().is_(True)))
    report = deliver_edition(config, engine, planned.edition.id, make_transport(settings))
    assert report is not None and report.counts["sent"] == 2
    sent = [message_from_bytes(p.read_bytes(), policy=default_policy)
            for p in (tmp_path / "out").glob("*.eml")]
    texts = [m.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
             for m in sent if "w@example.org" in str(m["To"])]
    [monday] = [t for t in texts if "March 9" in t]
    shown = [unquote(p) for p in _VOTE_LINK.findall(monday)]
    assert len(ids) > 4 and len(shown) == len(ids) and set(shown) == set(ids), (shown, ids)


def test_preview_shows_rows_planned_earlier_that_send_would_deliver(db_url: str,
                                                                     tmp_path: Path) -> None:
    """An edition planned and not delivered (`send --queue` before its workers, or a
    send stopped midway): send delivers its rows as planned, so preview shows them,
    with or without a slot, for everyone or one subscriber."""
    from newsletter.service.editions import plan_edition

    people = [("a@example.org", "UTC", 7), ("b@example.org", "UTC", 7)]
    settings = populate(db_url, people, SAMPLE).replace(outbox={"path": str(tmp_path / "out")})
    engine = get_engine(db_url)
    planned = plan_edition(EditionConfig.of(settings), engine, DAY, "07")
    assert planned.plan.planned == 2
    report = run_preview(settings, engine, DAY, tmp_path / "pv", slot="07")
    assert not report.note and {o.job.recipient.email for o in report.outcomes} == {
        "a@example.org", "b@example.org"}
    one = run_preview(settings, engine, DAY, tmp_path / "one", slot="07", email="b@example.org")
    assert [o.job.recipient.email for o in one.outcomes] == ["b@example.org"]
    shown = _papers_by_reader(tmp_path / "pv")
    assert run_send(settings, engine, DAY, slot="07").report.counts["sent"] == 2
    assert _papers_by_reader(tmp_path / "out") == shown
    after = run_preview(settings, engine, DAY, tmp_path / "after", slot="07")
    assert "nothing to send" in after.note and not after.outcomes


def test_preview_of_a_slot_owing_a_late_day_shows_one_email(db_url: str,
                                                             tmp_path: Path) -> None:
    """With a catch-up window over a day, one slot can owe a reader both yesterday
    (late) and today: send plans the late day and finds today's row refused (one row
    per edition and reader); preview shows that one email, not two."""
    settings = populate(db_url, [("u@example.org", "UTC", 7)], SAMPLE).replace(
        outbox={"path": str(tmp_path / "out")}, schedule={"catch_up_hours": 30})
    engine = get_engine(db_url)
    monday, wednesday = dt.date(2026, 12, 7), dt.date(2026, 12, 9)
    assert run_send(settings, engine, monday, slot="07").report.counts["sent"] == 1
    report = run_preview(settings, engine, wednesday, tmp_path / "pv", slot="10")
    assert [o.job.day for o in report.outcomes] == [wednesday - dt.timedelta(days=1)]
    summary = run_send(settings, engine, wednesday, slot="10")
    assert summary.report.counts["sent"] == 1 and summary.plan.already == 1


@pytest.mark.parametrize("hour", ["24", "\u00b2", "-1"])  # "²" is a digit to str.isdigit
def test_preview_and_send_refuse_a_slot_that_is_no_hour(cli, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                         hour: str) -> None:
    assert cli("ingest", FEW).code == 0
    for command in ("preview", "send"):
        result = cli(command, "--slot", hour, "--yes") if command == "send" else cli(
            command, "--slot", hour)
        assert result.code != 0 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.strip().splitlines()[-1] == (
            f"error: --slot: expected a UTC hour 00-23, got {hour!r}"), result.stderr
    assert not (tmp_path / "preview").exists() and not (tmp_path / "outbox").exists()


def test_plan_reports_true_counts(db_url: str, tmp_path: Path) -> None:
    """Planned, skipped and the rows written agree, on both databases (the PostgreSQL
    plan writes its rows as arrays in one statement per chunk)."""
    people = [(f"c{i}@example.org", "UTC", 7) for i in range(5)]
    settings = populate(db_url, people, SAMPLE).replace(
        outbox={"path": str(tmp_path / "out")}, ranking={"trending": "none"})
    engine = get_engine(db_url)
    with session_scope(engine) as s:
        add(s, "nothing@example.org", keywords="zymurgy")
    summary = run_send(settings, engine, DAY)
    assert (summary.plan.planned, summary.plan.skipped, summary.plan.already) == (5, 1, 0)
    with session_scope(engine) as s:
        rows = s.execute(select(Subscriber.email, Delivery.status, Delivery.entry_ids,
                                Delivery.details).join(Delivery)).all()
    assert sorted(st for _, st, _, _ in rows) == ["sent"] * 5 + ["skipped"]
    assert all(ids and det == {"trending": False} for e, _, ids, det in rows
               if e != "nothing@example.org")


# ---- 7. hourly slots: catch-up by local day, DST, odd offsets ----------------------


def utc(y: int, m: int, d: int, h: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(y, m, d, h, minute, tzinfo=dt.UTC)


def test_due_times_across_zones() -> None:
    # Kolkata (+05:30): 09:00 local is 03:30 UTC, so due from the 04 UTC slot
    assert due_by_day(utc(2026, 3, 29, 3), [("Asia/Kolkata", 9)]) == {}
    assert due_by_day(utc(2026, 3, 29, 4), [("Asia/Kolkata", 9)]) == {
        dt.date(2026, 3, 29): [("Asia/Kolkata", 9)]}
    # UTC+14: 07:00 on the 29th is 17:00 UTC on the 28th
    assert local_send_time(dt.date(2026, 3, 29), 7, "Pacific/Kiritimati") == utc(2026, 3, 28, 17)
    assert due_by_day(utc(2026, 3, 28, 17), [("Pacific/Kiritimati", 7)]) == {
        dt.date(2026, 3, 29): [("Pacific/Kiritimati", 7)]}
    # UTC-11: 07:00 on the 29th is 18:00 UTC on the 29th
    assert due_by_day(utc(2026, 3, 29, 17), [("Pacific/Pago_Pago", 7)]) == {}
    assert due_by_day(utc(2026, 3, 29, 18), [("Pacific/Pago_Pago", 7)]) == {
        dt.date(2026, 3, 29): [("Pacific/Pago_Pago", 7)]}


@settings(max_examples=200, deadline=None)
@given(tz=st.sampled_from(["Europe/London", "America/New_York", "Asia/Kolkata",
                           "Pacific/Kiritimati", "Pacific/Pago_Pago", "Australia/Lord_Howe",
                           "America/St_Johns", "Asia/Kathmandu"]),
       hour=st.integers(0, 23),
       start=st.dates(dt.date(2025, 1, 1), dt.date(2027, 12, 31)))
def test_hourly_slots_give_every_local_day_exactly_once(tz: str, hour: int,
                                                        start: dt.date) -> None:
    """Run every UTC hour for four days, sending to whoever is due and remembering who
    had which local day: each local day inside the window is served exactly once, at
    or after its send time and within the hour after it."""
    had: dict[dt.date, dt.datetime] = {}
    moment = dt.datetime(start.year, start.month, start.day, tzinfo=dt.UTC)
    for _ in range(24 * 4):
        for day in due_by_day(moment, [(tz, hour)]):
            if day not in had:
                had[day] = moment
        moment += dt.timedelta(hours=1)
    from zoneinfo import ZoneInfo

    first_local = (dt.datetime(start.year, start.month, start.day, tzinfo=dt.UTC)
                   .astimezone(ZoneInfo(tz)).date())
    for offset in range(1, 3):  # the local days wholly inside the window
        day = first_local + dt.timedelta(days=offset)
        assert day in had, (tz, hour, day)
        due = local_send_time(day, hour, tz)
        assert due <= had[day] < due + dt.timedelta(hours=1), (tz, hour, day, had[day])


@pytest.mark.parametrize("day", [dt.date(2026, 3, 29), dt.date(2026, 10, 25)],
                         ids=["clocks-forward", "clocks-back"])
@pytest.mark.slow  # ~1.5 s each: 24 slot sends
def test_all_24_slots_on_a_dst_day_reach_every_hour_once(sqlite_url: str, tmp_path: Path,
                                                         day: dt.date) -> None:
    """London, every send hour 0-23, all 24 `--slot HH --date D` runs on the day the
    clocks change: each subscriber gets that local day's edition exactly once (before:
    only one of them got mail when clocks went forward)."""
    people = [(f"h{h}@example.org", "Europe/London", h) for h in range(24)]
    settings = populate(sqlite_url, people).replace(outbox={"path": str(tmp_path / "out")})
    engine = get_engine(sqlite_url)
    for hour in range(24):
        run_send(settings, engine, day, slot=f"{hour:02d}")
    with session_scope(engine) as s:
        rows = s.execute(select(Subscriber.email, Delivery.day).join(Delivery)).all()
    on_day = sorted(e for e, d in rows if d == day)
    assert on_day == sorted(p[0] for p in people)
    assert len(rows) == len(set(rows))


@pytest.mark.slow  # ~2.5 s: several slots of sends
def test_daemon_restarted_after_a_three_hour_outage_catches_up(world) -> None:  # type: ignore[no-untyped-def]
    """The daemon is down for the 05, 06 and 07 UTC slots; its first slot back (08)
    sends to everyone whose hour passed meanwhile. Late, never lost."""
    settings, engine = world
    with session_scope(engine) as s:
        for h in (5, 6, 7):
            add(s, f"out{h}@example.org", keywords="attention", tz="Europe/London", hour=h)
    app = App(settings, engine)
    for hour in range(5):
        send_slot(app, utc(2025, 12, 26, hour))
    with session_scope(engine) as s:
        before = set(s.scalars(select(Subscriber.email).join(Delivery)
                               .where(Delivery.day == DAY)))
    assert not {"out5@example.org", "out6@example.org", "out7@example.org"} & before
    send_slot(app, utc(2025, 12, 26, 8))
    with session_scope(engine) as s:
        after = dict(s.execute(select(Subscriber.email, Delivery.status).join(Delivery)
                               .where(Delivery.day == DAY)).all())
    for h in (5, 6, 7):
        assert after[f"out{h}@example.org"] == "sent"


def test_late_previous_day_only_within_the_look_back() -> None:
    late = late_by_day(utc(2025, 12, 27, 2), [("UTC", 23), ("UTC", 1), ("Asia/Kolkata", 23)],
                       dt.timedelta(hours=24))
    # UTC 23:00 on the 26th passed 3 h ago; UTC 01:00 on the 26th is 25 h ago; Kolkata
    # 23:00 on the 26th was 17:30 UTC, within the day of look-back
    assert late == {dt.date(2025, 12, 26): [("UTC", 23), ("Asia/Kolkata", 23)]}
    assert late_by_day(utc(2025, 12, 27, 2), [("UTC", 23)], dt.timedelta(hours=2)) == {}
    assert late_by_day(utc(2025, 12, 27, 2), [("UTC", 23)], dt.timedelta(0)) == {}


@pytest.mark.slow  # ~10 s: a day of hourly sends
def test_outage_across_the_subscribers_midnight_sends_that_day_late(world) -> None:  # type: ignore[no-untyped-def]
    """The daemon is down from 22:30 to 02:00 UTC: the 23:00 subscriber's day is not
    skipped; it goes out at the first slot back, once. Nobody is sent a day that was
    never theirs: the daemon's first start does not send yesterday, nor is anyone who
    had no edition before sent one late."""
    settings, engine = world
    before = DAY - dt.timedelta(days=1)
    with session_scope(engine) as s:
        add(s, "late@example.org", keywords="attention", tz="UTC", hour=23)
        add(s, "new@example.org", keywords="attention", tz="UTC", hour=23)
    app = App(settings, engine)

    def days(email: str) -> list[tuple[dt.date, str]]:
        with session_scope(engine) as s:
            return sorted((d, st) for d, st in s.execute(
                select(Delivery.day, Delivery.status).join(Subscriber)
                .where(Subscriber.email == email)).all())

    send_slot(app, utc(2025, 12, 26, 0))  # first start: no catch-up of the 24th
    assert days("late@example.org") == days("new@example.org") == []
    run_send(settings, engine, before, slot="23")  # the 25th went out to late@ only
    with session_scope(engine) as s:
        s.execute(Delivery.__table__.delete().where(Delivery.subscriber_id.in_(
            select(Subscriber.id).where(Subscriber.email == "new@example.org"))))
    assert [d for d, _ in days("late@example.org")] == [before]
    for hour in range(1, 23):
        send_slot(app, utc(2025, 12, 26, hour))
    send_slot(app, utc(2025, 12, 27, 2))  # first slot back after 22:30-02:00
    assert days("late@example.org") == [(before, "sent"), (DAY, "sent")]
    assert days("new@example.org") == []
    for hour in range(3, 23):  # the rest of the 27th sends nobody the 26th again
        send_slot(app, utc(2025, 12, 27, hour))
    assert days("late@example.org") == [(before, "sent"), (DAY, "sent")]


def test_a_day_missed_while_paused_is_not_sent_late_after_resuming(
        world, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """Two 23:00 readers had the 25th. On the 26th one pauses before 23:00 and resumes
    at 23:30; the other pauses and resumes before 23:00, and the daemon is down from
    22:30 to 02:00. At 02:00 the second is owed the 26th late, the first is not: that
    day's send time passed while they were paused (before, they were sent it on
    resuming, a day they had asked not to get)."""
    from newsletter.store import lifecycle

    settings, engine = world
    before = DAY - dt.timedelta(days=1)
    with session_scope(engine) as s:
        add(s, "paused@example.org", keywords="attention", tz="UTC", hour=23)
        add(s, "back@example.org", keywords="attention", tz="UTC", hour=23)
    run_send(settings, engine, before, slot="23")
    app = App(settings, engine)

    def at(when: dt.datetime, email: str, change: str) -> None:
        monkeypatch.setattr(lifecycle, "utcnow", lambda: when.replace(tzinfo=None))
        with session_scope(engine) as s:
            sub = s.scalar(select(Subscriber).where(Subscriber.email == email))
            assert sub is not None
            assert getattr(lifecycle, change)(s, sub, by="test")

    at(utc(2025, 12, 26, 21), "paused@example.org", "pause")
    at(utc(2025, 12, 26, 21), "back@example.org", "pause")
    at(utc(2025, 12, 26, 22), "back@example.org", "resume")
    for hour in range(0, 23):
        send_slot(app, utc(2025, 12, 26, hour))
    at(utc(2025, 12, 26, 23, 30), "paused@example.org", "resume")
    send_slot(app, utc(2025, 12, 27, 2))  # the first slot back after 22:30-02:00
    with session_scope(engine) as s:
        days = {e: sorted(s.scalars(select(Delivery.day).join(Subscriber)
                                    .where(Subscriber.email == e)))
                for e in ("paused@example.org", "back@example.org")}
    assert days == {"paused@example.org": [before], "back@example.org": [before, DAY]}


@pytest.mark.slow  # ~2.5 s: several days of sends
def test_without_catch_up_the_missed_day_is_skipped(world) -> None:  # type: ignore[no-untyped-def]
    """The behaviour the look-back exists for: with it off, the outage loses the day."""
    settings, engine = world
    settings = settings.replace(schedule={"catch_up_hours": 0})
    with session_scope(engine) as s:
        add(s, "late@example.org", keywords="attention", tz="UTC", hour=23)
    run_send(settings, engine, DAY - dt.timedelta(days=1), slot="23")
    send_slot(App(settings, engine), utc(2025, 12, 27, 2))
    with session_scope(engine) as s:
        got = set(s.scalars(select(Delivery.day).join(Subscriber)
                            .where(Subscriber.email == "late@example.org")))
    assert got == {DAY - dt.timedelta(days=1)}


# ---- 3. SIGTERM / SIGINT -----------------------------------------------------------


@pytest.mark.slow  # ~4 s each: a `newsletter send` process
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_signal_during_send_finishes_in_flight_and_exits_documented_code(
        db_url: str, smtp_sink: SmtpSink, tmp_path: Path, sig: signal.Signals) -> None:
    people = [(f"s{i}@example.org", "UTC", 7) for i in range(40)]
    populate(db_url, people)
    smtp_sink.delay = 0.15
    env = cli_env(db_url, smtp_sink, NEWSLETTER_SMTP__CONNECTIONS="2")
    stderr = signalled_send(db_url, smtp_sink, tmp_path, env, people, sig, wait=4, timeout=30)
    assert "sent " in stderr


def signalled_send(db_url: str, smtp_sink: SmtpSink, tmp_path: Path, env: dict[str, str],
                   people: list[tuple[str, str, int]], sig: signal.Signals, *, wait: int,
                   timeout: float, extra: tuple[str, ...] = ()) -> str:
    """`newsletter send` (with ``extra`` options) signalled once ``wait`` messages
    arrived: it exits with the signal's code and says so without a traceback; what was
    in flight finished and was recorded, the rest released (nothing left ``sending``);
    the rerun sends the rest, everyone once. The first run's stderr."""
    cmd = [sys.executable, "-m", "newsletter", "send", "--yes", "--force",
           "--date", DAY.isoformat(), *extra]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    smtp_sink.wait_for(wait)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=timeout)
    assert proc.returncode == 128 + sig, stderr
    assert f"stopped by signal {int(sig)}" in stderr
    assert "Traceback" not in stderr
    got = len(smtp_sink.messages)
    assert got < len(people)
    with session_scope(get_engine(db_url)) as s:
        counts = dict(s.execute(select(Delivery.status, func.count())
                                .group_by(Delivery.status)).all())
    assert counts.get("sending", 0) == 0, counts
    assert counts.get("sent") == got, counts
    # what it says is left is what is left: the rows given back and those never claimed
    # (it once counted only the rows given back)
    said = re.search(r"stopped by signal \d+: (\d+) deliver(?:y|ies) still to send", stderr)
    assert said is not None and int(said.group(1)) == counts.get("pending", 0), stderr
    smtp_sink.delay = 0
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0, again.stderr
    assert {smtp_sink.count(p[0]) for p in people} == {1}
    return stderr


@pytest.mark.slow  # ~2 s: a `newsletter run` process
def test_sigterm_stops_the_daemon_cleanly(db_url: str, smtp_sink: SmtpSink,
                                          tmp_path: Path) -> None:
    """`newsletter run` catches up the current slot at start; SIGTERM in the middle
    finishes what is in flight, leaves nothing `sending`, and exits 0."""
    people = [(f"d{i}@example.org", "UTC", 0) for i in range(30)]  # always due
    populate(db_url, people)
    smtp_sink.delay = 0.15
    env = cli_env(db_url, smtp_sink, NEWSLETTER_SMTP__CONNECTIONS="1")
    # --force: the test's sender (@localhost) and http links are what the gate refuses
    proc = subprocess.Popen([sys.executable, "-m", "newsletter", "run", "--force"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    smtp_sink.wait_for(3)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "stopped by signal 15" in stderr
    with session_scope(get_engine(db_url)) as s:
        counts = dict(s.execute(select(Delivery.status, func.count())
                                .group_by(Delivery.status)).all())
    assert counts.get("sending", 0) == 0
    assert counts.get("sent") == len(smtp_sink.messages) < len(people)


@pytest.mark.slow  # ~3 s: a `newsletter run` process
def test_the_daemon_holds_the_compliance_gate_that_send_holds(db_url: str,
                                                              smtp_sink: SmtpSink,
                                                              tmp_path: Path) -> None:
    """`newsletter send` refuses non-compliant mail through a real transport; the
    scheduler must not send it either. Without --force the daemon says why at start
    (each problem, as `send` names them), plans and sends nothing, not even the
    catch-up slot that --force sends at once (the test above), stays up, and stops
    cleanly."""
    populate(db_url, [(f"g{i}@example.org", "UTC", 0) for i in range(5)])  # all due
    env = cli_env(db_url, smtp_sink)
    proc = subprocess.Popen([sys.executable, "-m", "newsletter", "run"], cwd=tmp_path,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:  # up to the jobs' announcement: the scheduler has started
        lines.append(line)
        if "scheduled: send this hour's slot" in line:
            break
    time.sleep(2.0)  # a catch-up slot runs at once: with --force 5 emails by now
    proc.send_signal(signal.SIGTERM)
    rest = proc.communicate(timeout=30)[1]
    stderr = "".join(lines) + rest
    assert proc.returncode == 0, stderr
    refused = [ln for ln in stderr.splitlines() if "refusing to send through smtp" in ln]
    assert refused, stderr
    for problem in ("web.base_url", "sender.from_address", "sender.postal_address"):
        assert problem in refused[0], refused[0]
    assert "--force" in refused[0]
    assert "catch up" not in stderr
    assert smtp_sink.messages == []
    with session_scope(get_engine(db_url)) as s:
        assert s.scalar(select(func.count()).select_from(Delivery)) == 0


def test_a_refused_scheduler_keeps_its_times_but_only_says_why() -> None:
    """The jobs of a daemon the gate holds back: ingest as usual; the hourly slot at
    its usual time, only logging the refusal; no retries, no catch-up."""
    from newsletter.delivery import scheduler

    app = App(Settings())
    held = {j.id: j for j in scheduler.build_scheduler(app, catch_up=True,
                                                       refused="refusing: why").get_jobs()}
    assert set(held) == {"ingest", "send"}
    assert held["send"].func is scheduler.refuse_sending
    assert held["send"].args == ("send", "refusing: why")
    free = {j.id: j for j in scheduler.build_scheduler(app, catch_up=True).get_jobs()}
    assert free["send"].func is scheduler.send_slot and {"catch-up", "deferred"} <= set(free)
    assert str(free["send"].trigger) == str(held["send"].trigger)


# ---- 4. disk full: the outbox holds only whole messages ----------------------------


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 160 KB tmpfs: a real ENOSPC part-way through an edition (root only)."""
    mount = tmp_path / "outbox"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs for a real disk-full needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow  # ~4 s: `newsletter send` processes
def test_disk_full_leaves_only_whole_messages_and_a_rerun_sends_the_rest(
        sqlite_url: str, tmp_path: Path, tiny_disk: Path) -> None:
    """Before: disk full left zero-byte `.eml` files. Now every file in the outbox is a
    whole message, the ones that did not fit are failed (transient) with the reason,
    and a rerun with space again writes exactly those."""
    import email
    import email.policy

    people = [(f"f{i}@example.org", "UTC", 7) for i in range(30)]
    populate(sqlite_url, people)
    env = cli_env(sqlite_url, NEWSLETTER_OUTBOX__PATH=str(tiny_disk),
                  NEWSLETTER_TRANSPORT__BACKOFF_SECONDS="0.01")
    cmd = [sys.executable, "-m", "newsletter", "send", "--yes", "--date", DAY.isoformat()]
    first = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=120)
    assert "Traceback" not in first.stderr
    assert first.returncode != 0, first.stderr  # failures are reported, not hidden

    def whole(folder: Path) -> dict[str, int]:
        found: dict[str, int] = {}
        for f in folder.iterdir():
            assert f.suffix == ".eml", f"left behind: {f.name}"
            msg = email.message_from_bytes(f.read_bytes(), policy=default_policy)
            assert msg.get_body(("html",)) is not None and msg.get_body(("plain",)) is not None
            assert f.read_bytes().rstrip().endswith(b"--"), f"cut short: {f.name}"
            found[str(msg["To"])] = found.get(str(msg["To"]), 0) + 1
        return found

    written = whole(tiny_disk)
    assert 0 < len(written) < len(people)
    engine = get_engine(sqlite_url)
    with session_scope(engine) as s:
        rows = dict(s.execute(select(Subscriber.email, Delivery.status).join(Delivery)).all())
        errors = set(s.scalars(select(Delivery.last_error).where(Delivery.status == "failed")))
    assert {e for e, st in rows.items() if st == "sent"} == set(written)
    assert all("No space left" in (e or "") for e in errors), errors
    subprocess.run(["mount", "-o", "remount,size=8m", str(tiny_disk)], check=True)
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0, again.stderr
    assert whole(tiny_disk) == {p[0]: 1 for p in people}


def test_the_first_edition_of_a_slot_starts_where_the_last_day_ended(db_url: str) -> None:
    """Hourly slots begun after plain sends: the first edition of a slot takes the
    papers since the newest edition (of any slot) a day or more before it, not every
    paper ever stored; a slot that has run takes those since its own last edition,
    and with no edition at all every paper is a candidate."""
    from newsletter.store.models import Entry, utcnow
    from newsletter.store.queries import edition_entries

    populate(db_url, [("one@example.org", "UTC", 7)])
    engine = get_engine(db_url)
    now = utcnow()
    with session_scope(engine) as s:
        old, mid, new = sorted(s.scalars(select(Entry.id)))
        for eid, days in ((old, 9), (mid, 3), (new, 0.5)):
            s.execute(sqlalchemy_update(Entry).where(Entry.id == eid)
                      .values(arrived_at=now - dt.timedelta(days=days)))
    with session_scope(engine) as s:
        assert {e.id for e in edition_entries(s, "07", now)} == {old, mid, new}  # nothing yet
        s.add(Edition(day=DAY, slot="", cutoff=now - dt.timedelta(days=5)))  # plain sends
        s.add(Edition(day=DAY + dt.timedelta(days=1), slot="", cutoff=now - dt.timedelta(days=2)))
        s.add(Edition(day=DAY + dt.timedelta(days=2), slot="06",  # an hour ago: not "a day"
                      cutoff=now - dt.timedelta(hours=1)))
    with session_scope(engine) as s:
        assert {e.id for e in edition_entries(s, "07", now)} == {new}  # since 2 days ago
        assert {e.id for e in edition_entries(s, "06", now)} == set()  # its own last one
        assert {e.id for e in edition_entries(s, "", now)} == {new}
        # a slot last used long ago (a daylight-saving change in a one-zone newsletter:
        # 07:00 London is slot 07 in winter, 06 in summer) starts where the last day
        # ended, not at its own months-old edition
        s.add(Edition(day=DAY - dt.timedelta(days=150), slot="05",
                      cutoff=now - dt.timedelta(days=150)))
        # a scheduler down for three days: slot 03 keeps its own last edition, not
        # another slot's of that day (whose papers it never had)
        s.add(Edition(day=DAY - dt.timedelta(days=4), slot="03",
                      cutoff=now - dt.timedelta(days=4)))
        s.add(Edition(day=DAY - dt.timedelta(days=4), slot="12",
                      cutoff=now - dt.timedelta(days=2, hours=20)))
    with session_scope(engine) as s:
        assert {e.id for e in edition_entries(s, "05", now)} == {new}
        assert {e.id for e in edition_entries(s, "03", now)} == {mid, new}  # since 4 days
        # a slot run late (its own edition a day and some hours back, another slot's
        # edition between): it keeps its own window, or the papers between were lost
        s.add(Edition(day=DAY + dt.timedelta(days=3), slot="04",
                      cutoff=now - dt.timedelta(hours=26)))
        s.add(Edition(day=DAY + dt.timedelta(days=3), slot="05x",
                      cutoff=now - dt.timedelta(hours=25)))
        s.execute(sqlalchemy_update(Entry).where(Entry.id == mid)
                  .values(arrived_at=now - dt.timedelta(hours=25, minutes=30)))
    with session_scope(engine) as s:  # since its own edition: the paper between is in
        assert {e.id for e in edition_entries(s, "04", now)} == {mid, new}


def test_a_missed_day_sent_late_starts_at_the_day_before_it(db_url: str) -> None:
    """`send --date` of a missed Friday run on Saturday, after Saturday's edition: its
    window starts at Thursday's edition (the newest of an earlier day), not at
    Saturday's, so Friday's papers reach a weekdays reader (whose Monday window starts
    at the late Friday's cutoff: they were in no window of theirs)."""
    from newsletter.store.models import Entry, utcnow
    from newsletter.store.queries import edition_entries

    populate(db_url, [("one@example.org", "UTC", 8)])
    engine = get_engine(db_url)
    now = utcnow()
    thursday, friday, saturday = DAY, DAY + dt.timedelta(days=1), DAY + dt.timedelta(days=2)
    with session_scope(engine) as s:
        thu, fri, sat = sorted(s.scalars(select(Entry.id)))
        for eid, hours in ((thu, 50), (fri, 30), (sat, 1)):  # arrived that many hours ago
            s.execute(sqlalchemy_update(Entry).where(Entry.id == eid)
                      .values(arrived_at=now - dt.timedelta(hours=hours)))
        s.add(Edition(day=thursday, slot="", cutoff=now - dt.timedelta(hours=49)))
        s.add(Edition(day=saturday, slot="", cutoff=now - dt.timedelta(hours=2)))
    with session_scope(engine) as s:
        late = {e.id for e in edition_entries(s, "", now, friday)}
        assert late == {fri, sat}  # since Thursday's edition
        assert {e.id for e in edition_entries(s, "", now)} == {sat}  # the next day's


def _week_world(db_url: str, tmp_path: Path, people: list[tuple[str, str]]
                ) -> tuple[Settings, Any, list[Path]]:
    """Readers with the same keywords, the sample cut in 50-paper days, Friday to
    Sunday sent; the chunks of Monday and Tuesday are returned to ingest."""
    papers = json.loads(Path(SAMPLE).read_text())
    settings = Settings().replace(database={"url": db_url},
                                  outbox={"path": str(tmp_path / "out")})
    engine = get_engine(db_url)
    with session_scope(engine) as s:
        for email_, freq in people:
            add(s, email_, keywords="diffusion, language models, graph, transformer",
                frequency=freq)
    chunks = []
    for i in range(5):
        chunk = tmp_path / f"day{i}.json"
        chunk.write_text(json.dumps(papers[i * 50:(i + 1) * 50]))
        chunks.append(chunk)
    for i in range(3):
        with session_scope(engine) as s:
            ingest(settings.sources, s, [str(chunks[i])])
        run_send(settings, engine, dt.date(2026, 3, 6) + dt.timedelta(days=i))
    return settings, engine, chunks[3:]


def _ids(path: Path) -> set[str]:
    return {p["id"] for p in json.loads(path.read_text())}


def test_a_monday_sent_before_its_papers_came_loses_no_paper(db_url: str,
                                                               tmp_path: Path) -> None:
    """Monday's send runs before Monday's ingest (the weekdays and weekly readers'
    emails go out over the weekend's papers), then again after it. The edition keeps
    its cutoff (those rows were ranked up to it): Monday's papers reach every reader in
    a later email, none twice."""
    settings, engine, (monday_papers, tuesday_papers) = _week_world(
        db_url, tmp_path, [("d@example.org", "daily"), ("w@example.org", "weekdays"),
                           ("k@example.org", "weekly:mon")])
    monday = dt.date(2026, 3, 9)
    assert run_send(settings, engine, monday).plan.planned == 2
    with session_scope(engine) as s:
        ingest(settings.sources, s, [str(monday_papers)])
    again = run_send(settings, engine, monday)
    assert again.plan.planned == 0 and "go to the next edition" in again.note, again.note
    with session_scope(engine) as s:
        ingest(settings.sources, s, [str(tuesday_papers)])
    for i in range(1, 8):
        run_send(settings, engine, monday + dt.timedelta(days=i))
    with session_scope(engine) as s:
        got: dict[str, list[str]] = {}
        for email_, ids in s.execute(select(Subscriber.email, Delivery.entry_ids)
                                     .join(Subscriber).where(Delivery.status == "sent")):
            got.setdefault(email_, []).extend(ids)
    assert all(len(ids) == len(set(ids)) for ids in got.values())  # none sent twice
    for reader in ("d@example.org", "w@example.org", "k@example.org"):
        assert set(got[reader]) & _ids(monday_papers), reader


def test_a_weekly_row_keeps_its_papers_after_its_reader_switched(db_url: str,
                                                                  tmp_path: Path) -> None:
    """`send --queue` plans the week's best for the only weekly reader, who switches to
    daily before the worker runs: the row is still rendered over the week's papers."""
    from newsletter.service.editions import deliver_edition, plan_edition
    from newsletter.transports import make_transport

    settings, engine, (monday_papers, _) = _week_world(
        db_url, tmp_path, [("d@example.org", "daily"), ("k@example.org", "weekly:mon")])
    with session_scope(engine) as s:
        ingest(settings.sources, s, [str(monday_papers)])
    config = EditionConfig.of(settings)
    planned = plan_edition(config, engine, dt.date(2026, 3, 9))
    assert planned.edition is not None
    with session_scope(engine) as s:
        s.execute(sqlalchemy_update(Subscriber).values(frequency="daily"))
        [ids] = s.scalars(select(Delivery.entry_ids).join(Subscriber).where(
            Subscriber.email == "k@example.org", Delivery.status == "pending"))
    deliver_edition(config, engine, planned.edition.id, make_transport(settings))
    shown = {r: [unquote(x) for x in v] for r, v in _papers_by_reader(tmp_path / "out").items()}
    assert len(ids) > 4 and sorted(shown["k@example.org"]) == sorted(ids), (shown, ids)


@pytest.mark.parametrize("left", ["killed", "failed"])
def test_preview_shows_rows_a_killed_or_failed_send_left(db_url: str, tmp_path: Path,
                                                         left: str) -> None:
    """A send killed mid-way leaves rows leased by a dead process; a transient failure
    leaves a failed row: send takes both back, so preview shows them."""
    import socket

    from newsletter.service.editions import plan_edition

    settings = populate(db_url, [("a@example.org", "UTC", 7)], SAMPLE).replace(
        outbox={"path": str(tmp_path / "out")})
    engine = get_engine(db_url)
    assert plan_edition(EditionConfig.of(settings), engine, DAY).plan.planned == 1
    with session_scope(engine) as s:
        s.execute(sqlalchemy_update(Delivery).values(
            **({"status": "sending", "lease_owner": f"{socket.gethostname()}:999999:x",
                "lease_expires": dt.datetime(2099, 1, 1)} if left == "killed"
               else {"status": "failed", "reason": "transient"})))
    report = run_preview(settings, engine, DAY, tmp_path / "pv")
    assert [o.job.recipient.email for o in report.outcomes] == ["a@example.org"], report.note
    assert run_send(settings, engine, DAY).report.counts["sent"] == 1


def test_a_weekdays_row_opened_without_its_window_fails_saying_why(db_url: str,
                                                                   tmp_path: Path) -> None:
    """An edition opened before its weekdays rows existed (a web process keeps one open)
    holds the week's papers but not the weekend window: rendering such a row there
    must fail naming why, not explain its picks over the day's papers (IndexError) or
    send it with papers left out."""
    from newsletter.delivery.edition import get_or_create_edition
    from newsletter.delivery.plan import Job
    from newsletter.errors import NewsletterError
    from newsletter.service.editions import open_edition, plan_edition

    settings, engine, (monday_papers, _) = _week_world(
        db_url, tmp_path, [("d@example.org", "daily"), ("w@example.org", "weekdays"),
                           ("k@example.org", "weekly:tue")])
    with session_scope(engine) as s:
        ingest(settings.sources, s, [str(monday_papers)])
    config, monday = EditionConfig.of(settings), dt.date(2026, 3, 9)
    with session_scope(engine, readonly=True) as s:
        early = open_edition(config, s, get_or_create_edition(engine, monday))
    assert early.gap_selection is None and early.week_selection is not None
    assert plan_edition(config, engine, monday).plan.planned == 2
    with session_scope(engine) as s:
        [(row, sub)] = s.execute(select(Delivery, Subscriber).join(Subscriber).where(
            Subscriber.email == "w@example.org", Delivery.day == monday)).all()
        job = Job.of(row, sub)
    assert early.has(job.entry_ids) and not early.ranks(job.entry_ids)  # weekend papers
    with pytest.raises(NewsletterError, match="without the weekend's papers"):
        early.render(job)


def test_preview_shows_the_earlier_editions_rows_that_send_takes_up(db_url: str,
                                                                     tmp_path: Path) -> None:
    """A run planned the day's edition and was stopped before sending (its rows left
    alone for ``LEFT_AFTER``), and one reader's row of it is deferred with its next
    try due: the next day's `send` takes both up after its own edition. Preview shows
    them too, each in the folder of its edition, where it said only that nothing was
    to send."""
    from newsletter.service.editions import LEFT_AFTER, plan_edition

    people = [("a@example.org", "UTC", 7), ("b@example.org", "UTC", 7)]
    settings = populate(db_url, people).replace(outbox={"path": str(tmp_path / "out")})
    engine = get_engine(db_url)
    planned = plan_edition(EditionConfig.of(settings), engine, DAY)
    assert planned.edition is not None and planned.plan.planned == 2
    long_ago = dt.datetime.now(dt.UTC).replace(tzinfo=None) - LEFT_AFTER * 2
    with session_scope(engine) as s:
        s.execute(sqlalchemy_update(Delivery).values(updated_at=long_ago))
        s.execute(sqlalchemy_update(Delivery).where(Delivery.subscriber_id == select(
            Subscriber.id).where(Subscriber.email == "b@example.org").scalar_subquery())
            .values(status="deferred", next_try_at=long_ago, first_try_at=long_ago))
    nextday = DAY + dt.timedelta(days=1)
    report = run_preview(settings, engine, nextday, tmp_path / "pv")
    shown = sorted(o.job.recipient.email for o in report.outcomes)
    assert shown == ["a@example.org", "b@example.org"], report.note
    folder = tmp_path / "pv" / f"edition-{planned.edition.id}"
    assert sorted(p.name for p in folder.glob("*.eml")) == ["a@example.org.eml",
                                                            "b@example.org.eml"]
    assert "send also takes up 2 emails" in report.note, report.note
    # --limit bounds them too; the console's one email is the day's alone
    from newsletter.service.preview import preview_email

    assert len(run_preview(settings, engine, nextday, tmp_path / "pv1", limit=1).outcomes) == 1
    one = preview_email(EditionConfig.of(settings), engine, nextday, subscriber="a@example.org")
    assert one.status == "skipped" and "nothing to send" in one.error, one
    sent = run_send(settings, engine, nextday)
    assert sent.report.counts["sent"] == 2 and sent.resumed == 1 and sent.due == 2, sent


def test_a_cutoff_taken_while_an_ingest_stores_waits_for_its_papers(db_url: str,
                                                                     tmp_path: Path) -> None:
    """An ingest stamps its papers when it starts storing and commits later. A send that
    opened its edition in between (PostgreSQL let it) took a cutoff after papers it could
    not see yet: that edition planned without them, and every later window starts after
    its cutoff, so they reached nobody, ever. Taking a cutoff now waits for the storing
    ingest, so its papers are the edition's (or, stored after it, the next one's)."""
    import threading

    from newsletter.delivery.edition import get_or_create_edition
    from newsletter.store.models import Entry
    from newsletter.store.queries import edition_entries

    settings = Settings().replace(database={"url": db_url})
    engine = get_engine(db_url)
    papers = tmp_path / "papers.json"
    papers.write_text(json.dumps([{"title": "Quokka locomotion at scale", "id": "2601.00001",
                                   "abstract": "Quokkas hop.", "authors": ["A. B."],
                                   "published": "2026-01-05"}]))
    with session_scope(engine) as s:
        ingest(settings.sources, s, [str(ROOT / "newsletter" / "data" / "sample_papers.json")])
    yesterday = get_or_create_edition(engine, dt.date(2026, 1, 4))
    stored, release = threading.Event(), threading.Event()
    seen: dict[str, list[str]] = {}

    def storing() -> None:
        with session_scope(engine) as s:
            ingest(settings.sources, s, [str(papers)])
            stored.set()
            release.wait(30)  # committed only when the send has had its chance

    def sending() -> None:
        edition = get_or_create_edition(engine, dt.date(2026, 1, 5))
        with session_scope(engine, readonly=True) as s:
            seen["today"] = [e.title for e in edition_entries(s, "", edition.cutoff,
                                                              edition.day)]

    ingesting = threading.Thread(target=storing)
    ingesting.start()
    assert stored.wait(30)
    opening = threading.Thread(target=sending)
    opening.start()
    opening.join(0.5)  # (unblocked, it has opened its edition and read its papers now)
    release.set()
    ingesting.join(30)
    opening.join(30)
    assert not ingesting.is_alive() and not opening.is_alive()
    tomorrow = get_or_create_edition(engine, dt.date(2026, 1, 6))
    with session_scope(engine, readonly=True) as s:
        seen["tomorrow"] = [e.title for e in edition_entries(s, "", tomorrow.cutoff,
                                                             tomorrow.day)]
        arrived = s.scalar(select(Entry.arrived_at).where(Entry.arxiv_id == "2601.00001"))
    assert arrived is not None and arrived > yesterday.cutoff
    assert "Quokka locomotion at scale" in seen["today"] + seen["tomorrow"], seen


def test_a_weekdays_monday_says_it_covers_the_days_since_friday(tmp_path: Path) -> None:
    """A weekdays reader whose keywords match nothing gets trending papers on Monday,
    from Saturday to Monday: the email says "since Friday", not "today" (which is what
    a daily reader's says), in its subject, headings and opening line, and so does its
    web version, rendered later from the row's record."""
    from newsletter.service.emails import render_email

    url = f"sqlite:///{tmp_path / 'subscribers.db'}"
    settings = Settings().replace(database={"url": url}, outbox={"path": str(tmp_path / "out")})
    engine = get_engine(url)
    with session_scope(engine) as s:
        for email_, freq in (("d@example.org", "daily"), ("w@example.org", "weekdays")):
            add(s, email_, keywords="zzquokka locomotion", frequency=freq)
    papers = json.loads(Path(SAMPLE).read_text())
    friday = dt.date(2026, 3, 6)
    day_by_day(settings, engine, tmp_path, papers, friday, 4)
    sent = {}
    for p in (tmp_path / "out").glob("*.eml"):
        m = message_from_bytes(p.read_bytes(), policy=default_policy)
        if "March 9" in str(m.get_body(preferencelist=("plain",)).get_content()):  # type: ignore[union-attr]
            sent[str(m["To"])] = m
    weekdays = next(m for to, m in sent.items() if "w@example.org" in to)
    daily = next(m for to, m in sent.items() if "d@example.org" in to)
    assert str(weekdays["Subject"]).startswith("Trending since Friday: "), weekdays["Subject"]
    assert str(daily["Subject"]).startswith("Trending today: "), daily["Subject"]
    text = weekdays.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    assert "No new paper matched your interests since Friday" in text
    assert "Trending since Friday (not matched to your keywords)" in text
    assert "today" not in text.lower()
    with session_scope(engine, readonly=True) as s:
        row = s.scalar(select(Delivery).join(Subscriber).where(
            Subscriber.email == "w@example.org", Delivery.day == friday + dt.timedelta(days=3)))
        assert row is not None
        sub_id, edition_id = row.subscriber_id, row.edition_id
    again = render_email(EditionConfig.of(settings), engine, sub_id, edition_id)
    assert again is not None and again.subject == str(weekdays["Subject"])
    assert "Trending since Friday" in again.html and "today" not in again.text.lower()


@pytest.mark.parametrize(("days", "kind"), [(7, "weekly"), (3, "weekdays after the weekend")])
def test_a_wide_email_carried_by_a_later_slot_keeps_the_papers_after_its_last(
        tmp_path: Path, days: int, kind: str) -> None:
    """A weekly reader (or a weekdays one on Monday) had their last email from the 07
    slot; a paper came at 07:30 that day. This time the daemon was down at 07 and 08
    (or the reader resumed at 08:30), so the 09 slot carries their email: its window
    opened at the 09 edition of that earlier day, after the paper, which no window
    held: lost to that reader. It opens at that day's first edition now."""
    from newsletter.delivery.planning import week_entries
    from newsletter.store.models import Entry

    url = f"sqlite:///{tmp_path / 'subscribers.db'}"
    settings = Settings().replace(database={"url": url})
    engine = get_engine(url)
    papers = json.loads(Path(SAMPLE).read_text())[:3]
    chunk = tmp_path / "papers.json"
    chunk.write_text(json.dumps(papers))
    with session_scope(engine) as s:
        ingest(settings.sources, s, [str(chunk)])
    before = dt.date(2026, 1, 9) if days == 3 else dt.date(2026, 1, 5)  # Friday / Monday
    now = before + dt.timedelta(days=days)  # Monday
    at = dt.datetime.combine  # (naive UTC, as stored)
    with session_scope(engine) as s:
        for h in (7, 8, 9):
            s.add(Edition(day=before, slot=f"{h:02d}", created_at=at(before, dt.time(h)),
                          cutoff=at(before, dt.time(h))))
        current = Edition(day=now, slot="09", created_at=at(now, dt.time(9)),
                          cutoff=at(now, dt.time(9)))
        s.add(current)
        times = [at(before, dt.time(6)), at(before, dt.time(7, 30)),
                 at(before + dt.timedelta(days=1), dt.time(12))]
        for paper, when in zip(papers, times, strict=True):
            s.execute(sqlalchemy_update(Entry).where(Entry.title == paper["title"])
                      .values(arrived_at=when))
    with session_scope(engine, readonly=True) as s:
        found = {e.title for e in week_entries(s, current, days)}
    assert found == {papers[1]["title"], papers[2]["title"]}, (kind, found)


def test_reopening_an_empty_edition_never_moves_its_cutoff_back(db_url: str) -> None:
    """An edition that planned nobody moves its cutoff to now, never earlier than it
    was: a host whose clock is behind another's would otherwise take the cutoff back
    below papers the other had sent in it, and the next edition's "who already had
    these papers" (read from editions whose cutoff is at or after their arrival) would
    miss them."""
    from newsletter.delivery.planning import reopen_if_empty
    from newsletter.store.models import Edition, utcnow

    engine = get_engine(db_url)
    ahead = utcnow() + dt.timedelta(hours=2)  # set by a host whose clock is ahead
    with session_scope(engine) as s:
        edition = Edition(day=DAY, slot="", cutoff=ahead, created_at=ahead)
        s.add(edition)
        s.flush()
        s.expunge(edition)
    reopened = reopen_if_empty(engine, edition, "")
    assert reopened.cutoff == ahead
    with session_scope(engine) as s:
        assert s.get(Edition, edition.id).cutoff == ahead  # type: ignore[union-attr]
    earlier = utcnow() - dt.timedelta(hours=2)
    with session_scope(engine) as s:
        s.execute(sqlalchemy_update(Edition).where(Edition.id == edition.id).values(cutoff=earlier))
    edition.cutoff = earlier
    assert reopen_if_empty(engine, edition, "").cutoff > earlier  # moved on to now
