"""One typed, frozen settings object: the only place that reads config.

Precedence is built-in defaults < ``config.toml`` < ``NEWSLETTER_<SECTION>__<KEY>``
environment variables < explicit overrides from the CLI. Unknown keys and wrong
types are errors naming the key and where it came from, because a silently
ignored typo in a mail server's config is how newsletters go to the wrong place.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import inspect
import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from newsletter.errors import ConfigError

ENV_PREFIX = "NEWSLETTER_"
DEFAULT_CONFIG = "config.toml"


class _Section(BaseModel):
    """A config section. Each key's docstring is its meaning: ``newsletter init`` and
    ``docs/configuration.md`` are generated from them (newsletter/config_reference.py,
    through :func:`key_doc`)."""

    # Not pydantic's use_attribute_docstrings: it finds and parses each class's source
    # as the class is built, ~20 ms of every command's start, for text only the
    # reference generator reads.
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseConfig(_Section):
    """Where subscribers, papers, editions and the delivery ledger are stored."""

    url: str = "sqlite:///subscribers.db"
    """SQLAlchemy URL of the database. SQLite (the default) is made on first use;
    PostgreSQL (`postgresql+psycopg://user:password@host/db`) works unchanged and is
    needed for workers on other machines."""


class SenderConfig(_Section):
    """Who the emails come from, as their headers and footer say."""

    from_address: str = "digest@localhost"
    """The From: address of every email (checked when the config loads)."""
    from_name: str = "Research Digest"
    """The From: display name."""
    reply_to: str | None = None
    """The Reply-To: address; unset (or "") sends none."""
    postal_address: str = "Research Digest, 1 Example Street, Springfield"
    """The sender's postal address, shown in every email's footer (anti-spam laws ask
    for it)."""
    list_id: str = "digest.localhost"
    """The List-Id: header's identifier, a dotted name such as digest.example.org."""

    @field_validator("from_address", "reply_to")
    @classmethod
    def _address(cls, v: str | None, info_field: ValidationInfo) -> str | None:
        """Checked at load: a bad sender would otherwise go out as ``From: ... <>``."""
        if v is None or (info_field.field_name == "reply_to" and not v.strip()):
            return None  # reply_to = "" means unset
        from email_validator import EmailNotValidError

        from newsletter.addresses import validated

        v = v.strip()
        if not v:
            raise ValueError("an email address is required, e.g. digest@example.org")
        local, _, domain = v.rpartition("@")
        # A local relay's own name is fine for a sender; the validator calls it reserved.
        probe = f"{local}@example.org" if domain.lower() == "localhost" else v
        try:
            info = validated(probe, allow_smtputf8=False)
        except EmailNotValidError as exc:
            raise ValueError(f"not a valid email address ({v!r}): {exc}") from None
        return v if probe != v else str(info.ascii_email or info.normalized)

    @field_validator("from_name", "postal_address", "list_id")
    @classmethod
    def _one_line(cls, v: str) -> str:
        """Header text: no CR/LF (a header could be injected through the config)."""
        from newsletter.addresses import clean_header_text

        return clean_header_text(v)


