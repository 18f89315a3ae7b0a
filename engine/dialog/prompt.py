"""Prompt assembly: persona, learned examples, history and the new message."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["ChatMessage", "PromptParts", "assemble"]

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


def assemble(parts: PromptParts, count_tokens: Callable[[list[ChatMessage]], int], budget: int) -> list[ChatMessage]:
    """Chat messages for the template, dropping the oldest history until ``budget`` fits.

    Examples go in as earlier exchanges: small models copy a demonstrated answer far
    more reliably than they follow an instruction to use it.
    """
    system = parts.persona.strip()
    if parts.examples:
        system += "\nThis channel's users taught you these answers; reuse them when a question matches."
    if parts.related:
        system += ("\nNotes this channel taught for related but different questions. Do not carry over a "
                   "detail (a day, number, name, place or product) that differs from the user's question:")
        for question, answer in parts.related:
            system += f"\n- Q: {question}\n  A: {answer}"
    if parts.grounding:
        system += f"\nThe verified answer to the user's question is: {parts.grounding}\nRestate it faithfully."
    head: list[ChatMessage] = [{"role": "system", "content": system}]
    for question, answer in parts.examples:
        head += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    tail: list[ChatMessage] = [{"role": "user", "content": parts.message}]
    history: list[ChatMessage] = [{"role": role, "content": text} for role, text in parts.history]
    while history and count_tokens(head + history + tail) > budget:
        history = history[1:]
    if history and history[0]["role"] == "assistant":
        history = history[1:]  # a window must not open mid-exchange
    return head + history + tail
