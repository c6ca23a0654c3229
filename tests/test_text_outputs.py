"""Text from outside (a sign-up's profile, a feed's ids and fields, a name) reaches the
operator's terminal, log lines and mail headers only as text (``newsletter.plaintext``):
control characters and the marks that reorder text are refused, cleaned or shown as
escapes, never passed on to run."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, update

from newsletter.store.db import get_engine, session_scope
from newsletter.store.models import Subscriber

from .web_support import Site, post_form, running_site

ESC = "\x1b]0;OWNED\x07\x1b[2J\x1b[41mred\x1b[0m"  # retitle, clear the screen, colour


@pytest.fixture
def site(world) -> Iterator[Site]:  # type: ignore[no-untyped-def]
    settings, engine = world
    with running_site(settings, engine) as s:
        yield s


def test_a_sign_ups_profile_loses_its_control_characters(site: Site) -> None:
    """The sign-up form (anyone on the internet) cannot store an escape sequence that
    the operator's `subscribers list` would run: control characters and bidi marks
    become spaces; what a form's textarea sends (CR LF between lines, tabs) stays."""
    client = httpx.Client(timeout=30)
    form = {"tz": "UTC", "hour": "7"}
    for i, keywords in enumerate((f"diffusion, {ESC}", "diffusion \u202egnp.exe",
                                  "graphs\x00, llm", "diffusion\x9b31m,\r\ngraphs\tnets")):
        r = post_form(client, site.url + "/", form | {"email": f"esc{i}@example.org",
                                                      "keywords": keywords},
                      site.url + "/subscribe")
        assert r.status_code == 200, (keywords, r.text[:300])
    site.wait_background()
    with session_scope(site.engine) as s:
        stored = dict(s.execute(select(Subscriber.email, Subscriber.keywords)
                                .where(Subscriber.email.like("esc%"))).all())
    assert len(stored) == 4
    for keywords in stored.values():
        assert not re.search("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202e]", keywords), keywords
    assert stored["esc3@example.org"] == "diffusion 31m,\r\ngraphs\tnets"


