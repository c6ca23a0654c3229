"""Email-API transports against real HTTP servers on 127.0.0.1: a recording server that
checks each provider's request shape, and moto's SES v2 server (code we did not write)."""

from __future__ import annotations

import base64
import datetime as dt
import email
import email.policy
import json
from typing import Any

import pytest
from sqlalchemy import select

from newsletter.config import Settings
from newsletter.errors import ConfigError
from newsletter.store.db import session_scope
from newsletter.store.models import Delivery, Subscriber
from newsletter.transports import make_transport

from .conftest import HttpServer, Route, free_port
from .editions_support import run_send

# Every test a whole send through a provider's API on a local server (~1.3 s each, a
# client timeout among them): the slow tier.
pytestmark = pytest.mark.slow

DAY = dt.date(2025, 12, 26)
N = 8  # sample subscribers


def api_settings(settings: Settings, server: HttpServer, backend: str, **api: Any) -> Settings:
    return settings.replace(
        transport={"backend": backend, "concurrency": 16, "max_attempts": 4,
                   "backoff_seconds": 0.01},
        api={"api_key": "key-123", "base_url": server.url, "domain": "mg.example.org",
             "secret_key": "secret", "timeout": 1.0, **api})


def posted(server: HttpServer) -> list[dict[str, Any]]:
    return [r for r in server.requests if r["method"] == "POST"]


def body_json(request: dict[str, Any]) -> Any:
    return json.loads(request["body"])


OK_SENDGRID = Route(202, b"", {"X-Message-Id": "sg-1"})


