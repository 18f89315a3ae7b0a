"""A message through the engine in tests: its reply's text, the reply, and what it explained."""

from __future__ import annotations

from engine import ChannelKey, Engine, Explanation, Turn
from engine.reply import Reply


async def ask(engine: Engine, key: ChannelKey, text: str, author: str = "asker") -> tuple[str, Reply]:
    """``author``'s message ``text`` in ``key``: the whole reply's text, and the reply."""
    reply = engine.reply(Turn(key, text, author_id=author))
    return await reply.collect(), reply


def explained(reply: Reply) -> Explanation:
    """The reply's explanation (there is one once its text was read)."""
    assert reply.explanation is not None
    return reply.explanation
