"""The command line as operators use it: real processes, exit codes, stdout/stderr."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import typer.main
from pydantic import ValidationError

from newsletter.cli import app
from newsletter.config import load_settings
from newsletter.errors import ConfigError

from .conftest import PAYLOADS, SEEDS


def all_command_paths() -> list[list[str]]:
    root = typer.main.get_command(app)
    paths: list[list[str]] = []

    def walk(cmd: object, prefix: list[str]) -> None:
        paths.append(prefix)
        if hasattr(cmd, "commands"):  # a group
            for name, sub in cmd.commands.items():
                walk(sub, [*prefix, name])

    walk(root, [])
    return paths


def test_every_command_has_help(cli) -> None:  # type: ignore[no-untyped-def]
    paths = all_command_paths()
    assert ["subscribers", "import"] in paths and ["ingest"] in paths
    for path in paths:
        result = cli(*path, "--help")
        assert result.code == 0, (path, result.stderr)
        assert "Usage:" in result.stdout


def test_one_command_built_says_what_the_whole_tree_says() -> None:
    """``main`` builds only the command run (``only_the_command``): every command's and
    group's help, a bad option's error and the root's options read the same as through
    the whole tree, and what names no one command gets the whole tree."""
    from click.testing import CliRunner

    from newsletter.cli import hoist_config, only_the_command

    runner = CliRunner()
    paths = [p for p in all_command_paths() if p]
    for path in paths:
        for tail in (["--help"], ["--no-such-option"]):
            args = hoist_config([*path, *tail, "--config", "x.toml"])
            narrowed = only_the_command(app, args)
            assert narrowed is not app and len(narrowed.registered_commands) + len(
                narrowed.registered_groups) == 1, path
            whole = runner.invoke(app, args, prog_name="newsletter")
            one = runner.invoke(narrowed, args, prog_name="newsletter")
            assert (one.exit_code, one.output) == (whole.exit_code, whole.output), path
    for args in ([], ["--help"], ["sned"], ["--", "send"], ["--config", "send"],
                 ["--help", "send"], ["--config", "x.toml", "--help", "subscribers"],
                 ["--no-such-option", "send"]):
        assert only_the_command(app, args) is app, args
    for args in (["--config=x.toml", "--version", "send"], ["--version", "send"]):
        assert only_the_command(app, args) is not app, args


def test_root_help_before_a_command_names_every_command(cli) -> None:  # type: ignore[no-untyped-def]
    """``newsletter --help send`` is the root's help (``--help`` is eager): it lists
    every command, not only the one named after it."""
    result = cli("--help", "send")
    assert result.code == 0
    assert "subscribers" in result.stdout and "status" in result.stdout, result.stdout


def test_runs_without_a_config_file(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = cli("ingest", str(PAYLOADS / "dailypapers.json"))
    assert result.code == 0, result.stderr
    assert "3 new" in result.stderr
    assert (tmp_path / "subscribers.db").exists()
    listing = cli("entries", "--json")
    data = json.loads(listing.stdout)  # JSON alone on stdout
    assert {e["id"] for e in data} >= {"2508.13426", "2508.11111"}


def test_entries_json_round_trips_through_ingest(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert cli("ingest", *map(str, sorted(SEEDS.glob("*")))).code == 0
    exported = cli("entries", "--json").stdout
    (tmp_path / "export.json").write_text(exported)
    other = tmp_path / "other"
    other.mkdir()
    assert cli("ingest", str(tmp_path / "export.json"), cwd=other).code == 0
    again = json.loads(cli("entries", "--json", cwd=other).stdout)
    assert sorted(e["id"] for e in again) == sorted(e["id"] for e in json.loads(exported))


@pytest.mark.parametrize(
    "name, content, fragment",
    [
        ("truncated.json", b'[{"paper": {"title": "x"', "invalid JSON"),
        ("page.xml", b"<html><body>hello</body></html>", "HTML page"),
        ("empty.txt", b"", "empty file"),
        ("junk.bin", bytes(range(256)) * 10, "binary data"),
        ("latin1.txt", "Dec 26\n\nCaf\xe9 title\n".encode("latin-1"), "invalid UTF-8"),
    ],
)
def test_bad_files_one_line_nonzero_exit_nothing_stored(  # type: ignore[no-untyped-def]
    cli, tmp_path: Path, name: str, content: bytes, fragment: str
) -> None:
    assert cli("ingest", str(PAYLOADS / "blog.rss")).code == 0
    bad = tmp_path / name
    bad.write_bytes(content)
    result = cli("ingest", str(PAYLOADS / "dailypapers.json"), str(bad))
    assert result.code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}") and fragment in lines[0]
    conn = sqlite3.connect(tmp_path / "subscribers.db")
    assert conn.execute("select count(*) from entries").fetchone()[0] == 1  # only blog.rss


def test_missing_file(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("ingest", "nowhere.json")
    assert result.code == 1 and "nowhere.json: no such file" in result.stderr


@pytest.mark.slow  # ~4 s: writes and ingests 50 MB
def test_fifty_megabyte_file(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    big = tmp_path / "big.jsonl"
    line = json.dumps({"title": "T {}", "abstract": "word " * 2000}) + "\n"
    with big.open("w") as f:
        for i in range(5000):
            f.write(line.replace("T {}", f"Paper number {i}"))
    assert big.stat().st_size > 50_000_000
    result = cli("ingest", str(big))
    assert result.code == 0, result.stderr
    assert "5000 new" in result.stderr


def test_duplicate_ids_within_one_file(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "dups.jsonl"
    f.write_text('{"id": "2401.00001v1", "title": "A", "upvotes": 1}\n'
                 '{"id": "2401.00001v2", "title": "A (v2)", "upvotes": 5}\n')
    result = cli("ingest", str(f))
    assert "1 duplicate merged" in result.stderr and "1 new" in result.stderr
    [entry] = json.loads(cli("entries", "--json").stdout)
    assert (entry["title"], entry["version"], entry["upvotes"]) == ("A (v2)", 2, 5)


def test_subscribers_commands(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert cli("subscribers", "add", "Ada@Example.org", "--keywords", "GNN, -medical",
               "--tz", "Europe/London", "--hour", "6").code == 0
    dup = cli("subscribers", "add", "ada@example.org", "--keywords", "x")
    assert dup.code != 0 and "already subscribed" in dup.stderr
    bad = cli("subscribers", "add", "nobody", "--keywords", "x")
    assert bad.code != 0 and "invalid email address" in bad.stderr
    csv_file = tmp_path / "subs.csv"
    csv_file.write_text("email,name,keywords,tz,hour\nb@example.org,B,\"diffusion\",UTC,7\n"
                        "ada@example.org,Ada again,,UTC,7\n")
    result = cli("subscribers", "import", str(csv_file))
    assert result.code == 0 and "imported 1, duplicates 1" in result.stderr
    assert "subs.csv:3: ada@example.org already present" in result.stderr
    listed = json.loads(cli("subscribers", "list", "--json").stdout)
    assert [s["email"] for s in listed] == ["ada@example.org", "b@example.org"]
    exported = cli("subscribers", "export").stdout
    assert exported.splitlines()[0] == "email,name,keywords,tz,hour,status,frequency"
    assert cli("subscribers", "remove", "b@example.org", "--yes").code == 0
    assert len(json.loads(cli("subscribers", "list", "--json").stdout)) == 1
    # The export re-imports into an empty database as it was.
    other = tmp_path / "o"
    other.mkdir()
    (other / "export.csv").write_text(exported)
    assert cli("subscribers", "import", "export.csv", cwd=other).code == 0
    assert len(json.loads(cli("subscribers", "list", "--json", cwd=other).stdout)) == 2


def test_an_operator_answers_a_data_request_and_an_erasure(cli) -> None:  # type: ignore[no-untyped-def]
    """A request that reached the operator (the reader's address bounces, so no
    emailed link can reach it): ``subscribers data`` prints what the reader's own link
    downloads, ``subscribers erase`` does what it erases, for good."""
    assert cli("subscribers", "add", "ada@example.org", "--keywords", "graph neural networks",
               "--name", "Ada").code == 0
    shown = cli("subscribers", "data", "Ada@Example.org")
    assert shown.code == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["subscriber"]["email"] == "ada@example.org"
    assert data["subscriber"]["keywords"] == "graph neural networks"
    assert [e["kind"] for e in data["events"]] == ["subscribed"]
    assert set(data) == {"subscriber", "votes", "learned_terms_removed", "events", "deliveries",
                         "mail_reports"}
    unknown = cli("subscribers", "data", "nobody@example.org")
    assert unknown.code != 0 and "nobody@example.org" in unknown.stderr
    assert "\n" not in unknown.stderr.strip()
    refused = cli("subscribers", "erase", "ada@example.org")  # no terminal, no --yes
    assert refused.code != 0 and "without --yes" in refused.stderr
    erased = cli("subscribers", "erase", "ada@example.org", "--yes")
    assert erased.code == 0 and "erased ada@example.org" in erased.stderr
    assert json.loads(cli("subscribers", "list", "--json").stdout) == []
    again = cli("subscribers", "add", "ada@example.org", "--keywords", "x")
    assert again.code != 0  # erased: the address cannot come back (remove allows it)


def test_config_file_and_environment(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('[smtp]\nport = 2525\n[web]\nsecret_keys = ["new", "old"]\n')
    s = load_settings(cfg, environ={"NEWSLETTER_SMTP__HOST": "mail.internal",
                                    "NEWSLETTER_DATABASE__URL": "sqlite:///x.db"})
    assert (s.smtp.port, s.smtp.host, s.database.url) == (2525, "mail.internal", "sqlite:///x.db")
    assert s.web.secret_keys == ["new", "old"]
    s2 = load_settings(cfg, environ={"NEWSLETTER_WEB__SECRET_KEYS": "a,b"})
    assert s2.web.secret_keys == ["a", "b"]
    with pytest.raises(ValidationError):
        s.smtp.port = 1  # type: ignore[misc]  # frozen: config cannot drift at run time


@pytest.mark.parametrize(
    "content, env, fragment",
    [
        ("[smtp]\nprot = 25\n", {}, "config.toml: [smtp] prot: unknown key"),
        ("[smtp]\nport = 'twenty'\n", {}, "config.toml: [smtp] port: Input should be a valid"),
        ("[smpt]\nport = 25\n", {}, "config.toml: smpt: unknown key"),
        ("[transport]\nbackend = 'pigeon'\n", {}, "[transport] backend"),
        ("[smtp\n", {}, "config.toml: not valid TOML"),
        ("", {"NEWSLETTER_SMTP__PORT": "x"},
         "environment variable NEWSLETTER_SMTP__PORT: [smtp] port"),
    ],
)
def test_config_errors_name_key_and_file(
    tmp_path: Path, content: str, env: dict[str, str], fragment: str
) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, environ=env)
    assert fragment in str(info.value).replace(str(tmp_path) + "/", "")


def test_config_error_exit_code(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "config.toml").write_text("[database]\nurl = 5\n")
    result = cli("entries")
    assert result.code == 2
    assert result.stderr.strip().startswith("error: config.toml: [database] url")
    missing = cli("--config", "nope.toml", "entries")
    assert missing.code == 2 and "nope.toml: config file not found" in missing.stderr


def test_shipped_config_is_valid_and_documents_every_key() -> None:
    root = Path(__file__).resolve().parent.parent
    settings = load_settings(root / "config.toml", environ={})
    text = (root / "config.toml").read_text()
    for section, model in settings:
        if section in ("sources", "source_file"):
            continue
        assert f"[{section}]" in text, section
        for key in type(model).model_fields:
            assert f"{key} =" in text, f"[{section}] {key} is not documented"


def test_demo_runs_the_whole_job_and_is_idempotent(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    first = cli("demo")
    assert first.code == 0, first.stderr
    assert "sent 8 emails" in first.stderr
    emails = sorted((tmp_path / "outbox").glob("*.eml"))
    assert len(emails) == 8
    again = cli("demo")
    assert again.code == 0 and "sent 0 emails" in again.stderr
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 8
    status = json.loads(cli("status", "--json").stdout)
    assert status["counts"]["sent"] == 8 and status["counts"]["pending"] == 0
    # a send with nothing left ranks nothing, and says no count of candidates (it said
    # "0 candidate papers" of an edition of 281)
    done = cli("send", "--yes")
    assert done.code == 0 and "nothing left to deliver" in done.stderr, done.stderr
    assert "candidate papers" not in done.stderr


def test_a_send_says_which_rows_a_stopped_run_left_in_another_edition(  # type: ignore[no-untyped-def]
        cli, tmp_path: Path) -> None:
    """Rows a stopped run left pending in another edition (another slot or day), too
    recent for this run to take up: `send` names them and the command that sends them
    now, where it said only "nothing left to deliver" and exited 0; that command sends
    them, once each."""
    assert cli("demo").code == 0
    with sqlite3.connect(tmp_path / "subscribers.db") as db:
        (day,) = db.execute("select day from editions").fetchone()
        db.execute("update deliveries set status = 'pending', message_id = '' "
                   "where id in (select id from deliveries where status = 'sent' limit 3)")
    other = cli("send", "--yes", "--date", "2031-01-01")
    assert other.code == 0, other.stderr
    lines = [ln for ln in other.stderr.splitlines() if "wait pending" in ln]
    assert "queued for workers" in lines[0] if lines else True
    assert len(lines) == 1 and lines[0].startswith(f"3 deliveries of edition {day} (#1)"), \
        other.stderr
    assert f"`newsletter send --date {day}`" in lines[0]
    again = cli("send", "--yes", "--date", day)
    assert again.code == 0 and "sent 3, failed 0" in again.stderr, again.stderr
    assert "wait pending" not in again.stderr
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 8 + 3


@pytest.mark.slow  # ~2 s: whole-corpus rankings
def test_rank_json_marks_trending_items(cli) -> None:  # type: ignore[no-untyped-def]
    assert cli("demo").code == 0
    data = json.loads(cli("rank", "--all-entries", "--json", "--limit", "3").stdout)
    by_email = {r["subscriber"]: r for r in data}
    donald = by_email["donald@example.org"]["picks"]
    assert donald and all(p["section"] == "trending" for p in donald)
    ada = by_email["ada@example.org"]["picks"]
    assert ada and ada[0]["section"] == "matches" and ada[0]["matched"]
    assert set(ada[0]["parts"]) == {"relevance", "popularity", "recency"}


def test_tables_print_titles_with_brackets_literally(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "b.json").write_text('[{"title": "[RE] Attention [/b] revisited", '
                                     '"abstract": "attention"}]')
    assert cli("ingest", "b.json").code == 0
    assert cli("subscribers", "add", "a@example.org", "--keywords", "attention").code == 0
    ranked = cli("rank")
    assert ranked.code == 0 and "[RE] Attention [/b] revisited" in ranked.stdout
    listed = cli("entries")
    assert listed.code == 0 and "[RE] Attention [/b] revisited" in listed.stdout


def test_printed_text_is_as_written(cli) -> None:  # type: ignore[no-untyped-def]
    """A profile (or title, or name) with words between colons or in brackets prints as
    written: rich turned ":rocket:" into a picture and "[b]" into bold."""
    profile = "rocket :rocket: engines, [b]old claims[/b], smile:smile:"
    assert cli("subscribers", "add", "ada@example.org", "--keywords", profile).code == 0
    listed = cli("subscribers", "list")
    assert listed.code == 0
    assert ":rocket:" in listed.stdout and "[b]old claims[/b]" in listed.stdout
    assert "smile:smile:" in listed.stdout and "\N{ROCKET}" not in listed.stdout


def test_a_database_failing_midway_says_what_to_do() -> None:
    """A full disk and a database server gone midway (a send's ledger) end in one line
    that says what to do, and that a rerun takes up where the run stopped."""
    import sqlite3

    import sqlalchemy.exc

    from newsletter.cli import database_trouble

    full = sqlalchemy.exc.OperationalError("INSERT", {}, sqlite3.OperationalError(
        "database or disk is full"))
    gone = sqlalchemy.exc.OperationalError("SELECT", {}, Exception(
        "connection failed: connection to server at \"127.0.0.1\", port 5432 failed: "
        "Connection refused"))
    socket = sqlalchemy.exc.OperationalError("SELECT", {}, Exception(
        'connection is bad: connection to server on socket "/run/postgresql/.s.PGSQL.5432" '
        "failed: No such file or directory"))
    said = {kind: str(database_trouble(exc)) for kind, exc in
            (("full", full), ("gone", gone), ("socket", socket))}
    assert said["full"].startswith("database: database or disk is full (free space on the "
                                   "disk that holds the database")
    assert "is the database server running" in said["gone"]
    assert "is the database server running" in said["socket"]
    for line in said.values():
        assert "\n" not in line and "takes up where this one stopped" in line
    # a server that answered and refused is not said to be away
    for refused in ('connection failed: connection to server at "127.0.0.1", port 5432 '
                    'failed: FATAL:  too many connections for role "newsletter"',
                    'connection failed: connection to server at "127.0.0.1", port 5432 '
                    'failed: FATAL:  database "digest" does not exist'):
        line = str(database_trouble(sqlalchemy.exc.OperationalError(
            "SELECT", {}, Exception(refused))))
        assert "running" not in line and line.startswith("database: connection failed")
