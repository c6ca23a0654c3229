"""Token buckets shared by every send in the process (per second, per hour)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


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
    """``acquire()`` returns when one more message may go. Rates of 0 are unlimited."""

    def __init__(self, per_second: float = 0.0, per_hour: float = 0.0) -> None:
        self.buckets = []
        if per_second > 0:
            self.buckets.append(TokenBucket(per_second, max(1.0, per_second)))
        if per_hour > 0:
            self.buckets.append(TokenBucket(per_hour / 3600.0, max(1.0, per_hour / 60.0)))
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
                await asyncio.sleep(wait)
