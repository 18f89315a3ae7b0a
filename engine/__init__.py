"""heedful's engine: the one surface platform adapters import.

>>> async with Engine(EngineSettings()) as engine:
...     reply = engine.reply(Turn(ChannelKey("console", "general"), "hello"))
...     async for chunk in reply: print(chunk, end="")
"""

import os as _os

# Before anything loads torch (its OpenMP runtime reads this once, when it loads): threads
# waiting for work sleep instead of spinning. On a small box the model worker's threads
# share the cores with the event loop, the encoder's thread and other processes, and
# spinning ones starve them: a SmolLM2 decode step measured 240-650 ms beside two busy
# processes with the default policy, 39 ms with PASSIVE (docs/BENCHMARKS.md, "Decode against
# the machine's limits"). An operator's own OMP_WAIT_POLICY wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
