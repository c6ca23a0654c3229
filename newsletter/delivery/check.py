"""``newsletter check``: is this configuration fit to send real mail?

The built-in defaults are made for the demo (``outbox`` transport, ``http://127.0.0.1``
links, ``digest@localhost``), and they must never reach a real inbox: Gmail and
Yahoo want https one-click unsubscribe (RFC 8058), a From domain that DKIM-signs
its mail, SPF and DMARC, and the law wants a postal address. This module checks
each of those without sending anything: it reads the configuration, loads the
DKIM key, compiles the templates and, for SMTP, connects, says EHLO, starts TLS
and authenticates, then quits. The records to publish are printed as text to copy;
``check --dns`` (``delivery.published``) looks them up and fetches the public URL.

``send_blockers`` is the subset that makes mail non-compliant; ``send`` through a
real transport refuses to start while any is present (``--force`` overrides).
"""

from __future__ import annotations

import base64
import errno
import ipaddress
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

from newsletter.config import (
    ApiConfig,
    BouncesConfig,
    RenderConfig,
    SenderConfig,
    SmtpConfig,
    TransportConfig,
    WebConfig,
)
from newsletter.delivery.deliver import run_async
from newsletter.errors import InputError, NewsletterError

OK, FAIL, INFO = "ok", "fail", "info"
MARKS = {OK: "✓", FAIL: "✗", INFO: "•"}
LOCAL_BACKENDS = ("outbox", "console")  # they send nothing anywhere
# Names that never reach a real mailbox: RFC 2606/6761 special-use and local names.
_LOCAL_SUFFIXES = (".localhost", ".local", ".test", ".invalid", ".example", ".internal",
                   ".lan", ".home.arpa")
_DOC_DOMAINS = ("example.com", "example.org", "example.net")
DEFAULT_POSTAL = SenderConfig().postal_address
SPF_INCLUDE = {"sendgrid": "include:sendgrid.net", "mailgun": "include:mailgun.org",
               "postmark": "include:spf.mtasv.net", "ses": "include:amazonses.com",
               "resend": "include:amazonses.com"}
_KEY_SHAPES = {
    "sendgrid": (re.compile(r"SG\.[\w-]{16,}\.[\w-]{16,}"), "SG.<id>.<secret>"),
    "postmark": (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
                            re.I), "a server token (UUID)"),
    "mailgun": (re.compile(r"(key-)?[0-9a-f]{32}(-[0-9a-f]{8}-[0-9a-f]{8})?", re.I),
                "key-<32 hex> or <32 hex>-<8>-<8>"),
    "resend": (re.compile(r"re_[\w]{8,}"), "re_<...>"),
    "ses": (re.compile(r"(AKIA|ASIA)[A-Z0-9]{16}"), "an access key id (AKIA...)"),
}


@dataclass(frozen=True)
class Item:
    """One line of the check: what, whether it passed, what was seen, how to fix it."""

    key: str
    status: str
    detail: str
    fix: str = ""
    blocks_send: bool = False  # a ✗ that makes the mail non-compliant

    @property
    def ok(self) -> bool:
        return self.status != FAIL

    def line(self) -> str:
        text = f"{MARKS[self.status]} {self.key}: {self.detail}"
        return f"{text} — fix: {self.fix}" if self.fix and self.status == FAIL else (
            f"{text} — {self.fix}" if self.fix else text)


def _domain(address: str) -> str:
    return address.rpartition("@")[2].strip().lower().rstrip(".")


def local_name(host: str) -> str:
    """Why ``host`` can never be a public sending name or link host, or ``""``."""
    host = host.lower().rstrip(".").strip("[]")
    if not host:
        return "no domain"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return "an IP address" if ip.is_global else "a local IP address"
    if host == "localhost" or host.endswith(_LOCAL_SUFFIXES):
        return "a local name"
    if "." not in host:
        return "a name without a dot"
    if host in _DOC_DOMAINS or host.endswith(tuple("." + d for d in _DOC_DOMAINS)):
        return "a domain reserved for documentation"
    return ""


