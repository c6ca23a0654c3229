"""Link-signing keys and their rotation guard, as an operator meets them: a key set
in the environment before the first `db upgrade` is accepted (the key the database
was made with never signed anything), a key that signed links cannot be dropped by
accident (`send`, `run`, `web` refuse in one line; `check` shows a ✗ with the fix),
and keeping the old key after the new one, or retiring it by fingerprint, is fine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from sqlalchemy import text

from newsletter.store.key_use import fingerprint

from .conftest import ROOT, free_port

PAPERS = str(ROOT / "newsletter" / "data" / "sample_papers.json")


def _env(tmp_path: Path, *keys: str, retired: str = "") -> dict[str, str]:
    env = {"NEWSLETTER_DATABASE__URL": f"sqlite:///{tmp_path}/k.db",
           "NEWSLETTER_OUTBOX__PATH": str(tmp_path / "outbox")}
    if keys:
        env["NEWSLETTER_WEB__SECRET_KEYS"] = json.dumps(list(keys))
    if retired:
        env["NEWSLETTER_WEB__RETIRED_KEYS"] = json.dumps([retired])
    return env


def _send_once(cli, env: dict[str, str]):  # type: ignore[no-untyped-def]
    assert cli("ingest", PAPERS, env=env).code == 0
    assert cli("subscribers", "add", "ada@example.org", "--keywords", "diffusion",
               env=env).code == 0
    return cli("send", "--yes", env=env)


def test_web_starts_with_the_environment_key_after_db_upgrade(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Production steps 3-4-6: the key in the environment, `db upgrade`, then the web
    unit starts (the database's own key had signed nothing)."""
    env = _env(tmp_path, "env-key-0123456789abcdef")
    assert cli("db", "upgrade", env=env).code == 0
    port = free_port()
    full = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")} | env
    proc = subprocess.Popen([sys.executable, "-m", "newsletter", "web", "--port", str(port)],
                            cwd=tmp_path, env=full, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/subscribe").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            raise AssertionError("newsletter web did not answer")
    finally:
        proc.terminate()
        proc.wait(30)
    shown = json.loads(cli("keys", "show", env=env).stdout)
    assert [u["fingerprint"] for u in shown["used"]] == [fingerprint("env-key-0123456789abcdef")]
    assert shown["used"][0]["used_by"] == "web"


def test_a_key_that_signed_links_cannot_be_dropped(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    old, new = "old-key-0123456789abcdef", "new-key-0123456789abcdef"
    assert _send_once(cli, _env(tmp_path, old)).code == 0
    for command in (["send", "--yes"], ["run"], ["web", "--port", "1"]):
        r = cli(*command, env=_env(tmp_path, new))
        assert r.code != 0, (command, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert fingerprint(old) in r.stderr and "retired_keys" in r.stderr
        # the dropped key came from the environment: the hint points there, not at
        # `keys show` (it prints the database's own key, which signed nothing here)
        assert "NEWSLETTER_WEB__SECRET_KEYS" in r.stderr, r.stderr
        assert "prints the stored key" not in r.stderr, r.stderr
    bad = cli("check", "--json", env=_env(tmp_path, new))
    item = next(i for i in json.loads(bad.stdout)["items"] if i["key"] == "web.secret_keys")
    assert not item["ok"] and fingerprint(old) in item["detail"] and "retired_keys" in item["fix"]
    # New key first, the old one kept: accepted, and the new one is recorded once it signs.
    assert cli("send", "--yes", env=_env(tmp_path, new, old)).code == 0
    shown = json.loads(cli("keys", "show", env=_env(tmp_path, new, old)).stdout)
    assert {u["fingerprint"] for u in shown["used"]} == {fingerprint(old), fingerprint(new)}
    assert shown["signing_with"] == fingerprint(new)
    good = cli("check", "--json", env=_env(tmp_path, new, old))
    item = next(i for i in json.loads(good.stdout)["items"] if i["key"] == "web.secret_keys")
    assert item["ok"], item
    # Retired on purpose by its fingerprint: accepted.
    assert cli("send", "--yes", env=_env(tmp_path, new, retired=fingerprint(old))).code == 0


def test_the_stored_key_is_protected_once_it_signed(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert _send_once(cli, _env(tmp_path)).code == 0  # no secret_keys: the stored key signs
    stored = json.loads(cli("keys", "show", env=_env(tmp_path)).stdout)["stored_key"]
    r = cli("send", "--yes", env=_env(tmp_path, "new-key-0123456789abcdef"))
    assert r.code != 0 and fingerprint(stored) in r.stderr
    assert "the key stored in the database" in r.stderr
    assert cli("send", "--yes", env=_env(tmp_path, "new-key-0123456789abcdef", stored)
               ).code == 0


def test_check_refuses_a_placeholder_key(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = _env(tmp_path, "CHANGE-ME")
    assert cli("db", "upgrade", env=env).code == 0
    r = cli("check", "--json", env=env)
    item = next(i for i in json.loads(r.stdout)["items"] if i["key"] == "web.secret_keys")
    assert not item["ok"] and "secrets.token_urlsafe" in item["fix"]
    # The shipped env file's placeholder and a database not there yet: the key is still
    # named (the line was left out when the database could not be opened).
    gone = {**env, "NEWSLETTER_DATABASE__URL": "postgresql+psycopg://nobody@127.0.0.1:9/none"}
    items = {i["key"]: i for i in json.loads(cli("check", "--json", env=gone).stdout)["items"]}
    assert not items["database"]["ok"]
    assert not items["web.secret_keys"]["ok"]
    assert "placeholder" in items["web.secret_keys"]["detail"]
    fine = {**gone, "NEWSLETTER_WEB__SECRET_KEYS": "a-long-enough-key-0123456789abcdef"}
    items = {i["key"]: i for i in json.loads(cli("check", "--json", env=fine).stdout)["items"]}
    assert items["web.secret_keys"]["ok"]  # a note, not a second ✗ for the database
    assert "the database is not ready" in items["web.secret_keys"]["detail"]


def test_migration_records_the_stored_key_of_a_database_in_use(tmp_path: Path) -> None:
    """An older database that holds subscribers may have sent links signed with its
    stored key: 0013 records it (the protection it had); an empty one records nothing."""
    from alembic import command

    from newsletter.store.db import _alembic_config, make_engine

    for name, in_use in (("used", True), ("empty", False)):
        engine = make_engine(f"sqlite:///{tmp_path}/{name}.db")
        command.upgrade(_alembic_config(engine), "0009")
        if in_use:
            with engine.begin() as conn:
                conn.execute(text(
                    "INSERT INTO subscribers (email, name, keywords, tz, send_hour, frequency, "
                    "status, consent_source, bounce_count, created_at, updated_at) VALUES "
                    "('a@example.org', '', 'x', 'UTC', 7, 'daily', 'active', 'cli', 0, "
                    "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
        command.upgrade(_alembic_config(engine), "head")
        with engine.connect() as conn:
            stored = conn.execute(text("SELECT value FROM meta WHERE key='secret_key'")).scalar()
            used = conn.execute(text("SELECT fingerprint FROM signing_key_uses")).scalars().all()
        assert used == ([fingerprint(str(stored))] if in_use else []), name
        engine.dispose()


def test_a_dropped_stored_key_is_found_with_keys_show(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Links signed with the database's own key (no [web] secret_keys), then a key set
    without it: the refusal says `newsletter keys show` prints the one to keep."""
    assert _send_once(cli, _env(tmp_path)).code == 0
    r = cli("send", "--yes", env=_env(tmp_path, "new-key-0123456789abcdef"))
    assert r.code != 0 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "the key stored in the database" in r.stderr
    assert "`newsletter keys show` prints the stored key" in r.stderr, r.stderr
