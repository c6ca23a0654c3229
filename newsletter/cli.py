"""The ``newsletter`` command: a thin layer over the library.

Each command parses its arguments, calls one library function and prints the
result. ``--json`` output is JSON alone on stdout; progress and logs go to
stderr. Errors a user can cause print one line and exit non-zero.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from sqlalchemy import select

from newsletter.app import App
from newsletter.errors import InputError, NewsletterError
from newsletter.ingest import run as ingest_mod
from newsletter.store import subscribers as subs_mod
from newsletter.store.models import Entry, Subscriber

app = typer.Typer(
    help="A personalized daily digest of new research papers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
subs_app = typer.Typer(help="Manage subscribers.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(subs_app, name="subscribers")

err = Console(stderr=True, soft_wrap=True, highlight=False, markup=False)
out = Console(highlight=False, soft_wrap=True, markup=False)  # titles may hold [brackets]


def _app(ctx: typer.Context) -> App:
    obj = ctx.find_root().obj
    if not isinstance(obj, App):
        obj = App.load(obj)
        ctx.find_root().obj = obj
    return obj


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        str | None,
        typer.Option(
            "--config", help="Config file (default: $NEWSLETTER_CONFIG or ./config.toml)."
        ),
    ] = None,
) -> None:
    ctx.obj = config


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Create or migrate the database schema to the newest version."""
    from newsletter.store.db import upgrade

    a = _app(ctx)
    upgrade(a.engine)
    err.print(f"database ready: {a.engine.url.render_as_string(hide_password=True)}")


@app.command()
def ingest(
    ctx: typer.Context,
    sources: Annotated[
        list[str] | None,
        typer.Argument(help="File paths, URLs or [[sources]] names (default: every [[sources]])."),
    ] = None,
) -> None:
    """Fetch and store papers; the format is told from the content."""
    a = _app(ctx)
    with a.session() as s:
        report = ingest_mod.ingest(a.settings, s, list(sources or []))
    for loaded in report.loaded:
        note = " (not modified)" if loaded.not_modified else ""
        folded = f", {loaded.folded} duplicates merged" if loaded.folded else ""
        err.print(f"{loaded.origin}: {len(loaded.papers)} papers{folded}{note}")
    err.print(f"stored: {report.new} new, {report.updated} updated")


def entry_dict(e: Entry) -> dict[str, Any]:
    return {
        "id": e.id,
        "title": e.title,
        "abstract": e.abstract,
        "authors": e.authors,
        "published": e.published.isoformat() if e.published else None,
        "upvotes": e.upvotes,
        "url": e.url,
        "code_url": e.code_url,
        "project_url": e.project_url,
        "keywords": e.keywords,
        "version": e.version,
        "source": e.source,
    }


@app.command()
def entries(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
    limit: Annotated[int, typer.Option(help="At most this many (newest first); 0 = all.")] = 0,
) -> None:
    """List stored papers, newest arrivals first."""
    a = _app(ctx)
    with a.session() as s:
        q = select(Entry).order_by(Entry.arrived_at.desc(), Entry.upvotes.desc(), Entry.id)
        rows = list(s.scalars(q.limit(limit) if limit else q))
    if as_json:
        _print_json([entry_dict(e) for e in rows])
        return
    table = Table("id", "published", "upvotes", "title")
    for e in rows:
        table.add_row(e.id, str(e.published or ""), str(e.upvotes), e.title[:90])
    out.print(table)
    err.print(f"{len(rows)} entries")


@subs_app.command("add")
def subscribers_add(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The address.")],
    keywords: Annotated[str, typer.Option(help="Keyword profile, e.g. 'diffusion, -medical'.")],
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    tz: Annotated[str, typer.Option(help="IANA time zone, e.g. Europe/Paris.")] = "UTC",
    hour: Annotated[int, typer.Option(help="Local hour to send at (0-23).")] = 7,
) -> None:
    """Add one subscriber (active at once: the operator vouches for consent)."""
    a = _app(ctx)
    with a.session() as s:
        sub = subs_mod.add(s, email, keywords=keywords, name=name, tz=tz, hour=hour)
    err.print(f"added {sub.email}")


@subs_app.command("import")
def subscribers_import(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="CSV with header email,name,keywords,tz,hour.")],
) -> None:
    """Import subscribers from CSV in one transaction; a bad row stores nothing."""
    a = _app(ctx)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise NewsletterError(f"{file}: cannot read: {exc.strerror}") from None
    with a.session() as s:
        report = subs_mod.import_csv(s, data, str(file))
    for line, address in report.duplicates[:20]:
        err.print(f"{file}:{line}: {address} already present, skipped")
    if len(report.duplicates) > 20:
        err.print(f"... and {len(report.duplicates) - 20} more duplicates")
    err.print(f"imported {report.added}, duplicates {len(report.duplicates)}")


