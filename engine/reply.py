"""The engine's answer to a turn: an async stream of text chunks plus its explanation."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing

from .contract import Explanation

__all__ = ["Reply"]


class Reply:
    """Iterate it to receive the reply's text chunk by chunk.

    ``reply_id`` is known at once, so a platform adapter can link the platform messages it
    sends to it. ``explanation`` is set before the first chunk arrives. Leaving the
    iteration early, or cancelling the task that iterates, stops the generation and
    frees the model slot; what was produced so far is stored.
    """

    def __init__(self, run: Callable[[Reply], AsyncGenerator[str, None]]) -> None:
        self.reply_id: str = uuid.uuid4().hex
        self.explanation: Explanation | None = None
        self.text: str = ""
        self._run = run
        self._started = False

    def __aiter__(self) -> AsyncIterator[str]:
        if self._started:
            raise RuntimeError("a Reply can be iterated once")
        self._started = True
        return self._chunks()

    async def _chunks(self) -> AsyncGenerator[str, None]:
        chunks = self._run(self)
        async with aclosing(chunks):
            async for chunk in chunks:
                self.text += chunk
                yield chunk

    async def collect(self) -> str:
        """Consume the whole stream; returns the full text."""
        async for _ in self:
            pass
        return self.text
