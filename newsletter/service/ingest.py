"""The ingest use cases: fetch and parse sources (``ingest/``), then store the papers
(``store/entries``), the validators each URL sent and how each source's run went
(``store/sources``); list the sources with their last run; a dry run of one.

The CLI (``ingest``, ``demo``, ``sources list``, ``sources test``), the scheduler and
the operator's console call these and present the result.

Every source is loaded before anything is stored, and everything is stored in one
transaction: one bad source among five stores nothing. A failed ingest's error is
recorded in a transaction of its own, after the rollback: the failure is exactly
what ``sources list`` must be able to show.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from newsletter.config import SourceConfig
from newsletter.errors import NewsletterError
from newsletter.ingest.fetch import Validators
from newsletter.ingest.run import Loaded, load_all, sources_of
from newsletter.ingest.sources import DryRun, dry_run
from newsletter.store import sources as store_sources
from newsletter.store.db import hold_papers_clock, session_scope
from newsletter.store.entries import upsert_papers
from newsletter.store.models import SourceRun, utcnow
from newsletter.store.sources import RunOutcome, source_key, stored_origin

__all__ = ["DryRun", "IngestReport", "dry_run", "forget_source", "ingest", "list_sources",
           "run_ingest", "source_fetches"]

SessionFactory = Callable[[], AbstractContextManager[Session]]


@dataclass
class IngestReport:
    loaded: list[Loaded] = field(default_factory=list)
    new: int = 0
    updated: int = 0
    unchanged: int = 0  # stored before the run, found as they were
    # carried by more than one source of the run: counted once, as the first stored it
    repeated: int = 0

    @property
    def total(self) -> int:
        return sum(len(x.papers) for x in self.loaded)

    @property
    def skipped(self) -> int:
        return sum(len(x.skipped) for x in self.loaded)


def ingest(configured: Sequence[SourceConfig], session: Session, specs: list[str],
           strict: bool = False, failed: list[NewsletterError] | None = None
           ) -> IngestReport:
    """Load every source, then store them all in ``session``; any source-level error
    stores nothing, unless ``failed`` is given: the sources that could not be loaded
    are added there and the others stored (each source is all or nothing). ``specs``
    name sources (a ``[[sources]]`` name of ``configured``, a URL or a path); none:
    every configured one. ``strict``: the first unusable item of a feed is an error
    (else it is skipped and listed)."""
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine

    def validators_of(url: str) -> Validators | None:
        # read apart from the storing transaction: opened here, it held SQLite's one
        # write lock through every fetch (a dead URL: four tries of 30 s), and every
        # other command waited, then failed
        with session_scope(engine, readonly=True) as reading:
            state = store_sources.fetch_state(reading, url)
        return Validators(state.etag, state.last_modified) if state else None

    report = IngestReport(load_all(sources_of(configured, specs), validators_of, strict,
                                   failed))
    hold_papers_clock(session, exclusive=False)  # no cutoff is taken until this commits
    now = utcnow()  # one time for the run: what it stored is told from what was there
    for loaded in report.loaded:  # one source at a time, for per-source counts
        stored = upsert_papers(session, loaded.papers, now)
        loaded.new, loaded.updated = stored.new, stored.updated
        report.new += stored.new
        report.updated += stored.updated
        report.unchanged += stored.unchanged
        report.repeated += stored.repeated
    for loaded in report.loaded:
        got = loaded.validators
        if got and (got.etag or got.last_modified):
            store_sources.save_validators(session, loaded.origin, got.etag, got.last_modified)
    return report


class IngestIncomplete(NewsletterError):
    """Some sources could not be loaded; the others were stored (``report``). One
    line: the one failure's own, or each failure's after their count."""

    def __init__(self, report: IngestReport, failed: list[NewsletterError],
                 asked: int) -> None:
        if len(failed) == 1:
            message, hint = failed[0].message, failed[0].hint
        else:
            message = (f"{len(failed)} of {asked} sources could not be read: "
                       + "; ".join(str(exc) for exc in failed))
            hint = None
        super().__init__(message, hint)
        self.report, self.failed = report, failed


def run_ingest(configured: Sequence[SourceConfig], sessions: SessionFactory,
               specs: list[str], strict: bool = False) -> IngestReport:
    """``ingest`` in one transaction, with each source's outcome recorded for ``sources
    list``. Of the configured sources (no ``specs``: the scheduler's job, a bare
    `newsletter ingest`), one that cannot be read (a dead URL, a malformed feed) is
    recorded as failed and the others are stored: one bad ``[[sources]]`` entry held
    back every other source's papers until its next daily run. Then
    ``IngestIncomplete`` says which failed. Sources named on the command line stay
    all or nothing together (the operator reruns without the bad one). A failure
    while storing stores nothing, is recorded after the rollback, then raised."""
    failed: list[NewsletterError] = []
    try:
        with sessions() as session:
            report = ingest(configured, session, specs, strict=strict,
                            failed=None if specs else failed)
            now = utcnow()
            for loaded in report.loaded:
                store_sources.record_run(session, loaded.name or loaded.origin, RunOutcome(
                    stored_origin(loaded.origin), ok=True, papers=len(loaded.papers),
                    new=loaded.new, updated=loaded.updated, skipped=len(loaded.skipped),
                    not_modified=loaded.not_modified), now)
            for exc in failed:
                name = getattr(exc, "source_name", None)
                if name:
                    store_sources.record_run(session, name, RunOutcome(
                        stored_origin(getattr(exc, "where", name)), ok=False,
                        error=str(exc)))
        if failed:
            raise IngestIncomplete(report, failed, len(report.loaded) + len(failed))
        return report
    except NewsletterError as exc:
        name = getattr(exc, "source_name", None)
        if name:
            with sessions() as session:
                store_sources.record_run(session, name, RunOutcome(
                    stored_origin(getattr(exc, "where", name)), ok=False, error=str(exc)))
        raise


def list_sources(configured: Sequence[SourceConfig], session: Session) -> list[dict[str, Any]]:
    """Every configured source with its last ingest; then each other source ingested by
    hand, once (the newest run of each spelling of the same file or URL)."""
    runs = store_sources.source_runs(session)
    by_name = {r.name: r for r in runs}
    newest: dict[str, SourceRun] = {}
    for r in runs:
        newest.setdefault(source_key(r.origin or r.name), r)
    out, shown = [], set()
    for src in configured:
        where = src.url or src.path or ""
        run = by_name.get(src.name) or newest.get(source_key(where))
        shown.add(source_key(where))
        if run is not None:
            shown.add(source_key(run.origin or run.name))
        out.append({"name": src.name, "kind": src.kind, "where": where,
                    "configured": True, "last": _run_dict(run)})
    for key, run in sorted(newest.items(), key=lambda kv: kv[1].name):
        if key not in shown:
            shown.add(key)
            out.append({"name": run.name, "kind": "auto", "where": run.origin,
                        "configured": False, "last": _run_dict(run)})
    return out


def forget_source(session: Session, spec: str) -> int:
    """``sources forget``: drop a source's ingest record and its URL's fetch validators
    (``store.sources.forget``); its papers stay. 0: nothing known by that name."""
    return store_sources.forget(session, spec)


def _run_dict(run: SourceRun | None) -> dict[str, Any] | None:
    if run is None:
        return None
    return {"at": run.ran_at.isoformat(timespec="seconds") + "Z", "ok": run.ok,
            "papers": run.papers, "new": run.new, "updated": run.updated,
            "skipped": run.skipped, "not_modified": run.not_modified, "error": run.error}


def source_fetches(configured: Sequence[SourceConfig], session: Session
                   ) -> list[dict[str, Any]]:
    """Each ``[[sources]]`` entry with the time of its last conditional fetch (kept per
    URL that sent validators): the console's sources panel."""
    out = []
    for src in configured:
        state = store_sources.fetch_state(session, src.url) if src.url else None
        out.append({"name": src.name, "kind": src.kind, "origin": src.url or src.path or "",
                    "fetched_at": state.fetched_at if state else None})
    return out
