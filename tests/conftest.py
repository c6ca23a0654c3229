"""Shared fixtures: real databases, a real HTTP server, and a CLI runner.

Services that the machine provides (PostgreSQL) are used when reachable; when
not, their tests skip with the reason, except under CI=true, where a skip would
hide a missing service and so fails instead.

The fast tier (``python -m pytest -m "not slow"``) is decided here, by what a test
uses, not by hand: see ``pytest_collection_modifyitems``.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from sqlalchemy import Engine

from newsletter.config import Settings

ROOT = Path(__file__).resolve().parent.parent
PAYLOADS = Path(__file__).parent / "payloads"
SEEDS = PAYLOADS / "seeds"  # copies of the page dumps in shared/seeds
PG_ADMIN = os.environ.get("NEWSLETTER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def need_service(name: str, reason: str) -> None:
    """Skip with ``reason``, or fail under CI where every service must be present."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{name} is required in CI: {reason}")
    pytest.skip(f"{name} unavailable: {reason}")


# ---- the fast tier -----------------------------------------------------------------

# A test that uses any of these fixtures (directly or through another fixture) needs a
# server or a browser, so it is slow. Names of fixtures that do not exist yet are here on
# purpose: a test written against them is slow the day it lands.
SLOW_FIXTURES = frozenset({
    # PostgreSQL
    "pg_server", "pg_url",
    # chromium (Playwright)
    "browser", "playwright", "browser_type", "chromium",
    # brokers and Celery (celery.contrib.pytest's names included)
    "redis_url", "rabbitmq_url", "broker_url", "celery_app", "celery_worker",
    "celery_session_app", "celery_session_worker",
    # real mail and name servers (tests/real_servers.py; its https server is Python's)
    "postfix", "dovecot", "mail_servers", "dns_server", "dns_server_session", "smtp_sink_c",
})
# Parametrized fixtures whose named params need a server: db_url's "postgresql" asks
# for pg_url only when it runs (getfixturevalue), so the fixture closure cannot show it.
SLOW_PARAMS = {"db_url": frozenset({"postgresql"})}
SLOW_MARKERS = ("browser", "postgres")


def is_slow(item: pytest.Item) -> bool:
    """Whether a collected test needs a server, a browser or an outside tool."""
    if any(item.get_closest_marker(m) for m in ("slow", *SLOW_MARKERS)):
        return True
    if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
        return True
    params = getattr(getattr(item, "callspec", None), "params", {})
    return any(params.get(name) in values for name, values in SLOW_PARAMS.items())


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if is_slow(item) and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)


def sent_before_arriving(url: str) -> list[tuple[Any, ...]]:
    """Papers an edition sent that arrived after its cutoff: none may exist. Reading
    who already had a paper (``queries.sent_map``) looks only at editions whose cutoff
    is at or after the paper's arrival, so each database made through the
    ``sqlite_url``, ``pg_url`` and ``db_url`` fixtures (``world``'s too) is checked for it
    when its test ends (where the schema is there)."""
    from sqlalchemy import create_engine, inspect, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool)
    try:
        if not {"sent_entries", "editions", "entries"} <= set(inspect(engine).get_table_names()):
            return []
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(
                "SELECT se.entry_id, se.edition_id, e.arrived_at, ed.cutoff "
                "FROM sent_entries se JOIN entries e ON e.id = se.entry_id "
                "JOIN editions ed ON ed.id = se.edition_id WHERE e.arrived_at > ed.cutoff"))]
    finally:
        engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'subscribers.db'}"
    yield url
    if (tmp_path / "subscribers.db").exists():
        assert sent_before_arriving(url) == [], "an edition sent a paper after its cutoff"


@pytest.fixture(scope="session")
def pg_server() -> str:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            pass
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        need_service("PostgreSQL", f"{PG_ADMIN}: {exc}".splitlines()[0])
    return PG_ADMIN


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    import psycopg

    name = f"nl_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    yield url
    from newsletter.store.db import dispose_all

    dispose_all()
    try:
        late = sent_before_arriving(url)
    finally:
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    assert late == [], "an edition sent a paper after its cutoff"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Both storage back ends: every test using this runs on SQLite and PostgreSQL."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("pg_url"))


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class HttpServer:
    """A real HTTP server on 127.0.0.1. Each path answers from a queue of Routes
    (the last one repeats), and every request is recorded."""

    url: str
    routes: dict[str, list[Route]] = field(default_factory=dict)
    requests: list[dict[str, object]] = field(default_factory=list)

    def add(self, path: str, *routes: Route) -> str:
        self.routes[path] = list(routes)
        return self.url + path


