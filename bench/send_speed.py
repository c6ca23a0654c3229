"""Sending: the full pipeline vs the transport ceiling, and a large edition end to end.

    python bench/send_speed.py [--messages 3000] [--connections 4] [--edition 100000]
                               [--rounds 1] [--sink py|c] [--processes 1]

1. Messages/s to a local sink (its own process) for the full pipeline
   (rank + render + send + ledger), side by side with a bare aiosmtplib loop
   sending the same number of pre-built messages of the same size over the same
   number of connections: the ceiling for this machine. With each, the sender's
   CPU per message (user + sys over messages: the bench's own process for the bare
   loop; the ``newsletter send`` child for the pipeline, start and planning included,
   and its delivery phase alone) and the load average when the run started. A second
   bare loop sends the same bytes through the project's own SMTP transport (its fast
   paths and PIPELINING): cheaper per message than aiosmtplib's ``sendmail``, so the
   pipeline's share of it is printed too.
2. An edition of ``--edition`` subscribers end to end on SQLite (`newsletter send`
   as a child process): wall time and peak RSS.

``--processes N`` is passed to the pipeline's ``send``: N processes deliver the
edition, while the bare loop stays one process (the CPU per message counts them all:
the child's rusage includes the processes it forked and waited for).

``--sink py`` is the aiosmtpd sink (bench/smtp_sink.py, about 1.75 ms of CPU a
message on the same two cores, so the ratio partly measures the sink); ``--sink c``
is Postfix's C ``smtp-sink`` (bench/c_sink.py; Debian package postfix), which costs
almost nothing, so the ratio is the sender's own. The sink's own CPU per message is
printed for each method (from /proc; it shares the machine's cores with the sender).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import random
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import synthetic_profiles  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_sink() -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "smtp_sink.py"), str(port)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc, port


def stop_sink(proc: subprocess.Popen[str]) -> int:
    proc.terminate()
    out = proc.communicate(timeout=30)[0]
    return int(out.split()[1]) if out.startswith("received") else -1


def process_cpu(pid: int) -> float | None:
    """CPU seconds (user + sys) a running process has used, from /proc (None where it
    cannot be read): the sink's share of the machine, which the sender's own does not
    show. Read before the process is stopped (a reaped one has no entry)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sink_ms(sink: PySink | CSinkRun, before: float | None, messages: int) -> float | None:
    """The sink's CPU ms a message since ``before`` (its reading when the sending
    started: the Python sink's own start-up is not counted)."""
    after = sink.cpu()
    if before is None or after is None:
        return None
    return (after - before) / messages * 1e3


class PySink:
    """bench/smtp_sink.py (aiosmtpd) in its own process."""

    def __init__(self) -> None:
        self.proc, self.port = start_sink()

    def cpu(self) -> float | None:
        return process_cpu(self.proc.pid)

    def stop(self) -> int:
        return stop_sink(self.proc)


class CSinkRun:
    """Postfix's smtp-sink, started and stopped by bench/c_sink.py."""

    def __init__(self) -> None:
        from bench import c_sink

        self.sink = c_sink.start()
        self.port = self.sink.port

    def cpu(self) -> float | None:
        return process_cpu(self.sink.proc.pid)

    def stop(self) -> int:
        time.sleep(0.2)  # the sink writes its last counter line when the session quits
        return self.sink.stop()


def open_sink(kind: str) -> PySink | CSinkRun:
    return CSinkRun() if kind == "c" else PySink()


def copy_db(src: Path, dst: Path) -> None:
    """A consistent copy of an SQLite database (its WAL included), replacing ``dst`` and
    any WAL or shared-memory file left beside it: a plain file copy over a database whose
    old ``-wal`` file is still there reads as "database disk image is malformed"."""
    import sqlite3

    for path in (dst, dst.with_name(dst.name + "-wal"), dst.with_name(dst.name + "-shm")):
        path.unlink(missing_ok=True)
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    a.close()
    b.close()


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def env_for(workdir: Path, port: int, connections: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update({"NEWSLETTER_DATABASE__URL": f"sqlite:///{workdir / 'subscribers.db'}",
                "NEWSLETTER_TRANSPORT__BACKEND": "smtp",
                "NEWSLETTER_TRANSPORT__CONCURRENCY": str(connections * 4),
                "NEWSLETTER_SMTP__HOST": "127.0.0.1", "NEWSLETTER_SMTP__PORT": str(port),
                "NEWSLETTER_SMTP__CONNECTIONS": str(connections),
                "NEWSLETTER_SMTP__MESSAGES_PER_CONNECTION": "100000"})
    return env


def cli(args: list[str], workdir: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "newsletter", *args], cwd=workdir, env=env,
                          capture_output=True, text=True, check=True)


