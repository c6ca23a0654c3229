"""One message from the bounce mailbox, read into a ``Report``.

The order of the checks is what makes the answer right on real mail:
1. an RFC 5965 complaint report (``multipart/report; report-type=feedback-report``);
2. an RFC 3464 delivery-status report, read per recipient (``Action``, ``Status``):
   a ``failed`` 5.x.x is hard, except 5.7.x (refused by the receiver's policy or
   security: DMARC, a blocklist, spam content, which says nothing of the address), a
   ``failed`` 4.x.x is soft, and a ``delayed`` warning (the server is still trying:
   the outcome comes in a report of its own) or a ``delivered``/``relayed`` notice is
   nothing to act on;
3. a ``mailto:`` unsubscribe request (the subject our ``List-Unsubscribe`` header
   asks for: ``unsubscribe <token>``);
4. an auto-reply or out-of-office (RFC 3834 ``Auto-Submitted``, the common vendor
   headers): ignored, even when its text mentions an address;
5. the non-standard bounces older MTAs send (qmail, Exim, Exchange, …), through
   flufl.bounce's detectors (temporary vs permanent);
and otherwise ``unknown``: kept and counted by the reader, never guessed at.

Nothing here touches a database: matching a report to a delivery (by the VERP
envelope address, else by the original Message-ID) is the caller's job.
"""

from __future__ import annotations

import email
import email.policy
import enum
import logging
import re
from dataclasses import dataclass, field
from email.message import Message
from email.utils import getaddresses, parseaddr

# flufl.bounce logs a traceback whenever one of its detectors trips on odd mail; it
# then tries the next detector, so the trace is noise here (hostile mail is expected).
logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)
MAX_TEXT = 300  # a diagnostic is shown to an operator: one line, bounded


class Kind(enum.StrEnum):
    HARD = "hard"  # permanent: the address does not work
    SOFT = "soft"  # temporary: mailbox full, greylisted, given up for now
    REFUSED = "refused"  # 5.7.x: the receiver's policy refused our mail, not the address
    COMPLAINT = "complaint"  # the reader reported the mail as spam (ARF)
    UNSUBSCRIBE = "unsubscribe"  # a mail to the List-Unsubscribe mailto address
    AUTO_REPLY = "auto_reply"  # out-of-office and other automatic answers: ignored
    NOTICE = "notice"  # a success DSN (delivered, relayed, expanded): nothing to do
    UNKNOWN = "unknown"  # not recognised: kept for a person to read


@dataclass(frozen=True)
class Report:
    """What one message says. ``recipients`` are the failing original recipients
    (lower-cased), ``to`` the addresses the report was sent to (the VERP envelope
    address is among them when the server kept it), ``message_ids`` the Message-IDs
    of the original email found inside the report, ``envelope_id`` the DSN ENVID."""

    kind: Kind
    recipients: tuple[str, ...] = ()
    status: str = ""  # the enhanced status code, e.g. "5.1.1"
    diagnostic: str = ""
    to: tuple[str, ...] = ()
    message_ids: tuple[str, ...] = ()
    envelope_id: str = ""
    token: str = ""  # the unsubscribe token of a mailto request
    subject: str = ""
    extra: dict[str, str] = field(default_factory=dict)


def read(raw: bytes) -> Report:
    """The report one raw RFC 5322 message makes. Never raises on bad mail: a
    message the email package cannot make sense of is ``unknown``."""
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
        return classify(msg)
    except Exception as exc:  # noqa: BLE001 - hostile input must not stop a mailbox run
        return Report(Kind.UNKNOWN, diagnostic=_line(f"unreadable: {exc}"))


def classify(msg: Message) -> Report:
    to = _addresses(msg, "delivered-to", "x-original-to", "envelope-to", "to")
    subject = _line(_header(msg, "subject"))
    report_type = (msg.get_param("report-type", header="content-type") or "")
    report_type = str(report_type).lower() if not isinstance(report_type, tuple) else ""
    if msg.get_content_type() == "multipart/report" and report_type == "feedback-report":
        return _complaint(msg, to, subject)
    statuses = _delivery_status(msg)
    if statuses:
        return _dsn(msg, statuses, to, subject)
    token = _unsubscribe_token(subject)
    if token:
        return Report(Kind.UNSUBSCRIBE, token=token, to=to, subject=subject,
                      recipients=tuple(a for a in _addresses(msg, "from", "sender")[:1]))
    if _auto_reply(msg, subject) and not _from_mailer(msg):
        return Report(Kind.AUTO_REPLY, to=to, subject=subject)
    return _legacy(msg, to, subject)


