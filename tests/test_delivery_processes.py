"""``[transport] processes``: one edition delivered by forked processes claiming rows
from the same ledger, against a real SMTP server (aiosmtpd): everyone exactly once,
a process that dies mid-edition, and a fault of ours that stops them all."""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from newsletter.config import Settings
from newsletter.delivery.edition import EditionConfig
from newsletter.delivery.plan import Job
from newsletter.render.mime import Message
from newsletter.service import editions
from newsletter.store import subscribers
from newsletter.store.db import session_scope
from newsletter.store.models import Delivery, Subscriber
from newsletter.transports import Transport, make_transport

from .conftest import SmtpSink
from .test_delivery import ACTIVE, smtp_settings

DAY = dt.date(2025, 12, 26)
EXTRA = 200  # with concurrency 1 a claim is 64 rows: enough for a second process


def add_many(engine) -> list[str]:  # type: ignore[no-untyped-def]
    with session_scope(engine) as s:
        for i in range(EXTRA):
            subscribers.add(s, f"many{i}@example.org", keywords="attention, diffusion")
    return ACTIVE + [f"many{i}@example.org" for i in range(EXTRA)]


def states(engine) -> dict[str, int]:  # type: ignore[no-untyped-def]
    with session_scope(engine) as s:
        return {str(k): v for k, v in s.execute(
            select(Delivery.status, func.count()).group_by(Delivery.status)).all()}


class Marked(Transport):
    """The configured transport, leaving a file named after the process that made it;
    in a process other than the test's, ``die_after`` sends end that process (after
    the earlier outcomes were recorded, so only unsent rows are left behind)."""

    def __init__(self, inner: Transport, marks: Path, die_after: int = 0,
                 database: str = "") -> None:
        self.inner, self.die_after, self.sent = inner, die_after, 0
        self.database, self.to = database, list[str]()
        self.sends_mail = inner.sends_mail
        (marks / str(os.getpid())).touch()

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def send(self, message: Message) -> str:
        if self.die_after and self.sent == self.die_after and os.getpid() != TEST_PID:
            # The flusher records what was sent every 50 ms, but a loaded machine (its
            # record waiting for the other process's SQLite write lock, or for a CPU) may
            # take longer than any fixed pause: a row sent and not yet recorded would be
            # taken back and sent again. Dies once the ledger has every one of them.
            await asyncio.to_thread(recorded, self.database, self.to)
            os._exit(9)
        self.sent += 1
        sent = await self.inner.send(message)
        self.to.append(message.to)
        return sent


def recorded(database: str, emails: list[str], timeout: float = 30) -> None:
    """Wait (up to ``timeout``) until the ledger in ``database`` has each of ``emails``
    as sent."""
    from newsletter.store.db import make_engine

    engine = make_engine(database)  # (this process's own: the test's is its parent's)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with session_scope(engine, readonly=True) as s:
                done = s.scalar(select(func.count()).select_from(Delivery).join(
                    Subscriber, Subscriber.id == Delivery.subscriber_id).where(
                    Subscriber.email.in_(emails), Delivery.status == "sent"))
            if done == len(emails):
                return
            time.sleep(0.05)
    finally:
        engine.dispose()


TEST_PID = os.getpid()


def send(settings: Settings, engine, marks: Path, die_after: int = 0  # type: ignore[no-untyped-def]
         ) -> editions.SendSummary:
    marks = marks / "marks"  # beside the test's database
    marks.mkdir(exist_ok=True)

    def made() -> Transport:
        return Marked(make_transport(settings), marks, die_after, settings.database.url)

    return editions.send(EditionConfig.of(settings), engine, DAY, made(), make_transport=made)


@pytest.mark.slow  # ~3 s: 208 messages, a fork
def test_two_processes_send_everyone_exactly_once(world, smtp_sink: SmtpSink,  # type: ignore[no-untyped-def]
                                                  tmp_path: Path) -> None:
    settings, engine = world
    everyone = add_many(engine)
    settings = smtp_settings(settings, smtp_sink, concurrency=1, processes=2)
    summary = send(settings, engine, tmp_path)
    assert summary.report.counts["sent"] == len(everyone), summary.report.errors
    assert len({p.name for p in (tmp_path / "marks").iterdir()} - {str(TEST_PID)}) == 1  # one more
    assert sorted(r for r, _ in smtp_sink.messages) == sorted(everyone)
    assert states(engine) == {"sent": len(everyone)}
    again = send(settings, engine, tmp_path)  # nothing left: nothing sent
    assert again.report.counts["sent"] == 0 and len(smtp_sink.messages) == len(everyone)


