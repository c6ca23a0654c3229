"""Storage on both SQLite and the real PostgreSQL: migrations, upserts, constraints."""

from __future__ import annotations

import datetime as dt
import functools
import importlib.util
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, inspect, select
from sqlalchemy.exc import IntegrityError

from newsletter.config import Settings
from newsletter.errors import InputError, SourceError
from newsletter.ingest.run import parse_text
from newsletter.service.ingest import ingest
from newsletter.store import subscribers
from newsletter.store.db import get_engine, session_scope
from newsletter.store.entries import upsert_papers
from newsletter.store.models import Delivery, Edition, Entry, Subscriber

from .conftest import PAYLOADS, ROOT, SEEDS


def settings_for(url: str) -> Settings:
    return Settings().replace(database={"url": url})


def test_migrations_create_every_table(db_url: str) -> None:
    engine = get_engine(db_url)
    tables = set(inspect(engine).get_table_names())
    assert {"subscribers", "entries", "editions", "deliveries", "sent_entries", "events",
            "fetch_state", "meta", "alembic_version"} <= tables
    get_engine(db_url)  # a second open is a no-op


def test_the_migrations_make_the_models_schema(db_url: str) -> None:
    """What the migrations build is what the models declare, indexes included: an
    index declared in one and not made by the other (the planning's ``(day,
    subscriber_id)``) would leave one back end scanning every delivery."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from newsletter.store.models import Base

    with get_engine(db_url).connect() as conn:
        found = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    # PostgreSQL's trigram indexes for the console's search exist only there, made by
    # migration 0008 alone (SQLite has no such index)
    assert [d for d in found if not (d[0] == "remove_index"
                                     and str(d[1].name).endswith("_trgm"))] == []


HISTORY = ("deliveries", "sent_entries", "events")  # tables that grow with every day sent


def test_each_runs_questions_are_answered_by_an_index(db_url: str) -> None:
    """What every run, every bounce and every console page asks, whatever the history,
    reads an index made for it, not every delivery, every paper ever sent or every
    event: who had a day's edition (planning, the plain day and a late one), who was
    sent the edition's papers (``sent_map``), what went out in the last hour (an hourly
    rate limit), which delivery a bounce or a notice names, a subscriber's archive, the
    console's charts and edition page, the papers' newest change (the web's rankings).
    The statements are the code's own, caught as they run; the database's plan for one
    of them names the index, and (SQLite) none reads a growing table whole."""
    from newsletter.delivery.ledger import DbLedger
    from newsletter.service.bounces import Matcher, _named
    from newsletter.service.ranking import papers_version
    from newsletter.store.queries import sent_editions, sent_map, subscriber_rows
    from newsletter.web.admin.data import daily_series, offered_papers

    engine = get_engine(db_url)
    day = dt.date(2025, 12, 26)
    with session_scope(engine) as s:
        edition = Edition(day=day, slot="")
        s.add_all([edition, Entry(id="2401.00001", title="A paper")])
        s.flush()
        s.expunge(edition)
    report = SimpleNamespace(to="", message_ids=["<a@b>"])
    asked = {
        "ix_delivery_day_subscriber": lambda s: list(subscriber_rows(s, unsent_day=day)),
        "ix_delivery_day_subscriber ": lambda s: list(subscriber_rows(
            s, unsent_day=day, had_day=day - dt.timedelta(days=1))),
        "ix_sent_entries_edition": lambda s: sent_map(s, list(s.scalars(select(Entry)))),
        "ix_delivery_sent_at": lambda s: DbLedger(engine, edition).sent_last_hour(100),
        "ix_delivery_message_id": lambda s: _named(s, "<a@b>"),
        "ix_delivery_message_id ": lambda s: Matcher(None, None).load(  # type: ignore[arg-type]
            s, [report]),  # type: ignore[list-item]
        "uq_delivery_subscriber_day": lambda s: sent_editions(s, 1, 100),
        "ix_events_kind_at": lambda s: daily_series(s, day),
        "ix_sent_entries_edition ": lambda s: offered_papers(s, edition),
        "ix_entries_updated_at": papers_version,
    }
    for index, ask in asked.items():
        plans = statement_plans(engine, ask)
        assert any(index.strip() in plan for plan in plans), (index, plans)
        if engine.dialect.name == "sqlite":  # read whole, or every row of a status ever
            whole = [p for p in plans if any(f"SCAN {t}" in p for t in HISTORY)
                     or "ix_delivery_status_next_try (status=?)" in p]
            assert not whole, (index, whole)


def statement_plans(engine: Any, ask: Any) -> list[str]:
    """The database's plan, as text, for each statement ``ask(session)`` runs.
    PostgreSQL reads a small table whole whatever its indexes, so its plans are asked
    as if sequential scans were dear."""
    from sqlalchemy import event

    caught: list[tuple[str, Any]] = []

    def catch(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        caught.append((statement, params))

    event.listen(engine, "before_cursor_execute", catch)
    try:
        with session_scope(engine) as s:
            ask(s)
    finally:
        event.remove(engine, "before_cursor_execute", catch)
    plans = []
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        cursor = raw.cursor()
        if engine.dialect.name != "sqlite":
            cursor.execute("SET enable_seqscan = off")
        for statement, params in caught:
            if not statement.lstrip().upper().startswith("SELECT"):
                continue
            prefix = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
            cursor.execute(prefix + statement, params)
            plans.append(" ".join(map(str, cursor.fetchall())))
        cursor.close()
        conn.rollback()
    return plans


def test_ingest_upserts_across_sources_and_versions(db_url: str) -> None:
    engine = get_engine(db_url)
    s = settings_for(db_url)
    with session_scope(engine) as session:
        report = ingest(s.sources, session, [str(PAYLOADS / "dailypapers.json")])
    assert report.new == 3
    with session_scope(engine) as session:
        # The same paper again from the arXiv API (v2) and the listing (v3): one entry.
        ingest(s.sources, session,
               [str(PAYLOADS / "arxiv_api.atom"), str(PAYLOADS / "arxiv_listing.rss")])
    with session_scope(engine) as session:
        entry = session.get(Entry, "2508.13426")
        assert entry is not None
        assert entry.version == 3
        assert entry.abstract == "Version three of the selective state space model paper."
        assert entry.upvotes == 42  # the listing knows no upvotes: kept, not zeroed
        assert entry.code_url == "https://github.com/example/mamba-vision"
        n = session.scalar(select(func.count()).select_from(Entry).where(Entry.id == "2508.13426"))
        assert n == 1
        assert session.scalar(select(func.count()).select_from(Entry)) == 6


def test_a_paper_retitled_by_a_new_version_is_found_by_either_title(db_url: str) -> None:
    """A new version may change a paper's title. A source that lists the paper without
    its arXiv id (a page dump) under the old title, or the new one, finds the same
    entry: before, the old title found nothing once v2 was stored, the paper was stored
    a second time and readers were sent it twice."""
    engine = get_engine(db_url)
    v1 = ('[{"id": "2612.00001", "version": 1, "title": "Give Me FP32 or Give Me Death",'
          ' "abstract": "Reproducible reasoning."}]')
    v2 = ('[{"id": "2612.00001", "version": 2, "title": "Numerical Nondeterminism in LLMs",'
          ' "abstract": "v2: reproducible reasoning."}]')
    dump = '[{"title": "%s", "abstract": "Reproducible reasoning.", "upvotes": 40}]'
    with session_scope(engine) as session:
        assert upsert_papers(session, parse_text(v1, "api")).new == 1
    with session_scope(engine) as session:
        assert upsert_papers(session, parse_text(v2, "api")) == (0, 1, 0, 0)
    for title in ("Give Me FP32 or Give Me Death", "Numerical Nondeterminism in LLMs"):
        with session_scope(engine) as session:
            stored = upsert_papers(session, parse_text(dump % title, "page dump"))
            assert stored.new == 0, title
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(Entry)) == 1
        entry = session.get(Entry, "2612.00001")
        assert entry is not None and entry.upvotes == 40 and entry.version == 2
        assert entry.title == "Numerical Nondeterminism in LLMs"
    # another arXiv paper under that old title is another paper, stored as such
    other = ('[{"id": "2612.09999", "version": 1, "title": "Give Me FP32 or Give Me Death",'
             ' "abstract": "Something else."}]')
    with session_scope(engine) as session:
        assert upsert_papers(session, parse_text(other, "api")).new == 1
        assert session.scalar(select(func.count()).select_from(Entry)) == 2


def test_an_older_version_seen_after_the_newer_one_teaches_its_title(db_url: str) -> None:
    """v2 (new title) stored first, v1 (old title) after it from a late source: a page
    dump that lists the old title without an id then finds the same paper."""
    engine = get_engine(db_url)
    v2 = '[{"id": "2612.00002", "version": 2, "title": "New Title", "abstract": "v2."}]'
    v1 = '[{"id": "2612.00002", "version": 1, "title": "Old Title", "abstract": "v1."}]'
    for text in (v2, v1, '[{"title": "Old Title", "abstract": "v1.", "upvotes": 7}]'):
        with session_scope(engine) as session:
            upsert_papers(session, parse_text(text, "some source"))
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(Entry)) == 1
        entry = session.get(Entry, "2612.00002")
        assert entry is not None and entry.title == "New Title" and entry.upvotes == 7


def test_refreshed_upvotes(db_url: str) -> None:
    engine = get_engine(db_url)
    text = '[{"paper": {"id": "2401.00001", "title": "T", "upvotes": %d}}]'
    with session_scope(engine) as session:
        upsert_papers(session, parse_text(text % 3, "a"))
    with session_scope(engine) as session:
        new, updated, unchanged, _ = upsert_papers(session, parse_text(text % 30, "b"))
    assert (new, updated, unchanged) == (0, 1, 0)
    with session_scope(engine) as session:
        assert session.get(Entry, "2401.00001").upvotes == 30  # type: ignore[union-attr]


def test_a_bad_source_stores_nothing(db_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = get_engine(db_url)
    bad = tmp_path / "bad.json"
    bad.write_text('[{"title": "fine"}, {"title": ')
    with pytest.raises(SourceError), session_scope(engine) as session:
        ingest(settings_for(db_url).sources, session,
               [str(PAYLOADS / "dailypapers.json"), str(bad)])
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(Entry)) == 0


def test_whole_seed_corpus_dedups(db_url: str) -> None:
    engine = get_engine(db_url)
    with session_scope(engine) as session:
        report = ingest(settings_for(db_url).sources, session,
                        [str(p) for p in sorted(SEEDS.glob("*"))])
    assert report.total == 308
    assert report.new < 308  # papers listed on several pages are stored once
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(Entry)) == report.new


def test_ledger_uniqueness_is_enforced_by_the_database(db_url: str) -> None:
    engine = get_engine(db_url)
    with session_scope(engine) as session:
        sub = subscribers.add(session, "a@example.org", keywords="x")
        ed = Edition(day=dt.date(2025, 8, 19))
        session.add(ed)
        session.flush()
        session.add(Delivery(edition_id=ed.id, subscriber_id=sub.id))
    with pytest.raises(IntegrityError), session_scope(engine) as session:
        session.add(Delivery(edition_id=ed.id, subscriber_id=sub.id))
    with pytest.raises(IntegrityError), session_scope(engine) as session:
        session.add(Edition(day=dt.date(2025, 8, 19)))


def test_subscriber_add_validates_and_refuses_duplicates(db_url: str) -> None:
    engine = get_engine(db_url)
    with session_scope(engine) as session:
        sub = subscribers.add(session, "  Ada@Example.ORG ", keywords="diffusion^2, -medical",
                              tz="Europe/Paris", hour=6)
        assert (sub.email, sub.status, sub.tz, sub.send_hour) == (
            "ada@example.org", "active", "Europe/Paris", 6)
    for kwargs, fragment in [
        ({"email": "ada@example.org"}, "already subscribed"),
        ({"email": "not-an-address"}, "invalid email address"),
        ({"email": "b@example.org", "keywords": "x", "tz": "Mars/Olympus"},
         "unknown time zone"),
        ({"email": "b@example.org", "keywords": "x", "hour": 24}, "send hour"),
        ({"email": "b@example.org", "keywords": "x^-1"}, "weight"),
        ({"email": "b@example.org", "keywords": "  "}, "empty keyword profile"),
    ]:
        with pytest.raises(InputError, match=fragment), session_scope(engine) as session:
            subscribers.add(session, **kwargs)  # type: ignore[arg-type]
    with session_scope(engine) as session:
        assert subscribers.count(session) == 1


@pytest.mark.slow  # ~10 s: 100,000 rows
def test_import_100k_rows_in_one_transaction(db_url: str) -> None:
    engine = get_engine(db_url)
    lines = ["email,name,keywords,tz,hour"]
    lines += [f"user{i}@example.org,User {i},\"diffusion, GNN\",UTC,{i % 24}"
              for i in range(100_000)]
    lines.append("user5@example.org,Dup,,UTC,7")
    data = ("\n".join(lines) + "\n").encode()
    with session_scope(engine) as session:
        report = subscribers.import_csv(session, data, "subs.csv")
    assert report.added == 100_000
    assert report.duplicates == [(100_002, "user5@example.org")]
    with session_scope(engine) as session:
        assert subscribers.count(session) == 100_000
        sub = session.scalar(select(Subscriber).where(Subscriber.email == "user25@example.org"))
        assert sub is not None and sub.send_hour == 1 and sub.status == "active"


def test_import_bad_row_names_line_and_stores_nothing(db_url: str) -> None:
    engine = get_engine(db_url)
    data = b"email,name\nok@example.org,A\nbroken@@example,B\n"
    with pytest.raises(InputError, match=r"^subs.csv:3: invalid email address"), \
            session_scope(engine) as session:
        subscribers.import_csv(session, data, "subs.csv")
    with session_scope(engine) as session:
        assert subscribers.count(session) == 0


def dump_paper(title: str, upvotes: int) -> str:
    return (f"Dec 26\n\n{title}\n\nAn abstract about it.\n\n  • 3 authors\n·\n"
            f"Aug 5, 2024 {upvotes}\n")


def api_paper(title: str, upvotes: int) -> str:
    import json

    return json.dumps([{"paper": {"id": "2408.01234v2", "title": title, "upvotes": upvotes,
                                  "githubRepo": "https://github.com/x/y"}}])


@pytest.mark.parametrize("order", ["dump first", "api first", "one ingest"])
def test_same_paper_with_and_without_an_arxiv_id_is_one_entry(
        db_url: str, tmp_path, order: str) -> None:  # type: ignore[no-untyped-def]
    engine = get_engine(db_url)
    (tmp_path / "page.txt").write_text(dump_paper("Sparse Experts, Dense Gains", 3))
    (tmp_path / "api.json").write_text(api_paper("Sparse experts: dense gains!", 40))
    files = [str(tmp_path / "page.txt"), str(tmp_path / "api.json")]
    runs = {"dump first": [files[:1], files[1:]], "api first": [files[1:], files[:1]],
            "one ingest": [files]}[order]
    for batch in runs:
        with session_scope(engine) as session:
            ingest(settings_for(db_url).sources, session, batch)
    with session_scope(engine) as session:
        [entry] = list(session.scalars(select(Entry)))
        assert entry.arxiv_id == "2408.01234"
        assert entry.code_url == "https://github.com/x/y"
        assert entry.published == dt.date(2024, 8, 5)
        assert entry.upvotes == (3 if order == "api first" else 40)  # the latest sighting


def test_migration_backfills_the_lookup_keys(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from alembic import command
    from sqlalchemy import text

    from newsletter.ingest.papers import title_id
    from newsletter.store.db import _alembic_config, make_engine

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    command.upgrade(_alembic_config(engine), "0002")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO entries (id, title, abstract, authors, upvotes, url, "
                          "code_url, project_url, keywords, version, source, arrived_at, "
                          "updated_at) VALUES ('2401.00001', 'Old Paper', '', '[]', 0, '', '', "
                          "'', '[]', 0, '', '2025-01-01', '2025-01-01')"))
    get_engine(url)  # opens and migrates to the newest schema
    with session_scope(get_engine(url)) as s:
        e = s.get(Entry, "2401.00001")
        assert e is not None and e.arxiv_id == "2401.00001"
        assert e.title_key == title_id("Old Paper")


def test_the_newest_schema_read_without_alembic_is_alembics_own() -> None:
    """Every command checks the schema against the head read from the migration files'
    ``revision`` lines; Alembic's script directory must name the same head."""
    from alembic.script import ScriptDirectory

    from newsletter.store.db import _alembic_config, head_revisions

    heads = ScriptDirectory.from_config(_alembic_config(None)).get_heads()
    assert head_revisions() == frozenset(heads)


def test_an_old_or_missing_schema_is_told_apart_and_preview_refuses_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``newsletter check`` and ``preview`` say which: never migrated, migrations to apply
    (preview names `db upgrade` and changes nothing), or current; a command upgrades."""
    from alembic import command
    from sqlalchemy import text

    from newsletter.delivery.preview import require_database
    from newsletter.store.db import _alembic_config, make_engine, schema_state, upgrade

    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    assert schema_state(engine) == "missing"
    with pytest.raises(InputError, match="^no database yet: ingest papers"):
        require_database(engine)
    command.upgrade(_alembic_config(engine), "0009")
    assert schema_state(engine) == "old"
    with pytest.raises(InputError, match=r"^the database schema is old: run `newsletter db "
                       r"upgrade` first$"):
        require_database(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0009"
    upgrade(engine)
    assert schema_state(engine) == "current"
    require_database(engine)
    engine.dispose()


@functools.cache
def _migration(name: str) -> Any:
    """A migration module loaded from its file (its folder is no package)."""
    path = ROOT / "newsletter" / "store" / "migrations" / "versions" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"migration_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_the_migrations_frozen_title_key_is_the_live_one(title: str) -> None:
    """Migration 0003 keys stored titles with a frozen copy of ``title_id``: while they
    agree, old keys and new ones find each other; a change to the live key fails here,
    because the stored keys then need a migration of their own."""
    from newsletter.ingest.papers import title_id

    assert _migration("0003_entry_aliases").title_id(title) == title_id(title)


def _import_outcome(tmp_path, name: str, data: bytes, batch: int,  # type: ignore[no-untyped-def]
                    monkeypatch: pytest.MonkeyPatch) -> tuple[object, list[tuple[str, str]]]:
    """Import ``data`` into a fresh SQLite database (two addresses erased beforehand)
    with ``batch`` rows per INSERT: the report (or the error) and what was stored."""
    from newsletter.store.lifecycle import erase

    monkeypatch.setattr(subscribers, "IMPORT_BATCH", batch)
    engine = get_engine(f"sqlite:///{tmp_path / name}")
    with session_scope(engine) as s:
        for address in ("gone1@example.org", "gone7@example.org"):
            erase(s, subscribers.add(s, address, keywords="erased"), by="cli")
    outcome: object
    try:
        with session_scope(engine) as s:
            r = subscribers.import_csv(s, data, "subs.csv")
            outcome = (r.added, r.duplicates, r.suppressed)
    except InputError as exc:
        outcome = str(exc)
    with session_scope(engine) as s:
        stored = sorted((sub.email, sub.keywords) for sub in s.scalars(select(Subscriber)))
    engine.dispose()
    return outcome, stored


@pytest.mark.parametrize("seed", range(6))
def test_import_in_batches_stores_and_reports_as_one_whole(  # type: ignore[no-untyped-def]
        tmp_path, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows written batch by batch as they are checked: the same report and the same
    rows as one insert at the end, whatever mix of good, bad, duplicate and erased rows
    and wherever they fall (a bad row after whole batches were written still stores
    nothing)."""
    import random

    rng = random.Random(seed)
    lines = ["email,name,keywords,tz,hour"]
    for i in range(rng.randint(1, 40)):
        kind = rng.choices(["good", "dup", "bad", "erased"], [20, 3, 1 if seed % 2 else 0, 2])[0]
        if kind == "good":
            lines.append(f"u{i}@example.org,U {i},\"topic {i % 5}\",UTC,{i % 24}")
        elif kind == "dup":
            lines.append(f"u{rng.randint(0, max(0, i - 1))}@example.org,Dup,,UTC,1")
        elif kind == "bad":
            lines.append(f"broken{i}@@example,B,,UTC,1")
        else:
            lines.append(f"gone{rng.choice([1, 7])}@example.org,G,,UTC,1")
    data = ("\n".join(lines) + "\n").encode()
    small = _import_outcome(tmp_path, "small.db", data, 3, monkeypatch)
    whole = _import_outcome(tmp_path, "whole.db", data, 10_000, monkeypatch)
    assert small == whole
    if isinstance(whole[0], str):  # a bad row: nothing but the two erased people's rows
        assert len(whole[1]) == 0 or all(e.startswith("gone") for e, _ in whole[1])


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from(['a', ',', '"', "\n", "\r", "é", " ", "\t"]),
               max_size=60))
