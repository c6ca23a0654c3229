"""deploy/: the systemd units pass `systemd-analyze verify`, compose.yaml matches the
Compose Specification's JSON schema, and the commands they start really run: against
PostgreSQL and Redis, up, alive in `newsletter status`, serving metrics, and stopped
cleanly by SIGTERM within the units' TimeoutStopSec."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from .conftest import ROOT, free_port, need_service

DEPLOY = ROOT / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
BINARY = "/opt/newsletter/venv/bin/newsletter"
SCHEMA = Path(__file__).parent / "data" / "compose-spec" / "compose-spec.json"


def unit_keys(path: Path) -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            k, _, v = line.partition("=")
            keys.setdefault(k.strip(), []).append(v.strip())
    return keys


def test_every_service_has_a_unit_with_restart_and_a_graceful_stop() -> None:
    names = {u.name for u in UNITS}
    assert names == {"newsletter-web.service", "newsletter-scheduler.service",
                     "newsletter-worker@.service"}
    for unit in UNITS:
        keys = unit_keys(unit)
        assert keys["Restart"][0] in ("always", "on-failure"), unit.name
        # a configuration error exits 2: restarted every few seconds it only fills the
        # journal (and ran `db upgrade` each time)
        assert keys["RestartPreventExitStatus"] == ["2"], unit.name
        from newsletter.errors import ConfigError, Unreachable

        # ... and a server not there yet (a database restarting at boot) is restarted
        assert ConfigError.exit_code == 2 and Unreachable.exit_code != 2
        assert keys["Documentation"][0].endswith("docs/operations.md#running-in-production")
        assert keys["KillSignal"] == ["SIGTERM"], unit.name
        assert int(keys["TimeoutStopSec"][0]) >= 30, unit.name
        assert keys["ExecStart"][0].startswith(BINARY + " "), unit.name
        assert "--log-format json" in keys["ExecStart"][0], unit.name


@pytest.mark.slow  # an outside checker
def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        need_service("systemd-analyze", "install Debian's systemd package")
    real = shutil.which("newsletter") or sys.executable  # verify checks ExecStart exists
    for unit in UNITS:
        text = unit.read_text().replace(BINARY, real)
        name = unit.name.replace("@.service", "@1.service")
        (tmp_path / name).write_text(text)
    names = [f"./{p.name}" for p in sorted(tmp_path.glob("*.service"))]
    result = subprocess.run([str(tool), "verify", *names], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # unknown keys are only warnings
    # and it does catch a mistake
    (tmp_path / "broken.service").write_text("[Service]\nExecStart=/nonexistent/newsletter\n")
    bad = subprocess.run([str(tool), "verify", "./broken.service"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / "compose.yaml").read_text()))


def test_compose_file_matches_the_compose_specification() -> None:
    from jsonschema import Draft7Validator

    schema = json.loads(SCHEMA.read_text())
    validator = Draft7Validator(schema)
    doc = compose()
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(doc)]
    assert errors == []
    assert {"db", "redis", "migrate", "web", "scheduler", "worker"} <= set(doc["services"])
    assert doc["services"]["db"]["image"].startswith("postgres:")
    assert doc["services"]["redis"]["image"].startswith("redis:")
    # the schema is strict enough to catch a typo
    doc["services"]["web"]["restrat"] = "always"
    assert list(validator.iter_errors(doc))


@pytest.mark.slow  # ~4 s: a `newsletter` process per service
def test_compose_commands_are_real_commands() -> None:
    for name, service in compose()["services"].items():
        if "command" not in service or service.get("image", "").startswith(("postgres", "redis")):
            continue
        result = subprocess.run([sys.executable, "-m", "newsletter", *service["command"],
                                 "--help"], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, (name, result.stderr)


def exec_lines(unit: Path, key: str) -> list[list[str]]:
    return [shlex.split(v.replace("%i", "1")) for v in unit_keys(unit).get(key, [])]


def reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def units_env(pg_url: str) -> dict[str, str]:
    """The services' environment: PostgreSQL, the Redis broker (skipped without one,
    failed in CI), a heartbeat twice a second."""
    if not reachable(6379):
        need_service("redis", "nothing listens on 127.0.0.1:6379")
    return {**{k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")},
            "NEWSLETTER_DATABASE__URL": pg_url,
            "NEWSLETTER_QUEUE__BROKER_URL": "redis://127.0.0.1:6379/12",
            "NEWSLETTER_METRICS__HEARTBEAT_SECONDS": "0.5"}


def test_the_units_commands_run_and_stop_on_sigterm(pg_url: str, tmp_path: Path) -> None:
    env = units_env(pg_url)
    ports: dict[str, int] = {}

    def argv(words: list[str], unit: str) -> list[str]:
        """The unit's command line, with this machine's interpreter and free ports."""
        assert words[0] == BINARY
        out = [sys.executable, "-m", "newsletter"]
        it = iter(words[1:])
        for w in it:
            out.append(w)
            if w in ("--port", "--metrics-port"):
                ports[unit] = free_port()
                next(it)
                out.append(str(ports[unit]))
        return out

    procs: dict[str, subprocess.Popen[str]] = {}
    logs: dict[str, Path] = {}
    try:
        for unit in UNITS:
            for pre in exec_lines(unit, "ExecStartPre"):
                done = subprocess.run(argv(pre, unit.name), cwd=tmp_path, env=env,
                                      capture_output=True, text=True, timeout=120)
                assert done.returncode == 0, done.stderr
            (start,) = exec_lines(unit, "ExecStart")
            logs[unit.name] = tmp_path / f"{unit.name}.log"
            procs[unit.name] = subprocess.Popen(
                argv(start, unit.name), cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                stderr=logs[unit.name].open("w"), text=True)

        def status() -> dict[str, Any]:
            r = subprocess.run([sys.executable, "-m", "newsletter", "status", "--json"],
                               cwd=tmp_path, env=env, capture_output=True, text=True,
                               timeout=120)
            return json.loads(r.stdout) if r.returncode == 0 else {"processes": []}

        deadline = time.monotonic() + 90
        alive: set[str] = set()
        while time.monotonic() < deadline and alive != {"run", "worker"}:
            for name, p in procs.items():
                assert p.poll() is None, f"{name} exited:\n{logs[name].read_text()[-2000:]}"
            alive = {p["kind"] for p in status()["processes"] if p["alive"]}
            time.sleep(0.5)
        assert alive == {"run", "worker"}

        web = ports["newsletter-web.service"]
        deadline = time.monotonic() + 30
        while not reachable(web) and time.monotonic() < deadline:
            time.sleep(0.2)
        r = httpx.get(f"http://127.0.0.1:{web}/metrics", timeout=10)
        assert r.status_code == 200 and "newsletter_heartbeat_age_seconds" in r.text
        for unit in ("newsletter-scheduler.service", "newsletter-worker@.service"):
            r = httpx.get(f"http://127.0.0.1:{ports[unit]}/metrics", timeout=10)
            assert r.status_code == 200 and "newsletter_deliveries_total" in r.text
            assert re.search(r'newsletter_heartbeat_age_seconds\{kind="(run|worker)"', r.text)

        for unit in UNITS:  # a graceful stop, well within TimeoutStopSec
            p = procs[unit.name]
            p.send_signal(signal.SIGTERM)
            limit = int(unit_keys(unit)["TimeoutStopSec"][0])
            code = p.wait(timeout=min(limit, 60))
            # uvicorn finishes its shutdown, then re-raises SIGTERM (systemd counts a
            # SIGTERM death after KillSignal=SIGTERM as a clean stop)
            assert code in (0, -signal.SIGTERM), logs[unit.name].read_text()[-2000:]
            if code:
                assert "Finished server process" in logs[unit.name].read_text()
        states = {p["kind"]: p["state"] for p in status()["processes"]}
        assert states == {"run": "stopped", "worker": "stopped"}
        for unit in UNITS:  # --log-format json: every log line is one JSON object
            lines = [x for x in logs[unit.name].read_text().splitlines() if x.strip()]
            assert lines, unit.name
            not_json = [x for x in lines if not x.startswith("{")]
            assert not_json == [], unit.name
            assert all(isinstance(json.loads(x), dict) for x in lines)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


def test_a_worker_stopped_while_it_starts_stops_cleanly(pg_url: str, tmp_path: Path) -> None:
    """systemd may stop a worker in its first second: its heartbeat already says it is
    alive, Celery has not yet put in its own handlers. SIGTERM then ends it cleanly
    (exit 0, the heartbeat says stopped), not by the signal's default action."""
    from newsletter.observe.heartbeat import processes
    from newsletter.store.db import make_engine, upgrade

    env = units_env(pg_url)
    engine = make_engine(pg_url)
    upgrade(engine)
    p = subprocess.Popen([sys.executable, "-m", "newsletter", "worker"], cwd=tmp_path,
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True)
    try:
        deadline = time.monotonic() + 60
        while not any(q["alive"] for q in processes(engine)):
            assert p.poll() is None and time.monotonic() < deadline, (
                p.stderr.read() if p.stderr else "")
            time.sleep(0.01)
        p.send_signal(signal.SIGTERM)  # at once: before Celery is ready, here
        code = p.wait(timeout=60)
        assert code == 0, p.stderr.read() if p.stderr else ""
        assert {q["kind"]: q["state"] for q in processes(engine)} == {"worker": "stopped"}
    finally:
        engine.dispose()
        if p.poll() is None:
            p.kill()
            p.wait()


