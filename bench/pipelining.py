"""SMTP PIPELINING against a relay some milliseconds away: messages/s with and without.

    python bench/pipelining.py [--messages 2000] [--connections 4] [--rtt-ms 0 2 10]
                               [--rounds 2]

The same pre-built messages go through the project's SMTP transport
(``[smtp] pipelining`` true, then false) to Postfix's C ``smtp-sink`` through a small
relay on 127.0.0.1 that holds every chunk for half the round-trip time in each
direction: the latency of a relay in the same data centre (1-2 ms) or a region away
(10 ms and more). Without PIPELINING a message costs four round trips (MAIL, RCPT,
DATA, the body); with it, two. At 0 ms the relay only copies bytes, and the two
settings differ by their CPU. The delay relay is asyncio in its own process; its
cost is not the sender's.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def relay(listen_port: int, target_port: int, delay: float, ready: object) -> None:
    """Forward 127.0.0.1:listen_port to target_port, each chunk ``delay`` s late."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def later() -> None:
            while True:
                due, chunk = await queue.get()
                if not chunk:
                    writer.close()
                    return
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(chunk)

        task = asyncio.create_task(later())
        while True:
            chunk = await reader.read(65536)
            queue.put_nowait((loop.time() + delay, chunk))
            if not chunk:
                break
        await task

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer),
                             return_exceptions=True)

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
        ready.set()  # type: ignore[attr-defined]
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def sample_messages(n: int) -> list[bytes]:
    """The project's own digests: a preview of the bundled sample edition for 50
    subscribers with profiles of their own (as ``bench/send_speed.py`` makes them)."""
    from bench.send_speed import cli, env_for, populate

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = env_for(work, 25, 4)
        populate(work, 50, env)
        cli(["preview", "--out", "pv", "--limit", "50", "--date", "2025-12-26"], work, env)
        samples = [p.read_bytes() for p in sorted((work / "pv").glob("*.eml"))]
    return [samples[i % len(samples)] for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--rtt-ms", type=float, nargs="+", default=[0.0, 2.0, 10.0])
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    from bench import c_sink
    from bench.send_speed import free_port, own_cpu, transport_send

    messages = sample_messages(args.messages)
    size = sum(map(len, messages)) / len(messages) / 1024
    print(f"{args.messages:,} messages (~{size:.0f} KB), {args.connections} connections, "
          "Postfix's smtp-sink behind a delay relay on 127.0.0.1")
    print("| round-trip time | round | PIPELINING | messages/s | sender CPU ms/message |")
    print("|---|---|---|---|---|")
    spawn = multiprocessing.get_context("spawn")
    for rtt in args.rtt_ms:
        for r in range(1, args.rounds + 1):
            for pipelining in (True, False):
                sink = c_sink.start()
                port, ready = free_port(), spawn.Event()
                proxy = spawn.Process(target=relay, args=(port, sink.port, rtt / 2000, ready),
                                      daemon=True)
                proxy.start()
                ready.wait(10)
                cpu = own_cpu()
                seconds = asyncio.run(transport_send(port, messages, args.connections,
                                                     pipelining))
                cpu = own_cpu() - cpu
                proxy.terminate()
                proxy.join()
                time.sleep(0.2)
                received = sink.stop()
                assert received == args.messages, received
                print(f"| {rtt:g} ms | {r} | {'yes' if pipelining else 'no'} | "
                      f"{args.messages / seconds:,.0f} | {cpu / args.messages * 1e3:.2f} |")


if __name__ == "__main__":
    main()
