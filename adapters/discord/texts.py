"""Pure text functions of the Discord adapter: mentions, gestures, and what commands show (``TEXTS``).

No discord.py objects here, only strings and ids, so each rule can be tested alone.
Discord's limits: 2,000 characters a message, a modal title and an input label 45,
a text input's value 4,000, a thread name 100.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from ..texts import Texts, clip, one_line

__all__ = [
    "CORRECT_PREFIX",
    "CORRECT_ME_PREFIX",
    "MESSAGE_LIMIT",
    "MODAL_INPUT_LIMIT",
    "TEXTS",
    "explanation_text",
    "help_text",
    "learned_text",
    "message_link",
    "parse_ids",
    "readable_mentions",
    "strip_bot_mentions",
    "thread_name",
    "thumbs",
]

MESSAGE_LIMIT = 2000
MODAL_INPUT_LIMIT = 4000
CORRECT_PREFIX = "heedful:correct:"
"""custom_id prefix of the correction modal; the target message id follows."""
CORRECT_ME_PREFIX = "heedful:correctme:"
"""custom_id prefix of the "just for me" correction modal (``CORRECT_PREFIX``'s layout)."""

_USER = re.compile(r"<@!?(\d+)>")
_ROLE = re.compile(r"<@&(\d+)>")
_CHANNEL = re.compile(r"<#(\d+)>")
_LINK = re.compile(r"https?://(?:(?:ptb|canary)\.)?discord(?:app)?\.com/channels/(@me|\d+)/(\d+)/(\d+)")
_UP = {"👍", "+1", "thumbsup", "thumbs_up"}
_DOWN = {"👎", "-1", "thumbsdown", "thumbs_down"}
_SKIN_TONES = re.compile("[\U0001f3fb-\U0001f3ff\ufe0f]")


def strip_bot_mentions(content: str, bot_id: int, bot_role_ids: Sequence[int] = ()) -> str:
    """The message without the mentions addressing the bot (its user, or its managed role)."""
    text = re.sub(rf"<@!?{bot_id}>", " ", content)
    for role in bot_role_ids:
        text = text.replace(f"<@&{role}>", " ")
    return re.sub(r"[ \t]{2,}", " ", text).strip()


def readable_mentions(
    content: str,
    users: Callable[[int], str | None],
    roles: Callable[[int], str | None],
    channels: Callable[[int], str | None],
) -> str:
    """Other mentions as the names people see (``@Ann``, ``@mods``, ``#general``), for the model to read."""
    text = _USER.sub(lambda m: "@" + (users(int(m.group(1))) or "someone"), content)
    text = _ROLE.sub(lambda m: "@" + (roles(int(m.group(1))) or "role"), text)
    return _CHANNEL.sub(lambda m: "#" + (channels(int(m.group(1))) or "channel"), text)


def thumbs(emoji: str) -> str | None:
    """``"up"``/``"down"`` for 👍/👎 (any skin tone), else None."""
    plain = _SKIN_TONES.sub("", emoji).strip(":")
    if plain in _UP:
        return "up"
    if plain in _DOWN:
        return "down"
    return None


def thread_name(question: str, limit: int = 90) -> str:
    """A thread name from the question: its first line, without markup, at most ``limit`` characters."""
    line = next((part for part in question.splitlines() if part.strip()), "")
    line = re.sub(r"[`*_~|>#]+", "", line).strip()
    return clip(line, limit) or "heedful"


def message_link(text: str) -> tuple[str, int, int] | None:
    """(guild id or "@me", channel id, message id) of a Discord message link, else None."""
    match = _LINK.search(text)
    if match is None:
        return None
    return match.group(1), int(match.group(2)), int(match.group(3))


def parse_ids(text: str) -> list[int] | None:
    """Correction ids in ``"#12 #15"``, ``"12, 15"``; None when the text holds anything else."""
    tokens = [t for t in re.split(r"[\s,]+", text.strip()) if t]
    if not tokens or not all(re.fullmatch(r"#?\d{1,12}", t) for t in tokens):
        return None
    return [int(t.lstrip("#")) for t in tokens]


def _inline(text: str) -> str:
    """One line of plain text that cannot break out of its markup or ping anyone."""
    return one_line(text).replace("`", "'").replace("@", "@\u200b")


TEXTS = Texts(
    limit=MESSAGE_LIMIT,
    help_intro="**heedful** answers when you mention it or reply to it, in direct messages, and in threads it started.",
    help_teach=(
        "right-click one of my answers → *Apps* → **Correct this answer**",
        "or reply to my answer with `correction: <the better answer>`",
        "*Apps* → **Correct just for me**: the better answer for the answers to you only",
        "react 👍 or 👎 on an answer to rate it",
    ),
    help_commands=(
        ("/why [message]", "what shaped my last answer here (or the linked one)"),
        ("/learned", "what this channel taught me"),
        ("/personal [about_you]", "tell me something about you (only my answers to you use it); alone: what you "
                                  "told me, shown to you only"),
        ("/stats", "whether learning works here: this channel's numbers"),
        ("/forget [corrections]", "forget everything this channel taught me (or `#12 #15`) — managers; "
                                  "`me`: what you told me about yourself, and your corrections just for you"),
        ("/persona [persona]", "show my persona, or set it (managers; presets: {presets})"),
    ),
    forget_hint="`/forget corrections:#id` removes one.",
    managers_only="Only members with Manage Server (or a role allowed to manage heedful) can {what}.",
    strong=lambda text: f"**{text}**",
    code=lambda text: f"`{text}`",
    block=lambda text: "```\n" + text.replace("```", "'''") + "\n```",
    inline=_inline,
)
"""``/help``, ``/learned`` and ``/why`` in Discord markdown, within a message's 2,000 characters."""

learned_text = TEXTS.learned_text
explanation_text = TEXTS.explanation_text
help_text = TEXTS.help_text
