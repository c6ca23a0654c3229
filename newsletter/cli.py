"""The ``newsletter`` command: a thin layer over the library.

Each command parses its arguments, calls one library function and prints the
result. ``--json`` output is JSON alone on stdout; progress and logs go to
stderr. Errors a user can cause print one line and exit non-zero.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import sqlalchemy.exc
import typer
from rich.console import Console
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from newsletter.app import App
from newsletter.errors import ConfigError, FieldError, InputError, NewsletterError
from newsletter.frequency import describe
from newsletter.plaintext import json_text, visible
from newsletter.service import subscribers as people
from newsletter.store import queries
from newsletter.store import subscribers as subs_mod
from newsletter.store.db import db_reason, head_revisions, unwritable_fix
from newsletter.store.queries import parse_day

if TYPE_CHECKING:  # the worker's stop, imported where the worker starts
    from newsletter.delivery.shutdown import Shutdown


def _usage_name(self: typer.core.TyperArgument) -> str:
    """Usage lines in the POSIX style operators' scripts and man pages use: a required
    argument as ``EMAIL``, an optional one as ``[EDITION]`` (Typer 0.29 writes the
    required ones as ``{EMAIL}``, which reads as a literal brace)."""
    name = self.display_name_raw
    name = name if self.required else f"[{name}]"
    return name + ("..." if self.nargs != 1 else "")


if hasattr(typer.core.TyperArgument, "_usage_display_name"):
    typer.core.TyperArgument._usage_display_name = _usage_name  # type: ignore[method-assign]

app = typer.Typer(
    help="A personalized daily digest of new research papers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # help texts name [sections]; Rich markup would eat them
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
subs_app = typer.Typer(help="Manage subscribers.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(subs_app, name="subscribers")
admin_app = typer.Typer(help="Operators of the /admin console.", no_args_is_help=True)
app.add_typer(admin_app, name="admin")
sources_app = typer.Typer(help="Configured sources: their last ingest; a dry run of one.",
                          no_args_is_help=True)
app.add_typer(sources_app, name="sources")
webhooks_app = typer.Typer(help="Bounce and complaint webhooks.", no_args_is_help=True)
keys_app = typer.Typer(help="Link signing keys.", no_args_is_help=True)
app.add_typer(webhooks_app, name="webhooks")
bounces_app = typer.Typer(help="The bounce mailbox: bounces, complaints and mailto "
                          "unsubscribes.", no_args_is_help=True)
app.add_typer(bounces_app, name="bounces")
app.add_typer(keys_app, name="keys")


class PlainConsole(Console):
    """A console that prints text as it is written, and only as text: titles, names
    and profiles may hold [brackets] (markup), words between colons (rich's emoji codes
    turned ":rocket:" into a picture) and, stored before they were cleaned or from a
    database edited by hand, control characters (``plaintext.visible``: ESC shows as
    ``\\x1b`` rather than clearing the operator's screen). Every string printed or put
    in a table goes through ``render_str``."""

    def render_str(self, text: str, **kw: Any) -> Text:
        return super().render_str(visible(text), **kw)


def plain_console(**kw: Any) -> Console:
    """A ``PlainConsole`` with no markup, highlighting or emoji."""
    return PlainConsole(highlight=False, markup=False, emoji=False, **kw)


err = plain_console(stderr=True, soft_wrap=True)
out = plain_console(soft_wrap=True)


LogFormat = Annotated[str | None, typer.Option(
    "--log-format", help="Log lines on stderr: text or json (one object per line). "
    "Default: [log] format.")]
MetricsPort = Annotated[int | None, typer.Option(
    "--metrics-port", min=0, max=65535, help="Serve Prometheus /metrics on this port "
    "(0: off). Default: [metrics] port.")]


_JSON_LOGS = [False]  # set by _logging: this command's stderr is JSON lines


def _logging(a: App, log_format: str | None) -> None:
    from newsletter.observe.logs import configure_logging

    configure_logging(a.settings.log, log_format)
    _JSON_LOGS[0] = (log_format or a.settings.log.format) == "json"


def say(text: str, level: int = 20) -> None:
    """A line for the operator on stderr: as it is, or, when the command logs JSON
    (`--log-format json`), as a JSON log record (at ``level``; a "warning:" line at
    WARNING), so every line a log collector reads parses; the JSON formatter leaves
    addresses out as it does for every record."""
    if not _JSON_LOGS[0]:
        err.print(text)
        return
    import logging

    if text.startswith("warning: "):
        level, text = logging.WARNING, text.removeprefix("warning: ")
    logging.getLogger("newsletter.cli").log(level, text)


def _app(ctx: typer.Context) -> App:
    obj = ctx.find_root().obj
    if not isinstance(obj, App):
        obj = App.load(obj)
        ctx.find_root().obj = obj
    return obj


def count(n: int, word: str, plural: str = "") -> str:
    """``1 paper``, ``2 papers``, ``1 admin user``."""
    return f"{n} {word if n == 1 else plural or word + 's'}"


def cut(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, with … where it was cut."""
    return text if len(text) <= width else text[:width - 1].rstrip() + "…"


def _confirm(yes: bool, question: str, no_terminal: str, declined: str, *,
             on_stderr: bool = False) -> None:
    """Ask before something that cannot be undone; a refusal or a "no" is one line and
    exit 1. ``on_stderr``: the question too (a command whose stdout is JSON alone)."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise InputError(no_terminal)
    if not typer.confirm(question, err=on_stderr):
        err.print(declined)
        raise typer.Exit(1)


def _require_extra(feature: str, extra: str, *modules: str) -> None:
    """An optional feature names the extra to install, in one line, before any work
    (not a traceback halfway through)."""
    import importlib

    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise InputError(f"{feature} needs the {extra} extra: "
                             f"pip install 'newsletter[{extra}]' ({exc})") from None


def _begin_signing(a: App, by: str) -> None:
    """Refuse (one line) when [web] secret_keys drops a key that signed links; record
    the key this command signs with."""
    from newsletter.service.signing import begin_signing

    with a.session() as s:
        begin_signing(a.settings.web, s, by)


def _print_json(data: Any) -> None:
    sys.stdout.write(json_text(json.dumps(data, ensure_ascii=False, indent=2, default=str))
                     + "\n")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            number = version("newsletter")
        except PackageNotFoundError:  # a source tree that was never installed
            number = "unknown (not installed)"
        out.print(f"newsletter {number}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        str | None,
        typer.Option(
            "--config", metavar="PATH", help="Config file (default: $NEWSLETTER_CONFIG or "
            "./config.toml); before or after the command."
        ),
    ] = None,
    show_version: Annotated[bool, typer.Option(
        "--version", is_eager=True, callback=_version, help="Print the version and exit.")
    ] = False,
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
def init(
    ctx: typer.Context,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented config.toml: every section and key at its default, with its
    meaning (as in docs/configuration.md). Writes to --config PATH or $NEWSLETTER_CONFIG
    if given; refuses to overwrite a file without --force."""
    import os

    from newsletter.config_reference import output_path, write_config

    root = ctx.find_root().obj
    target = output_path(root if isinstance(root, str) else None, os.environ)
    try:
        write_config(target, force=force)
    except FileExistsError:
        raise InputError(f"{target}: already exists (nothing written; "
                         "`newsletter init --force` overwrites it)") from None
    except OSError as exc:
        raise InputError(f"{target}: cannot write: {exc.strerror or exc}") from None
    err.print(f"wrote {target}: every key at its default, commented out but for where "
              "the data lives ([database] url, [outbox] path: beside this file); "
              "uncomment a line to change that key")


@app.command()
def ingest(
    ctx: typer.Context,
    sources: Annotated[
        list[str] | None,
        typer.Argument(metavar="SOURCE", help="File paths, URLs or [[sources]] names "
                       "(default: every [[sources]])."),
    ] = None,
    strict: Annotated[
        bool,
        typer.Option("--strict", help="All or nothing: one unusable item in a feed stores "
                     "nothing (default: store the usable items, list the others)."),
    ] = False,
) -> None:
    """Fetch and store papers; the format is told from the content."""
    from newsletter.service.ingest import IngestIncomplete, run_ingest

    a = _app(ctx)
    try:
        report = run_ingest(a.settings.sources, a.session, list(sources or []), strict=strict)
    except IngestIncomplete as exc:  # what the other sources stored, then the error
        if exc.report.loaded:
            _present_ingested(exc.report)
        raise
    _present_ingested(report)


def _present_ingested(report: Any) -> None:
    for loaded in report.loaded:
        note = " (not modified)" if loaded.not_modified else ""
        folded = f", {count(loaded.folded, 'duplicate')} merged" if loaded.folded else ""
        skipped = f", {count(len(loaded.skipped), 'item')} skipped" if loaded.skipped else ""
        err.print(f"{loaded.origin}: {count(len(loaded.papers), 'paper')}{folded}{skipped}{note}")
        for item in loaded.skipped:
            err.print(f"  skipped {loaded.origin}: {item}")
    skipped_total = f", {count(report.skipped, 'item')} skipped" if report.skipped else ""
    unchanged = (f", {report.unchanged} already stored unchanged" if report.unchanged
                 else "")
    # so that the sources' counts above add up: a paper two of them carry is stored once
    repeated = (f", {report.repeated} also in an earlier source of this run"
                if report.repeated else "")
    err.print(f"stored: {report.new} new, {report.updated} updated{unchanged}{repeated}"
              f"{skipped_total}")


@app.command()
def entries(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
    limit: Annotated[int, typer.Option(help="At most this many (newest first); 0 = all.")] = 0,
) -> None:
    """List stored papers, newest arrivals first."""
    a = _app(ctx)
    with a.session() as s:
        rows = queries.newest_entries(s, limit)
    if as_json:
        _print_json([queries.entry_dict(e) for e in rows])
        return
    table = Table("id", "published", "upvotes", "title")
    for e in rows:
        table.add_row(e.id, str(e.published or ""), str(e.upvotes), cut(e.title, 90))
    out.print(table)
    err.print(count(len(rows), "entry", "entries"))


FREQUENCY_HELP = ("daily (default), weekdays, or weekly:DAY (weekly:fri; weekly alone: "
                  "Monday), on their local calendar; a weekly email is the week's best.")


@subs_app.command("add")
def subscribers_add(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(metavar="EMAIL", help="The address.")],
    keywords: Annotated[str, typer.Option(metavar="PROFILE",
                                          help="Keyword profile, e.g. 'diffusion, -medical'.")],
    name: Annotated[str, typer.Option(metavar="NAME", help="Display name.")] = "",
    tz: Annotated[str, typer.Option(metavar="ZONE", help="IANA time zone, e.g. Europe/Paris.")
                  ] = "UTC",
    hour: Annotated[int, typer.Option(metavar="HOUR", help="Local hour to send at (0-23).")
                    ] = 7,
    frequency: Annotated[str, typer.Option(
        metavar="daily|weekdays|weekly:DAY", help=FREQUENCY_HELP)] = "daily",
) -> None:
    """Add one subscriber (active at once: the operator vouches for consent)."""
    a = _app(ctx)
    try:
        frequency = people.check_frequency(frequency)
    except InputError as exc:
        raise InputError(f"--frequency: {exc.message}") from None
    with a.session() as s:
        sub = people.add(s, email, keywords=keywords, name=name, tz=tz, hour=hour,
                         utf8_local_part=a.settings.transport.utf8_addresses, by="cli",
                         frequency=frequency)
    err.print(f"added {sub.email}")


