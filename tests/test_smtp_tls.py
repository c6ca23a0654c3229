"""SMTP security against aiosmtpd: STARTTLS with AUTH, implicit TLS, refused logins,
and an untrusted certificate."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from newsletter.errors import SendingStopped
from newsletter.store.db import session_scope
from newsletter.store.models import Delivery

from .conftest import free_port
from .editions_support import run_send

# Every test a whole send over TLS (~1.5 s each): the slow tier.
pytestmark = pytest.mark.slow

DAY = dt.date(2025, 12, 26)


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(
            ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    d = tmp_path_factory.mktemp("tls")
    (d / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                  serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return d / "cert.pem", d / "key.pem"


class Store:
    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.messages: list[tuple[str, bool, str]] = []  # rcpt, tls, login

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # type: ignore[no-untyped-def]
        session.host_name = hostname  # offered as real relays do: pipelined over TLS
        responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        data = session.auth_data if session.authenticated else None
        login = data.decode() if isinstance(data, bytes) else str(data)
        tls = session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None
        self.messages.append((envelope.rcpt_tos[0], tls, login))
        return "250 OK"


AUTH_TRIES: list[str] = []  # each AUTH the test servers were asked, by mechanism


def authenticator(server, session, envelope, mechanism, auth_data):  # type: ignore[no-untyped-def]
    from aiosmtpd.smtp import AuthResult, LoginPassword

    AUTH_TRIES.append(mechanism)

    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        b"mailer", b"s3cret")
    # handled=False: let aiosmtpd answer a refusal with its 535 (the default stays silent)
    return AuthResult(success=ok, handled=False, auth_data=auth_data.login if ok else None)


@pytest.fixture
def tls_server(cert: tuple[Path, Path], request: pytest.FixtureRequest) -> Iterator[
        tuple[int, Store]]:
    from aiosmtpd.controller import Controller

    mode = request.param
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    store = Store(mode)
    port = free_port()
    kwargs: dict[str, Any] = {"authenticator": authenticator}
    if mode == "starttls":  # AUTH only after STARTTLS
        kwargs.update(tls_context=ctx, require_starttls=True, auth_require_tls=True)
    else:  # the whole connection is TLS (aiosmtpd cannot tell, so it must not require it)
        kwargs.update(ssl_context=ctx, auth_require_tls=False)
    controller = Controller(store, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    yield port, store
    controller.stop()


@pytest.mark.parametrize("tls_server", ["starttls", "tls"], indirect=True)
def test_tls_and_auth(world, tls_server: tuple[int, Store], cert: tuple[Path, Path]) -> None:  # type: ignore[no-untyped-def]
    settings, engine = world
    port, store = tls_server
    cfg = settings.replace(
        transport={"backend": "smtp", "max_attempts": 2, "backoff_seconds": 0.01},
        smtp={"host": "127.0.0.1", "port": port, "security": store.mode,
              "username": "mailer", "password": "s3cret", "ca_file": str(cert[0]),
              "timeout": 3.0})
    summary = run_send(cfg, engine, DAY)
    assert summary.report.counts["sent"] == 8, summary.report.errors
    assert all(tls and login == "mailer" for _, tls, login in store.messages), store.messages


@pytest.mark.parametrize("tls_server", ["starttls"], indirect=True)
def test_wrong_password_fails_without_sending(world, tls_server: tuple[int, Store],  # type: ignore[no-untyped-def]
                                              cert: tuple[Path, Path]) -> None:
    settings, engine = world
    port, store = tls_server
    cfg = settings.replace(
        transport={"backend": "smtp", "max_attempts": 3, "backoff_seconds": 0.01},
        smtp={"host": "127.0.0.1", "port": port, "security": "starttls", "username": "mailer",
              "password": "wrong", "ca_file": str(cert[0]), "timeout": 5.0})
    with pytest.raises(SendingStopped, match="login refused"):  # ours: stopped, once
        run_send(cfg, engine, DAY)
    assert store.messages == [] and ledger_states(engine) == {"pending"}
    fixed = cfg.replace(smtp={"password": "s3cret"})  # the rerun after the fix sends all
    assert run_send(fixed, engine, DAY).report.counts == {"sent": 8}
    assert len(store.messages) == 8


@pytest.mark.parametrize("tls_server", ["starttls"], indirect=True)
def test_untrusted_certificate_is_refused(world, tls_server: tuple[int, Store]) -> None:  # type: ignore[no-untyped-def]
    settings, engine = world
    port, store = tls_server
    cfg = settings.replace(
        transport={"backend": "smtp", "max_attempts": 2, "backoff_seconds": 0.01},
        smtp={"host": "127.0.0.1", "port": port, "security": "starttls", "username": "mailer",
              "password": "s3cret", "timeout": 3.0})
    with pytest.raises(SendingStopped, match="certificate"):
        run_send(cfg, engine, DAY)
    assert store.messages == [] and ledger_states(engine) == {"pending"}


def ledger_states(engine) -> set[str]:  # type: ignore[no-untyped-def]
    with session_scope(engine) as s:
        return set(s.scalars(select(Delivery.status)))


@pytest.mark.parametrize("tls_server", ["starttls"], indirect=True)
def test_wrong_password_stops_every_process(world, tls_server: tuple[int, Store],  # type: ignore[no-untyped-def]
                                            cert: tuple[Path, Path]) -> None:
    """``[transport] processes = 2``: the refused login stops both processes, one
    error for the run, every row pending; the rerun after the fix sends each once."""
    from newsletter.store import subscribers
    from newsletter.transports import make_transport

    settings, engine = world
    port, store = tls_server
    with session_scope(engine) as s:
        for i in range(200):  # enough rows for a second process (a claim is 64)
            subscribers.add(s, f"many{i}@example.org", keywords="attention, diffusion")
    cfg = settings.replace(
        transport={"backend": "smtp", "max_attempts": 3, "backoff_seconds": 0.01,
                   "concurrency": 1, "processes": 2},
        smtp={"host": "127.0.0.1", "port": port, "security": "starttls", "username": "mailer",
              "password": "wrong", "ca_file": str(cert[0]), "timeout": 5.0})
    with pytest.raises(SendingStopped, match="login refused") as stopped:
        run_send(cfg, engine, DAY, make_transport=lambda: make_transport(cfg))
    assert "\n" not in str(stopped.value) and "sent 0 before stopping" in str(stopped.value)
    assert store.messages == [] and ledger_states(engine) == {"pending"}
    fixed = cfg.replace(smtp={"password": "s3cret"})
    summary = run_send(fixed, engine, DAY, make_transport=lambda: make_transport(fixed))
    assert summary.report.counts == {"sent": 208}, summary.report.errors
    assert len({rcpt for rcpt, _, _ in store.messages}) == len(store.messages) == 208


@pytest.mark.parametrize("tls_server", ["starttls"], indirect=True)
def test_send_with_two_processes_and_a_wrong_password_says_one_line(  # type: ignore[no-untyped-def]
        world, tls_server: tuple[int, Store], cert: tuple[Path, Path], tmp_path: Path) -> None:
    """`newsletter send --processes 2`: one `error:` line, exit 1, every row pending."""
    import subprocess
    import sys

    from newsletter.store import subscribers

    from .test_delivery_day import cli_env

    settings, engine = world
    port, store = tls_server
    with session_scope(engine) as s:
        for i in range(200):
            subscribers.add(s, f"many{i}@example.org", keywords="attention, diffusion")
    env = cli_env(settings.database.url, NEWSLETTER_TRANSPORT__BACKEND="smtp",
                  NEWSLETTER_TRANSPORT__CONCURRENCY="1", NEWSLETTER_SMTP__HOST="127.0.0.1",
                  NEWSLETTER_SMTP__PORT=str(port), NEWSLETTER_SMTP__SECURITY="starttls",
                  NEWSLETTER_SMTP__USERNAME="mailer", NEWSLETTER_SMTP__PASSWORD="wrong",
                  NEWSLETTER_SMTP__CA_FILE=str(cert[0]))
    done = subprocess.run([sys.executable, "-m", "newsletter", "send", "--yes", "--force",
                           "--date", DAY.isoformat(), "--processes", "2"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "login refused" in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    assert store.messages == [] and ledger_states(engine) == {"pending"}


@pytest.mark.slow  # a real broker (Redis) and a process start
@pytest.mark.parametrize("tls_server", ["starttls"], indirect=True)
def test_send_queue_with_a_wrong_password_says_one_line_and_queues_nothing(  # type: ignore[no-untyped-def]
        world, tls_server: tuple[int, Store], cert: tuple[Path, Path], tmp_path: Path) -> None:
    """`send --queue` proves the login the workers will use before it plans: one
    `error:` line and exit 1 at once, nothing planned or queued for workers to fail on."""
    import subprocess
    import sys

    from .conftest import need_service
    from .test_delivery_day import cli_env
    from .test_scale import reachable

    if not reachable(6379):
        need_service("redis", "nothing listens on 127.0.0.1:6379")
    settings, engine = world
    port, store = tls_server
    env = cli_env(settings.database.url, NEWSLETTER_TRANSPORT__BACKEND="smtp",
                  NEWSLETTER_SMTP__HOST="127.0.0.1", NEWSLETTER_SMTP__PORT=str(port),
                  NEWSLETTER_SMTP__SECURITY="starttls", NEWSLETTER_SMTP__USERNAME="mailer",
                  NEWSLETTER_SMTP__PASSWORD="wrong", NEWSLETTER_SMTP__CA_FILE=str(cert[0]),
                  NEWSLETTER_QUEUE__BROKER_URL="redis://127.0.0.1:6379/14",
                  NEWSLETTER_QUEUE__QUEUE_NAME=f"nl-test-{tmp_path.name}")
    done = subprocess.run([sys.executable, "-m", "newsletter", "send", "--queue", "--yes",
                           "--force", "--date", DAY.isoformat(), "--wait", "30"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "login refused" in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    assert store.messages == [] and ledger_states(engine) == set()  # nothing planned


@pytest.mark.parametrize("tls_server", ["starttls"], indirect=True)
def test_check_logs_in_once_as_send_does(tls_server: tuple[int, Store],  # type: ignore[no-untyped-def]
                                         cert: tuple[Path, Path]) -> None:
    """`newsletter check` with a wrong password: one refused AUTH, as `send` makes. It
    used aiosmtplib's login, which tries each mechanism offered in turn (PLAIN, then
    LOGIN): two refusals a check, which relays count toward a lockout."""
    from newsletter.config import ApiConfig, SmtpConfig
    from newsletter.delivery.check import check_transport

    port, _ = tls_server
    AUTH_TRIES.clear()
    item = check_transport("smtp", SmtpConfig(
        host="127.0.0.1", port=port, security="starttls", username="mailer",
        password="wrong", ca_file=str(cert[0]), timeout=5.0), ApiConfig())
    assert not item.ok and "login refused" in item.detail, item
    assert len(AUTH_TRIES) == 1, AUTH_TRIES
    AUTH_TRIES.clear()
    good = check_transport("smtp", SmtpConfig(
        host="127.0.0.1", port=port, security="starttls", username="mailer",
        password="s3cret", ca_file=str(cert[0]), timeout=5.0), ApiConfig())
    assert good.ok and "AUTH" in good.detail and len(AUTH_TRIES) == 1, (good, AUTH_TRIES)
