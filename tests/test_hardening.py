"""What an outside probe of the pages, webhooks and console found (issue N1-N11), each
checked against a real uvicorn on 127.0.0.1 and a real database."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given as hyp_given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as hyp_st
from sqlalchemy import select

from newsletter.store.db import get_engine, session_scope
from newsletter.store.models import Subscriber

from .test_admin import Console, csrf_of, start_console
from .web_support import CSRF, Site, post_form, running_site, world_on


@pytest.fixture
def site(world) -> Iterator[Site]:  # type: ignore[no-untyped-def]
    settings, engine = world
    with running_site(settings, engine) as s:
        yield s


@pytest.fixture
def console(world) -> Iterator[Console]:  # type: ignore[no-untyped-def]
    settings, engine = world
    yield from start_console(settings, engine)


def profile(site: Site, address: str) -> tuple[Any, ...]:
    with session_scope(site.engine) as s:
        sub = s.scalar(select(Subscriber).where(Subscriber.email == address))
        assert sub is not None
        return sub.keywords, sub.tz, sub.send_hour, sub.status


# ---- N2: no 5xx for any time zone, hour or field count ----------------------------------

BAD_ZONES = ["Europe", "__pycache__", "Europe/" + "x" * 5000, "../../etc/passwd", "UTC\x00",
             "right", "posix/../UTC", "Etc"]


def test_n2_sign_up_refuses_bad_zones_hours_and_field_counts(site: Site) -> None:
    client = httpx.Client(timeout=30)
    form = {"email": "n2@example.org", "keywords": "diffusion", "tz": "UTC", "hour": "7"}
    for tz in BAD_ZONES:
        r = post_form(client, site.url + "/", form | {"tz": tz}, site.url + "/subscribe")
        assert r.status_code == 400 and "unknown time zone" in r.text, (tz[:20], r.status_code)
    for hour in ("²", "٣", "+7", "1_0", "24", "-1", "7.0", "0x7", "9" * 5000):
        r = post_form(client, site.url + "/", form | {"hour": hour}, site.url + "/subscribe")
        assert r.status_code == 400 and "send hour" in r.text, (hour[:10], r.status_code)
    many = form | {f"f{i}": "x" for i in range(250)}
    r = post_form(client, site.url + "/", many, site.url + "/subscribe")
    assert r.status_code == 413
    site.wait_background()
    assert site.status("n2@example.org") is None
    # The good values still work.
    ok = post_form(client, site.url + "/", form | {"tz": "America/Argentina/Buenos_Aires",
                                                   "hour": "07"}, site.url + "/subscribe")
    assert ok.status_code == 200
    site.wait_background()
    assert site.status("n2@example.org") == "pending"


def test_sign_up_bounds_what_it_keeps_of_a_profile_and_a_zone(site: Site) -> None:
    """A sign-up's keywords longer than a person writes are refused with their size (a
    megabyte of them was stored, and kept in the parser's caches, several megabytes a
    post); a refused time zone is shown back when it could be a name, and neither is
    kept in any cache: the zone's options were cached by the raw value (5 MB a post)."""
    from newsletter.profile import MAX_PROFILE_CHARS, profile_terms
    from newsletter.web.context import _zone_options

    client = httpx.Client(timeout=60)
    form = {"email": "big@example.org", "keywords": "diffusion", "tz": "UTC", "hour": "7"}
    _zone_options.cache_clear()  # (other tests in this process asked for real zones)
    big = "mamba" + "," * MAX_PROFILE_CHARS  # one term: a valid profile, but too long
    r = post_form(client, site.url + "/", form | {"keywords": big}, site.url + "/subscribe")
    assert r.status_code == 400 and f"at most {MAX_PROFILE_CHARS:,}" in r.text, r.text[-300:]
    weighted = "^" * (MAX_PROFILE_CHARS - 2) + " x"  # refused by its weight, as before
    r = post_form(client, site.url + "/", form | {"keywords": weighted},
                  site.url + "/subscribe")
    assert r.status_code == 400 and "weight after ^ must be a number" in r.text
    missed = profile_terms.cache_info().misses  # (the server runs in this process)
    profile_terms(big)
    assert profile_terms.cache_info().misses == missed + 1  # the post left it uncached
    for tz in ("Mars/Olympus_Mons", "Mars/" + "x" * 200):
        r = post_form(client, site.url + "/", form | {"tz": tz}, site.url + "/subscribe")
        assert r.status_code == 400 and "unknown time zone" in r.text
        shown = f"<option selected>{tz}</option>" in r.text
        assert shown == (len(tz) < 64), tz[:20]
    cached = _zone_options.cache_info().currsize
    assert cached <= 2  # UTC and "" at most: the refused zones are not kept
    site.wait_background()
    assert site.status("big@example.org") is None


def test_the_weight_is_found_as_the_pattern_found_it() -> None:
    """``weight_at`` (one pass) finds what the former pattern found, searched from each
    ``^`` (which took time growing with the square of the term)."""
    import re

    from hypothesis import given
    from hypothesis import strategies as st

    from newsletter.profile import weight_at

    pattern = re.compile(r"\^\s*([^\s,]*)\s*$")

    @given(st.text(alphabet="^ ,\t\n\u00a0a2.-\"", max_size=14))
    def agree(body: str) -> None:
        m = pattern.search(body)
        at = weight_at(body)
        assert at == (m.start() if m else -1), body
        if m:
            assert body[at + 1:].strip() == m.group(1)

    agree()


