"""SMTP under real conditions: non-ASCII recipients (SMTPUTF8 or a clear failure of
that one delivery), a clean connection after any error mid-transaction, replies about
our own client state never failing anyone for good, and the aiosmtplib fast paths."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import aiosmtplib
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from newsletter.config import Settings
from newsletter.store.db import session_scope
from newsletter.store.models import Delivery, Subscriber
from newsletter.store.subscribers import add

from .conftest import ROOT, SmtpSink, free_port
from .editions_support import run_send

DAY = dt.date(2025, 12, 26)
UTF8 = "jösé@example.org"


def smtp_settings(settings: Settings, host: str, port: int) -> Settings:
    return settings.replace(
        transport={"backend": "smtp", "max_attempts": 4, "backoff_seconds": 0.01,
                   "utf8_addresses": True},
        smtp={"host": host, "port": port, "connections": 1, "timeout": 2.0})


def add_utf8_first(engine) -> None:  # type: ignore[no-untyped-def]
    """A non-ASCII recipient among the sample subscribers; with one connection every
    other message shares the connection it was tried on."""
    with session_scope(engine) as s:
        add(s, UTF8, keywords="attention", utf8_local_part=True)


@pytest.fixture
def ascii_sink() -> Iterator[SmtpSink]:
    """aiosmtpd that does not offer SMTPUTF8 (the conftest sink does)."""
    from aiosmtpd.controller import Controller

    sink = SmtpSink("127.0.0.1", free_port())

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            for rcpt in envelope.rcpt_tos:
                sink.messages.append((rcpt, envelope.content))
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=sink.port,
                            enable_SMTPUTF8=False)
    controller.start()
    yield sink
    controller.stop()


def test_non_ascii_recipient_without_smtputf8_fails_only_that_delivery(
        world, ascii_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    settings, engine = world
    add_utf8_first(engine)
    summary = run_send(smtp_settings(settings, ascii_sink.host, ascii_sink.port), engine, DAY)
    assert summary.report.counts["failed"] == 1, summary.report.errors
    assert "SMTPUTF8" in summary.report.errors[0] and UTF8 in summary.report.errors[0]
    with session_scope(engine) as s:
        rows = dict(s.execute(select(Subscriber.email, Delivery.status).join(Delivery)).all())
        errors = list(s.scalars(select(Delivery.last_error).where(Delivery.status == "failed")))
    assert rows.pop(UTF8) == "failed"
    assert set(rows.values()) == {"sent"}  # the next message on the connection went out
    assert not any("503" in e for e in errors)
    assert sorted(r for r, _ in ascii_sink.messages) == sorted(rows)


def test_non_ascii_recipient_with_smtputf8_is_delivered(world, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    settings, engine = world
    add_utf8_first(engine)
    summary = run_send(smtp_settings(settings, smtp_sink.host, smtp_sink.port), engine, DAY)
    assert summary.report.counts["failed"] == 0, summary.report.errors
    assert smtp_sink.count(UTF8) == 1


def test_non_ascii_recipient_first_on_a_new_connection(smtp_sink: SmtpSink) -> None:
    """The server's extensions are known before the first MAIL on a connection: aiosmtplib
    greets lazily, so an SMTPUTF8 check made before the first sendmail saw none."""
    import asyncio

    from newsletter.config import SmtpConfig
    from newsletter.render.mime import Message
    from newsletter.transports.smtp import SmtpTransport

    data = (f"From: digest@example.org\r\nTo: {UTF8}\r\nSubject: hi\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n").encode()

    async def go() -> str:
        transport = SmtpTransport(SmtpConfig(host=smtp_sink.host, port=smtp_sink.port,
                                             connections=1, timeout=2.0))
        try:
            return await transport.send(Message(UTF8, "digest@example.org", "<m@x>", data))
        finally:
            await transport.close()

    asyncio.run(go())
    assert smtp_sink.count(UTF8) == 1


def test_a_reply_about_our_own_state_is_retried_never_permanent(
        world, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    settings, engine = world
    smtp_sink.faults["ada@example.org"] = ["503 5.5.1 Error: nested MAIL command"]
    summary = run_send(smtp_settings(settings, smtp_sink.host, smtp_sink.port), engine, DAY)
    assert summary.report.counts["failed"] == 0, summary.report.errors
    assert smtp_sink.count("ada@example.org") == 1
    with session_scope(engine) as s:
        ada = s.scalar(select(Subscriber).where(Subscriber.email == "ada@example.org"))
        assert ada is not None and ada.status == "active"


def test_a_real_5xx_for_the_recipient_is_still_permanent(world, smtp_sink: SmtpSink) -> None:  # type: ignore[no-untyped-def]
    settings, engine = world
    smtp_sink.faults["ada@example.org"] = ["552 5.2.2 mailbox full"]
    summary = run_send(smtp_settings(settings, smtp_sink.host, smtp_sink.port), engine, DAY)
    assert summary.report.counts["failed"] == 1
    with session_scope(engine) as s:
        reason = s.scalar(select(Delivery.reason).where(Delivery.status == "failed"))
    assert reason == "permanent"
    assert smtp_sink.count("grace@example.org") == 1  # the connection was reset, not stuck


# ---- the aiosmtplib fast paths -----------------------------------------------------


def test_fast_paths_are_installed_only_on_the_tested_versions() -> None:
    from aiosmtplib import protocol as proto

    from newsletter.transports.smtp import FAST_PATH_VERSIONS, fast_paths_supported

    version = tuple(int(p) for p in aiosmtplib.__version__.split(".")[:2])
    low, high = FAST_PATH_VERSIONS
    assert fast_paths_supported() == (low <= version < high)
    assert bool(getattr(proto, "_newsletter_fast", False)) == fast_paths_supported()


lines = st.lists(st.text(alphabet=st.sampled_from(["a", ".", " ", "=", "\r", "\n", "é"]),
                         max_size=12), max_size=12)


@settings(max_examples=300, deadline=None)
@given(parts=lines, crlf=st.booleans())
def test_fast_paths_put_the_same_bytes_on_the_wire(parts: list[str], crlf: bool) -> None:
    from aiosmtplib import protocol as proto

    import newsletter.transports.smtp  # noqa: F401 - installs the fast paths

    if not getattr(proto, "_newsletter_fast", False):
        pytest.skip("fast paths not installed on this aiosmtplib version")
    original, period = proto._newsletter_originals
    data = ("\r\n" if crlf else "\n").join(parts).encode()
    assert proto.normalize_message_line_endings(data) == original(data)
    assert proto.PERIOD_REGEX.sub(b"..", data) == period.sub(b"..", data)



_atom = st.text(st.sampled_from("aZ09!#$%&'*+/=?^_`{|}~-"), min_size=1, max_size=4)


@settings(max_examples=500, deadline=None)
@given(local=st.lists(_atom, min_size=1, max_size=3),
       domain=st.lists(st.text(st.sampled_from("aZ09-"), min_size=1, max_size=4),
                       min_size=1, max_size=3),
       noise=st.text(st.sampled_from('.@<>" \r\n(),:;\\é[]'), max_size=2),
       at=st.integers(0, 30))
def test_a_plain_address_is_its_own_parse(local: list[str], domain: list[str], noise: str,
                                          at: int) -> None:
    """The transport's shortcut for plain addresses (``DOT_ATOM``, taken without
    parsing) answers as aiosmtplib's parser does: for every address of any atext
    characters, and for the same with a character that is not atext put in, which the
    shortcut must leave to the parser."""
    from aiosmtplib import email as library

    from newsletter.transports.smtp import DOT_ATOM

    plain = ".".join(local) + "@" + ".".join(domain)
    assert DOT_ATOM.fullmatch(plain)
    assert library.parse_address(plain) == plain
    spoilt = plain[:at] + noise + plain[at:]
    if DOT_ATOM.fullmatch(spoilt):
        assert library.parse_address(spoilt) == spoilt


@settings(max_examples=300, deadline=None)
@given(address=st.text(st.sampled_from('ab.@<>" \r\n(),:;\\é-+'), max_size=24))
def test_fast_address_parsing_answers_as_the_library(address: str) -> None:
    """The remembered parse gives aiosmtplib's answer, asked twice (the second from
    memory), and a refused address is refused every time."""
    from aiosmtplib import email as library
    from aiosmtplib import protocol as proto
    from aiosmtplib import smtp as smtp_mod

    import newsletter.transports.smtp  # noqa: F401 - installs the fast paths

    if not getattr(proto, "_newsletter_fast", False):
        pytest.skip("fast paths not installed on this aiosmtplib version")
    assert smtp_mod.parse_address is not library.parse_address
    for _ in range(2):
        try:
            expected = library.quote_address(address)
        except ValueError:
            with pytest.raises(ValueError):
                smtp_mod.parse_address(address)
            with pytest.raises(ValueError):
                smtp_mod.quote_address(address)
            continue
        assert smtp_mod.quote_address(address) == expected
        assert smtp_mod.parse_address(address) == library.parse_address(address)

# ---- the transports registry -------------------------------------------------------


def test_every_backend_is_registered_and_http_api_knows_no_provider() -> None:
    import ast
    import typing

    from newsletter.config import Backend, Settings
    from newsletter.transports import REGISTRY, transport_class
    from newsletter.transports.http_api import HttpApiTransport

    assert set(typing.get_args(Backend)) == set(REGISTRY)
    for backend in REGISTRY:
        cls = transport_class(backend)
        assert cls.name == backend
        assert cls.sends_mail == (backend not in ("outbox", "console"))
        if backend not in ("outbox", "console", "smtp"):
            assert issubclass(cls, HttpApiTransport)
        # each is built from its own section alone, one the config model has
        assert (cls.config_section is None) == (backend == "console")
        assert cls.config_section is None or cls.config_section in Settings.model_fields
    source = (ROOT / "newsletter" / "transports" / "http_api.py").read_text()
    imported = {n.module for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom)}
    assert not any(m and m.startswith("newsletter.transports.") and m.split(".")[-1] in REGISTRY
                   for m in imported)


REFUSED_SIZE = "552 5.3.4 Message size exceeds fixed maximum message size"


@pytest.mark.parametrize("again", ["send", "console"])
def test_a_digest_refused_for_its_size_is_sent_again_by_a_requeue_once_the_server_takes_it(
        world, smtp_sink: SmtpSink, again: str) -> None:  # type: ignore[no-untyped-def]
    """One reader's digest refused for its size once the server took the others: failed
    as ``refused_content`` (`status` says so), not ``permanent``, which neither a `send`
    of the day again nor the console's retry (``editions.retry_failed``, what its
    button runs) requeued, so after the operator raised the server's limit nothing
    could send it. Now both do, once."""
    from newsletter.delivery.edition import EditionConfig
    from newsletter.service.editions import Background, retry_failed, status
    from newsletter.transports import make_transport

    settings, engine = world
    settings = smtp_settings(settings, smtp_sink.host, smtp_sink.port).replace(
        sender={"from_address": "digest@papers-mail.net",  # the console's compliance gate
                "postal_address": "Papers Mail, 1 Quay Street, Dublin D02, Ireland"},
        web={"base_url": "https://digest.papers-mail.net"})
    smtp_sink.data_faults["ada@example.org"] = [REFUSED_SIZE] * 5
    first = run_send(settings, engine, DAY)
    assert first.report.counts["failed"] == 1 and first.report.counts["sent"] >= 1
    with session_scope(engine) as s:
        ada = s.scalar(select(Delivery).join(Subscriber)
                       .where(Subscriber.email == "ada@example.org"))
        assert ada is not None and (ada.status, ada.reason) == ("failed", "refused_content")
        assert s.scalar(select(Subscriber.status)
                        .where(Subscriber.email == "ada@example.org")) == "active"
    shown = status(engine)
    assert shown["failed_reasons"] == {"refused_content": 1}
    assert [(e["email"], e["reason"]) for e in shown["last_errors"]] == [
        ("ada@example.org", "refused_content")]

    smtp_sink.data_faults.clear()  # the server's size limit raised
    if again == "send":
        assert run_send(settings, engine, DAY).report.counts == {"sent": 1}
    else:
        background = Background()
        assert retry_failed(EditionConfig.of(settings), engine, shown["edition"],
                            lambda: make_transport(settings), background) == 1
        background.join(60)
    assert smtp_sink.count("ada@example.org") == 1
    assert all(smtp_sink.count(r) == 1 for r, _ in smtp_sink.messages)  # nobody twice
    assert status(engine)["failed_reasons"] == {}
