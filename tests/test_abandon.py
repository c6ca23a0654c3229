"""`newsletter abandon`: an edition the operator stops for good. Against the real
command, real SQLite files and PostgreSQL, and aiosmtpd reading what arrives: rows
not handed to the server become skipped with the operator's reason, a running send
stops claiming and what it gives back is skipped too, and nothing (`send`, a slot of
`run`, the retry job, a worker's task, the console's retry) sends the edition again."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, inspect, select

from newsletter.app import App
from newsletter.delivery.edition import EditionConfig
from newsletter.delivery.scheduler import retry_deferred, send_slot
from newsletter.errors import InputError
from newsletter.service import editions
from newsletter.store.db import get_engine, session_scope
from newsletter.store.models import Delivery, Edition, Subscriber
from newsletter.store.subscribers import add
from newsletter.transports import make_transport

from .conftest import CliRun, SmtpSink
from .editions_support import plan_edition, run_send
from .test_delivery_day import cli_env, populate

DAY = dt.date(2025, 12, 26)
REASON = "a broken paper"
SAID = f"abandoned by the operator: {REASON}"


def rows(url: str) -> list[tuple[str, str, str]]:
    """(address, state, reason) of every ledger row."""
    with session_scope(get_engine(url), readonly=True) as s:
        return [tuple(r) for r in s.execute(  # type: ignore[misc]
            select(Subscriber.email, Delivery.status, Delivery.reason)
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id))]


def states(url: str) -> dict[str, int]:
    with session_scope(get_engine(url), readonly=True) as s:
        return {str(k): v for k, v in s.execute(
            select(Delivery.status, func.count()).group_by(Delivery.status)).all()}


def people(n: int, prefix: str = "p") -> list[tuple[str, str, int]]:
    return [(f"{prefix}{i}@example.org", "UTC", 7) for i in range(n)]


# ---- before any message went out -----------------------------------------------------


def test_an_edition_abandoned_before_sending_sends_nothing(
        db_url: str, smtp_sink: SmtpSink, cli_process: CliRun) -> None:
    """Planned (as `send --queue` leaves it for its workers), then abandoned: `send`
    says so in one line, exits 0 and sends nothing; `status` shows every row skipped
    with the operator's reason, and that the edition was abandoned (and `--json`)."""
    settings = populate(db_url, people(12))
    engine = get_engine(db_url)
    planned = plan_edition(settings, engine, DAY)
    assert planned.edition is not None and planned.pending == 12
    env = cli_env(db_url, smtp_sink)
    done = cli_process("abandon", DAY.isoformat(), "--yes", "--reason", REASON, env=env)
    assert done.code == 0, done.stderr
    assert f"abandoned edition #{planned.edition.id}" in done.stderr
    assert "12" in done.stderr
    assert {(st, r) for _, st, r in rows(db_url)} == {("skipped", SAID)}

    sent = cli_process("send", "--yes", "--force", "--date", DAY.isoformat(), env=env)
    assert sent.code == 0, sent.stderr
    assert "was abandoned by the operator" in sent.stderr and REASON in sent.stderr
    assert smtp_sink.messages == []
    assert states(db_url) == {"skipped": 12}

    status = cli_process("status", DAY.isoformat(), env=env)
    assert status.code == 0, status.stderr
    assert "abandoned by the operator" in status.stdout and REASON in status.stdout
    as_json = json.loads(cli_process("status", DAY.isoformat(), "--json", env=env).stdout)
    assert as_json["abandoned"]["reason"] == REASON and as_json["abandoned"]["at"]
    assert as_json["counts"]["skipped"] == 12 and as_json["counts"]["pending"] == 0
    assert {e["error"] for e in as_json["last_errors"]} == {SAID}


