"""An engine stand-in for measuring and fuzzing the platform adapters' runtime, not the model.

``StandInEngine`` offers the part of ``engine.Engine`` the adapters call (``reply``,
``link_message``, ``feedback``, ``explain``, ``learned``, ``forget``, ``set_persona``,
``channel_settings``, ``personas``, ``move_channel``, and the personal scope's ``remember``,
``personal``, ``forget_person``) with none of its cost: a reply
is a fixed text streamed in ``chunks`` pieces over ``turn_seconds``. Like the real
engine it holds a lock per thread while it writes a reply (and records how long:
``lock_holds``), and applies feedback carrying an event id at most once per scope.

``writes`` lists every call that would have changed what the real engine stores (a
turn, a link, feedback, a forget, a persona, a move, a fact): what the fuzz tests check stays
empty after malformed events.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine import (
    ChannelKey,
    ChannelSettings,
    Correction,
    Explanation,
    Feedback,
    FeedbackKind,
    FeedbackReceipt,
    InputError,
    NotFound,
    PersonalFact,
    PersonalProfile,
    Reply,
    Route,
    Turn,
)

__all__ = ["StandInEngine", "TurnRecord"]


@dataclass
class TurnRecord:
    """One turn the stand-in answered: when it began and ended, and how long it held its thread's lock."""

    channel: ChannelKey
    text: str
    reply_id: str
    asked_at: float
    started_at: float = 0.0
    finished_at: float = 0.0
    lock_held: float = 0.0
    chunks: list[str] = field(default_factory=list)


