"""Every recorded real payload in ``tests/data/`` through the parser: what comes out.

    python bench/feed_corpus.py [--code DIR] [--verbose]

``--code`` runs another checkout's parser over the same files (``--code
/path/to/main`` gives the "before" column of the table in docs/benchmarks.md). Each
file is classified as *ingested* (parsed; papers counted, unusable items counted),
*clean error* (one ``NewsletterError`` line) or *crash* (anything else, or no
answer within 10 s). The files and their provenance are listed in
``tests/data/README.md``.
"""

from __future__ import annotations

import argparse
import collections
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
TIMEOUT = 10


def kind_of(path: Path) -> str:
    """The table row a file belongs to: its folder, feedparser's split by its own folders."""
    rel = path.relative_to(DATA)
    if rel.parts[0] == "feedparser":
        return "feedparser/" + rel.name.split("_")[0]
    return rel.parts[0]


def corpus() -> list[Path]:
    return sorted(
        p for p in DATA.rglob("*")
        if p.is_file() and p.suffix not in (".md",) and p.name != "golden.json"
    )


def _alarm(signum: int, frame: Any) -> None:
    raise TimeoutError(f"no answer in {TIMEOUT} s")


def run_one(run: Any, errors: Any, path: Path) -> tuple[str, int, int, str]:
    """(outcome, papers, skipped items, message)."""
    data = path.read_bytes()
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TIMEOUT)
    try:
        if hasattr(run, "parse_bytes"):
            parsed = run.parse_bytes(data, str(path))
            return "ingested", len(parsed.papers), len(parsed.skipped), ""
        papers = run.parse_text(run.decode(data, str(path)), str(path))
        return "ingested", len(papers), 0, ""
    except errors.NewsletterError as exc:
        return "clean error", 0, 0, str(exc)
    except Exception:  # noqa: BLE001 - the point is to count these
        return "crash", 0, 0, traceback.format_exc(limit=3)
    finally:
        signal.alarm(0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--code", default=str(ROOT), help="checkout whose parser to run")
    ap.add_argument("--verbose", action="store_true", help="one line per file")
    args = ap.parse_args()
    sys.path.insert(0, args.code)
    from newsletter import errors
    from newsletter.ingest import run

    rows: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for path in corpus():
        outcome, papers, skipped, msg = run_one(run, errors, path)
        row = rows[kind_of(path)]
        row["files"] += 1
        row[outcome] += 1
        row["papers"] += papers
        row["skipped"] += skipped
        if args.verbose or outcome == "crash":
            print(f"{outcome:12} {papers:4} {skipped:3} {path.relative_to(DATA)} {msg}".rstrip())
    print(f"\ncode: {args.code}")
    print("| source kind | files | ingested | clean errors | crashes | papers | items skipped |")
    print("|---|---|---|---|---|---|---|")
    total: collections.Counter[str] = collections.Counter()
    for kind in sorted(rows):
        r = rows[kind]
        total.update(r)
        print(f"| {kind} | {r['files']} | {r['ingested']} | {r['clean error']} | {r['crash']} "
              f"| {r['papers']} | {r['skipped']} |")
    print(f"| all | {total['files']} | {total['ingested']} | {total['clean error']} "
          f"| {total['crash']} | {total['papers']} | {total['skipped']} |")


if __name__ == "__main__":
    main()
