"""The shared base of the email-API transports (one small module per provider).

A provider module says how to turn messages into one HTTP request and how to
read the answer; this base does the rest the same way for all: an httpx client,
status mapping (429 and 5xx transient, honouring ``Retry-After``; other 4xx
permanent, with the provider's own message), and batching: concurrent ``send``
calls are gathered for a moment into one request where the provider has a batch
endpoint.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import httpx

from newsletter.config import ApiConfig
from newsletter.errors import ConfigError, TransportError
from newsletter.ingest.fetch import USER_AGENT
from newsletter.render.mime import Message
from newsletter.retry import retry_after_seconds
from newsletter.transports.base import Transport

BATCH_WAIT = 0.02  # seconds a batch waits for company


class HttpApiTransport(Transport):
    default_base = ""
    needs: tuple[str, ...] = ("api_key",)
    config_section = "api"

    @classmethod
    def from_config(cls, cfg: ApiConfig) -> HttpApiTransport:
        return cls(cfg)

    def __init__(self, cfg: ApiConfig) -> None:
        for key in self.needs:
            if not getattr(cfg, key):
                raise ConfigError(f"[api] {key}: required by the {self.name} backend")
        self.cfg = cfg
        self.base = (cfg.base_url or self.default_base.format(region=cfg.region)).rstrip("/")
        self.client: httpx.AsyncClient | None = None
        self._queue: list[tuple[Message, asyncio.Future[str]]] = []
        self._flusher: asyncio.Task[None] | None = None

    # -- what a provider module supplies ---------------------------------------------

    single_path = ""  # JSON providers: the endpoint for one message ...
    batch_path = ""  # ... and for a batch (a JSON array of the same objects)

    def payload(self, message: Message) -> Any:
        """JSON providers: the request body for one message."""
        raise NotImplementedError

    def auth_headers(self, messages: Sequence[Message]) -> dict[str, str]:
        return {}

    def request(self, messages: Sequence[Message]) -> dict[str, Any]:
        """httpx.request keyword arguments for sending ``messages`` (one, or a batch)."""
        headers = self.auth_headers(messages)
        if len(messages) == 1:
            return {"method": "POST", "url": self.base + self.single_path, "headers": headers,
                    "json": self.payload(messages[0])}
        return {"method": "POST", "url": self.base + self.batch_path, "headers": headers,
                "json": [self.payload(m) for m in messages]}

    def results(self, response: httpx.Response, messages: Sequence[Message]) -> list[
            str | TransportError]:
        """Per message, the provider's id or an error, from a 2xx response."""
        return [provider_id(response) or m.message_id for m in messages]

    def error_text(self, response: httpx.Response) -> str:
        try:
            body = response.json()
        except (json.JSONDecodeError, ValueError):
            return response.text[:300]
        return json.dumps(body)[:300]

    # -- the shared part ------------------------------------------------------------

    async def open(self) -> None:
        self.client = httpx.AsyncClient(timeout=self.cfg.timeout,
                                        headers={"User-Agent": USER_AGENT})

    async def close(self) -> None:
        if self._flusher is not None:
            await self._flusher
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    async def send(self, message: Message) -> str:
        if self.batch_size <= 1:
            result = (await self.send_batch([message]))[0]
            if isinstance(result, TransportError):
                raise result
            return result
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._queue.append((message, future))
        if len(self._queue) >= self.batch_size:
            await self._flush()
        elif self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_later())
        return await future

    async def _flush_later(self) -> None:
        await asyncio.sleep(BATCH_WAIT)
        await self._flush()

    async def _flush(self) -> None:
        batch, self._queue = self._queue[: self.batch_size], self._queue[self.batch_size :]
        if not batch:
            return
        results = await self.send_batch([m for m, _ in batch])
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, TransportError):
                future.set_exception(result)
            else:
                future.set_result(result)
        if self._queue:
            await self._flush()

    async def send_batch(self, messages: Sequence[Message]) -> list[str | TransportError]:
        assert self.client is not None, "open() first"
        try:
            response = await self.client.request(**self.request(messages))
        except httpx.TimeoutException:
            return [TransportError(f"{self.name}: timed out")] * len(messages)
        except httpx.TransportError as exc:
            return [TransportError(f"{self.name}: connection failed: {exc}")] * len(messages)
        status = response.status_code
        if status == 429 or status >= 500:
            wait = retry_after_seconds(response.headers.get("retry-after"))
            err = TransportError(f"{self.name}: HTTP {status}: {self.error_text(response)}",
                                 retry_after=wait)
            return [err] * len(messages)
        if status >= 400:  # 401/403: our key or our sender refused, not the recipient
            err = TransportError(f"{self.name}: HTTP {status}: {self.error_text(response)}",
                                 permanent=True, sender=status in (401, 403))
            return [err] * len(messages)
        return self.results(response, messages)


def provider_id(response: httpx.Response) -> str:
    try:
        body = response.json()
    except (json.JSONDecodeError, ValueError):
        body = {}
    if isinstance(body, dict):
        for key in ("id", "MessageID", "MessageId", "message_id"):
            if body.get(key):
                return str(body[key])
    return response.headers.get("x-message-id", "")


def headers_of(m: Message) -> dict[str, str]:
    return {k: v for k, v in m.headers if k != "Message-ID"}

