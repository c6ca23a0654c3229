"""Rate limits shared by every send in the process (per second, per hour)."""

from __future__ import annotations

import asyncio
import math
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
        """``rate`` a ``period`` on average, and at most its next whole number in any
        period: ``ceil(rate)`` messages every ``ceil(rate) / rate`` periods (2.5 a
        second: 3 in any 1.2 s; 5 a second: 5 in any second). Rounded down, a rate of
        2.5 sent 2, and a limit shared by three processes lost a third."""
        count = min(max(1, math.ceil(rate)), MAX_WINDOW)
        return cls(count, period * count / rate, clock)

    def seed(self, ages: list[float]) -> None:
        """Messages already sent, ``ages`` seconds ago (by earlier runs: the ledger's)."""
        now = self.clock()
        for age in sorted(ages, reverse=True)[-(self.sent.maxlen or 1):]:
            self.sent.append(now - age)

    def wait_time(self) -> float:
        if len(self.sent) < (self.sent.maxlen or 1):
            return 0.0
        return max(0.0, self.sent[0] + self.seconds - self.clock())

    def take(self) -> None:
        self.sent.append(self.clock())


MAX_WINDOW = 10_000_000  # messages a window remembers at most (a rate above is unlimited)


class RateLimiter:
    """``acquire()`` returns when one more message may go. Rates of 0 are unlimited.

    "5 a second" is at most 5 in any second, the first one included, and 5 every
    second on average: a window over the last messages' times. A token bucket that held
    a second's (or a minute's) worth let that many go at once on top of the rate (10 in
    the first second of a send limited to 5, which a provider counting its own seconds
    refuses); one that held one token lost every late wake-up (69% of 300 a second)."""

    def __init__(self, per_second: float = 0.0, per_hour: float = 0.0, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Any] = asyncio.sleep,
                 sent_last_hour: list[float] | None = None) -> None:
        """``sent_last_hour``: how many seconds ago each message of the last hour went
        (the ledger's, by earlier runs): the hour's limit counts them, or each run (a
        slot, the retry job ten minutes later, a rerun) could send a whole hour's
        worth."""
        self.windows = []
        if 0 < per_second < MAX_WINDOW:
            self.windows.append(Window.of(per_second, 1.0, clock))
        if 0 < per_hour < MAX_WINDOW:
            hour = Window.of(per_hour, 3600.0, clock)
            hour.seed(sent_last_hour or [])
            self.windows.append(hour)
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
