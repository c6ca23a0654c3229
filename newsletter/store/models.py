"""SQLAlchemy 2.x tables: the schema is the product's memory.

The deliveries ledger and the sent-entries record are what make sending
crash-safe and duplicate-free, so their uniqueness lives in the database
(unique constraints), not in application code that a second process could race.
"""

from __future__ import annotations

import datetime as dt
import secrets
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def new_link_nonce() -> int:
    """A subscriber's link nonce: random, 62 bits (a positive BIGINT everywhere)."""
    return secrets.randbits(62)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class SubscriberStatus(StrEnum):
    """Where a subscriber stands. Only ``active`` ones are planned into an edition."""

    PENDING = "pending"  # signed up on the web, not yet confirmed
    ACTIVE = "active"
    PAUSED = "paused"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"


class DeliveryStatus(StrEnum):
    """A ledger row's state: pending → sending (leased) → sent | deferred | failed |
    skipped. A deferred row (refused for now) goes back to pending when its
    ``next_try_at`` is due, and becomes failed once ``[delivery] retry_hours`` have
    passed since its ``first_try_at``."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    DEFERRED = "deferred"
    FAILED = "failed"
    SKIPPED = "skipped"


class Subscriber(Base):
    """One person. ``id`` is never given to anyone else (AUTOINCREMENT on SQLite, a
    sequence on PostgreSQL), and every link signed for them also carries
    ``link_nonce``, checked against the row (``store.tokens``): a link outlives its
    subscriber only as a refusal. ``pending_change`` holds the profile a sign-up for
    an existing address asked for, applied only when its confirmation link is used."""

    __tablename__ = "subscribers"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    keywords: Mapped[str] = mapped_column(Text, default="")
    tz: Mapped[str] = mapped_column(String(64), default="UTC")
    send_hour: Mapped[int] = mapped_column(Integer, default=7)
    frequency: Mapped[str] = mapped_column(String(16), default="daily")
    status: Mapped[str] = mapped_column(String(16), default=SubscriberStatus.ACTIVE, index=True)
    consent_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    consent_source: Mapped[str] = mapped_column(String(64), default="")
    bounce_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    link_nonce: Mapped[int] = mapped_column(BigInteger, default=new_link_nonce)
    pending_change: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # When the subscription last became active (confirmed, resumed, subscribed again);
    # None: active as long as it exists. A day missed while not active is not owed late.
    active_since: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


class Entry(Base):
    """One paper. ``id`` is the arXiv id without version, else ``t:`` + a title hash."""

    __tablename__ = "entries"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    title: Mapped[str] = mapped_column(Text)
    abstract: Mapped[str] = mapped_column(Text, default="")
    authors: Mapped[list[Any]] = mapped_column(JSON, default=list)
    published: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    upvotes: Mapped[int] = mapped_column(Integer, default=0)
    url: Mapped[str] = mapped_column(Text, default="")
    code_url: Mapped[str] = mapped_column(Text, default="")
    project_url: Mapped[str] = mapped_column(Text, default="")
    keywords: Mapped[list[Any]] = mapped_column(JSON, default=list)
    version: Mapped[int] = mapped_column(Integer, default=0)
    # The same paper seen first without an arXiv id keeps its id; these find it again.
    arxiv_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    title_key: Mapped[str] = mapped_column(String(40), default="", index=True)
    source: Mapped[str] = mapped_column(String(200), default="")
    arrived_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    # indexed: the web's kept rankings are keyed by the newest change (0015)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    # The day a daily-papers listing featured it (``published`` stays the arXiv
    # date, often months older), so an email can say "featured today".
    featured: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    # Author name -> affiliations, kept out of the names so ``author:`` matches them.
    affiliations: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class EntryTitle(Base):
    """Every title key a paper has had (its current one too): a new version may
    retitle it, and a source without its arXiv id that still lists the old title
    must find the same entry, not store (and send) the paper again."""

    __tablename__ = "entry_titles"

    title_key: Mapped[str] = mapped_column(String(40), primary_key=True)
    entry_id: Mapped[str] = mapped_column(
        ForeignKey("entries.id", ondelete="CASCADE"), primary_key=True, index=True)


class Edition(Base):
    """One newsletter day (and send slot). Unique, so creating it is idempotent.
    ``abandoned_at`` (with who and why): the operator stopped it for good (``newsletter
    abandon``); the ledger then plans, claims and requeues none of its rows (0016)."""

    __tablename__ = "editions"
    __table_args__ = (UniqueConstraint("day", "slot", name="uq_edition_day_slot"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    day: Mapped[dt.date] = mapped_column(Date)
    slot: Mapped[str] = mapped_column(String(32), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    cutoff: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    planned_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    abandoned_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    abandoned_by: Mapped[str] = mapped_column(String(200), default="")
    abandoned_reason: Mapped[str] = mapped_column(Text, default="")


class Delivery(Base):
    """The ledger: one row per (edition, subscriber). The truth about who got what."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("edition_id", "subscriber_id", name="uq_delivery_edition_subscriber"),
        # id last: claiming "the next n pending rows" walks the index in order (0009)
        Index("ix_delivery_edition_status", "edition_id", "status", "id"),
        Index("ix_delivery_status_next_try", "status", "next_try_at"),  # deferred rows due (0011)
        # One edition per subscriber per day, whichever process or slot planned it.
        Index("uq_delivery_subscriber_day", "subscriber_id", "day", unique=True),
        # Who had a day's edition, by the day: planning asks it each run (0015).
        Index("ix_delivery_day_subscriber", "day", "subscriber_id"),
        # What went out in the last hour (an hourly rate limit), a day (the console) (0015).
        Index("ix_delivery_sent_at", "sent_at"),
        # A bounce or a provider's notice names the message it is about (0015).
        Index("ix_delivery_message_id", "message_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    edition_id: Mapped[int] = mapped_column(ForeignKey("editions.id", ondelete="CASCADE"))
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    # The subscriber's newsletter day (their local date for slot runs; the edition's
    # day for a plain send). NULL only on duplicates left by versions before 0004.
    day: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    entry_ids: Mapped[list[Any]] = mapped_column(JSON, default=list)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # What the email showed, written when it is sent (delivery/shown.py; migration 0012)
    shown: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The keywords the picks were made for, kept when the row is deferred: a later try
    # explains them with these, not with a profile changed meanwhile (migration 0014)
    keywords: Mapped[str | None] = mapped_column(Text, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING)
    reason: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    message_id: Mapped[str] = mapped_column(String(255), default="")
    lease_owner: Mapped[str] = mapped_column(String(128), default="")
    lease_expires: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    # A deferred row: when it was first refused for now, and when it is tried again
    # (``delivery.deferral``); the columns and their index exist since 0011.
    first_try_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    next_try_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


class SentEntry(Base):
    """Which papers each subscriber has been sent: no paper twice."""

    __tablename__ = "sent_entries"
    # Who already had a paper, edition by edition (``queries.sent_map``): appended to
    # at its end as a send records, where an index by paper was written all over (0015).
    __table_args__ = (Index("ix_sent_entries_edition", "edition_id", "subscriber_id",
                            "entry_id"),)

    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True
    )
    entry_id: Mapped[str] = mapped_column(
        ForeignKey("entries.id", ondelete="CASCADE"), primary_key=True
    )
    edition_id: Mapped[int] = mapped_column(ForeignKey("editions.id", ondelete="CASCADE"))
    sent_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Event(Base):
    """An audit trail: subscribe, confirm, unsubscribe, bounce, complaint, import."""

    __tablename__ = "events"
    # The console's charts count a kind of event a day (0015).
    __table_args__ = (Index("ix_events_kind_at", "kind", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscriber_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscribers.id", ondelete="SET NULL"), nullable=True, index=True
    )
    kind: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Suppression(Base):
    """An erased address, kept only as a hash: enough to refuse it, not to read it."""

    __tablename__ = "suppressions"

    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    reason: Mapped[str] = mapped_column(String(32), default="erased")
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class MailReport(Base):
    """One message read from the bounce mailbox, by its digest: what it was and what
    was done, so a message read twice (the mailbox was not told in time) is acted on
    once, and an operator can see why an address was bounced."""

    __tablename__ = "mail_reports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 of the raw bytes
    kind: Mapped[str] = mapped_column(String(16))  # bounces.parse.Kind
    outcome: Mapped[str] = mapped_column(String(16))  # the count it went under
    delivery_id: Mapped[int | None] = mapped_column(
        ForeignKey("deliveries.id", ondelete="SET NULL"), nullable=True, index=True)
    subscriber_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscribers.id", ondelete="SET NULL"), nullable=True, index=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class FetchState(Base):
    """Validators from the last fetch of a URL, for conditional GET."""

    __tablename__ = "fetch_state"

    url: Mapped[str] = mapped_column(String(2000), primary_key=True)
    etag: Mapped[str] = mapped_column(Text, default="")
    last_modified: Mapped[str] = mapped_column(Text, default="")
    fetched_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class SourceRun(Base):
    """The last ingest of each source: when, what it stored, what it skipped, its error."""

    __tablename__ = "source_runs"

    name: Mapped[str] = mapped_column(String(500), primary_key=True)
    origin: Mapped[str] = mapped_column(Text, default="")
    ran_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    ok: Mapped[bool] = mapped_column(Boolean, default=True)
    papers: Mapped[int] = mapped_column(Integer, default=0)
    new: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    not_modified: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str] = mapped_column(Text, default="")


