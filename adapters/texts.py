"""What the bot says on its own account (help, ``/learned``, ``/why``), written once for every platform.

Each platform adapter describes its markup, limits and commands in one ``Texts``
value (``adapters.discord.texts.TEXTS``, ``adapters.slack.views.TEXTS``,
``adapters.telegram._texts.TEXTS``); the wording and the layout are the same
everywhere. Pure functions of strings and engine data: no platform library here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from engine import Correction, Explanation, PersonalProfile

__all__ = ["Texts", "clip", "explanation_lines", "one_line", "personal_text", "stats_text"]

Markup = Callable[[str], str]


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, marked with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def one_line(text: str) -> str:
    """``text`` on one line, its runs of white space folded into single spaces."""
    return re.sub(r"\s+", " ", text).strip()


def _plain(text: str) -> str:
    return text


def explanation_lines(explanation: Explanation) -> str:
    """What shaped a reply, as plain lines (``Explanation.summary``): model, LoRA version, route,
    the corrections used and those the verifier turned away, each with its scores, the thresholds.

    The LoRA version is the channel's fine-tuned weights that generated the reply (none:
    the base model); the route says how the reply came about (``correction``,
    ``examples``, ``base``).
    """
    return explanation.summary()


@dataclass(frozen=True)
class Texts:
    """One platform's markup, limits and commands; the texts themselves are the methods.

    ``strong``, ``code`` and ``block`` mark text up (bold, inline code, a code block that
    also escapes what must not be read as markup); ``inline`` makes text from users safe
    to show on one line (no pings, no broken markup). ``place`` is what the platform
    calls the scope the bot learns in ("channel", "chat"). ``help_commands`` pairs a
    usage with what it does; ``{presets}`` in the latter becomes the persona presets.
    ``managers_only`` refuses someone who may not manage the bot here (``{what}``: the
    action refused), ``teachers_only`` the same where teachers manage it (``manage =
    "teachers"``). ``busy`` answers a question its channel's queue has no room for;
    ``gave_up`` ends a reply the platform would not let through (rate limits), and
    ``elsewhere`` refuses a gesture that names an answer in another channel.
    """

    limit: int
    help_intro: str
    help_teach: tuple[str, ...]
    help_commands: tuple[tuple[str, str], ...]
    forget_hint: str
    managers_only: str
    place: str = "channel"
    learned_hint: str = ""
    teachers_only: str = "Only people allowed to teach me here can {what}; ask an admin."
    busy: str = ("I'm answering too many questions here right now, so I can't take this one. "
                 "Please ask again in a minute.")
    gave_up: str = "(I could not finish this answer: the chat service kept refusing my messages. Please ask again.)"
    elsewhere: str = "That answer is in another {place}: use this in the {place} where I gave it."
    strong: Markup = _plain
    code: Markup = _plain
    block: Markup = _plain
    inline: Markup = one_line

    def elsewhere_text(self) -> str:
        """The refusal of a gesture that names an answer in another channel (``elsewhere``)."""
        return self.elsewhere.format(place=self.place)

    def help_text(self, presets: Iterable[str]) -> str:
        """How to talk to the bot and teach it, and every command (``presets``: the persona presets)."""
        names = ", ".join(presets) or "none"
        lines = [self.help_intro,
                 self.strong("Teach it") + f" (it learns per {self.place}, from the next similar question on):"]
        lines += ["• " + line for line in self.help_teach]
        lines.append(self.strong("Commands:"))
        lines += [f"• {self.code(usage)} {what.format(presets=names)}" for usage, what in self.help_commands]
        return "\n".join(lines)

    def learned_text(self, corrections: Sequence[Correction]) -> str:
        """``/learned``: as many corrections as fit in one message, then how many more there are."""
        if not corrections:
            return f"Nothing learned in this {self.place} yet.{self.learned_hint}"
        lines = [f"This {self.place} has taught me {len(corrections)} correction(s):"]
        size = len(lines[0])
        for c in corrections:
            line = (f"• {self.code(f'#{c.correction_id}')} {self.inline(clip(c.question, 120))}"
                    f" → {self.inline(clip(c.answer, 160))}")
            if size + len(line) + 1 > self.limit - 90:  # room for the line that says how many more
                break
            lines.append(line)
            size += len(line) + 1
        if len(lines) - 1 < len(corrections):
            lines.append(f"…and {len(corrections) - len(lines) + 1} more. {self.forget_hint}")
        return "\n".join(lines)

    def explanation_text(self, explanation: Explanation) -> str:
        """``/why``: what shaped one answer (``explanation_lines``), as a code block under a heading."""
        return self.strong("What shaped that answer") + "\n" + self.block(
            clip(explanation_lines(explanation), self.limit - 100))


def stats_text(stats: dict[str, Any]) -> str:
    """``Engine.stats`` as a few lines of chat (``/stats``)."""
    lora = stats["lora"]
    return "\n".join([
        f"Learning report, last {stats['days']} days:",
        f"  corrections: {stats['corrections']} active, {stats['pending']} waiting for review, "
        f"{stats['forgotten']} forgotten",
        f"  answers from corrections: {stats['from_corrections']} of {stats['answers']} "
        f"(👍 {stats['up']}, 👎 {stats['down']})",
        f"  corrected mistakes that came back: {stats['recurrences']} of {stats['asked_again']} "
        "corrected questions asked again",
        f"  LoRA versions: {sum(lora.values())} trained, {lora.get('active', 0)} serving, "
        f"{lora.get('rejected', 0)} rejected",
    ])


def personal_text(profile: PersonalProfile, inline: Markup = one_line) -> str:
    """A person's own personal scope in a channel, for them alone (``/personal``, the console's
    ``/learned``): what they told about themselves and their corrections just for them."""
    if not len(profile):
        return ("You have told me nothing about yourself here. /personal <something about you> tells me; "
                "only replies to you use it.")
    lines = ["Just for you (only replies to you use these; /forget me removes them):"]
    lines += [f"  fact #{f.fact_id}: {inline(clip(f.text, 200))}" for f in profile.facts]
    lines += [f"  #{c.correction_id}: {inline(clip(c.question, 120))} -> {inline(clip(c.answer, 160))}"
              for c in profile.corrections]
    return "\n".join(lines)
