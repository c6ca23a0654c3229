"""Reading a bounce mailbox: mixed reports per second, and peak memory.

    python bench/bounces.py [--messages 10000] [--subscribers 10000]

A Maildir of ``--messages`` reports (hard DSNs to the VERP address, soft delay
warnings, RFC 5965 complaints, out-of-office answers, bounces naming no delivery,
mail that is none of these) is read by ``newsletter.service.bounces.fetch`` into a
SQLite database of ``--subscribers`` subscribers, each with a sent delivery. The
goal: 10,000 messages under 60 s with peak RSS under 200 MB on a 2-core machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import peak_rss_mb  # noqa: E402
from newsletter.bounces.verp import Verp  # noqa: E402
from newsletter.config import BouncesConfig  # noqa: E402
from newsletter.service.bounces import fetch  # noqa: E402
from newsletter.store.db import get_engine, session_scope  # noqa: E402
from newsletter.store.models import Delivery, Edition, Subscriber  # noqa: E402

KEYS = ["bench key"]
RETURN_PATH = "bounces+{token}@digest.example.org"
DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "bounces" / "other"


def dsn(to: str, rcpt: str, status: str, action: str, message_id: str) -> bytes:
    return (f"From: MAILER-DAEMON@mx.example.net (Mail Delivery System)\r\nTo: {to}\r\n"
            "Subject: Undelivered Mail Returned to Sender\r\nAuto-Submitted: auto-replied\r\n"
            "MIME-Version: 1.0\r\nContent-Type: multipart/report; "
            'report-type=delivery-status; boundary="B"\r\n\r\n--B\r\n'
            "Content-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n\r\n"
            "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
            "Reporting-MTA: dns; mx.example.net\r\n\r\n"
            f"Final-Recipient: rfc822; {rcpt}\r\nAction: {action}\r\nStatus: {status}\r\n"
            f"Diagnostic-Code: smtp; 550 {status} user unknown\r\n\r\n"
            "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
            f"From: digest@digest.example.org\r\nTo: {rcpt}\r\nMessage-ID: {message_id}\r\n"
            "\r\n--B--\r\n").encode()


def build(root: Path, url: str, messages: int, subscribers: int, seed: int = 7) -> Counter[str]:
    engine = get_engine(url)
    verp = Verp(RETURN_PATH, tuple(KEYS))
    rows: list[tuple[int, int, str, str]] = []
    with session_scope(engine) as s:
        edition = Edition(day=dt.date(2026, 12, 1), slot="")
        s.add(edition)
        s.flush()
        subs = [Subscriber(email=f"reader{i}@example.org", keywords="x")
                for i in range(subscribers)]
        s.add_all(subs)
        s.flush()
        deliveries = [Delivery(edition_id=edition.id, subscriber_id=sub.id, day=edition.day,
                               status="sent", message_id=f"<{sub.id}.m@digest.example.org>")
                      for sub in subs]
        s.add_all(deliveries)
        s.flush()
        rows = [(d.id, d.subscriber_id, sub.email, d.message_id)
                for d, sub in zip(deliveries, subs, strict=True)]
    for sub in ("new", "cur", "tmp"):
        (root / sub).mkdir(parents=True)
    arf = (DATA / "arf_rfc5965.eml").read_bytes()
    auto = (DATA / "autoreply_exchange.eml").read_bytes()
    rng = random.Random(seed)
    made: Counter[str] = Counter()
    for n in range(messages):
        did, sid, rcpt, mid = rows[rng.randrange(len(rows))]
        roll = rng.random()
        if roll < 0.4:
            kind, raw = "hard", dsn(verp.address(did, sid), rcpt, "5.1.1", "failed", mid)
        elif roll < 0.6:
            kind, raw = "soft", dsn(verp.address(did, sid), rcpt, "4.2.2", "delayed", mid)
        elif roll < 0.7:
            kind, raw = "complaint", arf.replace(
                b"<8787KJKJ3K4J3K4J3K4J3.mail@digest.example.org>", mid.encode())
        elif roll < 0.85:
            kind, raw = "auto_reply", auto.replace(b"<b2c7@example.net>", f"<a{n}@x>".encode())
        elif roll < 0.95:
            kind, raw = "unmatched", dsn("bounces@digest.example.org", rcpt, "5.1.1", "failed",
                                         f"<gone{n}@elsewhere>")
        else:
            kind, raw = "unknown", f"Subject: note {n}\r\n\r\nhello\r\n".encode()
        made[kind] += 1
        (root / "new" / f"{n:06d}.bench").write_bytes(f"X-Bench: {n}\r\n".encode() + raw)
    return made


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--subscribers", type=int, default=10_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        box, url = Path(tmp) / "bounces", f"sqlite:///{tmp}/subscribers.db"
        made = build(box, url, args.messages, args.subscribers)
        before = peak_rss_mb()
        start, cpu = time.perf_counter(), time.process_time()
        report = fetch(get_engine(url), BouncesConfig(return_path=RETURN_PATH,
                                                      mailbox=f"maildir:{box}"), KEYS)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"made:    {dict(made)}")
    print(f"counted: {report.as_dict() | {'bounced': len(report.bounced)}}")
    print(f"{args.messages} messages in {wall:.1f} s ({args.messages / wall:.0f}/s, "
          f"CPU {cpu:.1f} s); peak RSS {peak_rss_mb():.0f} MB (before reading: {before:.0f})")


if __name__ == "__main__":
    main()