class Meta(Base):
    """Small key/value settings the service makes for itself (e.g. a signing key)."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class AdminUser(Base):
    """An operator of the /admin console; the password is kept as an Argon2 hash."""

    __tablename__ = "admin_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_login_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


class AdminSession(Base):
    """A console session, kept server-side so logout and ``admin remove-user`` end it."""

    __tablename__ = "admin_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the secret
    user_id: Mapped[int] = mapped_column(ForeignKey("admin_users.id", ondelete="CASCADE"),
                                         index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime)


class AdminLoginAttempt(Base):
    """Login attempts, counted per user name and per client for the failure limits."""

    __tablename__ = "admin_login_attempts"
    __table_args__ = (
        Index("ix_admin_login_attempts_name_at", "name", "at"),
        Index("ix_admin_login_attempts_client_at", "client", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    client: Mapped[str] = mapped_column(String(64))
    ok: Mapped[bool] = mapped_column(Boolean)
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Heartbeat(Base):
    """A long-running process (``run``, ``worker``) saying it is alive, every
    ``[metrics] heartbeat_seconds``; ``newsletter status`` lists them. One row per
    process (kind:host:pid), kept after a clean stop with ``stopped_at`` set."""

    __tablename__ = "heartbeats"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    interval_seconds: Mapped[float] = mapped_column(Float)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    beat_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    stopped_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Vote(Base):
    """A subscriber's "more / less like this" on one paper: one row per (subscriber,
    paper), the latest direction wins (from the time it was first cast that way:
    ``store.votes.record``). What it teaches is computed at ranking time, so the
    written profile is never rewritten and undoing a vote is deleting its row."""

    __tablename__ = "votes"
    __table_args__ = (
        UniqueConstraint("subscriber_id", "entry_id", name="uq_vote_subscriber_entry"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), index=True)
    entry_id: Mapped[str] = mapped_column(ForeignKey("entries.id", ondelete="CASCADE"))
    direction: Mapped[int] = mapped_column(Integer)  # +1 more like this, -1 less like this
    source: Mapped[str] = mapped_column(String(16), default="email")  # email | cli | web
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class LearnedMute(Base):
    """A learned term the subscriber removed: votes do not teach it again."""

    __tablename__ = "learned_mutes"

    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True)
    term: Mapped[str] = mapped_column(String(200), primary_key=True)  # stems, space-separated
    label: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class SigningKeyUse(Base):
    """A link-signing key that has signed links which left the service (emails,
    pages), by fingerprint, with when that was first recorded. Only these are
    protected when ``[web] secret_keys`` changes: a key that never signed anything
    can be replaced freely."""

    __tablename__ = "signing_key_uses"

    fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True)
    first_used_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    used_by: Mapped[str] = mapped_column(String(32), default="")  # the first command


class WebhookEvent(Base):
    """A provider's notice already acted on, by its event id (hashed: ids are the
    provider's to shape), so the same notice posted again is refused, after a restart
    and by every process. Kept only while a replay would still pass the freshness
    check (``seen_at`` + the provider's window), then pruned."""

    __tablename__ = "webhook_events"

    provider: Mapped[str] = mapped_column(String(16), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seen_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
