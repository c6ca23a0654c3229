"""Token buckets shared by every send in the process (per second, per hour)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


class TokenBucket:
    def __init__(self, rate: float, capacity: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.clock = clock
        self.updated = clock()

    def wait_time(self) -> float:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1 - 1e-9:
            return 0.0
        return (1 - self.tokens) / self.rate


class RateLimiter:
    """``acquire()`` returns when one more message may go. Rates of 0 are unlimited.

    Messages are spaced evenly (buckets of one token): "5 a second" is then at most 5
    in any second. Buckets that held a second's (or a minute's) worth let that many go
    at once on top of the rate: 10 messages in the first second of a send under a
    limit of 5, which a provider counting its own seconds refuses."""

    def __init__(self, per_second: float = 0.0, per_hour: float = 0.0, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Any] = asyncio.sleep) -> None:
        self.buckets = []
        if per_second > 0:
            self.buckets.append(TokenBucket(per_second, 1.0, clock))
        if per_hour > 0:
            self.buckets.append(TokenBucket(per_hour / 3600.0, 1.0, clock))
        self._sleep = sleep
        self._lock = asyncio.Lock()

    @property
    def unlimited(self) -> bool:
        return not self.buckets

    async def acquire(self) -> None:
        if self.unlimited:
            return
        async with self._lock:
            while True:
                wait = max(b.wait_time() for b in self.buckets)
                if wait <= 0:
                    for b in self.buckets:
                        b.tokens -= 1
                    return
                await self._sleep(wait)