class WebConfig(_Section):
    """`newsletter web`: the public pages every email links to, and the links' signing keys."""

    base_url: str = "http://127.0.0.1:8000"
    """Public address of `newsletter web`: every link in an email starts with it (https
    for real sends: one-click unsubscribe needs it)."""
    secret_keys: list[str] = Field(default_factory=list)
    """Link-signing keys, newest first: the first signs, all verify. Empty: the key
    stored in the database is used. To rotate, put the new key first and keep the old
    one after it."""
    retired_keys: list[str] = Field(default_factory=list)
    """Fingerprints (`newsletter keys show` prints them) of signing keys dropped on
    purpose: their links stop working and `newsletter web` may start without them."""
    confirm_hours: int = Field(default=72, ge=1, le=24 * 365)
    """How long a sign-up's confirmation link works, in hours."""
    max_form_bytes: int = Field(default=1_000_000, ge=1024)
    """Larger form posts are refused (413)."""
    confirm_interval_minutes: int = Field(default=15, ge=0)
    """At most one confirmation email per address this often, in minutes; the same
    limit, counted apart, holds for the emailed data and erasure links."""
    confirms_per_day: int = Field(default=3, ge=1)
    """At most this many confirmation emails per address per day (and, counted apart,
    this many data and erasure links)."""
    mailbox_link_hours: int = Field(default=24, ge=1, le=24 * 30)
    """How long an emailed "download my data" or "delete everything" link works, in
    hours. The preferences page only asks for one: its own link travels with every
    forwarded digest, so these go to the subscriber's address alone."""
    signups_per_client_per_hour: int = Field(default=10, ge=1)
    """Sign-up posts per client address per hour (an IPv6 client by its /64), counted
    in the database (every web process on it together); more are refused (429)."""
    signups_per_hour: int = Field(default=1000, ge=1)
    """Sign-up posts from all clients together per hour, counted in the database (every
    web process on it together); more are refused (429) and the log says so. Each sends
    a confirmation email to an address someone typed: addresses are cheap (an IPv6 /48
    holds 65,536 clients of their own), and a flood of emails to strangers costs the
    sender's reputation. Raise it for a launch."""
    preview_cache_size: int = Field(default=256, ge=0)
    """Keyword sets (with votes) whose ranked picks the preferences page keeps in
    memory."""
    render_processes: int = Field(default=1, ge=0, le=32)
    """Processes that rank and render for the web pages (preferences, view in browser);
    0 = threads in the server process."""
    forwarded_allow_ips: str = "127.0.0.1"
    """The reverse proxies whose X-Forwarded-For and X-Forwarded-Proto are believed,
    comma-separated addresses or networks ("127.0.0.1,172.16.0.0/12"). The client the
    sign-up and login limits count is the first address of X-Forwarded-For, from the
    right, that is not one of them; a request from anywhere else counts as its own
    address. Behind Docker's published port the proxy arrives from the bridge network,
    so name that network (deploy/compose.yaml does), or every visitor shares one limit.
    Empty: no proxy is believed."""

    @field_validator("secret_keys", "retired_keys", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        return [p.strip() for p in v.split(",") if p.strip()] if isinstance(v, str) else v

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _proxies(cls, v: str) -> str:
        """Each an address or network: "*" (anyone's header believed, so anyone could
        name any client and step around the limits) and typos are refused at load."""
        import ipaddress

        out = []
        for item in (p.strip() for p in v.split(",")):
            if not item:
                continue
            if item == "*":
                raise ValueError('"*" would believe any client\'s X-Forwarded-For (and '
                                 "let it dodge the sign-up and login limits); name the "
                                 "proxies' addresses or networks")
            try:  # as the server compares them: a network by its prefix, not "10.0.0.1/8"
                out.append(str(ipaddress.ip_network(item, strict=False)) if "/" in item
                           else str(ipaddress.ip_address(item)))
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network, e.g. "
                                 "127.0.0.1 or 172.16.0.0/12") from None
        return ",".join(out)


