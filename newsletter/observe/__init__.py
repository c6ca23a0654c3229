"""Observability: Prometheus metrics, structured logs and process heartbeats.

* ``metrics``: the process's counters and histograms, plus a collector that reads
  ledger states and heartbeats from the database at scrape time;
* ``logs``: text or JSON lines on stderr for the long-running commands;
* ``heartbeat``: ``run`` and ``worker`` write one, ``status`` reads them.

Delivery code reports through :func:`delivery_outcome` and :func:`delivery_retry`,
one call each, so a new metric or log field is added here and not in the loop.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from newsletter.delivery.ledger import Outcome, OutcomeStatus
from newsletter.observe.metrics import metrics

OUTCOME_LOG = logging.getLogger("newsletter.delivery.outcome")


def delivery_outcome(edition_id: int, outcome: Outcome, seconds: float) -> None:
    """One delivery finished: count it, time it, and log one line about it."""
    m = metrics()
    m.deliveries.labels(outcome=str(outcome.status)).inc()
    if outcome.status == OutcomeStatus.SENT:
        m.send_seconds.observe(seconds)
    elif outcome.status == OutcomeStatus.FAILED:
        reason = ("bounce" if outcome.bounce else "render" if outcome.error.startswith("render:")
                  else outcome.reason or ("permanent" if outcome.permanent else "transient"))
        m.failures.labels(reason=reason).inc()
        if outcome.bounce:
            m.bounces.labels(kind="hard").inc()
    if OUTCOME_LOG.isEnabledFor(logging.INFO):
        r = outcome.job.recipient
        OUTCOME_LOG.info(
            "edition %s subscriber %s: %s in %.3fs%s", edition_id, r.id, outcome.status, seconds,
            f" ({outcome.error})" if outcome.error else "",
            extra={"edition": edition_id, "subscriber": r.id, "email": r.email,
                   "outcome": str(outcome.status), "seconds": round(seconds, 4),
                   "attempts": outcome.job.attempts, "error": outcome.error or None})


def bounces_read(counts: Mapping[str, int]) -> None:
    """One read of the bounce mailbox (or one webhook report): count each kind."""
    m = metrics()
    for kind, n in counts.items():
        if n and kind != "already":  # read again, acted on before: counted then
            m.bounces.labels(kind=kind).inc(n)


def delivery_retry(transient_error: str) -> None:
    """A transient failure that will be tried again after a backoff."""
    metrics().retries.inc()
    OUTCOME_LOG.debug("retrying after: %s", transient_error)