def test_n2_preferences_and_one_click_refuse_cleanly(site: Site) -> None:
    client = httpx.Client(timeout=30)
    grace = site.sub_id("grace@example.org")
    before = profile(site, "grace@example.org")
    url = site.links.preferences(grace)
    for tz in BAD_ZONES[:3]:
        r = post_form(client, url, {"action": "save", "keywords": "gnn", "tz": tz,
                                    "hour": "7", "status": "active"})
        assert r.status_code == 400 and "unknown time zone" in r.text
    r = post_form(client, url, {"action": "save", "keywords": "gnn", "tz": "UTC",
                                "hour": "²", "status": "active"})
    assert r.status_code == 400
    assert profile(site, "grace@example.org") == before
    body = "List-Unsubscribe=One-Click&" + "&".join(f"f{i}=x" for i in range(250))
    r = httpx.post(site.links.unsubscribe(grace), content=body,
                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413
    assert site.status("grace@example.org") == "active"


def test_n2_console_import_and_edit_refuse_bad_zones(console: Console) -> None:
    c = console.login()
    data = "email,name,keywords,tz,hour\nzone@example.org,Z,gnn,Europe,7\n"
    r = c.post("/subscribers/import", data={"csrf": csrf_of(c)},
               files={"file": ("people.csv", data.encode(), "text/csv")})
    assert r.status_code == 400 and "unknown time zone" in r.text
    data = "email,name,keywords,tz,hour\nzone@example.org,Z,gnn,UTC,²\n"
    r = c.post("/subscribers/import", data={"csrf": csrf_of(c)},
               files={"file": ("people.csv", data.encode(), "text/csv")})
    assert r.status_code == 400 and "send hour" in r.text
    with session_scope(console.engine) as s:
        sub = s.scalar(select(Subscriber).where(Subscriber.email == "ada@example.org"))
        assert sub is not None
        sid = sub.id
    r = c.post(f"/subscribers/{sid}", data={
        "csrf": csrf_of(c, f"/subscribers/{sid}"), "name": "Ada", "keywords": "gnn",
        "tz": "__pycache__", "hour": "7", "status": "active"})
    assert r.status_code == 400 and "unknown time zone" in r.text
    assert re.search(r"zone@example\.org", c.get("/subscribers?q=zone").text) is None


# ---- N8: the console's numbers and searches are bounded ---------------------------------

@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def test_n8_console_bounds_numbers_and_searches(backend: str, tmp_path: Any,
                                                request: pytest.FixtureRequest) -> None:
    url = (f"sqlite:///{tmp_path / 'n8.db'}" if backend == "sqlite"
           else str(request.getfixturevalue("pg_url")))
    settings, engine = world_on(url, tmp_path)
    for console in start_console(settings, engine):
        c = console.login()
        huge = "99999999999999999999999"
        for path in ("/subscribers?after=9223372036854775808", "/subscribers?after=3000000000",
                     "/subscribers?after=-5", f"/subscribers?after={huge}",
                     "/editions/1?after=9223372036854775808"):
            r = c.get(path)
            assert r.status_code in (200, 404), (path, r.status_code)
        assert "ada@example.org" in c.get("/subscribers?after=-5").text
        for path in (f"/subscribers/{huge}", "/subscribers/3000000000",
                     "/subscribers/9223372036854775808", f"/editions/{huge}",
                     "/editions/3000000000", "/subscribers/" + "9" * 5000):
            r = c.get(path)
            assert r.status_code == 404, (path[:40], r.status_code)
        r = c.post("/editions/3000000000/retry", data={"csrf": csrf_of(c)})
        assert r.status_code == 404
        long = "a" * 50_500  # past SQLite's 50,000-byte LIKE pattern limit
        for by in ("address", "keyword", "any"):
            r = c.get("/subscribers", params={"q": long, "by": by})
            assert r.status_code == 200, (by, r.status_code)
        assert c.get("/papers", params={"q": long}).status_code == 200
        assert c.get("/papers", params={"q": "%_" * 10_000}).status_code == 200
        # Bounded, still searching: a short query finds as before.
        assert "ada@example.org" in c.get("/subscribers", params={"q": "ada@"}).text
    engine.dispose()


# ---- N9: CSV exports never hand a spreadsheet a formula ---------------------------------

FORMULAS = [("formula1@example.org", "=HYPERLINK(A1)", "=1+1, @SUM(1), +cmd"),
            ("formula2@example.org", "@name", "-video, diffusion"),
            ("formula3@example.org", "'=already quoted", "'Tis, gnn"),
            ("=cmd@example.org", "+plus", "''=two quotes")]


def test_n9_csv_exports_neutralise_formulas_and_reimport_exactly(
        console: Console, cli, tmp_path: Any) -> None:  # type: ignore[no-untyped-def]
    import csv
    import io

    from newsletter.store import subscribers as subs

    with session_scope(console.engine) as s:
        for email, name, keywords in FORMULAS:
            subs.add(s, email, name=name, keywords=keywords)
    c = console.login()
    exported = c.get("/subscribers/export.csv").text
    env = {"NEWSLETTER_DATABASE__URL": str(console.engine.url)}
    from_cli = cli("subscribers", "export", env=env)
    assert from_cli.code == 0, from_cli.stderr
    for text in (exported, from_cli.stdout):
        rows = list(csv.reader(io.StringIO(text)))
        cells = [cell for row in rows for cell in row]
        assert not [cell for cell in cells if cell[:1] in ("=", "+", "-", "@", "\t", "\r")]
        [first] = [r[1:3] for r in rows if r[0] == "formula1@example.org"]
        assert first == ["'=HYPERLINK(A1)", "'=1+1, @SUM(1), +cmd"]
    # The export re-imports as it was (the quote marks come off again).
    path = tmp_path / "export.csv"
    path.write_text(exported)
    fresh = {"NEWSLETTER_DATABASE__URL": f"sqlite:///{tmp_path / 'fresh.db'}"}
    assert cli("subscribers", "import", str(path), env=fresh).code == 0
    engine = get_engine(fresh["NEWSLETTER_DATABASE__URL"])
    with session_scope(engine) as s:
        got = {(x.email, x.name, x.keywords) for x in s.scalars(select(Subscriber))}
    assert set(FORMULAS) <= got
    engine.dispose()


@hyp_settings(max_examples=800, deadline=None)
@hyp_given(hyp_st.text(alphabet="=+-@'\t\r;,ab \"", max_size=14))
def test_csv_cells_are_text_however_a_spreadsheet_splits_them(value: str) -> None:
    """An exported value re-imports as it was, and no cell a spreadsheet can cut from
    it starts a formula: not the value, nor a piece after a ``;`` or a tab (where a
    spreadsheet set to a semicolon locale, or given tab-separated text, starts a cell:
    "Bob;=2+3" was the cell "=2+3")."""
    import re as re_

    from newsletter.store.subscribers import from_spreadsheet, spreadsheet_safe

    safe = spreadsheet_safe(value)
    assert from_spreadsheet(safe) == value
    for cell in [safe, *re_.split(r"[;\t]", safe)[1:]]:
        assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), (value, safe)


