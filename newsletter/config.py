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

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

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


class WebConfig(_Section):
    base_url: str = "http://127.0.0.1:8000"
    secret_keys: list[str] = Field(default_factory=list)

    @field_validator("secret_keys", mode="before")
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


class SourceConfig(_Section):
    name: str
    kind: Literal["auto", "dailypapers", "arxiv", "feed", "json", "pagedump"] = "auto"
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
    feedback_half_life_days: float = Field(default=90.0, gt=0)  # a vote's weight halves


class RenderConfig(_Section):
    templates: str | None = None  # a directory; unset = the bundled templates
    dkim_selector: str | None = None
    dkim_domain: str | None = None
    dkim_private_key: str | None = None  # path to a PEM file


class ScheduleConfig(_Section):
    ingest_cron: str = "0 5 * * *"
    timezone: str = "UTC"


class Settings(_Section):
    database: DatabaseConfig = DatabaseConfig()
    sender: SenderConfig = SenderConfig()
    web: WebConfig = WebConfig()
    transport: TransportConfig = TransportConfig()
    smtp: SmtpConfig = SmtpConfig()
    outbox: OutboxConfig = OutboxConfig()
    api: ApiConfig = ApiConfig()
    ranking: RankingConfig = RankingConfig()
    render: RenderConfig = RenderConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    queue: QueueConfig = QueueConfig()
    sources: list[SourceConfig] = Field(default_factory=list)
    source_file: str | None = None  # where the file layer came from, for messages

    def replace(self, **sections: Mapping[str, Any]) -> Settings:
        """A copy with some keys changed, validated like everything else."""
        data = self.model_dump()
        for section, values in sections.items():
            data[section] = {**data.get(section, {}), **values}
        return _validate(data, "override")


def _env_layer(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
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
    return layer


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _validate(data: dict[str, Any], where: str) -> Settings:
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"]]
        if loc and loc[0] == "sources" and len(loc) > 1:
            key = f"[[sources]] #{int(loc[1]) + 1} {'.'.join(loc[2:])}".strip()
        elif len(loc) >= 2:
            key = f"[{loc[0]}] {'.'.join(loc[1:])}"
        else:
            key = ".".join(loc) or "(top level)"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
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
    env = _env_layer(environ)
    if env:
        where = f"{where} + environment"
    return _validate(_merge(data, env), where)
