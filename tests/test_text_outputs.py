"""Text from outside (a sign-up's profile, a feed's ids and fields, a name) reaches the
operator's terminal, log lines and mail headers only as text (``newsletter.plaintext``):
control characters and the marks that reorder text are refused, cleaned or shown as
escapes, never passed on to run."""

from __future__ import annotations

import io
import json
import logging
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


def test_a_sign_up_with_control_characters_in_its_profile_is_refused(site: Site) -> None:
    """The sign-up form (anyone on the internet) cannot store an escape sequence that
    the operator's `subscribers list` would run; what a form's textarea sends (CR LF
    between lines, tabs) still signs up."""
    client = httpx.Client(timeout=30)
    form = {"email": "esc@example.org", "tz": "UTC", "hour": "7"}
    for keywords in (f"diffusion, {ESC}", "diffusion \u202egnp.exe", "graphs\x00, llm",
                     "diffusion\x9b31m"):
        r = post_form(client, site.url + "/", form | {"keywords": keywords},
                      site.url + "/subscribe")
        assert r.status_code == 400 and "control character" in r.text, (keywords, r.text[:300])
    r = post_form(client, site.url + "/", form | {"keywords": "diffusion,\r\ngraphs\tnets"},
                  site.url + "/subscribe")
    assert r.status_code == 200, r.text[:300]
    site.wait_background()
    with session_scope(site.engine) as s:
        stored = s.scalar(select(Subscriber.keywords).where(Subscriber.email == "esc@example.org"))
    assert stored is not None and "\x1b" not in stored


def test_the_cli_refuses_such_a_profile_and_shows_a_stored_one_as_escapes(
        cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`subscribers add` and `import` refuse the profile with one line naming it; a row
    stored before the check (or by hand) is listed with its escapes written out, and a
    name loses its C1 characters and bidi marks as it loses CR and LF."""
    added = cli("subscribers", "add", "a@example.org", "--keywords", f"diffusion, {ESC}")
    assert added.code != 0 and "control character (\\x1b) at character 12" in added.stderr
    assert "\x1b" not in added.stderr
    (tmp_path / "subs.csv").write_text(
        "email,name,keywords,tz,hour\n"
        f"b@example.org,B,\"graphs, {ESC}\",UTC,7\n"
        "c@example.org,Ann\x9b31mRed \u202egnp.exe,diffusion,UTC,7\n", encoding="utf-8")
    imported = cli("subscribers", "import", "subs.csv")
    assert imported.code != 0
    assert "subs.csv:2" in imported.stderr and "control character" in imported.stderr
    assert "\x1b" not in imported.stderr
    assert cli("subscribers", "add", "c@example.org", "--keywords", "diffusion",
               "--name", "Ann\x9b31mRed \u202egnp.exe").code == 0
    with session_scope(get_engine(f"sqlite:///{tmp_path / 'subscribers.db'}")) as s:
        names = dict(s.execute(select(Subscriber.email, Subscriber.name)).all())
        assert set(names) == {"c@example.org"}  # (the import stored nothing)
        assert names["c@example.org"].split() == ["Ann", "31mRed", "gnp.exe"]
        s.execute(update(Subscriber).values(keywords=f"diffusion, {ESC}"))
    listed = cli("subscribers", "list")
    assert listed.code == 0 and "\x1b" not in listed.stdout and "\x07" not in listed.stdout
    assert "\\x1b]0;OWNED\\x07" in listed.stdout


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


def test_the_text_log_writes_one_line_a_record() -> None:
    """A message quoting outside text (with a line break or ESC) is one log line; a
    traceback still follows on its own lines."""
    from newsletter.observe.logs import TextFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter())
    log = logging.getLogger("newsletter.test.text")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("%s: dropped", "evil\nWARNING forged\x1b[2J")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert "evil\\x0aWARNING forged\\x1b[2J: dropped" in lines[0]
    assert not any(line.startswith("WARNING forged") for line in lines)
    assert lines[1].endswith("failed") and lines[2].startswith("Traceback")


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
    refused with one line naming the argument, before anything is stored: it was a
    traceback from the database driver."""
    result = cli("subscribers", "add", "a@example.org", "--keywords", "x",
                 "--name", "Ann\udc9b")
    assert result.code == 1
    assert result.stderr.strip() == (
        "error: argument 7 ('Ann\\x9b') is not valid UTF-8: write it in UTF-8 (check the "
        "terminal's or the script's encoding)")
    assert not (tmp_path / "subscribers.db").exists()
