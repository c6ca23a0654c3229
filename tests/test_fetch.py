"""Fetching from a real HTTP server on 127.0.0.1: retries, Retry-After, conditional GET."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from newsletter.config import Settings, SourceConfig
from newsletter.errors import FetchError, SourceError
from newsletter.ingest.fetch import Fetcher
from newsletter.retry import retry_after_seconds
from newsletter.service.ingest import ingest
from newsletter.store.db import get_engine, session_scope
from newsletter.store.models import Entry

from .conftest import PAYLOADS, HttpServer, Route

DAILY = (PAYLOADS / "dailypapers.json").read_bytes()


def no_sleep(waits: list[float]):  # type: ignore[no-untyped-def]
    return waits.append


def test_retries_on_429_and_503_honouring_retry_after(http_server: HttpServer) -> None:
    url = http_server.add(
        "/api/daily_papers",
        Route(429, b"slow down", {"Retry-After": "7"}),
        Route(503, b"busy"),
        Route(200, DAILY, {"Content-Type": "application/json"}),
    )
    waits: list[float] = []
    got = Fetcher(sleep=no_sleep(waits), backoff=0.01).get(url + "?date=2025-08-19&limit=50")
    assert got.body == DAILY
    assert waits[0] == 7.0  # the server's Retry-After, not our backoff
    assert len(waits) == 2
    assert len(http_server.requests) == 3
    agent = http_server.requests[0]["headers"]["User-Agent"]  # type: ignore[index]
    assert agent.startswith("newsletter/")
    assert http_server.requests[0]["path"] == "/api/daily_papers?date=2025-08-19&limit=50"


def test_gives_up_after_attempts_with_a_clear_error(http_server: HttpServer) -> None:
    url = http_server.add("/down", Route(500, b"oops"))
    with pytest.raises(FetchError, match=r"/down: HTTP 500 .* \(gave up after 3 attempts\)"):
        Fetcher(sleep=lambda s: None, attempts=3).get(url)


def test_client_errors_are_not_retried(http_server: HttpServer) -> None:
    url = http_server.add("/missing", Route(404, b"no"))
    with pytest.raises(FetchError, match="HTTP 404"):
        Fetcher(sleep=lambda s: None).get(url)
    assert len(http_server.requests) == 1


def test_timeouts_are_retried(http_server: HttpServer) -> None:
    url = http_server.add("/slow", Route(200, DAILY, delay=1.0), Route(200, DAILY))
    got = Fetcher(timeout=0.3, sleep=lambda s: None).get(url)
    assert got.body == DAILY


def test_retry_after_http_date() -> None:
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert retry_after_seconds("soon") is None


def test_conditional_get_through_ingest(http_server: HttpServer, sqlite_url: str) -> None:
    url = http_server.add(
        "/feed",
        Route(200, (PAYLOADS / "arxiv_listing.rss").read_bytes(),
              {"ETag": '"v1"', "Last-Modified": "Tue, 19 Aug 2025 04:00:00 GMT"}),
        Route(304, b""),
    )
    settings = Settings().replace(database={"url": sqlite_url})
    settings = Settings.model_validate({**settings.model_dump(),
                                        "sources": [SourceConfig(name="lg", url=url).model_dump()]})
    engine = get_engine(sqlite_url)
    with session_scope(engine) as s:
        first = ingest(settings.sources, s, ["lg"])
    assert first.new == 3
    with session_scope(engine) as s:
        second = ingest(settings.sources, s, ["lg"])
    assert second.loaded[0].not_modified and second.new == 0
    headers = http_server.requests[1]["headers"]
    assert headers["If-None-Match"] == '"v1"'  # type: ignore[index]
    assert headers["If-Modified-Since"] == "Tue, 19 Aug 2025 04:00:00 GMT"  # type: ignore[index]
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Entry)) == 3


def test_html_instead_of_a_feed(http_server: HttpServer, sqlite_url: str) -> None:
    url = http_server.add("/page", Route(200, b"<!doctype html><html><body>Hi</body></html>"))
    settings = Settings().replace(database={"url": sqlite_url})
    with pytest.raises(SourceError, match="HTML page, not a feed"), \
            session_scope(get_engine(sqlite_url)) as s:
        ingest(settings.sources, s, [url])


# ---- hostile answers: bounded, and said in one line ------------------------------------

def test_a_body_that_unpacks_past_the_cap_stops_there(http_server: HttpServer) -> None:
    """A small gzip that unpacks to far more than the cap is stopped as it unpacks (it
    was read whole into memory first, and 3 MB made 3 GB)."""
    import gzip

    url = http_server.add("/bomb", Route(200, gzip.compress(b"\0" * (8 * 2**20)),
                                         {"Content-Encoding": "gzip"}))
    with pytest.raises(FetchError, match=r"/bomb: response larger than 1 MB"):
        Fetcher(sleep=lambda s: None, max_bytes=2**20).get(url)


def test_a_body_that_never_ends_stops_at_the_deadline() -> None:
    """A server sending a byte at a time answers every read in time; the download as a
    whole has a deadline."""
    import socket
    import threading
    import time

    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            while not stop.is_set():
                try:
                    conn.sendall(b"1\r\nx\r\n")
                except OSError:
                    return
                time.sleep(0.05)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/drip"
    try:
        with pytest.raises(FetchError, match=r"/drip: still downloading after 1 s"):
            Fetcher(sleep=lambda s: None, timeout=5, seconds=1.0).get(url)
    finally:
        stop.set()
        listener.close()


def test_headers_that_never_end_stop_at_the_deadline() -> None:
    """A server sending its headers a byte at a time answers every read in time too:
    the deadline covers the whole try, headers included, and is not tried again."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    connections = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:  # closed: the test is over
                return
            connections.append(conn)
            with conn:
                conn.recv(65536)  # the request
                conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                for _ in range(100):  # a byte every 0.1 s, then it hangs up (10 s)
                    if stop.wait(0.1):
                        return
                    try:
                        conn.sendall(b"x")
                    except OSError:  # the client hung up
                        break

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/trickle"
    fetcher = Fetcher(sleep=lambda s: None, timeout=5, attempts=2, seconds=1.0)
    try:
        with pytest.raises(FetchError) as info:
            fetcher.get(url)
    finally:
        fetcher.close()
        stop.set()
        listener.close()
        thread.join(5)
    assert str(info.value) == f"{url}: still waiting for the response after 1 s"
    assert len(connections) == 1  # (a server that slow is as slow on a second try)


