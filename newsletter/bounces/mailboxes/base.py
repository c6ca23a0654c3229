"""The one small interface every bounce mailbox implements.

A run reads ``batches()`` of (key, raw bytes), acts on each, then calls
``done(keys)`` for the ones it has committed: the mailbox then marks, moves or
deletes them (``[bounces] after``) so they are not read again. A crash between
the commit and ``done`` leaves the messages in place; the caller's record of
processed message digests makes the second read a no-op, so a message is acted
on once whatever happens in between.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from newsletter.errors import NewsletterError

AFTER = ("flag", "move", "delete")
BATCH = 100  # messages fetched in one round trip where the protocol allows


class MailboxError(NewsletterError):
    """The mailbox cannot be reached or read: one line, no traceback, no password."""


@dataclass(frozen=True)
class Where:
    scheme: str
    host: str = ""
    port: int | None = None
    user: str = ""
    password: str = ""
    path: str = ""  # the IMAP folder, or the Maildir's directory

    def shown(self) -> str:
        if self.scheme == "maildir":
            return f"maildir:{self.path}"
        port = f":{self.port}" if self.port else ""
        # the user apart: a user that is an address ("bounces@digest.example") read as
        # a second host in "imap://bounces@digest.example@127.0.0.1/INBOX"
        return f"{self.scheme}://{self.host}{port}/{self.path} (user {self.user})"


class Mailbox(Protocol):
    where: Where

    def batches(self, size: int = BATCH) -> Iterator[list[tuple[str, bytes]]]: ...

    def done(self, keys: list[str]) -> None: ...

    def close(self) -> None: ...


def tls_context(cafile: str | None) -> ssl.SSLContext:
    """Certificates verified, always: ``cafile`` adds a private CA (a test's, or a
    company's), it never turns verification off."""
    return ssl.create_default_context(cafile=cafile)