class WebhooksConfig(_Section):
    """Each provider's own proof that a bounce/complaint notice came from it, checked in
    addition to the per-provider token in the URL. A provider left unconfigured here
    refuses every notice (except SES, whose proof is Amazon's certificate)."""

    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    """Larger bounce/complaint notices are refused (413)."""
    tolerance_seconds: int = Field(default=300, ge=1)
    """Signed timestamps older (or newer) than this many seconds are stale (SES via SNS:
    one hour)."""
    sendgrid_public_key: str | None = None
    """SendGrid's verification key (Mail Settings > Signed Event Webhook), base64 DER or
    PEM."""
    mailgun_signing_key: str | None = None
    """Mailgun's HTTP webhook signing key (Sending > Webhooks)."""
    postmark_username: str | None = None
    """Basic-auth user name you put in the webhook URL at Postmark."""
    postmark_password: str | None = None
    """Basic-auth password you put in the webhook URL at Postmark."""
    resend_secret: str | None = None
    """Resend's webhook signing secret, "whsec_..."."""
    ses_topic_arns: list[str] = Field(default_factory=list)
    """SNS topic ARNs to accept notices from; empty: any topic (the SNS signature is
    checked either way)."""

    @field_validator("ses_topic_arns", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        return [p.strip() for p in v.split(",") if p.strip()] if isinstance(v, str) else v


Backend = Literal["smtp", "outbox", "console", "sendgrid", "mailgun", "postmark", "ses", "resend"]


class TransportConfig(_Section):
    """How emails leave, and how fast."""

    backend: Backend = "outbox"
    """How emails leave: smtp, outbox (.eml files, sends nothing), console, or an email
    API (sendgrid, mailgun, postmark, ses, resend; see [api])."""
    rate_per_second: float = 0.0
    """Messages per second at most, across the process; 0 = unlimited."""
    rate_per_hour: float = 0.0
    """Messages per hour at most, across the process; 0 = unlimited."""
    concurrency: int = Field(default=4, ge=1, le=256)
    """Messages in flight at once."""
    processes: int = Field(default=1, ge=1, le=64)
    """Processes that deliver an edition for `newsletter send`, each a whole delivery
    loop (render, send, record) claiming rows from the same ledger under its own lease,
    as queue workers do: against a fast relay the sender's own CPU, not the server,
    limits one process. Each process has `concurrency` messages in flight and its own
    [smtp] connections; the rates are shared out among them. Only for an edition with
    at least two claim batches a process. 1 = this process only; `send --processes`
    overrides it."""
    max_attempts: int = Field(default=5, ge=1, le=50)
    """Tries per message on transient errors (4xx, timeouts) within one run, before it
    is deferred (see [delivery])."""
    backoff_seconds: float = Field(default=1.0, ge=0)
    """Base of the exponential backoff between tries, in seconds (with jitter)."""
    utf8_addresses: bool = False
    """Accept addresses with a non-ASCII local part (jösé@...): only deliverable through
    an SMTP server offering SMTPUTF8."""


class DeliveryConfig(_Section):
    """What happens to a message a server refused for now (a 4xx reply, a timeout, a
    connection dropped during its transaction): it is deferred and tried again later,
    as an MTA keeps mail in its queue, instead of being failed after a few seconds."""

    retry_first_minutes: float = Field(default=5.0, gt=0, le=24 * 60)
    """Minutes from a deferral to the next try; the wait doubles with every try after
    (5, 10, 20, 40...). `newsletter run` and `newsletter send` retry what is due."""
    retry_hours: float = Field(default=24.0, gt=0, le=24 * 30)
    """Hours after the first try during which a deferred message is tried again; the
    first temporary failure after that makes it failed, with the last reason."""


class SmtpConfig(_Section):
    """The SMTP server, for ``[transport] backend = "smtp"``."""

    host: str = "127.0.0.1"
    """SMTP server (relay) host name or address."""
    port: int = Field(default=25, ge=1, le=65535)
    """SMTP server port."""
    security: Literal["none", "starttls", "tls"] = "none"
    """none, starttls, or tls (implicit TLS, usually port 465)."""
    username: str | None = None
    """SMTP AUTH user name; unset: no login."""
    password: str | None = None
    """SMTP AUTH password (put it in the environment, not in the file)."""
    connections: int = Field(default=4, ge=1, le=256)
    """Parallel connections, each reused for many messages."""
    messages_per_connection: int = Field(default=100, ge=1)
    """Messages sent over one connection before it is replaced."""
    timeout: float = Field(default=30.0, gt=0)
    """Seconds per SMTP command."""
    data_timeout: float = Field(default=600.0, gt=0)
    """Seconds to wait for the server's answer to the end of a message (RFC 5321 asks
    10 minutes: a content filter may take that long). With no answer, or the connection
    lost before it, the server may have the message: it is deferred, never sent again
    within the run (where a reply slower than `timeout` made five copies)."""
    pipelining: bool = True
    """Send MAIL, RCPT and DATA in one write when the server offers PIPELINING (RFC
    2920): two round trips a message instead of four. false: one command at a time."""
    ca_file: str | None = None
    """A CA bundle (PEM) to trust, for a relay with a private certificate."""


class OutboxConfig(_Section):
    """The outbox transport (the default): files instead of mail."""

    path: str = "outbox"
    """Folder the outbox transport writes one .eml file per message into."""


class ApiConfig(_Section):
    """Settings shared by the HTTP email-API backends (one provider at a time)."""

    api_key: str | None = None
    """The email API's key (for SES: the access key id)."""
    base_url: str | None = None
    """Override the provider's endpoint (an EU region, a test server)."""
    domain: str | None = None
    """Mailgun's sending domain."""
    region: str = "us-east-1"
    """Amazon SES region."""
    secret_key: str | None = None
    """Amazon SES secret access key."""
    timeout: float = Field(default=30.0, gt=0)
    """Seconds per API request."""


class QueueConfig(_Section):
    """The Celery queue for scale-out (``newsletter worker``, ``send --queue``), with
    PostgreSQL."""

    broker_url: str = "redis://127.0.0.1:6379/0"
    """Celery broker for `newsletter worker` and `send --queue`: Redis (redis://...) or
    RabbitMQ (amqp://guest:guest@127.0.0.1:5672//)."""
    queue_name: str = Field(default="newsletter", min_length=1, max_length=200)
    """The broker queue the sender fills and the workers consume; deployments (or test
    runs) sharing one broker keep apart by naming their own."""


class LogConfig(_Section):
    """How long-running commands (``run``, ``worker``, ``web``, ``send``) log to stderr."""

    format: Literal["text", "json"] = "text"
    """text, or json: one JSON object per line (edition, subscriber id, outcome,
    timing), for log collectors; `--log-format` overrides it."""
    level: Literal["debug", "info", "warning", "error"] = "info"
    """debug, info, warning or error."""
    include_address: bool = False
    """Put subscriber addresses in log lines (ids are always there)."""


class MetricsConfig(_Section):
    """Prometheus metrics: ``/metrics`` on ``newsletter web``, and a port of their own
    for ``newsletter run`` and ``newsletter worker``."""

    token: str | None = None
    """When set, /metrics on `newsletter web` needs `Authorization: Bearer TOKEN`."""
    localhost_only: bool = True
    """Without a token, /metrics on `newsletter web` answers only 127.0.0.1 and ::1 (not
    through a proxy)."""
    port: int = Field(default=0, ge=0, le=65535)
    """`run` and `worker` serve /metrics on this port; 0 = off (`--metrics-port`
    overrides it)."""
    host: str = "127.0.0.1"
    """Address the `run`/`worker` metrics server listens on."""
    heartbeat_seconds: float = Field(default=15.0, gt=0)
    """How often `run` and `worker` write their heartbeat (`newsletter status` reads
    it), in seconds."""


class BouncesConfig(_Section):
    """What mail servers answer after a message has left: the per-message envelope
    sender (VERP) and the mailbox that `newsletter bounces fetch` and `newsletter run`
    read for bounces, complaints and mailto unsubscribes."""

    return_path: str | None = None
    """The envelope sender of every message, with `{token}` naming its delivery, e.g.
    `bounces+{token}@digest.example.org`; unset = the From address."""
    mailbox: str | None = None
    """The bounce mailbox: `imaps://user:pass@host/INBOX`, `imap://…` (STARTTLS),
    `pop3s://…`, `pop3://…` (STLS) or `maildir:/path`; unset = none (then the
    List-Unsubscribe header carries no mailto: address)."""
    fetch_minutes: int = Field(default=10, ge=1, le=24 * 60)
    """`newsletter run` reads the mailbox this often, in minutes."""
    soft_limit: int = Field(default=3, ge=1, le=100)
    """Messages soft-bounced (mailbox full, given up for now) within `soft_days` that make
    an address bounced; several reports of one message count once, and delay warnings
    not at all."""
    soft_days: int = Field(default=14, ge=1, le=365)
    """The window, in days, in which soft bounces are counted."""
    after: Literal["flag", "move", "delete"] = "flag"
    """What happens to a processed message: flag it (IMAP keyword; Maildir: filed in
    cur/), move it to `move_to` (IMAP), or delete it. POP3 always deletes."""
    move_to: str = ""
    """The IMAP folder processed messages go to when `after = "move"`."""
    ca_file: str | None = None
    """An extra CA bundle to trust for the mailbox's TLS certificate."""

    @field_validator("return_path")
    @classmethod
    def _one_token(cls, value: str | None) -> str | None:
        if value is not None and (value.count("{token}") != 1 or "@" not in value
                                  or not value.rpartition("@")[2]):
            raise ValueError("expected one {token} and an @domain, e.g. "
                             "bounces+{token}@digest.example.org")
        return value

    def unsubscribe_mailto(self, from_address: str) -> str | None:
        """The address List-Unsubscribe offers a mailto: for: the From address, and
        only when a mailbox is read (else the request would be lost)."""
        return from_address if self.mailbox else None


class SourceConfig(_Section):
    """One ``[[sources]]`` entry: a feed or file that ``newsletter ingest NAME`` and the
    scheduler read."""

    name: str
    """The source's name, for `newsletter ingest NAME` and `sources list`."""
    kind: Literal["auto", "dailypapers", "arxiv", "feed", "json", "jsonfeed", "pagedump"] = "auto"
    """auto (tell the format from the content), dailypapers, arxiv, feed, json, jsonfeed
    or pagedump."""
    url: str | None = None
    """A URL to fetch it from (this or `path`, not both)."""
    path: str | None = None
    """A local file to read instead of a URL (this or `url`, not both)."""

    @model_validator(mode="after")
    def _one_place(self) -> SourceConfig:
        """Exactly one of url and path, checked at load: with both, one was silently
        ignored; with neither, the entry failed only when the daemon ingested it."""
        if bool(self.url) == bool(self.path):
            given = "both url and path" if self.url else "neither url nor path"
            raise ValueError(f"{self.name!r} has {given}: give one")
        return self


class RankingConfig(_Section):
    """How papers are picked and ordered for each subscriber's profile and votes."""

    max_papers: int = Field(default=10, ge=1, le=100)
    """Papers per email at most."""
    min_relevance: float = Field(default=1.0, ge=0)
    """Below this relevance a paper is not a match."""
    weight_relevance: float = 1.0
    """Weight of relevance in a paper's score: score = relevance × weight_relevance +
    log1p(upvotes) × weight_popularity + recency × weight_recency."""
    weight_popularity: float = 0.15
    """Weight of popularity in a paper's score: log1p(upvotes) × weight_popularity."""
    weight_recency: float = 0.1
    """Weight of recency in a paper's score: recency (1 today, halving every week) ×
    weight_recency."""
    trending: Literal["none", "section"] = "section"
    """section: a profile that matches nothing gets a labelled "Trending today" section;
    none: nothing."""
    trending_count: int = Field(default=3, ge=0, le=20)
    """Papers in the trending section."""
    recent_papers: int = Field(default=1000, ge=1, le=1_000_000)
    """The newest papers (by arrival) that the preferences page ranks a profile against
    ("what your keywords pick from recent papers") and that a vote's lesson ("we'll show
    more on ...") is read from. Every stored paper made each vote and each voter's page
    cost seconds of ranking once tens of thousands were stored."""
    acronyms: str | None = None
    """A TSV file (acronym, a tab, long form per line) replacing the bundled acronym
    table; unset: the bundled one."""
    related_terms: str | None = None
    """A TSV file (area names, a tab, related terms) replacing the bundled related-terms
    table: a term naming a field ("medical", "-medical") also knows its vocabulary
    (clinical, chest X-ray, ...); unset: the bundled one."""
    expand_related: bool = True
    """Use the related-terms table at all; false: terms mean only themselves."""
    related_weight: float = Field(default=0.5, ge=0, le=1)
    """A topic naming a field: its related terms' share of the score."""
    exclude_related_min: float = Field(default=4.0, gt=0)
    """Evidence of related terms an exclusion needs (per related term present: 3 in the
    title, 2 in keywords, 1 in the abstract, +1 if repeated); a paper reaching this is
    excluded."""
    # Votes ("more / less like this") add learned weights on top of the written profile.
    feedback_up: float = Field(default=0.2, ge=0, le=10)
    """Rocchio weight of liked papers' terms ("more like this" votes)."""
    feedback_down: float = Field(default=0.1, ge=0, le=10)
    """Rocchio weight of disliked papers' terms ("less like this" votes)."""
    feedback_terms: int = Field(default=6, ge=1, le=50)
    """Terms taken from each voted paper (its title and keywords)."""
    feedback_max_weight: float = Field(default=1.0, gt=0, le=10)
    """No learned term weighs more than this (written terms weigh 1 to 10)."""
    feedback_min_weight: float = Field(default=0.05, ge=0)
    """Weaker learned terms are dropped."""
    feedback_share: float = Field(default=0.1, ge=0, le=1)
    """Learned terms move a paper by at most this share of its written relevance (a
    match they make alone: this share of their own)."""
    feedback_half_life_days: float = Field(default=90.0, gt=0)
    """A vote's weight halves every this many days."""
    reader_fills: bool = True
    """Fill the slots the keywords leave empty with papers like one the reader liked,
    labelled "because you liked <title>"; false: 👍 only teach learned terms."""
    reader_threshold: float = Field(default=0.3, ge=0, le=1)
    """A fill must be at least this similar (TF-IDF cosine of title, keywords and
    abstract) to a paper the reader liked."""
    reader_reorder: float = Field(default=0.5, ge=0, le=10)
    """Once a reader has two 👍: each keyword pick gains this × its best similarity to a
    liked paper (at most 1) before the picks are ordered; 0: no re-ordering."""


class RenderConfig(_Section):
    """The email's templates, DKIM signature and thumbnails."""

    templates: str | None = None
    """A folder with your own digest.mjml, digest.txt and subject.txt (and optionally
    the confirmation email's templates); unset: the bundled ones."""
    dkim_selector: str | None = None
    """DKIM selector; DKIM signs when selector, domain and key are all set."""
    dkim_domain: str | None = None
    """DKIM signing domain (align it with the From domain for DMARC)."""
    dkim_private_key: str | None = None
    """Path to the DKIM private key (a PEM file)."""
    images: Literal["none", "remote"] = "none"
    """Thumbnails: none (opening the email loads nothing) or remote (a 160x90 image per
    paper with an arXiv id, from image_url)."""
    image_url: str = "https://cdn-thumbnails.huggingface.co/social-thumbnails/papers/{arxiv_id}.png"
    """Thumbnail URL template; {arxiv_id} and {id} are filled in."""


class ScheduleConfig(_Section):
    """``newsletter run``, the daemon: when it ingests and how it catches up on sends."""

    ingest_cron: str = "0 5 * * *"
    """When `newsletter run` ingests every [[sources]] entry (five-field cron, checked
    at load). Each UTC hour (and once at start) it also sends to everyone whose local
    send time has passed and who has not had that day's edition."""
    timezone: str = "UTC"
    """Time zone of ingest_cron (an IANA name such as Europe/Paris, checked at load)."""
    catch_up_hours: int = Field(default=24, ge=0, le=48)
    """A slot run also sends a previous local day missed within this many hours (an
    outage across someone's midnight); 0: off."""

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}: expected an IANA name like "
                             "Europe/Paris") from None
        return v

    @field_validator("ingest_cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(v, timezone="UTC")
        except ValueError as exc:
            raise ValueError(f"not a valid crontab expression ({v!r}): {exc}; expected five "
                             "fields: minute hour day month weekday") from None
        return v


class AdminConfig(_Section):
    """The /admin console: how long a login lasts and when failed logins lock it."""

    session_hours: float = Field(default=12.0, gt=0)
    """A console login lasts this many hours."""
    max_failures_per_user: int = Field(default=5, ge=1)
    """Failed logins for one user name from one client address before each further try
    from there waits (1 s, doubling, up to lockout_minutes); other addresses are not
    slowed, so a stranger cannot lock the operator out."""
    max_failures_per_client: int = Field(default=20, ge=1)
    """Failed logins from one client address within lockout_minutes that lock it out."""
    lockout_minutes: float = Field(default=15.0, gt=0)
    """The window (and lockout) for failed logins, in minutes."""
    page_size: int = Field(default=50, ge=1, le=1000)
    """Rows per page in the console's lists."""
    max_upload_bytes: int = Field(default=20_000_000, ge=1024)
    """The largest CSV the console's import accepts, in bytes (bigger files:
    `newsletter subscribers import`)."""


class Settings(_Section):
    database: DatabaseConfig = DatabaseConfig()
    sender: SenderConfig = SenderConfig()
    web: WebConfig = WebConfig()
    webhooks: WebhooksConfig = WebhooksConfig()
    transport: TransportConfig = TransportConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    smtp: SmtpConfig = SmtpConfig()
    outbox: OutboxConfig = OutboxConfig()
    api: ApiConfig = ApiConfig()
    ranking: RankingConfig = RankingConfig()
    render: RenderConfig = RenderConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    queue: QueueConfig = QueueConfig()
    admin: AdminConfig = AdminConfig()
    log: LogConfig = LogConfig()
    metrics: MetricsConfig = MetricsConfig()
    bounces: BouncesConfig = BouncesConfig()
    sources: list[SourceConfig] = Field(default_factory=list)

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, v: list[SourceConfig]) -> list[SourceConfig]:
        """A name names one source: `ingest NAME` read the first of two, and `sources
        list` showed the other as ingested too."""
        seen: set[str] = set()
        for src in v:
            if src.name in seen:
                raise ValueError(f"two [[sources]] entries are named {src.name!r}: "
                                 "each name must be its own")
            seen.add(src.name)
        return v
    source_file: str | None = None  # where the file layer came from, for messages

    def replace(self, **sections: Mapping[str, Any]) -> Settings:
        """A copy with some keys changed, validated like everything else."""
        data = self.model_dump()
        for section, values in sections.items():
            data[section] = {**data.get(section, {}), **values}
        return _validate(data, "override")


