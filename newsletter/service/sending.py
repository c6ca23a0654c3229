"""``newsletter send`` as a policy: what must hold before a day's edition goes out,
and which way it goes (delivered here, or planned here and delivered by workers).

In order: the transport is made (its configuration checked) first, so a missing API
key is the first thing said; then the compliance gate (``check.send_blockers``,
overridden by ``force``); then, for a transport that really sends mail, the
operator's yes; then the signing-key guard (``signing.begin_signing``); then, with
``queue``, the broker is reached and the transport proven (one connection, one
login: the workers use the same settings) before anything is planned, so a wrong
password is one line here, not a task failing in every worker while this command
waits. The command only parses, calls ``send_day`` and presents the result.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Engine

from newsletter.config import QueueConfig
from newsletter.delivery.check import compliance_gate
from newsletter.delivery.deliver import run_async, sending_stopped
from newsletter.delivery.edition import EditionConfig
from newsletter.delivery.ledger import Outcome
from newsletter.delivery.queue import check_broker, enqueue, wait_for
from newsletter.delivery.shutdown import Shutdown
from newsletter.errors import InputError, TransportError
from newsletter.service.editions import SendSummary, plan_edition, send
from newsletter.service.signing import begin_signing
from newsletter.store.db import session_scope
from newsletter.store.models import Edition
from newsletter.transports.base import Transport


@dataclass(frozen=True)
class SendRequest:
    """What the operator asked for."""

    day: dt.date
    slot: str = ""
    yes: bool = False  # do not ask before sending through a real transport
    force: bool = False  # send although the mail is not compliant
    queue: bool = False  # plan here, deliver by workers
    tasks: int = 4  # with queue: tasks to enqueue
    wait: float = 3600.0  # with queue: seconds to wait for the workers


@dataclass
class Hooks:
    """How the caller takes part in a send while it runs. ``ask`` puts a yes/no
    question to the operator (None: there is nobody to ask); ``starting`` is called
    once the edition is to be planned and delivered here, and returns the Shutdown
    that stops it (signals are taken over from then on, not while asking)."""

    ask: Callable[[str], bool] | None = None
    say: Callable[[str], None] = lambda _line: None
    on_queued: Callable[[int, int, int], None] = lambda _edition, _pending, _tasks: None
    starting: Callable[[], Shutdown | None] = lambda: None
    on_planned: Callable[[int], None] | None = None
    on_progress: Callable[[Outcome], None] | None = None


@dataclass
class Queued:
    """A send through the queue: the edition, what was left to send, and the counts
    by state once the workers finished (or the wait ran out)."""

    edition: Edition | None
    pending: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    note: str = ""

    @property
    def unfinished(self) -> bool:
        return bool(self.counts.get("pending") or self.counts.get("sending")
                    or self.counts.get("failed"))


@dataclass
class SendResult:
    backend: str
    declined: bool = False  # the operator said no
    summary: SendSummary | None = None  # delivered here
    queued: Queued | None = None  # delivered by workers


def _gate(config: EditionConfig, transport: Transport, request: SendRequest,
          hooks: Hooks) -> bool:
    """The compliance gate and the operator's yes; False when the operator said no."""
    backend = config.transport.backend
    for line in compliance_gate(backend, config.web, config.sender, request.force):
        hooks.say(f"warning: sending anyway (--force): {line}")
    if transport.sends_mail and not request.yes:
        if hooks.ask is None:
            raise InputError(f"refusing to send through {backend} without --yes "
                             "(no terminal to ask)")
        return hooks.ask(f"Send the {request.day} edition through {backend}?")
    return True


async def _prove(transport: Transport) -> None:
    """Open and close the transport once (an SMTP transport connects and logs in)."""
    await transport.open()
    await transport.close()


def _through_queue(config: EditionConfig, engine: Engine, request: SendRequest,
                   queue: QueueConfig, hooks: Hooks, transport: Transport) -> Queued:
    check_broker(queue)  # a dead broker fails before planning too
    try:
        run_async(_prove(transport))
    except TransportError as exc:
        if exc.sender:  # ours: every worker would fail the same way
            raise sending_stopped(str(exc), 0) from None
        # anything else (a 421 at the greeting) is for the workers' own retries
    planned = plan_edition(config, engine, request.day, request.slot)
    if planned.edition is None:
        return Queued(None, note=planned.note)
    enqueue(queue, planned.edition.id, request.tasks)
    hooks.on_queued(planned.edition.id, planned.pending, request.tasks)
    counts = wait_for(engine, planned.edition.id, request.wait)
    return Queued(planned.edition, planned.pending, counts)


def send_day(config: EditionConfig, engine: Engine, request: SendRequest,
             make_transport: Callable[[], Transport], *, queue: QueueConfig,
             hooks: Hooks | None = None) -> SendResult:
    """Send ``request.day``'s edition under the policy above."""
    hooks = hooks or Hooks()
    transport = make_transport()  # first: a misconfigured transport is the first thing said
    result = SendResult(config.transport.backend)
    if not _gate(config, transport, request, hooks):
        result.declined = True
        return result
    with session_scope(engine) as s:  # refuses to drop a key that signed links
        begin_signing(config.web, s, "send")
    if request.queue:
        result.queued = _through_queue(config, engine, request, queue, hooks, transport)
    else:
        shutdown = hooks.starting()
        result.summary = send(config, engine, request.day, transport, slot=request.slot,
                              on_progress=hooks.on_progress, on_planned=hooks.on_planned,
                              shutdown=shutdown, make_transport=make_transport)
    return result
