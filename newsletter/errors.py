"""The exception tree.

Every error the operator can cause (a bad file, a bad key, a dead server) is a
``NewsletterError`` whose ``str()`` is one line naming *where* (file, line, field)
and *what was expected*. The CLI prints that line and exits non-zero; anything
else reaching the top is a bug and keeps its traceback.
"""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """An exception's message as one line: its first, or its type's name when it has
    none (a driver's or library's message can run over several lines)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class NewsletterError(Exception):
    """Base class: a one-line, user-facing message plus an optional fix-it hint."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class ConfigError(NewsletterError):
    """A config file or environment override is unreadable, unknown or mistyped."""

    exit_code = 2


class SourceError(NewsletterError):
    """A source (file, feed, API response) cannot be read or parsed.

    ``where`` is ``file[:line]`` or a URL, so the message points at the exact spot.
    """

    def __init__(self, where: str, problem: str, hint: str | None = None) -> None:
        super().__init__(f"{where}: {problem}", hint)
        self.where = where
        self.problem = problem


class FetchError(SourceError):
    """A remote source could not be fetched (network error, non-2xx after retries)."""


class Unreachable(NewsletterError):
    """A server the command needs did not answer (the database, the broker), or a port
    is still held: worth trying again (exit 1), unlike a ``ConfigError`` (2), which
    the systemd units do not restart (``RestartPreventExitStatus=2``): a database
    restarting while the services start left them stopped for good."""


class InputError(NewsletterError):
    """A bad command-line value or data row (address, CSV line, date)."""


class FieldError(InputError):
    """A refused value of a named field, in neutral words (``status``, ``keywords``):
    each front end presents the field its own way (a CLI flag, a form field)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class ProfileError(InputError):
    """A keyword profile could not be parsed."""


class TemplateError(NewsletterError):
    """A template fails to compile or render; names the template and line."""


class TransportError(NewsletterError):
    """A message could not be handed over.

    ``permanent`` separates "never retry" (5xx, provider 4xx) from transient
    trouble (4xx SMTP replies, 429/5xx, timeouts, dropped connections).
    ``bounce`` marks a hard bounce (no such user) that suppresses the subscriber.
    ``sender`` marks a failure of ours, not the recipient's (the login or the TLS
    certificate refused, no connection, our sender address refused): no recipient
    is to blame, so no recipient's delivery should be spent on it.
    ``later`` marks a recipient refused for now by a server that is answering (a 4xx
    to RCPT TO: greylisting, a busy mailbox): greylisting lasts minutes, so trying
    again within seconds only adds refusals; the delivery is deferred at once.
    ``unanswered`` marks a message whose end went out with no answer after it (a
    timeout, the connection lost): the server may have taken it, so it is deferred at
    once, never sent again within the run; many in a row stop the run like ``sender``.
    ``content`` marks a message refused for what it is, its recipient accepted: its
    size (552 to ``MAIL FROM ... SIZE=`` or to its end), or its content (5xx to DATA or
    to its end: a content filter). That is this reader's email (a larger digest than
    the rest, a link a filter blocks) or every email of the run (a size limit below all
    of them, a filter refusing the edition): until a message of the run is accepted it
    is not judged (``delivery.deliver``).
    """

    def __init__(
        self,
        message: str,
        *,
        permanent: bool = False,
        bounce: bool = False,
        retry_after: float | None = None,
        sender: bool = False,
        later: bool = False,
        unanswered: bool = False,
        content: bool = False,
    ) -> None:
        super().__init__(message)
        self.content = content
        self.later = later
        self.unanswered = unanswered
        self.permanent = permanent
        self.bounce = bounce
        self.sender = sender
        self.retry_after = retry_after


class SendingStopped(NewsletterError):
    """Sending stopped on a failure of our own side (``TransportError.sender``): a
    refused login or certificate, our sender address refused, no connection at all.
    No recipient's delivery was spent on it: every unsent row is pending again, and
    a rerun after the fix sends them."""

    reason = ""  # what refused us, as the transport said it
    sent = 0  # messages sent before stopping
    # the edition's messages were refused for their size or content, none accepted
    # (``TransportError.content``): another edition's may go, so a run over several
    # editions (deferred rows due) goes on to the next one
    edition_only = False
