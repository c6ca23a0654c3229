"""One edition delivered by several processes at once (``[transport] processes``).

Against a fast relay the sender's own CPU limits one process (rendering, recording
and the SMTP client take about 1.1 ms a message in one process), and the other
cores sit idle. Each extra process here is a whole delivery loop, the same
``deliver`` this process runs: it claims rows from the same ledger under a lease of
its own, exactly as queue workers do, so the database decides who sends which row
and each row is sent once. Deferrals, VERP, recording: all per row, as in one process.

The extra processes are forked after planning, so they share the opened edition
(ranked papers, compiled templates) instead of opening it again; each makes its own
transport and database connections. They report their counts back through a pipe,
and this process sums them into the one report.

Stopping, in every process at once:

* the first SIGTERM/SIGINT to this process is passed on to the others: nobody claims
  more, messages in flight finish and are recorded, claimed rows go back to pending.
  In the others every signal is that same request (a Ctrl-C reaches them too). A
  second signal to this process kills them and it at once; the rows they leave
  ``sending`` are taken back by the next run (their processes are gone), as in one
  process;
* a fault of ours in any process (a refused login) stops them all; ``SendingStopped``
  is raised once, with what all of them sent;
* a process that dies (killed, out of memory) leaves its leased rows; once the others
  ended, this process takes them back (``reclaim``: their holder's pid is gone) and
  sends them, with any row another process gave back. A process whose parent is gone
  stops claiming and finishes what it has.

Only from the main thread (signals are handled there) and where ``fork`` exists.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from types import FrameType
from typing import Any

from newsletter.collector import fewer_collections
from newsletter.config import DeliveryConfig, TransportConfig
from newsletter.delivery.deliver import (
    DeliverReport,
    Renders,
    claim_batch,
    deliver,
    run_async,
    sending_stopped,
)
from newsletter.delivery.ledger import DbLedger, Outcome, OutcomeStatus
from newsletter.delivery.planning import pending_count
from newsletter.delivery.shutdown import SIGNALS, Shutdown
from newsletter.errors import SendingStopped
from newsletter.store.db import session_scope
from newsletter.transports.base import Transport


def extra_processes(t: TransportConfig, pending: int) -> int:
    """How many processes to start beside this one: ``processes - 1``, as long as each
    process has at least one claim batch to send (a small edition is not worth a fork)."""
    if (t.processes <= 1 or not hasattr(os, "fork")
            or threading.current_thread() is not threading.main_thread()):
        return 0
    return max(0, min(t.processes - 1, pending // claim_batch(t) - 1))


def share(t: TransportConfig, processes: int) -> TransportConfig:
    """One process's part of the configured rates (each loop has its own limiter)."""
    return t.model_copy(update={"rate_per_second": t.rate_per_second / processes,
                                "rate_per_hour": t.rate_per_hour / processes})


@dataclass
class _Child:
    process: Any  # multiprocessing's ForkProcess
    conn: Connection  # its one message comes back here
    result: tuple[Any, ...] | None = None
    ended: bool = False

    def signal(self, signum: int) -> None:
        if not self.ended and self.process.exitcode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signum)


