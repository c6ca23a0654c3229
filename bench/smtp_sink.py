"""A counting aiosmtpd sink for benchmarks, run as its own process.

    python bench/smtp_sink.py PORT
Prints "ready" when listening; on SIGTERM prints the number of messages received.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from aiosmtpd.controller import Controller


class Counter:
    def __init__(self) -> None:
        self.count = 0
        self.bytes = 0

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        self.count += 1
        self.bytes += len(envelope.content)
        return "250 OK"


def main() -> None:
    port = int(sys.argv[1])
    handler = Counter()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    stop = asyncio.Event()

    def on_term(*_: object) -> None:
        print(f"received {handler.count} {handler.bytes}", flush=True)
        controller.stop()
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    del stop
    signal.pause()


if __name__ == "__main__":
    main()
