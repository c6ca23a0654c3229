"""Rate limits shared by every send in the process (per second, per hour)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any


class Window:
    """At most ``count`` messages in any ``seconds``: the times of the last ``count``
    sent, the next one waiting until the oldest of them is ``seconds`` old."""

    def __init__(self, count: int, seconds: float, clock: Callable[[], float]) -> None:
        self.seconds = seconds
        self.sent: deque[float] = deque(maxlen=count)
        self.clock = clock

    @classmethod
    def of(cls, rate: float, period: float, clock: Callable[[], float]) -> Window:
        """``rate`` a ``period``: whole messages a period (a fraction left out: "at
        most"), or one every ``period / rate`` below one a period."""
        if rate >= 1:
            return cls(int(rate), period, clock)
        return cls(1, period / rate, clock)

    def wait_time(self) -> float:
        if len(self.sent) < (self.sent.maxlen or 1):
            return 0.0
        return max(0.0, self.sent[0] + self.seconds - self.clock())

    def take(self) -> None:
        self.sent.append(self.clock())


class RateLimiter:
    """``acquire()`` returns when one more message may go. Rates of 0 are unlimited.

    "5 a second" is at most 5 in any second, the first one included, and 5 every
    second on average: a window over the last messages' times. A token bucket that held
    a second's (or a minute's) worth let that many go at once on top of the rate (10 in
    the first second of a send limited to 5, which a provider counting its own seconds
    refuses); one that held one token lost every late wake-up (69% of 300 a second)."""

    def __init__(self, per_second: float = 0.0, per_hour: float = 0.0, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Any] = asyncio.sleep) -> None:
        self.windows = []
        if per_second > 0:
            self.windows.append(Window.of(per_second, 1.0, clock))
        if per_hour > 0:
            self.windows.append(Window.of(per_hour, 3600.0, clock))
        self._sleep = sleep
        self._lock = asyncio.Lock()

    @property
    def unlimited(self) -> bool:
        return not self.windows

    async def acquire(self) -> None:
        if self.unlimited:
            return
        async with self._lock:
            while True:
                wait = max(w.wait_time() for w in self.windows)
                if wait <= 0:
                    for w in self.windows:
                        w.take()
                    return
                await self._sleep(wait)