@subs_app.command("edit")
def subscribers_edit(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(metavar="EMAIL", help="The address.")],
    keywords: Annotated[str | None, typer.Option(metavar="PROFILE",
                                                 help="New keyword profile.")] = None,
    name: Annotated[str | None, typer.Option(metavar="NAME", help="New display name.")] = None,
    tz: Annotated[str | None, typer.Option(metavar="ZONE", help="New IANA time zone.")] = None,
    hour: Annotated[int | None, typer.Option(metavar="HOUR",
                                             help="New local send hour (0-23).")] = None,
    status: Annotated[str | None, typer.Option(
        metavar="|".join(people.OPERATOR_STATUSES),
        help="Pause or resume their emails, or stop them: unsubscribed (they asked "
        "elsewhere) or bounced (their mail server refuses). Only they can start "
        "them again after a stop.")] = None,
    frequency: Annotated[str | None, typer.Option(
        metavar="daily|weekdays|weekly:DAY", help=FREQUENCY_HELP)] = None,
) -> None:
    """Change one subscriber's profile, name, time zone, send hour, frequency or status."""
    given = people.Edit(name=name, keywords=keywords, tz=tz, hour=hour, status=status,
                        frequency=frequency)
    if given.empty():
        raise InputError("nothing to change: give --keywords, --name, --tz, --hour, "
                         "--frequency or --status")
    a = _app(ctx)
    try:
        with a.session() as s:
            sub = people.find(s, email)
            people.edit(s, sub, given, by="cli")
            summary = f"{sub.email}: {sub.status}, {sub.tz} {sub.send_hour:02d}:00 " \
                      f"{describe(sub.frequency)}, keywords {sub.keywords!r}"
    except FieldError as exc:
        raise InputError(f"--{exc.field}: {exc.problem}") from None
    err.print(f"updated {summary}")


@subs_app.command("import")
def subscribers_import(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(metavar="FILE.csv",
                                         help="CSV with header email,name,keywords,tz,hour "
                                         "(optionally status, frequency).")],
) -> None:
    """Import subscribers from CSV in one transaction; a bad row stores nothing."""
    a = _app(ctx)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise NewsletterError(f"{file}: cannot read: {exc.strerror}") from None
    with a.session() as s:
        report = people.import_csv(s, data, str(file),
                                   utf8_local_part=a.settings.transport.utf8_addresses)
    for line, address in report.duplicates[:20]:
        err.print(f"{file}:{line}: {address} already present, skipped")
    if len(report.duplicates) > 20:
        err.print(f"... and {count(len(report.duplicates) - 20, 'more duplicate')}")
    for line, address in report.suppressed[:20]:
        err.print(f"{file}:{line}: {address} asked to be erased, skipped")
    err.print(f"imported {report.added}, duplicates {len(report.duplicates)}"
              + (f", erased addresses skipped {len(report.suppressed)}"
                 if report.suppressed else ""))


@subs_app.command("list")
def subscribers_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
) -> None:
    """List subscribers."""
    a = _app(ctx)
    with a.session() as s:
        rows = queries.all_subscribers(s)
    if as_json:
        _print_json([subs_mod.as_dict(x) for x in rows])
        return
    table = Table("email", "status", "tz", "hour", "frequency", "keywords")
    for x in rows:
        table.add_row(x.email, x.status, x.tz, str(x.send_hour), x.frequency,
                      cut(x.keywords, 60))
    # Whole values however narrow the terminal or pipe (80 columns): an operator copies
    # the address into the next command, and "ada@example.o…" is no address.
    whole = Measurement.get(out, out.options.update_width(10_000), table).maximum
    (out if whole <= out.width else plain_console(file=out.file, width=whole)).print(table)
    err.print(count(len(rows), "subscriber"))


@subs_app.command("remove")
def subscribers_remove(
    ctx: typer.Context, email: Annotated[str, typer.Argument(metavar="EMAIL", help="The address.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask first.")] = False,
) -> None:
    """Delete a subscriber and their history (asks first unless --yes)."""
    _confirm(yes, f"Delete {email} and their whole history?",
             f"refusing to remove {email} without --yes (no terminal to ask)",
             f"not removed: {email} is still there")
    a = _app(ctx)
    with a.session() as s:
        address = people.remove(s, email, by="cli")
    err.print(f"removed {address}")


@subs_app.command("data")
def subscribers_data(
    ctx: typer.Context, email: Annotated[str, typer.Argument(metavar="EMAIL", help="The address.")],
) -> None:
    """Print everything stored about one subscriber as JSON: what their "download my
    data" link gives, for a request that reached the operator another way."""
    a = _app(ctx)
    with a.reading() as s:
        data = people.stored_data(s, people.find(s, email).id)
    _print_json(data)