# ---- N4: every body is capped before it is parsed -------------------------------------

def raw_post(url: str, path: str, headers: dict[str, str], body: bytes, *,
             chunked: bool = False, timeout: float = 10.0) -> tuple[int, float]:
    """POST ``body`` over a bare socket and read the status line *without* sending the
    rest: (status, seconds). A server that wants the whole body first times out here."""
    import socket
    import time
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
    lines = [f"POST {path} HTTP/1.1", f"Host: {parts.netloc}", *(f"{k}: {v}" for k, v in
                                                                  headers.items())]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    start = time.monotonic()
    try:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        step = 64 * 1024
        for i in range(0, len(body), step):
            piece = body[i:i + step]
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            except (BrokenPipeError, ConnectionResetError):
                break  # the server answered and closed: that is the point
        reply = b""
        while b"\r\n" not in reply:
            data = sock.recv(4096)
            if not data:
                break
            reply += data
        return int(reply.split(b" ", 2)[1]), time.monotonic() - start
    finally:
        sock.close()


def test_n4_body_limits_before_parsing_on_every_route(console: Console) -> None:
    base = console.url.removesuffix("/admin")
    form = "application/x-www-form-urlencoded"
    # A 150 MB login announced by Content-Length: refused from the header alone (only the
    # first 2 MB are sent; a server reading the whole body would never answer).
    for path in ("/admin/login", "/subscribe", "/admin/subscribers/import",
                 "/webhooks/postmark/" + "x" * 32, "/preferences/1.AAAAAAAAAAAAAAAAAAAAAA"):
        status, _ = raw_post(base, path, {"Content-Type": form, "Content-Length": "150000000"},
                             b"name=a" + b"&" * 2_000_000)
        assert status == 413, (path, status)
    # No Content-Length (chunked): counted as it arrives, refused past 1 MB, before the end.
    for ctype, body in ((form, b"name=a" + b"&" * 3_000_000),
                        ("multipart/form-data; boundary=xx",
                         b"--xx\r\nContent-Disposition: form-data; name=\"file\"; "
                         b"filename=\"a.csv\"\r\n\r\n" + b"a" * 3_000_000)):
        status, _ = raw_post(base, "/admin/login", {"Content-Type": ctype}, body[:1_500_000],
                             chunked=True)
        assert status == 413, (ctype, status)
    # Within the caps everything works as before: a logged-in CSV import of 2 MB (over the
    # 1 MB form cap, under [admin] max_upload_bytes).
    c = console.login()
    name, keywords = "B" * 200, ", ".join(f"term{j}" for j in range(25))
    rows = "".join(f'bulk{i}@example.org,{name},"{keywords}",UTC,7\n' for i in range(3_000))
    csv_bytes = ("email,name,keywords,tz,hour\n" + rows).encode()
    assert len(csv_bytes) > 1_000_000
    r = c.post("/subscribers/import", data={"csrf": csrf_of(c)},
               files={"file": ("bulk.csv", csv_bytes, "text/csv")})
    assert r.status_code == 200, r.text[:300]
    with session_scope(console.engine) as s:
        assert s.scalar(select(Subscriber.id).where(Subscriber.email == "bulk2999@example.org"))