def key_doc(model: type[BaseModel], name: str) -> str | None:
    """The docstring under key ``name`` of a section (or a section it inherits from),
    cleaned as a docstring is (``inspect.cleandoc``); None when it has none."""
    docs = _key_docs()
    for cls in model.__mro__:
        if name in docs.get(cls.__qualname__, {}):
            return docs[cls.__qualname__][name]
    return None


@functools.cache
def _key_docs() -> dict[str, dict[str, str]]:
    """Each class's key docstrings, read from this file: a string right after an
    annotated assignment documents it. None at all when the source is not there (an
    install of compiled files only): the reference then has no meanings, nothing fails."""
    try:
        tree = ast.parse(Path(__file__).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, SyntaxError):
        return {}
    out: dict[str, dict[str, str]] = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        docs = out.setdefault(node.name, {})
        for stmt, after in zip(node.body, node.body[1:], strict=False):
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) \
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) \
                    and isinstance(after.value.value, str):
                docs[stmt.target.id] = inspect.cleandoc(after.value.value)
    return out


def _env_layer(environ: Mapping[str, str],
               names: dict[tuple[str, str], str] | None = None) -> dict[str, dict[str, Any]]:
    """``NEWSLETTER_<SECTION>__<KEY>`` variables as a layer; ``names`` collects which
    variable set which (section, key), so an error can name the variable."""
    layer: dict[str, dict[str, Any]] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].partition("__")
        value: Any = raw
        if raw[:1] in "[{":
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(raw)
        layer.setdefault(section.lower(), {})[key.lower()] = value
        if names is not None:
            names[(section.lower(), key.lower())] = name
            names.setdefault((section.lower(), ""), name)
    return layer


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _validate(data: dict[str, Any], where: str,
              env_names: Mapping[tuple[str, str], str] | None = None) -> Settings:
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"]]
        env_name = (env_names or {}).get((loc[0], loc[1])) if len(loc) >= 2 else None
        if env_name is None and len(loc) == 1:  # an unknown section
            env_name = (env_names or {}).get((loc[0], ""))
        if env_name is not None:  # the value came from the environment: name the variable
            where = f"environment variable {env_name}"
        if loc and loc[0] == "sources" and len(loc) > 1:
            key = f"[[sources]] #{int(loc[1]) + 1} {'.'.join(loc[2:])}".strip()
        elif len(loc) >= 2:
            key = f"[{loc[0]}] {'.'.join(loc[1:])}"
        else:
            key = ".".join(loc) or "(top level)"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        msg = msg.removeprefix("Value error, ")
        raise ConfigError(f"{where}: {key}: {msg}") from None


