"""One asyncio lock per key, kept only while someone holds or waits for it.

The engine serialises turns per channel and corrections per learning scope. A
``defaultdict(asyncio.Lock)`` would keep a lock for every channel ever seen; this
drops a key's lock when its last user leaves, so a bot serving millions of channels
holds locks only for the ones busy right now.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

__all__ = ["KeyedLocks"]

K = TypeVar("K", bound=Hashable)


class KeyedLocks(Generic[K]):
    """``async with locks(key): ...`` holds ``key``'s lock; other keys go on concurrently."""

    def __init__(self) -> None:
        self._locks: dict[K, tuple[asyncio.Lock, int]] = {}  # key -> (lock, holders + waiters)

    @asynccontextmanager
    async def __call__(self, key: K) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        lock = lock or asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def busy(self, key: K) -> bool:
        """Whether someone holds or waits for ``key``'s lock."""
        return key in self._locks

    def __len__(self) -> int:
        """Keys with a lock now (busy ones)."""
        return len(self._locks)
