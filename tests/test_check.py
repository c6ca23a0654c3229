"""`newsletter check` on real setups: a relay on this machine, the SPF advice, and
`check --dns` against a real DNS server (Knot, authoritative for digest.test on
127.0.0.1) and a real https server with the session CA's certificate."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from newsletter.config import SmtpConfig
from newsletter.delivery.check import check_transport, loopback, spf_mechanism
from newsletter.delivery.published import make_resolver
from newsletter.errors import InputError

from .conftest import ROOT
from .real_servers import DnsServer, HttpsServer


def test_loopback_and_spf_advice() -> None:
    assert all(loopback(h) for h in ("127.0.0.1", "127.3.4.5", "::1", "[::1]", "localhost"))
    assert not any(loopback(h) for h in ("192.0.2.1", "10.0.0.1", "mail.example.net", ""))
    local = "ip4:<the public address your relay sends from>"
    for host in ("127.0.0.1", "::1", "localhost", "10.1.2.3", "192.168.0.2"):
        assert spf_mechanism("smtp", SmtpConfig(host=host)) == local, host
    assert spf_mechanism("smtp", SmtpConfig(host="8.8.4.4")) == "ip4:8.8.4.4"
    assert spf_mechanism("smtp", SmtpConfig(host="2001:4860::1")) == "ip6:2001:4860::1"
    assert spf_mechanism("smtp", SmtpConfig(host="smtp.relay.net")).startswith("a:smtp.relay.net")
    assert spf_mechanism("postmark", SmtpConfig()) == "include:spf.mtasv.net"


def test_plain_text_relay_elsewhere_is_refused_without_a_probe() -> None:
    """192.0.2.1 (TEST-NET-1) without TLS: ✗ at once, no connection made."""
    from newsletter.config import ApiConfig

    item = check_transport("smtp", SmtpConfig(host="192.0.2.1", port=25, security="none"),
                           ApiConfig())
    assert not item.ok and "plain text" in item.detail and "starttls" in item.fix


def test_nameserver_option_is_checked(cli) -> None:  # type: ignore[no-untyped-def]
    """--nameserver takes an address: the docs, --help and the error say so (they said
    HOST[:PORT], and `--nameserver ns1.example.net` was refused as "not an IP address
    (HOST or HOST:PORT)")."""
    assert make_resolver("127.0.0.1:5300").port == 5300
    assert make_resolver("[::1]:53").nameservers == ["::1"]
    with pytest.raises(InputError) as refused:
        make_resolver("ns.example.net")
    assert str(refused.value) == ("--nameserver ns.example.net: not an IP address (give "
                                  "the name server's address: ADDRESS[:PORT], or "
                                  "[IPV6]:PORT)")
    shown = "ADDRESS[:PORT]"
    assert f"--nameserver {shown}" in " ".join(cli("check", "--help").stdout.split())
    doc = " ".join((ROOT / "docs" / "operations.md").read_text(encoding="utf-8").split())
    assert f"`--nameserver {shown}`" in doc and "--nameserver HOST" not in doc


# ---- check --dns against Knot and an https server -------------------------------------


@pytest.fixture
def dkim_key(tmp_path: Path) -> Path:
    key = tmp_path / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True,
                   capture_output=True)
    return key


def _env(dns_server: DnsServer, https_server: HttpsServer, key: Path) -> dict[str, str]:
    return {"NEWSLETTER_SENDER__FROM_ADDRESS": "digest@digest.test",
            "NEWSLETTER_RENDER__DKIM_SELECTOR": "s1",
            "NEWSLETTER_RENDER__DKIM_DOMAIN": "digest.test",
            "NEWSLETTER_RENDER__DKIM_PRIVATE_KEY": str(key),
            "NEWSLETTER_TRANSPORT__BACKEND": "postmark",
            "NEWSLETTER_WEB__BASE_URL": https_server.url + "/",
            "SSL_CERT_FILE": str(https_server.ca_file)}


