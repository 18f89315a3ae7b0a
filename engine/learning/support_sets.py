"""The support sets of recently used learning scopes, held in memory.

A scope's support set is built from its stored corrections and negatives on first use (their
stored embeddings: nothing is re-embedded unless the encoder changed) and then kept up to date
in place as corrections arrive or are forgotten. At most ``capacity`` sets are held
(about 1.5 KB a correction); the least recently used is dropped and reloads from the
store when next asked. A scope that ``busy`` says is being changed is never dropped, so
an acknowledged correction always lands in the set that serves.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable

from ..contract import ChannelKey
from ..store import Store
from .matching import Matching
from .support_set import SupportSet

__all__ = ["SupportSets"]


class SupportSets:
    """``await sets.get(scope)``: the scope's support set, loaded once and cached (LRU)."""

    def __init__(self, store: Store, matching: Matching, capacity: int, busy: Callable[[ChannelKey], bool]) -> None:
        self.store, self.matching, self.capacity, self.busy = store, matching, capacity, busy
        self._sets: OrderedDict[ChannelKey, SupportSet] = OrderedDict()
        self._loading = asyncio.Lock()

    def __len__(self) -> int:
        return len(self._sets)

    def scopes(self) -> list[ChannelKey]:
        """The scopes held now, least recently used first."""
        return list(self._sets)

    def peek(self, scope: ChannelKey) -> SupportSet | None:
        """The held set of ``scope``, if any, without loading it or touching its recency."""
        return self._sets.get(scope)

    async def get(self, scope: ChannelKey) -> SupportSet:
        if scope not in self._sets:
            async with self._loading:
                if scope not in self._sets:
                    self._sets[scope] = await self.matching.support_set(*await self.store.support_rows(scope))
                    self._evict()
        self._sets.move_to_end(scope)
        return self._sets[scope]

    def drop(self, scope: ChannelKey) -> None:
        """Forget ``scope``'s set (it reloads when next asked), with its adaptation state."""
        support = self._sets.pop(scope, None)
        if support is not None:
            self.matching.release(support)

    def _evict(self) -> None:
        excess = len(self._sets) - self.capacity
        for scope in list(self._sets):
            if excess <= 0:
                break
            if not self.busy(scope):
                self.drop(scope)
                excess -= 1
