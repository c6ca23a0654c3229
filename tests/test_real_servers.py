"""The real-server fixtures (tests/real_servers.py) do what later tests rely on: Postfix
takes mail over STARTTLS + AUTH and delivers it to Maildirs, bounces an unknown user with
a delivery-status report, greylists on request; Dovecot serves the mail over IMAP and
POP3 with verified TLS; Knot answers the records a test sets; smtp-sink takes mail; the
https server verifies against the session CA."""

from __future__ import annotations

import asyncio
import imaplib
import poplib
import smtplib
import ssl
import time
import urllib.error
import urllib.request
from email.message import EmailMessage

import aiosmtplib
import pytest

from bench.c_sink import CSink
from tests.real_servers import DnsServer, Dovecot, HttpsServer, Postfix

pytestmark = pytest.mark.slow


def message(to: str, subject: str, sender: str = "digest@digest.test") -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg["Message-ID"] = f"<{subject.replace(' ', '-')}@digest.test>"
    msg.set_content(f"body of {subject}\n")
    return msg


def test_submission_with_starttls_and_auth_delivers_to_the_maildir(postfix: Postfix) -> None:
    async def send() -> None:
        client = aiosmtplib.SMTP(hostname=postfix.host, port=postfix.submission_port,
                                 tls_context=postfix.ssl_context(), start_tls=False)
        async with client:
            assert "auth" not in client.esmtp_extensions  # only after STARTTLS
            await client.starttls()
            await client.ehlo()
            assert {"plain", "login"} <= set(client.server_auth_methods)
            await client.login(postfix.smtp_user, postfix.smtp_password)
            await client.send_message(message("ada@digest.test", "first edition"),
                                      sender="bounces+d1@digest.test")

    asyncio.run(send())
    [got] = postfix.wait_for("ada")
    assert got["Subject"] == "first edition"
    assert got["Return-Path"] == "<bounces+d1@digest.test>"
    assert "with ESMTPSA" in str(got["Received"])  # authenticated, over TLS
    assert postfix.messages("bob") == []


def test_submission_refuses_a_wrong_password_and_unauthenticated_mail(postfix: Postfix) -> None:
    with smtplib.SMTP(postfix.host, postfix.submission_port, timeout=10) as client:
        client.starttls(context=postfix.ssl_context())
        with pytest.raises(smtplib.SMTPAuthenticationError) as err:
            client.login(postfix.smtp_user, "wrong")
        assert err.value.smtp_code == 535
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail("digest@digest.test", ["ada@digest.test"], b"Subject: x\r\n\r\nx\r\n")
    with smtplib.SMTP(postfix.host, postfix.submission_port, timeout=10) as client:
        code, _ = client.mail("digest@digest.test")
        assert code == 530  # STARTTLS first


def test_an_unknown_user_is_accepted_then_bounced_with_a_dsn(postfix: Postfix) -> None:
    with smtplib.SMTP(postfix.host, postfix.smtp_port, timeout=10) as client:
        client.starttls(context=postfix.ssl_context())
        refused = client.send_message(message("nobody-here@digest.test", "to a dead address"),
                                      from_addr="bounces+d2@digest.test")
    assert refused == {}  # accepted at RCPT, as a relay does
    [dsn] = postfix.wait_for("bounces")
    assert dsn["To"] == "bounces+d2@digest.test"
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    status = next(p for p in dsn.walk() if p.get_content_type() == "message/delivery-status")
    text = status.as_string()
    assert "Final-Recipient: rfc822; nobody-here@digest.test" in text
    assert "Status: 5.1.1" in text and "Action: failed" in text
    original = next(p for p in dsn.walk() if p.get_content_type() in
                    ("message/rfc822", "text/rfc822-headers"))
    assert "<to-a-dead-address@digest.test>" in original.as_string()


def test_mail_for_other_domains_never_leaves_the_machine(postfix: Postfix) -> None:
    with smtplib.SMTP(postfix.host, postfix.smtp_port, timeout=10) as client:
        client.send_message(message("someone@example.org", "outside"),
                            from_addr="bounces@digest.test")
    [dsn] = postfix.wait_for("bounces")
    assert "someone@example.org" in dsn.as_string()
    assert "delivers only to digest.test" in dsn.as_string()


def test_greylisting_answers_450_then_accepts_after_the_window(postfix: Postfix) -> None:
    postfix.greylist("bob@digest.test", seconds=2)
    codes = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with smtplib.SMTP(postfix.host, postfix.smtp_port, timeout=10) as client:
            client.mail("bounces@digest.test")
            code, reply = client.rcpt("bob@digest.test")
            codes.append(code)
            if code == 250:
                client.data(message("bob@digest.test", "greylisted").as_bytes())
                break
            assert code == 450 and b"4.7.1" in reply
            assert client.rcpt("ada@digest.test")[0] == 250  # only the listed recipient
        time.sleep(0.5)
    assert codes[0] == 450 and codes[-1] == 250 and len(codes) >= 3
    assert postfix.wait_for("bob")[0]["Subject"] == "greylisted"
    postfix.flush()  # an empty queue flushes at once
    assert postfix.queued() == 0


