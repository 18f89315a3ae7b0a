"""``/heedful why|learned|forget|persona|help``: each sub-command as engine calls.

No Slack calls here: ``run`` returns the text to show and whether the whole
channel should see it (``forget`` and a persona change), the adapter posts it.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from engine import ChannelKey, Engine, Feedback, FeedbackKind, HeedfulError, NotFound

from .markup import escape, permalink_ts
from .views import clip, explanation_text, help_text, learned_text

__all__ = ["run"]

MayTeach = Callable[[], Awaitable[bool]]


async def run(engine: Engine, key: ChannelKey, user: str, text: str, *, may_teach: MayTeach,
              last_reply: str = "") -> tuple[str, bool]:
    """Answer ``/heedful <text>`` from ``user`` in ``key``'s channel: (mrkdwn text, show to the channel).

    ``may_teach`` is awaited only by the sub-commands that change the channel;
    ``last_reply`` is the ts of the bot's latest reply there (for a bare ``why``).
    Engine errors become their message; nothing raises.
    """
    name, _, arg = text.strip().partition(" ")
    name, arg = name.lower(), arg.strip()
    try:
        if name in ("", "help"):
            return help_text(list(engine.personas())), False
        if name == "why":
            return await _why(engine, key, arg, last_reply), False
        if name == "learned":
            return learned_text(await engine.learned(key)), False
        if name == "forget":
            return await _forget(engine, key, user, arg, may_teach)
        if name == "persona":
            return await _persona(engine, key, user, arg, may_teach)
        return f"I don't know `{escape(clip(name, 40))}`.\n\n" + help_text(list(engine.personas())), False
    except HeedfulError as err:
        return escape(str(err)), False


async def _why(engine: Engine, key: ChannelKey, arg: str, last_reply: str) -> str:
    linked = permalink_ts(arg)
    if linked is not None:
        key = ChannelKey(key.platform, linked[0], space=key.space)
    ts = linked[1] if linked else last_reply
    try:
        explanation = await (engine.explain(key, message_id=ts) if ts else engine.explain(key))
    except NotFound:
        return "I have not answered anything here yet (or that message is not one of my answers)."
    return explanation_text(explanation)


async def _forget(engine: Engine, key: ChannelKey, user: str, arg: str, may_teach: MayTeach) -> tuple[str, bool]:
    if not await may_teach():
        return "Only people allowed to teach me here can make me forget; ask an admin.", False
    linked = permalink_ts(arg)
    if linked is not None:  # forget what shaped one answer
        receipt = await engine.feedback(Feedback(ChannelKey(key.platform, linked[0], space=key.space),
                                                 FeedbackKind.FORGET, author_id=user, message_id=linked[1]))
        return f"<@{user}>: {escape(receipt.message)}", receipt.accepted
    ids = [int(n) for n in re.findall(r"#?\b(\d{1,12})\b", arg)] if arg else None
    if arg and not ids:
        return "Usage: `/heedful forget` (everything) or `/heedful forget #12 #15` (those corrections).", False
    count = await engine.forget(key, ids)
    scope = "the listed corrections" if ids else "everything this channel taught me"
    return f"<@{user}> made me forget {scope}: {count} correction(s).", True


async def _persona(engine: Engine, key: ChannelKey, user: str, arg: str, may_teach: MayTeach) -> tuple[str, bool]:
    if not arg:
        current = (await engine.channel_settings(key)).persona or "the default"
        presets = ", ".join(f"`{name}`" for name in engine.personas())
        return f"My persona here: {escape(clip(current, 300))}. Presets: {presets}.", False
    if not await may_teach():
        return "Only people allowed to teach me here can change my persona; ask an admin.", False
    await engine.set_persona(key, arg)
    return f"<@{user}> set my persona here to: {escape(clip(arg, 300))}", True
