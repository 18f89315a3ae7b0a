"""heedful's engine: the one surface platform adapters import.

>>> async with Engine(EngineSettings()) as engine:
...     reply = engine.reply(Turn(ChannelKey("console", "general"), "hello"))
...     async for chunk in reply: print(chunk, end="")
"""

import os as _os

# Before anything loads torch (its OpenMP runtime reads these once, when it loads): threads
# waiting for work spin about 0.1 ms (GOMP_SPINCOUNT, ~100 spins a microsecond), then sleep.
# Spinning for libgomp's default 3 ms starved everything else on a small shared box (a
# SmolLM2 decode step took 240-650 ms beside two busy processes), while not spinning at all
# (PASSIVE alone) made each of a step's ~120 matrix products pay a wake-up: 38-42 ms a step
# instead of 24 ms (docs/BENCHMARKS.md, "One OpenMP team"). PASSIVE keeps libgomp's spin at 0
# when it is oversubscribed. An operator's own OMP_WAIT_POLICY or GOMP_SPINCOUNT wins.
if "OMP_WAIT_POLICY" not in _os.environ:
    _os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    _os.environ.setdefault("GOMP_SPINCOUNT", "10000")

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
