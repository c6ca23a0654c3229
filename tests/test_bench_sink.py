"""The scale benchmark's counting sink (bench/count_sink.py), which decides "no loss, no
duplicate" at a million: it must count distinct recipients, duplicates and messages that
do not parse, per phase, as a real SMTP server in its own process."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from email.message import EmailMessage

import aiosmtplib

from .conftest import ROOT, free_port


def digest(to: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "digest@example.org"
    msg["To"] = to
    msg["Subject"] = "today"
    msg["Message-ID"] = f"<{to}.1@example.org>"
    msg.set_content("text part")
    msg.add_alternative("<p>html part</p>", subtype="html")
    return msg.as_bytes()


def test_the_sink_counts_distinct_recipients_duplicates_and_bad_messages() -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "count_sink.py"), str(port)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "ready"

        async def send(items: list[tuple[str, bytes]]) -> None:
            async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port) as client:
                for rcpt, data in items:
                    await client.sendmail("digest@example.org", [rcpt], data)

        plain = b"From: a@example.org\r\nTo: c@example.org\r\nSubject: x\r\n\r\nnot multipart\r\n"
        asyncio.run(send([("a@example.org", digest("a@example.org")),
                          ("b@example.org", digest("b@example.org")),
                          ("a@example.org", digest("a@example.org")),  # a second copy
                          ("c@example.org", plain),  # parses, but is no digest
                          ("d@example.org", digest("e@example.org"))]))  # wrong To
        proc.send_signal(signal.SIGUSR1)
        first = json.loads(proc.stdout.readline())
        assert first["messages"] == 5
        assert first["distinct_recipients"] == 4 and first["duplicates"] == 1
        assert first["bad"] == 2
        asyncio.run(send([("a@example.org", digest("a@example.org"))]))
        proc.send_signal(signal.SIGUSR1)  # a new phase counts afresh
        second = json.loads(proc.stdout.readline())
        assert (second["messages"], second["duplicates"], second["bad"]) == (1, 0, 0)
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