def check_base_url(web: WebConfig) -> Item:
    url = web.base_url
    parts = urlsplit(url)
    host = parts.hostname or ""
    fix = ("set [web] base_url to the public https address of `newsletter web`, on a "
           "domain of yours: https://digest.<your domain>")
    if parts.scheme != "https":
        return Item("web.base_url", FAIL, f"{url} is not https (RFC 8058 one-click "
                    "unsubscribe needs https)", fix, blocks_send=True)
    why = local_name(host)
    if why:
        return Item("web.base_url", FAIL, f"{url}: {host} is {why}", fix, blocks_send=True)
    if parts.port not in (None, 443):
        return Item("web.base_url", FAIL, f"{url} has a port (spam filters score links "
                    "with ports)", "serve it on 443 behind a proxy")
    return Item("web.base_url", OK, f"{url} (unsubscribe, preferences and view links)")


def check_sender(s: SenderConfig) -> Item:
    from email_validator import EmailNotValidError

    from newsletter.addresses import validated

    fix = "set [sender] from_address to an address at a domain you control"
    try:
        validated(s.from_address)
    except EmailNotValidError as exc:
        return Item("sender.from_address", FAIL, f"{s.from_address!r}: {exc}", fix,
                    blocks_send=True)
    why = local_name(_domain(s.from_address))
    if why:
        return Item("sender.from_address", FAIL,
                    f"{s.from_address}: {_domain(s.from_address)} is {why}", fix,
                    blocks_send=True)
    return Item("sender.from_address", OK, f"From: {s.from_name} <{s.from_address}>")