def test_the_command_asks_refuses_and_says_one_line_each_time(world, cli: CliRun) -> None:  # type: ignore[no-untyped-def]
    """No terminal and no --yes: refused, nothing changed. An unknown edition: one line,
    exit 1. Twice: one line saying when and why it was, exit 0. An edition already
    complete: one line, nothing marked. --json: the result as JSON alone on stdout."""
    settings, engine = world
    env = {"NEWSLETTER_DATABASE__URL": settings.database.url,
           "NEWSLETTER_OUTBOX__PATH": settings.outbox.path}
    # an edition that went out whole: nothing to abandon, and it is not marked
    assert run_send(settings, engine, DAY).report.counts["sent"] > 0
    complete = cli("abandon", DAY.isoformat(), "--yes", env=env)
    assert complete.code == 0, complete.stderr
    [line] = complete.stderr.strip().splitlines()
    assert "nothing to abandon" in line
    with session_scope(engine, readonly=True) as s:
        assert s.scalar(select(Edition.abandoned_at).where(Edition.day == DAY)) is None

    with session_scope(engine) as s:  # newcomers, planned into the same edition
        for i in range(3):
            add(s, f"new{i}@example.org", keywords="attention, diffusion")
    planned = plan_edition(settings, engine, DAY)
    assert planned.edition is not None and planned.pending == 3
    eid = str(planned.edition.id)

    refused = cli("abandon", eid, env=env)
    assert refused.code == 1
    assert refused.stderr.strip().splitlines()[-1] == (
        f"error: refusing to abandon edition #{eid} without --yes (no terminal to ask)")
    assert "pending 3" in refused.stderr  # what would be abandoned, by state, first
    assert "skipped" not in {st for e, st, _ in rows(settings.database.url)
                             if e.startswith("new")}

    unknown = cli("abandon", "2020-01-01", "--yes", env=env)
    assert unknown.code == 1 and unknown.stderr.strip() == "error: no edition 2020-01-01"
    assert cli("abandon", "999", "--yes", env=env).code == 1

    first = cli("abandon", eid, "--yes", "--json", "--reason", REASON, env=env)
    assert first.code == 0, first.stderr
    data = json.loads(first.stdout)
    assert data["edition"] == int(eid) and data["already"] is False
    assert data["skipped"]["pending"] == 3
    assert data["abandoned"]["reason"] == REASON

    again = cli("abandon", eid, "--yes", env=env)
    assert again.code == 0, again.stderr
    [line] = again.stderr.strip().splitlines()
    assert "already abandoned" in line and REASON in line


def test_a_preview_of_an_abandoned_day_says_nothing_will_be_sent_and_still_writes_it(
        sqlite_url: str, cli: CliRun, tmp_path: Path) -> None:
    """Operators preview an abandoned edition to see what went wrong: the emails it
    was about to send are written (the rows its abandonment skipped, as planned), and
    one line on stderr says it was abandoned, why, and that nothing will be sent for
    it. The preview said "every active subscriber due has had that day's edition" and
    wrote nothing; for a newcomer it showed an email as if it would go. Nothing is
    written to the ledger."""
    settings = populate(sqlite_url, people(3))
    engine = get_engine(sqlite_url)
    planned = plan_edition(settings, engine, DAY)
    assert planned.edition is not None and planned.pending == 3
    editions.abandon(engine, planned.edition, by="test", reason=REASON)
    with session_scope(engine) as s:  # a newcomer: no row yet
        add(s, "new@example.org", keywords="attention, diffusion")
    env = {"NEWSLETTER_DATABASE__URL": sqlite_url}
    out = tmp_path / "p"
    shown = cli("preview", "--date", DAY.isoformat(), "--out", str(out), env=env)
    assert shown.code == 0, shown.stderr
    [line] = [x for x in shown.stderr.splitlines() if "abandoned" in x]
    assert line.startswith(f"edition #{planned.edition.id} ({DAY}) was abandoned by the "
                           "operator at "), line
    assert f"{REASON}: nothing will be sent for it" in line, line
    assert sorted(f.stem for f in out.glob("*.eml")) == [
        "new@example.org", "p0@example.org", "p1@example.org", "p2@example.org"]
    one = tmp_path / "one"
    alone = cli("preview", "--date", DAY.isoformat(), "--out", str(one), "--subscriber",
                "p1@example.org", "--json", env=env)
    assert alone.code == 0, alone.stderr
    assert "nothing will be sent for it" in json.loads(alone.stdout)["note"]
    assert [f.name for f in one.glob("*.eml")] == ["p1@example.org.eml"]
    assert {(st, r) for _, st, r in rows(sqlite_url)} == {("skipped", SAID)}


