"""``newsletter demo`` only ever runs on demo ground.

The demo adds sample subscribers (real-looking addresses) and sends them today's
edition; in a configured installation that would mail through the real server and
put 281 sample papers into the next real edition. So it refuses, before writing
anything, when the transport sends real mail or the database holds anything the
demo did not put there.
"""

from __future__ import annotations

import csv
import io
import json
from importlib import resources
from pathlib import Path

from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from newsletter.config import Settings
from newsletter.errors import InputError
from newsletter.store.db import make_engine
from newsletter.transports import transport_class

HOW = ("run it in an empty folder (`mkdir /tmp/newsletter-demo && cd /tmp/newsletter-demo "
       "&& newsletter demo`), with no config.toml or NEWSLETTER_* settings")


def sample_data() -> tuple[Path, bytes]:
    data = resources.files("newsletter").joinpath("data")
    return (Path(str(data.joinpath("sample_papers.json"))),
            data.joinpath("sample_subscribers.csv").read_bytes())


def _not_demo_data(url: str) -> str:
    """What in the database the demo did not put there (``""``: empty or demo only),
    read without creating, migrating or writing anything."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:") \
            and not Path(str(parsed.database)).exists():
        return ""
    papers, people = sample_data()
    paper_ids = {p["id"] for p in json.loads(papers.read_text())}
    emails = {row["email"].lower() for row in csv.DictReader(io.StringIO(people.decode()))}
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            if "subscribers" in tables:
                for (email,) in conn.execute(text("SELECT email FROM subscribers")):
                    if str(email).lower() not in emails:
                        return f"subscribers who are not the demo's ({email}, ...)"
            if "entries" in tables:
                for (entry_id,) in conn.execute(text("SELECT id FROM entries")):
                    if entry_id not in paper_ids:
                        return f"papers that are not the demo's ({entry_id}, ...)"
    finally:
        engine.dispose()
    return ""


def refuse_outside_demo(settings: Settings) -> None:
    """Raise (one line, nothing written) unless this is demo ground."""
    backend = settings.transport.backend
    if transport_class(backend).sends_mail:
        raise InputError(f"refusing to run the demo: [transport] backend = {backend!r} sends "
                         f"real mail; {HOW}")
    shown = make_url(settings.database.url).render_as_string(hide_password=True)
    found = _not_demo_data(settings.database.url)
    if found:
        raise InputError(f"refusing to run the demo: the database {shown} holds {found}; "
                         f"{HOW}")
