"""Summarize py-spy's collapsed stacks (``--format raw``): where the samples go.

    python bench/flame.py PROFILE.txt [--top 25]

Prints the share of samples per function (self time and inclusive time), which is
what a flame graph shows, as text a README can quote.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

IDLE = ("select (selectors", "Connection.wait", "_worker (concurrent", "wait (threading",
        "_wait_for_tstate_lock", "signal.pause", "sleep")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", type=Path)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--cpu", action="store_true", help="leave out samples of threads that "
                    "wait (select, lock and socket waits, idle pool threads)")
    args = ap.parse_args()
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in args.file.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = [re.sub(r" \(.*?/(site-packages|lib/python3\.\d+)/", " (", f)
                  for f in stack.split(";") if f]
        if not frames or (args.cpu and any(w in frames[-1] for w in IDLE)):
            continue
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    print(f"{total} samples")
    print("-- self --")
    for f, n in own.most_common(args.top):
        print(f"{n / total:6.1%}  {f}")
    print("-- inclusive --")
    for f, n in incl.most_common(args.top):
        print(f"{n / total:6.1%}  {f}")


if __name__ == "__main__":
    main()
