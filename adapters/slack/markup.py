"""Text between Slack's wire format and the engine's plain text: pure functions.

Slack sends message text with ``&``, ``<`` and ``>`` escaped and with mentions,
channels and links in angle brackets (``<@U123>``, ``<#C1|general>``,
``<https://x|label>``). The engine wants plain text; Slack wants its own "mrkdwn",
with those three characters escaped so that nothing the model (or a hostile
correction) writes can become a live ``<!channel>`` ping or a disguised link.
"""

from __future__ import annotations

import re

__all__ = ["escape", "from_slack", "mentions", "permalink_ts", "reaction_kind", "to_slack"]

_ANGLE = re.compile(r"<([^<>\n]{1,2000})>")
_FENCE_BLOCK = re.compile(r"```.*?(?:```|\Z)", re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]+`")
_FENCE_LANG = re.compile(r"^```[\w+#.-]+[ \t]*$", re.MULTILINE)
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*|__(?=\S)(.+?)(?<=\S)__")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_LINK = re.compile(r"\[([^\[\]\n|]{1,300})\]\((https?://[^\s()<>|]{1,2000})\)")
_PERMALINK = re.compile(r"/archives/([A-Z0-9]+)/p(\d{10})(\d{6})")


def mentions(text: str, user_id: str) -> bool:
    """Whether Slack-formatted ``text`` mentions ``user_id`` (``<@U123>`` or ``<@U123|name>``)."""
    return bool(user_id) and re.search(rf"<@{re.escape(user_id)}(?:\|[^>]*)?>", text) is not None


def from_slack(text: str, bot_user_id: str = "") -> str:
    """Plain text from a Slack message: the bot's own mentions removed, entities decoded.

    ``<@U1|ann>`` becomes ``@ann`` (``@U1`` without a label), ``<#C1|general>``
    ``#general``, ``<!here>`` ``@here``, ``<https://x|label>`` ``label (https://x)``.
    """

    def plain(match: re.Match[str]) -> str:
        target, _, label = match.group(1).partition("|")
        if target.startswith("@"):
            return "" if target[1:] == bot_user_id else "@" + (label or target[1:])
        if target.startswith("#"):
            return "#" + (label or target[1:])
        if target.startswith("!"):
            name = target[1:]
            if name.startswith("subteam^"):
                return label or "@" + name.partition("^")[2]
            if name.startswith("date^"):
                return label
            return "@" + name
        url = target.removeprefix("mailto:")
        return f"{label} ({url})" if label and label != url else url

    text = _ANGLE.sub(plain, text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").strip()


def escape(text: str) -> str:
    """Slack's three escapes; what every ``text`` field needs."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _prose(text: str) -> str:
    """Markdown prose (no code) as Slack mrkdwn; ``text`` is already escaped."""
    text = _HEADING.sub(lambda m: f"*{m.group(1)}*", text)
    text = _BOLD.sub(lambda m: f"*{m.group(1) or m.group(2)}*", text)
    text = _STRIKE.sub(lambda m: f"~{m.group(1)}~", text)
    # A link keeps its address in sight (Slack links it): a label never hides where it leads.
    return _LINK.sub(lambda m: m.group(1) if m.group(1) == m.group(2) else f"{m.group(1)} ({m.group(2)})", text)


def to_slack(text: str) -> str:
    """Slack mrkdwn for the engine's (Markdown-ish) text, safe to post.

    Escapes ``&``, ``<``, ``>`` everywhere, so no mention, channel ping or disguised
    link can be smuggled in; outside code converts ``**bold**``, ``~~strike~~`` and
    headings, and writes ``[label](https://x)`` as ``label (https://x)``; drops a
    fence's language tag, which Slack would show as the first line of code.
    """
    out: list[str] = []
    at = 0
    for block in _FENCE_BLOCK.finditer(text):
        out.append(_inline(text[at : block.start()]))
        out.append(_FENCE_LANG.sub("```", escape(block.group(0))))
        at = block.end()
    out.append(_inline(text[at:]))
    return "".join(out)


def _inline(text: str) -> str:
    out: list[str] = []
    at = 0
    for code in _INLINE_CODE.finditer(text):
        out.append(_prose(escape(text[at : code.start()])))
        out.append(escape(code.group(0)))
        at = code.end()
    out.append(_prose(escape(text[at:])))
    return "".join(out)


def permalink_ts(text: str) -> tuple[str, str] | None:
    """``(channel, ts)`` from a Slack message link (``.../archives/C1/p1700000000123456``)."""
    found = _PERMALINK.search(text)
    return (found.group(1), f"{found.group(2)}.{found.group(3)}") if found else None


_UP = {"+1", "thumbsup"}
_DOWN = {"-1", "thumbsdown"}


def reaction_kind(name: str) -> str | None:
    """``"up"``/``"down"`` for a thumbs reaction (any skin tone), else None."""
    base = name.split("::", 1)[0]
    return "up" if base in _UP else "down" if base in _DOWN else None