def check_list_id(s: SenderConfig) -> Item:
    domain = _domain(s.from_address)
    if local_name(domain):
        domain = "your-domain.net"
    fix = f'set [sender] list_id, e.g. "digest.{domain}"'
    if not s.list_id or local_name(s.list_id):
        return Item("sender.list_id", FAIL, f"List-Id <{s.list_id}> is "
                    f"{local_name(s.list_id) or 'empty'}", fix)
    if not re.fullmatch(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+", s.list_id):
        return Item("sender.list_id", FAIL, f"List-Id <{s.list_id}> is not a dotted name "
                    "(RFC 2919)", fix)
    return Item("sender.list_id", OK, f"List-Id: <{s.list_id}>")


def check_postal(sender: SenderConfig) -> Item:
    p = sender.postal_address.strip()
    fix = "set [sender] postal_address to the sender's real postal address (CAN-SPAM)"
    if not p:
        return Item("sender.postal_address", FAIL, "missing", fix, blocks_send=True)
    if p == DEFAULT_POSTAL:
        return Item("sender.postal_address", FAIL, "still the built-in placeholder", fix,
                    blocks_send=True)
    return Item("sender.postal_address", OK, p)


def dkim_record(private_pem: bytes) -> str:
    """The DNS TXT value publishing the public half of ``private_pem``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    key = serialization.load_pem_private_key(private_pem, password=None)
    public = key.public_key()
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("not an RSA or Ed25519 key")
    if key.key_size < 1024:
        raise ValueError(f"RSA key of {key.key_size} bits (receivers want 1024, better 2048)")
    der = public.public_bytes(serialization.Encoding.DER,
                              serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


def aligned(from_domain: str, signing_domain: str) -> bool:
    """DMARC relaxed alignment: the same organisational domain (approximated as one
    being the other or its parent)."""
    a, b = from_domain.lower(), signing_domain.lower().rstrip(".")
    return a == b or a.endswith("." + b) or b.endswith("." + a)


def check_dkim(r: RenderConfig, sender: SenderConfig) -> list[Item]:
    domain = _domain(sender.from_address)
    fix = ("make a key (openssl genrsa -out dkim.pem 2048) and set [render] dkim_selector, "
           f"dkim_domain ({domain or 'your From domain'}) and dkim_private_key")
    if not (r.dkim_selector and r.dkim_domain and r.dkim_private_key):
        return [Item("dkim", FAIL, "DKIM signing is off (Gmail and Yahoo require it for bulk "
                     "senders)", fix)]
    try:
        record = dkim_record(Path(r.dkim_private_key).read_bytes())
    except OSError as exc:
        if exc.errno == errno.EACCES:  # a key made as root (0600) for a service's user
            import getpass

            fix = (f"make it readable by the user running newsletter ({getpass.getuser()}) "
                   f"and nobody else: chown that user {r.dkim_private_key} and chmod 600 it")
        return [Item("dkim", FAIL, f"[render] dkim_private_key {r.dkim_private_key}: "
                     f"{exc.strerror}", fix)]
    except ValueError as exc:
        return [Item("dkim", FAIL, f"[render] dkim_private_key {r.dkim_private_key}: {exc}",
                     fix)]
    items = [Item("dkim", OK, f"key loads; selector {r.dkim_selector}, domain {r.dkim_domain}")]
    if not aligned(domain, r.dkim_domain):
        items.append(Item("dkim.alignment", FAIL, f"d={r.dkim_domain} does not align with "
                          f"the From domain {domain} (DMARC fails)",
                          f"set [render] dkim_domain = \"{domain}\""))
    else:
        items.append(Item("dkim.alignment", OK, f"d={r.dkim_domain} aligns with From {domain}"))
    items.append(Item("dkim.dns", INFO, f'publish {r.dkim_selector}._domainkey.{r.dkim_domain} '
                      f'TXT "{record}"'))
    return items


def dns_items(sender: SenderConfig, backend: str, smtp: SmtpConfig) -> list[Item]:
    domain = _domain(sender.from_address)
    if local_name(domain):
        domain = "your-domain.net"
    mech = spf_mechanism(backend, smtp)
    return [
        Item("spf", INFO, f'publish {domain} TXT "v=spf1 {mech} ~all" '
             "(`newsletter check --dns` looks it up)"),
        Item("dmarc", INFO, f'publish _dmarc.{domain} TXT "{dmarc_record(domain)}" '
             "(then tighten p= to quarantine)"),
    ]


def dmarc_record(domain: str) -> str:
    return f"v=DMARC1; p=none; rua=mailto:dmarc@{domain}; adkim=r; aspf=r"


def loopback(host: str) -> bool:
    """A relay on this machine (127.0.0.0/8, ::1, localhost): nothing crosses a network."""
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def spf_mechanism(backend: str, smtp: SmtpConfig) -> str:
    """What the SPF record must name for this transport. Only a public address is
    named as one: a relay on this machine or a private network sends from this
    server's public address, which the configuration does not know."""
    if backend != "smtp":
        return SPF_INCLUDE.get(backend, "a mx")
    host = smtp.host.strip("[]")
    if _is_ip(host):
        ip = ipaddress.ip_address(host)
        if ip.is_global:
            return f"ip{ip.version}:{ip}"
        return "ip4:<the public address your relay sends from>"
    if loopback(host) or local_name(host):
        return "ip4:<the public address your relay sends from>"
    return f"a:{host} (or your relay's include:)"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def _probe_smtp(c: SmtpConfig) -> str:
    """Connect, EHLO, STARTTLS/TLS and AUTH as ``send`` would, then QUIT: no mail."""
    import aiosmtplib

    client = aiosmtplib.SMTP(hostname=c.host, port=c.port, timeout=min(c.timeout, 15.0),
                             use_tls=c.security == "tls", start_tls=False,
                             validate_certs=True, cert_bundle=c.ca_file or None)
    await client.connect()
    try:
        await client.ehlo()
        steps = ["connect", "EHLO"]
        if c.security == "tls":
            steps.insert(1, "TLS")
        if c.security == "starttls":
            await client.starttls()
            await client.ehlo()
            steps.append("STARTTLS")
        if c.username:
            from newsletter.transports.smtp import login

            await login(client, c.username, c.password or "")  # as send logs in: once
            steps.append("AUTH")
        return ", ".join(steps)
    finally:
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError):
            client.close()