@pytest.fixture
def http_server() -> Iterator[HttpServer]:
    import time

    state = HttpServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            path = self.path.split("?")[0]
            state.requests.append({"method": self.command, "path": self.path,
                                   "headers": dict(self.headers), "body": body})
            queue = state.routes.get(path)
            if not queue:
                self.send_response(404)
                self.end_headers()
                return
            route = queue.pop(0) if len(queue) > 1 else queue[0]
            if route.delay:
                time.sleep(route.delay)
            self.send_response(route.status)
            for k, v in route.headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(route.body)))
            self.end_headers()
            self.wfile.write(route.body)

        do_GET = do_POST = _serve

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


CliRun = Callable[..., Result]


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    return exc.code if isinstance(exc.code, int) else 1


@pytest.fixture
def cli(tmp_path: Path) -> CliRun:
    """Run ``newsletter`` in this process, as the console entry point does, in
    ``tmp_path`` (no config file there) with a clean ``NEWSLETTER_*`` environment.
    Where the process boundary is the point (signals, kill -9, workers, servers),
    tests use ``cli_process`` instead."""
    from click.testing import CliRunner

    from newsletter import cli as cli_mod
    from newsletter.store.db import dispose_all

    def run(*args: str, env: dict[str, str] | None = None, input: str | None = None,
            cwd: Path | None = None) -> Result:
        overrides: dict[str, str | None] = {
            k: None for k in os.environ if k.startswith("NEWSLETTER_")}
        overrides.update(env or {})
        old_cwd, old_argv = os.getcwd(), sys.argv
        root = logging.getLogger()  # commands configure logging; a process would forget it
        old_handlers, old_level = list(root.handlers), root.level
        os.chdir(cwd or tmp_path)
        sys.argv = ["newsletter", *args]
        try:
            with CliRunner().isolation(input=input, env=overrides) as (out, err, _):
                try:
                    cli_mod.main()
                    code = 0
                except SystemExit as exc:
                    code = _exit_code(exc)
                sys.stdout.flush()
                sys.stderr.flush()
                stdout = out.getvalue().decode("utf-8", "replace")
                stderr = err.getvalue().decode("utf-8", "replace")
        finally:
            dispose_all()  # engines are cached by URL; a relative SQLite URL moves with cwd
            root.handlers[:] = old_handlers
            root.setLevel(old_level)
            logging.captureWarnings(False)
            os.chdir(old_cwd)
            sys.argv = old_argv
        return Result(code, stdout, stderr)

    return run


