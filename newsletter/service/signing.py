"""Link-signing keys in use: the rotation guard every signing command passes first.

A command that hands out signed links (``send``, ``run``, ``worker``, ``web``) calls
``begin_signing``: it refuses, in one line naming the fingerprint and the fix, when
``[web] secret_keys`` drops a key that has signed links (``store.key_use`` records
them), and records the key it is about to sign with. ``newsletter check`` reports the
same problem as a ✗ through ``rotation_problem``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from newsletter.config import WebConfig
from newsletter.errors import ConfigError
from newsletter.store import key_use
from newsletter.store.keys import stored_key


def rotation_problem(cfg: WebConfig, session: Session) -> str:
    """Why the configured keys would break links already sent, or ``""``."""
    dropped = key_use.dropped_keys(cfg, session)
    if not dropped:
        return ""
    stored = stored_key(session)
    stored_print = key_use.fingerprint(stored) if stored else ""
    names = ", ".join(
        f"{u.fingerprint} (signing since {u.first_used_at:%Y-%m-%d}"
        + (", the key stored in the database" if u.fingerprint == stored_print else "")
        + ")" for u in dropped)
    retire = ", ".join(f'"{u.fingerprint}"' for u in dropped)
    # Where the old value is to be found: the database keeps its own key (`keys show`
    # prints it); a key that came from the configuration is known here only by its
    # fingerprint, so the operator's old setting is where it is.
    stored_dropped = [u.fingerprint == stored_print for u in dropped]
    whence = "; ".join(
        ([] if all(stored_dropped) else ["the value it had in [web] secret_keys or "
                                         "NEWSLETTER_WEB__SECRET_KEYS, whose fingerprint "
                                         "is shown here"])
        + (["`newsletter keys show` prints the stored key"] if any(stored_dropped) else []))
    return (f"[web] secret_keys does not hold the key that signed links already sent: "
            f"{names}; every such link would stop working. Keep it after your new key "
            f"({whence}), or retire it on purpose with [web] retired_keys = [{retire}]")


def check_rotation(cfg: WebConfig, session: Session) -> None:
    problem = rotation_problem(cfg, session)
    if problem:
        raise ConfigError(problem)


def begin_signing(cfg: WebConfig, session: Session, by: str) -> list[str]:
    """The keys to sign and verify with, newest first, after the guard; the first is
    recorded as signing from now on."""
    check_rotation(cfg, session)
    keys = key_use.configured_keys(cfg, session)
    if not keys:
        raise ConfigError("no signing key: set [web] secret_keys or run "
                          "`newsletter db upgrade`")
    key_use.record_use(session, keys[0], by)
    return keys


def describe(cfg: WebConfig, session: Session) -> dict[str, Any]:
    """What `newsletter keys show` prints: the stored key and every key's fingerprint."""
    stored = stored_key(session)
    keys = key_use.configured_keys(cfg, session)
    fp = key_use.fingerprint
    return {
        "stored_key": stored,
        "stored_fingerprint": fp(stored) if stored else None,
        "configured_fingerprints": [fp(k) for k in cfg.secret_keys],
        "retired_fingerprints": list(cfg.retired_keys),
        "signing_with": fp(keys[0]) if keys else None,
        "used": [{"fingerprint": u.fingerprint,
                  "first_used_at": u.first_used_at.isoformat(timespec="seconds"),
                  "used_by": u.used_by} for u in key_use.used_keys(session)],
    }
