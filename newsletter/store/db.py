"""Engine, sessions and migrations.

SQLite is the embedded default: WAL (readers never block the writer), foreign
keys on, a busy timeout, and ``BEGIN IMMEDIATE`` so two processes never both
hold a read lock they then try to upgrade (SQLite's classic deadlock). The same
models run unchanged on PostgreSQL via ``postgresql+psycopg://``.

Migrations are applied on first use, so every command works on a fresh
directory without a separate setup step.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Connection, Engine, create_engine, event, inspect, make_url, text
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from newsletter.errors import ConfigError, NewsletterError, Unreachable, first_line

MIGRATIONS = Path(__file__).parent / "migrations"
READONLY = "newsletter_readonly"
_engines: dict[str, Engine] = {}


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA synchronous=NORMAL")
        # Deleted and overwritten content is zeroed, not left in free space: an erased
        # subscriber's address and keywords must not stay readable in the file.
        cur.execute("PRAGMA secure_delete=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Writers take the lock up front (no read-then-upgrade deadlock); readers do not,
        # so a long read (streaming subscribers) never blocks the ledger's writes.
        readonly = conn.get_execution_options().get(READONLY, False)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


SQLITE_MIN = (3, 35)  # UPDATE ... FROM (3.33) and RETURNING (3.35), which the ledger writes


def sqlite_problem(version: tuple[int, ...], has_json: bool) -> str | None:
    """Why this SQLite library cannot hold the ledger, or None when it can, with the
    way out. The ledger's statements need ``UPDATE ... FROM``, ``RETURNING`` and the
    JSON functions (``json_each``). Without this check an older library (a
    distribution's SQLite 3.31, say) runs until the first edition is planned, then
    fails with SQLite's own "syntax error"."""
    have = ".".join(map(str, version))
    if version[:2] < SQLITE_MIN:
        return (f"SQLite {SQLITE_MIN[0]}.{SQLITE_MIN[1]} or newer is needed (the library "
                f"Python's sqlite3 module loads is {have}); install a newer SQLite library")
    if not has_json:
        return (f"SQLite's JSON functions are needed (the library Python's sqlite3 module "
                f"loads, {have}, was built without them); install an SQLite library built "
                "with them (3.38 and newer always are)")
    return None


@functools.cache
def _sqlite_checked() -> None:
    """The running SQLite library checked once per process (``sqlite_problem``)."""
    import sqlite3

    probe = sqlite3.connect(":memory:")
    try:
        probe.execute("SELECT value FROM json_each('[1]')").fetchall()
        has_json = True
    except sqlite3.OperationalError:
        has_json = False
    finally:
        probe.close()
    problem = sqlite_problem(sqlite3.sqlite_version_info, has_json)
    if problem:
        raise ConfigError(f"[database] url: {problem}, or use PostgreSQL "
                          "(postgresql+psycopg://...)")


def make_engine(url: str) -> Engine:
    """A new engine for ``url`` with the dialect-specific settings applied."""
    parse_url(url)  # one line (and no password) for a URL that does not parse
    try:
        if url.startswith("sqlite"):
            _sqlite_checked()  # (a ConfigError of its own, not caught below)
            engine = create_engine(url, connect_args={"timeout": 30})
            _sqlite_pragmas(engine)
        else:
            engine = create_engine(url, pool_pre_ping=True)
    except (ArgumentError, ImportError, ValueError) as exc:
        raise _cannot_use(url, exc) from None
    return engine


_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")


def parse_url(url: str) -> URL:
    """``url`` parsed, or the one-line ConfigError every command gives for it (the
    password, when one can be seen, replaced by ***: the line goes to logs)."""
    try:
        return make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise _cannot_use(url, exc) from None


def _cannot_use(url: str, exc: Exception) -> ConfigError:
    """The one line for a URL that cannot be used, its password (where one can be
    seen, in the URL or the reason) as ***."""
    hidden = [_PASSWORD.sub(r"\1***@", text) for text in (url, str(exc))]
    return ConfigError(f"[database] url: cannot use {hidden[0]!r}: {hidden[1]}")


# What a database server says when it is not there yet (or not any more), rather than
# refusing this configuration: starting, restarting, out of reach for a while.
_TRANSIENT = ("connection refused", "could not connect", "timeout", "timed out",
              "database is locked",
              "starting up", "shutting down", "no route to host", "network is unreachable",
              "server closed the connection", "too many clients", "connection reset",
              "temporary failure in name resolution", "in recovery mode")


def cannot_open(engine: Engine, exc: OperationalError) -> NewsletterError:
    """The one line for a database that does not answer: a ``ConfigError`` (exit 2)
    when it refuses this configuration (an unknown database, a wrong password, no
    file), ``Unreachable`` (exit 1: a service manager tries again) when the server is
    not there for now (refused, starting, timed out)."""
    reason = db_reason(exc)
    low = reason.lower()
    # (a PostgreSQL stopped, or not started yet, has no socket file: the boot case)
    gone = "on socket" in low and "no such file or directory" in low
    error = Unreachable if gone or any(t in low for t in _TRANSIENT) else ConfigError
    return error(f"[database] url: cannot open "
                 f"{engine.url.render_as_string(hide_password=True)}: {reason}")


def db_reason(exc: BaseException) -> str:
    """What the database itself said, as one line (not SQLAlchemy's wrapping of it)."""
    return first_line(getattr(exc, "orig", None) or exc)


def unwritable_fix(reason: str) -> str | None:
    """What to do about a SQLite file this user may not write (made by root, run as
    the service's user), from the database's ``reason``; None for any other reason."""
    if "readonly database" not in reason and "unable to open database file" not in reason:
        return None
    return writable_fix()


def writable_fix() -> str:
    """What to do about a SQLite file (or its folder, -wal or -shm) this user may not
    write."""
    import getpass

    return (f"the database file, its folder and its -wal and -shm files must be writable "
            f"by the user running newsletter ({getpass.getuser()}): run it as the user "
            "that owns them (runuser -u newsletter -- newsletter ...) or chown them")


def get_engine(url: str, *, migrate: bool = True) -> Engine:
    """The process-wide engine for ``url``, migrated to the newest schema."""
    engine = _engines.get(url)
    if engine is None:
        engine = make_engine(url)
        if migrate:
            upgrade(engine)
        _engines[url] = engine
    return engine


def dispose_all() -> None:
    """Forget cached engines (tests, and after ``fork``)."""
    for engine in _engines.values():
        engine.dispose()
    _engines.clear()


def _alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest migration (a no-op when it is there)."""
    try:
        state = schema_state(engine)
        if state == "current":
            return
        if state == "newer":
            raise newer_schema(engine)
        from alembic import command  # only when there is something to apply: ~70 ms

        command.upgrade(_alembic_config(engine), "head")
    except OperationalError as exc:
        raise cannot_open(engine, exc) from None


def schema_state(engine: Engine) -> str:
    """``current``, ``missing`` (never migrated), ``old`` (migrations to apply) or
    ``newer`` (migrated by a later newsletter than this one: a wheel rolled back, an
    old worker on another machine after an upgrade).

    Read from Alembic's version table and the migration files without importing
    Alembic, whose runtime (its dialect modules, every migration loaded as a module)
    costs every command about 70 ms of start-up for an answer that is nearly always
    "current"."""
    current = stored_revisions(engine)
    if current is None:
        return "missing"
    if current == head_revisions():
        return "current"
    return "newer" if current - known_revisions() else "old"


def stored_revisions(engine: Engine) -> set[str] | None:
    """The migrations the database records (Alembic's version table), None when it was
    never migrated. Read-only: on SQLite a plain connection takes the write lock (BEGIN
    IMMEDIATE), and every command asks this first, so a command waited out another's
    transaction."""
    with engine.execution_options(**{READONLY: True}).connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return {row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))}


def newer_schema(engine: Engine) -> ConfigError:
    """The one line for a database migrated past this version (Alembic said "Can't
    locate revision" with a traceback, and `check` advised `db upgrade`, which did the
    same)."""
    from newsletter import __version__

    found = sorted(stored_revisions(engine) or ())
    shown = engine.url.render_as_string(hide_password=True)
    return ConfigError(
        f"[database] url: {shown}: its schema ({', '.join(found)}) is newer than this "
        f"newsletter {__version__} knows ({', '.join(sorted(head_revisions()))})",
        "run the newsletter version that upgraded it (`newsletter --version` where it "
        "runs), or restore the backup taken before that upgrade")


_REVISION_LINE = re.compile(r"^(revision|down_revision)\s*(?::[^=\n]*)?=\s*(.+?)\s*$", re.M)


@functools.cache
def head_revisions() -> frozenset[str]:
    """The newest migrations: the revisions no other migration names as its
    ``down_revision``, read from the files' own ``revision``/``down_revision`` lines
    (the one record of the chain, the same Alembic reads; a test holds the two equal)."""
    revisions, parents = _chain()
    return frozenset(revisions - parents)


def known_revisions() -> frozenset[str]:
    """Every migration this version has."""
    return frozenset(_chain()[0])


@functools.cache
def _chain() -> tuple[frozenset[str], frozenset[str]]:
    """(every revision, every revision named as a ``down_revision``)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        if path.name.startswith(("__init__", ".#")):
            continue
        found = {key: ast.literal_eval(value)
                 for key, value in _REVISION_LINE.findall(path.read_text(encoding="utf-8"))}
        if "revision" not in found:
            continue
        revisions.add(found["revision"])
        down = found.get("down_revision")
        parents.update((down,) if isinstance(down, str) else down or ())
    return frozenset(revisions), frozenset(parents)


def checkpoint(engine: Engine, attempts: int = 5) -> bool:
    """SQLite: copy the write-ahead log into the database file and empty it
    (``wal_checkpoint(TRUNCATE)``), so the page images it holds (an erased subscriber's
    rows as they were) leave the disk. A reader in the middle of a transaction keeps
    the log busy; tried a few times. True when the log is empty (always elsewhere)."""
    if engine.dialect.name != "sqlite":
        return True
    for attempt in range(attempts):
        with engine.connect() as conn:
            raw = conn.connection.driver_connection
            assert raw is not None
            busy = raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        if not busy:
            return True
        time.sleep(0.05 * (attempt + 1))
    return False


@contextmanager
def connection_scope(engine: Engine, *, readonly: bool = False) -> Iterator[Connection]:
    """One transaction on a plain connection, as ``session_scope`` makes one (the same
    BEGIN, commit on success, roll back on any error), without an ORM session: for
    statements only, run thousands of times an edition. The delivery ledger's claims
    and records run in threads beside the sending loop, and a session's bookkeeping
    (its states, the ORM's handling of each statement) was half of their CPU, taken
    from that loop (the GIL)."""
    bind = engine.execution_options(**{READONLY: True}) if readonly else engine
    with bind.connect() as conn, conn.begin() as tx:
        yield conn
        if readonly:
            tx.rollback()


# PostgreSQL's advisory lock key for the papers' clock (any constant of our own)
PAPERS_CLOCK = 0x6E6C7061
# ... the count of sign-ups ([web] signups_per_hour, signups_per_client_per_hour)
SIGN_UP_COUNT = 0x6E6C7363
# ... and the space of one address's sign-ups (the two-key form: the second key is the
# address's hash), apart from the one-key locks above
SIGN_UP_ADDRESS = 0x6E6C7361


def hold_papers_clock(session: Session, *, exclusive: bool) -> None:
    """Hold the papers' clock until ``session``'s transaction ends, before taking a time
    that editions compare papers' arrivals with. An ingest stamps its papers'
    ``arrived_at`` when it starts storing them and commits later; an edition's cutoff
    taken in between (PostgreSQL lets it) lay after papers nobody could see yet, which
    then fell before every later window: lost for every reader. Ingests hold it shared
    (they may store side by side); a cutoff holds it alone, so it waits for the
    ingests storing to commit, and an ingest that starts after it stamps a later time.
    On SQLite a transaction that writes holds the one write lock from its first
    statement (``BEGIN IMMEDIATE``), which this makes."""
    _hold(session, PAPERS_CLOCK, shared=not exclusive)


def hold_address(session: Session, address: str) -> None:
    """Hold ``address``'s sign-ups until ``session``'s transaction ends, before reading
    its row and counting the confirmations it was sent. On PostgreSQL (READ COMMITTED)
    two sign-ups of one address at once both counted no confirmation before either
    committed, and both sent one; a row lock (``FOR UPDATE``) cannot do it, as a new
    address has no row yet, and its racers failed on the duplicate row instead. Two
    addresses whose hashes meet only wait for each other. On SQLite a transaction that
    writes holds the one write lock from its first statement (``BEGIN IMMEDIATE``),
    which this makes."""
    key = int.from_bytes(hashlib.sha256(address.encode()).digest()[:4], "big", signed=True)
    _hold(session, SIGN_UP_ADDRESS, key)


def hold_sign_up_count(session: Session) -> None:
    """Hold the count of sign-ups (all clients' and each client's) until ``session``'s
    transaction ends, before counting them: posts at once in several processes would
    each find the last slot free. One lock for both counts, as every post reads the
    all-clients one anyway. On SQLite ``BEGIN IMMEDIATE`` does it (``hold_address``)."""
    _hold(session, SIGN_UP_COUNT)


def _hold(session: Session, *keys: int, shared: bool = False) -> None:
    """A transaction advisory lock on PostgreSQL, released as ``session``'s transaction
    ends: one 64-bit key, or a space and a key of 32 bits each (a lock space of its own,
    apart from the one-key locks). On SQLite the transaction's first statement, which
    takes the one write lock (``BEGIN IMMEDIATE``) and so holds everything at once."""
    if session.get_bind().dialect.name != "postgresql":
        session.execute(text("SELECT 1"))
        return
    lock = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    if len(keys) == 1:
        session.execute(text(f"SELECT {lock}(:key)"), {"key": keys[0]})
    else:
        space, key = keys
        session.execute(text(f"SELECT {lock}(CAST(:space AS integer), CAST(:key AS integer))"),
                        {"space": space, "key": key})


@contextmanager
def session_scope(engine: Engine, *, readonly: bool = False) -> Iterator[Session]:
    """One transaction: commit on success, roll back everything on any error.

    ``readonly`` sessions do not take SQLite's write lock (and are rolled back).
    """
    bind = engine.execution_options(**{READONLY: True}) if readonly else engine
    factory = sessionmaker(bind, expire_on_commit=False)
    with factory() as session:
        if readonly:
            try:
                yield session
            finally:
                session.expunge_all()  # keep what was read usable after the rollback
                session.rollback()
            return
        with session.begin():
            yield session
