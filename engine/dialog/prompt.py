"""Prompt assembly: persona, learned examples, history and the new message."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["ChatMessage", "PromptParts", "assemble", "second_person"]

ChatMessage = dict[str, str]  # {"role": ..., "content": ...} as chat templates expect


@dataclass(frozen=True, slots=True)
class PromptParts:
    persona: str
    examples: Sequence[tuple[str, str]]  # (question, answer) taught in this channel
    history: Sequence[tuple[str, str]]  # (role, text), oldest first
    message: str
    grounding: str = ""  # a verified answer the reply must convey (rephrase mode)
    # (question, answer) taught for a *related* question: context, not an answer to copy
    related: Sequence[tuple[str, str]] = ()
    # what the user being answered told about themselves (their personal scope): data about them
    profile: Sequence[str] = ()
    # their tutoring progress on related topics, most related first: (status "missed" | "mastered",
    # the question they asked earlier, what they missed: "" when unknown); data about them
    progress: Sequence[tuple[str, str, str]] = ()


_PERSON = [(re.compile(p, re.IGNORECASE), r) for p, r in (
    (r"\bI'm\b", "you're"), (r"\bI am\b", "you are"), (r"\bI've\b", "you've"), (r"\bI'll\b", "you'll"),
    (r"\bI\b", "you"), (r"\bme\b", "you"), (r"\bmy\b", "your"), (r"\bmine\b", "yours"),
    (r"\bmyself\b", "yourself"))]


def second_person(text: str) -> str:
    """``text`` a user said about themselves as the bot would say it back ("my plan is Pro" ->
    "Your plan is Pro"): English pronouns only; anything else is left as it was."""
    for pattern, replacement in _PERSON:
        text = pattern.sub(replacement, text)
    return text[:1].upper() + text[1:]


def assemble(parts: PromptParts, count_tokens: Callable[[list[ChatMessage]], int], budget: int) -> list[ChatMessage]:
    """Chat messages for the template, dropping the oldest history until ``budget`` fits.

    Examples go in as earlier exchanges: small models copy a demonstrated answer far
    more reliably than they follow an instruction to use it. So do the asker's facts about
    themselves (``profile``): each as the user's own message and the bot saying it back,
    right before the question, after the history (SmolLM2-135M carried 7 of 8 invented codes
    so, at most 5 of 8 from the system prompt; ``eval personal`` recall 0.58 placed before a
    channel's history, whose replies it copies instead, 0.91 right before the question).
    The asker's tutoring progress (``progress``) goes in the system text, each topic one line
    of plain text: what to recap and what not to explain again, not an answer to copy.
    """
    system = parts.persona.strip()
    if parts.examples:
        system += "\nThis channel's users taught you these answers; reuse them when a question matches."
    if parts.related:
        system += ("\nNotes this channel taught for related but different questions. Do not carry over a "
                   "detail (a day, number, name, place or product) that differs from the user's question:")
        for question, answer in parts.related:
            system += f"\n- Q: {question}\n  A: {answer}"
    if parts.progress:
        system += "\nWhat this student asked here before, on related topics:"
        for status, topic, answer in parts.progress:
            system += f"\n- {_progress_line(status, _flat(topic), _flat(answer))}"
    if parts.grounding:
        system += f"\nThe verified answer to the user's question is: {parts.grounding}\nRestate it faithfully."
    head: list[ChatMessage] = [{"role": "system", "content": system}]
    for question, answer in parts.examples:
        head += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    tail: list[ChatMessage] = []
    for fact in parts.profile:  # the user told it, the bot said it back: right before the question, copied
        tail += [{"role": "user", "content": fact}, {"role": "assistant", "content": second_person(fact)}]
    tail.append({"role": "user", "content": parts.message})
    history: list[ChatMessage] = [{"role": role, "content": text} for role, text in parts.history]
    while history and count_tokens(head + history + tail) > budget:
        history = history[1:]
    if history and history[0]["role"] == "assistant":
        history = history[1:]  # a window must not open mid-exchange
    return head + history + tail


def _progress_line(status: str, topic: str, answer: str) -> str:
    """One topic of the student's progress as the system prompt says it."""
    if status == "mastered":
        return f"This student already understands: {topic} Do not explain it again."
    if answer:
        return (f"Earlier this student asked: {topic} What they missed: {answer} "
                "Recap it briefly before going further.")
    return (f"Earlier this student asked: {topic} They found the explanation unclear: "
            "recap it briefly, in other words, before going further.")


def _flat(text: str) -> str:
    """``text`` as one sentence on one line (a student's question must not start lines of its own in
    the system prompt)."""
    text = " ".join(text.split())
    return text if not text or text[-1] in ".?!…" else text + "."