def test_redirect_loops_and_bodies_that_are_not_their_encoding_are_one_line(
        http_server: HttpServer) -> None:
    loop = http_server.add("/loop", Route(302, b"", {"Location": "/loop"}))
    with pytest.raises(FetchError, match=r"/loop: TooManyRedirects"):
        Fetcher(sleep=lambda s: None).get(loop)
    bad = http_server.add("/notgzip", Route(200, b"plain text", {"Content-Encoding": "gzip"}))
    with pytest.raises(FetchError, match=r"/notgzip: DecodingError"):
        Fetcher(sleep=lambda s: None).get(bad)


def test_a_source_whose_data_breaks_the_parser_fails_alone(sqlite_url: str,
                                                           tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Between two good sources, one whose JSON is nested too deeply, one with an author
    list thousands of "and"s long is parsed, and one with a count no database holds: each
    bad one fails in one line, and the good ones are stored (an unexpected exception
    stored nothing of any source)."""
    import json

    good = [{"id": f"2501.0000{i}", "title": f"Good paper {i}", "abstract": "About graphs.",
             "authors": ["Ann"], "published": "2025-12-20"} for i in (1, 2)]
    (tmp_path / "a.json").write_text(json.dumps(good[:1]))
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp_path / "big.json").write_text(json.dumps([good[0] | {"id": "2501.00009",
                                                              "upvotes": 10**25}]))
    (tmp_path / "inf.json").write_text('[{"id": "2501.00008", "title": "T", '
                                       '"abstract": "x", "upvotes": 1e999}]')
    (tmp_path / "b.json").write_text(json.dumps(good[1:]))
    sources = [SourceConfig(name=n, path=str(tmp_path / f"{n}.json"))
               for n in ("a", "deep", "big", "inf", "b")]
    failed: list = []  # type: ignore[type-arg]
    with session_scope(get_engine(sqlite_url)) as s:
        report = ingest(sources, s, [], failed=failed)
    assert report.new == 2
    reasons = {getattr(f, "source_name", ""): str(f) for f in failed}
    assert set(reasons) == {"deep", "big", "inf"}, reasons
    assert "nested too deeply" in reasons["deep"]
    assert "out of range" in reasons["big"] and "expected a number" in reasons["inf"]
    assert all("\n" not in r for r in reasons.values())


# In private mount and network namespaces (root only): its own /etc/resolv.conf,
# /etc/hosts and nsswitch.conf, and a network of nothing but 127.0.0.1, where a name
# server is bound to port 53, the one a resolv.conf can name. It reads each question
# and never answers; the resolver alone would wait 20 s for it.
IN_NAMESPACES = r'''
import json, socket, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from newsletter.errors import FetchError
from newsletter.ingest.fetch import Fetcher

name_server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
name_server.bind(("127.0.0.1", 53))
asked = []

def listen():
    while True:
        asked.append(name_server.recvfrom(4096)[0])

class Feed(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "4")
        self.end_headers()
        self.wfile.write(b"feed")

    def log_message(self, *args):
        pass

web = ThreadingHTTPServer(("127.0.0.1", 0), Feed)
for work in (listen, web.serve_forever):
    threading.Thread(target=work, daemon=True).start()
waits = []  # one between each try and the next
fetcher = Fetcher(sleep=waits.append, timeout=30, attempts=2, seconds=1.0)
try:
    fetcher.get("http://feed.digest.test/rss")
    error = ""
except FetchError as exc:
    error = str(exc)
# a name in the hosts file, first as ::1 (where nothing listens), then as 127.0.0.1
body = fetcher.get(f"http://hosts.digest.test:{web.server_address[1]}/rss").body
print(json.dumps({"error": error, "retried": len(waits), "body": body.decode(),
                  "asked": sum(b"\x04feed\x06digest\x04test" in q for q in asked)}))
'''


@pytest.mark.slow
def test_a_name_server_that_never_answers_stops_at_the_deadline(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The try's deadline covers looking the feed's name up: a name server on
    127.0.0.1 that reads the question and never answers ends the fetch at the
    deadline, in one line naming the URL and the name, and the try is not made again.
    The system's resolver looked the name up outside the deadline, for as long as its
    own timeouts allowed (here 20 s), and the error then said it was still waiting for
    the response after 1 s. A name the hosts file gives is still fetched, from the one
    of its addresses that answers."""
    import json
    import shutil
    import subprocess
    import sys

    from .conftest import ROOT

    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "--mount", "--net", "true"],
                                         capture_output=True).returncode != 0:
        pytest.skip("needs root, for private mount and network namespaces (unshare)")
    files = {"resolv.conf": "nameserver 127.0.0.1\noptions timeout:20 attempts:1\n",
             "hosts": "127.0.0.1 localhost\n::1 hosts.digest.test\n"
                      "127.0.0.1 hosts.digest.test\n",
             "nsswitch.conf": "hosts: files dns\n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    mounts = " && ".join(f"mount --bind {tmp_path / name} /etc/{name}" for name in files)
    done = subprocess.run(
        [unshare, "--mount", "--net", "--fork", "sh", "-c",
         f'ip link set lo up && {mounts} && exec "$0" -c "$1"', sys.executable,
         IN_NAMESPACES],
        capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(ROOT),
                                                          "PATH": "/usr/sbin:/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["error"] == ("http://feed.digest.test/rss: the deadline (1 s) passed "
                              "while resolving feed.digest.test")
    assert found["retried"] == 0
    assert found["asked"] >= 1  # the name server was asked (not the hosts file)
    assert found["body"] == "feed"
