"""The web server under a mixed load: 20 concurrent clients mixing preferences pages,
"view in browser" and RFC 8058 one-click unsubscribes, on SQLite and PostgreSQL.

    python bench/web_load.py [--clients 20] [--seconds 20] [--subscribers 2000]
                             [--databases sqlite,postgresql]

`newsletter web` runs as its own process (as in production); the clients are
asyncio + httpx in this one. Each client loops: 45% preferences (keyword sets drawn
from 300 distinct profiles, so the cache sees both hits and misses), 35% view in
browser (a stored edition), 20% one-click unsubscribe (a fresh subscriber each
time). Reports requests/s and p50/p99 latency per route; the goal is one-click
unsubscribe p99 under 250 ms while the mix runs.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import synthetic_profiles  # noqa: E402

PG_ADMIN = os.environ.get("NEWSLETTER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def setup(url: str, subscribers: int, base_url: str) -> dict[str, list[str]]:
    """Papers, subscribers, one sent edition; the URLs each route will be hit with."""
    from sqlalchemy import select

    from newsletter.config import Settings
    from newsletter.delivery.edition import EditionConfig
    from newsletter.render.links import LinkMaker, Signer
    from newsletter.service.editions import send
    from newsletter.service.ingest import ingest
    from newsletter.store.db import dispose_all, get_engine, session_scope
    from newsletter.store.keys import secret_keys
    from newsletter.store.models import Subscriber
    from newsletter.store.subscribers import import_csv
    from newsletter.transports import make_transport

    tmp = Path(tempfile.mkdtemp())
    settings = Settings().replace(database={"url": url}, web={"base_url": base_url},
                                  outbox={"path": str(tmp / "outbox")})
    engine = get_engine(url)
    with session_scope(engine) as s:
        ingest(settings.sources, s, [str(ROOT / "newsletter" / "data" / "sample_papers.json")])
    profiles = synthetic_profiles(300)
    rows = ["email,name,keywords,tz,hour"] + [
        f'u{i}@example.org,,"{profiles[i % len(profiles)]}",UTC,7' for i in range(subscribers)]
    with session_scope(engine) as s:
        import_csv(s, "\n".join(rows).encode(), "bench.csv")
    summary = send(EditionConfig.of(settings), engine, dt.date.today(),
                   make_transport(settings))
    with session_scope(engine) as s:
        links = LinkMaker(settings.web, settings.sender, Signer(secret_keys(settings.web, s)))
        nonces = dict(s.execute(select(Subscriber.id, Subscriber.link_nonce).order_by(
            Subscriber.id)).all())  # every link carries its subscriber's nonce
    ids = sorted(nonces)
    dispose_all()
    half = subscribers // 2
    return {
        "preferences": [links.preferences(i, nonce=nonces[i]) for i in ids[:half]],
        "view": [links.view(i, summary.edition.id, nonces[i]) for i in ids[:half]],
        "unsubscribe": [links.unsubscribe(i, nonces[i]) for i in ids[half:]],
    }


async def load(urls: dict[str, list[str]], clients: int, seconds: float,
               only_unsubscribe: bool = False) -> dict[str, list[float]]:
    import httpx

    latencies: dict[str, list[float]] = {k: [] for k in urls}
    errors: dict[str, int] = {k: 0 for k in urls}
    unsubscribes = iter(urls["unsubscribe"])
    deadline = time.perf_counter() + seconds
    rng = random.Random(7)

    async def client(n: int) -> None:
        async with httpx.AsyncClient(timeout=60) as http:
            while time.perf_counter() < deadline:
                roll = 1.0 if only_unsubscribe else rng.random()
                route = "preferences" if roll < 0.45 else "view" if roll < 0.8 else "unsubscribe"
                start = time.perf_counter()
                if route == "unsubscribe":
                    url = next(unsubscribes, None)
                    if url is None:
                        continue
                    r = await http.post(url, content="List-Unsubscribe=One-Click", headers={
                        "Content-Type": "application/x-www-form-urlencoded"})
                else:
                    r = await http.get(rng.choice(urls[route]))
                latencies[route].append(time.perf_counter() - start)
                if r.status_code != 200:
                    errors[route] += 1

    await asyncio.gather(*(client(n) for n in range(clients)))
    bad = {k: v for k, v in errors.items() if v}
    if bad:
        print(f"  non-200 answers: {bad}", file=sys.stderr)
    return latencies


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


def run(kind: str, args: argparse.Namespace) -> None:
    created = ""
    if kind == "sqlite":
        url = f"sqlite:///{tempfile.mkdtemp()}/web.db"
    else:
        import psycopg

        created = f"nl_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{created}"')
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{created}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    urls = setup(url, args.subscribers, base)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update({"NEWSLETTER_DATABASE__URL": url, "NEWSLETTER_WEB__BASE_URL": base,
                "NEWSLETTER_WEB__RENDER_PROCESSES": str(args.render_processes),
                "PYTHONPATH": str(ROOT)})
    server = subprocess.Popen([sys.executable, "-m", "newsletter", "web", "--port", str(port)],
                              env=env, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        import httpx

        for _ in range(200):
            try:
                httpx.get(base + "/", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        # Server start warms its caches in the background; let it finish (as in production,
        # where the server has been up for a while), then measure.
        httpx.get(urls["preferences"][0], timeout=120)
        httpx.get(urls["view"][0], timeout=120)
        start = time.perf_counter()
        latencies = asyncio.run(load(urls, args.clients, args.seconds))
        wall = time.perf_counter() - start
        # The floor on this machine right now: one client, one-click unsubscribes alone.
        alone = asyncio.run(load(urls, 1, 5, only_unsubscribe=True))["unsubscribe"]
    finally:
        server.terminate()
        server.wait(10)
        if created:
            import psycopg

            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{created}" WITH (FORCE)')
    total = sum(len(v) for v in latencies.values())
    print(f"\n{kind}, render_processes={args.render_processes}: {args.clients} clients, "
          f"{wall:.0f} s, {total / wall:.0f} req/s overall\n")
    print("| route | requests | req/s | p50 ms | p99 ms |")
    print("|---|---|---|---|---|")
    for route, values in latencies.items():
        print(f"| {route} | {len(values)} | {len(values) / wall:.1f} | {pct(values, 0.5):.1f} | "
              f"{pct(values, 0.99):.1f} |")
    unsub = latencies["unsubscribe"]
    if unsub:
        print(f"\none-click unsubscribe p99 {pct(unsub, 0.99):.0f} ms "
              f"({'meets' if pct(unsub, 0.99) < 250 else 'misses'} the 250 ms goal); "
              f"mean {statistics.mean(unsub) * 1000:.0f} ms")
    if alone:
        print(f"one-click unsubscribe alone (1 client, no mix): p50 {pct(alone, 0.5):.0f} ms, "
              f"p99 {pct(alone, 0.99):.0f} ms, {len(alone) / 5:.0f} req/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--subscribers", type=int, default=2000)
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--render-processes", type=int, default=1,
                        help="[web] render_processes of the server (0: threads in-process)")
    args = parser.parse_args()
    for kind in args.databases.split(","):
        run(kind.strip(), args)


if __name__ == "__main__":
    main()