def check_transport(backend: str, c: SmtpConfig, a: ApiConfig) -> Item:
    key = f"transport ({backend})"
    if backend in LOCAL_BACKENDS:
        return Item(key, FAIL, f"{backend} sends nothing anywhere",
                    "set [transport] backend to smtp or an email API")
    if backend == "smtp":
        import aiosmtplib

        where = f"{c.host}:{c.port}"
        if c.security == "none" and not loopback(c.host):  # refused without a probe
            return Item(key, FAIL, f"{where} without TLS (mail and password would cross "
                        "the network in plain text)",
                        'set [smtp] security = "starttls" (or "tls"), or relay through '
                        "a server on this machine")
        try:
            steps = run_async(_probe_smtp(c))
        except aiosmtplib.SMTPAuthenticationError as exc:
            return Item(key, FAIL, f"{where}: login refused: {exc.code} {exc.message}",
                        "check [smtp] username and password")
        except (aiosmtplib.SMTPException, OSError) as exc:
            return Item(key, FAIL, f"{where}: {str(exc) or type(exc).__name__}",
                        "check [smtp] host, port and security")
        notes = []
        if c.security == "none":
            notes.append("no TLS: fine for a relay on this machine (nothing crosses a "
                         "network); it needs its own TLS to the recipients")
        if not c.username:
            notes.append("no AUTH configured: fine for a relay that trusts this host")
        return Item(key, OK, f"{where}: {steps} succeeded (nothing sent)", "; ".join(notes))
    if not a.api_key:
        return Item(key, FAIL, "[api] api_key is not set", f"set the {backend} API key")
    pattern, shape = _KEY_SHAPES[backend]
    if not pattern.fullmatch(a.api_key.strip()):
        return Item(key, FAIL, f"[api] api_key does not look like a {backend} key",
                    f"expected {shape}")
    if backend == "mailgun" and not a.domain:
        return Item(key, FAIL, "[api] domain is not set", "set the Mailgun sending domain")
    if backend == "ses" and not (a.secret_key and len(a.secret_key.strip()) == 40):
        return Item(key, FAIL, "[api] secret_key is missing or not 40 characters",
                    "set the SES secret access key")
    return Item(key, OK, "API key present and well-formed (not sent anywhere)")


def check_templates(r: RenderConfig) -> Item:
    from newsletter.errors import TemplateError
    from newsletter.render.compile import compile_templates, template_dir

    try:
        compiled = compile_templates(r.templates)
    except TemplateError as exc:
        return Item("templates", FAIL, str(exc), "fix the template named above")
    where = template_dir(r.templates)
    return Item("templates", OK, f"{where} compiles (version {compiled.version})")


def check_images(r: RenderConfig) -> Item:
    if r.images == "none":
        return Item("render.images", OK, "none: the email loads nothing when opened")
    return Item("render.images", INFO, f"remote: thumbnails load from {r.image_url} "
                "(the sender of those images sees each open)")


def check_bounces(bounces: BouncesConfig, sender: SenderConfig, backend: str,
                  probe: bool = False) -> Item:
    """Without a bounce mailbox, bounces that arrive after the message was accepted
    (every one, through a relay) and mailto: unsubscribes would be lost, so the
    List-Unsubscribe header offers no mailto: then. With ``probe`` the mailbox is
    opened as `newsletter bounces fetch` opens it (logged in, its folder selected, the
    ``after`` settings checked) and closed, reading nothing: a wrong password was ✓
    here and then failed every ten minutes in `newsletter run`."""
    if backend not in ("smtp", *LOCAL_BACKENDS):
        return Item("bounces", INFO, f"{backend} reports bounces through its webhook "
                    "(newsletter webhooks urls)")
    if not bounces.mailbox:
        return Item("bounces.mailbox", INFO, "not set: List-Unsubscribe offers only the "
                    "https URL (no mailto:), and bounces mailed back are not read",
                    "set [bounces] mailbox (and return_path) to read them")
    scheme = bounces.mailbox.partition(":")[0]
    if probe:
        from newsletter.bounces.mailboxes import MailboxError, open_mailbox

        try:
            open_mailbox(bounces.mailbox, after=bounces.after, move_to=bounces.move_to,
                         cafile=bounces.ca_file, timeout=10, readonly=True).close()
        except MailboxError as exc:
            return Item("bounces.mailbox", FAIL, exc.message,
                        "fix [bounces] mailbox (or after / move_to), then "
                        "`newsletter bounces fetch` reads it")
    return Item("bounces.mailbox", OK, f"{scheme} mailbox "
                f"{'opened; ' if probe else ''}read every "
                f"{bounces.fetch_minutes} min; mailto: unsubscribes go to "
                f"{sender.from_address}; envelope sender "
                f"{bounces.return_path or sender.from_address}")


def run_checks(*, web: WebConfig, sender: SenderConfig, render: RenderConfig,
               transport: TransportConfig, smtp: SmtpConfig, api: ApiConfig,
               probe: bool = True) -> list[Item]:
    """Every item, in the order an operator fixes them. ``probe=False`` skips the
    network (the SMTP connection)."""
    items = [check_base_url(web), check_sender(sender), check_list_id(sender),
             check_postal(sender), *check_dkim(render, sender),
             *dns_items(sender, transport.backend, smtp)]
    if probe:
        items.append(check_transport(transport.backend, smtp, api))
    items += [check_templates(render), check_images(render)]
    return items


