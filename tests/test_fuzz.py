"""Property-based fuzzing of every route of ``newsletter web`` (the public pages, the
webhooks, /metrics and the whole /admin console), in process through Starlette's
TestClient: random methods, path parameters, headers, cookies and bodies, with and
without real credentials (signed link tokens, CSRF tokens, a console session).

Two properties, checked after every request:

* no answer is a 5xx, whatever the input;
* the database changes only when the request was a POST to a route that writes,
  carrying what that route demands (a valid link token, the CSRF token of its
  cookie, a console session with its token). A GET, a HEAD, a request with a
  forged token or without the CSRF token changes nothing.

The seed is fixed and the run is about 3,000 requests, so a failure reproduces.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from sqlalchemy import text
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from newsletter.app import App
from newsletter.render.links import PURPOSES
from newsletter.store.db import session_scope
from newsletter.web import create_app
from newsletter.web.admin import auth

pytestmark = pytest.mark.slow

EXAMPLES, PER_EXAMPLE = 600, 5  # 3,000 requests
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
TABLES = ["subscribers", "events", "deliveries", "sent_entries", "votes", "learned_mutes",
          "suppressions", "meta", "admin_users", "admin_sessions", "admin_login_attempts",
          "webhook_events", "editions"]
PASSWORD = "correct horse battery"


@dataclass
class Target:
    """What the fuzzer knows of the running site: routes, ids, valid credentials."""

    client: TestClient
    app: Any
    engine: Any
    routes: list[tuple[str, frozenset[str]]]  # (path template, methods)
    sub_ids: list[int]
    edition_ids: list[int]
    entry_ids: list[str]
    webhook_tokens: dict[str, str]
    nonces: dict[int, int]
    watch: Watch
    admin_cookie: str = ""
    admin_csrf: str = ""
    stats: dict[str, int] = field(default_factory=dict)
    strategies: Any = None

    def token(self, purpose: str, sub_id: int, *extra: int) -> str:
        """A link token as the service makes them (with the row's nonce)."""
        return str(self.app.state.web.signer.token(purpose, sub_id, *extra,
                                                    nonce=self.nonces.get(sub_id)))

    def csrf_for(self, cookie: str) -> str:
        return str(self.app.state.web.csrf.token_for(cookie))


def route_table(routes: list[Any], prefix: str = "") -> Iterator[tuple[str, frozenset[str]]]:
    for r in routes:
        if isinstance(r, Mount):
            yield from route_table(list(r.routes), prefix + r.path)
        elif isinstance(r, Route):
            yield prefix + r.path, frozenset(r.methods or {"GET"})


class Watch:
    """Did anything write to the SQLite database? ``PRAGMA data_version`` on a
    connection of our own changes whenever another connection commits a change, and
    costs nothing to ask (checked against a full dump of every table in
    ``test_the_watch_sees_every_write``)."""

    def __init__(self, path: str) -> None:
        import sqlite3

        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)

    def version(self) -> int:
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    def close(self) -> None:
        self.conn.close()


def dump(engine: Any) -> str:
    """Every row of every table a request could change (papers by count and newest)."""
    digest = hashlib.sha256()
    with engine.connect() as conn:
        for table in TABLES:
            rows = conn.execute(text(f"SELECT * FROM {table}")).all()  # noqa: S608 - ours
            digest.update(table.encode() + repr(sorted(map(repr, rows))).encode())
        digest.update(repr(conn.execute(text(
            "SELECT count(*), max(updated_at) FROM entries")).all()).encode())
    return digest.hexdigest()


def settle(client: TestClient, app: Any, timeout: float = 30.0) -> None:
    """Wait for the background work a request started (a sign-up's upsert and email),
    on the app's own event loop."""
    import asyncio

    async def done() -> None:
        while app.state.web.tasks:
            await asyncio.wait(list(app.state.web.tasks), timeout=timeout)

    if app.state.web.tasks:
        assert client.portal is not None
        client.portal.call(done)


# ---- strategies ------------------------------------------------------------------------

