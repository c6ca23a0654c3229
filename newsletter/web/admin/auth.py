"""Who may use the console: Argon2-hashed operators, server-side sessions behind a
signed cookie, failed-login limits, and CSRF tokens.

Sessions live in the database rather than only in the cookie, so logging out or
``newsletter admin remove-user`` ends a session at once, in every process. The
cookie carries a random secret plus an HMAC made with the ``[web] secret_keys``
(newest signs, all verify), so a forged or truncated cookie is refused before
the database is asked. Failed logins are stored too: the limits (growing delays
per user name and client, a cap per client) hold across processes and restarts.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import math
import re
import secrets
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from newsletter.config import AdminConfig
from newsletter.errors import InputError
from newsletter.store.models import AdminLoginAttempt, AdminSession, AdminUser, utcnow
from newsletter.web.security import client_key

COOKIE = "nl_admin"
LOGIN_COOKIE = "nl_admin_login"  # a nonce binding the login form's CSRF token
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_PASSWORD = 8
_hasher = PasswordHasher()
# Verified against when the user name is unknown, so both answers take as long.
_DUMMY_HASH = _hasher.hash("not a password of anyone")


# ---- users ---------------------------------------------------------------------------


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise InputError(f"invalid user name {name!r}: 1-64 letters, digits or . _ @ -, "
                         "starting with a letter or digit")
    return name


def add_user(session: Session, name: str, password: str) -> AdminUser:
    check_name(name)
    if len(password) < MIN_PASSWORD:
        raise InputError(f"password: at least {MIN_PASSWORD} characters")
    if session.scalar(select(AdminUser.id).where(AdminUser.name == name)):
        raise InputError(f"admin user {name!r} exists already",
                         f"`newsletter admin passwd {name}` sets a new password")
    user = AdminUser(name=name, password_hash=_hasher.hash(password), created_at=utcnow())
    session.add(user)
    session.flush()
    return user


def list_users(session: Session) -> list[AdminUser]:
    return list(session.scalars(select(AdminUser).order_by(AdminUser.name)))


def remove_user(session: Session, name: str) -> None:
    user = session.scalar(select(AdminUser).where(AdminUser.name == name))
    if user is None:
        raise InputError(f"no admin user {name!r}")
    session.execute(delete(AdminSession).where(AdminSession.user_id == user.id))
    session.delete(user)


def set_password(session: Session, name: str, password: str) -> None:
    """A new password for an operator: their open sessions end (whoever knew the old
    one is logged out) and the failed logins counted against the name are forgotten."""
    if len(password) < MIN_PASSWORD:
        raise InputError(f"password: at least {MIN_PASSWORD} characters")
    user = session.scalar(select(AdminUser).where(AdminUser.name == name))
    if user is None:
        raise InputError(f"no admin user {name!r} (`newsletter admin add-user {name}`)")
    user.password_hash = _hasher.hash(password)
    session.execute(delete(AdminSession).where(AdminSession.user_id == user.id))
    session.execute(delete(AdminLoginAttempt).where(AdminLoginAttempt.name == name,
                                                    AdminLoginAttempt.ok.is_(False)))


def has_users(session: Session) -> bool:
    return session.scalar(select(AdminUser.id).limit(1)) is not None


# ---- signing -------------------------------------------------------------------------


class CookieSigner:
    """HMAC-SHA256 for the session cookie and CSRF tokens, keyed apart from the
    subscribers' link tokens (a link token can never pass as a session)."""

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise InputError("no signing key")
        self._keys = [hashlib.sha256(f"admin|{k}".encode()).digest() for k in keys]

    def _mac(self, key: bytes, purpose: str, body: str) -> str:
        digest = hmac.new(key, f"{purpose}|{body}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def sign(self, purpose: str, body: str) -> str:
        return f"{body}.{self._mac(self._keys[0], purpose, body)}"

    def unsign(self, purpose: str, value: str) -> str | None:
        body, _, mac = value.rpartition(".")
        if body and mac and any(hmac.compare_digest(mac, self._mac(k, purpose, body))
                                for k in self._keys):
            return body
        return None

    def csrf(self, binding: str) -> str:
        return self._mac(self._keys[0], "csrf", binding)

    def check_csrf(self, binding: str, token: str) -> bool:
        return bool(binding and token) and any(
            hmac.compare_digest(token, self._mac(k, "csrf", binding)) for k in self._keys)


def _session_id(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


# ---- login ---------------------------------------------------------------------------


@dataclass
class Login:
    cookie: str  # the signed cookie value
    session_id: str
    user: str


def _recent_failures(session: Session, column: Any, value: str, since: dt.datetime) -> int:
    return session.scalar(select(func.count()).select_from(AdminLoginAttempt).where(
        column == value, AdminLoginAttempt.ok.is_(False),
        AdminLoginAttempt.at >= since)) or 0


def login_delay(failures: int, cfg: AdminConfig) -> float:
    """Seconds one client must wait before its next try for one user name, after
    ``failures`` failures in a row: none for the first ``max_failures_per_user``, then
    1 s, doubling with each failure, up to ``lockout_minutes``."""
    extra = failures - cfg.max_failures_per_user
    if extra < 0:
        return 0.0
    return float(min(2.0 ** min(extra, 40), cfg.lockout_minutes * 60))


def _wait_for(session: Session, cfg: AdminConfig, name: str, client: str,
              now: dt.datetime) -> float:
    """Seconds still to wait before ``client`` may try ``name`` again (0: now)."""
    pair = (AdminLoginAttempt.name == name, AdminLoginAttempt.client == client)
    last_ok = session.scalar(select(func.max(AdminLoginAttempt.at)).where(
        *pair, AdminLoginAttempt.ok.is_(True)))
    since = max(last_ok or dt.datetime.min, now - dt.timedelta(days=1))
    failures, last = session.execute(select(func.count(), func.max(AdminLoginAttempt.at)).where(
        *pair, AdminLoginAttempt.ok.is_(False), AdminLoginAttempt.at > since)).one()
    delay = login_delay(int(failures or 0), cfg)
    if not delay or last is None:
        return 0.0
    return max(0.0, delay - (now - last).total_seconds())


# Attempts from one client run one at a time in a process: read in parallel, the
# failure counts let concurrent attempts past the limits (ten passwords checked where
# five were allowed for a name, 25 where 20 for an address). Striped, so the table
# stays small whoever tries; other addresses (the operator's) are not held up.
_ATTEMPT_LOCKS = [threading.Lock() for _ in range(64)]


def login(reading: Callable[[], AbstractContextManager[Session]],
          writing: Callable[[], AbstractContextManager[Session]], cfg: AdminConfig,
          signer: CookieSigner, name: str, password: str, client: str) -> Login | str:
    """Check a password under the failure limits and open a session.

    The limits never let a stranger lock the operator out: failures count per (user
    name, client), each further try from that client waiting longer (``login_delay``),
    while the same name from another client is not slowed at all; a client trying many
    names is stopped by ``max_failures_per_client`` within ``lockout_minutes``.

    The limits are read (``reading``), the password checked outside any transaction,
    then the attempt recorded (``writing``, which commits): the hash is slow on purpose
    (about 0.2 s), and checked inside the write transaction it held SQLite's write lock
    that long, so logins tried from many addresses queued every other write behind them
    (a one-click unsubscribe took half a minute).

    Returns the message to show when refused: the same one for a wrong name and a
    wrong password (no probing for user names)."""
    name, client = name.strip()[:64], client_key(client)
    with _ATTEMPT_LOCKS[hash(client) % len(_ATTEMPT_LOCKS)]:
        now = utcnow()
        since = now - dt.timedelta(minutes=cfg.lockout_minutes)
        with reading() as session:
            if _recent_failures(session, AdminLoginAttempt.client, client, since) \
                    >= cfg.max_failures_per_client:
                return (f"too many failed logins from this address: try again in "
                        f"{cfg.lockout_minutes:g} minutes")
            wait = _wait_for(session, cfg, name, client, now)
            if wait > 0:
                return (f"too many failed logins for this user from this address: try "
                        f"again in {math.ceil(wait)} seconds")
            found = session.execute(select(AdminUser.id, AdminUser.password_hash)
                                    .where(AdminUser.name == name)).first()
        try:
            _hasher.verify(found[1] if found else _DUMMY_HASH, password)
            ok = found is not None
        except (VerificationError, InvalidHashError):
            ok = False
        rehashed = (_hasher.hash(password) if ok and found is not None
                    and _hasher.check_needs_rehash(found[1]) else None)
        with writing() as session:
            user = session.get(AdminUser, found[0]) if ok and found is not None else None
            if user is None or found is None or user.password_hash != found[1]:
                # removed meanwhile, or its password changed (`admin passwd`, which ends
                # its sessions) since the one checked: refused as a wrong password
                ok, user = False, None
            # Stamped after the (slow on purpose) hash check: the wait runs from the answer.
            session.add(AdminLoginAttempt(name=name, client=client, ok=ok, at=utcnow()))
            # Records are not needed past a day; expired sessions not at all.
            session.execute(delete(AdminLoginAttempt).where(
                AdminLoginAttempt.at < now - dt.timedelta(days=1)))
            session.execute(delete(AdminSession).where(AdminSession.expires_at < now))
            if user is None:
                return "wrong user name or password"
            if rehashed is not None:
                user.password_hash = rehashed
            user.last_login_at = now
            secret = secrets.token_urlsafe(32)
            sid = _session_id(secret)
            session.add(AdminSession(id=sid, user_id=user.id, created_at=now,
                                     expires_at=now + dt.timedelta(hours=cfg.session_hours)))
            return Login(signer.sign("session", secret), sid, user.name)


def resolve(session: Session, signer: CookieSigner, cookie: str | None) -> tuple[str, str] | None:
    """(session id, user name) for a valid, unexpired session cookie, else None."""
    if not cookie:
        return None
    secret = signer.unsign("session", cookie)
    if secret is None:
        return None
    sid = _session_id(secret)
    row = session.execute(select(AdminSession.expires_at, AdminUser.name)
                          .join(AdminUser, AdminUser.id == AdminSession.user_id)
                          .where(AdminSession.id == sid)).first()
    if row is None or row[0] <= utcnow():
        return None
    return sid, row[1]


def logout(session: Session, session_id: str) -> None:
    session.execute(delete(AdminSession).where(AdminSession.id == session_id))
