"""The contract between platform adapters and the engine.

Every type here is a frozen, slotted dataclass made of plain values, so it can be
logged, stored, or sent over the network (``to_dict`` / ``from_dict``) unchanged.
Platform leftovers go in ``extra``; anything the engine acts on is a typed field.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar

from pydantic import TypeAdapter

__all__ = [
    "ChannelKey",
    "Turn",
    "FeedbackKind",
    "Feedback",
    "FeedbackReceipt",
    "CorrectionUse",
    "Route",
    "FactUse",
    "ProgressUse",
    "Explanation",
    "Correction",
    "PersonalFact",
    "PersonalProfile",
    "ChannelSettings",
    "LoraVersion",
    "AuditEntry",
]


class _Serialisable:
    """``to_dict``/``from_dict`` for the contract's dataclasses, nested ones included.

    Validation is pydantic's, so a malformed payload from the network raises a
    ``pydantic.ValidationError`` that names the bad field.
    """

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = _type_adapter(type(self)).dump_python(self, mode="json")
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        return _type_adapter(cls).validate_python(dict(data))


_T = TypeVar("_T")
_TYPE_ADAPTERS: dict[type, TypeAdapter[Any]] = {}


def _type_adapter(cls: type[_T]) -> TypeAdapter[_T]:
    """Building a TypeAdapter costs milliseconds; each contract type needs one, once."""
    found = _TYPE_ADAPTERS.get(cls)
    if found is None:
        found = _TYPE_ADAPTERS[cls] = TypeAdapter(cls)
    return found


@dataclass(frozen=True, slots=True)
class ChannelKey(_Serialisable):
    """Where a conversation happens; everything heedful learns is keyed by it.

    ``space`` is the guild / workspace / group, ``channel`` the channel or chat, and
    ``thread`` an optional thread or forum topic. Learning is scoped to the channel
    (:attr:`scope`); history is kept per thread.
    """

    platform: str
    channel: str
    space: str = ""
    thread: str = ""

    def __post_init__(self) -> None:
        if not self.platform or not self.channel:
            raise ValueError("ChannelKey needs a platform and a channel")

    @property
    def scope(self) -> ChannelKey:
        """The learning scope: this key without its thread."""
        return self if not self.thread else dataclasses.replace(self, thread="")

    def __str__(self) -> str:
        parts = [self.platform, self.space, self.channel]
        if self.thread:
            parts.append(self.thread)
        return ":".join(parts)

    @classmethod
    def parse(cls, text: str) -> ChannelKey:
        """Inverse of ``str()``: ``platform:space:channel[:thread]``."""
        parts = text.split(":")
        if len(parts) not in (3, 4):
            raise ValueError(f"not a channel key: {text!r} (want platform:space:channel[:thread])")
        return cls(platform=parts[0], space=parts[1], channel=parts[2], thread=parts[3] if len(parts) == 4 else "")


@dataclass(frozen=True, slots=True)
class Turn(_Serialisable):
    """One message addressed to the bot."""

    channel: ChannelKey
    text: str
    author_id: str = ""
    author_name: str = ""
    message_id: str = ""
    """The platform's id of this message (empty when the platform has none)."""
    reply_to: str = ""
    """The platform id of the message this one replies to, if any."""
    extra: dict[str, str] = field(default_factory=dict)


class FeedbackKind(enum.StrEnum):
    CORRECTION = "correction"
    UP = "up"
    DOWN = "down"
    FORGET = "forget"


