"""The address policy, decided once: what the CLI, CSV import, web sign-up and the
config's sender accept, and how they store it.

* IDN domains are stored and sent as punycode (``ü.example`` → ``xn--tda.example``):
  every SMTP server and email API takes an ASCII domain, while a UTF-8 domain needs
  SMTPUTF8 end to end.
* A non-ASCII local part (``jösé@example.org``) can only be delivered through an
  SMTP server that offers SMTPUTF8 (and the mailbox's own server). It is refused
  at input unless the operator says their server takes it
  (``[transport] utf8_addresses = true``), with a message saying why. If it still
  meets a server without SMTPUTF8, that one delivery fails with that reason.
* Display names and every other header value lose control characters (CR, LF,
  NUL, ESC, ...) and the marks that reorder text (``plaintext``), so no input can add
  a header (``Eve\\r\\nBcc: evil@...``) or turn a name around.
* Domains reserved for testing (``.test``, RFC 6761; and ``example.*``, RFC 2606) are
  accepted everywhere, the sender included: they are valid addresses that a staging
  installation or a test suite delivers through its own server. Whether mail *from*
  one can reach real inboxes is a deliverability question, which ``newsletter check``
  answers (✗) and ``send`` through a real transport refuses. Names that can never be
  a mailbox (``.invalid``, ``.local``, ``.localhost``, ``.onion``, ``.arpa``) are
  refused everywhere, except that the sender may be ``@localhost`` (a relay's own
  name, the demo default).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from newsletter.errors import InputError
from newsletter.plaintext import CONTROLS

if TYPE_CHECKING:
    from email_validator import ValidatedEmail

_CONTROLS = re.compile(f"(?:{CONTROLS.pattern})+")  # (``plaintext``) a run of them

UTF8_HINT = ("a non-ASCII local part can only be delivered through an SMTP server that "
             "offers SMTPUTF8; if yours does, set [transport] utf8_addresses = true")


def clean_header_text(value: str) -> str:
    """One line of header text: control characters (CR/LF included) become a space."""
    return _CONTROLS.sub(" ", value).strip()


def validated(text: str, *, allow_smtputf8: bool = True) -> ValidatedEmail:
    """The one syntax check every address goes through (sign-up, CLI, import, the
    sender): no DNS lookups, testing domains accepted (see the module docstring).
    Raises ``EmailNotValidError``. The validator is imported here (~15 ms, most of it
    compiling its patterns): sending only cleans header text, and a send through a real
    transport checks the sender at its start anyway."""
    from email_validator import validate_email

    return validate_email(text, check_deliverability=False, allow_smtputf8=allow_smtputf8,
                          test_environment=True)


def normalize_address(raw: str, *, utf8_local_part: bool = False) -> str:
    """A syntactically valid address (no DNS lookups): local part lower-cased, domain
    in punycode. Raises InputError naming the address and the reason."""
    text = raw.strip()
    if _CONTROLS.search(text):
        raise InputError(f"invalid email address {raw!r}: it contains control characters")
    from email_validator import EmailNotValidError

    try:
        info = validated(text)
    except EmailNotValidError as exc:
        raise InputError(f"invalid email address {raw!r}: {exc}") from None
    local = info.local_part
    if not local.isascii() and not utf8_local_part:
        raise InputError(f"email address {raw!r}: {UTF8_HINT}")
    domain = info.ascii_domain or info.domain
    return f"{local}@{domain}".lower()


def needs_smtputf8(*addresses: str) -> bool:
    return not all(a.isascii() for a in addresses)
