"""What every provider's webhook verifier shares.

A notice changes subscribers' state, so nothing is believed until the provider's
own proof checks out (a signature, a key, a certificate), on top of the secret
per-provider token in the URL. Each provider is one small module with one class:
``accept`` takes the raw request, verifies it, and returns the (address, kind)
notices it carries. Anything malformed is a ``Rejected(400)``, never an
exception that escapes as a 500.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from newsletter.config import WebhooksConfig

Notice = tuple[str, str]  # (address, "bounce" | "complaint")
Fetcher = Callable[[str], Awaitable[bytes]]


class Rejected(Exception):
    """A notice that is refused; ``status`` is the HTTP answer (400 malformed,
    401 bad proof, 403 provider not configured, 413 too large)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class WebhookRequest:
    headers: Mapping[str, str]  # lower-cased names
    body: bytes
    now: float = field(default_factory=time.time)
    # (event id, seconds to remember it): filled by the verifier, written by the handler
    # in the transaction that applies the notice (``webhooks.replay``).
    claims: list[tuple[str, float]] = field(default_factory=list)

    def header(self, *names: str) -> str:
        for name in names:
            value = self.headers.get(name)
            if value:
                return value
        return ""


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurd nesting
        raise Rejected(400, f"not JSON: {str(exc)[:120]}") from None


def text(obj: Any, key: str, *, required: bool = False) -> str:
    """``obj[key]`` as a string: a missing key is "" (unless required), anything but a
    string is malformed."""
    if not isinstance(obj, dict):
        raise Rejected(400, f"expected an object holding {key!r}")
    value = obj.get(key)
    if value is None:
        if required:
            raise Rejected(400, f"missing field {key!r}")
        return ""
    if not isinstance(value, str):
        raise Rejected(400, f"field {key!r} must be a string")
    return value


def obj(parent: Any, key: str) -> dict[str, Any]:
    if not isinstance(parent, dict):
        raise Rejected(400, f"expected an object holding {key!r}")
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Rejected(400, f"field {key!r} must be an object")
    return value


def items(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise Rejected(400, f"{what} must be a list")
    return value


TIMESTAMP = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,9})?")


def fresh(timestamp: str, req: WebhookRequest, tolerance: int) -> float:
    """A signed unix timestamp (plain digits: never "nan", "inf" or "1e9") within
    ``tolerance`` seconds of now, else stale."""
    if not TIMESTAMP.fullmatch(timestamp):
        raise Rejected(400, "the timestamp is not a number of seconds")
    ts = float(timestamp)
    if not math.isfinite(ts) or abs(req.now - ts) > tolerance:
        raise Rejected(401, "stale: the signed timestamp is too old (or in the future)")
    return ts


class Verifier:
    """One provider's scheme. Subclasses set ``name`` and implement ``accept``."""

    name: ClassVar[str] = ""

    def __init__(self, config: WebhooksConfig, *, fetcher: Fetcher) -> None:
        self.config = config
        self.fetcher = fetcher

    def configured(self) -> bool:
        return True

    async def accept(self, req: WebhookRequest) -> list[Notice]:
        raise NotImplementedError

    def not_replayed(self, key: str, req: WebhookRequest, window: float | None = None) -> None:
        """Claim this notice's event id: the handler records it in the database with the
        changes, and refuses the notice (401) when it is there already. Remembered for
        ``window`` seconds (by default twice the freshness tolerance: past that, the
        notice is stale anyway)."""
        ttl = 2 * self.config.tolerance_seconds if window is None else window
        req.claims.append((key, float(ttl)))


def collect(gen: Iterator[Notice]) -> list[Notice]:
    return list(gen)
