"""HTTP fetching for sources: timeouts, retries with backoff, conditional GET.

Retries cover what a polite client should retry (429, 5xx, timeouts, dropped
connections), honouring ``Retry-After``. ETag / Last-Modified validators are
kept per URL so a feed that has not changed costs one 304 and no parsing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from newsletter import __version__
from newsletter.errors import FetchError
from newsletter.retry import backoff_delay, retry_after_seconds

USER_AGENT = f"newsletter/{__version__} (research-paper digest; +https://example.invalid/bot)"
RETRY_STATUSES = {429, 500, 502, 503, 504}
MAX_BYTES = 200 * 1024 * 1024  # of a source's body (a file's, or a response's unpacked)
FETCH_SECONDS = 300.0  # one response's whole download, however slowly its bytes come


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
            timeout=timeout, follow_redirects=True, headers={"User-Agent": USER_AGENT}
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
            try:
                with self.client.stream("GET", url, headers=headers) as resp:
                    if resp.status_code == 304:
                        return Fetched(url, None, "", validators or Validators())
                    if resp.is_success:
                        return Fetched(
                            url,
                            self._body(url, resp),
                            resp.headers.get("content-type", ""),
                            Validators(resp.headers.get("etag", ""),
                                       resp.headers.get("last-modified", "")),
                        )
                    last_error = f"HTTP {resp.status_code} {resp.reason_phrase}"
                    if resp.status_code not in RETRY_STATUSES:
                        raise FetchError(url, last_error)
                    retry_after = retry_after_seconds(resp.headers.get("retry-after"))
            except httpx.TimeoutException:
                last_error = "timed out"
            except httpx.TransportError as exc:
                last_error = f"connection failed: {exc}"
            except httpx.HTTPError as exc:  # a redirect loop, a body its encoding
                # does not fit: the server's answer, the same on every try
                raise FetchError(url, f"{type(exc).__name__}: {exc}") from None
            if attempt + 1 < self.attempts:
                self.sleep(backoff_delay(attempt, self.backoff, retry_after))
        raise FetchError(url, f"{last_error} (gave up after {self.attempts} attempts)")

    def _body(self, url: str, resp: httpx.Response) -> bytes:
        """The response's body, unpacked, read as it comes: at most ``max_bytes`` (a
        gzip of 3 MB that unpacks to 3 GB, or a body that never ends, stops there, not
        when memory runs out) within ``seconds`` (a server sending a byte a second
        answers every read in time, and read for ever)."""
        deadline = time.monotonic() + self.seconds
        chunks: list[bytes] = []
        size = 0
        for chunk in resp.iter_bytes():
            size += len(chunk)
            if size > self.max_bytes:
                raise FetchError(url, f"response larger than {self.max_bytes // 2**20} MB")
            if time.monotonic() > deadline:
                raise FetchError(url, f"still downloading after {self.seconds:.0f} s "
                                      f"({size:,} bytes)")
            chunks.append(chunk)
        return b"".join(chunks)
