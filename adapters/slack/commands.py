"""``/heedful why|learned|personal|fixme|forget|persona|help``: each sub-command as engine calls.

No Slack calls here: ``run`` returns the text to show and whether the whole
channel should see it (``forget`` and a persona change), the adapter posts it.
A command acts on the channel it was typed in, and only there: a message link to
another channel's answer is refused, for ``why`` as for ``forget``. The personal scope's
sub-commands (``personal``, ``fixme``, ``forget me``) act on the user's own and answer
only them.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from engine import ChannelKey, Engine, FeedbackReceipt, HeedfulError, NotFound

from ..texts import clip, personal_text, stats_text
from .markup import escape, permalink_ts
from .views import TEXTS

__all__ = ["run"]

MayManage = Callable[[], Awaitable[bool]]
ForgetAnswer = Callable[[ChannelKey, str], Awaitable[FeedbackReceipt]]
ForgetAll = Callable[[ChannelKey, list[int] | None], Awaitable[int]]
CorrectMe = Callable[[ChannelKey, str], Awaitable[FeedbackReceipt]]
Refusal = Callable[[str], str]


async def run(engine: Engine, key: ChannelKey, user: str, text: str, *, may_manage: MayManage,
              forget_answer: ForgetAnswer, forget_all: ForgetAll, refusal: Refusal,
              last_reply: str = "", correct_me: CorrectMe | None = None) -> tuple[str, bool]:
    """Answer ``/heedful <text>`` from ``user`` in ``key``'s channel: (mrkdwn text, show to the channel).

    ``may_manage`` (the adapter's rule, ``BaseAdapter.may_manage``) is awaited only by the
    sub-commands that change the channel, and ``refusal(what)`` is the answer when it says
    no; ``forget_answer(channel, ts)`` forgets what shaped one answer (the adapter's
    ``feedback``), ``forget_all(channel, ids)`` everything or the listed corrections;
    ``last_reply`` is the ts of the bot's latest reply there (for a bare ``why``);
    ``correct_me(channel, text)`` corrects that reply just for ``user`` (``fixme``; the adapter's
    ``feedback`` with ``personal``). Engine errors become their message; nothing raises.
    """
    name, _, arg = text.strip().partition(" ")
    name, arg = name.lower(), arg.strip()
    try:
        if name in ("", "help"):
            return TEXTS.help_text(engine.personas()), False
        if name == "why":
            return await _why(engine, key, user, arg, last_reply), False
        if name == "learned":
            return TEXTS.learned_text(await engine.learned(key)), False
        if name == "personal":
            if not arg:
                return escape(personal_text(await engine.personal(key, user))), False
            await engine.remember(key, user, arg)
            return "Noted, just for you: only my replies to you use it. `/heedful forget me` removes it.", False
        if name == "fixme":
            if not arg or correct_me is None:
                return "Usage: `/heedful fixme <the better answer>` (corrects my last answer here, for you).", False
            return escape((await correct_me(key, arg)).message), False
        if name == "forget" and arg.lower() == "me":
            counts = await engine.forget_person(key, user)
            return (f"Forgot {counts['facts']} thing(s) you told me about yourself and {counts['corrections']} "
                    "correction(s) just for you in this channel."), False
        if name == "stats":
            return escape(stats_text(await engine.stats(key))), False
        if name == "forget":
            return await _forget(key, user, arg, may_manage, forget_answer, forget_all, refusal)
        if name == "persona":
            return await _persona(engine, key, user, arg, may_manage, refusal)
        return f"I don't know `{escape(clip(name, 40))}`.\n\n" + TEXTS.help_text(engine.personas()), False
    except HeedfulError as err:
        return escape(str(err)), False


async def _why(engine: Engine, key: ChannelKey, user: str, arg: str, last_reply: str) -> str:
    linked = permalink_ts(arg)
    if linked is not None and linked[0] != key.channel:
        return TEXTS.elsewhere_text()  # what another channel learned is read there, by its members
    ts = linked[1] if linked else last_reply
    try:
        explanation = await engine.explain(key, message_id=ts, viewer=user)
    except NotFound:
        return "I have not answered anything here yet (or that message is not one of my answers)."
    return TEXTS.explanation_text(explanation)


async def _forget(key: ChannelKey, user: str, arg: str, may_manage: MayManage, forget_answer: ForgetAnswer,
                  forget_all: ForgetAll, refusal: Refusal) -> tuple[str, bool]:
    linked = permalink_ts(arg)
    if linked is not None and linked[0] != key.channel:
        return TEXTS.elsewhere_text(), False  # a manager here is no manager there
    if not await may_manage():
        return refusal("make me forget"), False
    if linked is not None:  # forget what shaped one answer
        receipt = await forget_answer(key, linked[1])
        return f"<@{user}>: {escape(receipt.message)}", receipt.accepted
    ids = [int(n) for n in re.findall(r"#?\b(\d{1,12})\b", arg)] if arg else None
    if arg and not ids:
        return "Usage: `/heedful forget` (everything) or `/heedful forget #12 #15` (those corrections).", False
    count = await forget_all(key, ids)
    scope = "the listed corrections" if ids else "everything this channel taught me"
    return f"<@{user}> made me forget {scope}: {count} correction(s).", True


async def _persona(engine: Engine, key: ChannelKey, user: str, arg: str, may_manage: MayManage,
                   refusal: Refusal) -> tuple[str, bool]:
    if not arg:
        current = (await engine.channel_settings(key)).persona or "the default"
        presets = ", ".join(f"`{name}`" for name in engine.personas())
        return f"My persona here: {escape(clip(current, 300))}. Presets: {presets}.", False
    if not await may_manage():
        return refusal("change my persona"), False
    await engine.set_persona(key, arg, author_id=user)
    return f"<@{user}> set my persona here to: {escape(clip(arg, 300))}", True
