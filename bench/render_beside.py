"""Does rendering in a second process, beside the sending loop, pay against a sink that
costs nothing? Three ways to send the same messages through the project's
SmtpTransport to Postfix's C smtp-sink, in alternated rounds:

    python bench/render_beside.py [--messages 4000] [--connections 4] [--rounds 3]

- ``bare``: the messages rendered beforehand, only sent (the ceiling);
- ``inline``: each sender task explains its subscriber's picks and renders the email,
  then sends it (what ``newsletter send`` does in its one event loop);
- ``beside``: a forked process explains and renders, in order, and hands each message's
  bytes through a pipe; the event loop only sends.

Printed per round: messages/s, the share of ``bare`` in that round, the sending
process's CPU per message (user + sys; ``beside``: the render process's too) and the
load average. The ledger, planning and claims of ``newsletter send`` are left out: this
measures rendering against sending alone.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import c_sink  # noqa: E402
from bench.render_speed import diverse_jobs, setup  # noqa: E402
from newsletter.render.mime import Message  # noqa: E402
from newsletter.transports.smtp import SmtpTransport  # noqa: E402


def cpu(who: int = resource.RUSAGE_SELF) -> float:
    u = resource.getrusage(who)
    return u.ru_utime + u.ru_stime


def render_one(renderer: Any, ranker: Any, job: Any) -> Message:
    r, picks, _, trending = job
    explanations = [None] * len(picks) if trending else list(
        ranker.explain_many(r.keywords, picks))
    return renderer.render(r, picks, explanations, trending).message


async def send_all(transport: SmtpTransport, take: Any, n: int, concurrency: int) -> None:
    """``concurrency`` tasks, each taking the next message (``await take()``) and
    sending it, until ``n`` are sent."""
    left = [n]

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            await transport.send(await take())

    await asyncio.gather(*[worker() for _ in range(concurrency)])


def run_bare(transport: SmtpTransport, messages: list[Message], concurrency: int) -> None:
    it = iter(messages)

    async def take() -> Message:
        return next(it)

    asyncio.run(send_all(transport, take, len(messages), concurrency))


def run_inline(transport: SmtpTransport, renderer: Any, ranker: Any, jobs: list[Any],
               concurrency: int) -> None:
    it = iter(jobs)

    async def take() -> Message:
        return render_one(renderer, ranker, next(it))

    asyncio.run(send_all(transport, take, len(jobs), concurrency))


def _render_child(conn: Any, renderer: Any, ranker: Any, jobs: list[Any]) -> None:
    for job in jobs:
        m = render_one(renderer, ranker, job)
        conn.send((m.to, m.sender, m.message_id, m.data))
    conn.close()


def run_beside(transport: SmtpTransport, renderer: Any, ranker: Any, jobs: list[Any],
               concurrency: int) -> float:
    """Returns the render process's CPU seconds."""
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    before = cpu(resource.RUSAGE_CHILDREN)
    child = ctx.Process(target=_render_child, args=(send, renderer, ranker, jobs))
    child.start()
    send.close()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Message] = asyncio.Queue(maxsize=256)

        def reader() -> None:  # the pipe is read in a thread, the loop only sends
            for _ in range(len(jobs)):
                to, sender, mid, data = recv.recv()
                fut = asyncio.run_coroutine_threadsafe(
                    queue.put(Message(to=to, sender=sender, message_id=mid, data=data)), loop)
                fut.result()

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        await send_all(transport, queue.get, len(jobs), concurrency)
        thread.join()

    asyncio.run(main())
    child.join()
    return cpu(resource.RUSAGE_CHILDREN) - before


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=4000)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if c_sink.find() is None:
        raise SystemExit("smtp-sink not found (apt-get install postfix)")
    settings, ranker, renderer, _ = setup()
    jobs = diverse_jobs(args.messages, ranker)
    for job in jobs[:200]:
        render_one(renderer, ranker, job)  # warm the caches as a running edition has them
    messages = [render_one(renderer, ranker, j) for j in jobs]
    concurrency = args.connections * 4  # as [transport] concurrency in bench/send_speed.py
    rows: list[tuple[int, str, float, float, float, str]] = []
    for r in range(1, args.rounds + 1):
        order = ["bare", "inline", "beside"] if r % 2 else ["beside", "inline", "bare"]
        got: dict[str, tuple[float, float, str]] = {}
        for mode in order:
            sink = c_sink.start()
            load = " ".join(f"{x:.1f}" for x in os.getloadavg())
            cfg = settings.replace(smtp={"host": "127.0.0.1", "port": sink.port,
                                         "connections": args.connections,
                                         "messages_per_connection": 1_000_000}).smtp
            transport = SmtpTransport(cfg)
            c, t = cpu(), time.perf_counter()
            extra = 0.0
            try:
                if mode == "bare":
                    run_bare(transport, messages, concurrency)
                elif mode == "inline":
                    run_inline(transport, renderer, ranker, jobs, concurrency)
                else:
                    extra = run_beside(transport, renderer, ranker, jobs, concurrency)
            finally:
                wall = time.perf_counter() - t
                own = cpu() - c
                time.sleep(0.2)
                received = sink.stop()
            assert received == args.messages, (mode, received)
            ms = own / args.messages * 1e3
            note = f"{ms:.2f}" + (f" + {extra / args.messages * 1e3:.2f} rendering"
                                   if mode == "beside" else "")
            got[mode] = (args.messages / wall, ms, f"{note} | {load}")
        for mode in ("bare", "inline", "beside"):
            rate, ms, rest = got[mode]
            rows.append((r, mode, rate, rate / got["bare"][0], ms, rest))
    size = sum(len(m.data) for m in messages) / len(messages) / 1024
    print(f"{args.messages:,} messages (~{size:.0f} KB, a profile of their own each) through "
          f"SmtpTransport, {args.connections} connections, to Postfix's smtp-sink; "
          f"{args.rounds} rounds")
    print("| round | method | messages/s | share of bare | sender CPU ms/message | load |")
    print("|---|---|---|---|---|---|")
    for r, mode, rate, share, _, rest in rows:
        print(f"| {r} | {mode} | {rate:,.0f} | {share:.0%} | {rest} |")
    for mode in ("inline", "beside"):
        shares = [sh for _, m, _, sh, _, _ in rows if m == mode]
        print(f"{mode}: share of bare {min(shares):.0%}-{max(shares):.0%}, median "
              f"{statistics.median(shares):.0%}")


if __name__ == "__main__":
    main()
