"""One typed, frozen settings object: the only place that reads config.

Precedence is built-in defaults < ``config.toml`` < ``NEWSLETTER_<SECTION>__<KEY>``
environment variables < explicit overrides from the CLI. Unknown keys and wrong
types are errors naming the key and where it came from, because a silently
ignored typo in a mail server's config is how newsletters go to the wrong place.
"""

from __future__ import annotations

import contextlib
import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from newsletter.errors import ConfigError

ENV_PREFIX = "NEWSLETTER_"
DEFAULT_CONFIG = "config.toml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseConfig(_Section):
    url: str = "sqlite:///subscribers.db"


class SenderConfig(_Section):
    from_address: str = "digest@localhost"
    from_name: str = "Research Digest"
    reply_to: str | None = None
    postal_address: str = "Research Digest, 1 Example Street, Springfield"
    list_id: str = "digest.localhost"

    @field_validator("from_address", "reply_to")
    @classmethod
    def _address(cls, v: str | None, info_field: ValidationInfo) -> str | None:
        """Checked at load: a bad sender would otherwise go out as ``From: ... <>``."""
        if v is None or (info_field.field_name == "reply_to" and not v.strip()):
            return None  # reply_to = "" means unset
        from email_validator import EmailNotValidError, validate_email

        v = v.strip()
        if not v:
            raise ValueError("an email address is required, e.g. digest@example.org")
        local, _, domain = v.rpartition("@")
        # A local relay's own name is fine for a sender; the validator calls it reserved.
        probe = f"{local}@example.org" if domain.lower() == "localhost" else v
        try:
            info = validate_email(probe, check_deliverability=False, allow_smtputf8=False,
                                  test_environment=True, globally_deliverable=False)
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
    base_url: str = "http://127.0.0.1:8000"
    secret_keys: list[str] = Field(default_factory=list)
    # Fingerprints (``newsletter webhooks urls`` prints the stored key's) of signing keys
    # deliberately dropped: their links stop working and the server may start without them.
    retired_keys: list[str] = Field(default_factory=list)
    confirm_hours: int = Field(default=72, ge=1, le=24 * 365)
    max_form_bytes: int = Field(default=1_000_000, ge=1024)
    confirm_interval_minutes: int = Field(default=15, ge=0)  # per address
    confirms_per_day: int = Field(default=3, ge=1)  # per address
    signups_per_client_per_hour: int = Field(default=10, ge=1)
    preview_cache_size: int = Field(default=256, ge=0)  # keyword sets kept ranked
    render_processes: int = Field(default=1, ge=0, le=32)  # 0: threads in the server process

    @field_validator("secret_keys", "retired_keys", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        return [p.strip() for p in v.split(",") if p.strip()] if isinstance(v, str) else v


class WebhooksConfig(_Section):
    """Each provider's own proof that a bounce/complaint notice came from it, checked in
    addition to the per-provider token in the URL. A provider left unconfigured here
    refuses every notice (except SES, whose proof is Amazon's certificate)."""

    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    tolerance_seconds: int = Field(default=300, ge=1)  # signed timestamps older are stale
    sendgrid_public_key: str | None = None  # the "verification key" (base64 DER or PEM)
    mailgun_signing_key: str | None = None  # "HTTP webhook signing key"
    postmark_username: str | None = None  # basic auth set in the webhook URL at Postmark
    postmark_password: str | None = None
    resend_secret: str | None = None  # "whsec_..." signing secret
    ses_topic_arns: list[str] = Field(default_factory=list)  # empty: any topic

    @field_validator("ses_topic_arns", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        return [p.strip() for p in v.split(",") if p.strip()] if isinstance(v, str) else v


Backend = Literal["smtp", "outbox", "console", "sendgrid", "mailgun", "postmark", "ses", "resend"]


class TransportConfig(_Section):
    backend: Backend = "outbox"
    rate_per_second: float = 0.0  # 0 = unlimited
    rate_per_hour: float = 0.0
    concurrency: int = Field(default=4, ge=1, le=256)
    max_attempts: int = Field(default=5, ge=1, le=50)
    backoff_seconds: float = Field(default=1.0, ge=0)
    # Accept addresses with a non-ASCII local part (only deliverable via SMTPUTF8).
    utf8_addresses: bool = False


class SmtpConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=25, ge=1, le=65535)
    security: Literal["none", "starttls", "tls"] = "none"
    username: str | None = None
    password: str | None = None
    connections: int = Field(default=4, ge=1, le=256)
    messages_per_connection: int = Field(default=100, ge=1)
    timeout: float = Field(default=30.0, gt=0)
    ca_file: str | None = None  # extra CA bundle to trust (a private relay's certificate)


class OutboxConfig(_Section):
    path: str = "outbox"


class ApiConfig(_Section):
    """Settings shared by the HTTP email-API backends (one provider at a time)."""

    api_key: str | None = None
    base_url: str | None = None  # override the provider's endpoint (tests, EU regions)
    domain: str | None = None  # Mailgun
    region: str = "us-east-1"  # SES
    secret_key: str | None = None  # SES
    timeout: float = Field(default=30.0, gt=0)


class QueueConfig(_Section):
    broker_url: str = "redis://127.0.0.1:6379/0"  # or amqp://guest:guest@127.0.0.1:5672//
    # The broker queue the sender fills and the workers consume: two deployments (or two
    # test runs) sharing one broker keep apart by naming their own.
    queue_name: str = Field(default="newsletter", min_length=1, max_length=200)


class LogConfig(_Section):
    """How long-running commands (``run``, ``worker``, ``web``, ``send``) log to stderr."""

    format: Literal["text", "json"] = "text"  # json: one object per line, for collectors
    level: Literal["debug", "info", "warning", "error"] = "info"
    include_address: bool = False  # subscriber addresses in log lines (ids always)


class MetricsConfig(_Section):
    """Prometheus metrics: ``/metrics`` on ``newsletter web``, and a port of their own
    for ``newsletter run`` and ``newsletter worker``."""

    token: str | None = None  # web: require "Authorization: Bearer <token>"
    localhost_only: bool = True  # web, without a token: answer only 127.0.0.1 / ::1
    port: int = Field(default=0, ge=0, le=65535)  # run/worker; 0 = no metrics server
    host: str = "127.0.0.1"  # run/worker metrics server address
    heartbeat_seconds: float = Field(default=15.0, gt=0)  # run/worker heartbeat period


class SourceConfig(_Section):
    name: str
    kind: Literal["auto", "dailypapers", "arxiv", "feed", "json", "jsonfeed", "pagedump"] = "auto"
    url: str | None = None
    path: str | None = None


class RankingConfig(_Section):
    max_papers: int = Field(default=10, ge=1, le=100)
    min_relevance: float = Field(default=1.0, ge=0)
    weight_relevance: float = 1.0
    weight_popularity: float = 0.15
    weight_recency: float = 0.1
    trending: Literal["none", "section"] = "section"
    trending_count: int = Field(default=3, ge=0, le=20)
    acronyms: str | None = None  # a TSV file replacing the bundled acronym table
    # Field vocabulary: "-medical" also knows chest X-ray, radiology, patients...
    related_terms: str | None = None  # a TSV file replacing the bundled related-terms table
    expand_related: bool = True  # use the related-terms table at all
    related_weight: float = Field(default=0.5, ge=0, le=1)  # a topic's related terms' share
    exclude_related_min: float = Field(default=4.0, gt=0)  # related evidence to exclude
    # Votes ("more / less like this") add learned weights on top of the written profile.
    feedback_up: float = Field(default=0.2, ge=0, le=10)  # Rocchio weight of liked papers
    feedback_down: float = Field(default=0.1, ge=0, le=10)  # ... and of disliked ones
    feedback_terms: int = Field(default=6, ge=1, le=50)  # terms taken from a voted paper
    feedback_max_weight: float = Field(default=1.0, gt=0, le=10)  # bound per learned term
    feedback_min_weight: float = Field(default=0.05, ge=0)  # weaker learned terms are dropped
    # Learned relevance moves a paper by at most this share of its written relevance.
    feedback_share: float = Field(default=0.1, ge=0, le=1)
    feedback_half_life_days: float = Field(default=90.0, gt=0)  # a vote's weight halves


class RenderConfig(_Section):
    templates: str | None = None  # a directory; unset = the bundled templates
    dkim_selector: str | None = None
    dkim_domain: str | None = None
    dkim_private_key: str | None = None  # path to a PEM file
    # Thumbnails: "none" (the email loads nothing when opened) or "remote" (an <img> per
    # paper with an arXiv id, from image_url; {arxiv_id} and {id} are filled in).
    images: Literal["none", "remote"] = "none"
    image_url: str = "https://cdn-thumbnails.huggingface.co/social-thumbnails/papers/{arxiv_id}.png"


class ScheduleConfig(_Section):
    ingest_cron: str = "0 5 * * *"
    timezone: str = "UTC"
    # How far back a slot run looks for a previous local day's missed send times (an
    # outage across a subscriber's midnight); 0 keeps every run to the current local day.
    catch_up_hours: int = Field(default=24, ge=0, le=48)

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
    max_failures_per_user: int = Field(default=5, ge=1)
    max_failures_per_client: int = Field(default=20, ge=1)
    lockout_minutes: float = Field(default=15.0, gt=0)
    page_size: int = Field(default=50, ge=1, le=1000)
    # The largest CSV the console's import accepts (bigger files: `subscribers import`).
    max_upload_bytes: int = Field(default=20_000_000, ge=1024)


class Settings(_Section):
    database: DatabaseConfig = DatabaseConfig()
    sender: SenderConfig = SenderConfig()
    web: WebConfig = WebConfig()
    webhooks: WebhooksConfig = WebhooksConfig()
    transport: TransportConfig = TransportConfig()
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
    sources: list[SourceConfig] = Field(default_factory=list)
    source_file: str | None = None  # where the file layer came from, for messages

    def replace(self, **sections: Mapping[str, Any]) -> Settings:
        """A copy with some keys changed, validated like everything else."""
        data = self.model_dump()
        for section, values in sections.items():
            data[section] = {**data.get(section, {}), **values}
        return _validate(data, "override")


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
    elif explicit:
        raise ConfigError(f"{cfg_path}: config file not found")
    names: dict[tuple[str, str], str] = {}
    env = _env_layer(environ, names)
    if env:
        where = f"{where} + environment"
    return _validate(_merge(data, env), where, names)