@dataclass(frozen=True, slots=True)
class Feedback(_Serialisable):
    """A user's judgement of one of the bot's replies.

    The target is either ``reply_id`` (the engine's id, as given by ``Reply.reply_id``)
    or ``message_id`` (a platform message id the platform adapter linked with
    ``Engine.link_message``). A correction may instead name the question directly in
    ``question`` (teaching without a prior reply).
    """

    channel: ChannelKey
    kind: FeedbackKind
    author_id: str = ""
    reply_id: str = ""
    message_id: str = ""
    text: str = ""
    """For corrections: the better answer."""
    question: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    needs_review: bool = False
    """For corrections from people who may not teach directly (``teach = "review"``): the
    correction waits, inactive, until a manager approves it (``Engine.review``). On a 👍 it
    means the person may not teach: the thumb counts, but confirms no paraphrase."""
    event_id: str = ""
    """The platform's id of the event that carried this feedback (e.g. a Telegram update
    id). Feedback with an event id is applied at most once per scope: the same event
    delivered again (a platform retry, a restart before the adapter recorded it) gets
    the first delivery's receipt and changes nothing."""
    personal: bool = False
    """For corrections: "just for me". The correction joins its author's personal scope in this
    channel (``author_id`` required) and shapes only the replies to that person, never anyone
    else's; it needs no review (``needs_review`` is ignored) and trains no channel LoRA."""


@dataclass(frozen=True, slots=True)
class FeedbackReceipt(_Serialisable):
    """The engine's acknowledgement: once returned, an accepted correction is durable."""

    accepted: bool
    message: str
    correction_id: int | None = None
    forgotten: int = 0
    pending: bool = False  # the correction waits for a manager's review


class Route(enum.StrEnum):
    """How a reply was produced."""

    CORRECTION = "correction"  # answered from a learned correction
    EXAMPLES = "examples"  # generated with learned corrections as worked examples
    BASE = "base"  # base model behaviour, nothing learned applied


@dataclass(frozen=True, slots=True)
class CorrectionUse(_Serialisable):
    """One learned correction that shaped a reply, and how strongly it matched."""

    correction_id: int
    question: str
    answer: str
    score: float  # the metric's similarity
    # The verifier's decision on it ("applies" | "related" | "none"; "" when no verifier ran)
    # and its probability that the correction applies to the message.
    verdict: str = ""
    probability: float | None = None
    personal: bool = False  # from the asker's personal scope ("just for me"), not the channel's
    # Slot classes ("number", "weekday", ...) in which the message names other values than every
    # phrasing this answer was taught with, and open classes ("product", "place", ...) in which it
    # names a sibling of what one names: why it was related context, not the answer.
    differs: tuple[str, ...] = ()

    def line(self) -> str:
        """One line of ``/why``: the scores and the correction."""
        checked = f", verifier {self.probability:.2f} -> {self.verdict}" if self.probability is not None else ""
        if self.differs:
            checked += f" (asks about another {' / '.join(_CLASS_WORDS.get(c, c) for c in self.differs)})"
        mine = " (just for you)" if self.personal else ""
        return f"  #{self.correction_id}{mine} score {self.score:.2f}{checked}: {self.question!r} -> {self.answer!r}"


# How /why names the slot classes whose names are not plain words (engine/learning/slots.py).
_CLASS_WORDS = {"relative_day": "day", "time_unit": "period", "relative": "this / next / last",
                "daypart": "time of day", "bound": "side of a number", "order": "before / after"}


@dataclass(frozen=True, slots=True)
class FactUse(_Serialisable):
    """One fact the asker told the bot about themselves that went into the prompt of a reply."""

    fact_id: int
    text: str
    score: float  # similarity of the message to the fact

    def line(self) -> str:
        """One line of ``/why``."""
        return f"  fact #{self.fact_id} score {self.score:.2f}: {self.text!r}"


@dataclass(frozen=True, slots=True)
class ProgressUse(_Serialisable):
    """One topic of the asker's tutoring progress that went into the prompt of a reply to them
    (docs/LEARNING.md, "Tutoring progress"): a question they asked earlier in the channel."""

    topic: str
    status: str  # "missed" (recap it) | "mastered" (do not explain it again)
    score: float  # similarity of the message to the topic
    answer: str = ""  # missed: what they missed (a correction's answer); "" when unknown (their 👎)

    def line(self) -> str:
        """One line of ``/why``."""
        what = (f" -> recap {self.answer!r}" if self.answer else " (found unclear)") if self.status == "missed" else ""
        return f"  {self.status} score {self.score:.2f}: {self.topic!r}{what}"