# Characters that break things: quotes, separators, percent signs, controls, NUL,
# non-ASCII letters and digits, a right-to-left override, an astral emoji.
ALPHABET = list("aZ09 _-.,;:/\\?#&=%+@!'\"<>()[]{}*^~`|$\t\r\n\x00\x7féß²٣\u202e\U0001f600中")
TEXT = st.text(st.sampled_from(ALPHABET), max_size=40)
ODD = st.sampled_from(["", "0", "-1", "99999999999999999999999", "9" * 30, "1e9", "nan",
                       "Europe", "__pycache__", "../../etc/passwd", "%00", "é" * 5, "²",
                       "<script>", "' OR 1=1 --", "a" * 300, "\u202e", "CON", "."])
ANY_TEXT = st.one_of(TEXT, ODD)


FIELDS = ["email", "keywords", "tz", "hour", "status", "action", "website", "name", "password",
          "paper", "term", "label", "List-Unsubscribe", "q", "by", "after", "subscriber",
          "day", "to", "next", "state", "notice"]
VALUES = st.one_of(ANY_TEXT, st.sampled_from([
    "fuzz@example.org", "ada@example.org", "diffusion, -video", "UTC", "Europe/Paris", "7",
    "23", "active", "paused", "unsubscribed", "resubscribe", "save", "One-Click", "ops",
    PASSWORD, "2025-12-26", "x^0", "author:\"A B\""]))


@dataclass
class Request:
    method: str
    path: str
    template: str
    headers: dict[str, str]
    cookies: dict[str, str]
    body: dict[str, Any]  # httpx request arguments: data / files / content
    valid_token: bool
    public_csrf: bool
    admin: bool

    def may_write(self) -> bool:
        """May this request change the database (a POST with what its route demands)?"""
        if self.method != "POST":
            return False
        t = self.template
        if t == "/admin/login":
            return True
        if t.startswith("/admin/"):
            return self.admin
        if t == "/subscribe":
            return self.public_csrf
        if t.startswith("/unsubscribe/"):
            return self.valid_token  # RFC 8058 one-click: the signed URL is the authority
        if t.startswith(("/confirm/", "/preferences/", "/feedback/", "/erase/")):
            return self.valid_token and self.public_csrf
        return False


HEADER_NAMES = st.lists(st.sampled_from(
    ["content-type", "origin", "sec-fetch-site", "accept", "x-forwarded-for", "authorization",
     "range", "if-none-match", "user-agent", "accept-encoding"]), max_size=4, unique=True)
HEADER_VALUES = st.one_of(st.sampled_from(
    ["application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
     "application/json", "text/plain", "http://testserver", "null", "same-origin",
     "cross-site", "https://evil.example", "Basic cG0tdXNlcjpwbQ==", "bytes=0-5"]),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30))
FORMS = st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=6)
SHAPES = st.sampled_from(["form", "form", "multipart", "raw", "json", "none"])
CSV_FILES = st.one_of(
    st.integers(0, 10**6).map(lambda n: f"email,name,keywords,tz,hour\nimp{n}@example.org,I,"
                                        "=1+1,UTC,7\n"),
    st.sampled_from(["email,name,keywords,tz,hour\nbad,F,gnn,Europe,²\n", "\x00\xff", ""]))
JSON_VALUE = st.none() | st.booleans() | st.integers() | TEXT
JSON_BODIES = st.one_of(JSON_VALUE, st.lists(JSON_VALUE, max_size=4), st.dictionaries(
    st.sampled_from(FIELDS + ["event", "type", "Type"]), JSON_VALUE, max_size=4))
TOKEN_KINDS = st.sampled_from(["valid", "valid", "valid", "other", "mangled", "random"])
CHOICES = {"provider": st.sampled_from(["sendgrid", "mailgun", "postmark", "resend", "ses",
                                        "generic"]),
           "direction": st.sampled_from(["up", "down", "sideways"]),
           "action": st.sampled_from(["undo", "forget", "reset"]),
           "name": st.sampled_from(["site.css", "tz.js"])}