def wait_until_serving(base: str, timeout: float = 60) -> None:
    """Until a `newsletter web` process started at ``base`` answers (or ``timeout``)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(base + "/static/site.css", timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.2)


# ---- N6: no token in any log line -------------------------------------------------------

@pytest.mark.parametrize("fmt", ["text", "json"])
def test_n6_no_log_line_of_newsletter_web_carries_a_token(world, fmt: str) -> None:  # type: ignore[no-untyped-def]
    """`newsletter web` as a real process: an error answering a token URL (with its
    traceback), the access log of webhook and link URLs; its whole log is grepped."""
    import os
    import subprocess
    import sys

    from sqlalchemy import text

    from newsletter.render.links import LinkMaker, Signer
    from newsletter.store.keys import secret_keys
    from newsletter.web.webhooks import webhook_tokens

    from .conftest import free_port

    settings, engine = world
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with session_scope(engine) as s:
        served = settings.replace(web={"base_url": base})
        links = LinkMaker(served.web, served.sender, Signer(secret_keys(settings.web, s)))
        hook = f"{base}/webhooks/postmark/{webhook_tokens(s)['postmark']}"
        row = s.scalar(select(Subscriber).where(Subscriber.email == "grace@example.org"))
        assert row is not None
        grace, nonce = row.id, row.link_nonce
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")} | {
        "NEWSLETTER_DATABASE__URL": str(engine.url), "NEWSLETTER_WEB__BASE_URL": base,
        "NEWSLETTER_WEB__RENDER_PROCESSES": "0", "NEWSLETTER_LOG__FORMAT": fmt}
    proc = subprocess.Popen([sys.executable, "-m", "newsletter", "web", "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_serving(base)
        prefs = links.preferences(grace, nonce=nonce)
        unsub = links.unsubscribe(grace, nonce)
        with engine.begin() as conn:  # a real error while answering a token URL
            conn.execute(text("ALTER TABLE votes RENAME TO votes_gone"))
        try:
            assert httpx.get(prefs, timeout=30).status_code == 500
        finally:
            with engine.begin() as conn:
                conn.execute(text("ALTER TABLE votes_gone RENAME TO votes"))
        assert httpx.get(unsub, timeout=30).status_code == 200
        assert httpx.post(hook, json={}, timeout=30).status_code == 403  # not configured
        httpx.get(links.feed(grace, nonce), timeout=30)
    finally:
        proc.terminate()
        _, log = proc.communicate(timeout=30)
    assert "error answering GET /preferences/" in log and "no such table: votes" in log, log
    assert "/webhooks/postmark/" in log  # the access log is there
    secrets = [prefs.rsplit("/", 1)[1], unsub.rsplit("/", 1)[1], hook.rsplit("/", 1)[1],
               links.feed(grace, nonce).rsplit("/", 1)[1].removesuffix(".atom")]
    leaked = [s for s in secrets if s in log or s.split(".")[-1] in log]
    assert not leaked, log[-3000:]


def test_n6_the_filter_redacts_messages_arguments_tracebacks_and_fields() -> None:
    import io
    import logging

    from newsletter.config import LogConfig
    from newsletter.observe.logs import configure_logging
    from newsletter.web.logs import redact_logs

    token = "1f-2a.k3y9nonce.UxhyP-abcdefghijkl_pqr"
    url = f"https://digest.example.org/feedback/up/{token}/2401.00001"
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    try:
        for fmt in ("text", "json"):
            buf = io.StringIO()
            configure_logging(LogConfig(), fmt, stream=buf)
            redact_logs()
            log = logging.getLogger("some.library")
            try:
                raise ValueError(f"could not open {url}")
            except ValueError:
                log.exception("mailto:x?subject=unsubscribe %s", token, extra={"error": url})
            log.warning("old link 1f.UxhyP-abcdefghijkl_pqr and %s", "/confirm/x-y")
            assert "UxhyP" not in buf.getvalue() and "/confirm/x-y" not in buf.getvalue()
            assert "could not open https://digest.example.org/feedback/up/…" in buf.getvalue()
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


# ---- N3: a stranger cannot lock the operator out; subscribers see "an operator" ---------

def test_n3_failed_logins_slow_one_client_only_and_grow(console: Console) -> None:
    import datetime as dt

    from newsletter.store.models import AdminLoginAttempt

    from .test_admin import PASSWORD, login

    cfg = console.settings.admin

    def ahead(seconds: float) -> None:
        """Move every attempt ``seconds`` later: what is left of a wait is then at least
        that, however slow this machine answers (the schedule itself is checked above)."""
        with session_scope(console.engine) as s:
            for attempt in s.scalars(select(AdminLoginAttempt)):
                attempt.at += dt.timedelta(seconds=seconds)

    def waits(page: str) -> int:
        found = re.search(r"too many failed logins for this user from this address: "
                          r"try again in (\d+) seconds", page)
        assert found, page[-400:]
        return int(found.group(1))

    stranger = {"X-Forwarded-For": "203.0.113.9"}  # uvicorn trusts it from 127.0.0.1
    c = console.client()
    for _ in range(cfg.max_failures_per_user):
        assert login(c, "ops", "wrong password", **stranger).status_code == 401
    # The operator, from anywhere else, is not slowed at all ...
    assert login(console.client(), "ops", PASSWORD,
                 **{"X-Forwarded-For": "198.51.100.7"}).status_code == 303
    assert login(console.client(), "ops", PASSWORD,
                 **{"X-Forwarded-For": "2001:db8:1::5"}).status_code == 303
    # ... while the stranger now waits, even with the right password.
    ahead(5)
    refused = login(c, "ops", PASSWORD, **stranger)
    assert refused.status_code == 401 and 1 <= waits(refused.text) <= 6
    # Each further failure from the stranger doubles the wait: 2 s, 4 s, 8 s, 16 s.
    for wait in (2, 4, 8, 16):
        ahead(-100)  # the previous wait is over
        assert login(c, "ops", "wrong again", **stranger).status_code == 401
        ahead(5)
        assert wait + 1 <= waits(login(c, "ops", PASSWORD, **stranger).text) <= wait + 5
    # ... up to lockout_minutes, never more.
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    with session_scope(console.engine) as s:
        s.execute(AdminLoginAttempt.__table__.delete())
        for i in range(40):  # outside the per-client window, all but the last
            s.add(AdminLoginAttempt(name="ops", client="203.0.113.9", ok=False,
                                    at=now - dt.timedelta(hours=0 if i == 39 else 1)))
    assert 890 <= waits(login(c, "ops", PASSWORD, **stranger).text) <= 900
    # The schedule: free tries, then 1 s doubling, capped at lockout_minutes.
    from newsletter.web.admin.auth import login_delay

    assert [login_delay(n, cfg) for n in range(4, 11)] == [0, 1, 2, 4, 8, 16, 32]
    assert login_delay(60, cfg) == cfg.lockout_minutes * 60
    # Another IPv6 address of the same /64 is the same client.
    for _ in range(cfg.max_failures_per_user):
        login(c, "ops", "nope nope", **{"X-Forwarded-For": "2001:db8:2::1"})
    ahead(5)
    assert waits(login(c, "ops", PASSWORD, **{"X-Forwarded-For": "2001:db8:2::ffff"}).text)


def test_n3_subscribers_see_an_operator_not_the_login_name(console: Console) -> None:
    from newsletter.render.links import LinkMaker, Signer
    from newsletter.store.keys import secret_keys

    c = console.login()
    with session_scope(console.engine) as s:
        sub = s.scalar(select(Subscriber).where(Subscriber.email == "ada@example.org"))
        assert sub is not None
        sid, nonce = sub.id, sub.link_nonce
        links = LinkMaker(console.settings.web, console.settings.sender,
                          Signer(secret_keys(console.settings.web, s)))
    r = c.post(f"/subscribers/{sid}", data={
        "csrf": csrf_of(c, f"/subscribers/{sid}"), "name": "Ada L.", "keywords": "gnn",
        "tz": "UTC", "hour": "7", "status": "active"})
    assert r.status_code == 200
    assert "admin:ops" in c.get(f"/subscribers/{sid}").text  # operators still see who
    exported = httpx.get(links.mailbox_link("data", sid, nonce=nonce), timeout=30).text
    assert '"by": "an operator"' in exported and "ops" not in exported.replace(
        "an operator", "")


# ---- N1: an erased person's links never act on anyone else ------------------------------

def last_link_email(settings: Any, address: str) -> str:
    """The confirmation link in the newest email to ``address`` in the outbox."""
    import email
    import email.policy
    from pathlib import Path

    for eml in sorted(Path(settings.outbox.path).glob("*.eml"), key=lambda p: p.stat().st_mtime,
                      reverse=True):
        msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
        if msg["To"] and address in str(msg["To"]):
            body = msg.get_body(("plain",))
            assert body is not None
            found = re.search(r"(http://127\.0\.0\.1:\d+/confirm/\S+)", body.get_content())
            assert found
            return found.group(1)
    raise AssertionError(f"no email to {address}")


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def test_n1_an_erased_persons_links_answer_410_and_never_act_on_the_next_person(
        backend: str, tmp_path: Any, request: pytest.FixtureRequest) -> None:
    from sqlalchemy import func

    url = (f"sqlite:///{tmp_path / 'n1.db'}" if backend == "sqlite"
           else str(request.getfixturevalue("pg_url")))
    settings, engine = world_on(url, tmp_path)
    with running_site(settings, engine) as site:
        client = httpx.Client(timeout=30)
        with session_scope(engine) as s:
            old_id = int(s.scalar(select(func.max(Subscriber.id))) or 0)
            old = s.get(Subscriber, old_id)
            assert old is not None
            old_address = old.email
        links = site.links
        old_links = {"data": links.mailbox_link("data", old_id),
                     "prefs": links.preferences(old_id), "unsub": links.unsubscribe(old_id),
                     "feed": links.feed(old_id), "view": links.view(old_id, 0),
                     "erase": links.mailbox_link("erase", old_id),
                     "ask": links.preferences(old_id, "erase"),
                     "vote": links.votes(old_id, "2401.00001")["more"]}
        assert client.get(old_links["data"]).status_code == 200
        assert post_form(client, old_links["erase"], {}).status_code == 200  # erased
        assert site.status(old_address) is None
        # A new person signs up and confirms (their own link, from their email).
        form = {"email": "newcomer@example.org", "keywords": "private topic", "tz": "UTC",
                "hour": "7"}
        assert post_form(client, site.url + "/", form, site.url + "/subscribe").status_code == 200
        site.wait_background()
        confirm = last_link_email(site.settings, "newcomer@example.org")
        assert post_form(client, confirm, {}).status_code == 200
        new_id = site.sub_id("newcomer@example.org")
        assert new_id != old_id and site.status("newcomer@example.org") == "active"
        for name, link in old_links.items():
            got = client.get(link)
            assert got.status_code == 410, (name, got.status_code)
        # Even a row given the old id (a restore, or an id SQLite handed on before the
        # upgrade) is not the old links' person: they carry the old row's nonce.
        with session_scope(engine) as s:
            s.add(Subscriber(id=old_id, email="reused@example.org", keywords="secret words",
                             status="active"))
        for name, link in old_links.items():
            got = client.get(link)
            assert got.status_code == 410, (name, got.status_code)
            assert "reused" not in got.text and "secret words" not in got.text
        assert httpx.post(old_links["unsub"], content="List-Unsubscribe=One-Click",
                          headers={"Content-Type": "application/x-www-form-urlencoded"}
                          ).status_code == 410
        assert site.status("reused@example.org") == "active"
        # Their own links work.
        assert "secret words" in client.get(links.mailbox_link("data", old_id)).text
        assert "private topic" in client.get(links.mailbox_link("data", new_id)).text
        site.wait_background(60)
    engine.dispose()


def old_database(url: str) -> Any:
    """A database at the migration before link nonces (0011), holding subscribers 1-5
    with an event, a vote and a delivery each, subscriber 5 then deleted (on SQLite
    its id would go to the next sign-up), and the sample papers."""
    from alembic import command
    from sqlalchemy import text

    from newsletter.store.db import _alembic_config, make_engine

    engine = make_engine(url)
    command.upgrade(_alembic_config(engine), "0011")
    with engine.begin() as c:
        c.execute(text("INSERT INTO entries (id, title, abstract, authors, upvotes, url, "
                       "code_url, project_url, keywords, version, source, arrived_at, "
                       "updated_at, title_key, affiliations) VALUES ('e1', 'T', '', '[]', 0, "
                       "'', '', '', '[]', 0, '', '2025-01-01', '2025-01-01', '', '{}')"))
        c.execute(text("INSERT INTO editions (id, day, slot, created_at, cutoff) VALUES "
                       "(1, '2025-01-01', '', '2025-01-01', '2025-01-01')"))
        for i in range(1, 6):
            c.execute(text(
                "INSERT INTO subscribers (id, email, name, keywords, tz, send_hour, frequency, "
                "status, consent_source, bounce_count, created_at, updated_at) VALUES "
                f"({i}, 'p{i}@example.org', '', 'topic{i}', 'UTC', 7, 'daily', 'active', '', "
                "0, '2025-01-01', '2025-01-01')"))
            c.execute(text("INSERT INTO events (subscriber_id, kind, detail, at) VALUES "
                           f"({i}, 'subscribed', '{{}}', '2025-01-01')"))
            c.execute(text("INSERT INTO votes (subscriber_id, entry_id, direction, source, "
                           f"created_at) VALUES ({i}, 'e1', 1, 'email', '2025-01-01')"))
            c.execute(text(
                "INSERT INTO deliveries (edition_id, subscriber_id, day, entry_ids, details, "
                "status, reason, attempts, last_error, message_id, lease_owner, created_at, "
                f"updated_at) VALUES (1, {i}, '2025-01-01', '[]', '{{}}', 'sent', '', 1, '', "
                "'', '', '2025-01-01', '2025-01-01')"))
        c.execute(text("DELETE FROM subscribers WHERE id = 5"))
        if engine.dialect.name == "postgresql":  # as if the rows had come from the sequence
            c.execute(text("SELECT setval('subscribers_id_seq', 5)"))
            c.execute(text("SELECT setval('editions_id_seq', 1)"))
    return engine


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def test_n1_migration_keeps_everything_and_links_already_sent_keep_working(
        backend: str, tmp_path: Any, request: pytest.FixtureRequest) -> None:
    from sqlalchemy import func, text

    from newsletter.config import Settings
    from newsletter.store.db import upgrade
    from newsletter.store.models import Delivery, Event, Vote

    url = (f"sqlite:///{tmp_path / 'old.db'}" if backend == "sqlite"
           else str(request.getfixturevalue("pg_url")))
    engine = old_database(url)
    upgrade(engine)  # what the first command after the update does
    with session_scope(engine) as s:
        assert [s.scalar(select(func.count()).select_from(t)) for t in (Event, Vote, Delivery)
                ] == [5, 4, 4]  # the rebuilt table's dependants kept their rows (5's
        # event stays, its subscriber_id set to NULL by the delete, as before)
        nonces = list(s.scalars(select(Subscriber.link_nonce)))
        assert len(set(nonces)) == 4 and all(0 < n < 2**62 for n in nonces)
        s.add(Subscriber(email="after@example.org", keywords="after", status="active"))
    with session_scope(engine) as s:
        new_id = s.scalar(select(Subscriber.id).where(Subscriber.email == "after@example.org"))
    if backend == "sqlite":
        from alembic import command

        from newsletter.store.db import _alembic_config

        def ddl() -> str:
            with session_scope(engine, readonly=True) as s:
                return str(s.execute(text(
                    "SELECT sql FROM sqlite_master WHERE name = 'subscribers'")).scalar())

        assert "AUTOINCREMENT" in ddl()
        # a later migration's way down (and up again) keeps ids never reused (0014
        # rebuilt the table without it on its way down)
        command.downgrade(_alembic_config(engine), "0010")
        assert "AUTOINCREMENT" in ddl()
        upgrade(engine)
        assert "AUTOINCREMENT" in ddl()
    settings = Settings().replace(database={"url": url},
                                  outbox={"path": str(tmp_path / "outbox")})
    with running_site(settings, engine) as site:
        old_links = site.signer  # links in emails already sent: no nonce
        for i in range(1, 5):  # the subscribers of before: their old links still work
            page = httpx.get(f"{site.url}/preferences/{old_links.token('preferences', i)}")
            assert page.status_code == 200 and f"topic{i}" in page.text
        # Subscriber 5's old links name an id the new row now has: refused, not theirs.
        assert new_id == 5 or backend == "postgresql"
        got = httpx.get(f"{site.url}/preferences/{old_links.token('preferences', 5)}")
        assert got.status_code == 410 and "after" not in got.text
        # The new subscriber's links carry their nonce and work.
        assert "after" in httpx.get(site.links.preferences(int(new_id or 0))).text
    engine.dispose()


def test_n1_links_in_a_sent_edition_carry_the_nonce_and_work(world, cli) -> None:  # type: ignore[no-untyped-def]
    import email
    import email.policy
    from pathlib import Path

    settings, engine = world
    with running_site(settings, engine) as site:
        env = {"NEWSLETTER_DATABASE__URL": str(engine.url),
               "NEWSLETTER_OUTBOX__PATH": settings.outbox.path,
               "NEWSLETTER_SENDER__FROM_ADDRESS": "digest@example.org",
               "NEWSLETTER_WEB__BASE_URL": site.url}
        sent = cli("send", "--yes", "--date", "2025-12-26", env=env)
        assert sent.code == 0, sent.stderr
        eml = sorted(Path(settings.outbox.path).glob("*.eml"))[0]
        msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
        to = str(msg["To"]).split("<")[-1].rstrip(">")
        unsub = re.search(r"<(http[^>]+)>", str(msg["List-Unsubscribe"]))
        assert unsub
        token = unsub.group(1).rsplit("/", 1)[1]
        with session_scope(engine) as s:
            sub = s.scalar(select(Subscriber).where(Subscriber.email == to))
            assert sub is not None
        assert token.count(".") == 2  # ids . nonce . mac
        assert site.signer.claims("unsubscribe", token).nonce == sub.link_nonce
        page = httpx.get(unsub.group(1), timeout=30)
        assert page.status_code == 200 and to in page.text
        html = msg.get_body(("html",))
        assert html is not None
        links = re.findall(r'href="(http://127[^"]+/(?:preferences|view|feedback/up)/[^"]+)"',
                           html.get_content())
        assert len(links) >= 3
        for link in links[:6]:
            assert httpx.get(link.replace("&amp;", "&"), timeout=30).status_code == 200, link
        assert httpx.post(unsub.group(1), content="List-Unsubscribe=One-Click", timeout=30,
                          headers={"Content-Type": "application/x-www-form-urlencoded"}
                          ).status_code == 200
        assert site.status(to) == "unsubscribed"


# ---- N5: a sign-up for a known address changes nothing until its link is used -----------

def sign_up(site: Site, client: httpx.Client, address: str, keywords: str, tz: str = "UTC",
            hour: str = "7") -> None:
    r = post_form(client, site.url + "/", {"email": address, "keywords": keywords, "tz": tz,
                                           "hour": hour}, site.url + "/subscribe")
    assert r.status_code == 200
    site.wait_background()


def test_n5_a_sign_up_for_a_known_address_waits_for_its_confirmation(world) -> None:  # type: ignore[no-untyped-def]
    settings, engine = world
    with running_site(settings, engine, confirm_interval_minutes=0,
                      confirms_per_day=10) as site:
        client = httpx.Client(timeout=30)
        grace = site.sub_id("grace@example.org")
        httpx.post(site.links.unsubscribe(grace))
        before = profile(site, "grace@example.org")
        assert before[3] == "unsubscribed"
        # A stranger types grace's address with other settings: her row stays as it is.
        sign_up(site, client, "grace@example.org", "something else entirely",
                "Asia/Tokyo", "3")
        assert profile(site, "grace@example.org") == before
        # Her own confirmation link (from the email) applies them, and she is back.
        link = last_link_email(site.settings, "grace@example.org")
        page = post_form(client, link, {})
        assert page.status_code == 200 and "You are subscribed" in page.text
        assert profile(site, "grace@example.org") == (
            "something else entirely", "Asia/Tokyo", 3, "active")
        # A pending address: a second sign-up does not rewrite the first one's settings;
        # each link applies its own; a replaced link says so and changes nothing.
        sign_up(site, client, "fresh@example.org", "first choice")
        first = last_link_email(site.settings, "fresh@example.org")
        sign_up(site, client, "fresh@example.org", "second choice", "Europe/Paris", "9")
        second = last_link_email(site.settings, "fresh@example.org")
        assert profile(site, "fresh@example.org") == ("first choice", "UTC", 7, "pending")
        sign_up(site, client, "fresh@example.org", "third choice")
        third = last_link_email(site.settings, "fresh@example.org")
        assert profile(site, "fresh@example.org") == ("first choice", "UTC", 7, "pending")
        # The replaced link's page says so at once, with no button that can do nothing;
        # pressed on a page opened before it was replaced, it changes nothing either.
        shown = client.get(second)
        assert shown.status_code == 409 and "newer sign-up" in shown.text
        assert "<form" not in shown.text
        replaced = post_form(client, first, {}, action=second)
        assert replaced.status_code == 409 and "newer sign-up" in replaced.text
        assert post_form(client, first, {}).status_code == 200
        assert profile(site, "fresh@example.org") == ("first choice", "UTC", 7, "active")
        assert "Saved" in post_form(client, third, {}).text
        assert profile(site, "fresh@example.org") == ("third choice", "UTC", 7, "active")


# ---- N10: an erasure leaves no copy on disk ---------------------------------------------

def test_n10_erasure_leaves_no_copy_in_the_database_files(world) -> None:  # type: ignore[no-untyped-def]
    from pathlib import Path

    settings, engine = world
    db = Path(str(engine.url.database))
    with running_site(settings, engine) as site:
        client = httpx.Client(timeout=30)
        address = "quokka.zanzibar@example.org"
        sign_up(site, client, address, "zanzibar quokka habitats")
        assert post_form(client, last_link_email(site.settings, address), {}
                         ).status_code == 200
        sub_id = site.sub_id(address)
        prefs = site.links.preferences(sub_id)
        for words in ("quokka marsupial ecology", "zanzibar island biogeography"):
            assert post_form(client, prefs, {"action": "save", "keywords": words,
                                             "tz": "UTC", "hour": "7",
                                             "status": "active"}).status_code == 200
        assert post_form(client, site.links.mailbox_link("erase", sub_id), {}
                         ).status_code == 200
        assert site.status(address) is None
        files = {p.name: p.read_bytes() for p in db.parent.glob(db.name + "*")}
        assert files, db
        for secret in (address, "quokka", "zanzibar"):
            found = [name for name, data in files.items() if secret.encode() in data]
            assert not found, (secret, found)


# ---- N11 --------------------------------------------------------------------------------

def test_n11_the_data_export_has_the_votes(site: Site) -> None:
    client = httpx.Client(timeout=30)
    ada = site.sub_id("ada@example.org")
    with session_scope(site.engine) as s:
        from newsletter.store.models import Entry

        paper = s.scalar(select(Entry.id).limit(1))
    assert paper is not None
    voted = post_form(client, site.links.votes(ada, paper)["more"], {})
    assert voted.status_code == 200
    data = client.get(site.links.mailbox_link("data", ada)).json()
    assert [v["paper"] for v in data["votes"]] == [paper] and data["votes"][0]["direction"] == 1


def test_n11_a_confirmation_link_does_not_say_subscribed_when_it_is_not(site: Site) -> None:
    from newsletter.store.models import utcnow

    client = httpx.Client(timeout=30)
    sign_up(site, client, "late@example.org", "gnn")
    link = last_link_email(site.settings, "late@example.org")
    opened = client.get(link)  # its page, opened before the complaint: a button
    found = CSRF.search(opened.text)
    assert opened.status_code == 200 and found
    with session_scope(site.engine) as s:  # a complaint arrives before they confirm
        sub = s.scalar(select(Subscriber).where(Subscriber.email == "late@example.org"))
        assert sub is not None
        sub.status, sub.updated_at = "complained", utcnow()
    page = client.post(link, data={"csrf": found.group(1)},
                       headers={"Origin": site.url})
    assert page.status_code == 409 and "You are subscribed" not in page.text
    assert "marked as spam" in page.text and site.status("late@example.org") == "complained"
    # opened again now: it says so at once, with no button that could do nothing
    again = client.get(link)
    assert again.status_code == 409 and "marked as spam" in again.text
    assert "<form" not in again.text


def test_n11_a_failed_send_does_not_use_up_the_addresss_confirmations(world, caplog) -> None:  # type: ignore[no-untyped-def]
    import logging

    from sqlalchemy import func

    from newsletter.store.models import Event

    from .conftest import free_port

    settings, engine = world
    dead = settings.replace(transport={"backend": "smtp", "max_attempts": 1},
                            smtp={"host": "127.0.0.1", "port": free_port(), "timeout": 2})
    caplog.set_level(logging.INFO, logger="newsletter.web.signup")
    with running_site(dead, engine) as site:
        client = httpx.Client(timeout=30)
        for _ in range(2):  # within confirm_interval_minutes: both are tried
            sign_up(site, client, "retry@example.org", "gnn")
        sub_id = site.sub_id("retry@example.org")
    tries = [r for r in caplog.records if "confirmation email" in r.getMessage()
             and r.levelno >= logging.ERROR]
    assert len(tries) == 2, [r.getMessage() for r in caplog.records]
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Event).where(
            Event.subscriber_id == sub_id, Event.kind == "confirmation_sent")) == 0


def test_n11_an_erased_persons_own_sign_up_is_honoured_when_they_confirm(site: Site) -> None:
    from sqlalchemy import func

    from newsletter.store.models import Suppression

    client = httpx.Client(timeout=30)
    ada = site.sub_id("ada@example.org")
    assert post_form(client, site.links.mailbox_link("erase", ada), {}).status_code == 200
    sign_up(site, client, "ada@example.org", "graph neural networks")
    assert site.status("ada@example.org") == "pending"
    # Until they confirm, the erasure stands (nothing is sent to a pending address).
    with session_scope(site.engine) as s:
        assert s.scalar(select(func.count()).select_from(Suppression)) == 1
    done = post_form(client, last_link_email(site.settings, "ada@example.org"), {})
    assert done.status_code == 200 and "You are subscribed" in done.text
    assert site.status("ada@example.org") == "active"
    with session_scope(site.engine) as s:
        assert s.scalar(select(func.count()).select_from(Suppression)) == 0


def test_n11_an_unconfirmed_sign_up_of_an_erased_address_does_not_stay(world) -> None:  # type: ignore[no-untyped-def]
    import datetime as dt

    from newsletter.service import subscribers
    from newsletter.store.models import utcnow

    settings, engine = world
    with session_scope(engine) as s:
        ada = s.scalar(select(Subscriber).where(Subscriber.email == "ada@example.org"))
        assert ada is not None
        subscribers.erase(s, ada.id)
    form = subscribers.sign_up_form("ada@example.org", "gnn", "UTC", 7)
    with session_scope(engine) as s:
        assert subscribers.sign_up(s, form, settings.web) is not None
    with session_scope(engine) as s:  # their links expire unused
        pending = s.scalar(select(Subscriber).where(Subscriber.email == "ada@example.org"))
        assert pending is not None and pending.status == "pending"
        pending.created_at = utcnow() - dt.timedelta(hours=settings.web.confirm_hours + 1)
    other = subscribers.sign_up_form("someone@example.org", "gnn", "UTC", 7)
    with session_scope(engine) as s:  # the next sign-up of anyone tidies up
        subscribers.sign_up(s, other, settings.web)
    with session_scope(engine) as s:
        assert s.scalar(select(Subscriber).where(Subscriber.email == "ada@example.org")) is None


# ---- behind a proxy: the client the limits count ----------------------------------------

def test_the_sign_up_limit_counts_the_client_a_trusted_proxy_names(world) -> None:  # type: ignore[no-untyped-def]
    """`newsletter web` as a real process, behind a "proxy" at 127.0.0.2 (as Docker's
    bridge gateway is to a container): with [web] forwarded_allow_ips naming it, each
    visitor its X-Forwarded-For names has a limit of their own, and the address nginx
    appends (the rightmost) is the one counted, whatever the client wrote before it. A
    peer not named (127.0.0.3) is counted as itself, its header ignored: before the
    setting, the proxy was such a peer and every visitor shared its one limit."""
    import os
    import subprocess
    import sys

    from .conftest import free_port

    _, engine = world
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")} | {
        "NEWSLETTER_DATABASE__URL": str(engine.url), "NEWSLETTER_WEB__BASE_URL": base,
        "NEWSLETTER_WEB__RENDER_PROCESSES": "0",
        "NEWSLETTER_WEB__SIGNUPS_PER_CLIENT_PER_HOUR": "2",
        "NEWSLETTER_WEB__FORWARDED_ALLOW_IPS": "127.0.0.2"}
    proc = subprocess.Popen([sys.executable, "-m", "newsletter", "web", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)

    def sign_up(source: str, forwarded: str | None, n: int) -> int:
        headers = {"X-Forwarded-For": forwarded} if forwarded else {}
        transport = httpx.HTTPTransport(local_address=source)
        with httpx.Client(base_url=base, transport=transport, headers=headers,
                          timeout=30) as c:
            token = csrf_of(c, "/subscribe")
            return c.post("/subscribe", data={
                "csrf": token, "email": f"n{n}@example.org", "keywords": "diffusion",
                "tz": "UTC", "hour": "7"}).status_code

    try:
        wait_until_serving(base)
        # through the proxy: three visitors, each under their own limit of 2
        assert [sign_up("127.0.0.2", f"10.0.0.{i}", i) for i in range(3)] == [200] * 3
        # one visitor: a third sign-up is over; a name written before nginx's own
        # (the client's X-Forwarded-For, which nginx appends to) changes nothing
        codes = [sign_up("127.0.0.2", f"203.0.113.{i}, 10.0.0.9", 10 + i) for i in range(3)]
        assert codes == [200, 200, 429]
        # not a named proxy: its header is ignored, so its visitors share its address
        codes = [sign_up("127.0.0.3", f"10.1.0.{i}", 20 + i) for i in range(3)]
        assert codes == [200, 200, 429]
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_pages_with_a_subscribers_data_are_never_stored_by_a_cache(site: Site) -> None:
    """Preferences, their archive, the unsubscribe and erase pages, view in browser and
    the feed show a subscriber's address or emails (and set the CSRF cookie): no-store,
    so neither a shared cache nor the next user of a shared browser keeps them; the
    static files keep their own public caching."""
    client = httpx.Client(timeout=30)
    ada = site.sub_id("ada@example.org")
    with session_scope(site.engine) as s:
        from newsletter.store.models import Edition

        edition = s.scalar(select(Edition.id).limit(1)) or 1
    urls = [site.links.preferences(ada), site.links.preferences(ada, "archive"),
            site.links.preferences(ada, "erase"), site.links.mailbox_link("erase", ada),
            site.links.mailbox_link("data", ada), site.links.unsubscribe(ada),
            site.links.view(ada, edition), site.links.feed(ada), site.url + "/subscribe"]
    for url in urls:
        r = client.get(url)
        assert r.status_code < 500, (url, r.status_code)
        assert r.headers.get("cache-control") == "no-store", (url, r.headers)
    css = client.get(site.url + "/static/site.css")
    assert css.headers["cache-control"] == "public, max-age=3600"


def test_sign_ups_from_all_clients_together_have_a_cap(world, caplog) -> None:  # type: ignore[no-untyped-def]
    """Many clients, each under its own limit (an IPv6 /48 holds 65,536 /64s, each a
    client): [web] signups_per_hour bounds the confirmation emails they make together.
    Past it every client is refused (429), the log says so once, and the posts refused
    send no email."""
    import logging

    from .web_support import running_site

    settings, engine = world
    with running_site(settings, engine, signups_per_client_per_hour=2,
                      signups_per_hour=3) as site:
        outbox = Path(site.settings.outbox.path)
        before = len(list(outbox.glob("*.eml"))) if outbox.exists() else 0

        def sign_up(source: str, n: int) -> int:
            transport = httpx.HTTPTransport(local_address=source)
            with httpx.Client(transport=transport, timeout=30) as c:
                return post_form(c, site.url + "/subscribe", {
                    "email": f"crowd{n}@example.org", "keywords": "diffusion",
                    "tz": "UTC", "hour": "7"}).status_code

        with caplog.at_level(logging.WARNING, logger="newsletter.web"):
            codes = [sign_up(f"127.0.0.{10 + i}", i) for i in range(5)]
        assert codes == [200, 200, 200, 429, 429]
        refusals = [r for r in caplog.records if "sign-ups refused" in r.getMessage()]
        assert len(refusals) == 1 and "signups_per_hour" in refusals[0].getMessage()
        site.wait_background()
        made = len(list(outbox.glob("*.eml"))) - before
        assert made == 3, made
