"""The ``newsletter`` command: a thin layer over the library.

Each command parses its arguments, calls one library function and prints the
result. ``--json`` output is JSON alone on stdout; progress and logs go to
stderr. Errors a user can cause print one line and exit non-zero.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from . import ingest as ingest_mod
from . import subscribers as subs_mod
from .app import App
from .errors import NewsletterError
from .models import Entry, Subscriber

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
out = Console(highlight=False, soft_wrap=True)


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
    from .db import upgrade

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
    from .rankview import rank_subscribers

    a = _app(ctx)
    with a.session() as s:
        results = list(rank_subscribers(a.settings, s, email=subscriber, limit=limit,
                                        all_entries=all_entries))
    if as_json:
        _print_json(results)
        return
    for r in results:
        out.print(f"[bold]{r['subscriber']}[/bold]  ({r['profile'] or 'empty profile'})")
        for p in r["picks"]:
            label = "trending" if p["section"] == "trending" else ", ".join(p["matched"])
            out.print(f"  {p['rank']:>2}. {p['score']:6.2f}  {p['title'][:80]}  [dim]{label}[/dim]",
                      markup=True)
        if not r["picks"]:
            out.print("   (nothing today)")


def main() -> None:
    """Console entry point: user errors become one line on stderr and a non-zero exit."""
    try:
        app()
    except NewsletterError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(exc.exit_code)
