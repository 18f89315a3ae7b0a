"""What heedful shows in Slack besides replies: the correction modal and command texts (``TEXTS``).

Pure functions that build Block Kit payloads and read them back, within Slack's
documented limits (a modal title 24 characters, a section 3,000, a plain-text
input 3,000, ``private_metadata`` 3,000).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from ..texts import Texts, clip
from .markup import escape, to_slack

__all__ = [
    "ANSWER_BLOCK",
    "ANSWER_INPUT",
    "CORRECTION_VIEW",
    "CORRECT_SHORTCUT",
    "MAX_INPUT",
    "TEXTS",
    "WHY_SHORTCUT",
    "Target",
    "correction_modal",
    "read_correction",
]

CORRECT_SHORTCUT = "heedful_correct"
"""callback_id of the message shortcut "Correct this answer" (see deploy/slack-manifest.yaml)."""
WHY_SHORTCUT = "heedful_why"
"""callback_id of the message shortcut "Why this answer?"."""
CORRECTION_VIEW = "heedful_correction"
ANSWER_BLOCK, ANSWER_INPUT = "better_answer", "text"
MAX_INPUT = 3000  # Slack's cap for a plain_text_input
_SECTION = 3000


@dataclass(frozen=True)
class Target:
    """The bot message a modal is about, and who opened it; travels in the view's ``private_metadata``.

    Signed (HMAC-SHA256 with a key only this bot has, ``dump``/``load``): a correction acts
    on the channel the shortcut was used in, and on no other, even if the metadata that
    comes back with the submission was made up.
    """

    team: str
    channel: str
    ts: str
    thread: str = ""
    user: str = ""

    def _fields(self) -> dict[str, str]:
        return {"team": self.team, "channel": self.channel, "ts": self.ts, "thread": self.thread, "user": self.user}

    def dump(self, key: bytes) -> str:
        fields = self._fields()
        return json.dumps(fields | {"sig": _sign(key, fields)})

    @classmethod
    def load(cls, raw: object, key: bytes) -> Target | None:
        """The target in ``raw``, or None when it is not one this bot signed (or unreadable)."""
        try:
            data = json.loads(raw) if isinstance(raw, str) else None
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        fields = {k: data.get(k) for k in ("team", "channel", "ts", "thread", "user")}
        if not all(isinstance(v, str) for v in fields.values()) or not (fields["channel"] and fields["ts"]):
            return None
        signature = data.get("sig")
        if not isinstance(signature, str) or not hmac.compare_digest(signature, _sign(key, fields)):
            return None
        return cls(**fields)  # type: ignore[arg-type]


def _sign(key: bytes, fields: dict[str, Any]) -> str:
    return hmac.new(key, json.dumps(fields, sort_keys=True).encode(), hashlib.sha256).hexdigest()


def correction_modal(answer_mrkdwn: str, target: Target, key: bytes) -> dict[str, Any]:
    """The "Correct this answer" modal: the answer as posted, and a field for the better one
    (``target`` signed with ``key`` in its metadata)."""
    quoted = "\n".join("&gt; " + line for line in clip(answer_mrkdwn, _SECTION - 200).split("\n"))
    return {
        "type": "modal",
        "callback_id": CORRECTION_VIEW,
        "private_metadata": target.dump(key),
        "title": {"type": "plain_text", "text": "Correct this answer"},
        "submit": {"type": "plain_text", "text": "Teach"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": "*My answer*\n" + quoted}},
            {
                "type": "input",
                "block_id": ANSWER_BLOCK,
                "label": {"type": "plain_text", "text": "The better answer"},
                "hint": {
                    "type": "plain_text",
                    "text": "I will give this answer to this question and its paraphrases, in this channel only.",
                },
                "element": {
                    "type": "plain_text_input",
                    "action_id": ANSWER_INPUT,
                    "multiline": True,
                    "max_length": MAX_INPUT,
                    "placeholder": {"type": "plain_text", "text": "What I should have said"},
                },
            },
        ],
    }


def read_correction(view: Any, key: bytes) -> tuple[str, Target | None]:
    """The submitted better answer (stripped; may be empty) and the target it is for (None
    when the metadata is missing, unreadable or not signed with ``key``)."""
    if not isinstance(view, dict):
        return "", None
    try:
        value = view["state"]["values"][ANSWER_BLOCK][ANSWER_INPUT]["value"]
    except (KeyError, TypeError):
        value = None
    return (value.strip() if isinstance(value, str) else ""), Target.load(view.get("private_metadata"), key)


TEXTS = Texts(
    limit=_SECTION,
    help_intro="*heedful* answers when you mention it, in direct messages, and in threads it is part of.",
    help_teach=(
        "reply in the thread with `correction: <the better answer>`",
        "or use the message shortcut *Correct this answer* (⋮ on one of my messages)",
        "react with :+1: or :-1: on an answer to rate it",
    ),
    help_commands=(
        ("/heedful why [message link]", "what shaped my last answer here (or the linked one)"),
        ("/heedful learned", "what this channel taught me"),
        ("/heedful personal [text]", "tell me something about you (only my replies to you use it); alone: what "
                                     "you told me, shown to you only"),
        ("/heedful fixme <better answer>", "correct my last answer here just for you"),
        ("/heedful forget me", "forget what you told me about yourself and your corrections just for you"),
        ("/heedful stats", "whether learning works here: this channel's numbers"),
        ("/heedful forget [#id … | message link]", "forget everything this channel taught me "
         "(or the listed corrections, or those behind the linked answer)"),
        ("/heedful persona [preset|text]", "show or set my persona (presets: {presets})"),
        ("/heedful help", "this text"),
    ),
    forget_hint="`/heedful forget #id` removes one.",
    managers_only="Only workspace admins can {what}; ask an admin.",
    strong=lambda text: f"*{text}*",
    code=lambda text: f"`{text}`",
    block=lambda text: "```" + escape(text) + "```",
    inline=to_slack,
)
"""``/heedful help``, ``learned`` and ``why`` in Slack mrkdwn, within a section's 3,000 characters."""
