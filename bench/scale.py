"""The whole pipeline at scale on PostgreSQL: import, plan, deliver through Celery workers.

    python bench/scale.py --subscribers 100000 [--workers 1,2,4] [--phase-seconds 0]
                          [--single postgresql,sqlite] [--import-method copy|cli]
                          [--sink py|c]

Phases, each timed on its own:

1. import: N synthetic subscribers (3-8 keyword terms each) into a fresh database,
   by PostgreSQL COPY (``copy``) or through ``newsletter subscribers import`` (``cli``:
   validation + executemany in batches of 5,000);
2. plan: one child process runs ``plan_edition`` (rank every subscriber against the
   sample papers, write one ledger row each); wall time and its peak RSS;
3. deliver: for each worker count, that many ``newsletter worker`` processes (Celery,
   Redis broker) deliver the edition to ``bench/count_sink.py`` (its own process; it
   parses every message, counts distinct recipients and duplicates, keeps nothing).
   Between worker counts the ledger is put back to pending, so each run sends the
   whole edition. ``--phase-seconds`` stops a run early (workers killed, then the
   ledger and the sink are compared for what was sent);
4. PostgreSQL's table sizes;
5. ``--single``: the same edition by one ``newsletter send`` process (no queue), on
   PostgreSQL and/or SQLite.

The peak RSS of every process (workers, sink) is sampled twice a second. ``--sink c``
sends to Postfix's C smtp-sink instead (bench/c_sink.py): it costs almost no CPU, so
the workers' own cost shows, but it only counts (the ledger is then the check for
duplicates).
Prints Markdown tables and writes the raw figures as JSON (``--json-out``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import synthetic_profiles  # noqa: E402

DAY = dt.date(2025, 12, 26)
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
BROKER = "redis://127.0.0.1:6379/13"
LAST_CPU = [0.0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---- processes ------------------------------------------------------------------------


class RssSampler:
    """Peak RSS and CPU seconds of a set of processes (and their children), sampled
    every 0.5 s. CPU seconds matter on a shared machine: wall time depends on what
    else runs, CPU per message does not."""

    def __init__(self) -> None:
        self.peaks: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.base: dict[str, float] = {}
        self.watch: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def add(self, label: str, pid: int) -> None:
        """Watch ``pid``; its CPU seconds count from now (the sink lives across phases)."""
        import psutil

        try:
            p = psutil.Process(pid)
            self.base[label] = sum(sum(q.cpu_times()[:2])
                                   for q in [p, *p.children(recursive=True)])
        except Exception:  # noqa: BLE001
            self.base[label] = 0.0
        self.watch[label] = pid

    def _run(self) -> None:
        import psutil

        while not self._stop.wait(0.5):
            for label, pid in list(self.watch.items()):
                try:
                    p = psutil.Process(pid)
                    procs = [p, *p.children(recursive=True)]
                    rss = max(q.memory_info().rss for q in procs) / 2**20
                    cpu = sum(sum(q.cpu_times()[:2]) for q in procs)
                except Exception:  # noqa: BLE001 - the process ended between samples
                    continue
                self.peaks[label] = max(self.peaks.get(label, 0.0), rss)
                self.cpu[label] = max(self.cpu.get(label, 0.0), cpu - self.base[label])

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        return self.peaks

    def sample_cpu_now(self) -> None:
        """A last CPU reading before the processes are stopped."""
        import psutil

        for label, pid in list(self.watch.items()):
            try:
                p = psutil.Process(pid)
                cpu = sum(sum(q.cpu_times()[:2]) for q in [p, *p.children(recursive=True)])
            except Exception:  # noqa: BLE001
                continue
            self.cpu[label] = max(self.cpu.get(label, 0.0), cpu - self.base[label])


class CSink:
    """Postfix's C smtp-sink (bench/c_sink.py) in ``Sink``'s shape: it only counts, so
    distinct recipients, duplicates and unparsable messages are not known (None); the
    ledger is the check then. It costs almost no CPU, so the workers' own cost shows."""

    def __init__(self) -> None:
        from bench import c_sink

        self.sink = c_sink.start()
        self.port, self.proc = self.sink.port, self.sink.proc
        self.seen = 0

    def take(self) -> dict[str, Any]:
        time.sleep(0.2)  # the sink writes its counter line as sessions end
        now = self.sink.received()
        got, self.seen = now - self.seen, now
        return {"messages": got, "distinct_recipients": None, "duplicates": None,
                "bad": None}

    def stop(self) -> None:
        self.sink.stop()