def populate(workdir: Path, n: int, env: dict[str, str]) -> None:
    profiles = synthetic_profiles(n, seed=11)
    rng = random.Random(3)
    with (workdir / "subs.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["email", "name", "keywords", "tz", "hour"])
        for i, p in enumerate(profiles):
            w.writerow([f"reader{i}@example.org", f"Reader {i}", p, "UTC", rng.randint(0, 23)])
    cli(["ingest", str(ROOT / "newsletter" / "data" / "sample_papers.json")], workdir, env)
    cli(["subscribers", "import", "subs.csv"], workdir, env)


def timed_send(workdir: Path, env: dict[str, str], processes: int = 1
               ) -> tuple[float, float, float, float, float]:
    """Wall time of the whole command, its delivery phase alone, its peak RSS, its CPU
    seconds (user + sys) and the CPU seconds of its delivery phase: the child's CPU is
    read from /proc ten times a second, and the delivery phase's share is what it used
    in its last "in N s" (the time ``newsletter send`` reports for delivering)."""
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "newsletter", "send", "--yes", "--force",
                             "--date", "2025-12-26", "--processes", str(processes)],
                            cwd=workdir, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    samples: list[tuple[float, float]] = []
    done = threading.Event()

    def sample() -> None:
        tick = os.sysconf("SC_CLK_TCK")
        while not done.wait(0.1):
            try:
                fields = Path(f"/proc/{proc.pid}/stat").read_text().rpartition(")")[2].split()
            except OSError:
                return
            samples.append((time.perf_counter(), (int(fields[11]) + int(fields[12])) / tick))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, usage = os.wait4(proc.pid, 0)[1:]
    end = time.perf_counter()
    done.set()
    sampler.join()
    wall = end - t
    stderr = proc.stderr.read() if proc.stderr else ""
    found = re.search(r"sent (\d+), failed (\d+) in ([\d.]+)s", stderr)
    assert found, stderr
    deliver_s = float(found.group(3))
    cpu = usage.ru_utime + usage.ru_stime
    start = end - deliver_s
    before = [c for when, c in samples if when <= start]
    return wall, deliver_s, usage.ru_maxrss / 1024, cpu, cpu - (before[-1] if before else 0.0)


async def bare_send(port: int, messages: list[bytes], connections: int) -> float:
    import aiosmtplib

    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for m in messages:
        queue.put_nowait(m)

    async def worker() -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port)
        await client.connect()
        while not queue.empty():
            data = queue.get_nowait()
            await client.sendmail("digest@localhost", ["reader@example.org"], data)
        await client.quit()

    t = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(connections)])
    return time.perf_counter() - t


def compile_package() -> None:
    """Byte-compile the ``newsletter`` package the ``send`` child imports (the first on
    PYTHONPATH), as installing the wheel does: with PYTHONDONTWRITEBYTECODE set, as on
    some machines, an uncompiled checkout is compiled from source by every command,
    about 0.1 s of each start that an installed ``newsletter`` never pays."""
    import compileall

    found = subprocess.run([sys.executable, "-c", "import newsletter; print(newsletter.__file__)"],
                           capture_output=True, text=True, check=True, cwd=tempfile.gettempdir())
    compileall.compile_dir(str(Path(found.stdout.strip()).parent), quiet=1)