def deliver(postfix: Postfix, to: str, subject: str) -> None:
    with smtplib.SMTP(postfix.host, postfix.smtp_port, timeout=10) as client:
        client.send_message(message(to, subject))
    postfix.wait_for(to)


def test_imap_reads_the_bounce_mailbox_over_starttls_and_implicit_tls(
        postfix: Postfix, dovecot: Dovecot) -> None:
    deliver(postfix, "bounces@digest.test", "for imap")
    with imaplib.IMAP4(dovecot.host, dovecot.imap_port, timeout=10) as imap:
        imap.starttls(ssl_context=dovecot.ssl_context())
        imap.login(dovecot.user, dovecot.password)
        imap.select("INBOX")
        _, found = imap.search(None, "ALL")
        [num] = found[0].split()
        _, data = imap.fetch(num, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert isinstance(data[0], tuple) and b"Subject: for imap" in data[0][1]
    with imaplib.IMAP4_SSL(dovecot.host, dovecot.imaps_port, ssl_context=dovecot.ssl_context(),
                           timeout=10) as imap:
        with pytest.raises(imaplib.IMAP4.error):
            imap.login(dovecot.user, "wrong")
        imap.login(dovecot.user, dovecot.password)
        assert imap.select("INBOX", readonly=True)[1] == [b"1"]


def test_pop3_reads_the_bounce_mailbox_over_stls_and_implicit_tls(
        postfix: Postfix, dovecot: Dovecot) -> None:
    deliver(postfix, "bounces@digest.test", "for pop3")
    pop = poplib.POP3(dovecot.host, dovecot.pop3_port, timeout=10)
    try:
        pop.stls(context=dovecot.ssl_context())
        pop.user(dovecot.user)
        pop.pass_(dovecot.password)
        assert pop.stat()[0] == 1
        assert b"Subject: for pop3" in b"\n".join(pop.retr(1)[1])
    finally:
        pop.quit()
    pops = poplib.POP3_SSL(dovecot.host, dovecot.pop3s_port, context=dovecot.ssl_context(),
                           timeout=10)
    try:
        pops.user(dovecot.user)
        pops.pass_(dovecot.password)
        assert pops.stat()[0] == 1
    finally:
        pops.quit()
    untrusted = ssl.create_default_context()  # the system's CAs do not know the test CA
    with pytest.raises(ssl.SSLCertVerificationError):
        poplib.POP3_SSL(dovecot.host, dovecot.pop3s_port, context=untrusted, timeout=10)


def test_dns_serves_the_records_a_test_sets_over_udp_and_tcp(dns_server: DnsServer) -> None:
    import dns.message
    import dns.query
    import dns.resolver

    dkim = "v=DKIM1; k=rsa; p=" + "A" * 392  # longer than one 255-byte string
    dns_server.set_records([("@", "TXT", "v=spf1 ip4:127.0.0.1 -all"),
                            ("s1._domainkey", "TXT", dkim),
                            ("_dmarc.digest.test.", "TXT", "v=DMARC1; p=reject")])
    resolver = dns_server.resolver()

    def txt(name: str, tcp: bool = False) -> list[str]:
        answer = resolver.resolve(name, "TXT", tcp=tcp)
        return [b"".join(r.strings).decode() for r in answer]

    assert txt("digest.test") == ["v=spf1 ip4:127.0.0.1 -all"]
    assert txt("s1._domainkey.digest.test", tcp=True) == [dkim]
    assert txt("_dmarc.digest.test") == ["v=DMARC1; p=reject"]
    dns_server.set_records([("_dmarc", "TXT", "v=DMARC1; p=none")])
    assert txt("_dmarc.digest.test") == ["v=DMARC1; p=none"]
    with pytest.raises(dns.resolver.NXDOMAIN):
        txt("s1._domainkey.digest.test")
    reply = dns.query.tcp(dns.message.make_query("mx.digest.test", "A"), dns_server.host,
                          port=dns_server.port, timeout=5)
    assert reply.answer[0][0].address == "127.0.0.1"
    assert reply.flags & dns.flags.AA  # authoritative


def test_the_c_smtp_sink_accepts_and_counts(smtp_sink_c: CSink) -> None:
    with smtplib.SMTP(smtp_sink_c.host, smtp_sink_c.port, timeout=10) as client:
        for n in range(3):
            client.send_message(message(f"r{n}@example.org", f"sink {n}"))
    deadline = time.monotonic() + 5
    while smtp_sink_c.received() < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert smtp_sink_c.received() == 3


def test_https_server_answers_with_a_certificate_from_the_session_ca(
        https_server: HttpsServer) -> None:
    url = https_server.add("/", b"<h1>digest</h1>")
    with urllib.request.urlopen(url, context=https_server.ssl_context(), timeout=10) as resp:
        assert resp.status == 200 and resp.read() == b"<h1>digest</h1>"
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(https_server.url + "/missing", context=https_server.ssl_context(),
                               timeout=10)
    assert err.value.code == 404
    with pytest.raises(urllib.error.URLError) as bad:
        urllib.request.urlopen(url, context=ssl.create_default_context(), timeout=10)
    assert isinstance(bad.value.reason, ssl.SSLCertVerificationError)
    assert [r["path"] for r in https_server.requests] == ["/", "/missing"]