def deliver_in_processes(
        t: TransportConfig, ledger: DbLedger, ctx: Renders, transport: Transport,
        make_transport: Callable[[], Transport], extra: int, *,
        on_progress: Callable[[Outcome], None] | None = None,
        shutdown: Shutdown | None = None, retry: DeliveryConfig | None = None,
        clock: Callable[[], dt.datetime] | None = None,
        papers: Collection[str] = ()) -> DeliverReport:
    """Deliver ``ledger``'s edition here and in ``extra`` forked processes; the summed
    report (the progress callback sees this process's outcomes only). ``papers``: the
    ids of papers the emails show (those planned just before), whose rendering state
    is made once here, before the fork, and inherited by every process."""
    outer = shutdown or Shutdown()
    inner = Shutdown()  # this process's loop: a signal, or another process's stop
    part = share(t, extra + 1)
    kw: dict[str, Any] = {"retry": retry}
    if clock is not None:
        kw["clock"] = clock
    began = time.monotonic()
    children: list[_Child] = []
    outer.on_request(lambda: _forward(children, outer.signum, inner))
    with fewer_collections():  # (tens of thousands of objects: no full collections)
        ctx.prepare(papers)  # made once here, inherited by every process, not made in each
    if not outer.requested:  # (a signal meanwhile: this process gives the rows back alone)
        _start(children, extra, part, ledger, ctx, make_transport, kw)
    if outer.requested:  # a signal while forking: the processes started get it too
        _forward(children, outer.signum, inner)
    stop_all = _stopper(children, inner)
    restore = _handlers(children)
    watcher = threading.Thread(target=_watch, args=(children, stop_all),
                               name="delivery-processes", daemon=True)
    watcher.start()
    report, stopped = DeliverReport(), None
    alone, ledger.sharers = ledger.sharers, len(children) + 1  # claiming beside them
    try:
        report = run_async(deliver(part, ledger, ctx, transport, on_progress=on_progress,
                                   shutdown=inner, **kw))
    except SendingStopped as exc:
        stopped = exc
        stop_all()
    except BaseException:
        stop_all()
        raise
    finally:
        watcher.join()
        for child in children:
            child.process.join()
        restore()
        ledger.sharers = alone  # what is left is sent here alone
    reasons = [stopped.reason] if stopped is not None else []
    sent = stopped.sent if stopped is not None else 0
    for child in children:
        kind, *rest = child.result or ("died",)
        if kind == "done":
            report.add(rest[0])
        elif kind == "stopped":
            reasons.append(rest[0])
            sent += rest[1]
        else:
            why = rest[0] if rest else f"ended with exit code {child.process.exitcode}"
            # what it sent before it died is in the ledger, not in its missing report
            report.error(f"delivery process {child.process.pid}: {why}; its "
                         "unfinished rows were taken back, and what it had sent "
                         "is recorded (`newsletter status`) but not counted here", run=True)
    # A dead process's rows are ``sending`` under a gone pid: back in the queue. They,
    # and rows a process gave back (stopped alone), are sent here unless all stop.
    ledger.reclaim()
    if not inner.requested and not reasons and _pending(ledger):
        report.add(run_async(deliver(part, ledger, ctx, transport,
                                     on_progress=on_progress, shutdown=inner, **kw)))
    if reasons:
        raise sending_stopped(reasons[0], sent + report.counts[OutcomeStatus.SENT])
    report.seconds = time.monotonic() - began
    report.stopped_by = outer.signum
    return report


def _start(children: list[_Child], extra: int, t: TransportConfig, ledger: DbLedger,
           ctx: Renders, make_transport: Callable[[], Transport], kw: dict[str, Any]) -> None:
    """Fork the extra processes into ``children``, signals blocked meanwhile: a child
    must not run this process's handlers before it has its own."""
    fork = multiprocessing.get_context("fork")
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        for _ in range(extra):
            receive, send = fork.Pipe(duplex=False)
            process = fork.Process(  # daemon: never outlives an interpreter exiting early
                target=_child, args=(send, os.getpid(), t, ledger, ctx, make_transport, kw,
                                     extra + 1),
                name="newsletter-deliver", daemon=True)
            try:
                process.start()
            finally:
                send.close()
            children.append(_Child(process, receive))
    except BaseException:  # no fork (out of memory): those started stop, then are waited for
        for child in children:
            child.signal(signal.SIGTERM)
            child.process.join()
        raise
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _pending(ledger: DbLedger) -> int:
    with session_scope(ledger.engine, readonly=True) as s:
        return pending_count(s, ledger.edition)


def _stopper(children: list[_Child], inner: Shutdown) -> Callable[[], None]:
    def stop_all() -> None:  # a fault of ours somewhere: nobody claims more
        inner.request(signal.SIGTERM)
        for child in children:
            child.signal(signal.SIGTERM)
    return stop_all


def _forward(children: list[_Child], signum: int, inner: Shutdown) -> None:
    """The first signal to this process: the same request to every process."""
    inner.request(signum)
    for child in children:
        child.signal(signum)


