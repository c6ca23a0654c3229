"""``newsletter check``: every item, in the order an operator fixes them.

With ``--dns`` the SPF, DKIM and DMARC records are looked up and ``[web] base_url``
fetched (``delivery.published``) instead of only printed.

The configuration items (``delivery.check``) need nothing but the settings and,
for SMTP, the server; the database items here open the configured database without
creating or migrating it (a check must not make an empty ``subscribers.db`` in the
wrong folder) and ask it whether its schema is current and whether ``[web]
secret_keys`` keeps every key that signed links.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from newsletter.config import Settings, WebConfig
from newsletter.delivery.check import (
    FAIL,
    INFO,
    KEY_FIX,
    OK,
    Item,
    check_bounces,
    run_checks,
    weak_metrics_token,
    weak_signing_key,
)
from newsletter.errors import ConfigError
from newsletter.store import key_use
from newsletter.store.db import (
    db_reason,
    make_engine,
    newer_schema,
    parse_url,
    schema_state,
    session_scope,
    unwritable_fix,
    writable_fix,
)


def check_database(url: str) -> tuple[Item, Engine | None]:
    """Whether the database answers and its schema is the newest; the engine if so."""
    try:
        parsed = parse_url(url)
    except ConfigError as exc:
        return Item("database", FAIL, exc.message, "check [database] url, e.g. "
                    "sqlite:///subscribers.db or postgresql+psycopg://user@host/db"), None
    shown = parsed.render_as_string(hide_password=True)
    fix = "run `newsletter db upgrade` (same configuration and environment)"
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:") \
            and not Path(str(parsed.database)).exists():
        folder = Path(str(parsed.database)).parent
        if not folder.is_dir():  # db upgrade could not make it there either
            return Item("database", FAIL, f"{shown}: the folder {folder} does not exist",
                        "create it, or point [database] url at a folder that exists"), None
        return Item("database", FAIL, f"{shown}: no database yet", fix), None
    unwritable = _unwritable_sqlite(parsed.get_backend_name(), parsed.database)
    if unwritable:
        return Item("database", FAIL, f"{shown}: {unwritable} is not writable by this user",
                    writable_fix()), None
    engine = make_engine(url)
    try:
        state = schema_state(engine)
    except SQLAlchemyError as exc:
        engine.dispose()
        reason = db_reason(exc)
        return Item("database", FAIL, f"{shown}: {reason}",
                    unwritable_fix(reason) or "check [database] url"), None
    if state == "newer":
        error = newer_schema(engine)
        engine.dispose()
        return Item("database", FAIL, error.message.removeprefix("[database] url: "),
                    error.hint or ""), None
    if state != "current":
        engine.dispose()
        return Item("database", FAIL, f"{shown}: schema {state}", fix), None
    return Item("database", OK, f"{shown}: schema current"), engine


def _unwritable_sqlite(backend: str, database: str | None) -> str | None:
    """The SQLite file, its folder, or its -wal or -shm file that this user may not
    write, or None: reading answered, so the schema looked current, and `send` then
    stopped at its first write (a file made by root, the service run as its user)."""
    if backend != "sqlite" or database in (None, "", ":memory:"):
        return None
    path = Path(str(database))
    for one in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if one.exists() and not os.access(one, os.W_OK):
            return str(one)
    folder = path.parent
    if not os.access(folder, os.W_OK | os.X_OK):  # where the -wal and -shm files go
        return f"the folder {folder}"
    return None


def check_signing_keys(cfg: WebConfig, engine: Engine | None) -> Item:
    """The link-signing keys: none a placeholder or short, none that signed links dropped
    (``engine`` None: the database is unreachable, so only the first is checked)."""
    from newsletter.service.signing import rotation_problem

    weak = weak_signing_key(cfg)  # (seen without the database)
    if weak is not None:
        return weak
    if engine is None:  # (the database item fails already: no second ✗ for it)
        return Item("web.secret_keys", INFO, "not checked against the links already "
                    "signed: the database is not ready (see database)")
    with session_scope(engine, readonly=True) as s:
        problem = rotation_problem(cfg, s)
        if problem:
            head, _, fix = problem.partition("every such link would stop working. ")
            return Item("web.secret_keys", FAIL, head + "every such link would stop working",
                        fix[:1].lower() + fix[1:])
        keys = key_use.configured_keys(cfg, s)
        used = {u.fingerprint for u in key_use.used_keys(s)}
    if not keys:
        return Item("web.secret_keys", FAIL, "no signing key", KEY_FIX)
    first = key_use.fingerprint(keys[0])
    where = "[web] secret_keys" if cfg.secret_keys else "the database (back it up)"
    verifying = f", {len(keys) - 1} more verifying" if len(keys) > 1 else ""
    state = "has signed links" if first in used else "has not signed links yet"
    return Item("web.secret_keys", OK, f"signing with {first} from {where}{verifying}; it "
                f"{state}; every key that signed links is kept")


def run_all(settings: Settings, *, dns: bool = False, nameserver: str | None = None
            ) -> list[Item]:
    """``dns``: look the records up and fetch the public URL instead of only printing
    the records to publish (each ✗ then carries the record)."""
    c = settings
    items = run_checks(web=c.web, sender=c.sender, render=c.render, transport=c.transport,
                       smtp=c.smtp, api=c.api)
    items.append(check_bounces(c.bounces, c.sender, c.transport.backend, probe=True))
    if dns:
        from newsletter.delivery.published import published_items

        items = [i for i in items if i.key not in ("spf", "dmarc", "dkim.dns")]
        items += published_items(web=c.web, sender=c.sender, render=c.render,
                                 backend=c.transport.backend, smtp=c.smtp,
                                 nameserver=nameserver)
    token = weak_metrics_token(c.metrics.token)
    if token is not None:
        items.append(token)
    db_item, engine = check_database(c.database.url)
    items.append(db_item)
    try:  # (without the database, a placeholder key is still named)
        items.append(check_signing_keys(c.web, engine))
    finally:
        if engine is not None:
            engine.dispose()
    return items