def count(n: int | None) -> str:
    return "n/a" if n is None else f"{n:,}"


def make_sink(kind: str) -> Sink | CSink:
    return CSink() if kind == "c" else Sink()


class Sink:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "count_sink.py"),
                                      str(self.port)], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"

    def take(self) -> dict[str, Any]:
        """The counts since the last take (and start counting afresh)."""
        assert self.proc.stdout is not None
        self.proc.send_signal(signal.SIGUSR1)
        return dict(json.loads(self.proc.stdout.readline()))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.communicate(timeout=60)


def base_env(url: str, port: int, connections: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update({"NEWSLETTER_DATABASE__URL": url, "NEWSLETTER_QUEUE__BROKER_URL": BROKER,
                "NEWSLETTER_TRANSPORT__BACKEND": "smtp",
                "NEWSLETTER_TRANSPORT__CONCURRENCY": str(connections * 4),
                "NEWSLETTER_SMTP__HOST": "127.0.0.1", "NEWSLETTER_SMTP__PORT": str(port),
                "NEWSLETTER_SMTP__CONNECTIONS": str(connections),
                "NEWSLETTER_SMTP__MESSAGES_PER_CONNECTION": "1000000",
                "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")})
    return env


def run_measured(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB) and stderr of a child process (its CPU seconds in
    ``LAST_CPU``)."""
    t = time.perf_counter()
    with tempfile.TemporaryFile("w+") as errf:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=errf,
                                text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t
        LAST_CPU[0] = usage.ru_utime + usage.ru_stime
        errf.seek(0)
        stderr = errf.read()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{stderr[-3000:]}")
    return wall, usage.ru_maxrss / 1024, stderr


# ---- phases ---------------------------------------------------------------------------


def fresh_database(name: str) -> str:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def psycopg_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def subscriber_rows(n: int) -> list[tuple[str, str, str, str, int]]:
    rng = random.Random(3)
    return [(f"reader{i}@example.org", f"Reader {i}", p, "UTC", rng.randint(0, 23))
            for i, p in enumerate(synthetic_profiles(n, seed=11))]


def setup_papers(url: str, work: Path, env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "newsletter", "ingest",
                    str(ROOT / "newsletter" / "data" / "sample_papers.json")],
                   cwd=work, env=env, check=True, capture_output=True)


def import_copy(url: str, rows: list[tuple[str, str, str, str, int]]) -> float:
    import psycopg

    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    t = time.perf_counter()
    with psycopg.connect(psycopg_url(url)) as conn:
        with conn.cursor() as cur, cur.copy(
                "COPY subscribers (email, name, keywords, tz, send_hour, frequency, status, "
                "consent_at, consent_source, bounce_count, created_at, updated_at) "
                "FROM STDIN") as copy:
            for email, name, kw, tz, hour in rows:
                copy.write_row((email, name, kw, tz, hour, "daily", "active", now,
                                "import:bench", 0, now, now))
        conn.execute("ANALYZE subscribers")
    return time.perf_counter() - t


def import_cli(work: Path, rows: list[tuple[str, str, str, str, int]],
               env: dict[str, str]) -> tuple[float, float]:
    import csv

    path = work / "subs.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["email", "name", "keywords", "tz", "hour"])
        w.writerows(rows)
    wall, rss, _ = run_measured([sys.executable, "-m", "newsletter", "subscribers", "import",
                                 str(path)], env, work)
    return wall, rss


PLAN_CHILD = """
import datetime as dt, json, sys, time
from newsletter.config import Settings
from newsletter.delivery.edition import EditionConfig
from newsletter.service.editions import plan_edition
from newsletter.store.db import get_engine
t = time.perf_counter()
settings = Settings().replace(database={"url": sys.argv[1]})
p = plan_edition(EditionConfig.of(settings), get_engine(sys.argv[1]),
                 dt.date.fromisoformat(sys.argv[2]))
