"""What the bot says on its own account: the command list, help, and fixed replies."""

from __future__ import annotations

__all__ = [
    "COMMANDS", "START", "GROUP_HINT", "HELP", "NOT_TEXT", "PROMPT_MARK", "PROMPT_PRIVATE", "PROMPT_GROUP",
    "learned_list",
]

COMMANDS: tuple[tuple[str, str], ...] = (
    ("ask", "Ask me something (in groups: /ask <question>)"),
    ("fix", "Reply to my answer with /fix <the better answer>"),
    ("why", "What shaped my last answer (or the one you reply to)"),
    ("learned", "What this chat has taught me"),
    ("forget", "Forget what this chat taught me (admins)"),
    ("persona", "Show my persona; admins set it: /persona <preset or text>"),
    ("cancel", "Stop waiting for a correction"),
    ("help", "How to talk to me and teach me"),
    ("start", "Say hello"),
)
"""Registered with ``setMyCommands`` so clients offer them; the order is the menu's."""

START = (
    "Hi! I'm heedful. Ask me anything{where}.\n\n"
    "When I get something wrong, teach me: reply to my answer with /fix <the better answer>, "
    "or press ✏️ under it. I learn it for this chat only, and use it the next time someone asks "
    "something similar. 👍 and 👎 (buttons or reactions) tell me how I did.\n\n/help lists every command."
)
GROUP_HINT = " (in a group: mention me, reply to me, or use /ask)"

HELP = "\n".join(
    ["How to use me:", "• ask: write to me here; in groups mention me, reply to me, or use /ask <question>",
     "• teach: reply to my answer with /fix <better answer>, or press ✏️ and reply with it",
     "• rate: 👍 / 👎 under an answer, or as a reaction", "", "Commands:"]
    + [f"/{name} — {description}" for name, description in COMMANDS]
)

NOT_TEXT = "I can only read text for now. Please send your question as a text message."
PROMPT_MARK = "✏️"  # how a ForceReply prompt for a correction begins
PROMPT_PRIVATE = (
    "✏️ Reply to this message with the better answer, and I'll learn it for this chat. (/cancel to stop)"
)
PROMPT_GROUP = (
    "✏️ {who}, reply to this message with the better answer, and I'll learn it for this chat. (/cancel to stop)"
)


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def learned_list(items: list[tuple[int, str, str]], show: int = 20) -> str:
    """``/learned``: the latest ``show`` corrections, newest last."""
    if not items:
        return "Nothing learned in this chat yet. Reply to one of my answers with /fix <better answer> to teach me."
    lines = [f"This chat has taught me {len(items)} thing(s):"]
    if len(items) > show:
        lines.append(f"(the latest {show}; {len(items) - show} older ones not shown)")
    lines += [f"#{cid}: “{_short(q)}” → “{_short(a)}”" for cid, q, a in items[-show:]]
    return "\n".join(lines)
