"""The transport interface: finished messages in, an accepted id or an error out.

A transport only hands messages over. Retries, backoff, rate limits and the
ledger live in the pipeline, so every transport gets them the same way, and a
transport is small: ``send`` one message, optionally ``send_batch`` where the
provider has a batch endpoint.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, ClassVar

from newsletter.errors import TransportError
from newsletter.render.mime import Message


class Transport(abc.ABC):
    name: str = ""
    batch_size: int = 1  # messages per send_batch call
    writes_files: bool = False
    # Whether messages leave this machine: `send` asks before (or needs --yes) only then,
    # so callers ask this instead of comparing backend names.
    sends_mail: bool = True
    # The config section the transport is built from (``[smtp]``, ``[api]``...), None
    # for one that needs none; ``make_transport`` hands it that section alone.
    config_section: ClassVar[str | None] = None

    @classmethod
    def from_config(cls, cfg: Any) -> Transport:
        """Build from the transport's own config section, ``config_section`` (None when
        it has none); raise ConfigError if unusable. Registered backends define it; a
        transport made in code (tests) need not."""
        raise NotImplementedError(f"{cls.__name__} is not a registered backend")

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect / authenticate before the first message."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    @abc.abstractmethod
    async def send(self, message: Message) -> str:
        """Hand over one message; return the provider's id (or our Message-ID).

        Raise ``TransportError`` with ``permanent``/``bounce``/``retry_after`` set.
        """

    async def send_batch(self, messages: Sequence[Message]) -> list[str | TransportError]:
        """Several messages; per message an id or the error for that message."""
        out: list[str | TransportError] = []
        for m in messages:
            try:
                out.append(await self.send(m))
            except TransportError as exc:
                out.append(exc)
        return out