print(json.dumps({"edition": p.edition.id, "planned": p.plan.planned, "skipped": p.plan.skipped,
                  "pending": p.pending, "seconds": time.perf_counter() - t}), file=sys.stderr)
"""


def plan(url: str, work: Path, env: dict[str, str]) -> dict[str, Any]:
    wall, rss, stderr = run_measured([sys.executable, "-c", PLAN_CHILD, url, DAY.isoformat()],
                                     env, work)
    data = json.loads(stderr.strip().splitlines()[-1])
    data.update(wall=wall, rss_mb=rss, cpu_s=LAST_CPU[0])
    return data


def reset_ledger(url: str, edition: int) -> float:
    """Every planned row back to pending, nothing recorded as sent: the next run sends
    the whole edition again."""
    import psycopg

    t = time.perf_counter()
    with psycopg.connect(psycopg_url(url), autocommit=True) as conn:
        conn.execute("UPDATE deliveries SET status = 'pending', lease_owner = '', "
                     "lease_expires = NULL, attempts = 0, message_id = '', sent_at = NULL, "
                     "last_error = '', reason = '' WHERE edition_id = %s AND status <> 'skipped'",
                     (edition,))
        conn.execute("TRUNCATE sent_entries")
        conn.execute("VACUUM ANALYZE deliveries")
    return time.perf_counter() - t


def ledger_counts(url: str, edition: int) -> dict[str, int]:
    import psycopg

    with psycopg.connect(psycopg_url(url)) as conn:
        return {str(k): int(v) for k, v in conn.execute(
            "SELECT status, count(*) FROM deliveries WHERE edition_id = %s GROUP BY status",
            (edition,)).fetchall()}


def finished(url: str, edition: int) -> bool:
    import psycopg

    with psycopg.connect(psycopg_url(url)) as conn:
        return conn.execute("SELECT 1 FROM deliveries WHERE edition_id = %s AND status IN "
                            "('pending', 'sending') LIMIT 1", (edition,)).fetchone() is None


def table_sizes(url: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(psycopg_url(url)) as conn:
        rows = conn.execute(
            "SELECT relname, pg_total_relation_size(c.oid) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 2 DESC").fetchall()
    return {str(r): int(s) for r, s in rows}


def start_workers(n: int, env: dict[str, str], work: Path,
                  sampler: RssSampler) -> list[subprocess.Popen[bytes]]:
    procs = []
    for i in range(n):
        errf = (work / f"worker{i}.log").open("wb")
        # --force: the bench's settings (http base URL, a localhost sender) fail `check`,
        # which a worker holds to as `send` does
        p = subprocess.Popen([sys.executable, "-m", "newsletter", "worker", "--force"],
                             cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=errf)
        procs.append(p)
        sampler.add(f"worker {i + 1}/{n}", p.pid)
    deadline = time.monotonic() + 120
    for i in range(n):
        while b"ready." not in (work / f"worker{i}.log").read_bytes():
            if time.monotonic() > deadline or procs[i].poll() is not None:
                raise SystemExit(f"worker {i} did not start:\n"
                                 + (work / f"worker{i}.log").read_text()[-2000:])
            time.sleep(0.2)
    return procs


def deliver(url: str, edition: int, workers: int, sink: Sink | CSink, work: Path,
            env: dict[str, str], total: int, limit_s: float,
            profile: Path | None = None) -> dict[str, Any]:
    import redis

    from newsletter.config import Settings
    from newsletter.delivery.queue import enqueue

    redis.Redis.from_url(BROKER).flushdb()
    sink.take()  # counts start here
    sampler = RssSampler()
    sampler.add("sink", sink.proc.pid)
    procs = start_workers(workers, env, work, sampler)
    spies = []
    if profile:  # py-spy samples each worker and the sink; collapsed stacks, one file each
        profile.mkdir(parents=True, exist_ok=True)
        targets = [(f"worker{i + 1}of{workers}", p.pid) for i, p in enumerate(procs)]
        targets.append((f"sink-{workers}w", sink.proc.pid))
        spies = [subprocess.Popen(["py-spy", "record", "--format", "raw", "--rate", "50",
                                   "--nonblocking", "-o", str(profile / f"{label}.txt"),
                                   "--pid", str(pid)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) for label, pid in targets]
    settings = Settings().replace(queue={"broker_url": BROKER})
    t = time.perf_counter()
    enqueue(settings.queue, edition, workers)
    stopped_early = False
    last_log = t
    while True:
        time.sleep(1.0)
        if finished(url, edition):
            break
        now = time.perf_counter()
        if now - last_log > 60:  # a full count costs the database a second at 1M rows
            counts = ledger_counts(url, edition)
            log(f"  {workers} worker(s): {counts.get('sent', 0):,}/{total:,} sent "
                f"({counts.get('sent', 0) / (now - t):,.0f}/s)")
            last_log = now
        if limit_s and now - t > limit_s:
            stopped_early = True
            break
    wall = time.perf_counter() - t
    sampler.sample_cpu_now()
    for p in procs:  # the edition is done (or out of time): stop at once
        p.send_signal(signal.SIGKILL if stopped_early else signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    for spy in spies:
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=60)
    time.sleep(0.5)
    received = sink.take()
    peaks = sampler.stop()
    counts = ledger_counts(url, edition)
    return {"workers": workers, "seconds": wall, "stopped_early": stopped_early,
            "ledger": counts, "sink": received,
            "msg_per_s": counts.get("sent", 0) / wall,
            "rss_mb": peaks, "cpu_s": dict(sampler.cpu)}


def single_send(url: str, work: Path, env: dict[str, str], sink: Sink | CSink) -> dict[str, Any]:
    sink.take()
    sampler = RssSampler()
    sampler.add("sink", sink.proc.pid)
    # --force: the bench's settings (http base URL, a localhost sender) fail `check`
    wall, rss, stderr = run_measured([sys.executable, "-m", "newsletter", "send", "--yes",
                                      "--force", "--date", DAY.isoformat()], env, work)
    received = sink.take()
    peaks = sampler.stop()
    found = re.search(r"sent (\d+), failed (\d+) in ([\d.]+)s", stderr)
    assert found, stderr
    sent = int(found.group(1))
    return {"seconds": wall, "deliver_seconds": float(found.group(3)), "sent": sent,
            "cpu_s": LAST_CPU[0], "sink_cpu_s": sampler.cpu.get("sink", 0.0),
            "failed": int(found.group(2)), "rss_mb": rss, "sink": received,
            "sink_rss_mb": peaks.get("sink", 0.0), "msg_per_s": sent / wall}


def drop_database(name: str) -> None:
    import psycopg

    from newsletter.store.db import dispose_all

    dispose_all()
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ---- report ---------------------------------------------------------------------------


def mb(n: float) -> str:
    return f"{n:,.0f} MB"


def report(r: dict[str, Any]) -> None:
    n = r["subscribers"]
    print(f"\n{n:,} subscribers x {r['papers']} papers on PostgreSQL, load average at start "
          f"{r['loadavg']}")
    print("\n| phase | wall time | messages/s | CPU | peak RSS | check |")
    print("|---|---|---|---|---|---|")
    imp = r["import"]
    print(f"| import ({imp['method']}) | {imp['seconds']:.1f} s | {n / imp['seconds']:,.0f} rows/s "
          f"| - | {mb(imp.get('rss_mb', 0)) if imp.get('rss_mb') else '-'} | {n:,} rows |")
    p = r["plan"]
    print(f"| plan (rank + ledger rows, own process) | {p['wall']:.1f} s | "
          f"{(p['planned'] + p['skipped']) / p['wall']:,.0f} rows/s | "
          f"{p.get('cpu_s', 0):.1f} s | {mb(p['rss_mb'])} | "
          f"{p['planned']:,} pending, {p['skipped']:,} skipped |")
    for d in r["deliver"]:
        ws = [v for k, v in d["rss_mb"].items() if k.startswith("worker")]
        s = d["sink"]
        sent = d["ledger"].get("sent", 0)
        note = " (stopped at the time limit)" if d["stopped_early"] else ""
        cpu = d.get("cpu_s", {})
        wcpu = sum(v for k, v in cpu.items() if k.startswith("worker"))
        per = f"{1000 * wcpu / sent:.1f} ms/msg workers, " if sent else ""
        per += f"{1000 * cpu.get('sink', 0) / max(1, s['messages']):.1f} ms/msg sink"
        print(f"| deliver, {d['workers']} worker(s){note} | {d['seconds']:.1f} s | "
              f"{d['msg_per_s']:,.0f} | {per} | workers max {mb(max(ws) if ws else 0)}, sink "
              f"{mb(d['rss_mb'].get('sink', 0))} | ledger sent {sent:,}; sink "
              f"{s['messages']:,} messages, {count(s['distinct_recipients'])} distinct, "
              f"{count(s['duplicates'])} duplicates, {count(s['bad'])} unparsable |")
    for name, d in r.get("single", {}).items():
        s = d["sink"]
        per = 1000 * d.get("cpu_s", 0) / max(1, d["sent"])
        print(f"| one `newsletter send` on {name} | {d['seconds']:.1f} s (deliver "
              f"{d['deliver_seconds']:.1f} s) | {d['msg_per_s']:,.0f} | {per:.1f} ms/msg | "
              f"{mb(d['rss_mb'])} | "
              f"sent {d['sent']:,}; sink {count(s['distinct_recipients'])} distinct, "
              f"{count(s['duplicates'])} duplicates |")
    print("\n| PostgreSQL table | size |")
    print("|---|---|")
    for t, size in r["tables"].items():
        if size > 100_000:
            print(f"| {t} | {size / 2**20:,.0f} MB |")


def sqlite_send(n: int, work: Path, env: dict[str, str], sink: Sink | CSink
                ) -> tuple[float, float, dict[str, Any]]:
    """``n`` subscribers imported into SQLite in ``work`` with `subscribers import`,
    then one `newsletter send` (plan + deliver) to ``sink``: import seconds and MB,
    and the send's figures."""
    lite = f"sqlite:///{work / 'subscribers.db'}"
    env = {**env, "NEWSLETTER_DATABASE__URL": lite}
    setup_papers(lite, work, env)
    rows = subscriber_rows(n)
    wall, rss = import_cli(work, rows, env)
    del rows
    log(f"sqlite import via CLI: {wall:.1f} s, {rss:.0f} MB; one-process send")
    return wall, rss, single_send(lite, work, env, sink)


