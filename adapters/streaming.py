"""Platform-independent parts every chat adapter needs, written once.

- ``split_message``: cut a long reply into platform-sized messages without breaking
  a word or a fenced code block.
- ``ReplyStreamer``: post a reply as it is generated: send once, then edit at most
  every ``interval`` seconds, skip edits that change nothing, continue in a new
  message at the length limit, and make sure the final text lands even after rate
  limits (``RateLimited`` carries the wait).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import dataclass, field

__all__ = ["RateLimited", "split_message", "ReplyStreamer", "StreamResult"]

log = logging.getLogger(__name__)

_FENCE = "```"


class RateLimited(Exception):
    """Raised by an adapter's send/edit when the platform says "slow down"."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limited; retry after {retry_after:.1f} s")
        self.retry_after = max(0.0, float(retry_after))


def split_message(text: str, limit: int) -> list[str]:
    """Split ``text`` into parts of at most ``limit`` characters.

    Cuts prefer a paragraph break, then a line break, then a space; a word is cut
    only when it alone exceeds the limit. A fenced code block that spans a cut is
    closed at the end of one part and reopened (with its language tag) at the start
    of the next, so every part renders on its own. Joining the parts gives back the
    text, up to those added fences and the whitespace at the cuts.
    """
    if limit < 16:
        raise ValueError("limit too small to split sensibly")
    parts: list[str] = []
    rest = text
    reopen = ""  # the fence line to reopen with, when a code block spans the cut
    while rest:
        rest, reopen = reopen + rest, ""
        if len(rest) <= limit:
            parts.append(rest)
            break
        budget = limit - len(_FENCE) - 1  # room to close a fence at the cut
        cut = _best_cut(rest, budget)
        head, rest = rest[:cut].rstrip(), rest[cut:].lstrip(" \n")
        fence_open = _open_fence(head)
        if fence_open is not None:
            head += "\n" + _FENCE
            # A fence line too long to repeat is not worth reopening (and could never fit).
            reopen = fence_open + "\n" if len(fence_open) < limit // 4 else ""
        parts.append(head)
    return [p for p in parts if p.strip()]


def _best_cut(text: str, budget: int) -> int:
    window = text[: budget + 1]
    for separator in ("\n\n", "\n", " "):
        at = window.rfind(separator)
        if at > budget // 3:
            return at
    cut = budget
    while cut > 1 and text[cut - 1] == "`" and text[cut] == "`":
        cut -= 1  # never split a fence's backticks
    return cut


def _open_fence(text: str) -> str | None:
    """The opening fence line (e.g. ```python) if ``text`` ends inside a code block."""
    opened: str | None = None
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped.startswith(_FENCE):
            opened = None if opened is not None else stripped
    return opened


@dataclass
class StreamResult:
    """What a finished stream left on the platform."""

    message_ids: list[str] = field(default_factory=list)
    text: str = ""
    edits: int = 0
    retries: int = 0


SendFn = Callable[[str], Awaitable[str]]  # text -> new platform message id
EditFn = Callable[[str, str], Awaitable[None]]  # (message id, text)


class ReplyStreamer:
    """Streams one reply into one or more platform messages.

    ``send``/``edit`` are the adapter's platform calls; they raise ``RateLimited``
    when told to wait. Intermediate edits are best-effort (a rate-limited one is
    simply skipped); the final text of every message is retried until it lands or
    ``max_retries`` is exhausted. ``on_message`` is awaited with each new message
    id (adapters link it to the engine's reply there).
    """

    def __init__(
        self,
        send: SendFn,
        edit: EditFn,
        *,
        limit: int,
        interval: float = 1.0,
        placeholder: str = "…",
        max_retries: int = 8,
        on_message: Callable[[str], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.send, self.edit = send, edit
        self.limit, self.interval = limit, interval
        self.placeholder, self.max_retries = placeholder, max_retries
        self.on_message = on_message
        self.clock = clock
        self.result = StreamResult()
        self._shown: list[str] = []  # text currently visible in each message
        self._last_edit = 0.0
        self._blocked_until = 0.0

    async def stream(self, chunks: AsyncIterable[str]) -> StreamResult:
        """Consume ``chunks`` and leave the full text on the platform."""
        text = ""
        async for chunk in chunks:
            text += chunk
            now = self.clock()
            if not self._shown or (now - self._last_edit >= self.interval and now >= self._blocked_until):
                await self._show(text, final=False)
        await self._show(text, final=True)
        self.result.text = text
        return self.result

    async def _show(self, text: str, *, final: bool) -> None:
        parts = split_message(text, self.limit) if text.strip() else [self.placeholder]
        if not final:
            # Until the reply is done, keep a marker that more is coming.
            parts[-1] = parts[-1] + " " + self.placeholder if len(parts[-1]) + 2 <= self.limit else parts[-1]
        for index, part in enumerate(parts):
            if index < len(self._shown) and self._shown[index] == part:
                continue  # a no-op edit is an error on some platforms and wasted quota on all
            done = await self._deliver(index, part, final=final or index < len(parts) - 1)
            if not done:
                return
        self._last_edit = self.clock()

    async def _deliver(self, index: int, part: str, *, final: bool) -> bool:
        attempts = 0
        while True:
            try:
                if index < len(self._shown):
                    await self.edit(self.result.message_ids[index], part)
                    self.result.edits += 1
                else:
                    message_id = await self.send(part)
                    self.result.message_ids.append(message_id)
                    self._shown.append(part)
                    if self.on_message is not None:
                        await self.on_message(message_id)
                self._shown[index] = part
                return True
            except RateLimited as limited:
                self._blocked_until = self.clock() + limited.retry_after
                if not final and index < len(self._shown):
                    return False  # skip this intermediate edit; a later one carries the text
                attempts += 1
                self.result.retries += 1
                if attempts > self.max_retries:
                    log.warning("giving up on a message after %d rate-limited attempts", attempts)
                    raise
                await asyncio.sleep(limited.retry_after)
