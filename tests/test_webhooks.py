"""Bounce/complaint webhooks: each provider's own scheme, signed for real in the test
(keys and an SNS certificate generated here; nothing fetched from outside), against
a real uvicorn. Forged, stale, replayed and malformed notices change nobody."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import select

from newsletter.store.db import session_scope
from newsletter.store.models import Event
from newsletter.web.webhooks.base import Rejected, WebhookRequest
from newsletter.web.webhooks.mailgun import Mailgun

from .conftest import HttpServer, Route
from .web_support import Site, running_site

EC_KEY = ec.generate_private_key(ec.SECP256R1())
EC_PUBLIC = base64.b64encode(EC_KEY.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
MAILGUN_KEY = "key-mailgun-signing-0123456789"
SVIX_SECRET = "whsec_" + base64.b64encode(b"resend-secret-bytes-0123456789ab").decode()
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _cert(key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30)).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


CERT_PEM = _cert(RSA_KEY)
CERT_URL = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-test.pem"


def configured(settings: Any) -> Any:
    """Every provider configured with the keys made above."""
    return settings.replace(webhooks={
        "sendgrid_public_key": EC_PUBLIC, "mailgun_signing_key": MAILGUN_KEY,
        "postmark_username": "pm-user", "postmark_password": "pm-pass é",
        "resend_secret": SVIX_SECRET})


@contextmanager
def hooked_site(settings: Any, engine: Any, http_server: HttpServer) -> Iterator[Site]:
    """The site with every provider configured, and a fetcher that answers Amazon's
    URLs from the local HTTP server (what the real one would fetch over https)."""
    http_server.add("/SimpleNotificationService-test.pem", Route(body=CERT_PEM))
    http_server.add("/confirm", Route(body=b"<ConfirmSubscriptionResponse/>"))

    async def fetcher(url: str) -> bytes:
        assert url.startswith("https://sns.us-east-1.amazonaws.com/"), url
        local = http_server.url + "/" + url.split("/", 3)[3]
        async with httpx.AsyncClient() as client:
            r = await client.get(local)
            r.raise_for_status()
            return r.content

    with running_site(configured(settings), engine, fetcher=fetcher) as site:
        site.http = http_server  # type: ignore[attr-defined]
        yield site


@pytest.fixture
def hooks(world, http_server: HttpServer) -> Iterator[Site]:  # type: ignore[no-untyped-def]
    settings, engine = world
    with hooked_site(settings, engine, http_server) as site:
        yield site


# ---- signing the way each provider documents it --------------------------------------

def sendgrid(body: bytes, ts: int | None = None, key: Any = EC_KEY) -> dict[str, str]:
    stamp = str(int(time.time()) if ts is None else ts)
    sig = key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {"X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(sig).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": stamp, "Content-Type": "application/json"}


def mailgun(event: dict[str, Any], ts: int | None = None, token: str | None = None,
            key: str = MAILGUN_KEY) -> bytes:
    stamp, token = str(int(time.time()) if ts is None else ts), token or uuid.uuid4().hex
    sig = hmac.new(key.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    return json.dumps({"signature": {"timestamp": stamp, "token": token, "signature": sig},
                       "event-data": event}).encode()


def svix(body: bytes, msg_id: str | None = None, ts: int | None = None,
         secret: str = SVIX_SECRET) -> dict[str, str]:
    msg_id, stamp = msg_id or f"msg_{uuid.uuid4().hex}", str(int(time.time()) if ts is None
                                                             else ts)
    key = base64.b64decode(secret.removeprefix("whsec_"))
    sig = base64.b64encode(hmac.new(key, f"{msg_id}.{stamp}.".encode() + body,
                                    hashlib.sha256).digest()).decode()
    return {"svix-id": msg_id, "svix-timestamp": stamp, "svix-signature": f"v1,{sig}",
            "Content-Type": "application/json"}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def sns(kind: str, message: str, *, version: str = "2", key: Any = RSA_KEY,
        cert_url: str = CERT_URL, when: dt.datetime | None = None, **extra: str) -> bytes:
    msg = {"Type": kind, "MessageId": str(uuid.uuid4()), "Message": message,
           "TopicArn": "arn:aws:sns:us-east-1:123456789012:ses-bounces",
           "Timestamp": (when or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
           "SignatureVersion": version, "SigningCertURL": cert_url, **extra}
    keys = (["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
            if kind == "Notification" else
            ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"])
    canonical = "".join(f"{k}\n{msg[k]}\n" for k in keys if k in msg).encode()
    algorithm = hashes.SHA256() if version == "2" else hashes.SHA1()
    msg["Signature"] = base64.b64encode(key.sign(canonical, padding.PKCS1v15(),
                                                 algorithm)).decode()
    return json.dumps(msg).encode()


SES_BOUNCE = json.dumps({"notificationType": "Bounce", "bounce": {
    "bounceType": "Permanent", "bouncedRecipients": [{"emailAddress": "ada@example.org"}]}})


# ---- the tests --------------------------------------------------------------------

def test_sendgrid_signed_event_webhook(hooks: Site) -> None:
    url = hooks.hook("sendgrid")
    body = json.dumps([{"email": "ada@example.org", "event": "bounce", "type": "bounce"},
                       {"email": "grace@example.org", "event": "spamreport"},
                       {"email": "alan@example.org", "event": "delivered"}]).encode()
    forged = ec.generate_private_key(ec.SECP256R1())
    assert httpx.post(url, content=body, headers=sendgrid(body, key=forged)).status_code == 401
    assert httpx.post(url, content=body, headers={"Content-Type": "application/json"}
                      ).status_code == 401
    assert httpx.post(url, content=body, headers=sendgrid(body, ts=int(time.time()) - 3600)
                      ).status_code == 401
    tampered = body.replace(b"spamreport", b"delivered")
    assert httpx.post(url, content=tampered, headers=sendgrid(body)).status_code == 401
    assert hooks.status("ada@example.org") == "active"
    headers = sendgrid(body)
    r = httpx.post(url, content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert (hooks.status("ada@example.org"), hooks.status("grace@example.org"),
            hooks.status("alan@example.org")) == ("bounced", "complained", "active")
    assert httpx.post(url, content=body, headers=headers).status_code == 401  # replayed
    with session_scope(hooks.engine) as s:  # each change says who made it
        who = {e.kind: e.detail["by"] for e in s.scalars(
            select(Event).where(Event.kind.in_(["bounced", "complained"])))}
    assert who == {"bounced": "webhook:sendgrid", "complained": "webhook:sendgrid"}


def test_mailgun_hmac_stale_and_replayed(hooks: Site) -> None:
    url = hooks.hook("mailgun")
    event = {"event": "failed", "severity": "permanent", "recipient": "ada@example.org"}
    assert httpx.post(url, content=mailgun(event, key="wrong")).status_code == 401
    assert httpx.post(url, content=mailgun(event, ts=int(time.time()) - 900)).status_code == 401
    unsigned = json.dumps({"event-data": event}).encode()
    assert httpx.post(url, content=unsigned).status_code == 401
    assert hooks.status("ada@example.org") == "active"
    good = mailgun(event)
    assert httpx.post(url, content=good).status_code == 200
    assert hooks.status("ada@example.org") == "bounced"
    assert httpx.post(url, content=good).status_code == 401  # the same token again


def test_postmark_basic_auth(hooks: Site) -> None:
    url = hooks.hook("postmark")
    body = {"RecordType": "SpamComplaint", "Email": "Ada@Example.org"}
    assert httpx.post(url, json=body).status_code == 401
    assert httpx.post(url, json=body, headers=basic("pm-user", "nope")).status_code == 401
    assert httpx.post(url, json=body, headers={"Authorization": "Basic ###"}).status_code == 401
    assert hooks.status("ada@example.org") == "active"
    soft = {"RecordType": "Bounce", "Type": "SoftBounce", "Email": "grace@example.org"}
    assert httpx.post(url, json=soft, headers=basic("pm-user", "pm-pass é")).status_code == 200
    assert hooks.status("grace@example.org") == "active"
    assert httpx.post(url, json=body, headers=basic("pm-user", "pm-pass é")).status_code == 200
    assert hooks.status("ada@example.org") == "complained"


def test_resend_svix_signature(hooks: Site) -> None:
    url = hooks.hook("resend")
    body = json.dumps({"type": "email.bounced", "data": {"to": ["ada@example.org"]}}).encode()
    assert httpx.post(url, content=body, headers=svix(body, secret="whsec_" + base64.b64encode(
        b"another-secret-entirely-32bytes!").decode())).status_code == 401
    assert httpx.post(url, content=body, headers=svix(body, ts=int(time.time()) - 3600)
                      ).status_code == 401
    assert hooks.status("ada@example.org") == "active"
    headers = svix(body)
    assert httpx.post(url, content=body, headers=headers).status_code == 200
    assert hooks.status("ada@example.org") == "bounced"
    assert httpx.post(url, content=body, headers=headers).status_code == 401  # same svix-id


@pytest.mark.slow  # ~2 s: SNS certificates and signatures
def test_ses_through_sns_confirmation_and_notifications(hooks: Site) -> None:
    url = hooks.hook("ses")
    http: HttpServer = hooks.http  # type: ignore[attr-defined]
    subscribe = "https://sns.us-east-1.amazonaws.com/confirm?Action=ConfirmSubscription&T=1"
    # A confirmation with a bad signature is not followed.
    forged_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    bad = sns("SubscriptionConfirmation", "You have chosen to subscribe", key=forged_key,
              SubscribeURL=subscribe, Token="tok")
    assert httpx.post(url, content=bad).status_code == 401
    assert not [r for r in http.requests if str(r["path"]).startswith("/confirm")]
    # A certificate from anywhere but sns.<region>.amazonaws.com over https is refused.
    for cert_url in ("http://sns.us-east-1.amazonaws.com/c.pem",
                     "https://sns.us-east-1.amazonaws.com.evil.example/c.pem",
                     "https://evil.example/sns.us-east-1.amazonaws.com/c.pem"):
        assert httpx.post(url, content=sns("Notification", SES_BOUNCE, cert_url=cert_url)
                          ).status_code == 401
    ok = sns("SubscriptionConfirmation", "You have chosen to subscribe",
             SubscribeURL=subscribe, Token="tok")
    assert httpx.post(url, content=ok).status_code == 200
    assert [r for r in http.requests if str(r["path"]).startswith("/confirm")]
    # Notifications, both signature versions; the certificate is fetched once (cached).
    complaint = json.dumps({"notificationType": "Complaint", "complaint": {
        "complainedRecipients": [{"emailAddress": "grace@example.org"}]}})
    assert httpx.post(url, content=sns("Notification", SES_BOUNCE, version="1")
                      ).status_code == 200
    assert httpx.post(url, content=sns("Notification", complaint, Subject="x")
                      ).status_code == 200
    assert (hooks.status("ada@example.org"), hooks.status("grace@example.org")) == (
        "bounced", "complained")
    fetched = [r for r in http.requests if str(r["path"]).endswith(".pem")]
    assert len(fetched) == 1
    stale = sns("Notification", SES_BOUNCE, when=dt.datetime.now(dt.UTC) - dt.timedelta(hours=2))
    assert httpx.post(url, content=stale).status_code == 401
    replay = sns("Notification", complaint)
    assert httpx.post(url, content=replay).status_code == 200
    assert httpx.post(url, content=replay).status_code == 401


@pytest.mark.slow  # ~3 s: 2 MB and deeply nested bodies
def test_tokens_per_provider_rotation_and_caps(hooks: Site, cli) -> None:  # type: ignore[no-untyped-def]
    body = {"RecordType": "SpamComplaint", "Email": "ada@example.org"}
    auth = basic("pm-user", "pm-pass é")
    url = hooks.hook("postmark")
    # Another provider's token, a forged one, a non-ASCII one: 404 and nobody changes.
    for bad in (hooks.hook("mailgun").replace("/mailgun/", "/postmark/"),
                url[:-4] + "AAAA", url + "é", hooks.url + "/webhooks/nosuch/x" * 1):
        assert httpx.post(bad, json=body, headers=auth).status_code == 404, bad
    # Malformed payloads are 400, never 500.
    for payload in (b"{not json", b'{"RecordType": 5, "Email": "a@b.c"}',
                    b'{"RecordType": "Bounce", "Type": ["HardBounce"], "Email": "x@y.z"}',
                    b"[" * 100_000 + b"]" * 100_000, b'"just a string"', b"[1, 2]"):
        r = httpx.post(url, content=payload, headers=auth)
        assert r.status_code == 400, (payload[:40], r.status_code, r.text)
    big = b'{"x": "' + b"a" * 2_000_000 + b'"}'
    assert httpx.post(url, content=big, headers=auth).status_code == 413
    assert hooks.status("ada@example.org") == "active"
    # `webhooks rotate`: the old URL stops working, the new one works.
    from newsletter.store.db import session_scope
    from newsletter.web.webhooks import rotate_token

    with session_scope(hooks.engine) as s:
        rotate_token(s, "postmark")
    assert httpx.post(url, json=body, headers=auth).status_code == 404
    assert httpx.post(hooks.hook("postmark"), json=body, headers=auth).status_code == 200


def test_unconfigured_provider_refuses(world) -> None:  # type: ignore[no-untyped-def]
    settings, engine = world
    with running_site(settings, engine) as site:
        body = {"RecordType": "SpamComplaint", "Email": "ada@example.org"}
        assert httpx.post(site.hook("postmark"), json=body).status_code == 403
        assert site.status("ada@example.org") == "active"


def test_webhooks_urls_command(cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {"NEWSLETTER_DATABASE__URL": f"sqlite:///{tmp_path}/w.db",
           "NEWSLETTER_WEB__BASE_URL": "https://digest.example.org"}
    first = cli("webhooks", "urls", "--json", env=env)
    assert first.code == 0, first.stderr
    urls = json.loads(first.stdout)
    assert set(urls) == {"sendgrid", "mailgun", "postmark", "resend", "ses", "generic"}
    tokens = {u.rsplit("/", 1)[1] for u in urls.values()}
    assert len(tokens) == 6 and all(u.startswith("https://digest.example.org/webhooks/")
                                    for u in urls.values())
    assert json.loads(cli("webhooks", "urls", "--json", env=env).stdout) == urls
    rotated = cli("webhooks", "rotate", "mailgun", env=env)
    assert rotated.code == 0 and rotated.stdout.strip() != urls["mailgun"]
    after = json.loads(cli("webhooks", "urls", "--json", env=env).stdout)
    assert after["mailgun"] == rotated.stdout.strip() and after["ses"] == urls["ses"]
    assert cli("webhooks", "rotate", "nosuch", env=env).code != 0


PAYLOAD_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["event-data", "event", "severity", "recipient", "x"]), inner,
        max_size=4), max_leaves=20)


@hsettings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(PAYLOAD_VALUES)
def test_any_signed_json_is_accepted_or_refused_cleanly(value: Any) -> None:
    """Whatever JSON a correctly signed Mailgun notice carries, the verifier answers
    with notices or a Rejected(400): never another exception (which would be a 500)."""
    import asyncio

    from newsletter.config import WebhooksConfig

    async def fetch(url: str) -> bytes:
        raise AssertionError(url)

    verifier = Mailgun(WebhooksConfig(mailgun_signing_key=MAILGUN_KEY), fetcher=fetch)
    body = json.loads(mailgun({}))
    body["event-data"] = value
    try:
        notices = asyncio.run(verifier.accept(WebhookRequest({}, json.dumps(body).encode())))
    except Rejected as exc:
        assert exc.status == 400
    else:
        assert all(isinstance(a, str) and k in ("bounce", "complaint") for a, k in notices)


# ---- replays (issue N7): known by event id in the database -------------------------------

def bounce_count(site: Site, address: str) -> int:
    from sqlalchemy import select

    from newsletter.store.db import session_scope
    from newsletter.store.models import Subscriber

    with session_scope(site.engine) as s:
        return int(s.scalar(select(Subscriber.bounce_count)
                            .where(Subscriber.email == address)) or 0)


def test_sendgrid_signature_rewritten_as_high_s_is_still_a_replay(hooks: Site) -> None:
    from cryptography.hazmat.primitives.asymmetric.utils import (
        decode_dss_signature,
        encode_dss_signature,
    )

    n = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551  # P-256 order
    url = hooks.hook("sendgrid")
    body = json.dumps([{"email": "ada@example.org", "event": "bounce", "type": "bounce",
                        "sg_event_id": "ev1"}]).encode()
    headers = sendgrid(body)
    assert httpx.post(url, content=body, headers=headers).status_code == 200
    assert bounce_count(hooks, "ada@example.org") == 1
    r, s = decode_dss_signature(base64.b64decode(headers[
        "X-Twilio-Email-Event-Webhook-Signature"]))
    other = base64.b64encode(encode_dss_signature(r, n - s)).decode()
    EC_KEY.public_key().verify(base64.b64decode(other), headers[
        "X-Twilio-Email-Event-Webhook-Timestamp"].encode() + body, ec.ECDSA(hashes.SHA256()))
    again = httpx.post(url, content=body,
                       headers=headers | {"X-Twilio-Email-Event-Webhook-Signature": other})
    assert again.status_code == 401 and "replayed" in again.text
    assert bounce_count(hooks, "ada@example.org") == 1


def test_a_replay_after_a_restart_is_refused(world, http_server: HttpServer) -> None:  # type: ignore[no-untyped-def]
    settings, engine = world
    body = json.dumps({"type": "email.bounced", "data": {"to": ["ada@example.org"]}}).encode()
    headers = svix(body)
    pm = json.dumps({"RecordType": "Bounce", "Type": "HardBounce", "ID": 42,
                     "Email": "grace@example.org"}).encode()
    auth = basic("pm-user", "pm-pass é") | {"Content-Type": "application/json"}
    with hooked_site(settings, engine, http_server) as site:
        assert httpx.post(site.hook("resend"), content=body, headers=headers
                          ).status_code == 200
        assert httpx.post(site.hook("postmark"), content=pm, headers=auth).status_code == 200
    with hooked_site(settings, engine, http_server) as site:  # a new server process state
        assert httpx.post(site.hook("resend"), content=body, headers=headers
                          ).status_code == 401
        assert httpx.post(site.hook("postmark"), content=pm, headers=auth).status_code == 401
        assert bounce_count(site, "ada@example.org") == 1
        assert bounce_count(site, "grace@example.org") == 1


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def test_copies_arriving_at_once_change_subscribers_once(
        backend: str, tmp_path: Any, http_server: HttpServer,
        request: pytest.FixtureRequest) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from .web_support import world_on

    url = (f"sqlite:///{tmp_path / 'once.db'}" if backend == "sqlite"
           else str(request.getfixturevalue("pg_url")))
    settings, engine = world_on(url, tmp_path)
    with hooked_site(settings, engine, http_server) as site:
        good = mailgun({"event": "failed", "severity": "permanent",
                        "recipient": "ada@example.org"})
        with ThreadPoolExecutor(8) as pool:
            codes = sorted(pool.map(lambda _: httpx.post(site.hook("mailgun"), content=good,
                                                         timeout=60).status_code, range(8)))
        assert codes == [200] + [401] * 7
        assert bounce_count(site, "ada@example.org") == 1
        site.wait_background(60)  # the server's start-up work, before the database goes
    engine.dispose()


def test_non_finite_and_odd_timestamps_are_refused(hooks: Site) -> None:
    event = {"event": "failed", "severity": "permanent", "recipient": "ada@example.org"}
    body = json.dumps({"type": "email.bounced", "data": {"to": ["ada@example.org"]}}).encode()
    sg_body = json.dumps([{"email": "ada@example.org", "event": "bounce"}]).encode()
    now = str(int(time.time()))
    for stamp in ("nan", "NaN", "inf", "-inf", "1e9", f"{now}e0", f" {now}", "-1",
                  f"{now}.5.5", "0x10", "١٧٠٠٠٠٠٠٠٠"):
        token = uuid.uuid4().hex
        sig = hmac.new(MAILGUN_KEY.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
        signed = json.dumps({"signature": {"timestamp": stamp, "token": token, "signature": sig},
                             "event-data": event}).encode()
        assert httpx.post(hooks.hook("mailgun"), content=signed).status_code in (400, 401), stamp
        if stamp != stamp.strip() or not stamp.isascii():
            continue  # not sendable as a header value at all
        headers = svix(body) | {"svix-timestamp": stamp}
        key = base64.b64decode(SVIX_SECRET.removeprefix("whsec_"))
        mac = hmac.new(key, f"{headers['svix-id']}.{stamp}.".encode() + body, hashlib.sha256)
        headers["svix-signature"] = "v1," + base64.b64encode(mac.digest()).decode()
        assert httpx.post(hooks.hook("resend"), content=body, headers=headers
                          ).status_code in (400, 401), stamp
        sg = sendgrid(sg_body) | {"X-Twilio-Email-Event-Webhook-Timestamp": stamp}
        sg["X-Twilio-Email-Event-Webhook-Signature"] = base64.b64encode(EC_KEY.sign(
            stamp.encode() + sg_body, ec.ECDSA(hashes.SHA256()))).decode()
        assert httpx.post(hooks.hook("sendgrid"), content=sg_body, headers=sg
                          ).status_code in (400, 401), stamp
    assert hooks.status("ada@example.org") == "active"
    # A fractional timestamp is a number of seconds too.
    token = uuid.uuid4().hex
    stamp = f"{time.time():.3f}"
    sig = hmac.new(MAILGUN_KEY.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    ok = json.dumps({"signature": {"timestamp": stamp, "token": token, "signature": sig},
                     "event-data": event}).encode()
    assert httpx.post(hooks.hook("mailgun"), content=ok).status_code == 200


def test_sns_certificates_only_from_amazon_shaped_urls_cached_and_rationed(
        hooks: Site) -> None:
    url = hooks.hook("ses")
    http: HttpServer = hooks.http  # type: ignore[attr-defined]

    def pem_fetches() -> list[str]:
        return [str(r["path"]) for r in http.requests if str(r["path"]).endswith(".pem")
                or "pem" in str(r["path"])]

    forged_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    # Not a certificate's address on an SNS host: never fetched.
    for cert_url in ("https://sns.us-east-1.amazonaws.com/evil.pem",
                     "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-a.pem?x=1",
                     "https://sns.us-east-1.amazonaws.com/a/SimpleNotificationService-a.pem",
                     "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-a.pem.exe",
                     "https://sns.evil.amazonaws.com/SimpleNotificationService-a.pem",
                     "https://sns.us-east-1.amazonaws.com:8443/SimpleNotificationService-a.pem"):
        forged = sns("Notification", SES_BOUNCE, key=forged_key, cert_url=cert_url)
        assert httpx.post(url, content=forged).status_code == 401, cert_url
    assert pem_fetches() == []
    # Forged notices naming many certificate-shaped URLs: a few fetches, not one each,
    # and a URL that failed is not fetched again.
    names = [f"https://sns.us-east-1.amazonaws.com/SimpleNotificationService-f{i}.pem"
             for i in range(5)]
    for name in names + names:
        forged = sns("Notification", SES_BOUNCE, key=forged_key, cert_url=name)
        assert httpx.post(url, content=forged).status_code in (401, 503)
    assert 1 <= len(pem_fetches()) <= 3
    assert hooks.status("ada@example.org") == "active"