def test_sendgrid(world, http_server: HttpServer) -> None:  # type: ignore[no-untyped-def]
    settings, engine = world
    http_server.add("/v3/mail/send", OK_SENDGRID)
    summary = run_send(api_settings(settings, http_server, "sendgrid"), engine, DAY)
    assert summary.report.counts["sent"] == N
    reqs = posted(http_server)
    assert len(reqs) == N
    first = reqs[0]
    assert first["headers"]["Authorization"] == "Bearer key-123"
    payload = body_json(first)
    assert payload["personalizations"][0]["to"][0]["email"].endswith("@example.org")
    assert payload["from"] == {"email": "digest@example.org", "name": "Research Digest"}
    assert [c["type"] for c in payload["content"]] == ["text/plain", "text/html"]
    assert payload["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert payload["headers"]["List-Unsubscribe"].startswith("<https://digest.example.org/")
    with session_scope(engine) as s:
        assert {d.message_id for d in s.scalars(select(Delivery))} == {"sg-1"}


def test_mailgun(world, http_server: HttpServer) -> None:  # type: ignore[no-untyped-def]
    settings, engine = world
    http_server.add("/v3/mg.example.org/messages",
                    Route(200, b'{"id": "<mg-1@mg.example.org>", "message": "Queued."}'))
    summary = run_send(api_settings(settings, http_server, "mailgun"), engine, DAY)
    assert summary.report.counts["sent"] == N
    req = posted(http_server)[0]
    expected = "Basic " + base64.b64encode(b"api:key-123").decode()
    assert req["headers"]["Authorization"] == expected
    from urllib.parse import parse_qs

    form = parse_qs(req["body"].decode())
    assert form["from"] == ["Research Digest <digest@example.org>"]
    assert form["h:List-Unsubscribe-Post"] == ["List-Unsubscribe=One-Click"]
    assert form["html"][0].startswith("<!doctype html>") or "<html" in form["html"][0]


def test_postmark_uses_the_batch_endpoint(world, http_server: HttpServer) -> None:  # type: ignore[no-untyped-def]
    settings, engine = world
    answer = json.dumps([{"ErrorCode": 0, "MessageID": f"pm-{i}"} for i in range(N)]).encode()
    http_server.add("/email/batch", Route(200, answer))
    summary = run_send(api_settings(settings, http_server, "postmark"), engine, DAY)
    assert summary.report.counts["sent"] == N
    reqs = posted(http_server)
    assert all(r["path"] == "/email/batch" for r in reqs) and len(reqs) < N
    items = [m for r in reqs for m in body_json(r)]
    assert len(items) == N and items[0]["MessageStream"] == "broadcast"
    assert {"Name": "List-Unsubscribe-Post", "Value": "List-Unsubscribe=One-Click"} in \
        items[0]["Headers"]
    assert reqs[0]["headers"]["X-Postmark-Server-Token"] == "key-123"


def test_postmark_inactive_recipient_bounces_only_that_one(world, http_server: HttpServer) -> None:  # type: ignore[no-untyped-def]
    settings, engine = world

    def answer(n: int, bad: int) -> bytes:
        return json.dumps([{"ErrorCode": 406, "Message": "Inactive recipient"} if i == bad else
                           {"ErrorCode": 0, "MessageID": f"pm-{i}"} for i in range(n)]).encode()

    http_server.add("/email/batch", Route(200, answer(N, 2)))
    summary = run_send(api_settings(settings, http_server, "postmark"), engine, DAY)
    assert summary.report.counts == {"sent": N - 1, "failed": 1}
    with session_scope(engine) as s:
        bounced = list(s.scalars(select(Subscriber).where(Subscriber.status == "bounced")))
        assert len(bounced) == 1


def test_resend_batch_with_idempotency_key(world, http_server: HttpServer) -> None:  # type: ignore[no-untyped-def]
    settings, engine = world
    answer = json.dumps({"data": [{"id": f"rs-{i}"} for i in range(N)]}).encode()
    http_server.add("/emails/batch", Route(200, answer))
    http_server.add("/emails", Route(200, b'{"id": "rs-single"}'))
    summary = run_send(api_settings(settings, http_server, "resend"), engine, DAY)
    assert summary.report.counts["sent"] == N
    reqs = posted(http_server)
    assert len(reqs) < N
    assert all(len(r["headers"]["Idempotency-Key"]) == 48 for r in reqs)
    assert body_json(reqs[0])[0]["headers"]["List-Unsubscribe-Post"] == \
        "List-Unsubscribe=One-Click"


@pytest.mark.parametrize("first", [
    Route(429, b'{"errors": [{"message": "rate limited"}]}', {"Retry-After": "0"}),
    Route(500, b"oops"),
    Route(503, b"busy", {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}),
    Route(202, b"", {"X-Message-Id": "slow"}, delay=1.5),  # client timeout
])
def test_transient_api_errors_are_retried(world, http_server: HttpServer, first: Route) -> None:  # type: ignore[no-untyped-def]
    settings, engine = world
    http_server.add("/v3/mail/send", *([first] * 3 if first.delay else [first]), OK_SENDGRID)
    summary = run_send(api_settings(settings, http_server, "sendgrid"), engine, DAY)
    assert summary.report.counts["sent"] == N


def test_client_errors_keep_the_providers_message(world, http_server: HttpServer) -> None:  # type: ignore[no-untyped-def]
    settings, engine = world
    http_server.add("/v3/mail/send", Route(400, b'{"errors": [{"message": "The from address '
                                                b'does not match a verified Sender"}]}'))
    summary = run_send(api_settings(settings, http_server, "sendgrid"), engine, DAY)
    assert summary.report.counts == {"failed": N}
    assert len(posted(http_server)) == N  # permanent: not retried
    with session_scope(engine) as s:
        errors = {d.last_error for d in s.scalars(select(Delivery))}
    assert len(errors) == 1 and "does not match a verified Sender" in errors.pop()


def test_missing_api_settings_are_a_config_error(world) -> None:  # type: ignore[no-untyped-def]
    settings, _ = world
    with pytest.raises(ConfigError, match=r"\[api\] domain: required by the mailgun backend"):
        make_transport(settings.replace(transport={"backend": "mailgun"},
                                        api={"api_key": "k"}))


def test_ses_against_moto_and_botocore_signature(world, http_server: HttpServer) -> None:  # type: ignore[no-untyped-def]
    """Our SigV4 equals botocore's; moto's SES v2 server accepts and records the raw mail."""
    import boto3
    import botocore.auth
    import botocore.awsrequest
    import botocore.credentials
    from moto.server import ThreadedMotoServer

    from newsletter.transports.ses import sigv4

    now = dt.datetime(2025, 12, 26, 10, 0, tzinfo=dt.UTC)
    url, body = "http://127.0.0.1:1/v2/email/outbound-emails", b'{"x": 1}'
    ours = sigv4("POST", url, body, region="eu-west-1", access_key="AK", secret_key="SK",
                 now=now)
    req = botocore.awsrequest.AWSRequest(method="POST", url=url, data=body, headers={
        "Content-Type": "application/json",
        "X-Amz-Content-Sha256": ours["X-Amz-Content-Sha256"]})
    original = botocore.auth.get_current_datetime
    botocore.auth.get_current_datetime = lambda *a, **k: now.replace(tzinfo=None)
    try:
        botocore.auth.SigV4Auth(botocore.credentials.Credentials("AK", "SK"), "ses",
                                "eu-west-1").add_auth(req)
    finally:
        botocore.auth.get_current_datetime = original
    assert req.headers["Authorization"] == ours["Authorization"]

    settings, engine = world
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        creds = {"aws_access_key_id": "AKIDTEST", "aws_secret_access_key": "secret",
                 "region_name": "us-east-1", "endpoint_url": endpoint}
        boto3.client("sesv2", **creds).create_email_identity(EmailIdentity="example.org")
        cfg = settings.replace(
            transport={"backend": "ses", "concurrency": 4, "backoff_seconds": 0.01},
            api={"api_key": "AKIDTEST", "secret_key": "secret", "base_url": endpoint,
                 "region": "us-east-1"})
        summary = run_send(cfg, engine, DAY)
        assert summary.report.counts["sent"] == N, summary.report.errors
        from moto.ses.models import ses_backends

        backend = ses_backends["123456789012"]["us-east-1"]
        raw = [m.raw_data for m in backend.sent_messages]
        assert len(raw) == N
        assert len({m.destinations["ToAddresses"][0] if isinstance(m.destinations, dict)
                    else str(m.destinations) for m in backend.sent_messages}) == N
        msg = email.message_from_string(raw[0], policy=email.policy.strict)
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    finally:
        server.stop()
