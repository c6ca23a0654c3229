"""Console: messages printed to stdout, for a quick look."""

from __future__ import annotations

import sys
from typing import Any

from newsletter.render.mime import Message
from newsletter.transports.base import Transport


class ConsoleTransport(Transport):
    name = "console"
    sends_mail = False

    @classmethod
    def from_config(cls, cfg: Any) -> ConsoleTransport:
        return cls()

    async def send(self, message: Message) -> str:
        out = sys.stdout.buffer
        out.write(message.data)
        out.write(b"\n")
        out.flush()
        return message.message_id
