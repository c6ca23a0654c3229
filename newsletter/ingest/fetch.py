"""HTTP fetching for sources: timeouts, retries with backoff, conditional GET.

Retries cover what a polite client should retry (429, 5xx, timeouts, dropped
connections), honouring ``Retry-After``. ETag / Last-Modified validators are
kept per URL so a feed that has not changed costs one 304 and no parsing.

Each try has one deadline, the name's lookup, connecting, headers and body together
(``_Deadline``): httpx's timeouts are per read, and a server sending a byte every few
seconds answers every read in time, headers included, and is never done; the system's
resolver has only its own timeouts, and a name server that never answers held the
fetch as long as they allowed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from newsletter import __version__
from newsletter.errors import FetchError
from newsletter.retry import backoff_delay, retry_after_seconds

USER_AGENT = f"newsletter/{__version__} (research-paper digest; +https://example.invalid/bot)"
RETRY_STATUSES = {429, 500, 502, 503, 504}
MAX_BYTES = 200 * 1024 * 1024  # of a source's body (a file's, or a response's unpacked)
FETCH_SECONDS = 300.0  # one try: lookup, connecting, headers and body, however slow


@dataclass(frozen=True)
class Validators:
    etag: str = ""
    last_modified: str = ""


@dataclass(frozen=True)
class Fetched:
    url: str
    body: bytes | None  # None: 304 Not Modified
    content_type: str
    validators: Validators


class Fetcher:
    def __init__(
        self,
        *,
        timeout: float = 30.0,
        attempts: int = 4,
        backoff: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        max_bytes: int = MAX_BYTES,
        seconds: float = FETCH_SECONDS,
    ) -> None:
        self.client = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, seconds)),
            follow_redirects=True,
            headers={"User-Agent": USER_AGENT},
            # a connection per request: ``_Deadline`` learns its socket as it connects
            limits=httpx.Limits(max_keepalive_connections=0),
        )
        _connect_by_deadline(self.client)
        self.attempts = attempts
        self.backoff = backoff
        self.sleep = sleep
        self.max_bytes = max_bytes
        self.seconds = seconds

    def close(self) -> None:
        self.client.close()

    def get(self, url: str, validators: Validators | None = None) -> Fetched:
        headers = {}
        if validators and validators.etag:
            headers["If-None-Match"] = validators.etag
        if validators and validators.last_modified:
            headers["If-Modified-Since"] = validators.last_modified
        last_error = ""
        for attempt in range(self.attempts):
            retry_after = None
            deadline = _Deadline(self.seconds)
            this_try = _TRY.set(deadline)
            try:
                with self.client.stream("GET", url, headers=headers,
                                        extensions={"trace": deadline.trace}) as resp:
                    if resp.status_code == 304:
                        return Fetched(url, None, "", validators or Validators())
                    if resp.is_success:
                        return Fetched(
                            url,
                            self._body(url, resp, deadline),
                            resp.headers.get("content-type", ""),
                            Validators(resp.headers.get("etag", ""),
                                       resp.headers.get("last-modified", "")),
                        )
                    last_error = f"HTTP {resp.status_code} {resp.reason_phrase}"
                    if resp.status_code not in RETRY_STATUSES:
                        raise FetchError(url, last_error)
                    retry_after = retry_after_seconds(resp.headers.get("retry-after"))
            except httpx.HTTPError as exc:
                if deadline.resolving:  # not tried again either: a name server that
                    # slow is as slow the next time
                    raise FetchError(url, f"the deadline ({self.seconds:.0f} s) passed "
                                          f"while resolving {deadline.resolving}") from None
                if deadline.passed():  # its connection shut: not tried again, a server
                    # that slow is as slow the next time
                    raise FetchError(url, f"still waiting for the response after "
                                          f"{self.seconds:.0f} s") from None
                if isinstance(exc, httpx.TimeoutException):
                    last_error = "timed out"
                elif isinstance(exc, httpx.TransportError):
                    last_error = f"connection failed: {exc}"
                else:  # a redirect loop, a body its encoding does not fit: the
                    # server's answer, the same on every try
                    raise FetchError(url, f"{type(exc).__name__}: {exc}") from None
            finally:
                _TRY.reset(this_try)
                deadline.cancel()
            if attempt + 1 < self.attempts:
                self.sleep(backoff_delay(attempt, self.backoff, retry_after))
        raise FetchError(url, f"{last_error} (gave up after {self.attempts} attempts)")

    def _body(self, url: str, resp: httpx.Response, deadline: _Deadline) -> bytes:
        """The response's body, unpacked, read as it comes: at most ``max_bytes`` (a
        gzip of 3 MB that unpacks to 3 GB, or a body that never ends, stops there, not
        when memory runs out) by the try's deadline (a server sending a byte a second
        answers every read in time, and read for ever)."""
        chunks: list[bytes] = []
        size = 0
        try:  # (the deadline ends a read in progress with an httpx error)
            for chunk in resp.iter_bytes():
                size += len(chunk)
                if size > self.max_bytes:
                    raise FetchError(url, f"response larger than {self.max_bytes // 2**20} MB")
                if deadline.passed():
                    break
                chunks.append(chunk)
            else:
                return b"".join(chunks)
        except httpx.HTTPError:
            if not deadline.passed():
                raise
        raise FetchError(url, f"still downloading after {self.seconds:.0f} s ({size:,} bytes)")


class _Deadline:
    """One try's deadline, kept by shutting the connections it opened when time is up.

    httpx's timeouts are per read: a server that sends a header or body byte every few
    seconds answers every read in time, and a read waiting for the next byte can only
    be ended from outside. So a timer thread shuts the try's sockets down at the
    deadline, which ends a read in progress at once; httpx's ``trace`` extension names
    each socket as the try (a redirect's too) connects or starts TLS. Before that there
    is no socket to shut: the name is looked up in a worker thread waited for until the
    deadline (``resolve``), and each address is connected to within the time left
    (``bound``), both by ``_DeadlineBackend``.
    """

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds
        self.resolving = ""  # the name whose lookup the deadline ended
        self._expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def passed(self) -> bool:
        return self._expired or time.monotonic() >= self.at

    def trace(self, event: str, info: dict[str, Any]) -> None:
        if event.endswith((".connect_tcp.complete", ".start_tls.complete")):
            sock = info["return_value"].get_extra_info("socket")
            with self._lock:
                self._sockets.append(sock)
                if self._expired:
                    _shut(sock)

    def cancel(self) -> None:
        self._timer.cancel()

    def bound(self, timeout: float | None) -> float:
        """A connect's timeout: the client's connect timeout, at most the time left."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise httpcore.ConnectTimeout("the deadline passed before connecting")
        return left if timeout is None else min(timeout, left)

    def resolve(self, host: str, port: int) -> list[str]:
        """``host``'s addresses by the system's resolver (``getaddrinfo``: the hosts
        file, then DNS, as a socket's own connect looks it up), waited for until the
        deadline. The lookup cannot be interrupted, so it runs in a thread of its own
        (a daemon: a process exiting does not wait for it), left to end at the
        resolver's own timeouts when the deadline comes first."""
        with contextlib.suppress(ValueError):
            return [str(ipaddress.ip_address(host))]  # nothing to look up
        answer: list[Any] = []
        done = threading.Event()

        def look_up() -> None:
            try:
                answer.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
            except OSError as exc:  # (socket.gaierror: no such name, no answer)
                answer.append(exc)
            finally:
                done.set()

        threading.Thread(target=look_up, name=f"resolve {host}", daemon=True).start()
        if not done.wait(max(0.0, self.at - time.monotonic())):
            self.resolving = host
            raise httpcore.ConnectTimeout(f"the deadline passed while resolving {host}")
        if isinstance(answer[0], OSError):
            raise httpcore.ConnectError(str(answer[0])) from answer[0]
        return list(dict.fromkeys(info[4][0] for info in answer[0]))

    def _expire(self) -> None:
        with self._lock:
            self._expired = True
            for sock in self._sockets:
                _shut(sock)


# The try under way in this thread (``Fetcher.get``), for ``_DeadlineBackend``
_TRY: ContextVar[_Deadline | None] = ContextVar("fetch_try", default=None)


class _DeadlineBackend(httpcore.SyncBackend):
    """httpcore's sockets, each connection's name looked up and its addresses connected
    to within the deadline of the try under way (``_TRY``); without one, as httpcore's.
    httpcore's own connect (``socket.create_connection``) looks the name up with no
    timeout at all, so a name server that never answered held the try past its
    deadline for as long as the resolver's own timeouts allowed."""

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        deadline = _TRY.get()
        if deadline is None:
            return super().connect_tcp(host, port, timeout, local_address, socket_options)
        failed: Exception | None = None
        for address in deadline.resolve(host, port):  # each in turn, as create_connection
            try:
                return super().connect_tcp(address, port, deadline.bound(timeout),
                                           local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failed = exc
        assert failed is not None  # (getaddrinfo answers with an address or raises)
        raise failed


def _connect_by_deadline(client: httpx.Client) -> None:
    """Make ``client``'s connections through ``_DeadlineBackend``: the direct one and
    those through a proxy that the environment names. httpx's client takes no network
    backend, and a transport of our own would lose the proxies; each transport's
    httpcore pool takes one, and gives it to each connection it opens."""
    transports = [client._transport, *client._mounts.values()]
    for transport in transports:
        pool = getattr(transport, "_pool", None)
        if pool is not None:
            assert hasattr(pool, "_network_backend"), "httpcore's pool changed"
            pool._network_backend = _DeadlineBackend()


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # closed, or wrapped in TLS since (and the wrapper shut)
        sock.shutdown(socket.SHUT_RDWR)
