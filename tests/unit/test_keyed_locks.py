"""Per-key locks: serialise one key, leave others free, and keep nothing once idle."""

from __future__ import annotations

import asyncio

from engine.keyed_locks import KeyedLocks


async def test_one_key_is_serialised_and_other_keys_run_alongside() -> None:
    locks: KeyedLocks[str] = KeyedLocks()
    log: list[str] = []

    async def work(key: str, name: str) -> None:
        async with locks(key):
            log.append(f"{name}+")
            await asyncio.sleep(0.01)
            log.append(f"{name}-")

    await asyncio.gather(work("a", "a1"), work("a", "a2"), work("b", "b1"))
    assert log.index("a1-") < log.index("a2+")          # same key: one after the other
    assert log.index("b1+") < log.index("a1-")          # another key did not wait
    assert len(locks) == 0 and not locks.busy("a")      # nothing kept once idle


async def test_a_cancelled_waiter_leaves_nothing_behind() -> None:
    locks: KeyedLocks[int] = KeyedLocks()
    held = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with locks(1):
            held.set()
            await release.wait()

    first = asyncio.create_task(holder())
    await held.wait()
    waiter = asyncio.create_task(locks(1).__aenter__())
    await asyncio.sleep(0)
    assert locks.busy(1)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    release.set()
    await first
    assert len(locks) == 0
