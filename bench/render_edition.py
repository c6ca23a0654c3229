"""The renders of one planned edition, in one process: what delivery's rendering costs
when every subscriber is new to the renderer (as in `newsletter send`), without the
sending, the ledger or a second process.

    python bench/render_edition.py [--subscribers 4000] [--rounds 3] [--workdir DIR]

Each round: a fresh copy of a database of ``--subscribers`` synthetic profiles (the
send benchmark's) over the bundled papers, the edition planned (``plan_edition``), its
rows claimed, the highlighters made as before a fork, then every job rendered
(``EditionContext.render``: explanations, excerpts, templates, MIME, the record of
what was shown). Printed: CPU ms an email, and a digest of what was rendered (the HTML,
text, subject, record and the message body with its random boundary masked), the same
for two checkouts that render the same emails from the same database: with
``--workdir DIR`` the database is made once in DIR and reused by later runs (the
signing keys and link nonces, random when a database is made, then stay the same),
and ``PYTHONPATH=CHECKOUT python bench/render_edition.py`` runs another checkout's code.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))  # after PYTHONPATH: `PYTHONPATH=CHECKOUT` renders with that code

from bench.send_speed import copy_db, env_for, populate  # noqa: E402

DAY = dt.date(2025, 12, 26)


def one_round(pristine: Path, work: Path) -> tuple[float, int, str]:
    from newsletter.collector import fewer_collections
    from newsletter.config import load_settings
    from newsletter.delivery.edition import EditionConfig
    from newsletter.service.editions import plan_edition
    from newsletter.store.db import dispose_all, get_engine

    copy_db(pristine, work / "round.db")
    os.environ["NEWSLETTER_DATABASE__URL"] = f"sqlite:///{work / 'round.db'}"
    settings = load_settings(None)
    engine = get_engine(settings.database.url)
    with fewer_collections():
        planned = plan_edition(EditionConfig.of(settings), engine, DAY)
        assert planned.ledger is not None and planned.context is not None, planned.note
        ctx = planned.context
        jobs = planned.ledger.claim(10**9)
        ctx.prepare(planned.papers)
        boundary = ctx.renderer.mime.boundary.encode()
        digest = hashlib.sha256()
        cpu = 0.0
        for job in jobs:
            # each email is dropped once digested, as delivery drops it once sent: kept,
            # the 4,000 emails (over 400 MB) made every render 0.1 ms dearer (fresh
            # memory, a page fault every 4 KB), a cost sending never pays
            started = time.process_time()
            r = ctx.render(job)
            cpu += time.process_time() - started
            for part in (r.html, r.text, r.subject, r.shown):
                digest.update(part.encode())
            body = r.message.data
            digest.update(body[body.find(b"This is a multipart"):].replace(boundary, b"B"))
    dispose_all()
    return cpu, len(jobs), digest.hexdigest()[:16]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subscribers", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=None,
                    help="keep the database here and reuse it (made on the first run)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if not (work / "pristine.db").exists():
            populate(work, args.subscribers, env_for(work, 25, 1))
            copy_db(work / "subscribers.db", work / "pristine.db")
        import newsletter

        print(f"{work / 'pristine.db'}: subscribers each with a profile of their own; "
              f"one process; code from {Path(newsletter.__file__).parent.parent}")
        print("| round | emails | CPU ms an email | digest of what was rendered |")
        print("|---|---|---|---|")
        for r in range(1, args.rounds + 1):
            cpu, n, digest = one_round(work / "pristine.db", work)
            print(f"| {r} | {n:,} | {cpu / n * 1e3:.3f} | {digest} |")


if __name__ == "__main__":
    main()