def test_import_lines_split_as_the_csv_module_reads_a_file(text: str) -> None:
    """The import reads the CSV line by line out of the decoded text (no second copy of
    the file); the csv module must see exactly what it sees reading it as a file."""
    import csv
    import io

    from newsletter.store.subscribers import _lines

    def parsed(source):  # type: ignore[no-untyped-def]
        try:
            return ["ok", list(csv.reader(source))]
        except csv.Error as exc:
            return ["error", str(exc)]

    assert parsed(_lines(text)) == parsed(io.StringIO(text))


def test_an_sqlite_library_too_old_for_the_ledger_is_named_before_anything_is_written(
        cli, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A Python whose sqlite3 module is older than the ledger's statements need gets one
    line naming the version (and the way out) before a database file is made, instead
    of SQLite's "syntax error" when the first edition is planned."""
    import sqlite3

    from newsletter.store import db

    db._sqlite_checked.cache_clear()
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 31, 1))
    try:
        r = cli("subscribers", "add", "ada@example.org", "--keywords", "diffusion")
    finally:
        db._sqlite_checked.cache_clear()  # the next test checks the real library again
    assert r.code == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert "[database] url: SQLite 3.35 or newer is needed" in lines[0]
    assert "3.31.1" in lines[0] and "newer SQLite library" in lines[0]
    assert "PostgreSQL" in lines[0]
    assert not list(tmp_path.glob("*.db*"))  # nothing made, nothing half-written


def test_sqlite_problem_names_what_is_missing() -> None:
    from newsletter.store.db import sqlite_problem

    assert sqlite_problem((3, 35, 0), True) is None
    assert sqlite_problem((3, 40, 1), True) is None
    too_old = sqlite_problem((3, 34, 1), True)
    assert too_old is not None and "3.35 or newer" in too_old and "3.34.1" in too_old
    no_json = sqlite_problem((3, 37, 2), False)
    assert no_json is not None and "JSON functions" in no_json and "3.37.2" in no_json
    assert "built with them" in no_json


def test_the_sqlite_library_this_suite_runs_on_passes_the_check() -> None:
    """The check itself (version and JSON probe, uncached) on the real library: a
    probe that wrongly failed would stop every command on a good machine."""
    from newsletter.store import db

    db._sqlite_checked.__wrapped__()  # raises ConfigError when the library is refused