@pytest.mark.slow  # ~3 s
def test_the_processes_share_the_highlighters_made_before_the_fork(  # type: ignore[no-untyped-def]
        world, smtp_sink: SmtpSink, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The highlighters of the papers the planned emails show are made once, before
    the fork (``EditionContext.prepare``): the forked process renders its emails
    without making one of its own, and they are those a process that made its own
    would send; a paper no email shows gets none."""
    from newsletter.delivery.edition import EditionContext
    from newsletter.render import highlight

    settings, engine = world
    everyone = add_many(engine)
    settings = smtp_settings(settings, smtp_sink, concurrency=1, processes=2)
    made, rendered = tmp_path / "made", tmp_path / "rendered"
    made.mkdir()
    rendered.mkdir()
    build, render = highlight.Highlighter.__init__, EditionContext.render

    def counted(self, *a, **k) -> None:  # type: ignore[no-untyped-def]
        (made / f"{os.getpid()}-{id(self)}").touch()
        build(self, *a, **k)

    def renders(self, job):  # type: ignore[no-untyped-def]
        (rendered / f"{os.getpid()}-{job.recipient.id}").touch()
        if os.getpid() == TEST_PID:  # the forked process gets rows of its own to render:
            waited = time.monotonic() + 10  # this one waits (bounded) for its first, or a
            while time.monotonic() < waited and all(  # slow fork found every row taken
                    p.name.startswith(f"{TEST_PID}-") for p in rendered.iterdir()):
                time.sleep(0.01)
        return render(self, job)

    monkeypatch.setattr(highlight.Highlighter, "__init__", counted)
    monkeypatch.setattr(EditionContext, "render", renders)
    summary = send(settings, engine, tmp_path)
    assert summary.report.counts["sent"] == len(everyone), summary.report.errors
    by = {p.name.split("-")[0] for p in rendered.iterdir()}
    assert len(by - {str(TEST_PID)}) == 1  # the forked process rendered emails...
    assert {p.name.split("-")[0] for p in made.iterdir()} == {str(TEST_PID)}  # ...with
    ctx = summary.context  # none of its own highlighters
    assert ctx is not None
    with session_scope(engine) as s:
        rows = s.execute(select(Delivery, Subscriber).join(
            Subscriber, Subscriber.id == Delivery.subscriber_id)).all()
        jobs = [Job.of(d, sub) for d, sub in rows]
    shown = {ctx.index[e] for job in jobs for e in job.entry_ids}
    assert set(ctx.renderer.digest._highlighters) == shown  # those shown, no other
    assert len(shown) < len(ctx.renderer.digest.papers)
    # what was sent is what rendering without them makes (a fresh context, lazily)
    got = {r: m for r, m in smtp_sink.messages}
    with session_scope(engine) as s:
        edition = s.get(type(summary.edition), summary.edition.id)
        fresh = editions.open_edition(EditionConfig.of(settings), s, edition)
    assert len(jobs) == len(everyone)
    for job in jobs:
        again = fresh.render(job)
        assert _parts_of(got[job.recipient.email]) == (again.html, again.text)


@pytest.mark.slow  # ~3 s each
@pytest.mark.parametrize("fails", [False, True], ids=["sent", "prepare-fails"])
def test_send_leaves_the_garbage_collector_as_it_found_it(  # type: ignore[no-untyped-def]
        world, smtp_sink: SmtpSink, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        fails: bool) -> None:
    """Planning, making the papers ready before the fork and delivering run with the
    collector frozen and its young threshold raised (``fewer_collections``): a send
    inside a long process (a test, an embedding program) hands it back enabled, with
    its thresholds, and nothing of its own frozen, also when it fails midway."""
    import gc

    from newsletter.delivery.edition import EditionContext

    settings, engine = world
    add_many(engine)
    settings = smtp_settings(settings, smtp_sink, concurrency=1, processes=2)
    if fails:
        def no_memory(self, papers):  # type: ignore[no-untyped-def]
            assert gc.get_threshold()[0] > 700 and gc.get_freeze_count()  # it is raised
            raise MemoryError

        monkeypatch.setattr(EditionContext, "prepare", no_memory)
    before = (gc.isenabled(), gc.get_threshold(), gc.get_freeze_count())
    assert before[2] == 0  # (what it was before: nothing frozen)
    if fails:
        with pytest.raises(MemoryError):
            send(settings, engine, tmp_path)
    else:
        assert send(settings, engine, tmp_path).report.counts["sent"] == EXTRA + len(ACTIVE)
    assert (gc.isenabled(), gc.get_threshold(), gc.get_freeze_count()) == before


def _parts_of(data: bytes) -> tuple[str, str]:
    """The HTML and text parts of a message as they were rendered (line ends LF)."""
    msg = email.message_from_bytes(data, policy=email.policy.default)
    html, text = msg.get_body(("html",)), msg.get_body(("plain",))
    assert html is not None and text is not None
    return tuple(str(p.get_content()).replace("\r\n", "\n")  # type: ignore[return-value]
                 for p in (html, text))


@pytest.mark.slow  # ~3 s
def test_a_process_that_dies_leaves_its_rows_to_be_sent_once(world, smtp_sink: SmtpSink,  # type: ignore[no-untyped-def]
                                                             tmp_path: Path) -> None:
    """The second process dies after 20 messages with rows claimed: they are taken
    back (their holder's pid is gone) and sent by this run; nobody twice, and a rerun
    has nothing left."""
    settings, engine = world
    everyone = add_many(engine)
    settings = smtp_settings(settings, smtp_sink, concurrency=1, processes=2)
    summary = send(settings, engine, tmp_path, die_after=20)
    assert any("delivery process" in e and "exit code 9" in e and "not counted here" in e
               for e in summary.report.errors)
    assert sorted(r for r, _ in smtp_sink.messages) == sorted(everyone)
    assert states(engine) == {"sent": len(everyone)}
    assert send(settings, engine, tmp_path).report.counts["sent"] == 0
    assert len(smtp_sink.messages) == len(everyone)


@pytest.mark.slow  # ~3 s
def test_rows_a_dead_process_left_are_sent_by_the_rerun(world, smtp_sink: SmtpSink,  # type: ignore[no-untyped-def]
                                                        tmp_path: Path) -> None:
    """A run stopped before it could take them back (here: the dead process's rows put
    back to ``sending`` under its pid, as a killed ``send`` leaves them): the rerun
    sends exactly those."""
    settings, engine = world
    everyone = add_many(engine)
    settings = smtp_settings(settings, smtp_sink, concurrency=1, processes=2)
    send(settings, engine, tmp_path)
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    with session_scope(engine) as s:
        rows = s.execute(select(Delivery.id, Subscriber.email).join(
            Subscriber, Subscriber.id == Delivery.subscriber_id)
            .order_by(Delivery.id.desc()).limit(30)).all()
        ids, gone = [r[0] for r in rows], [r[1] for r in rows]
        s.query(Delivery).filter(Delivery.id.in_(ids)).update(
            {"status": "sending", "lease_owner": f"{socket.gethostname()}:{dead}:x",
             "sent_at": None}, synchronize_session=False)
    smtp_sink.messages.clear()
    again = send(settings, engine, tmp_path)
    assert again.reclaimed == 30 and again.report.counts["sent"] == 30
    assert sorted(r for r, _ in smtp_sink.messages) == sorted(gone)
    assert states(engine) == {"sent": len(everyone)}


@pytest.mark.slow  # ~4 s each: a `newsletter send --processes 2` process
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_a_signal_stops_every_process_and_the_rerun_finishes(
        db_url: str, smtp_sink: SmtpSink, tmp_path: Path, sig: signal.Signals) -> None:
    """The signal to `send` is passed on: no process claims more, what was in flight is
    recorded, nothing is left ``sending``; the exit code is the signal's; the rerun
    sends the rest, everyone once."""
    from .test_delivery_day import cli_env, populate, signalled_send

    people = [(f"s{i}@example.org", "UTC", 7) for i in range(EXTRA)]
    populate(db_url, people)
    smtp_sink.delay = 0.02
    env = cli_env(db_url, smtp_sink, NEWSLETTER_SMTP__CONNECTIONS="1",
                  NEWSLETTER_TRANSPORT__CONCURRENCY="1")
    signalled_send(db_url, smtp_sink, tmp_path, env, people, sig, wait=30, timeout=60,
                   extra=("--processes", "2"))


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.slow  # ~4 s: a `newsletter send --processes 2` process, killed
def test_a_second_signal_ends_every_process_at_once(world, smtp_sink: SmtpSink,  # type: ignore[no-untyped-def]
                                                    tmp_path: Path) -> None:
    """The second SIGTERM kills the other process too (none is left sending); the rerun
    takes back the rows the killed processes held and sends everyone."""
    from .test_delivery_day import cli_env

    settings, engine = world
    everyone = add_many(engine)
    smtp_sink.delay = 0.05
    env = cli_env(settings.database.url, smtp_sink, NEWSLETTER_SMTP__CONNECTIONS="1",
                  NEWSLETTER_TRANSPORT__CONCURRENCY="1",
                  NEWSLETTER_OUTBOX__PATH=str(tmp_path / "outbox"))
    cmd = [sys.executable, "-m", "newsletter", "send", "--yes", "--force",
           "--date", DAY.isoformat(), "--processes", "2"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    smtp_sink.wait_for(20)
    children = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
                .read_text().split()]
    assert len(children) == 1
    smtp_sink.delay = 10  # the next messages stay in flight: the first signal waits for them
    deadline = time.monotonic() + 30  # one in flight from each process (one connection
    while smtp_sink.delaying.count(10) < 2 and time.monotonic() < deadline:  # each)
        time.sleep(0.01)
    assert smtp_sink.delaying.count(10) == 2, smtp_sink.delaying
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGTERM
    for _ in range(50):
        if not alive(children[0]):
            break
        time.sleep(0.1)
    assert not alive(children[0])
    smtp_sink.delay = 0
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0, again.stderr
    assert "took back" in again.stderr  # the rows both processes held
    missing = [r for r in everyone if not smtp_sink.count(r)]
    assert not missing, (missing, again.stderr, states(engine))
    assert states(engine) == {"sent": len(everyone)}