# ---- RFC 5965 complaints -------------------------------------------------------

def _complaint(msg: Message, to: tuple[str, ...], subject: str) -> Report:
    fields: dict[str, str] = {}
    for part in msg.walk():
        if part.get_content_type() == "message/feedback-report":
            fields = _fields(part)
    original = _original(msg)
    rcpts = [parseaddr(fields.get("original-rcpt-to", ""))[1]]
    if original is not None:
        rcpts += [a for _, a in getaddresses(original.get_all("to", []))]
    recipients = tuple(dict.fromkeys(a.strip().lower() for a in rcpts if "@" in a))
    ids = _message_ids(original)
    return Report(Kind.COMPLAINT, recipients=recipients, to=to, subject=subject,
                  message_ids=ids, diagnostic=_line(fields.get("feedback-type", "abuse")),
                  extra={"feedback_type": fields.get("feedback-type", "")})


# ---- RFC 3464 delivery-status reports -----------------------------------------

@dataclass(frozen=True)
class _Status:
    recipient: str
    action: str
    status: str
    diagnostic: str


def _delivery_status(msg: Message) -> list[_Status]:
    found: list[_Status] = []
    for part in msg.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        for block in _blocks(part)[1:]:  # the first block is per-message
            rcpt = _recipient(block)
            if not rcpt:
                continue
            found.append(_Status(rcpt, block.get("action", "").strip().lower(),
                                 _code(block.get("status", "")),
                                 _line(block.get("diagnostic-code", ""))))
    return found


def _dsn(msg: Message, statuses: list[_Status], to: tuple[str, ...], subject: str
         ) -> Report:
    envid = ""
    for part in msg.walk():
        if part.get_content_type() == "message/delivery-status":
            blocks = _blocks(part)
            if blocks:
                envid = blocks[0].get("original-envelope-id", "").strip()
    failed = [s for s in statuses if s.action.startswith(("fail", "error"))]
    refused = [s for s in failed if s.status.startswith("5.7.")]
    hard = [s for s in failed if (s.status.startswith("5") or not s.status)
            and s not in refused]
    soft = [s for s in failed if s.status.startswith("4")]
    chosen, kind = ((hard, Kind.HARD) if hard else (refused, Kind.REFUSED) if refused
                    else (soft, Kind.SOFT) if soft else (statuses, Kind.NOTICE))
    first = chosen[0]
    return Report(kind, recipients=tuple(dict.fromkeys(s.recipient for s in chosen)),
                  status=first.status, diagnostic=first.diagnostic, to=to, subject=subject,
                  message_ids=_message_ids(_original(msg)), envelope_id=envid,
                  extra={"action": first.action})