def _items(cli, env: dict[str, str], dns_server: DnsServer) -> dict[str, dict]:  # type: ignore[no-untyped-def, type-arg]
    r = cli("check", "--dns", "--json", "--nameserver",
            f"{dns_server.host}:{dns_server.port}", env=env)
    return {i["key"]: i for i in json.loads(r.stdout)["items"]}


@pytest.mark.slow
def test_check_dns_missing_records_say_what_to_publish(  # type: ignore[no-untyped-def]
        cli, dns_server: DnsServer, https_server: HttpsServer, dkim_key: Path) -> None:
    items = _items(cli, _env(dns_server, https_server, dkim_key), dns_server)
    for key in ("spf", "dmarc", "dkim.dns"):
        assert key not in items  # replaced by the looked-up items
    spf, dkim, dmarc = items["dns.spf"], items["dns.dkim"], items["dns.dmarc"]
    assert not spf["ok"] and spf["fix"] == ('publish digest.test TXT '
                                             '"v=spf1 include:spf.mtasv.net ~all"')
    assert not dkim["ok"] and dkim["fix"].startswith(
        'publish s1._domainkey.digest.test TXT "v=DKIM1; k=rsa; p=')
    assert not dmarc["ok"] and dmarc["fix"].startswith('publish _dmarc.digest.test TXT '
                                                        '"v=DMARC1; p=none')
    web = items["web.https"]  # nothing answers at / yet: 404
    assert not web["ok"] and "404" in web["detail"]


@pytest.mark.slow
def test_check_dns_published_records_pass(  # type: ignore[no-untyped-def]
        cli, dns_server: DnsServer, https_server: HttpsServer, dkim_key: Path) -> None:
    env = _env(dns_server, https_server, dkim_key)
    first = _items(cli, env, dns_server)
    # Publish exactly what check asked for.
    records = [(name, "TXT", value) for name, value in (
        (item["fix"].split()[1], item["fix"].split(" TXT ", 1)[1].strip('"'))
        for item in (first["dns.spf"], first["dns.dkim"], first["dns.dmarc"]))]
    dns_server.set_records([(n + ".", t, v) for n, t, v in records])
    https_server.add("/", b"<title>digest</title>")
    items = _items(cli, env, dns_server)
    for key in ("dns.spf", "dns.dkim", "dns.dmarc", "web.https"):
        assert items[key]["ok"] and items[key]["status"] == "ok", items[key]
    assert "names include:spf.mtasv.net" in items["dns.spf"]["detail"]
    assert "200 over https" in items["web.https"]["detail"]
    assert https_server.requests[-1]["path"] == "/"
    # A record that says something else is a ✗ again.
    other = dkim_key.parent / "other.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(other), "2048"], check=True,
                   capture_output=True)
    dns_server.set_records([("digest.test.", "TXT", "v=spf1 ip4:192.0.2.7 -all"),
                            ("digest.test.", "TXT", "v=spf1 include:spf.mtasv.net ~all"),
                            ("_dmarc.digest.test.", "TXT", "v=DMARC1; p=maybe"),
                            records[1]])
    items = _items(cli, env | {"NEWSLETTER_RENDER__DKIM_PRIVATE_KEY": str(other)}, dns_server)
    assert not items["dns.spf"]["ok"] and "2 SPF records" in items["dns.spf"]["detail"]
    assert not items["dns.dkim"]["ok"] and "another key" in items["dns.dkim"]["detail"]
    assert not items["dns.dmarc"]["ok"] and "no valid p=" in items["dns.dmarc"]["detail"]
    # A certificate the client cannot verify is a ✗ (the CA bundle is the system's).
    plain = {k: v for k, v in env.items() if k != "SSL_CERT_FILE"}
    items = _items(cli, plain, dns_server)
    assert not items["web.https"]["ok"] and "CERTIFICATE_VERIFY_FAILED" in \
        items["web.https"]["detail"]
