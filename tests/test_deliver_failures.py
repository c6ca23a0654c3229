"""The delivery loop when its own parts fail: a ledger write that fails, a progress
callback that raises, and how far claims may run ahead under a rate limit. Every job
ends recorded exactly once (sent, failed or given back), and the transport is closed."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest

from newsletter.config import Settings
from newsletter.delivery.deliver import deliver
from newsletter.delivery.ledger import LEASE_SECONDS, RELEASED, MemoryLedger, Outcome
from newsletter.delivery.plan import Job
from newsletter.render.renderer import Recipient
from newsletter.store.models import DeliveryStatus
from newsletter.transports.base import Transport


def jobs(n: int) -> list[Job]:
    return [Job(Recipient(i, f"r{i}@example.org"), ["e"], False, i) for i in range(n)]


class Ledger(MemoryLedger):
    """Records like the real ledgers (all of a batch or nothing); ``fail`` says which
    calls of ``record`` raise, as a locked SQLite or a dropped connection would."""

    def __init__(self, work: Sequence[Job], fail: Any = lambda call: False) -> None:
        super().__init__(work)
        self.fail = fail
        self.calls = 0
        self.claims: list[int] = []

    def claim(self, n: int) -> list[Job]:
        self.claims.append(n)
        return super().claim(n)

    def record(self, outcomes: Sequence[Outcome]) -> None:
        self.calls += 1
        if self.fail(self.calls):
            raise RuntimeError("database is locked")
        super().record(outcomes)


class Sink(Transport):
    def __init__(self) -> None:
        self.sent = 0
        self.closed = False

    async def send(self, message: Any) -> str:
        await asyncio.sleep(0.001)
        self.sent += 1
        return f"<{self.sent}@example.org>"

    async def close(self) -> None:
        self.closed = True


class Ctx:
    def render(self, job: Job) -> Any:
        return SimpleNamespace(message=object())

    def prepare(self, papers: Any) -> None:
        pass


def once_each(ledger: Ledger, n: int) -> Counter[str]:
    ids = Counter(o.job.delivery_id for o in ledger.outcomes)
    assert set(ids) == set(range(n)) and set(ids.values()) == {1}
    return Counter(str(o.status) for o in ledger.outcomes)


def test_a_failed_record_is_tried_again_and_nothing_is_lost() -> None:
    ledger, sink = Ledger(jobs(300), fail=lambda call: call == 1), Sink()
    report = asyncio.run(deliver(Settings().transport, ledger, Ctx(), sink))  # type: ignore[arg-type]
    assert once_each(ledger, 300) == {str(DeliveryStatus.SENT): 300}
    assert report.counts[DeliveryStatus.SENT] == 300 and sink.closed and ledger.calls >= 2


def test_records_that_keep_failing_stop_the_sending(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """What is sent must be recorded: with the ledger unwritable, sending stops (the rest
    stays claimed for a later run) and the error is raised, the transport closed. (The
    run's patience made short: the ledger never comes back.)"""
    from newsletter.delivery import deliver as deliver_mod

    monkeypatch.setattr(deliver_mod, "LEDGER_PATIENCE", 0.5)
    ledger, sink = Ledger(jobs(20_000), fail=lambda call: True), Sink()
    with pytest.raises(RuntimeError, match="database is locked"):
        asyncio.run(deliver(Settings().transport, ledger, Ctx(), sink))  # type: ignore[arg-type]
    assert sink.closed
    assert 0 < sink.sent < 20_000
    assert ledger.queue  # never claimed: still pending


def test_an_error_no_wait_mends_stops_the_sending_at_once(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A record or a claim that the database refuses for good (the tables not what the
    code writes, no privileges: a ProgrammingError) stops the run at its first try, not
    after the patience meant for a database that is away (here half a minute: a run
    that waited would try again a dozen times)."""
    import sqlalchemy.exc

    from newsletter.delivery import deliver as deliver_mod

    monkeypatch.setattr(deliver_mod, "LEDGER_PATIENCE", 30.0)
    refused = sqlalchemy.exc.ProgrammingError(
        "INSERT INTO sent_entries ...", {}, Exception("there is no unique or exclusion "
                                                      "constraint matching the ON CONFLICT"))

    class Refusing(Ledger):
        def record(self, outcomes: Sequence[Outcome]) -> None:
            self.calls += 1
            raise refused

    ledger, sink = Refusing(jobs(50)), Sink()
    with pytest.raises(sqlalchemy.exc.ProgrammingError):
        asyncio.run(deliver(Settings().transport, ledger, Ctx(), sink))  # type: ignore[arg-type]
    assert ledger.calls <= 2 and sink.closed  # the flusher's try and the last record's

    class NoClaim(Ledger):
        def claim(self, n: int) -> list[Job]:
            self.claims.append(n)
            raise refused

    claiming = NoClaim(jobs(50))
    with pytest.raises(sqlalchemy.exc.ProgrammingError):
        asyncio.run(deliver(Settings().transport, claiming, Ctx(), Sink()))  # type: ignore[arg-type]
    assert len(claiming.claims) == 1 and claiming.outcomes == []


def test_a_raising_progress_callback_gives_the_rest_back() -> None:
    ledger, sink = Ledger(jobs(500)), Sink()
    seen: list[Outcome] = []

    def progress(outcome: Outcome) -> None:
        seen.append(outcome)
        if len(seen) == 50:
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        asyncio.run(deliver(Settings().transport, ledger, Ctx(), sink,  # type: ignore[arg-type]
                            on_progress=progress))
    # every claimed job is recorded once: sent (those that went) or released (the rest)
    claimed = 500 - len(ledger.queue)
    assert sorted(o.job.delivery_id for o in ledger.outcomes) == list(range(claimed))
    statuses = Counter(str(o.status) for o in ledger.outcomes)
    assert statuses[str(DeliveryStatus.SENT)] == sink.sent >= 50
    assert statuses[RELEASED] == claimed - sink.sent > 0
    assert sink.closed


@pytest.mark.parametrize("per_second, per_hour, largest", [
    (0, 0, 128),  # unlimited: concurrency x 8
    (2, 0, int(2 * LEASE_SECONDS / 4)),
    (0, 3600, int(1 * LEASE_SECONDS / 4)),
])
def test_claims_stay_within_the_lease_under_a_rate_limit(per_second: float, per_hour: float,
                                                         largest: int) -> None:
    """Two batches may wait claimed: under a rate limit both must go out well within the
    lease, or another process would reclaim (and send again) rows this one still has."""
    ledger = Ledger(jobs(3))
    settings = Settings().replace(transport={"rate_per_second": per_second,
                                             "rate_per_hour": per_hour, "concurrency": 16})
    asyncio.run(deliver(settings.transport, ledger, Ctx(), Sink()))  # type: ignore[arg-type]
    assert max(ledger.claims) == largest
    assert once_each(ledger, 3) == {str(DeliveryStatus.SENT): 3}


def test_the_collector_is_given_back_as_it_was_when_the_last_delivery_ends() -> None:
    """Deliveries at once share the collector's settings; the last one out restores
    them, also when it ends with an error."""
    import gc

    from newsletter.collector import GC_YOUNG, fewer_collections

    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    with pytest.raises(RuntimeError), fewer_collections():
        assert gc.get_threshold()[0] >= GC_YOUNG
        assert gc.get_freeze_count() > frozen and gc.isenabled()
        with fewer_collections():  # a second delivery at the same time
            pass
        assert gc.get_threshold()[0] >= GC_YOUNG  # the first is still running
        raise RuntimeError("the delivery failed")
    assert gc.get_threshold() == before and gc.get_freeze_count() == frozen


def test_the_first_claim_is_one_job_per_sender_then_whole_batches() -> None:
    """The connections start on a small first claim while the first whole batch is
    claimed; every job is still sent once."""
    ledger = Ledger(jobs(1000))
    t = Settings().replace(transport={"concurrency": 16}).transport
    asyncio.run(deliver(t, ledger, Ctx(), Sink()))  # type: ignore[arg-type]
    assert ledger.claims[0] == 16
    assert set(ledger.claims[1:]) == {128}
    assert once_each(ledger, 1000) == {str(DeliveryStatus.SENT): 1000}


def test_the_run_ends_when_its_last_outcome_is_recorded_not_a_flush_interval_later(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The flusher records every ``FLUSH_SECONDS``; the end of the run wakes it, so the
    last outcomes are recorded and the run returns without waiting out the interval
    (an hour here: without the wake-up this run would not end within the minute)."""
    from newsletter.delivery import deliver as deliver_mod

    monkeypatch.setattr(deliver_mod, "FLUSH_SECONDS", 3600.0)
    ledger, sink = Ledger(jobs(50)), Sink()

    async def run() -> Any:
        return await asyncio.wait_for(deliver(Settings().transport, ledger, Ctx(),  # type: ignore[arg-type]
                                              sink), 60)

    report = asyncio.run(run())
    assert report.counts[DeliveryStatus.SENT] == 50 and sink.closed
    assert once_each(ledger, 50) == {str(DeliveryStatus.SENT): 50}


class Logged(Transport):
    """Sends each message (the job's id, as ``LoggedCtx`` renders it) into ``log``."""

    def __init__(self, log: list[tuple[str, int]], after: Any = None) -> None:
        self.log, self.after, self.closed = log, after, False

    async def send(self, message: Any) -> str:
        self.log.append(("send", message))
        if self.after:
            self.after(len([e for e in self.log if e[0] == "send"]))
        await asyncio.sleep(0)
        return f"<{message}@example.org>"

    async def close(self) -> None:
        self.closed = True


class LoggedCtx:
    """Renders a job as its id, into ``log``; the ids in ``broken`` raise instead, and
    with ``everyone`` every email does (a template broken for all, a plain reader's
    too). A plain reader's probe (no delivery id) is not logged."""

    def __init__(self, log: list[tuple[str, int]], broken: frozenset[int] = frozenset(),
                 everyone: bool = False, paper: str = "") -> None:
        self.log, self.broken, self.everyone, self.paper = log, broken, everyone, paper
        self.index = {"e": 0, "good": 1, "bad": 2}  # the edition's papers

    def render(self, job: Job) -> Any:
        if job.delivery_id is not None:
            self.log.append(("render", job.delivery_id))
        if self.everyone or job.delivery_id in self.broken or self.paper in job.entry_ids:
            raise ValueError(f"template error for {job.delivery_id}")
        return SimpleNamespace(message=job.delivery_id)

    def prepare(self, papers: Any) -> None:
        pass


def test_emails_are_rendered_back_to_back_and_each_goes_to_its_own_job() -> None:
    """Waiting jobs are rendered several at once (``RENDER_AHEAD``), then sent: each
    job is rendered once, and the message sent for a job is its own; one whose render
    raises fails alone ("render: ..."), the others of its batch are sent."""
    from newsletter.delivery.deliver import RENDER_AHEAD

    log: list[tuple[str, int]] = []
    ledger = Ledger(jobs(300))
    report = asyncio.run(deliver(Settings().transport, ledger,  # type: ignore[arg-type]
                                 LoggedCtx(log, frozenset({5, 77})), Logged(log)))
    renders = [i for kind, i in log if kind == "render"]
    assert sorted(renders) == list(range(300))  # each once
    runs, run = [], 0
    for kind, _ in log:
        run = run + 1 if kind == "render" else 0
        runs.append(run)
    assert max(runs) == RENDER_AHEAD  # back to back, never more than the batch
    sent = {i for kind, i in log if kind == "send"}
    assert sent == set(range(300)) - {5, 77}
    statuses = once_each(ledger, 300)
    assert statuses == {str(DeliveryStatus.SENT): 298, str(DeliveryStatus.FAILED): 2}
    failed = {o.job.delivery_id: o.error for o in ledger.outcomes
              if o.status == DeliveryStatus.FAILED}
    assert failed == {5: "render: template error for 5", 77: "render: template error for 77"}
    assert report.counts[DeliveryStatus.SENT] == 298


@pytest.mark.parametrize("rate", [0.0, 1000.0])  # rendered ahead in batches, or one by one
def test_a_template_that_fails_for_everyone_stops_the_run_with_every_row_pending(
        rate: float) -> None:
    """No email of the run renders: the fault is the template's, not a reader's. The run
    stops, saying the render error in one line, nothing is sent and no row is failed:
    every row claimed goes back to pending (failed row by row, the edition was lost for
    good, and fixing the template sent nothing)."""
    from newsletter.errors import SendingStopped

    log: list[tuple[str, int]] = []
    ledger = Ledger(jobs(300))
    ledger.edition = SimpleNamespace(id=1)  # type: ignore[attr-defined]  # an edition's run
    t = Settings().replace(transport={"rate_per_second": rate}).transport
    with pytest.raises(SendingStopped) as stopped:
        asyncio.run(deliver(t, ledger, LoggedCtx(log, everyone=True),  # type: ignore[arg-type]
                            Logged(log)))
    assert "render: template error for 0" in str(stopped.value)
    assert "\n" not in str(stopped.value) and stopped.value.sent == 0
    assert not [i for kind, i in log if kind == "send"]
    assert {str(o.status) for o in ledger.outcomes} == {RELEASED}
    assert len({o.job.delivery_id for o in ledger.outcomes}) == len(ledger.outcomes)
    assert len(log) < 300  # stopped at the first proof, not after rendering everyone


@pytest.mark.parametrize("rate, n", [(0.0, 40), (1000.0, 40), (0.0, 1)])
def test_a_render_error_of_the_first_reader_alone_is_that_readers(rate: float, n: int) -> None:
    """The run's first job fails to render for its reader's data (the same email for a
    plain reader renders): that reader's row fails, as one whose render raises later in
    the run, and everyone else is sent. Also with nothing waiting behind it (a last
    row; one sender, or a rate limit that claims one row at a time), where the run
    stopped, and stopped again at every rerun with the same reader first."""
    log: list[tuple[str, int]] = []
    ledger = Ledger(jobs(n))
    ledger.edition = SimpleNamespace(id=1)  # type: ignore[attr-defined]  # an edition's run
    t = Settings().replace(transport={"rate_per_second": rate}).transport
    report = asyncio.run(deliver(t, ledger, LoggedCtx(log, frozenset({0})),  # type: ignore[arg-type]
                                 Logged(log)))
    assert report.counts[DeliveryStatus.SENT] == n - 1
    assert once_each(ledger, n) == ({str(DeliveryStatus.SENT): n - 1,
                                     str(DeliveryStatus.FAILED): 1} if n > 1
                                    else {str(DeliveryStatus.FAILED): 1})
    assert sorted(i for kind, i in log if kind == "render") == list(range(n))  # each once


def test_a_render_error_of_one_papers_data_is_its_readers_even_with_nothing_waiting(
        ) -> None:
    """One paper's data fails every email that shows it (a plain reader's too): the first
    reader, the only one shown it, fails alone, also when nothing waits behind them
    (a last row, one sender, a low rate limit), where the run stopped at every rerun."""
    for papers in (["bad", "good"], ["bad"]):  # (its only paper: another one is tried)
        log: list[tuple[str, int]] = []
        ledger = Ledger([Job(Recipient(0, "r0@example.org"), papers, False, 0)])
        ledger.edition = SimpleNamespace(id=1)  # type: ignore[attr-defined]  # an edition's
        report = asyncio.run(deliver(Settings().transport, ledger,  # type: ignore[arg-type]
                                     LoggedCtx(log, paper="bad"), Logged(log)))
        assert once_each(ledger, 1) == {str(DeliveryStatus.FAILED): 1}, papers
        assert report.counts[DeliveryStatus.FAILED] == 1


def test_a_preview_says_each_render_error_and_never_stops() -> None:
    """A preview (no edition, no rows) of emails that all fail to render lists each
    error: it said "sending stopped ... pending again and sent by `newsletter send`"."""
    log: list[tuple[str, int]] = []
    ledger = Ledger(jobs(3))  # (a preview's ledger has no edition)
    report = asyncio.run(deliver(Settings().transport, ledger,  # type: ignore[arg-type]
                                 LoggedCtx(log, everyone=True), Logged(log)))
    assert report.counts[DeliveryStatus.FAILED] == 3 and len(report.errors) == 3


def test_a_stop_gives_back_the_jobs_rendered_ahead_unsent() -> None:
    """Asked to stop after 40 messages: no message goes after that, and every claimed job
    not sent (rendered ahead or not) is given back, each recorded once."""
    from newsletter.delivery.shutdown import Shutdown

    log: list[tuple[str, int]] = []
    stop = Shutdown()
    ledger = Ledger(jobs(2000))
    transport = Logged(log, after=lambda n: stop.request(15) if n == 40 else None)
    asyncio.run(deliver(Settings().transport, ledger, LoggedCtx(log),  # type: ignore[arg-type]
                        transport, shutdown=stop))
    sends = [i for kind, i in log if kind == "send"]
    rendered = {i for kind, i in log if kind == "render"}
    assert 40 <= len(sends) <= 40 + Settings().transport.concurrency  # those in flight
    claimed = 2000 - len(ledger.queue)
    statuses = Counter(str(o.status) for o in ledger.outcomes)
    assert sorted(o.job.delivery_id for o in ledger.outcomes) == list(range(claimed))
    assert statuses[str(DeliveryStatus.SENT)] == len(sends)
    assert statuses[RELEASED] == claimed - len(sends)
    assert rendered - set(sends)  # some were rendered ahead, and given back unsent
    assert transport.closed


def test_under_a_rate_limit_each_email_is_rendered_when_its_turn_comes() -> None:
    """With a rate limit the CPU is not what limits the sending: no rendering ahead (an
    email made long before it goes would carry an old Date)."""
    def most_waiting(rate: float) -> int:
        """The most emails rendered and not yet sent at any point."""
        log: list[tuple[str, int]] = []
        t = Settings().replace(transport={"rate_per_second": rate}).transport
        asyncio.run(deliver(t, Ledger(jobs(200)), LoggedCtx(log), Logged(log)))  # type: ignore[arg-type]
        waiting = most = 0
        for kind, _ in log:
            waiting += 1 if kind == "render" else -1
            most = max(most, waiting)
        return most

    from newsletter.delivery.deliver import RENDER_AHEAD

    concurrency = Settings().transport.concurrency
    assert most_waiting(0) >= RENDER_AHEAD > concurrency  # unlimited: rendered ahead
    assert most_waiting(1000) <= concurrency  # limited: only the senders' own, each one


def test_each_delivery_is_timed_with_its_own_render_wherever_it_was_made(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``newsletter_send_seconds`` is per delivery: a render counts for its own job, not
    for the sender that made a batch of them. The delivery loop's clock here moves one
    second per render and nowhere else (the transport answers without waiting), so
    every sent job must show exactly one second."""
    from newsletter.delivery import deliver as deliver_mod

    clock = [0.0]
    monkeypatch.setattr(deliver_mod, "time", SimpleNamespace(
        perf_counter=lambda: clock[0], monotonic=__import__("time").monotonic))
    timed: dict[int, float] = {}
    monkeypatch.setattr(deliver_mod, "delivery_outcome", lambda edition, outcome, seconds:
                        timed.__setitem__(outcome.job.delivery_id or 0, seconds))

    class Ticking(LoggedCtx):
        def render(self, job: Job) -> Any:
            clock[0] += 1.0
            return super().render(job)

    class Instant(Transport):
        async def send(self, message: Any) -> str:
            return "<x@example.org>"

    ledger = Ledger(jobs(200))
    ledger.edition = SimpleNamespace(id=1)  # type: ignore[attr-defined]
    asyncio.run(deliver(Settings().transport, ledger, Ticking([]),  # type: ignore[arg-type]
                        Instant()))
    assert len(timed) == 200
    assert set(timed.values()) == {1.0}



class Timed(Sink):
    """A sink that notes when each message was handed to it (monotonic)."""

    def __init__(self) -> None:
        super().__init__()
        self.started: list[float] = []

    async def send(self, message: Any) -> str:
        self.started.append(time.monotonic())
        return await super().send(message)


class Broken(Ledger):
    """A database that goes away after ``good`` claims: every claim and record from then
    on raises (the disk full, the server gone), until ``back`` calls later, if ever;
    ``broke`` is when the first call failed."""

    def __init__(self, work: Sequence[Job], good: int, back: int = 10**9) -> None:
        super().__init__(work)
        self.good, self.back = good, back
        self.broke: float | None = None
        self.failed_calls = 0

    def _check(self) -> None:
        if len(self.claims) > self.good and self.failed_calls < self.back:
            self.failed_calls += 1
            if self.broke is None:
                self.broke = time.monotonic()
            raise RuntimeError("database or disk is full")

    def claim(self, n: int) -> list[Job]:
        self.claims.append(n)
        self._check()
        return MemoryLedger.claim(self, n)

    def record(self, outcomes: Sequence[Outcome]) -> None:
        self.calls += 1
        self._check()
        MemoryLedger.record(self, outcomes)


def test_nothing_new_is_sent_while_the_ledger_cannot_record_it(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A message sent while the ledger cannot be written is sent again by the next run
    (its row is still leased, then taken back): with the database gone (disk full,
    server down), no message may start once a claim or record has failed; the claimed
    rows not yet sent are given back, and only those already in flight can be sent
    twice. (The run's patience made short: the database never comes back.)"""
    from newsletter.delivery import deliver as deliver_mod

    monkeypatch.setattr(deliver_mod, "LEDGER_PATIENCE", 0.5)
    t = Settings().transport
    ledger, sink = Broken(jobs(5_000), good=3), Timed()
    with pytest.raises(RuntimeError, match="disk is full"):
        asyncio.run(deliver(t, ledger, Ctx(), sink))  # type: ignore[arg-type]
    assert ledger.broke is not None and sink.sent > 0 and sink.closed
    late = sum(1 for at in sink.started if at > ledger.broke)
    assert late <= t.concurrency, f"{late} messages started after the ledger broke"


def test_a_database_blip_does_not_end_the_run_nor_send_anyone_twice() -> None:
    """A database gone for a moment (a PostgreSQL restart, a dropped connection): the
    claim and the record that failed are tried again, and every job is sent once."""
    ledger, sink = Broken(jobs(3_000), good=3, back=2), Timed()
    report = asyncio.run(deliver(Settings().transport, ledger, Ctx(), sink))  # type: ignore[arg-type]
    assert once_each(ledger, 3_000) == {str(DeliveryStatus.SENT): 3_000}
    assert report.counts[DeliveryStatus.SENT] == sink.sent == 3_000 and ledger.failed_calls == 2


class Away(Broken):
    """A database away for ``seconds`` from the first failed call, then back."""

    def __init__(self, work: Sequence[Job], good: int, seconds: float) -> None:
        super().__init__(work, good)
        self.seconds = seconds

    def _check(self) -> None:
        if self.broke is not None and time.monotonic() - self.broke >= self.seconds:
            return
        super()._check()


def test_a_database_away_for_seconds_is_waited_for(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Claims and records failing for two seconds (a server restarting, a failover)
    are tried until they succeed, within ``LEDGER_PATIENCE``: the run goes on and sends
    everyone once, where five quick tries gave up within a second. Nothing starts
    while the database is away."""
    from newsletter.delivery import deliver as deliver_mod

    monkeypatch.setattr(deliver_mod, "LEDGER_WAIT", 0.2)
    ledger, sink = Away(jobs(3_000), good=3, seconds=2.0), Timed()
    report = asyncio.run(deliver(Settings().transport, ledger, Ctx(), sink))  # type: ignore[arg-type]
    assert once_each(ledger, 3_000) == {str(DeliveryStatus.SENT): 3_000}
    assert report.counts[DeliveryStatus.SENT] == sink.sent == 3_000
    assert ledger.broke is not None and ledger.failed_calls > 5
    away = [at for at in sink.started if ledger.broke + 0.1 < at < ledger.broke + 1.9]
    assert not away, f"{len(away)} messages started while the database was away"


class AwayAtTheEnd(Ledger):
    """Claims work; records fail for ``seconds`` from the first one made once every
    message has been handed over (the run's last batch, as it ends)."""

    def __init__(self, work: Sequence[Job], seconds: float, sink: Sink) -> None:
        super().__init__(work)
        self.seconds, self.sink, self.total = seconds, sink, len(work)
        self.broke: float | None = None

    def record(self, outcomes: Sequence[Outcome]) -> None:
        self.calls += 1
        if self.sink.sent >= self.total:
            if self.broke is None:
                self.broke = time.monotonic()
            if time.monotonic() - self.broke < self.seconds:
                raise RuntimeError("server closed the connection unexpectedly")
        MemoryLedger.record(self, outcomes)


def test_a_database_away_as_the_run_ends_is_waited_for(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The last outcomes' record waits for a database gone as the run ends as long as
    one gone midway (``LEDGER_PATIENCE`` from the first failure): with a few quick
    tries, 72 of 500 messages sent stayed unrecorded and the next run sent them again."""
    from newsletter.delivery import deliver as deliver_mod

    monkeypatch.setattr(deliver_mod, "LEDGER_WAIT", 0.2)
    sink = Sink()
    ledger = AwayAtTheEnd(jobs(500), 3.0, sink)
    asyncio.run(deliver(Settings().transport, ledger, Ctx(), sink))  # type: ignore[arg-type]
    assert ledger.broke is not None and sink.sent == 500
    assert once_each(ledger, 500) == {str(DeliveryStatus.SENT): 500}


class Lapsing(Ledger):
    """Records fail and renewals hang for ``seconds`` from the third record on (a
    failover: a dead connection), renewals asked for every 0.2 s."""

    def __init__(self, work: Sequence[Job], seconds: float) -> None:
        super().__init__(work)
        self.seconds = seconds
        self.broke: float | None = None

    def _away(self) -> bool:
        return self.broke is not None and time.monotonic() - self.broke < self.seconds

    def record(self, outcomes: Sequence[Outcome]) -> None:
        self.calls += 1
        if self.calls == 3 and self.broke is None:
            self.broke = time.monotonic()
        if self._away():
            raise RuntimeError("server closed the connection unexpectedly")
        MemoryLedger.record(self, outcomes)

    def renew(self) -> int:
        while self._away():
            time.sleep(0.01)
        return 0

    @property
    def renew_seconds(self) -> float:
        return 0.2


def test_a_sender_that_waited_for_the_ledger_asks_again_whether_its_row_is_held(
        monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A sender waiting while records fail may find, when they work again, that the
    renewals hung meanwhile and its row's lease may have lapsed (another host may take
    it): it must not send then. The run's own check (``may_send``) is read at the
    moment each message reaches the transport."""
    from newsletter.delivery import deliver as deliver_mod

    runs: list[Any] = []
    made = deliver_mod._Run.__init__

    def keep(self: Any, *args: Any, **kwargs: Any) -> None:
        made(self, *args, **kwargs)
        runs.append(self)

    monkeypatch.setattr(deliver_mod._Run, "__init__", keep)
    unsafe: list[int] = []

    class Checking(Sink):
        async def send(self, message: Any) -> str:
            if not runs[0].may_send(message):
                unsafe.append(message.delivery_id)
            return await super().send(message)

    class Jobs:  # the message is its job, so the sink knows whose row it is
        def render(self, job: Job) -> Any:
            return SimpleNamespace(message=job)

    ledger = Lapsing(jobs(3_000), 1.5)
    asyncio.run(deliver_mod.deliver(Settings().transport, ledger, Jobs(), Checking()))  # type: ignore[arg-type]
    assert ledger.broke is not None and not unsafe, f"{len(unsafe)} sent while not held"


def test_a_signal_while_claims_fail_is_reported_as_the_stop(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Claims failing when a signal comes: the run stops as asked (``stopped_by``), not
    with the database's error as if it had given up on the ledger."""
    import signal

    from newsletter.delivery.shutdown import Shutdown

    class Failing(Ledger):
        def claim(self, n: int) -> list[Job]:
            if len(self.claims) >= 2:
                self.claims.append(n)
                raise RuntimeError("server closed the connection unexpectedly")
            return super().claim(n)

    stop = Shutdown()

    async def run() -> Any:
        asyncio.get_running_loop().call_later(0.5, stop.request, signal.SIGTERM)
        return await deliver(Settings().transport, Failing(jobs(2_000)), Ctx(), Sink(),  # type: ignore[arg-type]
                             shutdown=stop)

    report = asyncio.run(run())
    assert report.stopped_by == signal.SIGTERM


def test_a_run_stopped_by_the_mail_server_still_waits_to_record_what_it_sent(
        monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A fault of the sending side stops the run while the database is away too (a
    network split): the last record still waits for it, so every message sent is
    recorded and none is sent again by the next run; the stop is said as the sending
    side's."""
    from newsletter.delivery import deliver as deliver_mod
    from newsletter.errors import SendingStopped, TransportError

    monkeypatch.setattr(deliver_mod, "LEDGER_WAIT", 0.2)
    broke: list[float] = []

    class Refusing(Sink):
        async def send(self, message: Any) -> str:
            if self.sent >= 200:
                if not broke:
                    broke.append(time.monotonic())
                raise TransportError("535 authentication failed", permanent=True,
                                     sender=True)
            return await super().send(message)

    class Away(Ledger):
        def record(self, outcomes: Sequence[Outcome]) -> None:
            self.calls += 1
            if broke and time.monotonic() - broke[0] < 2.0:
                raise RuntimeError("server closed the connection unexpectedly")
            MemoryLedger.record(self, outcomes)

    ledger, sink = Away(jobs(3_000)), Refusing()
    with pytest.raises(SendingStopped):
        asyncio.run(deliver(Settings().transport, ledger, Ctx(), sink))  # type: ignore[arg-type]
    sent = [o for o in ledger.outcomes if o.status == DeliveryStatus.SENT]
    assert broke and len(sent) == sink.sent >= 200