# Forms that pass each writing route's checks (with the right credentials they write):
# drawn often enough that the property "changes only where meant to" is not vacuous.
MEANINGFUL: list[tuple[str, st.SearchStrategy[dict[str, str]]]] = [
    ("/subscribe", st.builds(lambda n, h: {"email": f"fuzz{n}@example.org",
                                           "keywords": "diffusion, -video", "tz": "UTC",
                                           "hour": str(h)},
                             st.integers(0, 10**6), st.integers(0, 23))),
    ("/preferences/{token}", st.sampled_from([
        {"action": "save", "keywords": "graph neural networks", "tz": "Europe/Paris",
         "hour": "6", "status": "paused"},
        {"action": "save", "keywords": "diffusion", "tz": "UTC", "hour": "7",
         "status": "active"},
        {"action": "resubscribe"}])),
    ("/unsubscribe/{token}", st.just({"List-Unsubscribe": "One-Click"})),
    ("/feedback/{action}/{token}", st.sampled_from([{"term": "graph", "label": "graph"},
                                                    {"paper": "x"}, {}])),
    ("/admin/subscribers/{sub_id:row_id}", st.builds(
        lambda h, st_: {"name": "Fuzzed", "keywords": "gnn", "tz": "UTC", "hour": str(h),
                        "status": st_},
        st.integers(0, 23), st.sampled_from(["active", "paused", "unsubscribed"]))),
    ("/admin/preview/test", st.just({"subscriber": "ada@example.org",
                                     "to": "test@example.org"})),
]
PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")


