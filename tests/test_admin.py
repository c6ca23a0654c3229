"""The operator console at /admin, over real HTTP (uvicorn on 127.0.0.1): access
control walked over the route table, sessions, CSRF, login limits, CSV import and
export, pagination, and the ``newsletter admin`` commands."""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import func, select, update
from starlette.routing import Mount, Route

from newsletter.app import App
from newsletter.render.links import Signer
from newsletter.store.db import session_scope
from newsletter.store.keys import secret_keys
from newsletter.store.models import (
    AdminLoginAttempt,
    AdminSession,
    Delivery,
    Event,
    Subscriber,
)
from newsletter.web import create_app
from newsletter.web.admin import PUBLIC, auth

from .web_support import TLS, running_site

PASSWORD = "correct horse battery"


@dataclass
class Console:
    url: str  # .../admin
    settings: Any
    engine: Any

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, follow_redirects=False, timeout=60, verify=TLS)

    def login(self, name: str = "ops", password: str = PASSWORD) -> httpx.Client:
        c = self.client()
        r = login(c, name, password)
        assert r.status_code == 303, r.text
        return c


def login(c: httpx.Client, name: str, password: str, **headers: str) -> httpx.Response:
    page = c.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token, page.text
    return c.post("/login", data={"name": name, "password": password,
                                  "csrf": token.group(1)}, headers=headers)


def csrf_of(c: httpx.Client, path: str = "/") -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', c.get(path).text)
    assert found
    return found.group(1)


def start_console(settings: Any, engine: Any, *, user: bool = True,
                  **web: Any) -> Iterator[Console]:
    if user:
        with session_scope(engine) as s:
            auth.add_user(s, "ops", PASSWORD)
    # no render processes: no console page uses them, and each costs a Python start
    with running_site(settings, engine, **web) as site:
        yield Console(site.url + "/admin", site.settings, engine)


@pytest.fixture
def console(world) -> Iterator[Console]:  # type: ignore[no-untyped-def]
    settings, engine = world
    yield from start_console(settings, engine)


def admin_routes() -> list[Route]:
    """Every route of the console, read from the app's own route table."""
    from newsletter.config import Settings

    app = create_app(App(Settings().replace(database={"url": "sqlite://"})))
    [mount] = [r for r in app.routes if isinstance(r, Mount) and r.path == "/admin"]
    routes = [r for r in mount.app.routes if isinstance(r, Route)]  # type: ignore[union-attr]
    assert len(routes) >= 10
    return routes


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def test_every_route_refuses_without_a_session(console: Console) -> None:
    """Walked over the route table, so a route added later cannot be forgotten."""
    signer = None
    with session_scope(console.engine) as s:
        signer = Signer(secret_keys(console.settings.web, s))
    link_token = signer.token("preferences", 1)
    forged = auth.CookieSigner(["not the key"]).sign("session", "x" * 43)
    checked = 0
    for route in admin_routes():
        if route.path in PUBLIC:
            continue
        for method in sorted((route.methods or {"GET"}) - {"HEAD"}):
            for cookie in (None, forged, link_token, "garbage"):
                c = console.client()
                if cookie:
                    c.cookies.set(auth.COOKIE, cookie)
                r = c.request(method, concrete(route.path), data={"csrf": "x"})
                if method == "GET":
                    assert r.status_code == 303, (route.path, r.status_code)
                    assert r.headers["location"].startswith("/admin/login?next=")
                else:
                    assert r.status_code == 403, (route.path, method, r.status_code)
                assert "subscriber" not in r.text.lower() or r.status_code == 303
                checked += 1
    assert checked >= 40
    # The public ones are what they say.
    assert console.client().get("/login").status_code == 200
    assert console.client().get("/static/admin.css").headers["content-type"].startswith("text/css")


