"""What heedful shows in Slack besides replies: the correction modal and command texts.

Pure functions that build Block Kit payloads and read them back, within Slack's
documented limits (a modal title 24 characters, a section 3,000, a plain-text
input 3,000, ``private_metadata`` 3,000).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine import Correction, Explanation

from .markup import escape, to_slack

__all__ = [
    "CORRECT_SHORTCUT",
    "WHY_SHORTCUT",
    "CORRECTION_VIEW",
    "ANSWER_BLOCK",
    "ANSWER_INPUT",
    "MAX_INPUT",
    "Target",
    "correction_modal",
    "read_correction",
    "help_text",
    "learned_text",
    "explanation_text",
    "clip",
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
    """The bot message a modal is about; travels in the view's ``private_metadata``."""

    team: str
    channel: str
    ts: str
    thread: str = ""

    def dump(self) -> str:
        return json.dumps({"team": self.team, "channel": self.channel, "ts": self.ts, "thread": self.thread})

    @classmethod
    def load(cls, raw: object) -> Target | None:
        try:
            data = json.loads(raw) if isinstance(raw, str) else None
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        fields = {k: data.get(k) for k in ("team", "channel", "ts", "thread")}
        if not all(isinstance(v, str) for v in fields.values()) or not (fields["channel"] and fields["ts"]):
            return None
        return cls(**fields)  # type: ignore[arg-type]


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, marked with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def correction_modal(answer_mrkdwn: str, target: Target) -> dict[str, Any]:
    """The "Correct this answer" modal: the answer as posted, and a field for the better one."""
    quoted = "\n".join("&gt; " + line for line in clip(answer_mrkdwn, _SECTION - 200).split("\n"))
    return {
        "type": "modal",
        "callback_id": CORRECTION_VIEW,
        "private_metadata": target.dump(),
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


def read_correction(view: Any) -> tuple[str, Target | None]:
    """The submitted better answer (stripped; may be empty) and the target it is for."""
    if not isinstance(view, dict):
        return "", None
    try:
        value = view["state"]["values"][ANSWER_BLOCK][ANSWER_INPUT]["value"]
    except (KeyError, TypeError):
        value = None
    return (value.strip() if isinstance(value, str) else ""), Target.load(view.get("private_metadata"))


def help_text(presets: Sequence[str]) -> str:
    return "\n".join(
        [
            "*heedful* answers when you mention it, in direct messages, and in threads it is part of.",
            "*Teach it* (it learns per channel, from the next similar question on):",
            "• reply in the thread with `correction: <the better answer>`",
            "• or use the message shortcut *Correct this answer* (⋮ on one of my messages)",
            "• react with :+1: or :-1: on an answer to rate it",
            "*Commands*",
            "• `/heedful why [message link]` what shaped my last answer here (or the linked one)",
            "• `/heedful learned` what this channel taught me",
            "• `/heedful forget [#id … | message link]` forget everything this channel taught me "
            "(or the listed corrections, or those behind the linked answer)",
            f"• `/heedful persona [preset|text]` show or set my persona (presets: {', '.join(presets) or 'none'})",
            "• `/heedful help` this text",
        ]
    )


def learned_text(corrections: Sequence[Correction], limit: int = _SECTION) -> str:
    if not corrections:
        return "Nothing learned in this channel yet."
    lines = [f"I learned {len(corrections)} correction(s) in this channel:"]
    shown = 0
    for c in corrections:
        line = f"• `#{c.correction_id}` {to_slack(clip(c.question, 120))} → {to_slack(clip(c.answer, 160))}"
        if sum(len(x) + 1 for x in lines) + len(line) > limit - 80:
            break
        lines.append(line)
        shown += 1
    if shown < len(corrections):
        lines.append(f"…and {len(corrections) - shown} more. `/heedful forget #id` removes one.")
    return "\n".join(lines)


def explanation_text(explanation: Explanation) -> str:
    return "*What shaped that answer*\n```" + escape(clip(explanation.summary(), _SECTION - 100)) + "```"