# The keys that name files, by section: a relative one in a config file means beside
# that file (``_anchored``).
FILE_KEYS = {"outbox": ("path",), "render": ("templates", "dkim_private_key"),
             "ranking": ("acronyms", "related_terms"), "smtp": ("ca_file",),
             "bounces": ("ca_file",)}


def _anchored(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The file layer with its relative file names made absolute from ``folder``, the
    config file's own: `newsletter --config /srv/digest/config.toml status` run from
    elsewhere read and created ``./subscribers.db`` (and looked for the DKIM key, the
    outbox, the sources' files) in the current folder, splitting the data between two
    databases. Only what the file says moves; environment overrides and built-in
    defaults stay relative to the current folder, and a file in the current folder
    changes nothing."""

    def anchor(value: Any) -> Any:
        if not isinstance(value, str) or not value or Path(value).is_absolute():
            return value
        return str(folder / value)

    out = dict(data)
    for section, keys in FILE_KEYS.items():
        if isinstance(out.get(section), dict):
            out[section] = {k: anchor(v) if k in keys else v for k, v in out[section].items()}
    db = out.get("database")
    if isinstance(db, dict) and isinstance(db.get("url"), str):
        out["database"] = {**db, "url": _anchored_sqlite(db["url"], folder)}
    box = out.get("bounces")
    if isinstance(box, dict) and isinstance(box.get("mailbox"), str) \
            and box["mailbox"].startswith("maildir:"):
        out["bounces"] = {**box, "mailbox": "maildir:" + anchor(box["mailbox"][8:])}
    if isinstance(out.get("sources"), list):
        out["sources"] = [{**src, "path": anchor(src.get("path"))}
                          if isinstance(src, dict) and "path" in src else src
                          for src in out["sources"]]
    return out


def _anchored_sqlite(url: str, folder: Path) -> str:
    """A SQLite URL with a relative file (``sqlite:///subscribers.db``) made absolute
    from ``folder``; any other URL as it is (one that does not parse is reported where
    the database is opened). The folder is quoted as a URL's path: a folder named with
    ``?`` or ``%`` ("site?2") put the database in another file ("site")."""
    prefix, sep, rest = url.partition(":///")
    if not sep or not prefix.startswith("sqlite") or not rest or rest.startswith("/") \
            or rest.startswith(":memory:") or rest.startswith("file:"):
        return url
    return f"{prefix}:///{quote(str(folder), safe='/')}/{rest}"


def load_settings(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read settings from ``path`` (or ``$NEWSLETTER_CONFIG``, or ./config.toml).

    A missing default file is fine (built-in defaults); a missing file that was
    asked for by name is an error.
    """
    environ = os.environ if environ is None else environ
    explicit = path is not None or bool(environ.get("NEWSLETTER_CONFIG"))
    cfg_path = Path(path or environ.get("NEWSLETTER_CONFIG") or DEFAULT_CONFIG)
    data: dict[str, Any] = {}
    where = "defaults"
    if cfg_path.exists():
        where = str(cfg_path)
        try:
            data = tomllib.loads(cfg_path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{cfg_path}: not valid TOML: {exc}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{cfg_path}: cannot read: {exc}") from None
        data["source_file"] = str(cfg_path)
        folder = cfg_path.resolve().parent
        if folder != Path.cwd().resolve():
            data = _anchored(data, folder)
    elif explicit:
        raise ConfigError(f"{cfg_path}: config file not found")
    names: dict[tuple[str, str], str] = {}
    env = _env_layer(environ, names)
    if env:
        where = f"{where} + environment"
    return _validate(_merge(data, env), where, names)
