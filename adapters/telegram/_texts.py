"""What the bot says on its own account: the command list, help, and fixed replies."""

from __future__ import annotations

from ..texts import Texts
from ._delivery import LIMIT

__all__ = ["COMMANDS", "GROUP_HINT", "NOT_TEXT", "PROMPT_GROUP", "PROMPT_MARK", "PROMPT_PRIVATE", "START", "TEXTS"]

COMMANDS: tuple[tuple[str, str], ...] = (
    ("ask", "Ask me something (in groups: /ask <question>)"),
    ("fix", "Reply to my answer with /fix <the better answer>"),
    ("fixme", "Reply to my answer with /fixme <the better answer>: just for you"),
    ("personal", "Tell me about you: /personal <text> (only my replies to you use it)"),
    ("why", "What shaped my last answer (or the one you reply to)"),
    ("learned", "What this chat has taught me"),
    ("stats", "Whether learning works here: this chat's numbers"),
    ("forget", "Forget what this chat taught me (admins); /forget me: what you told me"),
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

TEXTS = Texts(
    limit=LIMIT,
    place="chat",
    help_intro="Ask me anything: write to me here; in groups mention me, reply to me, or use /ask <question>.",
    help_teach=("reply to my answer with /fix <the better answer>, or press ✏️ under it and reply with it",
                "rate an answer with 👍 / 👎, under it or as a reaction"),
    help_commands=tuple((f"/{name}", description) for name, description in COMMANDS),
    forget_hint="As a reply to my answer, /forget removes what shaped it (admins).",
    managers_only="Only the chat's admins can {what}.",
    learned_hint=" Reply to one of my answers with /fix <better answer> to teach me.",
)
"""``/help``, ``/learned`` and ``/why`` in Telegram: plain text (no parse mode)."""

NOT_TEXT = "I can only read text for now. Please send your question as a text message."
PROMPT_MARK = "✏️"  # how a ForceReply prompt for a correction begins
PROMPT_PRIVATE = (
    "✏️ Reply to this message with the better answer, and I'll learn it for this chat. (/cancel to stop)"
)
PROMPT_GROUP = (
    "✏️ {who}, reply to this message with the better answer, and I'll learn it for this chat. (/cancel to stop)"
)