class StandInEngine:
    """Answers every turn with ``answer`` (default: ``"answer to: <question>"``), streamed over ``turn_seconds``."""

    settings = None

    def __init__(self, *, turn_seconds: float = 0.05, chunks: int = 5, answer: str | None = None) -> None:
        self.turn_seconds, self.chunk_count, self.answer = turn_seconds, chunks, answer
        self.turns: list[TurnRecord] = []
        self.writes: list[tuple[str, Any]] = []
        self.links: dict[tuple[ChannelKey, str], str] = {}  # (scope, platform message id) -> reply id
        self.replies: dict[str, TurnRecord] = {}
        self.corrections: dict[ChannelKey, list[Correction]] = defaultdict(list)
        self.facts: dict[tuple[ChannelKey, str], list[PersonalFact]] = defaultdict(list)
        self.personas_set: dict[ChannelKey, str] = {}
        self.applied: dict[tuple[ChannelKey, str], FeedbackReceipt] = {}
        self._locks: dict[ChannelKey, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._ids = itertools.count(1)

    # -- turns ------------------------------------------------------------------------------

    def text_for(self, turn: Turn) -> str:
        return self.answer if self.answer is not None else f"answer to: {turn.text}"

    def reply(self, turn: Turn) -> Reply:
        record = TurnRecord(turn.channel, turn.text, "", time.perf_counter())

        async def run(reply: Reply) -> AsyncGenerator[str, None]:
            record.reply_id = reply.reply_id
            if not turn.text.strip():
                raise InputError("Your message is empty.")
            self.writes.append(("turn", turn))
            self.turns.append(record)
            self.replies[reply.reply_id] = record
            async with self._locks[turn.channel]:
                held = time.perf_counter()
                record.started_at = held
                try:
                    words = self.text_for(turn).split(" ")
                    size = max(1, -(-len(words) // self.chunk_count))
                    pieces = [" ".join(words[i:i + size]) for i in range(0, len(words), size)]
                    for index, piece in enumerate(pieces):
                        if index:
                            await asyncio.sleep(self.turn_seconds / max(1, len(pieces) - 1))
                        chunk = piece if index == 0 else " " + piece
                        record.chunks.append(chunk)
                        yield chunk
                finally:
                    record.finished_at = time.perf_counter()
                    record.lock_held = record.finished_at - held

        return Reply(run)

    async def link_message(self, channel: ChannelKey, reply_id: str, platform_message_id: str) -> None:
        self.writes.append(("link", (channel, reply_id, platform_message_id)))
        self.links[(channel.scope, platform_message_id)] = reply_id

    # -- what was learned ---------------------------------------------------------------------

    def _target(self, channel: ChannelKey, message_id: str) -> TurnRecord | None:
        if message_id:
            reply_id = self.links.get((channel.scope, message_id))
            return self.replies.get(reply_id) if reply_id else None
        mine = [r for r in self.turns if r.channel == channel and r.finished_at]
        return mine[-1] if mine else None

    async def feedback(self, feedback: Feedback) -> FeedbackReceipt:
        once = (feedback.channel.scope, feedback.event_id)
        if feedback.event_id and once in self.applied:
            return self.applied[once]
        target = self._target(feedback.channel, feedback.message_id)
        if target is None and (feedback.message_id or not feedback.question):
            raise NotFound("that message is not one of my replies in this channel")
        if feedback.kind is FeedbackKind.CORRECTION:
            if not feedback.text.strip():
                raise InputError("The correction is empty.")
            question = feedback.question or (target.text if target is not None else "")
            correction = Correction(next(self._ids), question, feedback.text, feedback.author_id, time.time())
            self.corrections[feedback.channel.scope].append(correction)
            receipt = FeedbackReceipt(True, f"Learned: {feedback.text}", correction_id=correction.correction_id)
        elif feedback.kind is FeedbackKind.FORGET:
            receipt = FeedbackReceipt(True, "Forgot 0 correction(s).", forgotten=0)
        else:
            receipt = FeedbackReceipt(True, "Thanks for the feedback.")
        self.writes.append(("feedback", feedback))
        if feedback.event_id:
            self.applied[once] = receipt
        return receipt

    async def explain(self, channel: ChannelKey, *, reply_id: str = "", message_id: str = "",
                      viewer: str | None = None) -> Explanation:
        record = self.replies.get(reply_id) if reply_id else self._target(channel, message_id)
        if record is None or record.channel.scope != channel.scope:
            raise NotFound("there is no finished reply of mine to explain")
        return Explanation(record.reply_id, record.channel, Route.BASE, "stand-in")

    async def learned(self, channel: ChannelKey) -> list[Correction]:
        return list(self.corrections[channel.scope])

    async def forget(self, channel: ChannelKey, correction_ids: Sequence[int] | None = None, *,
                     author_id: str = "", event_id: str = "") -> int:
        kept = self.corrections[channel.scope]
        gone = [c for c in kept if correction_ids is None or c.correction_id in correction_ids]
        self.corrections[channel.scope] = [c for c in kept if c not in gone]
        self.writes.append(("forget", (channel, correction_ids)))
        return len(gone)

    async def remember(self, channel: ChannelKey, author_id: str, text: str) -> PersonalFact:
        if not author_id or not text.strip():
            raise InputError("The fact is empty.")
        self.writes.append(("fact", (channel, author_id, text)))
        fact = PersonalFact(next(self._ids), text, time.time())
        self.facts[(channel.scope, author_id)].append(fact)
        return fact

    async def personal(self, channel: ChannelKey, author_id: str) -> PersonalProfile:
        return PersonalProfile(channel.scope, author_id, tuple(self.facts[(channel.scope, author_id)]))

    async def forget_person(self, channel: ChannelKey, author_id: str, *, by: str = "") -> dict[str, int]:
        self.writes.append(("forget_person", (channel, author_id)))
        return {"facts": len(self.facts.pop((channel.scope, author_id), [])), "corrections": 0}

    async def move_channel(self, old: ChannelKey, new: ChannelKey) -> int:
        self.writes.append(("move", (old, new)))
        moved = self.corrections.pop(old.scope, [])
        self.corrections[new.scope].extend(moved)
        return len(moved)

    async def channel_settings(self, channel: ChannelKey) -> ChannelSettings:
        return ChannelSettings(persona=self.personas_set.get(channel.scope, ""))

    async def set_persona(self, channel: ChannelKey, persona: str, *, author_id: str = "") -> ChannelSettings:
        self.writes.append(("persona", (channel, persona)))
        self.personas_set[channel.scope] = persona
        return ChannelSettings(persona=persona)

    def personas(self) -> dict[str, str]:
        return {"support": "a support agent", "tutor": "a patient tutor"}
