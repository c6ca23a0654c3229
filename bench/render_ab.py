"""The renderer of two checkouts side by side, in alternated rounds: messages per
second per core (CPU time, so a busy shared machine counts only the time each got).

    python bench/render_ab.py --before /path/to/other/checkout [--rounds 5]
                              [--subscribers 3000] [--diverse]

Each round renders the same work (``bench/render_speed.py``'s jobs: 10 of 200 papers
per subscriber, one profile; ``--diverse``: a profile of its own each) once with the
other checkout's code and once with this one's, each in a fresh process, the order
swapped every round. Prints every round and the load average at its start.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import sys, time
sys.path.insert(0, {root!r})
from bench.render_speed import setup, jobs, diverse_jobs
_, ranker, renderer, n = setup()
work = diverse_jobs({n}, ranker) if {diverse} else jobs({n}, n, ranker)
for w in work[:50]:
    renderer.render(*w)  # warm the excerpt cache as a real edition would
c = time.process_time()
for w in work:
    renderer.render(*w)
c = time.process_time() - c
size = len(renderer.render(*work[0]).message.data)
print(f"{{len(work) / c:.1f}} {{size}}")
"""


def run(root: Path, n: int, diverse: bool) -> tuple[float, int]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(root), n=n,
                                                             diverse=diverse)],
                         env=env, capture_output=True, text=True, check=True, cwd=root)
    rate, size = out.stdout.split()
    return float(rate), int(size)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, required=True, help="the other checkout")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--subscribers", type=int, default=3000)
    ap.add_argument("--diverse", action="store_true")
    args = ap.parse_args()
    rates: dict[str, list[float]] = {"before": [], "after": []}
    sizes: dict[str, int] = {}
    print("| round | load average at start | before (msg/s per core) | after | after/before |")
    print("|---|---|---|---|---|")
    for r in range(1, args.rounds + 1):
        load = " ".join(f"{x:.1f}" for x in os.getloadavg())
        order = [("before", args.before), ("after", ROOT)]
        if r % 2 == 0:
            order.reverse()
        got = {}
        for label, root in order:
            got[label], sizes[label] = run(root, args.subscribers, args.diverse)
            rates[label].append(got[label])
        print(f"| {r} | {load} | {got['before']:,.0f} | {got['after']:,.0f} | "
              f"{got['after'] / got['before']:.2f} |", flush=True)
    b, a = statistics.median(rates["before"]), statistics.median(rates["after"])
    print(f"\nmedian: before {b:,.0f}, after {a:,.0f} msg/s per core ({a / b:.2f}x); "
          f"message size {sizes['before'] / 1024:.0f} KB -> {sizes['after'] / 1024:.0f} KB")


if __name__ == "__main__":
    main()
