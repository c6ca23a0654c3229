"""Shared fixtures: real databases, a real HTTP server, and a CLI runner.

Services that the machine provides (PostgreSQL) are used when reachable; when
not, their tests skip with the reason, except under CI=true, where a skip would
hide a missing service and so fails instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAYLOADS = Path(__file__).parent / "payloads"
SEEDS = ROOT.parent / "shared" / "seeds"
PG_ADMIN = os.environ.get("NEWSLETTER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def need_service(name: str, reason: str) -> None:
    """Skip with ``reason``, or fail under CI where every service must be present."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{name} is required in CI: {reason}")
    pytest.skip(f"{name} unavailable: {reason}")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'subscribers.db'}"


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
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    from newsletter.db import dispose_all

    dispose_all()
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Both storage back ends: every test using this runs on SQLite and PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'subscribers.db'}"
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


@pytest.fixture
def cli(tmp_path: Path):  # type: ignore[no-untyped-def]
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