def _handlers(children: list[_Child]) -> Callable[[], None]:
    """While the processes run, a second signal (the first one already reset this
    process's handlers to the default) kills the others too, then this process."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    before = {sig: signal.getsignal(sig) for sig in SIGNALS}
    children_of = os.getpid()

    def at_once(signum: int, frame: FrameType | None) -> None:
        for child in children:
            child.signal(signal.SIGKILL)
        for child in children:  # reaped here: a zombie's pid would look alive to reclaim
            child.process.join(2)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(children_of, signum)

    def watch_first(callback_was: Any) -> Callable[[int, FrameType | None], None]:
        def first(signum: int, frame: FrameType | None) -> None:
            if callable(callback_was):
                callback_was(signum, frame)  # Shutdown's handler: the graceful request
            for sig in SIGNALS:
                signal.signal(sig, at_once)
        return first

    for sig, was in before.items():
        signal.signal(sig, watch_first(was) if callable(was) else was)

    def restore() -> None:
        for sig, was in before.items():
            if signal.getsignal(sig) is at_once:
                signal.signal(sig, signal.SIG_DFL)
            else:
                signal.signal(sig, was)
    return restore


def _watch(children: list[_Child], stop_all: Callable[[], None]) -> None:
    """Read each process's report as it comes (a full pipe must never block a child
    that this process waits for) until every one has ended."""
    waiting: dict[Any, _Child | None] = {}
    for one in children:
        waiting[one.conn] = one
        waiting[one.process.sentinel] = one
    while waiting:
        for ready in wait(list(waiting)):
            child = waiting.pop(ready, None)
            if child is None:  # its pipe, read with its end just before
                continue
            if ready is child.conn or child.conn in waiting:
                waiting.pop(child.conn, None)
                _receive(child)
                if child.result is not None and child.result[0] == "stopped":
                    stop_all()
            if ready is not child.conn:
                child.ended = True


def _receive(child: _Child) -> None:
    try:
        if child.conn.poll():
            child.result = child.conn.recv()
    except (EOFError, OSError):
        pass


# ---- in an extra process -------------------------------------------------------------


def _child(conn: Connection, parent: int, t: TransportConfig, ledger: DbLedger,
           ctx: Renders, make_transport: Callable[[], Transport], kw: dict[str, Any],
           sharers: int) -> None:
    stop = Shutdown()
    for sig in SIGNALS:  # every signal is the same graceful request (never fatal here:
        signal.signal(sig, lambda signum, _f: stop.request(signum))  # see the module)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
    _own_stdio()
    threading.Thread(target=_orphaned, args=(parent, stop), daemon=True).start()
    ledger.engine.dispose(close=False)  # the parent's connections stay the parent's
    result: tuple[Any, ...]
    try:
        mine = DbLedger(ledger.engine, ledger.edition,  # a lease of its own (its pid)
                        sharers=sharers, run=ledger.run)  # in its parent's run
        report = run_async(deliver(t, mine, ctx, make_transport(), shutdown=stop, **kw))
        result = ("done", report)
    except SendingStopped as exc:
        result = ("stopped", exc.reason, exc.sent)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which says it
        result = ("error", f"{type(exc).__name__}: {exc}")
    with contextlib.suppress(OSError):
        conn.send(result)
    conn.close()


def _orphaned(parent: int, stop: Shutdown) -> None:
    """A parent that is gone (killed) cannot ask any more: stop claiming."""
    while not stop.requested:
        if os.getppid() != parent:
            stop.request(signal.SIGTERM)
        time.sleep(0.2)


def _own_stdio() -> None:
    """Fresh stdout/stderr objects: a thread of the parent (the progress display) may
    have held the old ones' locks at the fork, which a write here would wait for."""
    for name, fd in (("stdout", 1), ("stderr", 2)):
        old = getattr(sys, name)
        try:
            new = open(fd, "w", buffering=1, closefd=False,  # noqa: SIM115
                       encoding=getattr(old, "encoding", None) or "utf-8",
                       errors="backslashreplace")
        except OSError:
            continue
        setattr(sys, name, new)
        for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
            for handler in getattr(logger, "handlers", []):
                if isinstance(handler, logging.StreamHandler) and handler.stream in (
                        old, getattr(sys, f"__{name}__")):
                    handler.stream = new
