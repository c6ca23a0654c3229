"""``newsletter check --dns``: what the world sees, compared with what is configured.

``newsletter check`` prints the SPF, DKIM and DMARC records to publish; this looks
each one up (dnspython, the system's resolver or ``--nameserver``) and says ✓ when
the published record does what the configuration needs, or ✗ with the record to
publish; and it fetches ``[web] base_url`` once over https with certificate
verification, as a mail client following an unsubscribe link would.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from newsletter.config import RenderConfig, SenderConfig, SmtpConfig, WebConfig
from newsletter.delivery.check import (
    FAIL,
    OK,
    Item,
    dkim_record,
    dmarc_record,
    spf_mechanism,
)
from newsletter.errors import InputError

if TYPE_CHECKING:
    import dns.resolver


class LookupFailed(Exception):
    """The resolver gave no answer either way (timeout, SERVFAIL)."""


def make_resolver(nameserver: str | None = None, timeout: float = 5.0
                  ) -> dns.resolver.Resolver:
    """The system's resolver, or only ``nameserver`` (``ADDRESS`` or ``ADDRESS:PORT``,
    ``[V6]:PORT``) when given. An address, not a name: the name would be looked up
    through the system's resolver, which is what --nameserver goes around."""
    import dns.resolver

    if not nameserver:
        resolver = dns.resolver.Resolver()
    else:
        host, port = nameserver, 53
        if nameserver.startswith("["):
            host, _, rest = nameserver[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") else 53
        elif nameserver.count(":") == 1:
            host, _, number = nameserver.partition(":")
            port = int(number) if number.isdigit() else -1
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise InputError(f"--nameserver {nameserver}: not an IP address (give the "
                             "name server's address: ADDRESS[:PORT], or [IPV6]:PORT)"
                             ) from None
        if not 0 < port < 65536:
            raise InputError(f"--nameserver {nameserver}: bad port")
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [host]
        resolver.port = port
    resolver.lifetime = timeout
    return resolver


def txt_records(resolver: dns.resolver.Resolver, name: str) -> list[str]:
    """The TXT strings at ``name`` (each record's strings joined); ``[]`` when the
    name or the record type does not exist."""
    import dns.exception
    import dns.resolver

    try:
        answer = resolver.resolve(name, "TXT", search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.DNSException as exc:
        raise LookupFailed(f"{name}: {exc.__class__.__name__}: {exc}") from None
    return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]


def _tags(record: str) -> dict[str, str]:
    tags = {}
    for part in record.split(";"):
        name, _, value = part.partition("=")
        if name.strip():
            tags[name.strip().lower()] = "".join(value.split())
    return tags


def _records(resolver: dns.resolver.Resolver, name: str, key: str,
             keep: Callable[[str], bool]) -> list[str] | Item:
    """The TXT records at ``name`` that ``keep`` accepts, or the failed item when the
    lookup itself failed (the check cannot say anything about the records then)."""
    try:
        return [t for t in txt_records(resolver, name) if keep(t)]
    except LookupFailed as exc:
        return Item(key, FAIL, f"could not look up {name}: {exc}",
                    "check the name server (--nameserver) and try again")


def check_spf(resolver: dns.resolver.Resolver, domain: str, backend: str,
              smtp: SmtpConfig) -> Item:
    mech = spf_mechanism(backend, smtp)
    wanted = mech.split(" ")[0]
    publish = f'publish {domain} TXT "v=spf1 {mech} ~all"'
    found = _records(resolver, domain, "dns.spf", lambda t: t.lower().startswith("v=spf1"))
    if isinstance(found, Item):
        return found
    if not found:
        return Item("dns.spf", FAIL, f"no SPF record at {domain}", publish)
    if len(found) > 1:
        return Item("dns.spf", FAIL, f"{len(found)} SPF records at {domain} (receivers "
                    "treat that as an error)", "merge them into one record")
    record = found[0]
    terms = [t.lower() for t in record.split()[1:]]
    if "+all" in terms or "all" in terms:
        return Item("dns.spf", FAIL, f'{domain}: "{record}" lets anyone send as you',
                    "end it with ~all or -all")
    if "<" in wanted:  # a relay whose public address the configuration cannot know
        return Item("dns.spf", OK, f'{domain}: "{record}"',
                    "make sure it names the public address your relay sends from")
    if wanted.lower() not in terms:
        return Item("dns.spf", FAIL, f'{domain}: "{record}" does not name {wanted}',
                    f"add {wanted} before the all term")
    return Item("dns.spf", OK, f'{domain}: "{record}" names {wanted}')


def check_dkim_dns(resolver: dns.resolver.Resolver, r: RenderConfig) -> Item | None:
    """The published key against ``[render] dkim_private_key`` (None: DKIM is off or
    its key does not load, which ``check`` already reports)."""
    if not (r.dkim_selector and r.dkim_domain and r.dkim_private_key):
        return None
    try:
        expected = dkim_record(Path(r.dkim_private_key).read_bytes())
    except (OSError, ValueError):
        return None
    name = f"{r.dkim_selector}._domainkey.{r.dkim_domain.rstrip('.')}"
    publish = f'publish {name} TXT "{expected}"'
    found = _records(resolver, name, "dns.dkim", lambda t: "p=" in t)
    if isinstance(found, Item):
        return found
    if not found:
        return Item("dns.dkim", FAIL, f"no DKIM key published at {name}", publish)
    want = _tags(expected)["p"]
    if any(_tags(t).get("p") == want for t in found):
        return Item("dns.dkim", OK, f"{name} publishes the key in [render] dkim_private_key")
    return Item("dns.dkim", FAIL, f"{name} publishes another key than [render] "
                "dkim_private_key (receivers will see broken signatures)", publish)


def check_dmarc(resolver: dns.resolver.Resolver, domain: str) -> Item:
    name = f"_dmarc.{domain}"
    publish = f'publish {name} TXT "{dmarc_record(domain)}"'
    found = _records(resolver, name, "dns.dmarc", lambda t: t.upper().startswith("V=DMARC1"))
    if isinstance(found, Item):
        return found
    if not found:
        return Item("dns.dmarc", FAIL, f"no DMARC record at {name}", publish)
    if len(found) > 1:
        return Item("dns.dmarc", FAIL, f"{len(found)} DMARC records at {name} (receivers "
                    "ignore them all)", "keep one")
    policy = _tags(found[0]).get("p", "")
    if policy not in ("none", "quarantine", "reject"):
        return Item("dns.dmarc", FAIL, f'{name}: "{found[0]}" has no valid p=', publish)
    return Item("dns.dmarc", OK, f'{name}: "{found[0]}" (policy {policy})')


def check_https(web: WebConfig, timeout: float = 10.0) -> Item:
    """One GET of ``[web] base_url``, the certificate verified (``SSL_CERT_FILE``
    names another CA bundle)."""
    import httpx

    url = web.base_url
    if not url.startswith("https://"):
        return Item("web.https", FAIL, f"{url} is not https: nothing fetched",
                    "set [web] base_url to the public https address")
    try:
        response = httpx.get(url, timeout=timeout, follow_redirects=False)
    except httpx.HTTPError as exc:
        return Item("web.https", FAIL, f"GET {url}: {str(exc) or type(exc).__name__}",
                    "put `newsletter web` behind a TLS proxy answering at [web] base_url")
    if response.status_code >= 400:
        return Item("web.https", FAIL, f"GET {url}: {response.status_code}",
                    "point the proxy at `newsletter web` (127.0.0.1:8000)")
    return Item("web.https", OK, f"GET {url}: {response.status_code} over https, "
                "certificate valid")


def published_items(*, web: WebConfig, sender: SenderConfig, render: RenderConfig,
                    backend: str, smtp: SmtpConfig, nameserver: str | None = None
                    ) -> list[Item]:
    """SPF, DKIM and DMARC as published for the From domain, and the public URL."""
    resolver = make_resolver(nameserver)
    domain = sender.from_address.rpartition("@")[2].strip().lower().rstrip(".")
    items = [check_spf(resolver, domain, backend, smtp)]
    dkim = check_dkim_dns(resolver, render)
    if dkim is not None:
        items.append(dkim)
    items += [check_dmarc(resolver, domain), check_https(web)]
    return items