def transport_loop(port: int, samples: list[bytes], n: int, connections: int
                   ) -> tuple[float, float]:
    """``transport_send`` in a fresh process (seconds, its CPU seconds): importing the
    transport installs its fast paths into aiosmtplib, which must not reach the bare
    aiosmtplib loop of this process."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_transport_child, (port, samples, n, connections))


def _transport_child(port: int, samples: list[bytes], n: int, connections: int
                     ) -> tuple[float, float]:
    messages = [samples[i % len(samples)] for i in range(n)]
    cpu = own_cpu()
    seconds = asyncio.run(transport_send(port, messages, connections))
    return seconds, own_cpu() - cpu


async def transport_send(port: int, messages: list[bytes], connections: int,
                         pipelining: bool = True) -> float:
    """The same pre-built messages through the project's own SMTP transport (its
    connection pool, the fast paths, PIPELINING where the sink offers it): the
    cheapest way this code base has to put them on the wire, one process. Also what
    bench/pipelining.py times, with and without PIPELINING."""
    from newsletter.config import SmtpConfig
    from newsletter.render.mime import Message
    from newsletter.transports.smtp import SmtpTransport

    transport = SmtpTransport(SmtpConfig(host="127.0.0.1", port=port, connections=connections,
                                         messages_per_connection=100_000,
                                         pipelining=pipelining))
    queue: asyncio.Queue[Message] = asyncio.Queue()
    for i, m in enumerate(messages):
        queue.put_nowait(Message(to="reader@example.org", sender="digest@localhost",
                                 message_id=str(i), data=m, crlf=True))

    async def worker() -> None:
        while not queue.empty():
            await transport.send(queue.get_nowait())

    t = time.perf_counter()
    await transport.open()
    await asyncio.gather(*[worker() for _ in range(connections)])
    await transport.close()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=3000)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--edition", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=1,
                    help="rounds of (bare loop, then the pipeline), one after the other")
    ap.add_argument("--sink", choices=["py", "c"], default="py",
                    help="py: the aiosmtpd sink; c: Postfix's smtp-sink (bench/c_sink.py)")
    ap.add_argument("--processes", type=int, default=1,
                    help="processes delivering the pipeline's edition (`send --processes`)")
    args = ap.parse_args()
    compile_package()
    if args.sink == "c":
        from bench import c_sink

        if c_sink.find() is None:
            raise SystemExit("--sink c: smtp-sink not found (apt-get install postfix)")

    # 1. pipeline vs bare aiosmtplib, same sink, same connections, same message size;
    # every round sends the same edition again from a copy of the planned-for database
    outside: list[tuple[int, float, float]] = []  # round, whole command s, delivery s
    rows: list[tuple[int, str, float, float, float, str]] = []  # round, method, msg/s,
    # share, CPU ms a message, load at the start
    sink_cpu: dict[tuple[int, str], float | None] = {}  # (round, method): the sink's
    # CPU ms a message
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sink = open_sink(args.sink)
        try:
            env = env_for(work, sink.port, args.connections)
            populate(work, args.messages, env)
            # the same kind of messages, for the bare loop: a preview of the same edition
            cli(["preview", "--out", "pv", "--limit", "50", "--date", "2025-12-26"], work, env)
            samples = [p.read_bytes() for p in sorted((work / "pv").glob("*.eml"))]
            copy_db(work / "subscribers.db", work / "pristine.db")
        finally:
            sink.stop()
        messages = [samples[i % len(samples)] for i in range(args.messages)]
        for r in range(1, args.rounds + 1):
            sink, at = open_sink(args.sink), load()
            try:
                cpu, started = own_cpu(), sink.cpu()
                bare_s = asyncio.run(bare_send(sink.port, messages, args.connections))
                cpu = own_cpu() - cpu
                sink_cpu[r, "bare"] = sink_ms(sink, started, args.messages)
            finally:
                assert sink.stop() == args.messages
            bare_rate = args.messages / bare_s
            rows.append((r, "bare aiosmtplib loop, pre-built bytes (ceiling)", bare_rate, 1.0,
                         cpu / args.messages * 1e3, at))
            sink, at = open_sink(args.sink), load()
            try:
                started = sink.cpu()
                own_s, cpu = transport_loop(sink.port, samples, args.messages,
                                            args.connections)
                sink_cpu[r, "transport"] = sink_ms(sink, started, args.messages)
            finally:
                assert sink.stop() == args.messages
            rows.append((r, "bare loop through newsletter's SMTP transport, pre-built bytes",
                         args.messages / own_s, args.messages / own_s / bare_rate,
                         cpu / args.messages * 1e3, at))
            copy_db(work / "pristine.db", work / "subscribers.db")
            sink, at = open_sink(args.sink), load()
            try:
                started = sink.cpu()
                wall, deliver_s, _, cpu, deliver_cpu = timed_send(
                    work, env_for(work, sink.port, args.connections), args.processes)
                sink_cpu[r, "pipeline"] = sink_ms(sink, started, args.messages)
            finally:
                received = sink.stop()
            assert received == args.messages, received
            rows.append((r, "full pipeline: `newsletter send` (rank + render + send + ledger, "
                         "process start included)", args.messages / wall,
                         args.messages / wall / bare_rate, cpu / args.messages * 1e3, at))
            rows.append((r, "full pipeline, delivery phase (render + send + ledger)",
                         args.messages / deliver_s, args.messages / deliver_s / bare_rate,
                         deliver_cpu / args.messages * 1e3, at))
            outside.append((r, wall, deliver_s))
    size = sum(len(m) for m in samples) / len(samples) / 1024
    what = ("Postfix's smtp-sink (C)" if args.sink == "c" else "an aiosmtpd sink")
    print(f"{args.messages:,} messages (~{size:.0f} KB) to {what} on 127.0.0.1 "
          f"(own process), {args.connections} connections; {args.rounds} round(s); "
          f"pipeline in {args.processes} process(es), the bare loop in one")
    print("| round | method | messages/s | share of the bare loop in that round | "
          "sender CPU ms/message | load at start |")
    print("|---|---|---|---|---|---|")
    for r, method, rate, share, ms, at in rows:
        print(f"| {r} | {method} | {rate:,.0f} | {share:.0%} | {ms:.2f} | {at} |")
    if args.rounds > 1:
        print("\n| method | median share | range |")
        print("|---|---|---|")
        for method in dict.fromkeys(m for _, m, *_ in rows if "bare" not in m):
            shares = [sh for _, m, _, sh, *_ in rows if m == method]
            print(f"| {method} | {statistics.median(shares):.0%} | "
                  f"{min(shares):.0%}-{max(shares):.0%} |")
    # What the command does before its first message and after its last (start, opening
    # the edition, planning, exit): seconds, which a change there shows even when the
    # machine's speed moves the shares from round to round.
    print("\n| round | whole command s | delivery phase s | outside the delivery phase s |")
    print("|---|---|---|---|")
    for r, wall, deliver_s in outside:
        print(f"| {r} | {wall:.2f} | {deliver_s:.2f} | {wall - deliver_s:.2f} |")
    # The sink's own CPU (it shares the machine's cores with the sender): a sink that is
    # not the bottleneck spends a small part of what the sender does.
    print("\n| round | sink CPU ms/message: bare loop | transport loop | pipeline |")
    print("|---|---|---|---|")
    for r in range(1, args.rounds + 1):
        print(f"| {r} | " + " | ".join(
            "n/a" if sink_cpu[r, m] is None else f"{sink_cpu[r, m]:.3f}"
            for m in ("bare", "transport", "pipeline")) + " |")
    own = {r: rate for r, m, rate, *_ in rows if "transport" in m}
    print("\n| method | share of the transport loop, by round |")
    print("|---|---|")
    for method in dict.fromkeys(m for _, m, *_ in rows if "pipeline" in m):
        print(f"| {method} | " + ", ".join(
            f"{rate / own[r]:.0%}" for r, m, rate, *_ in rows if m == method) + " |")

    # 2. a large edition end to end
    if args.edition:
        edition_run(args.edition, args.connections, args.sink)

def edition_run(n: int, connections: int, sink_kind: str) -> None:
    """An edition of ``n`` subscribers end to end on SQLite: wall time, CPU, peak RSS."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sink = open_sink(sink_kind)
        try:
            env = env_for(work, sink.port, connections)
            t = time.perf_counter()
            populate(work, n, env)
            setup_s = time.perf_counter() - t
            wall, _, rss, cpu, _ = timed_send(work, env)
        finally:
            received = sink.stop()
    print()
    print(f"| edition of {n:,} subscribers on SQLite | value |")
    print("|---|---|")
    print(f"| `newsletter send` wall time | {wall:.0f} s ({n / wall:,.0f} msg/s) |")
    print(f"| its CPU per message | {cpu / n * 1e3:.2f} ms |")
    print(f"| peak RSS of the send process | {rss:.0f} MB |")
    print(f"| messages at the sink | {received:,} |")
    print(f"| setup (ingest + import, not timed above) | {setup_s:.0f} s |")


if __name__ == "__main__":
    main()