def test_the_cli_cleans_such_a_profile_and_shows_a_stored_one_as_escapes(
        cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`subscribers add` and `import` store the profile cleaned; a row stored before
    (or by hand) is listed with its escapes written out (as a table and as JSON), its
    CR LF line ends as line ends, and still re-imports from an export; a name loses its
    C1 characters and bidi marks as it loses CR and LF."""
    engine = get_engine(f"sqlite:///{tmp_path / 'subscribers.db'}")
    assert cli("subscribers", "add", "a@example.org", "--keywords", f"diffusion, {ESC}",
               "--name", "Ann\x9b31mRed \u202egnp.exe").code == 0
    (tmp_path / "subs.csv").write_text(
        "email,name,keywords,tz,hour\n"
        f"b@example.org,B,\"graphs, {ESC}\",UTC,7\n", encoding="utf-8")
    imported = cli("subscribers", "import", "subs.csv")
    assert imported.code == 0, imported.stderr
    with session_scope(engine) as s:
        rows = {e: (n, k) for e, n, k in s.execute(
            select(Subscriber.email, Subscriber.name, Subscriber.keywords))}
        assert all("\x1b" not in k and "\x07" not in k for _, k in rows.values()), rows
        assert rows["a@example.org"][0].split() == ["Ann", "31mRed", "gnp.exe"]
        # as an older version stored them: raw controls, a form's CR LF
        s.execute(update(Subscriber).where(Subscriber.email == "a@example.org")
                  .values(keywords=f"diffusion, {ESC}", name="Ann\x9b2J \u202eX"))
        s.execute(update(Subscriber).where(Subscriber.email == "b@example.org")
                  .values(keywords="graphs,\r\nllm"))
    listed = cli("subscribers", "list")
    assert listed.code == 0 and "\x1b" not in listed.stdout and "\x07" not in listed.stdout
    assert "\\x1b]0;OWNED\\x07" in listed.stdout and "\\x0d" not in listed.stdout
    as_json = cli("subscribers", "list", "--json")
    assert not re.search("[\x1b\x07\x9b\u202e]", as_json.stdout), as_json.stdout
    names = {r["email"]: r["name"] for r in json.loads(as_json.stdout)}
    assert names["a@example.org"] == "Ann\x9b2J \u202eX"  # the same value, escaped
    exported = cli("subscribers", "export")
    # written as storing them now cleans them: no control character of the old rows
    # reaches a spreadsheet or a terminal; a profile's line ends are kept
    assert not re.search("[\x1b\x07\x9b\u202e]", exported.stdout), exported.stdout
    assert "graphs,\r\nllm" in exported.stdout
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "export.csv").write_text(exported.stdout, encoding="utf-8")
    again = cli("subscribers", "import", "export.csv", cwd=tmp_path / "o")
    assert again.code == 0 and "imported 2" in again.stderr, again.stderr
    engine.dispose()


def test_the_cli_error_line_shows_what_it_quotes_as_text(cli) -> None:  # type: ignore[no-untyped-def]
    """An error quoting an argument (a file name holding ESC) prints it escaped."""
    result = cli("ingest", "x\x1b[2Jy.json")
    assert result.code != 0 and "\x1b" not in result.stderr
    assert "x\\x1b[2Jy.json: no such file" in result.stderr


def test_a_feeds_ids_source_and_titles_reach_messages_and_logs_as_text(
        cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A skipped item's id is printed with its escapes written out; a paper's source
    is cleaned like its other fields (it is named in warnings); a title loses a bidi
    override, which showed "gnp.exe" as "exe.png" in subjects."""
    items = [
        {"id": "\x1b[2J\x1b]52;c;ZWNobyBwd25lZA==\x1b\\jf", "abstract": "x"},
        {"id": "2501.00001", "title": "Diffusion study \u202egnp.exe\u202d",
         "abstract": "About diffusion.", "authors": ["Ann"], "published": "2025-12-20",
         "source": "evil\nWARNING fake line\x1b[2J",
         "code_url": "javascript:alert(1)", "url": "https://arxiv.org/abs/2501.00001"},
    ]
    (tmp_path / "papers.json").write_text(json.dumps(items), encoding="utf-8")
    tested = cli("sources", "test", "papers.json")
    assert "\x1b" not in tested.stdout + tested.stderr
    assert "\\x1b[2J\\x1b]52;c;" in tested.stdout + tested.stderr
    ingested = cli("ingest", "papers.json")
    assert ingested.code == 0, ingested.stderr
    assert "\x1b" not in ingested.stderr and "\nWARNING fake line" not in ingested.stderr
    from newsletter.store.models import Entry

    with session_scope(get_engine(f"sqlite:///{tmp_path / 'subscribers.db'}")) as s:
        title, source = s.execute(select(Entry.title, Entry.source)).one()
    assert "\u202e" not in title and "\u202d" not in title and "gnp.exe" in title
    assert "\n" not in source and "\x1b" not in source


def test_the_logs_write_one_line_a_record_and_outside_text_as_escapes() -> None:
    """A message quoting outside text (a line break, ESC, a C1 CSI, a bidi override)
    is one text log line with escapes; a traceback still follows on its own lines, the
    exception's text escaped too; a captured warning's own line break is not shown as
    one; the JSON format writes what JSON leaves raw (C1, bidi marks) as \\u escapes."""
    from newsletter.config import LogConfig
    from newsletter.observe.logs import JsonFormatter, TextFormatter

    for formatter in (TextFormatter(), JsonFormatter()):
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        handler.setFormatter(formatter)
        log = logging.getLogger("newsletter.test.text")
        log.addHandler(handler)
        log.propagate = False
        try:
            log.warning("%s: dropped", "evil\nWARNING forged\x1b[2J \x9b2J \u202egnp")
            try:
                raise ValueError("feed said \x1b]0;OWNED\x07")
            except ValueError:
                log.exception("failed")
            log.warning("a warning's text\n")
        finally:
            log.removeHandler(handler)
        out = stream.getvalue()
        assert not re.search("[\x1b\x07\x9b\u202e]", out), out
        lines = out.splitlines()
        if isinstance(formatter, TextFormatter):
            assert "evil\\x0aWARNING forged\\x1b[2J \\x9b2J \\u202egnp: dropped" in lines[0]
            assert not any(line.startswith("WARNING forged") for line in lines)
            assert lines[1].endswith("failed") and lines[2].startswith("Traceback")
            assert "ValueError: feed said \\x1b]0;OWNED\\x07" in out
            assert lines[-1].endswith("a warning's text")
        else:
            records = [json.loads(line) for line in lines]
            assert records[0]["msg"] == "evil\nWARNING forged\x1b[2J \x9b2J \u202egnp: dropped"
            assert "\\u009b2J \\u202egnp" in lines[0]
    assert LogConfig().format in ("text", "json")


@pytest.mark.slow  # ~2.5 s: a send
def test_a_feed_quoting_a_stored_profile_with_a_control_character_is_xml(site: Site) -> None:
    """A profile stored before control characters were refused (or by hand) is quoted
    by the feed's "matched: ..." summaries: the feed still parses as XML."""
    import datetime as dt
    import xml.etree.ElementTree as ET

    from .editions_support import run_send

    ada = site.sub_id("ada@example.org")
    with session_scope(site.engine) as s:
        s.execute(update(Subscriber).where(Subscriber.id == ada)
                  .values(keywords="diffusion\x1b, graph\x01 neural networks, llm"))
    run_send(site.settings, site.engine, dt.date(2025, 12, 26))
    feed = httpx.get(site.links.feed(ada))
    assert feed.status_code == 200
    root = ET.fromstring(feed.content)  # raises on a character XML does not allow
    summaries = [e.text or "" for e in root.iter("{http://www.w3.org/2005/Atom}summary")]
    assert summaries and any("matched" in t for t in summaries), summaries[:2]


def test_an_argument_that_is_not_utf8_is_one_line(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A name given in Latin-1 bytes (Python keeps the byte as a lone surrogate) is
    refused with one line naming the argument, and nothing is stored: it was a
    traceback from the database driver. A file name in any encoding still works."""
    result = cli("subscribers", "add", "a@example.org", "--keywords", "x",
                 "--name", "Ann\udc9b")
    assert result.code == 1
    assert result.stderr.strip() == (
        "error: argument 7 ('Ann\\x9b') is not valid UTF-8: write it in UTF-8 (check the "
        "terminal's or the script's encoding)")
    with session_scope(get_engine(f"sqlite:///{tmp_path / 'subscribers.db'}")) as s:
        assert s.scalar(select(Subscriber.email)) is None
    latin1 = tmp_path / "caf\udce9.json"  # the bytes b"caf\xe9.json"
    latin1.write_text("[]", encoding="utf-8")
    tested = cli("sources", "test", "caf\udce9.json")
    assert "not valid UTF-8" not in tested.stderr and "Traceback" not in tested.stderr


def test_a_path_that_is_not_utf8_is_printed_escaped(cli_process, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A Latin-1 file name (its byte kept as a lone surrogate) printed to a strict UTF-8
    stdout shows as an escape: it raised there, and was then taken for a bad argument."""
    (tmp_path / "caf\udce9.json").write_text("[]", encoding="utf-8")
    strict = {"PYTHONIOENCODING": "utf-8:strict"}  # (stderr is backslashreplace anyway)
    tested = cli_process("sources", "test", "caf\udce9.json", env=strict)
    assert tested.code == 0, tested.stderr
    assert "caf\\udce9.json: 0 papers" in tested.stderr and "UTF-8" not in tested.stderr
    as_json = cli_process("sources", "test", "--json", "caf\udce9.json", env=strict)
    assert as_json.code == 0 and "Traceback" not in as_json.stderr, as_json.stderr
    assert "caf\\udce9.json" in as_json.stdout and json.loads(as_json.stdout)


def test_a_lone_surrogate_in_a_feed_is_cleaned_not_a_traceback(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A JSON feed may escape a lone surrogate ("\\udce9"), which no UTF-8 database
    takes: the title loses it like a control character, and the paper is stored."""
    (tmp_path / "p.json").write_text(json.dumps([{
        "id": "2501.00002", "title": "Caf\udce9 theory", "abstract": "About diffusion.",
        "authors": ["Ann"], "published": "2025-12-20",
        "url": "https://arxiv.org/abs/2501.00002"}]), encoding="utf-8")
    ingested = cli("ingest", "p.json")
    assert ingested.code == 0, ingested.stderr
    from newsletter.store.models import Entry

    with session_scope(get_engine(f"sqlite:///{tmp_path / 'subscribers.db'}")) as s:
        assert s.scalar(select(Entry.title)) == "Caf theory"


def test_the_web_logs_tracebacks_are_escaped_after_the_token_filter() -> None:
    """The web's token filter writes the traceback text itself before any formatter:
    the text log still escapes it."""
    from newsletter.observe.logs import TextFormatter
    from newsletter.web.logs import RedactTokens

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter())
    handler.addFilter(RedactTokens())
    log = logging.getLogger("newsletter.test.web")
    log.addHandler(handler)
    log.propagate = False
    try:
        try:
            raise ValueError("feed said \x1b]0;OWNED\x07")
        except ValueError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    out = stream.getvalue()
    assert "\x1b" not in out and "ValueError: feed said \\x1b]0;OWNED\\x07" in out