def as_json(items: list[Item]) -> dict[str, object]:
    return {"ok": all(i.ok for i in items),
            "items": [{**asdict(i), "ok": i.ok} for i in items]}


MIN_KEY_LENGTH = 16
PLACEHOLDERS = ("CHANGE-ME", "change-me", "changeme", "secret")
_GENERATE = 'generate one with `python3 -c "import secrets; print(secrets.token_urlsafe(32))"`'
KEY_FIX = f"{_GENERATE} and put it first in NEWSLETTER_WEB__SECRET_KEYS"


def weak_secret(value: str) -> bool:
    """A secret anyone could guess: a placeholder (the deploy example's ``CHANGE-ME``)
    or shorter than ``MIN_KEY_LENGTH``."""
    return value.strip() in PLACEHOLDERS or len(value) < MIN_KEY_LENGTH


def weak_metrics_token(token: str | None) -> Item | None:
    """``[metrics] token``, when set, as guessable as ``weak_secret`` says. Empty is
    not set, as ``/metrics`` reads it (``deploy/compose.yaml`` passes an empty
    ``METRICS_TOKEN`` through: every such install failed `check`)."""
    if not token or not weak_secret(token):
        return None
    return Item("metrics.token", FAIL, f"a placeholder or shorter than {MIN_KEY_LENGTH} "
                "characters (anyone could read /metrics)",
                f"{_GENERATE} and set it as NEWSLETTER_METRICS__TOKEN")


def weak_signing_key(cfg: WebConfig, signing_only: bool = False) -> Item | None:
    """A configured link-signing key that is a placeholder (the deploy example's
    ``CHANGE-ME``) or short: links signed with it can be forged. The first key signs
    new mail, so mail is not sent with a weak one (``blocks_send``); a weak key after
    it only verifies links already sent (kept after a rotation away from it, as the
    signed-links guard asks), which `check` names with how to retire it, and which
    does not hold mail back: a rotation done as told must clear the refusal.
    ``signing_only``: the first key alone (the compliance gate)."""
    keys = cfg.secret_keys[:1] if signing_only else cfg.secret_keys
    for i, key in enumerate(keys):
        if weak_secret(key):
            what = (f"key {i + 1} of {len(cfg.secret_keys)} is a placeholder or shorter "
                    f"than {MIN_KEY_LENGTH} characters (anyone could forge ")
            if i == 0:
                return Item("web.secret_keys", FAIL, what + "unsubscribe links)", KEY_FIX,
                            blocks_send=True)
            return Item("web.secret_keys", FAIL, what + "the links it signed, which it "
                        "still verifies)", "list its fingerprint (`newsletter keys show`) in "
                        "[web] retired_keys once its links no longer matter; mail is sent "
                        "with the first key meanwhile")
    return None


def send_blockers(backend: str, web: WebConfig, sender: SenderConfig) -> list[str]:
    """What makes mail through a real transport non-compliant (http unsubscribe link,
    a local sender, no postal address, a placeholder signing key); empty for
    ``outbox``/``console``."""
    if backend in LOCAL_BACKENDS:
        return []
    items = [check_base_url(web), check_sender(sender), check_postal(sender),
             weak_signing_key(web, signing_only=True)]
    return [f"{i.key}: {i.detail}" for i in items
            if i is not None and not i.ok and i.blocks_send]


def refusal(backend: str, blockers: list[str]) -> str:
    """What a refused send says: the transport and every problem (``check.send_blockers``,
    the compliance gate that ``send`` and the scheduler's slots in ``newsletter run``
    both hold, each overridden by its own ``--force``), on one line."""
    return f"refusing to send through {backend}: " + "; ".join(blockers)


def compliance_gate(backend: str, web: WebConfig, sender: SenderConfig, force: bool, *,
                    error: type[NewsletterError] = InputError) -> list[str]:
    """The compliance gate (``check.send_blockers``): raises ``error`` naming every
    problem unless ``force``; what was overridden (to warn of, one line each) when
    forced. ``send`` and ``worker`` hold it; ``run`` refuses its slots instead."""
    blockers = send_blockers(backend, web, sender)
    if blockers and not force:
        raise error(refusal(backend, blockers), "run `newsletter check`; --force sends anyway")
    return blockers
