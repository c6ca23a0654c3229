"""What an operator meets at the command line besides the daily commands: the demo
never touches a live installation, optional features name the extra to install before
doing any work, `--version`, and `--config` on either side of the command."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import pytest

from .conftest import PAYLOADS


def _rows(db: Path, table: str) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def test_demo_refuses_a_real_transport_and_writes_nothing(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "config.toml").write_text('[transport]\nbackend = "smtp"\n\n'
                                          '[smtp]\nhost = "127.0.0.1"\nport = 1\n')
    r = cli("demo", input="")
    assert r.code != 0
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "sends real mail" in r.stderr and "empty folder" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


def test_demo_refuses_a_database_with_real_data(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert cli("subscribers", "add", "someone@example.net", "--keywords", "diffusion").code == 0
    before = (tmp_path / "subscribers.db").read_bytes()
    r = cli("demo")
    assert r.code != 0 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "someone@example.net" in r.stderr and "empty folder" in r.stderr
    assert _rows(tmp_path / "subscribers.db", "subscribers") == 1
    assert _rows(tmp_path / "subscribers.db", "entries") == 0
    assert not (tmp_path / "outbox").exists()
    assert (tmp_path / "subscribers.db").read_bytes() == before


def test_demo_refuses_papers_that_are_not_the_samples(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert cli("ingest", str(PAYLOADS / "dailypapers.json")).code == 0
    r = cli("demo")
    assert r.code != 0 and "papers that are not the demo's" in r.stderr
    assert _rows(tmp_path / "subscribers.db", "subscribers") == 0


def test_demo_runs_again_on_its_own_data(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The Quick start: a second demo in the same folder is fine (demo data only)."""
    assert cli("demo").code == 0
    again = cli("demo")
    assert again.code == 0 and "sent 0 emails" in again.stderr


def test_optional_features_name_their_extra_before_any_work(  # type: ignore[no-untyped-def]
        cli, tmp_path: Path, monkeypatch) -> None:
    """Without the extra installed (the import blocked as a missing package is), each
    optional feature is one line naming the extra, and nothing is written first."""
    assert cli("demo").code == 0
    before = sorted(p.name for p in tmp_path.rglob("*") if "subscribers.db" not in p.name)
    monkeypatch.setitem(sys.modules, "playwright", None)
    monkeypatch.setitem(sys.modules, "playwright.sync_api", None)
    r = cli("preview", "--out", str(tmp_path / "shots"), "--screenshot")
    assert r.code != 0 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "pip install 'newsletter[screenshots]'" in r.stderr
    assert not (tmp_path / "shots").exists()
    for module in ("kombu", "celery"):
        monkeypatch.setitem(sys.modules, module, None)
    for command in (["worker"], ["send", "--queue", "--yes"]):
        r = cli(*command)
        assert r.code != 0 and len(r.stderr.strip().splitlines()) == 1, (command, r.stderr)
        assert "pip install 'newsletter[scale]'" in r.stderr, r.stderr
    after = sorted(p.name for p in tmp_path.rglob("*") if "subscribers.db" not in p.name)
    assert after == before


def test_version(cli) -> None:  # type: ignore[no-untyped-def]
    from importlib.metadata import version

    r = cli("--version")
    assert r.code == 0 and r.stdout.strip() == f"newsletter {version('newsletter')}"