@pytest.fixture
def cli_process(tmp_path: Path) -> CliRun:
    """Run ``newsletter`` as a real process in ``tmp_path`` (no config file there)."""

    def run(*args: str, env: dict[str, str] | None = None, input: str | None = None,
            cwd: Path | None = None) -> Result:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
        full_env.update(env or {})
        proc = subprocess.run(
            [sys.executable, "-m", "newsletter", *args],
            cwd=cwd or tmp_path, env=full_env, capture_output=True, text=True, input=input,
            timeout=300,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return run


# ---- a small world for rendering and sending ---------------------------------------


def sample_paper_rows() -> list[dict[str, object]]:
    import json

    path = ROOT / "newsletter" / "data" / "sample_papers.json"
    return json.loads(path.read_text())


class World(NamedTuple):
    """The settings and engine of a database holding the sample papers and subscribers."""

    settings: Settings
    engine: Engine


@pytest.fixture(scope="session")
def world_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample papers and subscribers ingested and imported once per session into
    a migrated SQLite file; each ``world`` starts from a copy of it (the migrations,
    ingest and import cost more than the copy, in the many tests that use a world)."""
    from newsletter.service.ingest import ingest
    from newsletter.store.db import make_engine, session_scope, upgrade
    from newsletter.store.subscribers import import_csv

    path = tmp_path_factory.mktemp("world") / "subscribers.db"
    url = f"sqlite:///{path}"
    engine = make_engine(url)  # not the process-wide cache: disposed below
    upgrade(engine)
    with session_scope(engine) as s:
        ingest(Settings().sources, s, [str(ROOT / "newsletter" / "data" / "sample_papers.json")])
    with session_scope(engine) as s:
        data = (ROOT / "newsletter" / "data" / "sample_subscribers.csv").read_bytes()
        import_csv(s, data, "sample_subscribers.csv")
    engine.dispose()
    return path


@pytest.fixture
def world(tmp_path: Path, sqlite_url: str, world_template: Path) -> World:
    """A SQLite database with the sample papers and subscribers, and its settings."""
    import sqlite3

    from newsletter.store.db import get_engine

    settings = Settings().replace(
        database={"url": sqlite_url}, outbox={"path": str(tmp_path / "outbox")},
        sender={"reply_to": "editor@example.org", "from_address": "digest@example.org"},
        web={"base_url": "https://digest.example.org"},
        transport={"backoff_seconds": 0.01},
    )
    # SQLite's backup API: a consistent copy whatever the template's journal holds
    with sqlite3.connect(world_template) as src, sqlite3.connect(
            tmp_path / "subscribers.db") as dst:
        src.backup(dst)
    src.close()
    dst.close()
    return World(settings, get_engine(sqlite_url))


# ---- a real SMTP server ------------------------------------------------------------


@dataclass
class SmtpSink:
    """aiosmtpd on 127.0.0.1. ``faults`` maps a recipient to SMTP replies to give it
    (consumed in order); ``random_faults`` sets a probability of 421/451, dropping the
    connection mid-DATA, or stalling. ``delay`` sleeps before accepting each message,
    and a message whose client disappears during that sleep is not stored.
    ``pipelining``: offer PIPELINING (RFC 2920) in the EHLO reply, as Postfix, Exim and
    the large mailbox providers do; the client then sends MAIL, RCPT and DATA at once.
    ``answer_after`` stores each message, then waits that long before answering its
    end (a slow content filter: the server has the message whatever the client does)."""

    host: str
    port: int
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    senders: dict[str, str] = field(default_factory=dict)  # recipient → MAIL FROM
    faults: dict[str, list[str]] = field(default_factory=dict)
    random_faults: float = 0.0
    seed: int = 0
    delay: float = 0.0
    dropped_after_accept: list[str] = field(default_factory=list)
    pipelining: bool = True
    answer_after: float = 0.0
    delaying: list[float] = field(default_factory=list)  # the delays of messages in one now
    # a recipient → replies to give at the end of its message (a content filter), in order
    data_faults: dict[str, list[str]] = field(default_factory=dict)

    def count(self, rcpt: str) -> int:
        return sum(1 for r, _ in self.messages if r == rcpt)

    def wait_for(self, n: int, timeout: float = 60) -> int:
        """Block until ``n`` messages arrived (or ``timeout``): how a test sends a
        signal to a process mid-edition. Returns how many arrived."""
        import time

        deadline = time.monotonic() + timeout
        while len(self.messages) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return len(self.messages)


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    import asyncio
    import random

    from aiosmtpd.controller import Controller

    sink = SmtpSink("127.0.0.1", 0)
    rng = random.Random(1234)

    class Handler:
        async def handle_EHLO(self, server, session, envelope, hostname, responses):  # type: ignore[no-untyped-def]
            session.host_name = hostname
            if sink.pipelining:
                responses.insert(-1, "250-PIPELINING")
            return responses

        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # type: ignore[no-untyped-def]
            queue = sink.faults.get(address)
            if queue:
                reply = queue.pop(0)
                if reply.startswith("5") or reply.startswith("4"):
                    return reply
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            rcpt = envelope.rcpt_tos[0]
            sink.senders[rcpt] = envelope.mail_from
            refusals = sink.data_faults.get(rcpt)
            if refusals:
                return refusals.pop(0)
            if sink.random_faults and rng.random() < sink.random_faults:
                kind = rng.choice(["421", "451", "drop", "stall", "drop-after"])
                if kind == "421":
                    return "421 4.3.2 Service shutting down"
                if kind == "451":
                    return "451 4.3.0 Try again later"
                if kind == "drop":
                    server.transport.close()
                    return "451 dropped"
                if kind == "stall":
                    await asyncio.sleep(3)
                    return "451 4.4.2 Timeout"
                # accept, store, then drop without replying: the one duplicate window
                sink.messages.append((rcpt, envelope.content))
                sink.dropped_after_accept.append(rcpt)
                server.transport.close()
                return "250 OK"
            if sink.delay:
                delay = sink.delay
                sink.delaying.append(delay)
                try:
                    await asyncio.sleep(delay)
                finally:
                    sink.delaying.remove(delay)
                if server.transport is None or server.transport.is_closing():
                    return "451 client gone"
            sink.messages.append((rcpt, envelope.content))
            if sink.answer_after:
                await asyncio.sleep(sink.answer_after)
            return "250 OK queued"

    sink.port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=sink.port)
    controller.start()
    yield sink
    controller.stop()


def ensure_chromium() -> str:
    """Debian's chromium (installed with apt-get when missing and root), never a
    downloaded browser."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium", "fonts-dejavu-core"],
                       env=env, capture_output=True, check=False)
        found = shutil.which("chromium")
    if not found:
        need_service("chromium", "Debian's chromium package is not installed")
    return str(found)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless chromium per test module, driven by Playwright."""
    path = ensure_chromium()
    from playwright.sync_api import sync_playwright

    from newsletter.render.screenshots import CHROMIUM_ARGS

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield b
        b.close()


# ---- real Postfix, Dovecot, DNS, smtp-sink and https servers (tests/real_servers.py) --

from tests.real_servers import (  # noqa: E402, F401 - fixtures, found by name
    dns_server,
    dns_server_session,
    dovecot,
    https_server,
    mail_servers,
    postfix,
    server_tls,
    servers_dir,
    smtp_sink_c,
)
