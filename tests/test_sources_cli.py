"""``sources list`` shows each source once at any terminal width; ``sources forget``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from .conftest import ROOT

LONG_URL = "http://127.0.0.1:9/a/rather/long/path/to/a/feed/that/does/not/answer/listing.rss"


def test_sources_list_once_each_readable_and_forget(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    shutil.copy(ROOT / "newsletter" / "data" / "sample_papers.json", tmp_path / "papers.json")
    assert cli("ingest", "papers.json").code == 0
    assert cli("ingest", "./papers.json").code == 0  # the same file, spelled differently
    assert cli("ingest", str(tmp_path / "papers.json")).code == 0
    assert cli("ingest", LONG_URL).code != 0  # a failure is recorded too
    assert cli("ingest", "papres.json").code != 0  # a typo

    rows = json.loads(cli("sources", "list", "--json").stdout)
    assert sorted(r["where"] for r in rows) == sorted(
        [str(tmp_path / "papers.json"), str(tmp_path / "papres.json"), LONG_URL])

    narrow = cli("sources", "list", env={"COLUMNS": "80"})
    assert narrow.code == 0, narrow.stderr
    lines = narrow.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines) and "…" not in narrow.stdout
    # the URL wraps, whole: its pieces, joined, are the URL
    assert LONG_URL in "".join(line.strip() for line in lines if line.startswith("    "))
    assert sum(1 for line in lines if not line.startswith(" ")) == 3  # each source once
    wide = cli("sources", "list", "--wide", env={"COLUMNS": "80"})
    assert any(LONG_URL in line for line in wide.stdout.splitlines())

    gone = cli("sources", "forget", "papres.json")
    assert gone.code == 0, gone.stderr
    url_gone = cli("sources", "forget", LONG_URL + "/")
    assert url_gone.code == 0, url_gone.stderr
    rows = json.loads(cli("sources", "list", "--json").stdout)
    assert [r["where"] for r in rows] == [str(tmp_path / "papers.json")]

    unknown = cli("sources", "forget", "nowhere.json")
    assert unknown.code != 0
    assert len(unknown.stderr.strip().splitlines()) == 1 and "nowhere.json" in unknown.stderr


def test_a_bad_source_holds_back_no_other(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Four [[sources]]: two good files, a malformed feed and a missing file. The good
    ones are stored (each source all or nothing), the bad ones recorded as failed, and
    the command ends non-zero with one line naming both; the scheduler's ingest job
    stores the same and logs one line a bad source, no traceback. One bad entry held
    back every other source's papers, until its next daily run."""
    import logging

    from newsletter.app import App
    from newsletter.config import load_settings
    from newsletter.delivery.scheduler import ingest_sources

    papers = json.loads((ROOT / "newsletter" / "data" / "sample_papers.json").read_text())
    (tmp_path / "a.json").write_text(json.dumps(papers[:5]))
    (tmp_path / "b.json").write_text(json.dumps(papers[5:9]))
    (tmp_path / "broken.atom").write_text('<?xml version="1.0"?><feed xmlns="http://www.w3.'
                                          'org/2005/Atom"><entry><title>x</title>')
    (tmp_path / "config.toml").write_text("".join(
        f'[[sources]]\nname = "{name}"\npath = "{path}"\n\n'
        for name, path in (("a", "a.json"), ("broken", "broken.atom"),
                           ("missing", "missing.json"), ("b", "b.json"))))
    r = cli("ingest")
    assert r.code == 1, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(
        "error: 2 of 4 sources could not be read: "), r.stderr
    assert "broken.atom" in errors[0] and "missing.json" in errors[0]
    assert "stored: 9 new" in r.stderr and "Traceback" not in r.stderr
    rows = {row["name"]: row["last"] for row in json.loads(
        cli("sources", "list", "--json").stdout)}
    assert rows["a"]["ok"] and rows["b"]["ok"], rows
    assert not rows["broken"]["ok"] and not rows["missing"]["ok"], rows
    # the scheduler's job: a new paper in a good source is stored beside the bad ones
    (tmp_path / "b.json").write_text(json.dumps(papers[5:10]))
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("newsletter")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        settings = load_settings(str(tmp_path / "config.toml")).replace(
            database={"url": f"sqlite:///{tmp_path / 'subscribers.db'}"})
        ingest_sources(App(settings))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    failures = [x for x in records if x.levelno >= logging.ERROR]
    assert len(failures) == 2 and not any(x.exc_info for x in failures), failures
    assert any("ingested 10 papers (1 new" in x.getMessage() for x in records), [
        x.getMessage() for x in records]


def test_an_ingest_holds_no_lock_while_it_fetches(tmp_path: Path) -> None:
    """A configured source's URL that answers slowly (here: not until released): while
    the ingest waits for it, another process can write. The fetch state was read in
    the storing transaction, whose first statement took SQLite's one write lock, held
    through every fetch (a dead URL: four tries of 30 s), so every other command
    waited, then failed."""
    import http.server
    import sqlite3
    import threading

    from newsletter.config import SourceConfig
    from newsletter.service.ingest import run_ingest
    from newsletter.store.db import get_engine, schema_state, session_scope

    body = (ROOT / "tests" / "payloads" / "blog.rss").read_bytes()
    asked, release = threading.Event(), threading.Event()

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            asked.set()
            release.wait(30)
            self.send_response(200)
            self.send_header("Content-Type", "application/rss+xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    db = tmp_path / "subscribers.db"
    url = f"sqlite:///{db}"
    source = SourceConfig(name="slow",
                          url=f"http://127.0.0.1:{server.server_address[1]}/feed.rss")
    engine = get_engine(url)
    with session_scope(engine) as s:  # a fetch state to read, as after a first ingest
        from newsletter.store import sources as store_sources

        store_sources.save_validators(s, source.url or "", '"v1"', None)
    done: list[Any] = []
    ingesting = threading.Thread(target=lambda: done.append(run_ingest(
        [source], lambda: session_scope(engine), [])))
    ingesting.start()
    try:
        assert asked.wait(30), "the ingest never fetched"
        other = sqlite3.connect(db, timeout=0.5)  # another process's writer, not waiting
        try:
            other.execute("BEGIN IMMEDIATE")  # raised "database is locked" before
            # ... and while a writer holds the lock, a command still reads which schema
            # the database has (it took the write lock to read it, and failed with
            # exit 2 after 30 s, where the units do not restart it)
            assert schema_state(engine) == "current"
            other.execute("ROLLBACK")
        finally:
            other.close()
    finally:
        release.set()
        ingesting.join(60)
        server.shutdown()
    assert done and done[0].new >= 1, done
