"""HTTP fetching for sources: timeouts, retries with backoff, conditional GET.

Retries cover what a polite client should retry (429, 5xx, timeouts, dropped
connections), honouring ``Retry-After``. ETag / Last-Modified validators are
kept per URL so a feed that has not changed costs one 304 and no parsing.

Each try has one deadline, connecting, headers and body together (``_Deadline``):
httpx's timeouts are per read, and a server sending a byte every few seconds
answers every read in time, headers included, and is never done.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from newsletter import __version__
from newsletter.errors import FetchError
from newsletter.retry import backoff_delay, retry_after_seconds

USER_AGENT = f"newsletter/{__version__} (research-paper digest; +https://example.invalid/bot)"
RETRY_STATUSES = {429, 500, 502, 503, 504}
MAX_BYTES = 200 * 1024 * 1024  # of a source's body (a file's, or a response's unpacked)
FETCH_SECONDS = 300.0  # one try, connecting, headers and body, however slowly bytes come


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
    each socket as the try (a redirect's too) connects or starts TLS. Connecting itself
    has no socket to shut yet: it stops at the connect timeout, at most the deadline.
    """

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds
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

    def _expire(self) -> None:
        with self._lock:
            self._expired = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # closed, or wrapped in TLS since (and the wrapper shut)
        sock.shutdown(socket.SHUT_RDWR)
