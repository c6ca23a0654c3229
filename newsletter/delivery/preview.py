"""What a preview needs below the use case: a file transport named per recipient,
the report and its summary, and a database that is only read (never created,
migrated or given a signing key)."""

from __future__ import annotations

import hashlib
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from newsletter.delivery.edition import EditionContext
from newsletter.delivery.ledger import Outcome, OutcomeStatus
from newsletter.errors import InputError
from newsletter.render.mime import Message
from newsletter.store.db import schema_state
from newsletter.transports.outbox import SAFE_NAME, OutboxTransport


class PreviewTransport(OutboxTransport):
    """Files named after the recipient, so an operator can find one person's email."""

    name = "preview"

    def file_for(self, message: Message) -> Path:
        return self.path / f"{file_stem(message.to)}.eml"


STEM_CHARS = 80  # of an address in a file name (a name has 255 bytes; an address 254)


def file_stem(address: str) -> str:
    """The name of one recipient's preview files: the address itself when it is a safe
    file name already (``ada@example.org``); else its safe characters, cut to
    ``STEM_CHARS``, and a hash of the whole address, so that two addresses never share
    files (``x/y@`` and ``x#y@`` both made ``x_y@``: one preview overwrote the other)
    and a long one still makes a name the file system takes."""
    safe = SAFE_NAME.sub("_", address)
    if safe == address and len(address) <= STEM_CHARS:
        return address
    digest = hashlib.sha256(address.encode()).hexdigest()[:10]
    return f"{safe[:STEM_CHARS]}-{digest}"


def write_parts(out: Path, outcome: Outcome) -> None:
    """The rendered HTML and text beside the .eml, named after the recipient."""
    if outcome.rendered is not None:
        stem = str(out / file_stem(outcome.job.recipient.email))
        Path(stem + ".html").write_text(outcome.rendered.html, encoding="utf-8")
        Path(stem + ".txt").write_text(outcome.rendered.text, encoding="utf-8")


@dataclass
class PreviewReport:
    out: Path
    candidates: int
    outcomes: list[Outcome] = field(default_factory=list)
    empty_profiles: int = 0
    screenshots: list[Path] = field(default_factory=list)
    context: EditionContext | None = None  # what ranked and rendered it (the "why")
    note: str = ""  # why nothing would be sent, when nothing would

    def summary(self) -> dict[str, Any]:
        rendered = [o.rendered for o in self.outcomes if o.rendered is not None]
        papers = [r.papers for r in rendered]
        sizes = [len(r.html.encode()) for r in rendered]
        terms: Counter[str] = Counter(t for r in rendered for t in r.matched_terms)

        def spread(values: list[int]) -> dict[str, float]:
            if not values:
                return {"min": 0, "median": 0, "max": 0}
            return {"min": min(values), "median": statistics.median(values),
                    "max": max(values)}

        return {
            "subscribers": len(self.outcomes),
            "candidates": self.candidates,
            "papers_per_email": spread(papers),
            "no_match_trending_only": sum(1 for r in rendered if r.trending and not r.papers),
            "nothing_to_send": sum(1 for o in self.outcomes if o.status == OutcomeStatus.SKIPPED),
            "empty_profiles": self.empty_profiles,
            "html_bytes": spread(sizes),
            "over_gmail_clip": sum(1 for s in sizes if s > 102 * 1024),
            "top_matched_terms": terms.most_common(10),
            # each with its reader (the first ten) and how many in all
            "failed": [f"{o.job.recipient.email}: {o.error}" for o in self.outcomes
                       if o.status == OutcomeStatus.FAILED][:10],
            "failed_count": sum(1 for o in self.outcomes if o.status == OutcomeStatus.FAILED),
        }


def preview_engine(url: str) -> Engine:
    """An engine that neither creates nor migrates: a SQLite file that is not there
    is an error, not a new empty database (connecting would create the file)."""
    from newsletter.store.db import make_engine, parse_url

    parsed = parse_url(url)
    db = parsed.database
    if parsed.get_backend_name() == "sqlite" and db not in (None, "", ":memory:") \
            and not Path(str(db)).exists():
        raise InputError(f"no database yet at {parsed.database}: ingest papers and add "
                             "subscribers first (preview never creates one)")
    return make_engine(url)


def require_database(engine: Engine) -> None:
    """Preview reads; it never creates or migrates a database (nor makes a signing key)."""
    from sqlalchemy.exc import OperationalError

    from newsletter.store.db import cannot_open, newer_schema

    try:
        state = schema_state(engine)
    except OperationalError as exc:  # refused, unknown database: the one line
        raise cannot_open(engine, exc) from None
    if state == "missing":
        raise InputError("no database yet: ingest papers and add subscribers first")
    if state == "newer":
        raise newer_schema(engine)
    if state != "current":
        raise InputError("the database schema is old: run `newsletter db upgrade` first")
