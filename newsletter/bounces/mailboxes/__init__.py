"""Bounce mailboxes, one module per kind, all behind ``base.Mailbox``.

``open_mailbox(url)`` picks the kind from the URL's scheme: ``imaps://`` and
``imap://`` (STARTTLS), ``pop3s://`` and ``pop3://`` (STLS), ``maildir:/path``.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from newsletter.bounces.mailboxes.base import Mailbox, MailboxError, Where

SCHEMES = ("imaps", "imap", "pop3s", "pop3", "maildir")


def parse_url(url: str) -> Where:
    """The parts of a ``[bounces] mailbox`` URL, checked (the password is never
    echoed back in an error)."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        known = ", ".join(s + ":" for s in SCHEMES)
        raise MailboxError(f"[bounces] mailbox: expected one of {known} got "
                           f"{scheme + ':' if scheme else 'no scheme'}")
    if scheme == "maildir":
        path = unquote(parts.path or parts.netloc)
        if not path:
            raise MailboxError("[bounces] mailbox: maildir: needs a path, "
                               "e.g. maildir:/var/mail/bounces")
        return Where(scheme, path=path)
    if not parts.hostname:
        raise MailboxError(f"[bounces] mailbox: {scheme}:// needs a host")
    if not parts.username or parts.password is None:
        raise MailboxError(f"[bounces] mailbox: {scheme}:// needs user:password@ before the host")
    try:
        port = parts.port
    except ValueError:
        raise MailboxError("[bounces] mailbox: the port is not a number 1-65535") from None
    folder = unquote(parts.path.lstrip("/")) or "INBOX"
    return Where(scheme, host=parts.hostname, port=port, user=unquote(parts.username),
                 password=unquote(parts.password), path=folder)


def open_mailbox(url: str, *, after: str = "flag", move_to: str = "",
                 cafile: str | None = None, timeout: float = 30,
                 readonly: bool = False) -> Mailbox:
    """The mailbox ``url`` names, opened (logged in, its folder selected). ``readonly``:
    opened to look only (`newsletter check`): nothing in it changes, also on close."""
    where = parse_url(url)
    if where.scheme == "maildir":
        from newsletter.bounces.mailboxes.maildir import MaildirBox

        return MaildirBox(where, after=after)
    if where.scheme.startswith("imap"):
        from newsletter.bounces.mailboxes.imap import ImapBox

        return ImapBox(where, after=after, move_to=move_to, cafile=cafile, timeout=timeout,
                       readonly=readonly)
    from newsletter.bounces.mailboxes.pop3 import Pop3Box

    return Pop3Box(where, cafile=cafile, timeout=timeout)


__all__ = ["Mailbox", "MailboxError", "Where", "open_mailbox", "parse_url"]