# A Celery worker told before it started that a stop came: it must end by itself once
# ready. Python drops an exception raised by a signal handler that runs inside a weakref
# callback ("Exception ignored in ..."), so the worker's early SIGTERM handler could not
# count on its SystemExit; seen as a worker that started and ran on after SIGTERM.
EARLY_STOP = """
import sys
from newsletter.config import QueueConfig
from newsletter.delivery.queue import make_celery
from newsletter.delivery.shutdown import Shutdown

early = Shutdown()
early.request()
app = make_celery(QueueConfig(broker_url=sys.argv[1], queue_name=sys.argv[2]),
                  lambda edition_id, stop: {}, Shutdown(), early=early)
app.worker_main(["worker", "--pool=solo", "--without-gossip", "--without-mingle",
                 "--without-heartbeat", "--loglevel=INFO", "--hostname=early-stop@%h"])
"""


def test_a_stop_caught_before_celery_started_ends_the_worker_once_ready(
        tmp_path: Path) -> None:
    if not reachable(6379):
        need_service("redis", "nothing listens on 127.0.0.1:6379")
    p = subprocess.Popen([sys.executable, "-c", EARLY_STOP, "redis://127.0.0.1:6379/12",
                          f"nl-early-{os.getpid()}"], cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 0, out
    assert " ready." in out, out  # it did start, and then stopped by itself
