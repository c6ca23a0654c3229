"""The one rule for links that come from outside: ``http``/``https`` only, percent-encoded.

A paper's ``url``, ``code_url`` and ``project_url`` come from feeds anyone can
publish, and end up as ``href`` in every email, its text part and the web pages.
``javascript:``/``data:``/``file:`` links there would be stored XSS next to the
subscriber's own signed links, and a stray quote or space makes an invalid
``href`` some clients cut short. Ingest drops what this refuses (with a warning
naming the record) and rendering applies it again, so a row stored before the
rule, or edited by hand, still never emits another scheme.
"""

from __future__ import annotations

import re
from urllib.parse import quote, urlsplit, urlunsplit

SCHEMES = ("http", "https")
# RFC 3986 reserved + unreserved characters, and "%" so existing escapes stay as they are.
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"
_QUERY_SAFE = _PATH_SAFE + "?"
_STRAY_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _enc(part: str, safe: str) -> str:
    return quote(_STRAY_PERCENT.sub("%25", part), safe=safe)


def safe_url(url: str | None) -> str:
    """``url`` as a clean absolute http(s) URL, or ``""`` when it is not one.

    Characters that are not allowed in a URL (quotes, spaces, ``<>``, non-ASCII)
    are percent-encoded; the host is IDNA-encoded; user info is refused (it is a
    phishing trick: ``https://arxiv.org@evil.example/``).
    """
    if not url:
        return ""
    text = url.strip()
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        return ""
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return ""
    if parts.scheme.lower() not in SCHEMES or not parts.hostname:
        return ""
    if "@" in parts.netloc or "\\" in parts.netloc:
        return ""
    try:
        host = parts.hostname.encode("idna").decode("ascii")
    except UnicodeError:
        return ""
    if not all(c.isalnum() or c in "-._[]:" for c in host):
        return ""
    if ":" not in host and not all(host.rstrip(".").split(".")):
        # an empty label: what a Unicode dot became ("http://\u2024" is "http://."),
        # which the next pass refuses: stored links must read the same again
        return ""
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    return urlunsplit((parts.scheme.lower(), netloc, _enc(parts.path, _PATH_SAFE),
                       _enc(parts.query, _QUERY_SAFE), _enc(parts.fragment, _QUERY_SAFE)))