# ---- in the middle of a send ---------------------------------------------------------


def test_abandoned_while_a_send_runs_it_stops_early_and_nothing_is_sent_after(
        db_url: str, smtp_sink: SmtpSink, tmp_path: Path, cli_process: CliRun) -> None:
    """`send` in its own process against a slow server, abandoned by another: it stops
    claiming, what it held and had not handed over is skipped (never pending), what
    it sent is recorded as sent, nobody has two copies, and it exits 0 saying so.
    Then `send`, a `run` slot and the retry job send nothing more."""
    everyone = people(200, "s")
    settings = populate(db_url, everyone)
    smtp_sink.delay = 0.03
    env = cli_env(db_url, smtp_sink, NEWSLETTER_SMTP__CONNECTIONS="1",
                  NEWSLETTER_TRANSPORT__CONCURRENCY="1")
    cmd = [sys.executable, "-m", "newsletter", "send", "--yes", "--force",
           "--date", DAY.isoformat()]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert smtp_sink.wait_for(10) >= 10
        done = cli_process("abandon", DAY.isoformat(), "--yes", "--reason", REASON, env=env)
        assert done.code == 0, done.stderr
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "abandoned" in stderr
    got = [r for r, _ in smtp_sink.messages]
    assert len(got) < len(everyone) // 2  # ended early: not the edition's end
    assert len(set(got)) == len(got)  # nobody twice
    ledger = rows(db_url)
    assert {st for _, st, _ in ledger} <= {"sent", "skipped"}, states(db_url)
    assert {r for _, st, r in ledger if st == "skipped"} == {SAID}
    assert sorted(e for e, st, _ in ledger if st == "sent") == sorted(got)

    again = cli_process("send", "--yes", "--force", "--date", DAY.isoformat(), env=env)
    assert again.code == 0, again.stderr
    assert "abandoned" in again.stderr
    app = App(settings.replace(
        transport={"backend": "smtp", "backoff_seconds": 0.01},
        smtp={"host": smtp_sink.host, "port": smtp_sink.port}), get_engine(db_url))
    send_slot(app, dt.datetime(2025, 12, 26, 8, tzinfo=dt.UTC))  # a `run` tick, later
    send_slot(app, dt.datetime(2025, 12, 26, 7, tzinfo=dt.UTC))
    retry_deferred(app, now=dt.datetime(2025, 12, 26, 12))
    assert len(smtp_sink.messages) == len(got)
    assert {st for _, st, _ in rows(db_url)} <= {"sent", "skipped"}


# ---- deferred rows, the retry job, a worker and the console --------------------------

GREY = "451 4.7.1 greylisted, try again later"