class Strategies:
    """The request strategies for one site, made once (hypothesis checks every new
    strategy object, which costs more than drawing from it)."""

    def __init__(self, t: Target) -> None:
        self.t = t
        self.routes = st.sampled_from(t.routes)
        self.methods = {m: st.sampled_from(sorted(m - {"HEAD"}) * 6 + METHODS)
                        for _, m in t.routes}
        self.subs = st.sampled_from(t.sub_ids + [0, 10_000])
        self.real_subs = st.sampled_from(t.sub_ids)
        self.editions = st.sampled_from(t.edition_ids + [0])
        self.entries = st.sampled_from(t.entry_ids)
        self.hook_tokens = st.sampled_from(sorted(t.webhook_tokens.values()))
        self.ids = {"sub_id": st.one_of(st.sampled_from([str(i) for i in t.sub_ids]),
                                        st.integers(0, 10**25).map(str)),
                    "edition_id": st.one_of(st.sampled_from([str(i) for i in t.edition_ids]
                                                            or ["1"]),
                                            st.integers(0, 10**25).map(str))}
        self.purposes = st.sampled_from(PURPOSES[:4])

    def token(self, draw: st.DrawFn, template: str) -> tuple[str, bool]:
        t, kind = self.t, draw(TOKEN_KINDS)
        if template.startswith("/webhooks/"):
            if kind == "valid":
                return draw(self.hook_tokens), True
            return quote(draw(ANY_TEXT), safe="") or "x", False
        sub = draw(self.subs)
        purpose = next((p for p in ("unsubscribe", "confirm", "view", "feed", "data", "erase")
                        if template.startswith(f"/{p}/")), "preferences")
        if kind == "valid":
            extra = ([int(time.time() // 3600)] if purpose in ("confirm", "data", "erase")
                     else [draw(self.editions)] if purpose == "view" else [])
            return t.token(purpose, sub, *extra), True
        if kind == "other":  # signed, but for another purpose
            other = draw(self.purposes.filter(lambda p: p != purpose))
            return t.token(other, sub), False
        if kind == "mangled":
            good = t.token(purpose, sub)
            cut = draw(st.integers(0, len(good) - 1))
            return quote(good[:cut] + draw(TEXT) + good[cut + 1:], safe=""), False
        return quote(draw(ANY_TEXT), safe="") or "x", False

    def value(self, draw: st.DrawFn, name: str, template: str) -> tuple[str, bool]:
        """A value for ``{name}`` in ``template``, and whether it is a valid credential."""
        if name == "token":
            return self.token(draw, template)
        if name in ("entry_id", "paper") and draw(st.booleans()):
            return quote(draw(self.entries), safe=""), False
        if name in self.ids:
            return draw(self.ids[name]), False
        if name in CHOICES and draw(st.booleans()):
            return draw(CHOICES[name]), False
        return quote(draw(ANY_TEXT), safe="/" if name in ("entry_id", "paper") else "") \
            or "x", False

    def path(self, draw: st.DrawFn, template: str) -> tuple[str, bool]:
        if template == "/webhooks/{provider}/{token}":  # the provider's own token, or not
            provider = draw(CHOICES["provider"])
            if provider in self.t.webhook_tokens and draw(st.booleans()):
                return f"/webhooks/{provider}/{self.t.webhook_tokens[provider]}", True
            return f"/webhooks/{provider}/{self.value(draw, 'token', template)[0]}", False
        if template.startswith("/feedback/{direction}/{token}/"):  # token and paper agree
            paper, sub, valid = draw(self.entries), draw(self.real_subs), draw(st.booleans())
            token = (self.t.app.state.web.signer.paper_token("vote", sub, paper,
                                                             self.t.nonces.get(sub))
                     if valid else self.t.token("preferences", sub))
            return (f"/feedback/{draw(CHOICES['direction'])}/{token}/{quote(paper, safe='')}",
                    valid)
        path, valid = template, False
        for name in PARAM.findall(template):
            value, ok = self.value(draw, name, template)
            valid = valid or (name == "token" and ok)
            path = re.sub(r"\{" + name + r"(?::\w+)?\}", lambda _, v=value: v, path, count=1)
        return path, valid


@st.composite
def requests(draw: st.DrawFn, t: Target) -> Request:
    on = t.strategies
    if draw(st.integers(0, 19)) == 0:  # a path no route has
        template = "/" + quote(draw(ANY_TEXT), safe="/")
        method = draw(st.sampled_from(METHODS))
    else:
        template, methods = draw(on.routes)
        method = draw(on.methods[methods])
    path, valid = on.path(draw, template)
    headers = {key: draw(HEADER_VALUES) for key in draw(HEADER_NAMES)}
    cookies: dict[str, str] = {}
    form = dict(draw(FORMS))
    meaningful = dict(MEANINGFUL).get(template)
    use_meaningful = meaningful is not None and draw(st.integers(0, 2)) > 0
    if meaningful is not None and use_meaningful:
        form = dict(draw(meaningful))
    console = template.startswith("/admin")
    public_csrf = not console and draw(st.integers(0, 2)) > 0
    admin = console and bool(t.admin_cookie) and draw(st.integers(0, 2)) > 0
    if public_csrf:
        cookie = secrets.token_hex(16)
        cookies["nl_csrf"] = cookie
        form["csrf"] = t.csrf_for(cookie)
    if admin:
        cookies[auth.COOKIE] = t.admin_cookie
        form["csrf"], public_csrf = t.admin_csrf, False
    elif not public_csrf and draw(st.booleans()):
        form["csrf"] = draw(ANY_TEXT)
    if public_csrf or admin:
        headers.pop("origin", None), headers.pop("sec-fetch-site", None)
    body: dict[str, Any] = {}
    if method in ("POST", "PUT", "PATCH", "DELETE") or draw(st.integers(0, 9)) == 0:
        credentialed = (public_csrf or admin) and draw(st.integers(0, 3)) > 0
        shape = "form" if use_meaningful or credentialed else draw(SHAPES)
        if shape == "form":
            body = {"data": form}
        elif shape == "multipart" or (template == "/admin/subscribers/import"
                                      and draw(st.booleans())):
            csv = draw(CSV_FILES).encode("utf-8", "replace")
            body = {"data": form, "files": {"file": ("f.csv", csv, "text/csv")}}
        elif shape == "raw":
            body = {"content": draw(st.binary(max_size=300))}
        elif shape == "json":
            body = {"content": json.dumps(draw(JSON_BODIES)).encode()}
    return Request(method, path, template, headers, cookies, body, valid, public_csrf, admin)


# ---- the test --------------------------------------------------------------------------

def admin_session(client: TestClient) -> tuple[str, str]:
    """A console login: its session cookie and CSRF token."""
    client.cookies.clear()
    page = client.get("/admin/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token
    r = client.post("/admin/login", data={"name": "ops", "password": PASSWORD,
                                          "csrf": token.group(1)}, follow_redirects=False)
    assert r.status_code == 303, r.text
    cookie = client.cookies.get(auth.COOKIE) or ""
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/admin/").text)
    assert cookie and csrf
    client.cookies.clear()
    return cookie, csrf.group(1)


@pytest.fixture
def target(world, cli) -> Iterator[Target]:  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from newsletter.store.models import Edition, Entry, Subscriber
    from newsletter.store.subscribers import import_csv
    from newsletter.web.webhooks import webhook_tokens

    settings, engine = world
    env = {"NEWSLETTER_DATABASE__URL": str(engine.url),
           "NEWSLETTER_OUTBOX__PATH": settings.outbox.path,
           "NEWSLETTER_SENDER__FROM_ADDRESS": "digest@example.org"}
    sent = cli("send", "--yes", "--date", "2025-12-26", env=env)
    assert sent.code == 0, sent.stderr
    with session_scope(engine) as s:
        auth.add_user(s, "ops", PASSWORD)
        rows = "".join(f"reader{i}@example.org,R{i},diffusion,UTC,{i % 24}\n" for i in range(300))
        import_csv(s, ("email,name,keywords,tz,hour\n" + rows).encode(), "readers.csv")
    settings = settings.replace(web={"render_processes": 0, "base_url": "http://testserver",
                                     "signups_per_client_per_hour": 10_000},
                                webhooks={"postmark_username": "pm-user",
                                          "postmark_password": "pm"})
    app = create_app(App(settings, engine))
    with TestClient(app, raise_server_exceptions=False) as client:
        settle(client, app, 120)
        with session_scope(engine) as s:
            nonces = {int(i): int(n) for i, n in s.execute(
                select(Subscriber.id, Subscriber.link_nonce))}
            subs = sorted(nonces)
            editions = list(s.scalars(select(Edition.id)))
            entries = list(s.scalars(select(Entry.id).limit(20)))
            hooks = webhook_tokens(s)
        cookie, csrf = admin_session(client)
        watch = Watch(str(engine.url.database))
        target = Target(client, app, engine, sorted(set(route_table(list(app.routes)))),
                        subs, editions, entries, hooks, nonces, watch, cookie, csrf)
        target.strategies = Strategies(target)
        yield target
        # The run was not vacuous: requests got through to the handlers that write, and
        # wrote; every route was asked.
        reached = {key.split(" ")[1] for key in target.stats if " " in key}
        assert {r for r, _ in target.routes} <= reached, {r for r, _ in target.routes} - reached
        ok_posts = {key for key in target.stats if key.startswith("POST ")
                    and key.endswith((" 200", " 303"))}
        assert target.stats.get("writes", 0) >= 20 and len(ok_posts) >= 6, (
            target.stats.get("writes"), sorted(ok_posts))
        watch.close()


@settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=False,
          phases=(Phase.generate, Phase.shrink), print_blob=True,
          suppress_health_check=list(HealthCheck))
@seed(230_23)
@given(data=st.data())
def test_no_input_gives_a_5xx_or_changes_what_it_should_not(target: Target,
                                                             data: st.DataObject) -> None:
    t = target
    for _ in range(PER_EXAMPLE):
        req = data.draw(requests(t))
        before = t.watch.version()
        t.client.cookies.clear()
        for name, value in req.cookies.items():
            t.client.cookies.set(name, value)
        r = t.client.request(req.method, req.path, headers=req.headers,
                             follow_redirects=False, **req.body)
        settle(t.client, t.app)
        assert r.status_code < 500, (req, r.status_code, r.text[:500])
        changed = t.watch.version() != before
        assert not changed or req.may_write(), ("changed the database", req, r.status_code)
        key = f"{req.method} {req.template} {r.status_code}"
        t.stats[key] = t.stats.get(key, 0) + 1
        t.stats["writes"] = t.stats.get("writes", 0) + changed
        if req.template == "/admin/logout" and r.status_code == 303:
            t.admin_cookie, t.admin_csrf = admin_session(t.client)  # keep fuzzing the console


def test_the_watch_sees_every_write(world) -> None:  # type: ignore[no-untyped-def]
    """The cheap check the fuzz test relies on agrees with a full dump: a write from
    another connection changes both, reads change neither."""
    from newsletter.store.models import Subscriber

    _, engine = world
    watch = Watch(str(engine.url.database))
    try:
        v, d = watch.version(), dump(engine)
        with session_scope(engine) as s:
            s.get(Subscriber, 1)  # a read in a write transaction
        assert (watch.version(), dump(engine)) == (v, d)
        with session_scope(engine) as s:
            sub = s.get(Subscriber, 1)
            assert sub is not None
            sub.keywords += ", fuzz"
        assert watch.version() != v and dump(engine) != d
    finally:
        watch.close()