@subs_app.command("erase")
def subscribers_erase(
    ctx: typer.Context, email: Annotated[str, typer.Argument(metavar="EMAIL", help="The address.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask first.")] = False,
) -> None:
    """Erase a subscriber as their "delete me" link does: everything deleted, the address
    kept only as a hash that no import or operator can bring back; only its owner's own
    confirmed sign-up does (asks first unless --yes). ``remove`` deletes without keeping
    the address out."""
    _confirm(yes, f"Erase {email} for good (no import or operator can add it again)?",
             f"refusing to erase {email} without --yes (no terminal to ask)",
             f"not erased: {email} is still there")
    from newsletter.store.db import checkpoint

    a = _app(ctx)
    with a.session() as s:
        sub = people.find(s, email)
        address = sub.email
        people.erase(s, sub.id, by="cli")
    if not checkpoint(a.engine):  # (secure_delete zeroed the rows; now out of the log)
        err.print("the write-ahead log was busy: the erased rows leave it at its next "
                  "checkpoint")
    err.print(f"erased {address}: no import or operator can add it again")


@subs_app.command("export")
def subscribers_export(ctx: typer.Context) -> None:
    """Write all subscribers as CSV (the import format plus status) to stdout."""
    a = _app(ctx)
    with a.session() as s:
        subs_mod.export_csv(queries.all_subscribers(s), sys.stdout)


