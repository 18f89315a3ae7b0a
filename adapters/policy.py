"""Rules every adapter applies the same way: who may teach, duplicates, gestures."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["CORRECTION_PREFIXES", "Deduplicator", "TeachPolicy", "parse_correction"]

CORRECTION_PREFIXES = ("correction:", "/fix ")


@dataclass(frozen=True)
class TeachPolicy:
    """Who may correct the bot (and use admin commands such as ``/forget``).

    ``everyone``: any member; ``admins``: platform admins only; ``listed``: admins and
    the user or group ids in ``allowed``; ``review``: admins directly, anyone else's
    corrections wait for an admin's approval (``reviewed``).
    """

    mode: Literal["everyone", "admins", "listed", "review"] = "everyone"
    allowed: frozenset[str] = field(default_factory=frozenset)

    def may_teach(self, user_id: str, *, is_admin: bool, groups: Iterable[str] = ()) -> bool:
        if self.mode == "everyone" or is_admin:
            return True
        if self.mode == "listed":
            return user_id in self.allowed or any(g in self.allowed for g in groups)
        return False

    @property
    def reviewed(self) -> bool:
        """Whether corrections from people who may not teach wait for review instead of being refused."""
        return self.mode == "review"

    refusal = "Only people allowed to teach me in this chat can correct me; ask an admin."


class Deduplicator:
    """Remembers recently seen event keys (bounded, with a time-to-live).

    Platforms re-deliver events (Slack retries, Telegram after a restart, gateway
    resumes); ``first(key)`` is True exactly once per key within ``ttl`` seconds.
    """

    def __init__(self, capacity: int = 10_000, ttl: float = 3600.0) -> None:
        self.capacity, self.ttl = capacity, ttl
        self._seen: OrderedDict[str, float] = OrderedDict()

    def first(self, key: str) -> bool:
        now = time.monotonic()
        while self._seen:
            oldest, at = next(iter(self._seen.items()))
            if now - at < self.ttl and len(self._seen) < self.capacity:
                break
            self._seen.pop(oldest)
        if key in self._seen:
            return False
        self._seen[key] = now
        return True


def parse_correction(text: str) -> str | None:
    """The better answer in a ``correction: ...`` / ``/fix ...`` message, else None."""
    stripped = text.strip()
    lowered = stripped.lower()
    for prefix in CORRECTION_PREFIXES:
        if lowered.startswith(prefix):
            return stripped[len(prefix) :].strip()
    return None