def _blocks(part: Message) -> list[Message]:
    """The header blocks of a message/delivery-status part. The email package parses
    them into sub-messages; a part it left as text is split by hand."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    text = payload if isinstance(payload, str) else ""
    return [email.message_from_string(b.strip() + "\n")
            for b in re.split(r"\r?\n\s*\r?\n", text) if b.strip()]


def _recipient(block: Message) -> str:
    for name in ("original-recipient", "final-recipient", "x-actual-recipient"):
        value = block.get(name, "")
        kind, _, addr = str(value).partition(";")
        if kind.strip().lower() == "rfc822" and "@" in addr:
            return parseaddr(addr.strip())[1].lower() or addr.strip().lower()
    return ""


def _code(value: str) -> str:
    m = re.search(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b", value or "")
    return ".".join(m.groups()) if m else ""


# ---- mailto: unsubscribe, auto-replies -----------------------------------------

UNSUBSCRIBE = re.compile(r"^\s*unsubscribe\s+(\S+)\s*$", re.IGNORECASE)


def _unsubscribe_token(subject: str) -> str:
    m = UNSUBSCRIBE.match(subject)
    return m.group(1) if m else ""


AUTO_SUBJECT = re.compile(
    r"^(auto(matic)?[ -]?(reply|response|antwort)|out of (the )?office|abwesenheit|"
    r"r[ée]ponse automatique|absence|on vacation|away from)", re.IGNORECASE)


def _auto_reply(msg: Message, subject: str) -> bool:
    """RFC 3834 and the vendor headers in common use (Exchange, Gmail's vacation
    responder, procmail/vacation): anything sent by a program in answer to a mail."""
    auto = _header(msg, "auto-submitted").lower()
    if auto and not auto.startswith("no"):
        return True
    if any(msg.get(h) for h in ("x-autoreply", "x-autorespond", "x-auto-response-suppress")
           ) and AUTO_SUBJECT.search(subject):
        return True
    if _header(msg, "precedence").lower() in ("auto_reply", "auto-reply"):
        return True
    return bool(AUTO_SUBJECT.search(subject))


MAILER = re.compile(r"^(mailer-daemon|postmaster|mail-daemon|mdaemon|mail\.?delivery)",
                    re.IGNORECASE)


def _from_mailer(msg: Message) -> bool:
    """Sent by a mail server, not a person's mailbox: a bounce, whatever its
    ``Auto-Submitted`` header says (servers mark their bounces that way too)."""
    name, addr = parseaddr(str(msg.get("from", "")))
    return bool(MAILER.match(addr) or re.search(r"mail delivery|delivery subsystem", name,
                                                 re.IGNORECASE))


# ---- the rest: what older MTAs send --------------------------------------------

def _legacy(msg: Message, to: tuple[str, ...], subject: str) -> Report:
    from flufl.bounce import all_failures

    try:
        temporary, permanent = all_failures(msg)
    except Exception:  # noqa: BLE001 - a detector tripping on odd mail is "unknown"
        temporary, permanent = frozenset(), frozenset()
    ids = _message_ids(_original(msg))
    if permanent:
        return Report(Kind.HARD, recipients=_decoded(permanent), to=to, subject=subject,
                      message_ids=ids, diagnostic=subject)
    if temporary:
        return Report(Kind.SOFT, recipients=_decoded(temporary), to=to, subject=subject,
                      message_ids=ids, diagnostic=subject)
    return Report(Kind.UNKNOWN, to=to, subject=subject, message_ids=ids)


def _decoded(addresses: frozenset[bytes]) -> tuple[str, ...]:
    return tuple(sorted({a.decode("ascii", "replace").lower() for a in addresses}))


# ---- small readers -------------------------------------------------------------

def _original(msg: Message) -> Message | None:
    """The original email (or its headers) carried inside a report."""
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
        if ctype in ("text/rfc822-headers", "text/global-headers"):
            body = part.get_payload(decode=True) or b""
            return email.message_from_bytes(bytes(body), policy=email.policy.compat32)
    return None


def _message_ids(original: Message | None) -> tuple[str, ...]:
    if original is None:
        return ()
    return tuple(dict.fromkeys(re.findall(r"<[^<>\s]+>", str(original.get("message-id", "")))))


def _fields(part: Message) -> dict[str, str]:
    blocks = _blocks(part)
    out: dict[str, str] = {}
    for block in blocks:
        for key, value in block.items():
            out.setdefault(key.lower(), str(value).strip())
    return out


def _addresses(msg: Message, *names: str) -> tuple[str, ...]:
    found: list[str] = []
    for name in names:
        for _, addr in getaddresses([str(v) for v in msg.get_all(name, [])]):
            if "@" in addr:
                found.append(addr.strip().lower())
    return tuple(dict.fromkeys(found))


def _header(msg: Message, name: str) -> str:
    value = msg.get(name, "")
    if not isinstance(value, str):
        value = str(value)
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except Exception:  # noqa: BLE001 - a broken encoded-word is shown as it came
        return value


def _line(text: str) -> str:
    return " ".join(str(text).split())[:MAX_TEXT]
