"""Bad input from an operator: one line naming the file, field, row or variable, a
non-zero exit, and nothing half-written. Every case runs the real `newsletter`."""

from __future__ import annotations

import email
import email.policy
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from .conftest import ROOT, free_port

SAMPLE = str(ROOT / "newsletter" / "data" / "sample_papers.json")


def one_line_error(result) -> str:  # type: ignore[no-untyped-def]
    assert result.code != 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def rows(tmp_path: Path, sql: str) -> int:
    db = tmp_path / "subscribers.db"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        return int(conn.execute(sql).fetchone()[0])


@pytest.mark.slow  # ~1.5 s and waits: three tries at a dead broker
def test_dead_broker_is_one_line_and_plans_nothing(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert cli("ingest", SAMPLE).code == 0
    assert cli("subscribers", "add", "ada@example.org", "--keywords", "diffusion").code == 0
    dead = {"NEWSLETTER_QUEUE__BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}
    line = one_line_error(cli("send", "--queue", "--yes", env=dead))
    assert "[queue] broker_url" in line and "after 3 attempts" in line
    assert rows(tmp_path, "select count(*) from deliveries") == 0
    assert rows(tmp_path, "select count(*) from editions") == 0
    r = cli("worker", env=dead)
    line = one_line_error(r)
    assert "[queue] broker_url" in line and r.code == 1  # not there (yet): restarted
    from .test_deploy import reachable

    if reachable(5672):  # refused by a broker that answers: only configuration fixes it
        wrong = {"NEWSLETTER_QUEUE__BROKER_URL": "amqp://guest:wrong@127.0.0.1:5672//"}
        r = cli("worker", env=wrong)
        assert r.code == 2 and "ACCESS_REFUSED" in one_line_error(r), r.stderr


@pytest.mark.slow  # ~2 s: three tries at a dead broker once forced
def test_a_worker_holds_the_compliance_gate(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A worker delivers with its own configuration (its key signs the links), whatever
    `send --queue` was run with: through SMTP with the built-in sender, an http link and
    the deploy example's placeholder key it refuses to start (2: systemd does not
    restart it), naming each problem; `worker --force` passes the gate with a warning a
    problem (and here stops at the dead broker, the next step)."""
    dead = {"NEWSLETTER_QUEUE__BROKER_URL": f"redis://127.0.0.1:{free_port()}/0",
            "NEWSLETTER_TRANSPORT__BACKEND": "smtp",
            "NEWSLETTER_WEB__SECRET_KEYS": '["CHANGE-ME"]'}
    r = cli("worker", env=dead)
    assert r.code == 2, r.stderr
    line = one_line_error(r)
    assert line.startswith("error: refusing to send through smtp: "), line
    for problem in ("web.base_url", "sender.from_address", "sender.postal_address",
                    "web.secret_keys"):
        assert problem in line, (problem, line)
    assert "[queue] broker_url" not in line  # refused before the broker is tried
    forced = cli("worker", "--force", env=dead)
    assert forced.code != 0 and "[queue] broker_url" in forced.stderr, forced.stderr
    warned = [x for x in forced.stderr.splitlines() if x.startswith("warning: ")]
    assert len(warned) == 4 and all("delivering anyway (--force)" in x for x in warned), warned


@pytest.mark.parametrize(("toml", "expected"), [
    ('[schedule]\ningest_cron = "0 99 * * *"\n', "[schedule] ingest_cron: not a valid crontab"),
    ('[schedule]\ntimezone = "Mars/X"\n', "[schedule] timezone: unknown time zone 'Mars/X'"),
    ('[sender]\nfrom_address = ""\n', "[sender] from_address: an email address is required"),
    ('[sender]\nfrom_address = "not an address"\n', "[sender] from_address: not a valid"),
    # a name is one source: `ingest a` read the first, `sources list` showed both ingested
    ('[[sources]]\nname = "a"\npath = "a.atom"\n\n[[sources]]\nname = "a"\npath = "b.atom"\n',
     "two [[sources]] entries are named 'a'"),
    # one of url and path: both (one silently ignored), neither (failed at ingest time)
    ('[[sources]]\nname = "a"\npath = "a.atom"\nurl = "https://example.org/f"\n',
     "[[sources]] #1: 'a' has both url and path"),
    ('[[sources]]\nname = "a"\n', "[[sources]] #1: 'a' has neither url nor path"),
])
def test_bad_config_values_fail_at_load(cli, tmp_path: Path, toml: str, expected: str) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "config.toml").write_text(toml)
    line = one_line_error(cli("status"))
    assert "config.toml" in line and expected in line
    assert not (tmp_path / "subscribers.db").exists()


def test_env_override_error_names_the_variable(cli) -> None:  # type: ignore[no-untyped-def]
    line = one_line_error(cli("status", env={"NEWSLETTER_SMTP__PROT": "25"}))
    assert "NEWSLETTER_SMTP__PROT" in line and "unknown key" in line


def test_rank_limit_must_be_positive(cli) -> None:  # type: ignore[no-untyped-def]
    assert cli("ingest", SAMPLE).code == 0
    result = cli("rank", "--limit", "-3", "--json")
    assert result.code == 2 and "Traceback" not in result.stderr
    assert "--limit" in result.stderr and "greater than or equal to 1" in result.stderr


def test_api_backend_without_key_fails_before_planning(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert cli("ingest", SAMPLE).code == 0
    assert cli("subscribers", "add", "ada@example.org", "--keywords", "diffusion").code == 0
    line = one_line_error(cli("send", "--yes", "--force",  # past the compliance gate
                              env={"NEWSLETTER_TRANSPORT__BACKEND": "sendgrid"}))
    assert "[api] api_key" in line and "sendgrid" in line
    assert rows(tmp_path, "select count(*) from deliveries") == 0
    assert rows(tmp_path, "select count(*) from editions") == 0


def test_a_template_broken_for_everyone_stops_the_send_and_loses_no_one(  # type: ignore[no-untyped-def]
        cli, tmp_path: Path) -> None:
    """A template that compiles but fails when rendered (``check`` passes it): `send`
    stops with one line naming the template, nothing sent, no row failed; fixed, the
    next `send` sends everyone. Failed row by row, the day's edition was lost for
    good. And a DKIM key file that is not a private key (its public half) is refused
    before anything is sent, naming the file."""
    import shutil

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    assert cli("ingest", SAMPLE).code == 0
    for who in ("ada", "bob", "cy"):
        assert cli("subscribers", "add", f"{who}@example.org", "--keywords", "diffusion"
                   ).code == 0
    public = tmp_path / "dkim.pub"
    public.write_bytes(rsa.generate_private_key(public_exponent=65537, key_size=2048)
                       .public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    dkim = {"NEWSLETTER_RENDER__DKIM_SELECTOR": "s1", "NEWSLETTER_RENDER__DKIM_DOMAIN":
            "example.org", "NEWSLETTER_RENDER__DKIM_PRIVATE_KEY": str(public)}
    r = cli("send", "--yes", env=dkim)
    assert r.code == 2, r.stderr
    line = one_line_error(r)
    assert "[render] dkim_private_key" in line and "dkim.pub" in line, line
    assert rows(tmp_path, "select count(*) from deliveries where status != 'pending'") == 0
    templates = tmp_path / "tpl"
    shutil.copytree(ROOT / "templates", templates)
    digest = templates / "digest.txt"
    good = digest.read_text()
    digest.write_text(good + "{{ edition.nosuch.attr }}\n")
    env = {"NEWSLETTER_RENDER__TEMPLATES": str(templates)}
    # the preview step before the first send shows it too: each failure with its
    # reader, and a non-zero exit (it ended 0, with an empty folder and zeros)
    shown = cli("preview", "--out", str(tmp_path / "pv"), env=env)
    assert shown.code == 1, shown.stderr
    assert "render failed: " in shown.stderr and "@" in shown.stderr.split(
        "render failed: ")[1].split(":")[0], shown.stderr
    assert "error: 3 emails of 3 failed to render (the first: " in shown.stderr, shown.stderr
    line = one_line_error(cli("send", "--yes", env=env))
    assert "sending stopped: render: digest.txt" in line and "nosuch" in line, line
    assert rows(tmp_path, "select count(*) from deliveries where status = 'pending'") == 3
    assert rows(tmp_path, "select count(*) from deliveries") == 3
    assert not list(tmp_path.glob("outbox/*.eml"))  # nothing sent
    digest.write_text(good)
    again = cli("send", "--yes", env=env)
    assert again.code == 0 and "sent 3, failed 0" in again.stderr, again.stderr


def test_a_placeholder_signing_key_holds_real_mail_back(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The deploy example's ``CHANGE-ME`` (or any short key) signs links anyone can
    forge, and once it has signed links it must be kept: `send` through a real
    transport refuses it as it refuses other non-compliant mail (`check` said so, `send`
    sent anyway), naming the key; `--force` still sends."""
    assert cli("ingest", SAMPLE).code == 0
    assert cli("subscribers", "add", "ada@example.org", "--keywords", "diffusion").code == 0
    env = {"NEWSLETTER_TRANSPORT__BACKEND": "smtp", "NEWSLETTER_SMTP__HOST": "127.0.0.1",
           "NEWSLETTER_SMTP__PORT": str(free_port()), "NEWSLETTER_SMTP__TIMEOUT": "2",
           "NEWSLETTER_WEB__BASE_URL": "https://news.acme-papers.net",
           "NEWSLETTER_SENDER__FROM_ADDRESS": "digest@news.acme-papers.net",
           "NEWSLETTER_SENDER__POSTAL_ADDRESS": "1 Main St, Springfield",
           "NEWSLETTER_WEB__SECRET_KEYS": "CHANGE-ME"}
    refused = cli("send", "--yes", env=env)
    line = one_line_error(refused)
    assert "refusing to send through smtp" in line and "web.secret_keys" in line, line
    for fine in ("web.base_url", "sender.from_address", "sender.postal_address"):
        assert fine not in line, line  # the only problem left is the key
    assert rows(tmp_path, "select count(*) from deliveries") == 0
    forced = cli("send", "--yes", "--force", env={  # past the gate: the dead server
        **env, "NEWSLETTER_TRANSPORT__MAX_ATTEMPTS": "1"})
    assert "sending stopped" in forced.stderr and "web.secret_keys" in forced.stderr
    # rotated as told (a new key first, the old one kept to verify the links it signed):
    # sent without --force; `check` still names the old key, with how to retire it
    rotated = {**env, "NEWSLETTER_WEB__SECRET_KEYS": "x" * 32 + ",CHANGE-ME",
               "NEWSLETTER_TRANSPORT__MAX_ATTEMPTS": "1"}
    sent = cli("send", "--yes", env=rotated)
    assert "refusing to send" not in sent.stderr and "sending stopped" in sent.stderr
    items = json.loads(cli("check", "--json", env=rotated).stdout)["items"]
    [key] = [i for i in items if i["key"] == "web.secret_keys"]
    assert not key["ok"] and "key 2 of 2" in key["detail"] and "retired_keys" in key["fix"]


def test_errors_name_what_is_accepted(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """An unknown CSV column lists every column an import takes (an export's status
    and frequency were left out), and a bad day given to `status` names its argument
    (it said --date, an option `status` does not have)."""
    (tmp_path / "people.csv").write_text("email,plan\nada@example.org,gold\n")
    line = one_line_error(cli("subscribers", "import", "people.csv"))
    assert "unknown column 'plan'" in line and "status, frequency" in line, line
    # status and abandon take an edition's id as well as a day: the error names both
    # (it said only YYYY-MM-DD, as if an id were not accepted)
    for command in (("status",), ("abandon", "--yes")):
        bad = one_line_error(cli(*command, "2026-13-01"))
        assert bad == ("error: EDITION: expected an edition id or a day (YYYY-MM-DD), "
                       "got '2026-13-01'"), (command, bad)
    # the deploy example's CHANGE-ME as the /metrics token: check says so, as for the
    # signing keys; a real one passes, and so does an empty one (compose passes
    # ${METRICS_TOKEN:-} through): no token, as /metrics itself reads it
    for token, flagged in (("CHANGE-ME", True), ("x" * 32, False), ("", False)):
        out = cli("check", "--json", env={"NEWSLETTER_METRICS__TOKEN": token}).stdout
        keys = {i["key"] for i in json.loads(out)["items"] if not i["ok"]}
        assert ("metrics.token" in keys) is flagged, (token, keys)


def test_a_database_this_user_may_not_write_is_one_line(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A SQLite file the command may read but not write (made by root, run as the
    service's user; opened read-only here): one line naming the database and what to do,
    exit 2, where `send` ended in a traceback."""
    assert cli("demo").code == 0
    db = tmp_path / "subscribers.db"
    ro = {"NEWSLETTER_DATABASE__URL": f"sqlite:///file:{db}?mode=ro&uri=true"}
    r = cli("send", "--yes", "--date", "2031-01-01", env=ro)
    assert r.code == 2, r.stderr
    line = one_line_error(r)
    assert "[database] url: attempt to write a readonly database" in line, line
    assert "writable by the user running newsletter" in line and "Traceback" not in r.stderr


def test_check_finds_a_database_file_this_user_may_not_write(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`check` run as the service's user over a database root made (read, not write):
    ✗ naming the file and what to do, where it said "✓ schema current" and `send`
    then stopped at its first write. Run as an unprivileged user in a forked process
    (root may write anything), with the modules loaded before the fork."""
    import os

    from newsletter.service.checks import check_database

    if os.geteuid() != 0:
        pytest.skip("needs root, to become another user (CI runs as root)")
    import shutil
    import tempfile

    assert cli("demo").code == 0
    home = Path(tempfile.mkdtemp(prefix="nl-served-"))  # (pytest's folders are root's only)
    try:
        home.chmod(0o755)
        db = home / "subscribers.db"
        shutil.copy(tmp_path / "subscribers.db", db)
        got = _as_nobody(check_database, f"sqlite:///{db}")
    finally:
        shutil.rmtree(home)
    ok, detail, fix = got
    assert not ok and "not writable by this user" in detail, detail
    assert "writable by the user running newsletter" in fix, fix


def test_check_says_a_dkim_key_the_service_may_not_read_needs_its_owner(
        tmp_path: Path) -> None:
    """A DKIM key made by root as the docs say (openssl genrsa: mode 600) and read by
    the service's user: `check` said to make a key, where the key is there and only
    its owner is wrong."""
    import os
    import shutil
    import subprocess
    import tempfile

    from newsletter.config import RenderConfig, SenderConfig
    from newsletter.delivery.check import check_dkim

    if os.geteuid() != 0:
        pytest.skip("needs root, to become another user (CI runs as root)")
    home = Path(tempfile.mkdtemp(prefix="nl-served-"))
    try:
        home.chmod(0o755)
        key = home / "dkim.pem"
        subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True,
                       capture_output=True)
        key.chmod(0o600)
        r = RenderConfig(dkim_selector="s1", dkim_domain="example.org",
                         dkim_private_key=str(key))
        sender = SenderConfig(from_address="digest@example.org")
        ok, detail, fix = _as_nobody(lambda _: (check_dkim(r, sender)[0], None), "")
    finally:
        shutil.rmtree(home)
    assert not ok and "Permission denied" in detail, detail
    assert "readable by the user running newsletter (nobody)" in fix, fix
    assert "openssl genrsa" not in fix


def test_a_database_upgraded_past_this_version_is_one_line(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A database migrated by a later newsletter (a wheel rolled back; an old worker
    on another machine after the upgrade): every command said so in a 100-line
    Alembic traceback ("Can't locate revision"), and `check` advised `db upgrade`,
    which did the same. One line naming both schemas and what to do; check's ✗ too."""
    assert cli("demo").code == 0
    with sqlite3.connect(tmp_path / "subscribers.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    for command in (["status"], ["db", "upgrade"], ["preview", "--out", "pv"]):
        r = cli(*command)
        assert r.code == 2, (command, r.stderr)
        line = one_line_error(r)
        assert "its schema (9999) is newer than this newsletter" in line, line
        assert "restore the backup" in line and "db upgrade" not in line, line
    r = cli("check", "--json")
    [item] = [i for i in json.loads(r.stdout)["items"] if i["key"] == "database"]
    assert not item["ok"] and "newer than this newsletter" in item["detail"], item
    assert "db upgrade" not in item["fix"], item


def test_tables_that_do_not_match_their_schema_are_one_line(cli, pg_url: str) -> None:  # type: ignore[no-untyped-def]
    """A PostgreSQL restore cut short (here: the primary key of the sent papers'
    record, which sending writes against, dropped): the schema version says current,
    and `send` ended in a 115-line ProgrammingError traceback. One line naming the
    database and what to do."""
    import uuid

    import psycopg

    env = {"NEWSLETTER_DATABASE__URL": pg_url}
    assert cli("demo", env=env).code == 0
    with psycopg.connect(pg_url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute("ALTER TABLE sent_entries DROP CONSTRAINT sent_entries_pkey")
        conn.execute("DELETE FROM sent_entries")
        conn.execute("DELETE FROM deliveries")
        conn.execute("DELETE FROM editions")
    r = cli("send", "--yes", "--date", "2031-01-02", env=env)
    assert r.code == 2, r.stderr
    line = one_line_error(r)
    assert line.startswith("error: [database] url: the tables do not match schema "), line
    assert "restore a whole backup" in line and "Traceback" not in r.stderr, line
    # a database user without privileges on the tables: said so, not "restore a backup"
    role = f"nl_noperm_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        r = cli("status", env={"NEWSLETTER_DATABASE__URL": pg_url.replace(
            "postgres@", f"{role}@")})
        assert r.code == 2, r.stderr
        line = one_line_error(r)
        assert "permission denied" in line and "privileges on the tables" in line, line
        assert "backup" not in line, line
    finally:
        from newsletter.store.db import dispose_all

        dispose_all()
        with psycopg.connect(pg_url.replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def _as_nobody(check: Any, url: str) -> tuple[bool, str, str]:
    """``check(url)``'s item in a forked process run as nobody."""
    import os
    import pickle

    assert check(url)[0].ok  # root may
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the service's user, here nobody
        try:
            os.close(read)
            os.setgid(65534)
            os.setuid(65534)
            try:
                item, _ = check(url)
                answer: Any = (item.ok, item.detail, item.fix)
            except BaseException as exc:  # noqa: BLE001 - said to the parent
                answer = (None, repr(exc), "")
            os.write(write, pickle.dumps(answer))
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        got = pipe.read()
    os.waitpid(pid, 0)
    answer: tuple[bool, str, str] = pickle.loads(got)
    return answer


def test_web_with_a_placeholder_signing_key_says_so_as_it_starts(tmp_path: Path) -> None:
    """`newsletter web` signs confirm and preference links too: with the deploy
    example's CHANGE-ME it warns as it starts (it started without a word)."""
    import os
    import signal
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env["NEWSLETTER_WEB__SECRET_KEYS"] = "CHANGE-ME"
    proc = subprocess.Popen([sys.executable, "-m", "newsletter", "web", "--port",
                             str(free_port())], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    seen = []
    try:
        for line in proc.stderr:
            seen.append(line)
            if "serving" in line:
                break
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    warned = [ln for ln in seen if "web.secret_keys" in ln]
    assert warned and "placeholder" in warned[0] and "refuses to send" in warned[0], seen


def test_cr_lf_in_a_name_never_becomes_a_header(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert cli("ingest", SAMPLE).code == 0
    added = cli("subscribers", "add", "eve@example.org", "--keywords", "diffusion",
                "--name", "Eve\r\nBcc: evil@evil.example")
    assert added.code == 0, added.stderr
    listed = json.loads(cli("subscribers", "list", "--json").stdout)
    assert listed[0]["name"] == "Eve Bcc: evil@evil.example"
    assert cli("send", "--yes").code == 0
    [eml] = list((tmp_path / "outbox").glob("*.eml"))
    msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.strict)
    assert msg["Bcc"] is None and not msg.defects
    assert "evil@evil.example" not in [a.addr_spec for a in msg["To"].addresses]


def test_cr_lf_never_reaches_mime_even_from_the_database() -> None:
    from newsletter.config import SenderConfig
    from newsletter.render.mime import MimeBuilder

    m = MimeBuilder(SenderConfig()).build(
        to="eve@example.org", to_name="Eve\r\nBcc: evil@evil.example",
        subject="Hi\nBcc: x@y.z", text="t", html="<p>h</p>", message_id="<a@b>",
        list_unsubscribe="<https://x/u>", extra_headers={"X-Tag": "a\r\nBcc: q@r.s"})
    head = m.data.split(b"\r\n\r\n", 1)[0]
    assert b"\nBcc:" not in head and b"\rBcc:" not in head


def test_ingest_checks_types_per_field(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "bad.json").write_text('[{"paper": {"title": 5}}]')
    line = one_line_error(cli("ingest", "bad.json"))
    assert "bad.json: item 1" in line and "'title'" in line and "expected text" in line
    assert rows(tmp_path, "select count(*) from entries") == 0


def test_csv_import_reports_every_bad_row_and_stores_none(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "people.csv").write_text(
        "email,name,keywords,tz,hour\n"
        "ok@example.org,Ok,diffusion,UTC,7\n"
        "not-an-address,Bad,diffusion,UTC,7\n"
        "tz@example.org,Tz,diffusion,Mars/X,7\n"
        "hour@example.org,Hour,diffusion,UTC,31\n")
    result = cli("subscribers", "import", "people.csv")
    assert result.code == 1 and "Traceback" not in result.stderr
    for line in ("people.csv:3:", "people.csv:4:", "people.csv:5:"):
        assert line in result.stderr, result.stderr
    assert "3 bad rows, nothing imported" in result.stderr
    assert rows(tmp_path, "select count(*) from subscribers") == 0


def test_empty_profile_is_refused_and_edit_changes_a_subscriber(cli) -> None:  # type: ignore[no-untyped-def]
    line = one_line_error(cli("subscribers", "add", "ada@example.org", "--keywords", " "))
    assert "empty keyword profile" in line
    assert cli("subscribers", "add", "ada@example.org", "--keywords", "diffusion").code == 0
    edited = cli("subscribers", "edit", "ADA@example.org", "--keywords", "GNN, -medical",
                 "--tz", "Asia/Kolkata", "--hour", "9", "--name", "Ada", "--status", "paused")
    assert edited.code == 0, edited.stderr
    [row] = json.loads(cli("subscribers", "list", "--json").stdout)
    assert (row["keywords"], row["tz"], row["hour"], row["name"], row["status"]) == (
        "GNN, -medical", "Asia/Kolkata", 9, "Ada", "paused")
    assert "--status: expected one of active, paused, unsubscribed, bounced" in one_line_error(
        cli("subscribers", "edit", "ada@example.org", "--status", "complained"))
    assert "unknown time zone" in one_line_error(
        cli("subscribers", "edit", "ada@example.org", "--tz", "Mars/X"))
    assert "empty keyword profile" in one_line_error(
        cli("subscribers", "edit", "ada@example.org", "--keywords", ""))
    assert "nothing to change" in one_line_error(cli("subscribers", "edit", "ada@example.org"))
    assert "is not a subscriber" in one_line_error(
        cli("subscribers", "edit", "bob@example.org", "--hour", "3"))
    # The same statuses as the console: an operator may record a stop, never undo one.
    assert cli("subscribers", "edit", "ada@example.org", "--status", "bounced").code == 0
    assert "bounced; their mail server refused or reported the mail" in one_line_error(
        cli("subscribers", "edit", "ada@example.org", "--status", "active"))
    assert cli("subscribers", "edit", "ada@example.org", "--status", "unsubscribed").code != 0
    assert cli("subscribers", "add", "una@example.org", "--keywords", "gnn").code == 0
    assert cli("subscribers", "edit", "una@example.org", "--status", "unsubscribed").code == 0
    assert ("unsubscribed; only they can start their emails again: from the preferences "
            "link of an email they had, or by signing up on the site again") in one_line_error(
        cli("subscribers", "edit", "una@example.org", "--status", "active"))
    [row] = [r for r in json.loads(cli("subscribers", "list", "--json").stdout)
             if r["email"] == "ada@example.org"]
    assert (row["status"], row["bounce_count"]) == ("bounced", 1)


def test_address_policy_is_the_same_for_cli_and_import(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert cli("subscribers", "add", "Ada@Bücher.example", "--keywords", "x").code == 0
    line = one_line_error(cli("subscribers", "add", "jösé@example.org", "--keywords", "x"))
    assert "SMTPUTF8" in line and "utf8_addresses" in line
    (tmp_path / "p.csv").write_text("email,keywords\njösé@example.org,x\n", encoding="utf-8")
    assert "SMTPUTF8" in cli("subscribers", "import", "p.csv").stderr
    ok = cli("subscribers", "add", "jösé@example.org", "--keywords", "x",
             env={"NEWSLETTER_TRANSPORT__UTF8_ADDRESSES": "true"})
    assert ok.code == 0, ok.stderr
    emails = [r["email"] for r in json.loads(cli("subscribers", "list", "--json").stdout)]
    assert emails == ["ada@xn--bcher-kva.example", "jösé@example.org"]


def test_help_text_keeps_brackets_and_shows_no_bool_types(cli) -> None:  # type: ignore[no-untyped-def]
    ingest = cli("ingest", "--help")
    assert "[[sources]] names (default: every [[sources]])" in " ".join(ingest.stdout.split())
    send = cli("send", "--help")
    assert "[queue] broker_url" in " ".join(send.stdout.split())
    for args in (["entries"], ["send"], ["subscribers", "list"], ["status"]):
        text = cli(*args, "--help").stdout
        assert "<bool>" not in text, args
    usage = cli("subscribers", "add", "--help").stdout
    assert "EMAIL" in usage and "{email}" not in usage
    # Usage lines name arguments plainly: [EMAIL] [PAPER_ID], [SOURCE]..., never {EMAIL}
    for args, want in ((["feedback"], "[OPTIONS] [EMAIL] [PAPER_ID]"),
                       (["subscribers", "edit"], "[OPTIONS] EMAIL"),
                       (["ingest"], "[OPTIONS] [SOURCE]..."),
                       (["webhooks", "rotate"], "[OPTIONS] PROVIDER")):
        first = cli(*args, "--help").stdout.strip().splitlines()[0]
        assert first.endswith(want) and "{" not in first, (args, first)


def test_a_metrics_port_past_65535_is_refused_before_anything_starts(cli) -> None:  # type: ignore[no-untyped-def]
    """`newsletter-worker@10` asks for port 91010 (the unit's 910%i): a usage error
    naming the option, not a traceback from bind() once the worker is up."""
    for command in (["worker"], ["run"]):
        r = cli(*command, "--metrics-port", "91010")
        assert r.code == 2 and "--metrics-port" in r.stderr and "65535" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr


def test_a_database_that_does_not_answer_or_parse_is_one_line(cli) -> None:  # type: ignore[no-untyped-def]
    """`preview` (the command step 5 of "Running in production" runs) against a
    database that refuses the connection, and `check` and `preview` with a URL that
    does not parse: one line naming [database] url (check: its ✗ line), no traceback,
    as every other command says it."""
    from .conftest import free_port
    from .test_deploy import reachable

    dead = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nowhere"
    r = cli("preview", env={"NEWSLETTER_DATABASE__URL": dead})
    # 1, not 2: a server that does not answer (yet) is worth trying again, which the
    # systemd units do (they leave a configuration error, 2, stopped)
    assert r.code == 1 and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: [database] url: cannot open"), lines
    nosock = "postgresql+psycopg://postgres@/nowhere?host=/nonexistent-folder"
    r = cli("status", env={"NEWSLETTER_DATABASE__URL": nosock})  # a local server stopped
    assert r.code == 1 and "on socket" in r.stderr, r.stderr
    for command in ("run", "web", "db"):  # the units' commands (the scheduler's
        r = cli(*([command, "upgrade"] if command == "db" else [command]),  # ExecStartPre)
                env={"NEWSLETTER_DATABASE__URL": dead})
        assert r.code == 1 and "cannot open" in r.stderr, (command, r.code, r.stderr)
    unknown = "postgresql+psycopg://postgres@127.0.0.1:5432/nl_no_such_database"
    if reachable(5432):  # a database the server does not have: only configuration fixes it
        r = cli("status", env={"NEWSLETTER_DATABASE__URL": unknown})
        assert r.code == 2 and "does not exist" in r.stderr, r.stderr
    for command in ("preview", "status"):
        r = cli(command, env={"NEWSLETTER_DATABASE__URL": "notaurl"})
        assert r.code == 2 and "Traceback" not in r.stderr, (command, r.stderr)
        assert "[database] url: cannot use 'notaurl'" in r.stderr, (command, r.stderr)
    for url in ("postgresql://digest:s3cret@db:notaport/nl",  # make_url: ValueError
                "postgres ql://digest:s3cret@db/nl"):  # ArgumentError
        r = cli("status", env={"NEWSLETTER_DATABASE__URL": url})
        assert r.code == 2 and "Traceback" not in r.stderr, r.stderr
        assert "cannot use" in r.stderr and "s3cret" not in r.stderr, r.stderr  # logs keep it
    r = cli("check", env={"NEWSLETTER_DATABASE__URL": "sqlite:/one-slash.db"})
    assert r.code == 1 and "Traceback" not in r.stderr, r.stderr
    database = [ln for ln in r.stdout.splitlines() if " database:" in ln]
    assert database and database[0].startswith("✗") and "cannot use" in database[0], r.stdout


def test_relative_files_in_a_config_file_are_beside_that_file(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`newsletter --config /srv/digest/config.toml …` run from another folder uses
    the database, outbox and sources beside that file (as run from its folder), not
    new ones in the current folder: the data was split between two databases."""
    site, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    site.mkdir()
    elsewhere.mkdir()
    from .conftest import ROOT

    (site / "papers.json").write_bytes(
        (ROOT / "newsletter" / "data" / "sample_papers.json").read_bytes())
    (site / "config.toml").write_text(
        '[database]\nurl = "sqlite:///subscribers.db"\n[outbox]\npath = "mail"\n'
        '[[sources]]\nname = "local"\npath = "papers.json"\n')
    config = str(site / "config.toml")
    assert cli("--config", config, "ingest", "local", cwd=elsewhere).code == 0
    assert cli("--config", config, "subscribers", "add", "ada@example.org",
               "--keywords", "diffusion", cwd=elsewhere).code == 0
    assert cli("--config", config, "send", "--yes", cwd=elsewhere).code == 0
    assert (site / "subscribers.db").exists() and list((site / "mail").glob("*.eml"))
    assert list(elsewhere.iterdir()) == []  # nothing made in the current folder
    # run from the file's own folder: the same database (ada has had the edition)
    listed = cli("subscribers", "list", "--json", cwd=site)
    assert [s["email"] for s in json.loads(listed.stdout)] == ["ada@example.org"]



def test_web_on_a_port_already_taken_is_one_line(cli) -> None:  # type: ignore[no-untyped-def]
    """`newsletter web` where another process listens: one `error:` line naming the
    address, a non-zero exit, before the server starts (uvicorn said it among its log
    lines and exited 3)."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = cli("web", "--port", str(port))
    assert r.code != 0 and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"cannot listen on 127.0.0.1:{port}" in lines[0], lines



def test_send_with_json_logs_writes_only_json_lines(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`send --log-format json`: every stderr line is a JSON object (a log collector
    drops what does not parse): the warnings of --force, the summary, and the error
    that ends a failed run, which were plain text."""
    from .conftest import ROOT, free_port

    papers = str(ROOT / "newsletter" / "data" / "sample_papers.json")
    assert cli("ingest", papers).code == 0
    assert cli("subscribers", "add", "ada@example.org", "--keywords", "diffusion").code == 0
    dead = {"NEWSLETTER_TRANSPORT__BACKEND": "smtp", "NEWSLETTER_SMTP__HOST": "127.0.0.1",
            "NEWSLETTER_SMTP__PORT": str(free_port()), "NEWSLETTER_SMTP__TIMEOUT": "2"}
    r = cli("send", "--yes", "--force", "--log-format", "json", env=dead)
    assert r.code != 0
    records = [json.loads(line) for line in r.stderr.strip().splitlines()]  # each parses
    levels = [rec["level"] for rec in records]
    assert "warning" in levels and levels[-1] == "error", records
    assert any("sending anyway (--force)" in rec["msg"] for rec in records)
    ok = cli("send", "--yes", "--log-format", "json")  # the outbox: the summary too
    assert ok.code == 0
    done = [json.loads(line) for line in ok.stderr.strip().splitlines()]
    assert any(rec["msg"].startswith("sent 1, failed 0") for rec in done), done



def test_check_gives_fixes_that_work(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """What `check` tells an operator to do must not itself be refused: the base_url
    example was a domain `check` rejects as reserved for documentation, and a SQLite
    file in a folder that does not exist was told to run `db upgrade`, which then
    failed with "unable to open database file"."""
    r = cli("check", env={"NEWSLETTER_DATABASE__URL": f"sqlite:///{tmp_path}/no/such/x.db",
                          "NEWSLETTER_TRANSPORT__BACKEND": "smtp"})
    lines = r.stdout.splitlines()
    database = next(ln for ln in lines if " database:" in ln)
    assert "does not exist" in database and "db upgrade" not in database, database
    base = next(ln for ln in lines if " web.base_url:" in ln)
    assert ".example." not in base.partition("fix:")[2], base