@dataclass(frozen=True, slots=True)
class Explanation(_Serialisable):
    """What shaped a reply; what ``/why`` shows."""

    reply_id: str
    channel: ChannelKey
    route: Route
    model: str
    corrections: tuple[CorrectionUse, ...] = ()
    answer_threshold: float = 0.0
    example_threshold: float = 0.0
    lora_version: str | None = None  # the channel's LoRA version that generated the reply (None: the base model)
    persona: str = ""
    notes: tuple[str, ...] = ()  # what else a user should know about this reply (e.g. LoRA is off with this backend)
    # The verification stage (docs/LEARNING.md): its name, its two thresholds, and the
    # candidates it turned away (verdict "none"), so /why shows every outcome with its score.
    verifier: str = ""
    apply_threshold: float | None = None
    related_threshold: float | None = None
    rejected: tuple[CorrectionUse, ...] = ()
    # The asker's personal scope (docs/LEARNING.md, "Personal scope"): whose it is ("" when none
    # of it shaped the reply) and the facts they told about themselves that joined the prompt; their
    # personal corrections are among ``corrections`` with ``personal`` set.
    person: str = ""
    facts: tuple[FactUse, ...] = ()
    # The asker's tutoring progress (docs/LEARNING.md, "Tutoring progress"): the topics they missed
    # or mastered earlier that the message relates to, most related first; ``person`` is set with them.
    progress: tuple[ProgressUse, ...] = ()
    # The asker's taste (docs/LEARNING.md, "Taste"), when candidates were generated for them: whose
    # it is ("person"), the signals seen ("signals", "up", "down"), what they taught per dimension
    # ("leanings": {dimension: {"prefers", "margin"}}), every candidate's style and score and the
    # index of the one sent ("candidates", "chosen"). Empty when no taste chose the reply.
    preference: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """As ``_Serialisable.from_dict``; also reads the pre-0.2 key ``adapter_version``."""
        data = dict(data)
        if "adapter_version" in data:
            data.setdefault("lora_version", data.pop("adapter_version"))
        return _type_adapter(cls).validate_python(data)

    def summary(self) -> str:
        """A short human-readable account, for ``/why``."""
        lines = [f"model {self.model}; LoRA version {self.lora_version or 'none'}; route {self.route.value}"]
        if not self.corrections:
            lines.append("no learned correction applied")
        lines += [use.line() for use in self.corrections]
        if self.rejected:
            lines.append("checked and turned away (a different question):")
            lines += [use.line() for use in self.rejected]
        if self.verifier:
            lines.append(f"thresholds: {self.verifier} applies >= {self.apply_threshold:.2f}, "
                         f"related >= {self.related_threshold:.2f}; retrieval >= {self.example_threshold:.2f}")
        else:
            lines.append(f"thresholds: answer >= {self.answer_threshold:.2f}, example >= {self.example_threshold:.2f}")
        if self.facts:
            lines.append(f"what {self.person or 'the asker'} told me about themselves (just for them):")
            lines += [fact.line() for fact in self.facts]
        if self.progress:
            lines.append(f"what {self.person or 'the asker'} asked here before (just for them):")
            lines += [use.line() for use in self.progress]
        if self.preference:
            lines += _taste_lines(self.preference)
        lines += list(self.notes)
        return "\n".join(lines)

    def for_viewer(self, viewer: str | None) -> Explanation:
        """This explanation as ``viewer`` may see it: whole for the person it answered (and for
        ``None``, a trusted caller such as a manager's CLI); for anyone else without the
        person's personal corrections, facts and tutoring progress, only a note that some shaped the reply, and
        without their taste (``preference``), only a note that it chose the reply."""
        if viewer is None:
            return self
        shown = self
        owner = str(self.preference.get("person", "")) if self.preference else ""
        if owner and viewer != owner:
            shown = dataclasses.replace(self, preference={}, notes=(
                *self.notes, "chosen among candidates by the asker's taste (only they can see it)"))
        if not self.person or viewer == self.person:
            return shown
        hidden = sum(use.personal for use in self.corrections) + len(self.facts) + len(self.progress)
        if not hidden:
            return shown
        note = f"shaped by {hidden} item(s) of the asker's personal profile (only they can see which)"
        return dataclasses.replace(shown, corrections=tuple(u for u in self.corrections if not u.personal),
                                   facts=(), progress=(), notes=(*shown.notes, note))