@pytest.mark.slow  # ~2.5 s: argon2 on every attempt
def test_login_session_logout_and_expiry(console: Console) -> None:
    c = console.client()
    bad = login(c, "ops", "wrong password")
    assert bad.status_code == 401 and "wrong user name or password" in bad.text
    unknown = login(c, "nobody", "wrong password")
    assert unknown.status_code == 401 and "wrong user name or password" in unknown.text
    ok = login(c, "ops", PASSWORD)
    assert ok.status_code == 303
    cookie = ok.headers["set-cookie"]
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
    assert "Path=/admin" in cookie and "Secure" not in cookie  # base_url is http here
    assert c.get("/").status_code == 200
    # A tampered cookie is refused before the database is asked.
    value = c.cookies.get(auth.COOKIE)
    assert value
    forged = httpx.Client(base_url=console.url)
    forged.cookies.set(auth.COOKIE, value[:-2] + ("AA" if not value.endswith("AA") else "BB"))
    assert forged.get("/", follow_redirects=False).status_code == 303
    # Expired: refused.
    with session_scope(console.engine) as s:
        s.execute(update(AdminSession).values(expires_at=dt.datetime(2000, 1, 1)))
    assert c.get("/").status_code == 303
    # Logout ends the session server-side: the old cookie no longer works.
    c2 = console.login()
    old = c2.cookies.get(auth.COOKIE)
    assert c2.post("/logout", data={"csrf": csrf_of(c2)}).status_code == 303
    again = console.client()
    again.cookies.set(auth.COOKIE, old or "")
    assert again.get("/").status_code == 303


def test_secure_cookie_when_base_url_is_https(world) -> None:  # type: ignore[no-untyped-def]
    settings, engine = world
    from newsletter.web.admin.routes import Console as RoutesConsole

    https = RoutesConsole(App(settings.replace(web={"base_url": "https://digest.example.org"}),
                              engine))
    from starlette.responses import Response

    r = Response()
    https.set_cookie(r, auth.COOKIE, "v", 60)
    assert "Secure" in r.headers["set-cookie"]


@pytest.fixture
def strict_console(world) -> Iterator[Console]:  # type: ignore[no-untyped-def]
    settings, engine = world
    yield from start_console(settings.replace(admin={"max_failures_per_user": 3,
                                                     "max_failures_per_client": 6}), engine)


@pytest.mark.slow  # ~3 s: argon2 on every attempt
def test_failed_login_limits_per_user_and_per_client(strict_console: Console) -> None:
    console = strict_console
    limit = console.settings.admin.max_failures_per_user
    c = console.client()
    for _ in range(limit):
        assert login(c, "ops", "nope nope").status_code == 401
    # Locked: even the right password is refused now, and says why.
    locked = login(c, "ops", PASSWORD)
    assert locked.status_code == 401 and "too many failed logins for this user" in locked.text
    with session_scope(console.engine) as s:
        assert s.scalar(select(func.count()).select_from(AdminSession)) == 0
    # Per client: many names from one address.
    with session_scope(console.engine) as s:
        s.execute(AdminLoginAttempt.__table__.delete())
        auth.add_user(s, "other", PASSWORD)
    for i in range(console.settings.admin.max_failures_per_client):
        login(c, f"guess{i}", "nope nope")
    blocked = login(c, "other", PASSWORD)
    assert "too many failed logins from this address" in blocked.text
    # After the window, the user gets in again.
    with session_scope(console.engine) as s:
        s.execute(update(AdminLoginAttempt).values(at=dt.datetime(2000, 1, 1)))
    assert login(console.client(), "ops", PASSWORD).status_code == 303


def test_logins_leave_the_database_free_for_other_writes(console: Console,  # type: ignore[no-untyped-def]
                                                           monkeypatch) -> None:
    """The login page answers while another process holds SQLite's write lock (it read
    whether anyone may log in inside a write transaction, on the event loop: one GET
    stalled every page for as long as the lock was held), and the slow password check
    holds no write lock (logins tried from many addresses queued every write behind
    them: a one-click unsubscribe took half a minute)."""
    import sqlite3

    db = console.engine.url.database
    c = console.client()
    holder = sqlite3.connect(db, timeout=0)
    holder.execute("BEGIN IMMEDIATE")  # another process writing (a send, an import)
    try:
        page = c.get("/login", timeout=20)
        held_meanwhile = holder.in_transaction
    finally:
        holder.rollback()
        holder.close()
    assert page.status_code == 200 and held_meanwhile
    free: list[bool] = []
    hasher = auth._hasher

    class Checking:  # the real hasher, noting whether the write lock is free meanwhile
        hash = staticmethod(hasher.hash)
        check_needs_rehash = staticmethod(hasher.check_needs_rehash)

        @staticmethod
        def verify(hashed: str, password: str) -> bool:
            return checking(hashed, password)

    def checking(hashed: str, password: str) -> bool:
        probe = sqlite3.connect(db, timeout=0)
        try:
            probe.execute("BEGIN IMMEDIATE")  # fails at once if the login holds the lock
            probe.rollback()
            free.append(True)
        except sqlite3.OperationalError:
            free.append(False)
        finally:
            probe.close()
        return hasher.verify(hashed, password)

    monkeypatch.setattr(auth, "_hasher", Checking())
    assert login(c, "ops", "wrong password").status_code == 401
    assert login(console.client(), "ops", PASSWORD).status_code == 303
    assert free == [True, True]