@app.command()
def rank(
    ctx: typer.Context,
    subscriber: Annotated[str | None, typer.Option(help="Only this subscriber.")] = None,
    limit: Annotated[int | None, typer.Option(help="Picks per subscriber (1-100).", min=1,
                                              max=100)] = None,
    all_entries: Annotated[
        bool, typer.Option("--all-entries", help="Rank every stored paper, ignoring the "
                           "edition window and what was already sent.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
) -> None:
    """Show each subscriber's picks, scores and matched terms for the next edition."""
    from newsletter.service.ranking import rank_subscribers

    a = _app(ctx)
    with a.session() as s:
        results = list(rank_subscribers(a.settings.ranking, s, email=subscriber, limit=limit,
                                        all_entries=all_entries))
    if as_json:
        _print_json(results)
        return
    for r in results:
        out.print(f"{r['subscriber']}  ({r['profile'] or 'empty profile'})", style="bold")
        for p in r["picks"]:
            label = ("trending" if p["section"] == "trending"
                     else p["why"] if p.get("because") else ", ".join(p["matched"]))
            out.print(f"  {p['rank']:>2}. {p['score']:6.2f}  {cut(p['title'], 80)}  ({label})")
        if not r["picks"]:
            out.print("   (nothing today)")


@app.command()
def feedback(
    ctx: typer.Context,
    email: Annotated[str | None, typer.Argument(metavar="EMAIL",
                                                help="The subscriber's address.")] = None,
    paper_id: Annotated[str | None, typer.Argument(metavar="PAPER_ID",
                                                   help="The paper, as `rank --json` prints "
                                                   "picks[].id.")] = None,
    up: Annotated[bool, typer.Option("--up", help="More like this.")] = False,
    down: Annotated[bool, typer.Option("--down", help="Less like this.")] = False,
    file: Annotated[Path | None, typer.Option(
        "--file", metavar="VOTES.CSV", help="Many votes at once ('-': stdin): a header "
        "email,paper_id,vote, then one vote a line, vote being up or down. All are "
        "recorded or, at the first bad line, none.")] = None,
) -> None:
    """Vote on a paper for a subscriber, as the email's "more / less like this" links do:
    the written keywords stay; the vote adds learned weights and hides the paper."""
    from newsletter.service.votes import record_vote

    if file is not None:
        if email or paper_id or up or down:
            raise InputError("--file takes the votes from the file: give no EMAIL, "
                             "PAPER_ID, --up or --down with it")
        _feedback_file(ctx, file)
        return
    if not email or not paper_id:
        raise InputError("give EMAIL and PAPER_ID (or --file VOTES.CSV)")
    if up == down:
        raise InputError("give exactly one of --up or --down")
    a = _app(ctx)
    outcome = record_vote(a.settings.ranking, a.engine, paper_id, 1 if up else -1, by="cli",
                          email=email)
    err.print(f"{outcome.email}: {'more' if up else 'less'} like {outcome.paper_id} "
              f"({cut(outcome.title, 70)}). {outcome.message}")


def _feedback_file(ctx: typer.Context, file: Path) -> None:
    """``feedback --file``: every vote of the file in one transaction."""
    from newsletter.service.votes import read_votes_csv, record_votes

    where = "stdin" if str(file) == "-" else str(file)
    try:
        text = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"{where}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputError(f"{where}: not UTF-8 text") from None
    votes = read_votes_csv(text, where)
    a = _app(ctx)
    with a.session() as s:
        n = record_votes(s, votes, by="cli", where=where)
    same = f", {n['unchanged']} already recorded as they were" if n["unchanged"] else ""
    err.print(f"{where}: recorded {n['up'] + n['down']} votes ({n['up']} up, {n['down']} "
              f"down; {n['replaced']} replaced an earlier vote{same}) for "
              f"{n['subscribers']} subscribers")


def _day(value: str | None) -> dt.date:
    return parse_day(value, "--date")


def _progress(total: int | None, label: str) -> Progress:
    return Progress(
        TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("{task.speed} /s"),
        TimeRemainingColumn(), console=err, transient=True, disable=not err.is_terminal,
    )


@app.command()
def send(
    ctx: typer.Context,
    date: Annotated[str | None, typer.Option("--date", metavar="YYYY-MM-DD",
                                             help="Edition day (YYYY-MM-DD); "
                                             "default today (UTC).")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask before sending.")] = False,
    slot: Annotated[str, typer.Option(metavar="HH", help="Only this UTC hour's slot (00-23): "
                                      "everyone whose local send time has passed on their "
                                      "local day and who has not had that day's edition "
                                      "(catch-up). Default: everyone.")] = "",
    queue: Annotated[bool, typer.Option("--queue", help="Plan here, deliver by `newsletter "
                                        "worker` processes through [queue] broker_url.")
                     ] = False,
    tasks: Annotated[int, typer.Option(help="With --queue: tasks to enqueue (one per worker)."
                                       )] = 4,
    wait: Annotated[float, typer.Option(help="With --queue: seconds to wait for the workers.")
                    ] = 3600.0,
    force: Annotated[bool, typer.Option("--force", help="Send through a real transport even "
                                        "when `newsletter check` finds the mail "
                                        "non-compliant (http unsubscribe link, local "
                                        "sender, no postal address).")] = False,
    processes: Annotated[int | None, typer.Option(
        "--processes", min=1, max=64, metavar="N",
        help="Processes delivering the edition, each its own loop claiming rows "
        "(default: [transport] processes).")] = None,
    log_format: LogFormat = None,
) -> None:
    """Send the day's edition to every active subscriber who has not had it.

    An edition abandoned with `newsletter abandon` sends nothing: one line saying so,
    exit 0, since the day was stopped on purpose and a script or cron job rerunning
    `send` has nothing to alarm on (`status` shows it was abandoned). Abandoned while
    this send runs, it stops early, says so and exits 0 too (3 if a delivery failed)."""
    from newsletter.delivery.edition import EditionConfig
    from newsletter.service.sending import Hooks, SendRequest, send_day
    from newsletter.transports import make_transport

    if queue:
        _require_extra("send --queue", "scale", "kombu", "celery")
    a = _app(ctx)
    settings = (a.settings if processes is None
                else a.settings.replace(transport={"processes": processes}))
    if log_format or a.settings.log.format == "json":
        _logging(a, log_format)
    progress = _progress(None, "sending")
    task = progress.add_task("send", total=None)
    request = SendRequest(_day(date), slot, yes=yes, force=force, queue=queue, tasks=tasks,
                          wait=wait)
    hooks = Hooks(ask=(lambda q: typer.confirm(q)) if sys.stdin.isatty() else None,
                  say=say, on_queued=_present_enqueued,
                  starting=lambda: _start_sending(progress),
                  on_planned=lambda n: progress.update(task, total=n),
                  on_progress=lambda _o: progress.advance(task))
    try:
        result = send_day(EditionConfig.of(settings), a.engine, request,
                          lambda: make_transport(settings), queue=settings.queue,
                          hooks=hooks)
    finally:
        progress.stop()
    if result.declined:
        err.print("not sent: nothing was planned or sent")
        raise typer.Exit(1)
    if result.queued is not None:
        _present_queued(result.queued)
    elif result.summary is not None:
        _present_sent(result.summary, result.backend, a.settings.outbox.path)
        _leave_to_exit(result.summary.context)


_LEFT: list[object] = [None]


def _leave_to_exit(obj: object) -> None:
    """Keep ``obj`` until the process ends, whose exit hands its memory back at once
    (``newsletter.__main__.finish``) instead of freeing it object by object on return.
    One is kept at a time: a process running many commands (the tests) holds the last."""
    _LEFT[0] = obj


def _start_sending(progress: Progress) -> Any:
    """Delivery starts here: signals stop it gracefully from now on, and the progress
    shows."""
    from newsletter.delivery.shutdown import Shutdown

    shutdown = Shutdown().install()
    shutdown.on_request(lambda: err.print("stopping: no new messages; finishing those in "
                                          "flight (a second signal stops at once)"))
    progress.start()
    return shutdown


def _present_enqueued(edition_id: int, pending: int, tasks: int) -> None:
    err.print(f"edition #{edition_id}: {pending} to send, {count(tasks, 'task')} queued; "
              "waiting for the workers")


def _present_queued(q: Any) -> None:
    if q.edition is None:
        err.print(q.note)
        return
    # the edition's rows by state, those earlier runs sent included (the workers report
    # to the ledger, not to this command): said so, so "sent 124" is not read as this run's
    err.print(f"edition {q.edition.day} (#{q.edition.id}), all its rows: "
              + ", ".join(f"{k} {v}" for k, v in sorted(q.counts.items())))
    if q.unfinished:
        raise typer.Exit(3)


def _present_sent(summary: Any, backend: str, outbox: str) -> None:
    """What a send did, and its exit code: 3 when a delivery failed, 128 + the signal
    when one stopped it. The same with no edition of its own to plan (no new papers,
    nobody due) when it sent earlier editions' rows whose next try was due: their
    failures and a stop say so too (they once ended in exit code 0, unsaid)."""
    r = summary.report
    if summary.edition is None:
        say(summary.note)
        if not summary.due and not r.counts and not r.errors and not r.stopped_by:
            _present_elsewhere(summary)
            return
    else:
        p = summary.plan
        # (no ranking when nothing was left to plan: no count of candidates to say)
        papers = (f"{summary.candidates} candidate papers; " if summary.context is not None
                  else "")
        say(f"edition {summary.edition.day} (#{summary.edition.id}): "
            f"{papers}planned {p.planned} "
            f"(+{p.skipped} with nothing to send)"
            + (f"; {p.already} already had this day's edition" if p.already else "")
            + (f"; took back {summary.reclaimed} unfinished" if summary.reclaimed else ""))
        if summary.note:
            say(summary.note)
    say(f"sent {r.counts['sent']}, failed {r.counts['failed']} in {r.seconds:.2f}s"
        + (f" via {backend}" + (f" to {outbox}/" if backend == "outbox" else "")))
    for line in r.errors:
        say(f"  failed: {line}")
    if r.errors_left_out:
        say(f"  and {r.errors_left_out} more not shown (`newsletter status EDITION` lists "
            "an edition's last errors)")
    if r.abandoned:
        say(f"stopped early: the edition was abandoned while it was sent ({r.abandoned});"
            " what had not been handed to the server is skipped, and no run sends it")
    _present_deferred(summary)
    _present_elsewhere(summary)
    if summary.left:
        say(f"{count(summary.left, 'delivery', 'deliveries')} went back to pending (their "
            "leases could not be renewed in time); `newsletter send` again, or the "
            "daemon's retry job after ten minutes, sends them")
    if r.stopped_by:
        # the rows still pending (given back, or never claimed) of the editions it was
        # delivering: its own, and the earlier ones it took up
        later = (" (those an interrupted run left: once nothing has touched them for ten "
                 "minutes)" if summary.resumed else "")
        say(f"stopped by signal {r.stopped_by}: "
            f"{count(summary.pending, 'delivery', 'deliveries')} still to send; "
            f"`newsletter send` again sends them{later}")
        raise typer.Exit(128 + r.stopped_by)
    if r.counts["failed"]:
        raise typer.Exit(3)


def _present_elsewhere(summary: Any) -> None:
    """Other editions' rows a stopped run left pending, which this run did not take up
    (touched less than ten minutes ago): "nothing left to deliver" is not all."""
    from newsletter.service.editions import send_command

    for edition, n in summary.elsewhere:
        say(f"{count(n, 'delivery', 'deliveries')} of edition {edition.day}"
            f"{f' slot {edition.slot}' if edition.slot else ''} (#{edition.id}) "
            f"{'wait' if n != 1 else 'waits'} pending (left by a run that stopped, or "
            f"queued for workers): `{send_command(edition.day, edition.slot)}` sends them "
            "now; otherwise a worker, or a later run once nothing has touched them for ten "
            "minutes")


def _present_deferred(summary: Any) -> None:
    """The deferred rows sent again, and those deferred now (refused for now: tried
    again by `newsletter run`, or by a `send` once due)."""
    r = summary.report
    deferred = summary.due - summary.resumed
    if deferred:
        say(f"retried {count(deferred, 'deferred delivery', 'deferred deliveries')} "
            "whose next try was due")
    if summary.resumed:
        say(f"took up {count(summary.resumed, 'delivery', 'deliveries')} that an "
            "interrupted run left pending")
    if r.counts["deferred"]:
        when = f"{r.next_try:%Y-%m-%d %H:%M} UTC" if r.next_try else "later"
        say(f"deferred {r.counts['deferred']} (refused for now); next try from {when}, "
            "by `newsletter run` or a `newsletter send` then")


@app.command()
def check(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
    dns: Annotated[bool, typer.Option("--dns", help="Look up the published SPF, DKIM "
                                      "and DMARC records and fetch [web] base_url over "
                                      "https, instead of only printing what to publish."
                                      )] = False,
    nameserver: Annotated[str | None, typer.Option(
        "--nameserver", metavar="ADDRESS[:PORT]", help="With --dns: ask the name "
        "server at this IP address (default: the system's resolver).")] = None,
) -> None:
    """Check the configuration before the first real send: https links, From domain,
    List-Id, postal address, the DKIM key, the SPF/DKIM/DMARC records to publish (with
    --dns: looked up, and the public URL fetched), the transport (SMTP: connect, TLS,
    AUTH, nothing sent; or the API key's shape), templates, the database's schema and
    the link-signing keys. One line per item, ✗ with the fix; exits 1 on any ✗."""
    from newsletter.config import DEFAULT_CONFIG
    from newsletter.delivery.check import as_json as checks_json
    from newsletter.service.checks import run_all

    settings = _app(ctx).settings
    # which file was read: a command run from another folder than the service's reads
    # another config.toml (or none), and a check of the wrong settings looked like a
    # check of the right ones
    where = (str(Path(settings.source_file).resolve()) if settings.source_file else
             f"no config file ({Path(DEFAULT_CONFIG).resolve()} not found; --config or "
             "NEWSLETTER_CONFIG names one): the built-in defaults")
    err.print(f"settings: {where}, then NEWSLETTER_* from the environment")
    items = run_all(settings, dns=dns, nameserver=nameserver)
    if as_json:
        _print_json(checks_json(items))
    else:
        for item in items:
            out.print(item.line())
    if not all(i.ok for i in items):
        raise typer.Exit(1)


# (failed: one a requeue sends again, ``ledger.requeued_failure``)
LEFT_TO_SEND = ("pending", "deferred", "sending", "failed")


def _edition_arg(edition: str | None) -> dict[str, Any]:
    """EDITION as `status` and `abandon` take it: an id, else a day (YYYY-MM-DD)."""
    by_id = edition is not None and edition.isdigit()
    return {"edition_id": int(edition) if edition and by_id else None,
            "day": (parse_day(edition, "EDITION", "an edition id or a day (YYYY-MM-DD)")
                    if edition and not by_id else None),
            "asked": edition or ""}


@app.command()
def abandon(
    ctx: typer.Context,
    edition: Annotated[str, typer.Argument(
        metavar="EDITION", help="Edition id or day (YYYY-MM-DD: its latest edition).")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask first.")] = False,
    reason: Annotated[str, typer.Option(
        "--reason", metavar="TEXT", help="Why: kept with the edition and each row it "
        "skips (`status`, the console).")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
) -> None:
    """Stop an edition for good (asks first unless --yes): every row not yet handed to
    the mail server (pending, deferred) is skipped as "abandoned by the operator:
    TEXT", and no `send`, `run`, worker, retry or console button sends it again. A
    send running now stops at its next claim; what it already sent stays sent.

    Exit 0 when abandoned, and when there was nothing to do (already abandoned, or
    complete: nothing left that a run would send), each said in one line, so a script
    may run it again; 1 for an unknown edition, a "no", or no --yes without a terminal.
    """
    import getpass
    import socket

    from newsletter.delivery.status import edition_status
    from newsletter.service import editions

    a = _app(ctx)
    found = editions.find(a.engine, **_edition_arg(edition))
    name = editions.edition_name(found)
    counts = edition_status(a.engine, found)["counts"]
    if found.abandoned_at is None and any(counts[k] for k in LEFT_TO_SEND):
        err.print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v)
                  + "; the pending and deferred rows become skipped, and those sending "
                  "are finished by the run that holds them")
        _confirm(yes, f"Abandon {name} for good?",
                 f"refusing to abandon edition #{found.id} without --yes (no terminal to ask)",
                 f"not abandoned: {name} is as it was", on_stderr=as_json)
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        user = str(os.getuid())
    done = editions.abandon(a.engine, found, by=f"cli {user}@{socket.gethostname()}",
                            reason=reason)
    if as_json:
        _print_json({"edition": found.id, "day": found.day.isoformat(), "slot": found.slot,
                     "already": done.already, "complete": done.complete,
                     "abandoned": None if done.at is None else {
                         "at": done.at.replace(tzinfo=dt.UTC).isoformat(timespec="seconds"),
                         "by": done.by, "reason": done.reason},
                     "skipped": done.skipped, "in_flight": done.in_flight})
    if done.already:
        err.print(f"{name} was already abandoned at {done.at:%Y-%m-%d %H:%M} UTC by "
                  f"{done.by}" + (f": {done.reason}" if done.reason else "")
                  + "; nothing changed")
    elif done.complete:
        err.print(f"nothing to abandon: {name} has nothing left to send (no row pending, "
                  "deferred, sending or to be retried); nothing changed")
    else:
        err.print(f"abandoned {name}: skipped {sum(done.skipped.values())} ("
                  + ", ".join(f"{k} {v}" for k, v in done.skipped.items() if v)
                  + ")" + (f"; {count(done.in_flight, 'delivery', 'deliveries')} in "
                           "flight with a running send: recorded as they end, the rest "
                           "skipped" if done.in_flight else ""))


@app.command()
def status(
    ctx: typer.Context,
    edition: Annotated[str | None, typer.Argument(
        metavar="EDITION", help="Edition id or day (YYYY-MM-DD); "
                                                  "default the latest.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
) -> None:
    """Counts by delivery state and the last errors of an edition."""
    from newsletter.delivery.ledger import REFUSED_CONTENT
    from newsletter.service.editions import send_command
    from newsletter.service.editions import status as edition_status

    a = _app(ctx)
    data = edition_status(a.engine, **_edition_arg(edition))
    procs = data["processes"]
    if as_json:
        _print_json(data)
        return
    out.print("subscribers: " + ", ".join(f"{k} {v}" for k, v in data["subscribers"].items()))
    for p in procs:
        out.print(f"{p['kind']:<7} {p['host']}:{p['pid']}  {p['state']}, last heartbeat "
                  f"{p['age_seconds']:.0f}s ago (started {p['started_at'][:19]})")
    if data["edition"] is None:
        return
    c = data["counts"]
    slot = f" slot {data['slot']}" if data["slot"] else ""
    out.print(f"edition #{data['edition']} {data['day']}{slot}: "
              + ", ".join(f"{k} {v}" for k, v in c.items()))
    if data["abandoned"]:
        gone = data["abandoned"]
        out.print(f"  abandoned by the operator at {gone['at']} ({gone['by']})"
                  + (f": {gone['reason']}" if gone["reason"] else "")
                  + "; nothing more of it is sent")
    again = send_command(data["day"], data["slot"])
    if data["failed_reasons"]:
        out.print("  failed by reason: " + ", ".join(
            f"{k or '-'} {v}" for k, v in data["failed_reasons"].items()))
    refused = data["failed_reasons"].get(REFUSED_CONTENT, 0)
    if refused and not data["abandoned"]:
        out.print(f"  {refused} refused for {'their' if refused != 1 else 'its'} size or "
                  "content after the server took others of the edition "
                  f"({REFUSED_CONTENT}): once the server takes "
                  f"{'them' if refused != 1 else 'it'} (its size limit raised, its filter "
                  f"fixed), `{again}` or the console's retry sends "
                  f"{'them' if refused != 1 else 'it'} again")
    for e in data["last_errors"]:
        why = (f" ({e['reason']})" if e["status"] == "failed" and e["reason"] else "")
        out.print(f"  {e['status']}{why}: {e['email']}: {e['error']}")
    for h in data["sending"]:
        out.print(f"  sending: {h['rows']} held by {h['holder']}, " + (
            f"which is gone: `{again}` takes them back and sends them (a later run does "
            "once their lease has ended and ten minutes passed)" if h["gone"] else
            f"running (lease until {h['lease_expires']}, renewed while it sends)"))
    if data["day_editions"] > 1:  # hourly slots: the day is many editions
        out.print(f"readers' {data['day']} emails, all {data['day_editions']} editions: "
                  + ", ".join(f"{k} {v}" for k, v in data["day_counts"].items()))
        for e in data["day_errors"]:
            out.print(f"  {e['status']} (slot {e['slot'] or '-'}): {e['email']}: "
                      f"{e['error']}")
    for e in data["deferred"]:
        out.print(f"  deferred: {e['email']}: next try {e['next_try']} (try {e['tries']}, "
                  f"first {e['first_try']}): {e['error']}")
    d = data["deferred_all"]
    if d["rows"] != c.get("deferred", 0):
        out.print(f"deferred in all editions: {d['rows']}, {d['due']} due now; next try "
                  f"{d['next_try']}")


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
    slot: Annotated[str, typer.Option(metavar="HH", help="What `send --slot HH` (the daemon's "
                                      "run for that UTC hour, 00-23) would send: everyone "
                                      "whose local send time has passed on their local day "
                                      "and who has not had that day's edition. Default: "
                                      "what a plain `send` would send.")] = "",
) -> None:
    """Render exactly what `send` would send, to files; sends nothing, writes no ledger.
    For an abandoned edition, what it would have sent, and one line saying that nothing
    will be."""
    from newsletter.delivery.edition import EditionConfig
    from newsletter.delivery.preview import preview_engine
    from newsletter.service.preview import preview as run_preview

    if subscriber and all_:
        raise InputError("--subscriber and --all exclude each other")
    if screenshot:
        from newsletter.render.screenshots import chromium_path

        _require_extra("preview --screenshot", "screenshots", "playwright.sync_api")
        chromium_path()  # Debian's chromium, also needed before anything is written
    a = _app(ctx)
    engine = preview_engine(a.settings.database.url)  # never creates or migrates one
    progress = _progress(None, "rendering")
    task = progress.add_task("preview", total=None)
    with progress:
        report = run_preview(EditionConfig.of(a.settings), engine, _day(date), out_dir,
                             email=subscriber, limit=limit, slot=slot,
                             on_progress=lambda _o: progress.advance(task))
    if screenshot:
        from newsletter.render.screenshots import screenshot_dir

        report.screenshots = screenshot_dir(out_dir)
    if report.note:
        if as_json:
            _print_json(report.summary() | {"note": report.note})
            return
        err.print(report.note)
        if not report.outcomes:  # nothing would be sent; else (an earlier edition's
            return               # rows taken up) what would be is shown below
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
    if summary["failed_count"]:  # what `send` would stop or fail on: not a good preview
        raise NewsletterError(f"{count(summary['failed_count'], 'email')} of "
                              f"{summary['subscribers']} failed to render (the first: "
                              f"{summary['failed'][0]})")


@sources_app.command("list")
def sources_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
    wide: Annotated[bool, typer.Option(
        "--wide", help="One line per source, whatever the terminal's width.")] = False,
) -> None:
    """The configured sources and how each one's last ingest went, each source once
    (long URLs and errors wrap to the terminal unless --wide)."""
    from newsletter.service.ingest import list_sources

    a = _app(ctx)
    with a.session() as s:
        rows = list_sources(a.settings.sources, s)
    if as_json:
        _print_json(rows)
        return
    if not rows:
        err.print("no [[sources]] configured and nothing ingested yet")
        return
    table = Table("source", "kind", "where", "last ingest (UTC)", "result", "error")
    blocks = []
    for r in rows:
        last = r["last"]
        if last is None:
            when, result = "never", ""
        else:
            when = last["at"].replace("T", " ").removesuffix("Z")[:16]
            result = ("not modified" if last["not_modified"] else
                      f"{count(last['papers'], 'paper')}: {last['new']} new, "
                      f"{last['updated']} updated"
                      + (f", {last['skipped']} skipped" if last["skipped"] else ""))
            result = result if last["ok"] else "failed"
        kind = r["kind"] if r["configured"] else "by hand"
        error = (last or {}).get("error", "")
        table.add_row(r["name"], kind, r["where"], when, result, error)
        blocks.append((f"{r['name']} ({kind}) · {when}" + (f" · {result}" if result else ""),
                       [r["where"]] if r["where"] and r["where"] != r["name"] else [],
                       [f"error: {error}"] if error else []))
    if wide:
        plain_console(width=100_000).print(table, crop=False)
        return
    _print_wrapped(blocks, out.width)


def _print_wrapped(blocks: list[tuple[str, list[str], list[str]]], width: int) -> None:
    """Each source as a head line and indented lines, wrapped to the terminal; a long
    URL is cut only at the edge, never shortened."""
    import textwrap

    width = max(width, 40)
    for head, where, error in blocks:
        lines = textwrap.wrap(head, width, subsequent_indent="    ", break_on_hyphens=False)
        for text in where + error:
            lines += textwrap.wrap(text, width, initial_indent="    ",
                                   subsequent_indent="    ", break_on_hyphens=False)
        out.print("\n".join(lines))


@sources_app.command("forget")
def sources_forget(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(
        metavar="NAME|URL|PATH", help="A name, URL or path as `sources list` shows it.")],
) -> None:
    """Forget what is recorded about a source's ingests (a typo, a feed given up): it
    leaves `sources list`. Its papers stay; a [[sources]] entry stays configured."""
    from newsletter.service.ingest import forget_source

    a = _app(ctx)
    with a.session() as s:
        n = forget_source(s, source)
    if not n:
        raise InputError(f"sources forget: nothing recorded for {source!r} "
                         "(see `newsletter sources list`)")
    err.print(f"forgot {source} ({n} record{'s' if n != 1 else ''})")


@sources_app.command("test")
def sources_test(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(
        metavar="SOURCE", help="A [[sources]] name, a URL or a file path.")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Fail on the first unusable item.")]
    = False,
) -> None:
    """Fetch and parse one source without storing anything: what ingest would store."""
    from newsletter.ingest.sources import paper_dict
    from newsletter.service.ingest import dry_run

    a = _app(ctx)
    result = dry_run(a.settings.sources, source, strict=strict)
    if as_json:
        _print_json({"origin": result.origin, "papers": [paper_dict(p) for p in result.papers],
                     "skipped": [{"position": k.position, "id": k.ident, "reason": k.reason}
                                 for k in result.skipped]})
    else:
        for p in result.papers:
            when = p.published.isoformat() if p.published else "-"
            featured = f", featured {p.featured.isoformat()}" if p.featured else ""
            out.print(f"{p.id}  {p.title}")
            out.print(f"    {', '.join(p.authors) or '-'} | {when}{featured}")
    for item in result.skipped:
        err.print(f"  skipped {result.origin}: {item}")
    folded = f", {count(result.folded, 'duplicate')} merged" if result.folded else ""
    skipped = f", {count(len(result.skipped), 'item')} skipped" if result.skipped else ""
    err.print(f"{result.origin}: {count(len(result.papers), 'paper')} would be stored"
              f"{folded}{skipped} (nothing stored)")


@app.command()
def demo(ctx: typer.Context) -> None:
    """The whole job on bundled samples: ingest papers, add sample subscribers, send
    today's edition to the outbox folder. Refuses in a configured installation (a
    transport that sends mail, or a database holding anything but demo data)."""
    from newsletter.delivery.edition import EditionConfig
    from newsletter.service.demo import refuse_outside_demo, sample_data
    from newsletter.service.editions import send
    from newsletter.service.ingest import ingest as ingest_papers
    from newsletter.transports import make_transport

    a = _app(ctx)
    refuse_outside_demo(a.settings)
    papers, sample_people = sample_data()
    with a.session() as s:
        report = ingest_papers(a.settings.sources, s, [str(papers)])
    err.print(f"ingested {report.total} sample papers ({report.new} new)")
    with a.session() as s:
        imported = people.import_csv(s, sample_people, "sample_subscribers.csv")
    err.print(f"sample subscribers: {imported.added} added, "
              f"{len(imported.duplicates)} already present")
    _begin_signing(a, "demo")
    summary = send(EditionConfig.of(a.settings), a.engine, _day(None),
                   make_transport(a.settings))
    r = summary.report
    if summary.edition is None:
        err.print(summary.note)
        return
    where = (f" into {Path(a.settings.outbox.path).resolve()}/"
             if a.settings.transport.backend == "outbox" else "")
    err.print(f"edition {summary.edition.day}: sent {count(r.counts['sent'], 'email')}"
              f"{where} (failed {r.counts['failed']}); "
              f"`newsletter status` shows the ledger, `newsletter preview` renders without sending")
    if r.counts["failed"]:
        raise typer.Exit(3)


@app.command()
def web(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    log_format: LogFormat = None,
) -> None:
    """Serve the sign-up, confirm, unsubscribe, preferences and view-in-browser pages, the
    bounce webhooks (`newsletter webhooks urls` prints their URLs), the operator console
    at /admin and Prometheus /metrics (see [metrics])."""
    import logging

    import uvicorn

    from newsletter.web import create_app
    from newsletter.web.logs import redact_logs

    a = _app(ctx)
    _logging(a, log_format)
    _can_listen(host, port)
    starlette = create_app(a)
    redact_logs()  # every handler: access log, errors, tracebacks
    log = logging.getLogger("newsletter.web")
    from newsletter.delivery.check import weak_signing_key

    weak = weak_signing_key(a.settings.web, signing_only=True)
    if weak is not None:  # the pages sign confirm and preference links with it too
        log.warning("%s: %s (fix: %s; `newsletter send` refuses to send with it)",
                    weak.key, weak.detail, weak.fix)
    log.info("serving %s on %s:%s", a.settings.web.base_url, host, port)
    uvicorn.run(starlette, host=host, port=port, log_config=None,  # our handlers
                log_level=a.settings.log.level, proxy_headers=True,
                # the client the limits count: behind a proxy, the one it names
                forwarded_allow_ips=a.settings.web.forwarded_allow_ips)


def _can_listen(host: str, port: int) -> None:
    """One line when the address is taken or not ours, before the server starts: uvicorn
    says it among its log lines and exits 3."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise InputError(f"--host {host}: {exc.strerror or exc}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as exc:
            raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                             "another process has it: `ss -ltnp` names it; or choose "
                             "another --port") from None


@webhooks_app.command("urls")
def webhooks_urls(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """Print each email API's bounce/complaint webhook URL, and the generic one for
    your own scripts (secret: paste it only into that provider's settings)."""
    from newsletter.web.webhooks import webhook_urls

    a = _app(ctx)
    with a.session() as s:
        urls = webhook_urls(a.settings, s)
    if as_json:
        _print_json(urls)
        return
    for provider, url in urls.items():
        out.print(f"{provider}\t{url}")


@webhooks_app.command("rotate")
def webhooks_rotate(
    ctx: typer.Context,
    provider: Annotated[str, typer.Argument(
        metavar="PROVIDER", help="sendgrid | mailgun | postmark | resend | ses | generic")],
) -> None:
    """Replace a provider's webhook URL token; the old URL stops working at once."""
    from newsletter.web.webhooks import rotate_token, webhook_urls

    a = _app(ctx)
    with a.session() as s:
        rotate_token(s, provider)
        url = webhook_urls(a.settings, s)[provider]
    out.print(url)
    err.print(f"update the webhook URL in {provider}'s settings; the old one is refused now")


@bounces_app.command("fetch")
def bounces_fetch(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
) -> None:
    """Read [bounces] mailbox once: hard bounces mark the subscriber bounced, soft ones
    count toward [bounces] soft_limit, complaints and mailto unsubscribes stop the
    mail; auto-replies are ignored. Each message is acted on once; mail that is none
    of these is left in the mailbox."""
    from newsletter.service.bounces import SHOWN, read_mailbox

    a = _app(ctx)
    report = read_mailbox(a.engine, a.settings.bounces, a.settings.web)
    if as_json:
        _print_json(report.as_dict())
        return
    names = {"auto_replies": "auto-replies ignored", "notices": "notices (delivered, delayed)",
             "refused": "refused by policy (5.7.x)", "already": "read before"}
    out.print(", ".join(f"{names.get(k, k)} {report.counts.get(k, 0)}" for k in SHOWN))
    for email in report.bounced:
        out.print(f"  bounced: {email}")


@keys_app.command("show")
def keys_show(ctx: typer.Context) -> None:
    """The signing key stored in the database and the fingerprints of every key (for
    rotating [web] secret_keys without breaking links already sent)."""
    from newsletter.service.signing import describe

    a = _app(ctx)
    with a.session() as s:
        _print_json(describe(a.settings.web, s))


@app.command()
def worker(
    ctx: typer.Context,
    concurrency: Annotated[int, typer.Option(help="Tasks at once in this worker.")] = 1,
    log_format: LogFormat = None,
    metrics_port: MetricsPort = None,
    force: Annotated[bool, typer.Option("--force", help="Deliver through a real transport "
                                        "even when `newsletter check` finds the mail "
                                        "non-compliant or its links forgeable; without "
                                        "it such a worker refuses to start.")] = False,
) -> None:
    """A Celery worker delivering queued editions (scale-out; use PostgreSQL).

    SIGTERM or Ctrl-C: stop claiming, finish the messages in flight, give the rest
    back to the ledger, exit 0 (Celery's warm shutdown)."""
    import signal

    from newsletter.delivery.shutdown import Shutdown

    _require_extra("newsletter worker", "scale", "kombu", "celery")
    early = Shutdown()

    def stop_before_celery(signum: int, frame: Any) -> None:
        # Recorded first: Python drops an exception raised while a signal handler runs
        # inside a weakref callback or __del__ ("Exception ignored in ..."), and the
        # worker then went on to start Celery with the stop forgotten. The flag is
        # read again before Celery starts and once Celery is ready.
        early.request(signum)
        raise SystemExit(0)  # nothing claimed yet: a clean stop, the heartbeat says so

    # Until Celery puts in its own handlers (its warm shutdown, once it is starting),
    # SIGTERM or Ctrl-C ends the worker cleanly: the default action killed it while
    # its heartbeat already said it was alive (a stop in its first second or so).
    previous = {sig: signal.signal(sig, stop_before_celery)
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        _run_worker(ctx, concurrency, log_format, metrics_port, early, force)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_worker(ctx: typer.Context, concurrency: int, log_format: str | None,
                metrics_port: int | None, early: Shutdown, force: bool) -> None:
    import functools

    from newsletter.delivery.check import compliance_gate
    from newsletter.delivery.queue import check_broker, make_celery, run_worker
    from newsletter.delivery.shutdown import Shutdown
    from newsletter.observe.service import start_service
    from newsletter.store.db import make_engine, upgrade
    from newsletter.transports import make_transport

    a = _app(ctx)
    config = ctx.find_root().params.get("config")
    _logging(a, log_format)
    make_transport(a.settings)  # a transport misconfiguration fails here, not per task
    # The compliance gate `send` and `run` hold: the worker signs the links of what it
    # delivers with its own configuration's key, whatever `send --queue` was run with.
    for line in compliance_gate(a.settings.transport.backend, a.settings.web,
                                a.settings.sender, force, error=ConfigError):
        say(f"warning: delivering anyway (--force): {line}")
    check_broker(a.settings.queue)
    # The heartbeat and metrics get an engine of their own, outside the process-wide
    # cache: prefork children then open their own connections instead of inheriting it.
    engine = make_engine(a.settings.database.url)
    upgrade(engine)
    _begin_signing(a, "worker")
    beater = None
    try:
        beater = start_service(a.settings, engine, "worker", metrics_port=metrics_port,
                               info={"concurrency": concurrency})
        task = functools.partial(_deliver_queued, str(Path(config).resolve()) if config
                                 else None)
        celery = make_celery(a.settings.queue, task, Shutdown(), early=early)
        if early.requested:  # a stop whose SystemExit was dropped on the way here
            raise SystemExit(0)
        pool = "--pool=solo" if concurrency == 1 else "--pool=prefork"
        # A node name of its own (Celery's default is celery@host): two workers on one
        # machine (newsletter-worker@1 and @2) named alike fought over RabbitMQ's
        # exclusive remote-control queue, and the second one died at start.
        code = run_worker(celery, [
            "worker", f"--loglevel={a.settings.log.level.upper()}", pool,
            f"--concurrency={concurrency}", "--without-gossip", "--without-mingle",
            "--without-heartbeat", f"--hostname=newsletter-{os.getpid()}@%h"])
    finally:
        if beater is not None:
            beater.stop()
    if code:  # Celery logged why ("Unrecoverable error: ..."); the exit code says it too
        # (to the real stderr: Celery's worker leaves sys.stderr redirected to its log)
        print(f"error: the worker stopped with exit code {code} (its log above says why)",
              file=sys.__stderr__ or sys.stderr)
        raise typer.Exit(code)


def _deliver_queued(config: str | None, edition_id: int, shutdown: Any) -> dict[str, int]:
    """One queued task in a worker: the settings from ``config`` (the file the worker
    was started with) plus the environment, then the editions use case."""
    from newsletter.delivery.edition import EditionConfig
    from newsletter.service.editions import deliver_edition
    from newsletter.transports import make_transport

    a = App.load(config)
    report = deliver_edition(EditionConfig.of(a.settings), a.engine, edition_id,
                             make_transport(a.settings), shutdown=shutdown)
    return dict(report.counts) if report is not None else {}


@app.command()
def run(ctx: typer.Context, log_format: LogFormat = None,
        metrics_port: MetricsPort = None,
        force: Annotated[bool, typer.Option("--force", help="Send through a real transport "
                                            "even when `newsletter check` finds the mail "
                                            "non-compliant (http unsubscribe link, local "
                                            "sender, no postal address); without it such "
                                            "slots are logged as refused, not sent.")
                         ] = False) -> None:
    """The scheduler daemon: ingest on [schedule] ingest_cron, send each hour's slot.

    On start it sends the current hour's slot at once (catch-up after downtime).
    Mail that `send` would refuse as non-compliant is not sent without --force: each
    slot says why in the log. SIGTERM or Ctrl-C: stop claiming, finish the messages in
    flight, exit 0."""
    import logging

    from newsletter.delivery.scheduler import run_daemon
    from newsletter.delivery.shutdown import Shutdown
    from newsletter.observe.service import start_service

    a = _app(ctx)
    _logging(a, log_format)
    _begin_signing(a, "run")
    shutdown = Shutdown().install()
    beater = start_service(a.settings, a.engine, "run", metrics_port=metrics_port)
    try:
        run_daemon(a, shutdown,
                   announce=lambda line: logging.getLogger("newsletter.scheduler").info(line),
                   force=force)
    finally:
        beater.stop()  # the heartbeat records a clean stop
    logging.getLogger("newsletter.scheduler").info(
        f"stopped by signal {shutdown.signum}" if shutdown.signum else "stopped")


def _new_password(password_stdin: bool) -> str:
    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if sys.stdin.isatty():
        return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))
    raise InputError("no terminal to ask for a password: use --password-stdin")


def _store_password(ctx: typer.Context, password_stdin: bool,
                    store: Callable[[Any, str], object]) -> App:
    """Ask for an operator's new password, then ``store`` it in one transaction: what
    `admin add-user` and `admin passwd` share."""
    password = _new_password(password_stdin)
    a = _app(ctx)
    with a.session() as s:
        store(s, password)
    return a


PasswordStdin = Annotated[bool, typer.Option(
    "--password-stdin", help="Read the password from the first line of stdin.")]


@admin_app.command("add-user")
def admin_add_user(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The operator's user name.")],
    password_stdin: PasswordStdin = False,
) -> None:
    """Add an operator of the /admin console (the password is stored as an Argon2 hash)."""
    from newsletter.web.admin import auth

    a = _store_password(ctx, password_stdin, lambda s, p: auth.add_user(s, name, p))
    err.print(f"added admin user {name}; log in at "
              f"{a.settings.web.base_url.rstrip('/')}/admin/")


@admin_app.command("passwd")
def admin_passwd(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The operator's user name.")],
    password_stdin: PasswordStdin = False,
) -> None:
    """Set an operator's password; their open sessions end at once."""
    from newsletter.web.admin import auth

    _store_password(ctx, password_stdin, lambda s, p: auth.set_password(s, name, p))
    err.print(f"new password for admin user {name}; their sessions ended")


@admin_app.command("list-users")
def admin_list_users(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
) -> None:
    """List the console's operators and when each last logged in."""
    from newsletter.web.admin import auth

    a = _app(ctx)
    with a.session() as s:
        users = [{"name": u.name, "created_at": u.created_at.isoformat(timespec="seconds"),
                  "last_login_at": u.last_login_at.isoformat(timespec="seconds")
                  if u.last_login_at else None} for u in auth.list_users(s)]
    if as_json:
        _print_json(users)
        return
    for u in users:
        out.print(f"{u['name']}\tcreated {u['created_at']}\tlast login "
                  f"{u['last_login_at'] or 'never'}")
    err.print(count(len(users), "admin user"))


@admin_app.command("remove-user")
def admin_remove_user(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The operator's user name.")]
) -> None:
    """Remove an operator; their open sessions end at once."""
    from newsletter.web.admin import auth

    a = _app(ctx)
    with a.session() as s:
        auth.remove_user(s, name)
    err.print(f"removed admin user {name}")


def hoist_config(argv: list[str]) -> list[str]:
    """``--config PATH`` is the root's option; operators also write it after the
    command (``newsletter send --yes --config /etc/x.toml``), so it is moved to the
    front (up to a ``--``, after which everything is an argument)."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest += argv[i:]
            break
        if arg == "--config" and i + 1 < len(argv):
            front += argv[i:i + 2]
            i += 2
            continue
        (front if arg.startswith("--config=") else rest).append(arg)
        i += 1
    return front + rest


def only_the_command(root: typer.Typer, args: list[str]) -> typer.Typer:
    """``root`` with only the command (or group of commands) ``args`` run, when they
    name one: Typer builds the parameters of every command of the tree before it runs
    one (reading each function's signature and annotations: 0.03-0.06 s of every
    command's start). The command, its help, its errors and the root's options are the
    same (a test compares every command's help both ways); ``newsletter --help``, a
    mistyped name, ``newsletter --help send`` (the root's help) and anything else get
    the whole tree. ``args`` come through ``hoist_config``: the root's options
    (``--config PATH``, ``--version``) stand first."""
    i = 0
    while i < len(args) and args[i].startswith("-"):
        if args[i] == "--config":
            i += 2
        elif args[i] == "--version" or args[i].startswith("--config="):
            i += 1
        else:  # ``--help`` before the command shows the root's help, naming every
            return root  # command; ``--`` or an unknown option: the tree says what
    if i >= len(args):
        return root
    name = args[i]
    commands = [c for c in root.registered_commands if (
        c.name or typer.main.get_command_name(c.callback.__name__ if c.callback else "")
    ) == name]
    groups = [g for g in root.registered_groups
              if (g.name or g.typer_instance and g.typer_instance.info.name) == name]
    if len(commands) + len(groups) != 1:
        return root
    narrowed = copy.copy(root)  # a group still: the root has its callback (``_root``)
    narrowed.registered_commands = commands
    narrowed.registered_groups = groups
    return narrowed


def undecodable_argument(argv: list[str], exc: UnicodeEncodeError) -> InputError | None:
    """The one-line error for a command-line argument that is not valid UTF-8, when
    that is what ``exc`` met: Python keeps such bytes as lone surrogates, which a file
    name takes (a path in any encoding works) but no database, message or header can (a
    traceback when the value was stored; the transaction is rolled back). None when
    ``exc`` is about something else."""
    bad = exc.object[exc.start:exc.end] if isinstance(exc.object, str) else ""
    if not bad or not all("\udc80" <= c <= "\udcff" for c in bad):
        return None
    for position, arg in enumerate(argv, 1):
        if bad in arg and arg in exc.object:  # the argument itself, not a lookalike
            shown = arg.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            return InputError(f"argument {position} ('{visible(shown, lines=False)}') is not "
                              "valid UTF-8: write it in UTF-8 (check the terminal's or the "
                              "script's encoding)")
    return None


def main() -> None:
    """Console entry point: user errors become one line on stderr and a non-zero exit."""
    _JSON_LOGS[0] = False  # (a process running many commands, the tests, starts afresh)
    try:
        try:
            args = hoist_config(sys.argv[1:])
            only_the_command(app, args)(args=args, prog_name="newsletter")
        except UnicodeEncodeError as exc:
            undecodable = undecodable_argument(sys.argv[1:], exc)
            if undecodable is None:
                raise
            raise undecodable from None
        except sqlalchemy.exc.OperationalError as exc:
            raise database_trouble(exc) from None
        except sqlalchemy.exc.ProgrammingError as exc:
            refused = database_refused(exc)
            if refused is None:
                raise
            raise refused from None
    except NewsletterError as exc:
        if _JSON_LOGS[0]:  # the command logs JSON: its last line too
            say(str(exc), 40)  # ERROR
        else:
            sys.stderr.write(f"error: {visible(str(exc))}\n")  # (it may quote input)
        sys.exit(exc.exit_code)


# PostgreSQL's codes (SQLSTATE) for a table, column, constraint or other object that is
# not there, and for privileges the database user lacks
_MISSING = {"42P01", "42703", "42P10", "42704"}
_NO_PRIVILEGE = "42501"


def database_refused(exc: sqlalchemy.exc.ProgrammingError) -> NewsletterError | None:
    """One line for tables that do not match the schema the database records (a
    restore cut short, a table dropped by hand: 115 lines of traceback), or for a
    database user without privileges on them; None for any other programming error,
    which is ours and keeps its traceback."""
    code = getattr(getattr(exc, "orig", None), "sqlstate", None)
    if code in _MISSING:
        schema = ", ".join(sorted(head_revisions()))
        return ConfigError(f"[database] url: the tables do not match schema {schema}: "
                           f"{db_reason(exc)}", "restore a whole backup (a restore cut "
                           "short leaves tables out), then `newsletter check`")
    if code == _NO_PRIVILEGE:
        return ConfigError(f"[database] url: {db_reason(exc)}", "the database user needs "
                           "privileges on the tables: run as the user that owns them, or "
                           "GRANT them to this one")
    return None


# What a database server says when it answered and refused (psycopg begins every failed
# connect with "connection failed:"), and when it is not there to answer.
_SERVER_REFUSED = ("too many connections", "too many clients", "remaining connection slots",
                   "does not exist", "password authentication", "no pg_hba.conf entry")
_SERVER_GONE = ("connection refused", "server closed the connection", "terminating connection",
                "connection reset", "could not connect", "timeout expired",
                "no such file or directory", "connection to server", "connection is bad")


def database_trouble(exc: Exception) -> NewsletterError:
    """One line for a database that refuses the work midway (a SQLite file this user
    may not write: made by root rather than the service's user; locked too long; a
    full disk; a server gone), where a traceback ended the command, with what to do
    about it. Every transaction was rolled back: nothing is half-written."""
    reason = db_reason(exc)
    fix = unwritable_fix(reason)
    if fix is not None:
        return ConfigError(f"[database] url: {reason}", fix)
    after = "nothing was half-written, and a send takes up where this one stopped"
    low = reason.lower()
    if "disk is full" in low or "no space" in low:
        return NewsletterError(f"database: {reason}", "free space on the disk that holds "
                               f"the database (and its -wal file), then run the command "
                               f"again: {after}")
    if any(words in low for words in _SERVER_REFUSED):  # it answered: not a lost server
        return NewsletterError(f"database: {reason}")
    if any(words in low for words in _SERVER_GONE):
        return NewsletterError(f"database: {reason}", "is the database server running and "
                               f"reachable? Run the command again once it is: {after}")
    return NewsletterError(f"database: {reason}", "nothing was half-written; run the "
                           "command again" if "locked" in reason else None)