def _taste_lines(preference: Mapping[str, Any]) -> list[str]:
    """``/why``'s account of a reply the asker's taste chose: what it learned, and the candidates."""
    leanings = ", ".join(f"{dim} {v.get('prefers')} (+{float(v.get('margin', 0.0)):.2f})"
                         for dim, v in dict(preference.get("leanings", {})).items())
    lines = [f"your taste here, from {preference.get('signals', 0)} signal(s) ({preference.get('up', 0)} up, "
             f"{preference.get('down', 0)} down): {leanings or 'nothing yet'}"]
    candidates = list(preference.get("candidates", []))
    chosen = int(preference.get("chosen", 0))
    for i, c in enumerate(candidates):
        mark = "sent" if i == chosen else "    "
        lines.append(f"  {mark} candidate {i + 1} of {len(candidates)} ({c.get('style', '?')}): "
                     f"score {float(c.get('score', 0.0)):.2f}")
    return lines


@dataclass(frozen=True, slots=True)
class Correction(_Serialisable):
    """A learned correction as listed by ``/learned``.

    ``origin``: ``taught`` (a person's correction), ``confirmed`` (the asker's 👍 on an answer
    served from correction ``source_id`` made their question a member of that answer) or
    ``negative`` (``Engine.negatives``: a phrasing ``answer``, the answer of correction
    ``source_id``, was corrected on; it does not apply to messages like it)."""

    correction_id: int
    question: str
    answer: str
    author_id: str
    created_at: float
    origin: str = "taught"
    source_id: int | None = None
    person: str = ""  # a personal correction ("just for me") of this person; "" for the channel's


@dataclass(frozen=True, slots=True)
class PersonalFact(_Serialisable):
    """Something a person told the bot about themselves in one channel (``Engine.remember``)."""

    fact_id: int
    text: str
    created_at: float


@dataclass(frozen=True, slots=True)
class PersonalProfile(_Serialisable):
    """One person's personal scope in one channel: their facts and their "just for me" corrections."""

    channel: ChannelKey
    person: str
    facts: tuple[PersonalFact, ...] = ()
    corrections: tuple[Correction, ...] = ()

    def __len__(self) -> int:
        return len(self.facts) + len(self.corrections)


@dataclass(frozen=True, slots=True)
class ChannelSettings(_Serialisable):
    """Per-channel settings an admin can change from the chat."""

    persona: str = ""


@dataclass(frozen=True, slots=True)
class LoraVersion(_Serialisable):
    """One version of a channel's LoRA weights (trained from its corrections), as listed for admins."""

    version: int
    status: str  # active | retired | rejected | rolled_back
    created_at: float
    metrics: dict[str, float | int | str | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuditEntry(_Serialisable):
    """One change to what the bot learned or how it behaves: who, when, where, what."""

    entry_id: int
    channel: str  # the learning scope as ``platform:space:channel`` ("" for whole-store actions)
    author_id: str  # who did it ("" for the bot itself, e.g. a LoRA version it trained)
    action: str  # correction, correction_pending, approve, reject, forget, settings, rollback, lora_version, move, ...
    detail: dict[str, Any]
    created_at: float