def test_config_before_or_after_the_command(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    elsewhere = tmp_path / "etc"
    elsewhere.mkdir()
    config = elsewhere / "newsletter.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/elsewhere.db"\n')
    assert cli("subscribers", "add", "ada@example.org", "--keywords", "gnn",
               "--config", str(config)).code == 0
    assert cli("subscribers", "add", "bob@example.org", "--keywords", "gnn",
               f"--config={config}").code == 0
    listed = cli("--config", str(config), "subscribers", "list", "--json")
    assert {s["email"] for s in json.loads(listed.stdout)} == {"ada@example.org",
                                                                 "bob@example.org"}
    assert not (tmp_path / "subscribers.db").exists()
    # After `--`, it is an argument like any other.
    from newsletter.cli import hoist_config

    assert hoist_config(["ingest", "--", "--config", "x"]) == ["ingest", "--", "--config", "x"]
    missing = cli("check", "--config", str(tmp_path / "nope.toml"))
    assert missing.code != 0 and "nope.toml" in missing.stderr


@pytest.mark.parametrize(("address", "accepted"), [
    ("ada@example.test", True), ("ada@mail.example.test", True), ("ada@example.org", True),
    ("ada@host.invalid", False), ("ada@printer.local", False), ("ada@x.onion", False)])
def test_one_address_policy_everywhere(cli, tmp_path: Path, address: str,  # type: ignore[no-untyped-def]
                                       accepted: bool) -> None:
    """The CLI, a CSV import, the sign-up form and the sender accept or refuse the same
    addresses: testing domains (.test) are addresses; .invalid/.local/.onion never are."""
    from newsletter.config import load_settings
    from newsletter.errors import ConfigError, InputError
    from newsletter.web.pages import web_address

    added = cli("subscribers", "add", address, "--keywords", "gnn")
    (tmp_path / "one.csv").write_text(f"email,name,keywords,tz,hour\n{address},A,gnn,UTC,7\n")
    imported = cli("subscribers", "import", str(tmp_path / "one.csv"),
                   env={"NEWSLETTER_DATABASE__URL": f"sqlite:///{tmp_path}/other.db"})
    try:
        web_address(address)
        signup = True
    except InputError:
        signup = False
    try:
        load_settings(None, environ={"NEWSLETTER_SENDER__FROM_ADDRESS": address})
        sender = True
    except ConfigError:
        sender = False
    assert (added.code == 0, imported.code == 0, signup, sender) == (accepted,) * 4, (
        added.stderr, imported.stderr)


def test_counts_are_singular_for_one_and_cut_titles_end_with_an_ellipsis(  # type: ignore[no-untyped-def]
        cli, tmp_path: Path) -> None:
    from .conftest import ROOT

    paper = json.loads((ROOT / "newsletter" / "data" / "sample_papers.json").read_text())[0]
    title = "State space models for vision transformer " + "very long words " * 8 + "END"
    paper |= {"title": title, "abstract": "state space models vision transformer"}
    (tmp_path / "one.json").write_text(json.dumps([paper]))
    ingested = cli("ingest", str(tmp_path / "one.json"))
    assert ": 1 paper\n" in ingested.stderr and "stored: 1 new" in ingested.stderr, \
        ingested.stderr
    entries = cli("entries")
    assert entries.stderr.strip() == "1 entry"
    assert "…" in entries.stdout and "END" not in entries.stdout
    assert cli("subscribers", "add", "ada@example.org", "--keywords",
               "state space models, vision transformer").code == 0
    assert cli("subscribers", "list").stderr.strip() == "1 subscriber"
    ranked = cli("rank", "--all-entries")
    assert "…" in ranked.stdout and "END" not in ranked.stdout, ranked.stdout
    stored = json.loads(cli("entries", "--json").stdout)[0]["id"]
    voted = cli("feedback", "ada@example.org", stored, "--up")
    assert voted.code == 0 and "…)" in voted.stderr and "END" not in voted.stderr
    assert cli("admin", "add-user", "ops", "--password-stdin", input="s3cret-pass\n").code == 0
    assert cli("admin", "list-users").stderr.strip() == "1 admin user"


def test_admin_passwd_changes_the_password_and_ends_sessions(cli, world) -> None:  # type: ignore[no-untyped-def]
    from .test_admin import PASSWORD, login, start_console

    settings, engine = world
    env = {"NEWSLETTER_DATABASE__URL": settings.database.url}
    for console in start_console(settings, engine):
        old_session = console.login()
        assert old_session.get("/").status_code == 200
        new = "a brand new passphrase"
        r = cli("admin", "passwd", "ops", "--password-stdin", input=new + "\n", env=env)
        assert r.code == 0, r.stderr
        assert old_session.get("/").status_code == 303  # logged out
        assert login(console.client(), "ops", PASSWORD).status_code == 401
        assert login(console.client(), "ops", new).status_code == 303
    short = cli("admin", "passwd", "ops", "--password-stdin", input="short\n", env=env)
    assert short.code != 0 and "at least 8 characters" in short.stderr
    nobody = cli("admin", "passwd", "nobody", "--password-stdin", input="long enough 1\n",
                 env=env)
    assert nobody.code != 0 and "no admin user 'nobody'" in nobody.stderr
    no_tty = cli("admin", "passwd", "ops", env=env, input="")
    assert no_tty.code != 0 and "--password-stdin" in no_tty.stderr


def _on_a_terminal(args: list[str], answer: str, cwd: Path, env: dict[str, str]
                   ) -> tuple[int, str]:
    """Run `newsletter ARGS` with a terminal on stdin and stdout, answer the prompt;
    the exit code and everything shown."""
    import os
    import pty
    import subprocess

    leader, follower = pty.openpty()
    full = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")} | env
    proc = subprocess.Popen([sys.executable, "-m", "newsletter", *args], cwd=cwd, env=full,
                            stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    shown = b""
    sent = False
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
        if not sent and b"[y/N]" in shown:
            os.write(leader, answer.encode() + b"\n")
            sent = True
    os.close(leader)
    return proc.wait(60), shown.decode("utf-8", "replace")


def test_remove_asks_and_a_declined_send_says_so(cli, tmp_path: Path, smtp_sink) -> None:  # type: ignore[no-untyped-def]
    from .conftest import ROOT

    assert cli("subscribers", "add", "ada@example.org", "--keywords", "gnn").code == 0
    no_tty = cli("subscribers", "remove", "ada@example.org")
    assert no_tty.code != 0 and "without --yes" in no_tty.stderr
    code, shown = _on_a_terminal(["subscribers", "remove", "ada@example.org"], "n", tmp_path, {})
    assert code == 1 and "Delete ada@example.org and their whole history?" in shown
    assert "not removed: ada@example.org is still there" in shown
    assert "ada@example.org" in cli("subscribers", "list").stdout
    code, shown = _on_a_terminal(["subscribers", "remove", "ada@example.org"], "y", tmp_path, {})
    assert code == 0 and "removed ada@example.org" in shown
    assert cli("subscribers", "list").stderr.strip() == "0 subscribers"
    # send through a real transport, answered "n": it says nothing was sent.
    assert cli("ingest", str(ROOT / "newsletter" / "data" / "sample_papers.json")).code == 0
    assert cli("subscribers", "add", "bob@example.org", "--keywords", "gnn").code == 0
    env = {"NEWSLETTER_TRANSPORT__BACKEND": "smtp", "NEWSLETTER_SMTP__HOST": "127.0.0.1",
           "NEWSLETTER_SMTP__PORT": str(smtp_sink.port)}
    code, shown = _on_a_terminal(["send", "--force"], "n", tmp_path, env)
    assert code == 1 and "not sent: nothing was planned or sent" in shown, shown
    assert smtp_sink.messages == []


@pytest.mark.slow
def test_import_from_a_long_path_on_postgresql(cli, tmp_path: Path, pg_url: str) -> None:  # type: ignore[no-untyped-def]
    """The consent source names the file; a path longer than its column used to fail
    the whole import with a traceback on PostgreSQL (SQLite ignores the length)."""
    folder = tmp_path / ("a-rather-long-folder-name-" * 4)
    folder.mkdir()
    people = folder / "people.csv"
    people.write_text("email,name,keywords,tz,hour\nada@example.test,Ada,gnn,UTC,7\n")
    env = {"NEWSLETTER_DATABASE__URL": pg_url}
    r = cli("subscribers", "import", str(people), env=env)
    assert r.code == 0 and "imported 1" in r.stderr, r.stderr
    listed = json.loads(cli("subscribers", "list", "--json", env=env).stdout)
    source = listed[0]["consent_source"]
    assert len(source) <= 64 and source.startswith("import:…") and source.endswith("people.csv")



def test_ctrl_c_while_the_command_loads_ends_quietly_with_130(tmp_path: Path) -> None:
    """A Ctrl-C in a command's first fraction of a second (its libraries loading) is a
    stop before anything began: exit 130, no traceback (it printed thirty lines of the
    import machinery). The interrupt is raised exactly there, from an import hook."""
    import subprocess

    hook = (
        "import importlib.abc, os, signal, sys\n"
        "class Interrupt(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'sqlalchemy.orm':\n"
        "            os.kill(os.getpid(), signal.SIGINT)\n"
        "        return None\n"
        "sys.meta_path.insert(0, Interrupt())\n"
        "sys.argv = ['newsletter', 'status']\n"
        "from newsletter.__main__ import run\n"
        "run()\n")
    done = subprocess.run([sys.executable, "-c", hook], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr and "KeyboardInterrupt" not in done.stderr
    assert not (tmp_path / "subscribers.db").exists()


def test_ingesting_the_same_file_again_updates_nothing(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A paper seen again is counted as updated only when something of it changed:
    the same file twice said "3 updated" (every paper refreshed to the same values),
    which an operator could not tell from a real update."""
    src = json.loads((PAYLOADS / "dailypapers.json").read_text())
    feed = tmp_path / "day.json"
    feed.write_text(json.dumps(src))
    first = cli("ingest", str(feed))
    assert first.code == 0 and "stored: 3 new, 0 updated\n" in first.stderr, first.stderr
    again = cli("ingest", str(feed))
    assert "stored: 0 new, 0 updated, 3 already stored unchanged" in again.stderr, again.stderr
    src[0]["paper"]["upvotes"] += 7
    feed.write_text(json.dumps(src))
    changed = cli("ingest", str(feed))
    assert "stored: 0 new, 1 updated, 2 already stored unchanged" in changed.stderr, \
        changed.stderr
    # two sources carrying the same papers in one run, into an empty database: new once,
    # never "already stored" (they were not, before the run)
    twin = tmp_path / "twin.json"
    src[1]["paper"]["upvotes"] += 3  # the second source differs: still new once
    twin.write_text(json.dumps(src))
    fresh = cli("ingest", str(feed), str(twin), env={
        "NEWSLETTER_DATABASE__URL": f"sqlite:///{tmp_path / 'fresh.db'}"})
    # the sources' counts (3 papers each) add up to what the last line says
    assert "stored: 3 new, 0 updated, 3 also in an earlier source of this run\n" in \
        fresh.stderr, fresh.stderr


def test_subscribers_list_shows_whole_addresses_in_80_columns(cli) -> None:  # type: ignore[no-untyped-def]
    """Piped or in a narrow terminal, the table is as wide as its contents: an address
    cut to "ada@example.o…" is one an operator cannot copy into the next command."""
    address = "a.very.long.address.for.testing@example-university.org"
    assert cli("subscribers", "add", address, "--keywords", "diffusion").code == 0
    listed = cli("subscribers", "list", env={"COLUMNS": "80"})
    assert listed.code == 0 and address in listed.stdout, listed.stdout
