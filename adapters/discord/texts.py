"""Pure text functions of the Discord adapter: mentions, gestures, and what commands show.

No discord.py objects here, only strings and ids, so each rule can be tested alone.
Discord's limits: 2,000 characters a message, a modal title and an input label 45,
a text input's value 4,000, a thread name 100.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from engine import Correction, Explanation

__all__ = [
    "MESSAGE_LIMIT",
    "MODAL_INPUT_LIMIT",
    "CORRECT_PREFIX",
    "clip",
    "strip_bot_mentions",
    "readable_mentions",
    "thumbs",
    "thread_name",
    "message_link",
    "learned_text",
    "explanation_text",
    "help_text",
    "parse_ids",
]

MESSAGE_LIMIT = 2000
MODAL_INPUT_LIMIT = 4000
CORRECT_PREFIX = "heedful:correct:"
"""custom_id prefix of the correction modal; the target message id follows."""

_USER = re.compile(r"<@!?(\d+)>")
_ROLE = re.compile(r"<@&(\d+)>")
_CHANNEL = re.compile(r"<#(\d+)>")
_LINK = re.compile(r"https?://(?:(?:ptb|canary)\.)?discord(?:app)?\.com/channels/(@me|\d+)/(\d+)/(\d+)")
_UP = {"👍", "+1", "thumbsup", "thumbs_up"}
_DOWN = {"👎", "-1", "thumbsdown", "thumbs_down"}
_SKIN_TONES = re.compile("[\U0001f3fb-\U0001f3ff\ufe0f]")


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, marked with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


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


def learned_text(corrections: Sequence[Correction], limit: int = MESSAGE_LIMIT) -> str:
    if not corrections:
        return "Nothing learned in this channel yet."
    lines = [f"I learned {len(corrections)} correction(s) in this channel:"]
    size, shown = len(lines[0]), 0
    for c in corrections:
        line = f"`#{c.correction_id}` {_inline(clip(c.question, 120))} → {_inline(clip(c.answer, 200))}"
        if size + len(line) + 1 > limit - 90:
            break
        lines.append(line)
        size += len(line) + 1
        shown += 1
    if shown < len(corrections):
        lines.append(f"…and {len(corrections) - shown} more. `/forget corrections:#id` removes one.")
    return "\n".join(lines)


def explanation_text(explanation: Explanation, limit: int = MESSAGE_LIMIT) -> str:
    body = clip(explanation.summary().replace("```", "'''"), limit - 40)
    return "**What shaped that answer**\n```\n" + body + "\n```"


def help_text(presets: Sequence[str]) -> str:
    return "\n".join(
        [
            "**heedful** answers when you mention it or reply to it, in direct messages, and in threads it started.",
            "**Teach it** (it learns per channel, from the next similar question on):",
            "• right-click one of my answers → *Apps* → **Correct this answer**",
            "• or reply to my answer with `correction: <the better answer>`",
            "• react 👍 or 👎 on an answer to rate it",
            "**Commands**",
            "• `/why [message]` what shaped my last answer here (or the linked one)",
            "• `/learned` what this channel taught me",
            "• `/forget [corrections]` forget everything this channel taught me (or `#12 #15`) — managers",
            f"• `/persona [persona]` show my persona, or set it (managers; presets: {', '.join(presets) or 'none'})",
        ]
    )


def _inline(text: str) -> str:
    """One line of plain text that cannot break out of its markup or ping anyone."""
    return re.sub(r"\s+", " ", text).replace("`", "'").replace("@", "@\u200b")
