"""Failures on the sender's side of SMTP, against Debian's Postfix: one
authentication attempt per connection, and the error says the fault is ours."""

from __future__ import annotations

import asyncio

import pytest

from newsletter.config import SmtpConfig
from newsletter.errors import TransportError
from newsletter.render.mime import Message
from newsletter.transports.smtp import SmtpTransport

pytestmark = pytest.mark.slow


def message(postfix) -> Message:  # type: ignore[no-untyped-def]
    to = f"ada@{postfix.domain}"
    data = (f"From: digest@{postfix.domain}\r\nTo: {to}\r\nSubject: hi\r\n"
            f"Message-ID: <x.1@{postfix.domain}>\r\n\r\nhello\r\n").encode()
    return Message(to=to, sender=f"digest@{postfix.domain}", message_id="<x.1@digest.test>",
                   data=data)


def send(cfg: SmtpConfig, msg: Message) -> str:
    async def go() -> str:
        transport = SmtpTransport(cfg)
        try:
            return await transport.send(msg)
        finally:
            await transport.close()
    return asyncio.run(go())


def config(postfix, **kw: object) -> SmtpConfig:  # type: ignore[no-untyped-def]
    base: dict[str, object] = {
        "host": "127.0.0.1", "port": postfix.submission_port, "security": "starttls",
        "username": postfix.smtp_user, "password": postfix.smtp_password,
        "ca_file": str(postfix.ca_file), "connections": 1, "timeout": 10}
    return SmtpConfig(**(base | kw))  # type: ignore[arg-type]


def test_a_wrong_password_is_one_refusal_and_ours(postfix) -> None:  # type: ignore[no-untyped-def]
    before = postfix.log().count("authentication failed")
    with pytest.raises(TransportError) as info:
        send(config(postfix, password="wrong"), message(postfix))
    assert info.value.sender and info.value.permanent and "535" in str(info.value)
    # Postfix logs each refused mechanism: PLAIN then LOGIN before, one attempt now.
    assert postfix.log().count("authentication failed") - before == 1, postfix.log()[-1500:]
    assert send(config(postfix), message(postfix)) == "<x.1@digest.test>"
    postfix.wait_for("ada", 1)


def test_a_certificate_from_another_ca_is_ours(postfix, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import certifi

    with pytest.raises(TransportError) as info:
        send(config(postfix, ca_file=certifi.where()), message(postfix))
    assert info.value.sender and "certificate" in str(info.value).lower()
