"""A counting SMTP sink for the scale benchmark, run as its own process.

    python bench/count_sink.py PORT

It parses every message it accepts (a message that does not parse as a multipart
email addressed to its envelope recipient is counted as bad), counts distinct
recipients and duplicates, and discards the bytes: nothing is written to disk, so
what it measures is the sender, not the disk.

Prints "ready" when listening. SIGUSR1 prints the counts as one JSON line and starts
counting afresh (one line per benchmark phase); SIGTERM prints them and exits.
"""

from __future__ import annotations

import email
import json
import signal
import sys
import threading
import time
from typing import Any

from aiosmtpd.controller import Controller


class Tally:
    """What one phase received. Swapped whole on SIGUSR1, so the SMTP thread never sees
    a half-reset tally."""

    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0
        self.bad = 0
        self.duplicates = 0
        self.recipients: set[str] = set()
        self.first = 0.0
        self.last = 0.0

    def as_dict(self) -> dict[str, Any]:
        span = self.last - self.first
        return {"messages": self.messages, "bytes": self.bytes, "bad": self.bad,
                "distinct_recipients": len(self.recipients), "duplicates": self.duplicates,
                "seconds_first_to_last": round(span, 3),
                "per_second": round(self.messages / span, 1) if span > 0 else 0.0}


class Handler:
    def __init__(self) -> None:
        self.tally = Tally()
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        data = envelope.content
        rcpt = envelope.rcpt_tos[0].lower() if envelope.rcpt_tos else ""
        ok = True
        try:
            msg = email.message_from_bytes(data)
            to = (msg.get("To") or "").lower()
            ok = (msg.is_multipart() and rcpt != "" and rcpt in to
                  and bool(msg.get("Message-ID")) and len(msg.get_payload()) >= 2)
        except Exception:  # noqa: BLE001 - any parse failure is a bad message
            ok = False
        now = time.monotonic()
        with self.lock:
            t = self.tally
            if not t.messages:
                t.first = now
            t.last = now
            t.messages += 1
            t.bytes += len(data)
            if not ok:
                t.bad += 1
            if rcpt in t.recipients:
                t.duplicates += 1
            else:
                t.recipients.add(rcpt)
        return "250 OK"

    def take(self) -> Tally:
        with self.lock:
            old, self.tally = self.tally, Tally()
        return old


def main() -> None:
    port = int(sys.argv[1])
    handler = Handler()
    controller = Controller(handler, hostname="127.0.0.1", port=port,
                            data_size_limit=10 * 1024 * 1024)
    controller.start()
    print("ready", flush=True)

    def report(*_: object) -> None:
        print(json.dumps(handler.take().as_dict()), flush=True)

    def stop(*_: object) -> None:
        report()
        controller.stop()
        sys.exit(0)

    signal.signal(signal.SIGUSR1, report)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