def test_cross_site_and_csrf_less_posts_are_refused(console: Console) -> None:
    c = console.login()
    with session_scope(console.engine) as s:
        sub = s.scalar(select(Subscriber).where(Subscriber.email == "ada@example.org"))
        assert sub is not None
        sid, before = sub.id, sub.keywords
    form = {"name": "", "keywords": "evil", "tz": "UTC", "hour": "7", "status": "active"}
    token = csrf_of(c)
    # Cross-site, even with a valid token: refused by Origin and by Sec-Fetch-Site.
    r = c.post(f"/subscribers/{sid}", data={**form, "csrf": token},
               headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    r = c.post(f"/subscribers/{sid}", data={**form, "csrf": token},
               headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403
    # Every POST route needs the form's token, walked over the route table.
    for route in admin_routes():
        if "POST" in (route.methods or ()) and route.path not in PUBLIC:
            for bad in ({}, {"csrf": "forged"}):
                r = c.post(concrete(route.path), data={**form, **bad})
                assert r.status_code == 403, (route.path, r.status_code)
    with session_scope(console.engine) as s:
        assert s.get(Subscriber, sid).keywords == before  # type: ignore[union-attr]
    # The same edit, same-origin with the token, works.
    r = c.post(f"/subscribers/{sid}", data={**form, "csrf": token},
               headers={"Origin": console.url.rsplit("/admin", 1)[0]})
    assert r.status_code == 200 and "Saved." in r.text
    with session_scope(console.engine) as s:
        assert s.get(Subscriber, sid).keywords == "evil"  # type: ignore[union-attr]


def test_no_admin_user_says_how_to_create_one(world) -> None:  # type: ignore[no-untyped-def]
    settings, engine = world
    for console in start_console(settings, engine, user=False):
        for path in ("/", "/login", "/subscribers"):
            r = console.client().get(path)
            assert r.status_code == 503
            assert "newsletter admin add-user" in r.text


@pytest.mark.slow  # ~2 s: a console and an import
def test_csv_import_lists_every_bad_row_and_stores_nothing(console: Console) -> None:
    c = console.login()
    with session_scope(console.engine) as s:
        before = s.scalar(select(func.count()).select_from(Subscriber))
    bad = ("email,name,keywords,tz,hour\n"
           "ok1@example.org,,diffusion,UTC,7\n"
           "not-an-address,,diffusion,UTC,7\n"
           "ok2@example.org,,diffusion,Mars/Base,7\n"
           "ok3@example.org,,diffusion,UTC,25\n")
    r = c.post("/subscribers/import", data={"csrf": csrf_of(c, "/subscribers")},
               files={"file": ("people.csv", bad.encode(), "text/csv")})
    assert r.status_code == 400
    for line in ("people.csv:3:", "people.csv:4:", "people.csv:5:"):
        assert line in r.text
    assert "people.csv:2:" not in r.text and "Nothing was imported: 3 bad rows" in r.text
    with session_scope(console.engine) as s:
        assert s.scalar(select(func.count()).select_from(Subscriber)) == before
    good = "email,name,keywords,tz,hour\nnew1@example.org,,gnn,UTC,7\nada@example.org,,x,UTC,7\n"
    r = c.post("/subscribers/import", data={"csrf": csrf_of(c, "/subscribers")},
               files={"file": ("good.csv", good.encode(), "text/csv")})
    assert r.status_code == 200 and "Imported 1; 1 already present" in r.text
    # Export: the import format plus status, every subscriber once.
    exported = c.get("/subscribers/export.csv")
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert len(rows) == before + 1
    assert {"new1@example.org", "ada@example.org"} <= {r["email"] for r in rows}
    assert list(rows[0]) == ["email", "name", "keywords", "tz", "hour", "status", "frequency"]


def test_admin_commands(cli) -> None:  # type: ignore[no-untyped-def]
    r = cli("admin", "add-user", "ops", "--password-stdin", input=PASSWORD + "\n")
    assert r.code == 0, r.stderr
    short = cli("admin", "add-user", "x", "--password-stdin", input="short\n")
    assert short.code != 0 and "at least 8 characters" in short.stderr
    twice = cli("admin", "add-user", "ops", "--password-stdin", input=PASSWORD + "\n")
    assert twice.code != 0 and "`newsletter admin passwd ops`" in twice.stderr, twice.stderr
    listed = cli("admin", "list-users", "--json")
    assert [u["name"] for u in __import__("json").loads(listed.stdout)] == ["ops"]
    assert cli("admin", "remove-user", "ops").code == 0
    gone = cli("admin", "remove-user", "ops")
    assert gone.code != 0 and "no admin user 'ops'" in gone.stderr


@pytest.fixture
def many(sqlite_url: str) -> Any:
    from newsletter.store.db import get_engine

    engine = get_engine(sqlite_url)
    with session_scope(engine) as s:
        s.execute(Subscriber.__table__.insert(), [
            {"email": f"p{i:04d}@{'lab' if i % 3 else 'uni'}.example.org",
             "keywords": "gnn" if i % 2 else "diffusion",
             "name": "Lin Uni" if i % 5 == 0 else "",
             "status": ("active", "paused", "bounced")[i % 3], "tz": "UTC",
             "send_hour": 7, "frequency": "daily", "consent_source": "", "bounce_count": 0,
             "created_at": dt.datetime(2025, 1, 1), "updated_at": dt.datetime(2025, 1, 1)}
            for i in range(600)])
    return engine


@hsettings(max_examples=25, deadline=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(q=st.sampled_from(["", "lab", "uni", "p00", "gnn", "zzz", "P01", "lin"]),
       by=st.sampled_from(["address", "keyword", "any"]),
       status=st.sampled_from(["", "active", "paused", "bounced"]),
       size=st.integers(1, 250))
def test_keyset_pages_agree_with_a_plain_filter(many: Any, q: str, by: str, status: str,
                                                size: int) -> None:
    """Walking the pages returns exactly the filtered rows, in order, each once."""
    from newsletter.web.admin.data import find_subscribers

    with session_scope(many, readonly=True) as s:
        every = list(s.scalars(select(Subscriber).order_by(Subscriber.id)))
        expected = [x.id for x in every
                    if (not status or x.status == status)
                    and (not q or (q.lower() in x.email.lower() if by == "address" else
                                   q.lower() in x.keywords.lower() if by == "keyword" else
                                   q.lower() in (x.email + "\n" + x.name + "\n"
                                                 + x.keywords).lower()))]
        seen: list[int] = []
        after = 0
        for _ in range(1000):
            page = find_subscribers(s, q=q, by=by, status=status, after=after, size=size)
            seen += [x.id for x in page.rows]
            if page.next_after is None:
                break
            after = int(page.next_after)
    assert seen == expected


def test_chart_axis_is_round_and_covers_the_data() -> None:
    from newsletter.web.admin.charts import _nice_max, line_chart

    @given(st.integers(0, 10**7))
    def check(v: int) -> None:
        m = _nice_max(v)
        assert m >= max(v, 1) and str(m).lstrip("125").strip("0") == ""
        assert m < 2.5 * max(v, 1) + 1

    check()
    days = [dt.date(2025, 1, 1) + dt.timedelta(days=i) for i in range(30)]
    svg = line_chart(days, {"sent": [3] * 30, "failed": [0] * 30}, title="t")
    assert svg.startswith("<svg") and "<script" not in svg and 'class="line s-sent"' in svg


def test_dashboard_shows_each_process_heartbeat(console: Console) -> None:
    from newsletter.observe.heartbeat import processes
    from newsletter.store.models import Heartbeat, utcnow

    c = console.login()
    page = c.get("/")
    assert page.status_code == 200 and "No heartbeat recorded" in page.text
    now = utcnow()
    with session_scope(console.engine) as s:
        s.add(Heartbeat(name="worker:host-7:42", kind="worker", host="host-7", pid=42,
                        interval_seconds=15.0, started_at=now, beat_at=now))
        s.add(Heartbeat(name="run:host-7:43", kind="run", host="host-7", pid=43,
                        interval_seconds=15.0, started_at=now, beat_at=now, stopped_at=now))
    page = c.get("/")
    assert "worker:host-7:42" in page.text and "run:host-7:43" in page.text
    states = {p["name"]: p["state"] for p in processes(console.engine)}
    assert states == {"worker:host-7:42": "alive", "run:host-7:43": "stopped"}
    assert ">alive<" in page.text and ">stopped<" in page.text


def test_every_page_renders_on_postgresql(pg_url: str, tmp_path: Any) -> None:
    """The console's queries (date grouping, row-value keyset, ILIKE on trigram
    indexes) on PostgreSQL, with an edition sent and a failure in it."""
    from newsletter.config import Settings
    from newsletter.service.ingest import ingest
    from newsletter.store.db import get_engine
    from newsletter.store.subscribers import import_csv

    from .conftest import ROOT
    from .editions_support import run_send

    settings = Settings().replace(database={"url": pg_url},
                                  outbox={"path": str(tmp_path / "outbox")})
    engine = get_engine(pg_url)
    with session_scope(engine) as s:
        ingest(settings.sources, s, [str(ROOT / "newsletter" / "data" / "sample_papers.json")])
        import_csv(s, (ROOT / "newsletter" / "data" / "sample_subscribers.csv").read_bytes(),
                   "sample_subscribers.csv")
    summary = run_send(settings, engine, dt.date.today())
    with session_scope(engine) as s:
        indexes = {r[0] for r in s.execute(__import__("sqlalchemy").text(
            "SELECT indexname FROM pg_indexes WHERE indexname LIKE '%trgm'"))}
    assert {"ix_subscribers_email_trgm", "ix_entries_title_trgm"} <= indexes
    for console in start_console(settings, engine):
        c = console.login()
        eid = summary.edition.id
        for path in ("/", "/subscribers?q=example&by=any&status=active", "/subscribers/1",
                     f"/editions/{eid}?state=sent", "/papers?q=vision",
                     "/preview?keywords=vision+transformer", "/subscribers/export.csv"):
            r = c.get(path)
            assert r.status_code == 200, (path, r.text[-500:])
        page = c.get("/papers?q=transformer")
        cursor = re.search(r'href="\?q=transformer&amp;after=([^"]+)"', page.text)
        if cursor:
            assert c.get(f"/papers?q=transformer&after={cursor.group(1)}").status_code == 200
        dash = c.get("/").text
        assert f'data-state="sent">{summary.report.counts["sent"]}<' in dash


@hsettings(max_examples=60, deadline=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(
    st.sampled_from(["a@example.org", "b@example.org", "bad address", "", "c@x.example"]),
    st.sampled_from(["gnn", "x^0", '"unclosed', "", "diffusion, -medical"]),
    st.sampled_from(["UTC", "Europe/Paris", "Mars/Base", ""]),
    st.sampled_from(["7", "", "24", "x"])), max_size=6))
def test_import_report_agrees_with_import(sqlite_url: str, rows: list[tuple[str, ...]]) -> None:
    """The console lists every bad row (check_csv); the import stops at the first. They
    must agree on whether a file imports, and on its first bad line."""
    from newsletter.errors import InputError
    from newsletter.store.db import get_engine
    from newsletter.store.subscribers import check_csv, import_csv

    data = ("email,name,keywords,tz,hour\n" + "".join(
        f'{e},,"{k.replace(chr(34), chr(34) * 2)}",{tz},{h}\n' for e, k, tz, h in rows)).encode()
    errors = check_csv(data, "f.csv")
    engine = get_engine(sqlite_url)
    with session_scope(engine, readonly=True) as s:
        try:
            import_csv(s, data, "f.csv")
        except InputError as exc:
            assert errors and all(e in exc.message for e in errors)  # every bad row named
        else:
            assert errors == []


def test_editing_a_subscriber_validates_and_keeps_facts(console: Console) -> None:
    c = console.login()
    with session_scope(console.engine) as s:
        ada = s.scalar(select(Subscriber).where(Subscriber.email == "ada@example.org"))
        grace = s.scalar(select(Subscriber).where(Subscriber.email == "grace@example.org"))
        assert ada is not None and grace is not None
        grace.status = "bounced"
        ids, ada_tz = (ada.id, grace.id), ada.tz
    token = csrf_of(c, f"/subscribers/{ids[0]}")
    base = {"csrf": token, "name": "Ada", "keywords": "gnn", "tz": "UTC", "hour": "7"}
    bad = c.post(f"/subscribers/{ids[0]}", data={**base, "tz": "Mars/Base", "status": "active"})
    assert bad.status_code == 400 and "unknown time zone &#39;Mars/Base&#39;" in bad.text
    assert "Mars/Base" in bad.text  # the form keeps what was typed
    # Complained and pending are facts, never chosen (the CLI refuses them alike).
    for fact in ("complained", "pending"):
        forged = c.post(f"/subscribers/{ids[0]}", data={**base, "status": fact})
        assert forged.status_code == 400 and "status: expected one of" in forged.text
    # A bounced address cannot be set active: its mail server said no.
    revived = c.post(f"/subscribers/{ids[1]}", data={**base, "status": "active"})
    assert revived.status_code == 400 and (
        "their mail server refused or reported the mail" in revived.text)
    # A bounced subscriber's keywords can be edited; the bounce stays a fact.
    kept = c.post(f"/subscribers/{ids[1]}", data={**base, "keywords": "diffusion",
                                                  "status": "bounced"})
    assert kept.status_code == 200 and "Saved." in kept.text
    with session_scope(console.engine) as s:
        a, g = s.get(Subscriber, ids[0]), s.get(Subscriber, ids[1])
        assert a is not None and g is not None
        assert a.keywords != "gnn"  # no refused form stored anything
        assert a.tz == ada_tz and a.status == "active"
        assert (g.keywords, g.status) == ("diffusion", "bounced")
    # The operator may stop someone's emails (the CLI's --status likewise): each change
    # is the lifecycle's own event, naming the operator.
    stopped = c.post(f"/subscribers/{ids[0]}", data={**base, "name": " Ada\r\nBcc: x ",
                                                     "status": "unsubscribed"})
    assert stopped.status_code == 200 and "Saved." in stopped.text
    with session_scope(console.engine) as s:
        a = s.get(Subscriber, ids[0])
        assert a is not None and a.status == "unsubscribed"
        assert "\n" not in a.name and "\r" not in a.name  # the shared header cleaning
        kinds = {e.kind: e.detail for e in s.scalars(select(Event).where(
            Event.subscriber_id == ids[0]))}
    assert kinds["unsubscribed"]["by"] == kinds["edited"]["by"] == "admin:ops"


@pytest.mark.slow  # ~4 s: plans an edition
def test_dashboard_shows_a_running_edition(console: Console) -> None:
    """Planned but not yet delivered: the dashboard shows progress, pace, and reloads
    itself (a meta refresh: the console runs no script)."""
    from .editions_support import plan_edition

    c = console.login()
    assert "Sending now" not in c.get("/").text
    planned = plan_edition(console.settings, console.engine, dt.date(2025, 12, 26))
    with session_scope(console.engine) as s:
        s.execute(update(Delivery).where(Delivery.id == 1).values(
            status="sent", sent_at=dt.datetime.now(dt.UTC).replace(tzinfo=None)))
    page = c.get("/").text
    assert "Sending now: edition 2025-12-26" in page
    assert f'<span id="running-done">1</span> of {planned.pending}' in page
    assert "1 sent in the last minute" in page
    assert '<meta http-equiv="refresh" content="15">' in page


def test_search_by_default_covers_address_name_and_keywords(console: Console) -> None:
    """A topic or a name typed into the search finds subscribers without choosing "In"."""
    with session_scope(console.engine) as s:
        s.add(Subscriber(email="lin@lab.example.org", name="Lin Qiao",
                         keywords="diffusion transformers, lidar"))
    c = console.login()
    for q in ("lidar", "Qiao", "lin@lab"):
        page = c.get("/subscribers", params={"q": q})
        assert "lin@lab.example.org" in page.text, q
        assert "No subscriber matches." not in page.text
    only_address = c.get("/subscribers", params={"q": "lidar", "by": "address"})
    assert "No subscriber matches." in only_address.text


def test_dashboard_ingest_table_reads_like_the_rest(console: Console) -> None:
    """Local times to the minute, ✓/✗, counts; no raw columns or microseconds."""
    from newsletter.store.models import SourceRun

    with session_scope(console.engine) as s:
        s.add(SourceRun(name="arxiv-cs", origin="http://127.0.0.1:9/rss", ok=False,
                        ran_at=dt.datetime(2026, 3, 2, 6, 5, 7, 123456), new=0,
                        error="connection refused"))
        s.add(SourceRun(name="hf-daily", origin="/srv/papers.json", ok=True,
                        ran_at=dt.datetime(2026, 3, 2, 5, 1, 2, 654321), new=12, updated=3,
                        skipped=1, not_modified=False))
    page = console.login().get("/")
    table = page.text[page.text.index('id="ingests"'):]
    table = table[:table.index("</table>")]
    assert "2026-03-02 06:05" in table and "2026-03-02 05:01" in table
    assert "123456" not in table and "654321" not in table
    assert "not_modified" not in table and "True" not in table and "False" not in table
    assert "✗" in table and "✓" in table and "connection refused" in table
    assert re.search(r'<td class="num">12</td><td class="num">3</td><td class="num">1</td>',
                     table)


def test_the_console_shows_only_messages_it_made(world) -> None:  # type: ignore[no-untyped-def]
    """A retry's "queued again" reaches the edition page through the redirect, signed;
    the same parameters in an outsider's link (``?notice=``, ``?test_error=``,
    ``?sent_to=``) showed the outsider's words as the console's own."""
    from .editions_support import run_send

    settings, engine = world
    summary = run_send(settings, engine, dt.date(2026, 3, 4))
    assert summary.edition is not None
    eid = summary.edition.id
    forged = "Security notice: your session expired, sign in at https://evil.example/admin"
    for console in start_console(settings, engine):
        c = console.login()
        for path in (f"/editions/{eid}?notice={forged}",
                     f"/preview?test_error={forged}&sent_to=evil%40evil.example"):
            page = c.get(path)
            assert page.status_code == 200 and "evil.example" not in page.text, path
        token = csrf_of(c, f"/editions/{eid}")
        done = c.post(f"/editions/{eid}/retry", data={"csrf": token}, follow_redirects=True)
        assert done.status_code == 200
        assert ("0 failed (transient, expired, refused for size or content) and deferred "
                "deliveries queued again") in done.text
        back = done.url.query.decode()
        assert "notice=" in back
        tampered = c.get(f"/editions/{eid}?{back.replace('queued', 'dropped')}")
        assert "deferred deliveries" not in tampered.text


def test_a_retry_through_a_non_compliant_transport_is_refused(world) -> None:  # type: ignore[no-untyped-def]
    """The console's retry holds the compliance gate `send` holds: through SMTP with the
    built-in sender and an http unsubscribe link it queues nothing and says why, naming
    the command that can force it (it sent them before, with a forgeable key too)."""
    from newsletter.delivery.ledger import TRANSIENT

    from .editions_support import run_send

    settings, engine = world
    summary = run_send(settings, engine, dt.date(2026, 3, 4))
    assert summary.edition is not None
    eid = summary.edition.id
    with session_scope(engine) as s:
        s.execute(update(Delivery).where(Delivery.edition_id == eid)
                  .values(status="failed", reason=TRANSIENT))
    smtp = settings.replace(transport={"backend": "smtp"})
    for console in start_console(smtp, engine):
        c = console.login()
        token = csrf_of(c, f"/editions/{eid}")
        done = c.post(f"/editions/{eid}/retry", data={"csrf": token}, follow_redirects=True)
        assert done.status_code == 200
        text = html.unescape(done.text)
        assert "nothing queued again: refusing to send through smtp: " in text, text
        assert "sender.postal_address" in text
        assert "newsletter send --date 2026-03-04 --force" in text
    with session_scope(engine) as s:
        states = set(s.scalars(select(Delivery.status).where(Delivery.edition_id == eid)))
    assert states == {"failed"}


def test_a_test_send_readdresses_a_folded_to_header_whole() -> None:
    """A reader whose name is long has a folded ``To:``; the console's test send must
    replace all of it (its second line, the reader's address, stayed under a bare LF)."""
    import email
    import email.policy

    from newsletter.render.mime import Message
    from newsletter.web.admin.preview import readdress

    head = (b"From: Digest <digest@news.acme-papers.net>\r\n"
            b"To: =?utf-8?q?A_very_long_name_that_the_encoder_folds_over_two_lines_for_sure?=\r\n"
            b" <reader@example.org>\r\nSubject: Papers\r\n")
    message = Message(to="reader@example.org", sender="digest@news.acme-papers.net",
                      message_id="<1@news.acme-papers.net>", data=head + b"\r\nbody\r\n")
    out = readdress(message, "ops@acme-papers.net")
    assert b"reader@example.org" not in out.data and out.to == "ops@acme-papers.net"
    assert b"\n" not in out.data.replace(b"\r\n", b"")  # no bare LF left
    parsed = email.message_from_bytes(out.data, policy=email.policy.default)
    assert parsed["To"] == "ops@acme-papers.net" and parsed["Subject"] == "Papers"


def test_the_preview_of_someone_who_had_the_day_says_so_in_the_consoles_words(  # type: ignore[no-untyped-def]
        console: Console) -> None:
    """A reader who already had the day's email: the console says nothing would be
    sent, shows their real profile (it said "(empty)") and no "0 candidate papers" (no
    edition was opened), and points at the form's day, not at a CLI flag (`--date`)."""
    import html

    from .editions_support import run_send

    settings, engine = console.settings, console.engine
    run_send(settings, engine, dt.date.today())
    with session_scope(engine) as s:
        sub = s.scalar(select(Subscriber).where(Subscriber.email == "ada@example.org"))
        assert sub is not None and sub.keywords
        keywords = sub.keywords
    page = html.unescape(console.login().get(
        "/preview", params={"subscriber": "ada@example.org",
                            "day": dt.date.today().isoformat()}).text)
    assert "Nothing would be sent:" in page and "pick another day above" in page
    assert f"profile: {keywords}" in page
    assert "candidate papers ·" not in page and "--date" not in page


def test_a_password_changed_while_a_login_checks_the_old_one_ends_that_login(  # type: ignore[no-untyped-def]
        console: Console, monkeypatch) -> None:
    """`admin passwd` commits while a login is checking the old password (the hash is
    checked outside any transaction): the login is refused, where it opened a session
    that outlived the change meant to end every session of the old password."""
    hasher = auth._hasher

    class Racing:  # the real hasher; the password changes during the check
        hash = staticmethod(hasher.hash)
        check_needs_rehash = staticmethod(hasher.check_needs_rehash)

        @staticmethod
        def verify(hashed: str, password: str) -> bool:
            ok = hasher.verify(hashed, password)
            with session_scope(console.engine) as s:
                auth.set_password(s, "ops", "a brand new password")
            return bool(ok)

    monkeypatch.setattr(auth, "_hasher", Racing())
    r = login(console.client(), "ops", PASSWORD)
    assert r.status_code == 401, r.text
    with session_scope(console.engine) as s:
        assert s.scalar(select(func.count()).select_from(AdminSession)) == 0
        # recorded as the failure it was (it counts toward the limits)
        assert s.scalar(select(AdminLoginAttempt.ok).order_by(
            AdminLoginAttempt.at.desc()).limit(1)) is False
    monkeypatch.setattr(auth, "_hasher", hasher)
    assert login(console.client(), "ops", "a brand new password").status_code == 303


@pytest.mark.slow  # ~2 s: argon2 on every attempt checked
def test_parallel_logins_from_one_address_stay_within_its_limit(  # type: ignore[no-untyped-def]
        strict_console: Console, monkeypatch) -> None:
    """Many names tried at once from one address: no more passwords are checked than
    the address's limit allows (read in parallel, the failure counts let the attempts
    running at once past it)."""
    from concurrent.futures import ThreadPoolExecutor

    console = strict_console
    hasher, checked = auth._hasher, []

    class Counting:
        hash = staticmethod(hasher.hash)
        check_needs_rehash = staticmethod(hasher.check_needs_rehash)

        @staticmethod
        def verify(hashed: str, password: str) -> bool:
            checked.append(1)
            return bool(hasher.verify(hashed, password))

    monkeypatch.setattr(auth, "_hasher", Counting())
    pages = []
    for i in range(24):  # each attempt with its own login form, fetched first
        c = console.client()
        token = re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text)
        assert token
        pages.append((c, f"guess{i}", token.group(1)))

    def attempt(page: tuple[httpx.Client, str, str]) -> int:
        c, name, token = page
        return c.post("/login", data={"name": name, "password": "nope nope",
                                      "csrf": token}).status_code

    with ThreadPoolExecutor(len(pages)) as pool:
        codes = list(pool.map(attempt, pages))
    assert set(codes) == {401}
    assert len(checked) == console.settings.admin.max_failures_per_client, len(checked)
