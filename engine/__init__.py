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
    Feedback,
    FeedbackKind,
    FeedbackReceipt,
    LoraVersion,
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
    "Feedback",
    "FeedbackKind",
    "FeedbackReceipt",
    "GenerationError",
    "HeedfulError",
    "InputError",
    "LoraVersion",
    "NotFound",
    "Overloaded",
    "Reply",
    "Route",
    "Turn",
]

AdapterVersion = LoraVersion
"""Deprecated (kept for one release): the old name of ``LoraVersion``."""
