"""heedful's engine: the one surface platform adapters import.

>>> async with Engine(EngineSettings()) as engine:
...     reply = engine.reply(Turn(ChannelKey("console", "general"), "hello"))
...     async for chunk in reply: print(chunk, end="")
"""

from .contract import (
    AuditEntry,
    ChannelKey,
    ChannelSettings,
    Correction,
    CorrectionUse,
    Explanation,
    FactUse,
    Feedback,
    FeedbackKind,
    FeedbackReceipt,
    LoraVersion,
    PersonalFact,
    PersonalProfile,
    ProgressUse,
    Route,
    Turn,
)
from .engine import Engine
from .errors import EngineClosed, GenerationError, HeedfulError, InputError, NotFound, Overloaded
from .reply import Reply
from .settings import EngineSettings

__all__ = [
    "AdapterVersion",
    "AuditEntry",
    "ChannelKey",
    "ChannelSettings",
    "Correction",
    "CorrectionUse",
    "Engine",
    "EngineClosed",
    "EngineSettings",
    "Explanation",
    "FactUse",
    "Feedback",
    "FeedbackKind",
    "FeedbackReceipt",
    "GenerationError",
    "HeedfulError",
    "InputError",
    "LoraVersion",
    "NotFound",
    "Overloaded",
    "PersonalFact",
    "PersonalProfile",
    "ProgressUse",
    "Reply",
    "Route",
    "Turn",
]

AdapterVersion = LoraVersion
"""Deprecated (kept for one release): the old name of ``LoraVersion``."""
