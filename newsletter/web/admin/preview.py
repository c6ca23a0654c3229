"""The console's preview: the email itself comes from the previews use case
(``newsletter.service.preview.preview_email``: exactly what ``newsletter preview``
renders, plus why each paper was picked; nothing is written to the database).

"Send a test" hands that one message, re-addressed, to the configured transport.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

from newsletter.render.mime import Message
from newsletter.store.subscribers import normalize_email
from newsletter.transports.base import Transport

# The To: header with its folded lines: ``.`` also takes a line's \r, after which no
# "\r\n " continuation could follow, so a folded To: kept its second line (the reader's
# address) under a bare \n.
_TO = re.compile(rb"^To:[^\r\n]*(?:\r\n[ \t][^\r\n]*)*", re.IGNORECASE | re.MULTILINE)


def readdress(message: Message, to: str) -> Message:
    """The same message for another recipient: envelope and ``To:`` header."""
    head, sep, body = message.data.partition(b"\r\n\r\n")
    head = _TO.sub(lambda _m: b"To: " + to.encode(), head, count=1)
    return dataclasses.replace(message, to=to, data=head + sep + body)


async def send_test(make_transport: Callable[[], Transport], message: Message,
                    to: str) -> str:
    """Hand one message, re-addressed to ``to``, to the transport ``make_transport``
    makes; returns the provider's id."""
    address = normalize_email(to)
    transport = make_transport()
    await transport.open()
    try:
        return await transport.send(readdress(message, address))
    finally:
        await transport.close()