@subs_app.command("list")
def subscribers_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
) -> None:
    """List subscribers."""
    a = _app(ctx)
    with a.session() as s:
        rows = list(s.scalars(select(Subscriber).order_by(Subscriber.id)))
    if as_json:
        _print_json([subs_mod.as_dict(x) for x in rows])
        return
    table = Table("email", "status", "tz", "hour", "keywords")
    for x in rows:
        table.add_row(x.email, x.status, x.tz, str(x.send_hour), x.keywords[:60])
    out.print(table)
    err.print(f"{len(rows)} subscribers")


@subs_app.command("remove")
def subscribers_remove(
    ctx: typer.Context, email: Annotated[str, typer.Argument(help="The address.")]
) -> None:
    """Delete a subscriber and their history."""
    a = _app(ctx)
    with a.session() as s:
        subs_mod.remove(s, email)
    err.print(f"removed {email}")


@subs_app.command("export")
def subscribers_export(ctx: typer.Context) -> None:
    """Write all subscribers as CSV (the import format plus status) to stdout."""
    a = _app(ctx)
    with a.session() as s:
        subs_mod.export_csv(s.scalars(select(Subscriber).order_by(Subscriber.id)), sys.stdout)


@app.command()
def rank(
    ctx: typer.Context,
    subscriber: Annotated[str | None, typer.Option(help="Only this subscriber.")] = None,
    limit: Annotated[int | None, typer.Option(help="Picks per subscriber.")] = None,
    all_entries: Annotated[
        bool, typer.Option("--all-entries", help="Rank every stored paper, ignoring the "
                           "edition window and what was already sent.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
) -> None:
    """Show each subscriber's picks, scores and matched terms for the next edition."""
    from newsletter.ranking.view import rank_subscribers

    a = _app(ctx)
    with a.session() as s:
        results = list(rank_subscribers(a.settings, s, email=subscriber, limit=limit,
                                        all_entries=all_entries))
    if as_json:
        _print_json(results)
        return
    for r in results:
        out.print(f"{r['subscriber']}  ({r['profile'] or 'empty profile'})", style="bold")
        for p in r["picks"]:
            label = "trending" if p["section"] == "trending" else ", ".join(p["matched"])
            out.print(f"  {p['rank']:>2}. {p['score']:6.2f}  {p['title'][:80]}  ({label})")
        if not r["picks"]:
            out.print("   (nothing today)")


@app.command()
def feedback(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The subscriber's address.")],
    paper_id: Annotated[str, typer.Argument(help="The paper, as `rank --json` prints "
                                            "picks[].id.")],
    up: Annotated[bool, typer.Option("--up", help="More like this.")] = False,
    down: Annotated[bool, typer.Option("--down", help="Less like this.")] = False,
) -> None:
    """Vote on a paper for a subscriber, as the email's "more / less like this" links do:
    the written keywords stay; the vote adds learned weights and hides the paper."""
    from newsletter.ranking.view import cast_vote

    if up == down:
        raise InputError("give exactly one of --up or --down")
    a = _app(ctx)
    with a.session() as s:
        outcome = cast_vote(a.settings, s, email, paper_id, 1 if up else -1, source="cli")
    err.print(f"{outcome.email}: {'more' if up else 'less'} like {outcome.paper_id} "
              f"({outcome.title[:70]}). {outcome.message}")


def _day(value: str | None) -> dt.date:
    if not value:
        return dt.datetime.now(dt.UTC).date()
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise InputError(f"--date: expected YYYY-MM-DD, got {value!r}") from None


def _progress(total: int | None, label: str) -> Progress:
    return Progress(
        TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("{task.speed} /s"),
        TimeRemainingColumn(), console=err, transient=True, disable=not err.is_terminal,
    )


@app.command()
def send(
    ctx: typer.Context,
    date: Annotated[str | None, typer.Option("--date", help="Edition day (YYYY-MM-DD); "
                                             "default today (UTC).")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask before sending.")] = False,
    slot: Annotated[str, typer.Option(help="Only this UTC hour's slot (00-23): subscribers "
                                      "whose local send hour it is. Default: everyone.")] = "",
    queue: Annotated[bool, typer.Option("--queue", help="Plan here, deliver by `newsletter "
                                        "worker` processes through [queue] broker_url.")
                     ] = False,
    tasks: Annotated[int, typer.Option(help="With --queue: tasks to enqueue (one per worker)."
                                       )] = 4,
    wait: Annotated[float, typer.Option(help="With --queue: seconds to wait for the workers.")
                    ] = 3600.0,
) -> None:
    """Send the day's edition to every active subscriber who has not had it."""
    from newsletter.delivery.runs import plan_edition, run_send

    a = _app(ctx)
    backend = a.settings.transport.backend
    if backend not in ("outbox", "console") and not yes:
        if not sys.stdin.isatty():
            raise InputError(f"refusing to send through {backend} without --yes "
                             "(no terminal to ask)")
        if not typer.confirm(f"Send the {_day(date)} edition through {backend}?"):
            raise typer.Exit(1)
    if queue:
        from newsletter.delivery.queue import enqueue, wait_for

        planned = plan_edition(a.settings, a.engine, _day(date), slot)
        enqueue(a.settings, planned.edition.id, tasks)
        err.print(f"edition #{planned.edition.id}: {planned.pending} to send, "
                  f"{tasks} tasks queued; waiting for the workers")
        counts = wait_for(a, planned.edition.id, wait)
        err.print(", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        if counts.get("pending") or counts.get("sending") or counts.get("failed"):
            raise typer.Exit(3)
        return
    progress = _progress(None, "sending")
    task = progress.add_task("send", total=None)
    with progress:
        summary = run_send(
            a.settings, a.engine, _day(date), slot=slot,
            on_planned=lambda n: progress.update(task, total=n),
            on_progress=lambda _o: progress.advance(task),
        )
    r = summary.report
    err.print(f"edition {summary.edition.day} (#{summary.edition.id}): "
              f"{summary.candidates} candidate papers; planned {summary.plan.planned} "
              f"(+{summary.plan.skipped} with nothing to send)"
              + (f"; took back {summary.reclaimed} unfinished" if summary.reclaimed else ""))
    err.print(f"sent {r.counts['sent']}, failed {r.counts['failed']} in {r.seconds:.1f}s"
              + (f" via {backend}" + (f" to {a.settings.outbox.path}/"
                                      if backend == "outbox" else "")))
    for line in r.errors:
        err.print(f"  failed: {line}")
    if r.counts["failed"]:
        raise typer.Exit(3)


@app.command()
def status(
    ctx: typer.Context,
    edition: Annotated[str | None, typer.Argument(help="Edition id or day (YYYY-MM-DD); "
                                                  "default the latest.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
) -> None:
    """Counts by delivery state and the last errors of an edition."""
    from newsletter.delivery.status import edition_status
    from newsletter.store.models import Edition

    a = _app(ctx)
    with a.session() as s:
        q = select(Edition)
        if edition and edition.isdigit():
            q = q.where(Edition.id == int(edition))
        elif edition:
            q = q.where(Edition.day == _day(edition))
        found = s.scalars(q.order_by(Edition.created_at.desc()).limit(1)).first()
    if found is None:
        raise InputError(f"no edition {edition}" if edition else "no edition has been sent yet")
    data = edition_status(a.engine, found)
    if as_json:
        _print_json(data)
        return
    c = data["counts"]
    slot = f" slot {data['slot']}" if data["slot"] else ""
    out.print(f"edition #{data['edition']} {data['day']}{slot}: "
              + ", ".join(f"{k} {v}" for k, v in c.items()))
    for e in data["last_errors"]:
        out.print(f"  {e['status']}: {e['email']}: {e['error']}")


@app.command()
def preview(
    ctx: typer.Context,
    subscriber: Annotated[str | None, typer.Option(help="Only this subscriber.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every active subscriber (the default).")
                    ] = False,
    date: Annotated[str | None, typer.Option("--date", help="Edition day (YYYY-MM-DD).")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Where to write the files.")] = Path(
        "preview"),
    screenshot: Annotated[bool, typer.Option("--screenshot", help="Also PNGs at 600 and 375 px "
                                             "(needs chromium).")] = False,
    limit: Annotated[int | None, typer.Option(help="At most this many subscribers.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The summary as JSON on stdout.")
                       ] = False,
) -> None:
    """Render exactly what `send` would send, to files; sends nothing, writes no ledger."""
    from newsletter.delivery.runs import run_preview

    if subscriber and all_:
        raise InputError("--subscriber and --all exclude each other")
    a = _app(ctx)
    progress = _progress(None, "rendering")
    task = progress.add_task("preview", total=None)
    with progress:
        report = run_preview(a.settings, a.engine, _day(date), out_dir, email=subscriber,
                             limit=limit, on_progress=lambda _o: progress.advance(task))
    if screenshot:
        from newsletter.render.screenshots import screenshot_dir

        report.screenshots = screenshot_dir(out_dir)
    summary = report.summary()
    if as_json:
        _print_json(summary)
        return
    table = Table("", "value", title=f"preview of {_day(date)} → {out_dir}/")
    table.add_row("subscribers", str(summary["subscribers"]))
    table.add_row("candidate papers", str(summary["candidates"]))
    ppe = summary["papers_per_email"]
    table.add_row("matched papers per email (min/median/max)",
                  f"{ppe['min']} / {ppe['median']} / {ppe['max']}")
    table.add_row("no match (trending section only)", str(summary["no_match_trending_only"]))
    table.add_row("nothing to send", str(summary["nothing_to_send"]))
    table.add_row("empty profiles", str(summary["empty_profiles"]))
    sz = summary["html_bytes"]
    table.add_row("HTML size (min/median/max)",
                  f"{sz['min'] / 1024:.1f} / {sz['median'] / 1024:.1f} / {sz['max'] / 1024:.1f} KB")
    table.add_row("over Gmail's 102 KB clip", str(summary["over_gmail_clip"]))
    table.add_row("top matched terms",
                  ", ".join(f"{t} ({n})" for t, n in summary["top_matched_terms"]) or "-")
    if report.screenshots:
        table.add_row("screenshots", str(len(report.screenshots)))
    out.print(table)
    for e in summary["failed"]:
        err.print(f"  render failed: {e}")


@app.command()
def demo(ctx: typer.Context) -> None:
    """The whole job on bundled samples: ingest papers, add sample subscribers, send
    today's edition (to the outbox folder unless configured otherwise)."""
    from importlib import resources

    from newsletter.delivery.runs import run_send

    a = _app(ctx)
    data = resources.files("newsletter").joinpath("data")
    papers = Path(str(data.joinpath("sample_papers.json")))
    with a.session() as s:
        report = ingest_mod.ingest(a.settings, s, [str(papers)])
    err.print(f"ingested {report.total} sample papers ({report.new} new)")
    with a.session() as s:
        imported = subs_mod.import_csv(s, data.joinpath("sample_subscribers.csv").read_bytes(),
                                       "sample_subscribers.csv")
    err.print(f"sample subscribers: {imported.added} added, "
              f"{len(imported.duplicates)} already present")
    summary = run_send(a.settings, a.engine, _day(None))
    r = summary.report
    where = (f" into {Path(a.settings.outbox.path).resolve()}/"
             if a.settings.transport.backend == "outbox" else "")
    err.print(f"edition {summary.edition.day}: sent {r.counts['sent']} emails"
              f"{where} (failed {r.counts['failed']}); "
              f"`newsletter status` shows the ledger, `newsletter preview` renders without sending")
    if r.counts["failed"]:
        raise typer.Exit(3)


@app.command()
def web(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Serve the subscribe, confirm, unsubscribe, preferences and view-in-browser pages."""
    import uvicorn

    from newsletter.render.links import Signer, secret_keys
    from newsletter.web import create_app
    from newsletter.web.webhooks import PARSERS

    a = _app(ctx)
    with a.session() as s:
        token = Signer(secret_keys(a.settings, s)).token("webhook", 0)
    base = a.settings.web.base_url.rstrip("/")
    for provider in PARSERS:
        err.print(f"bounce/complaint webhook for {provider}: {base}/webhooks/{provider}/{token}")
    uvicorn.run(create_app(a), host=host, port=port, log_level="info")


@app.command()
def worker(
    ctx: typer.Context,
    concurrency: Annotated[int, typer.Option(help="Tasks at once in this worker.")] = 1,
) -> None:
    """A Celery worker delivering queued editions (scale-out; use PostgreSQL)."""
    import os

    from newsletter.delivery.queue import make_celery

    a = _app(ctx)
    config = ctx.find_root().params.get("config")
    if config:  # tasks load settings themselves; let them find the same file
        os.environ["NEWSLETTER_CONFIG"] = str(Path(config).resolve())
    make_celery(a.settings).worker_main(["worker", "--loglevel=INFO", "--pool=solo" if
                                         concurrency == 1 else "--pool=prefork",
                                         f"--concurrency={concurrency}", "--without-gossip",
                                         "--without-mingle", "--without-heartbeat"])


@app.command()
def run(ctx: typer.Context) -> None:
    """The scheduler daemon: ingest on [schedule] ingest_cron, send each hour's slot."""
    import logging

    from newsletter.delivery.scheduler import build_scheduler

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    sched = build_scheduler(_app(ctx))
    for job in sched.get_jobs():
        err.print(f"scheduled: {job.name} ({job.trigger})")
    sched.start()


def main() -> None:
    """Console entry point: user errors become one line on stderr and a non-zero exit."""
    try:
        app()
    except NewsletterError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(exc.exit_code)