def sqlite_only(n: int, args: argparse.Namespace) -> None:
    """Only the one-process send on SQLite (``sqlite_send``), no PostgreSQL."""
    sink = make_sink(args.sink)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            wall, rss, single = sqlite_send(n, work, base_env("", sink.port, args.connections),
                                            sink)
            log(f"single sqlite: {single}")
            result = {"subscribers": n, "import": {"seconds": wall, "rss_mb": rss},
                      "single": single,
                      "db_mb": (work / "subscribers.db").stat().st_size / 2**20}
    finally:
        sink.stop()
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2))
    s = single["sink"]
    print(f"| SQLite, {n:,} subscribers | value |\n|---|---|")
    print(f"| `subscribers import` | {wall:.1f} s, {rss:.0f} MB |")
    print(f"| one `newsletter send` | "
          f"{single['seconds']:.1f} s (delivery {single['deliver_seconds']:.1f} s), "
          f"{single['msg_per_s']:,.0f} msg/s, {single['rss_mb']:.0f} MB, "
          f"{1000 * single['cpu_s'] / max(1, single['sent']):.2f} ms/msg CPU |")
    print(f"| at the sink | {s['messages']:,} messages, {count(s['distinct_recipients'])} "
          f"distinct, {count(s['duplicates'])} duplicates, {count(s['bad'])} unparsable |")
    print(f"| database file | {result['db_mb']:,.0f} MB |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subscribers", type=int, default=10_000)
    ap.add_argument("--workers", default="1,2,4", help="worker counts to run, comma-separated")
    ap.add_argument("--connections", type=int, default=4, help="SMTP connections per worker")
    ap.add_argument("--phase-seconds", type=float, default=0.0,
                    help="stop each delivery run after this long (0: until done)")
    ap.add_argument("--single", default="", help="also one `newsletter send`: postgresql,sqlite")
    ap.add_argument("--import-method", choices=["copy", "cli"], default="copy")
    ap.add_argument("--database", default="nl_bench_scale")
    ap.add_argument("--keep", action="store_true", help="keep the database afterwards")
    ap.add_argument("--json-out", type=Path)
    ap.add_argument("--profile", type=Path, help="py-spy the workers and the sink into DIR")
    ap.add_argument("--sink", choices=["py", "c"], default="py",
                    help="py: bench/count_sink.py (parses every message, counts distinct "
                    "recipients and duplicates); c: Postfix's smtp-sink (counts only)")
    ap.add_argument("--sqlite-only", action="store_true",
                    help="only the one-process send on SQLite (no PostgreSQL, no workers)")
    args = ap.parse_args()
    n = args.subscribers
    if args.sqlite_only:
        sqlite_only(n, args)
        return
    result: dict[str, Any] = {"subscribers": n, "loadavg": " ".join(
        f"{x:.1f}" for x in os.getloadavg())}
    sink = make_sink(args.sink)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            url = fresh_database(args.database)
            env = base_env(url, sink.port, args.connections)
            setup_papers(url, work, env)
            result["papers"] = len(json.loads((ROOT / "newsletter" / "data" /
                                               "sample_papers.json").read_text()))
            log(f"generating {n:,} subscribers")
            rows = subscriber_rows(n)
            log("import")
            if args.import_method == "copy":
                result["import"] = {"method": "COPY", "seconds": import_copy(url, rows)}
            else:
                wall, rss = import_cli(work, rows, env)
                result["import"] = {"method": "`subscribers import`", "seconds": wall,
                                    "rss_mb": rss}
            del rows
            log(f"import: {result['import']['seconds']:.1f} s; plan")
            result["plan"] = plan(url, work, env)
            log(f"plan: {result['plan']}")
            edition = result["plan"]["edition"]
            pending = result["plan"]["pending"]
            result["deliver"] = []
            for i, w in enumerate(int(x) for x in args.workers.split(",") if x):
                if i:
                    log(f"reset ledger: {reset_ledger(url, edition):.1f} s")
                log(f"deliver with {w} worker(s)")
                d = deliver(url, edition, w, sink, work, env, pending, args.phase_seconds,
                            args.profile)
                log(f"deliver: {json.dumps(d)}")
                result["deliver"].append(d)
            result["tables"] = table_sizes(url)
            result["single"] = {}
            for backend in [b for b in args.single.split(",") if b]:
                log(f"one-process send on {backend}")
                if backend == "postgresql":
                    import psycopg

                    with psycopg.connect(psycopg_url(url), autocommit=True) as conn:
                        conn.execute("DELETE FROM editions")
                        conn.execute("TRUNCATE sent_entries")
                        conn.execute("VACUUM ANALYZE deliveries")
                    result["single"][backend] = single_send(url, work, env, sink)
                else:
                    result["single"][backend] = sqlite_send(n, work, env, sink)[2]
                log(f"single {backend}: {result['single'][backend]}")
            if not args.keep:
                drop_database(args.database)
    finally:
        sink.stop()
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2))
    report(result)


if __name__ == "__main__":
    main()