def test_deferred_rows_abandoned_are_never_tried_again(world, smtp_sink: SmtpSink,  # type: ignore[no-untyped-def]
                                                       cli: CliRun) -> None:
    settings, engine = world
    settings = settings.replace(
        transport={"backend": "smtp", "max_attempts": 1, "backoff_seconds": 0.01},
        smtp={"host": smtp_sink.host, "port": smtp_sink.port, "connections": 1},
        delivery={"retry_first_minutes": 5, "retry_hours": 1})
    smtp_sink.faults["ada@example.org"] = [GREY]
    at = dt.datetime(2025, 12, 26, 7, 0)
    first = run_send(settings, engine, DAY, now=at)
    assert first.report.counts["deferred"] == 1
    before = len(smtp_sink.messages)
    edition = first.edition
    assert edition is not None
    done = cli("abandon", str(edition.id), "--yes", "--reason", REASON,
               env={"NEWSLETTER_DATABASE__URL": settings.database.url})
    assert done.code == 0, done.stderr
    assert "deferred 1" in done.stderr
    [(state, reason)] = [(st, r) for e, st, r in rows(settings.database.url)
                         if e == "ada@example.org"]
    assert (state, reason) == ("skipped", SAID)

    later = at + dt.timedelta(minutes=30)
    assert retry_deferred(App(settings, engine), now=later).due == 0
    config = EditionConfig.of(settings)
    # a worker's task, and the console's retry button
    report = editions.deliver_edition(config, engine, edition.id, make_transport(settings),
                                      now=later)
    assert report is not None and not report.counts["sent"]
    with pytest.raises(InputError, match="abandoned by the operator"):
        editions.requeue_failed(engine, edition.id)
    again = run_send(settings, engine, DAY, now=later)
    assert again.edition is None and "abandoned" in again.note
    assert len(smtp_sink.messages) == before and smtp_sink.count("ada@example.org") == 0


# ---- the migration -------------------------------------------------------------------


def test_the_migration_applies_and_goes_back_down(db_url: str) -> None:
    from alembic import command

    from newsletter.store.db import _alembic_config, make_engine, upgrade

    engine = make_engine(db_url)
    command.upgrade(_alembic_config(engine), "0015")
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO editions (day, slot, created_at, cutoff) "
                             "VALUES ('2025-12-26', '', '2025-12-26', '2025-12-26')")

    def columns() -> set[str]:
        return {c["name"] for c in inspect(engine).get_columns("editions")}

    assert "abandoned_at" not in columns()
    upgrade(engine)
    assert {"abandoned_at", "abandoned_by", "abandoned_reason"} <= columns()
    with session_scope(engine, readonly=True) as s:
        [old] = s.scalars(select(Edition)).all()
        assert old.abandoned_at is None and old.abandoned_reason == ""
    command.downgrade(_alembic_config(engine), "0015")
    assert "abandoned_at" not in columns()
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM editions").scalar() == 1
    upgrade(engine)
    assert "abandoned_at" in columns()
    engine.dispose()


def test_the_console_says_it_was_abandoned_and_its_retry_queues_nothing(  # type: ignore[no-untyped-def]
        world, cli: CliRun) -> None:
    """The console's edition page says who abandoned it and why, offers no retry, and
    a retry posted anyway queues nothing and says why; the transient failure (which
    the retry would have sent again) stays failed."""
    import html

    from sqlalchemy import update

    from newsletter.delivery.ledger import TRANSIENT

    from .test_admin import csrf_of, start_console

    settings, engine = world
    summary = run_send(settings, engine, DAY)
    assert summary.edition is not None
    eid = summary.edition.id
    with session_scope(engine) as s:
        first = s.scalar(select(func.min(Delivery.id)).where(Delivery.edition_id == eid))
        s.execute(update(Delivery).where(Delivery.id == first)
                  .values(status="failed", reason=TRANSIENT, last_error="421 busy"))
    done = cli("abandon", str(eid), "--yes", "--reason", REASON,
               env={"NEWSLETTER_DATABASE__URL": settings.database.url})
    assert done.code == 0, done.stderr
    for console in start_console(settings, engine):
        c = console.login()
        page = html.unescape(c.get(f"/editions/{eid}").text)
        assert "Abandoned by the operator" in page and REASON in page
        assert "/retry" not in page
        token = csrf_of(c, f"/editions/{eid}")
        posted = c.post(f"/editions/{eid}/retry", data={"csrf": token}, follow_redirects=True)
        text = html.unescape(posted.text)
        assert posted.status_code == 200
        assert f"nothing queued again: edition #{eid} ({DAY}) was abandoned by the operator" \
            in text, text
    with session_scope(engine, readonly=True) as s:
        assert s.scalar(select(Delivery.status).where(Delivery.id == first)) == "failed"
