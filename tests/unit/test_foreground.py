"""Understanding first: background work waits while a message is understood (understanding/foreground.py)."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from pathlib import Path

import pytest

from engine.generation.model_loader import LoadedModel, load_model
from engine.generation.worker import ModelWorker
from engine.settings import ModelSettings
from engine.understanding.foreground import Foreground, lower_priority


def test_busy_counts_nested_calls_and_wakes_waiters() -> None:
    fg = Foreground()
    assert fg.idle and fg.wait_idle(0.0)
    woke = threading.Event()

    with fg.busy():
        with fg.busy():
            assert not fg.idle
        assert not fg.idle  # one call still in flight
        waiter = threading.Thread(target=lambda: fg.wait_idle(30.0) and woke.set())
        waiter.start()
        assert not fg.wait_idle(0.01) and not woke.wait(0.05)  # bounded wait: gives up, says so
    waiter.join(5.0)
    assert woke.is_set() and fg.idle


def test_busy_ends_however_the_block_ends() -> None:
    fg = Foreground()
    with pytest.raises(ValueError), fg.busy():
        raise ValueError("boom")
    assert fg.idle


@pytest.fixture(scope="module")
def tiny(models_dir: Path) -> LoadedModel:
    return load_model(ModelSettings(id="tiny:0"), models_dir)


async def test_worker_holds_its_steps_while_the_foreground_is_busy(tiny: LoadedModel) -> None:
    """A request submitted while a message is being understood starts only when that ends (or the
    bound passes); with nothing in the foreground it starts at once."""
    fg = Foreground()
    worker = ModelWorker(tiny, ModelSettings(id="tiny:0", max_new_tokens=4, understanding_first_ms=10_000), fg)
    worker.start()
    prompt = list(tiny.tokenizer("hello there")["input_ids"])
    try:
        free = "".join([d async for d in worker.submit(prompt)])
        with fg.busy():
            stream = worker.submit(prompt)
            first = asyncio.ensure_future(stream.__aiter__().__anext__())
            await asyncio.sleep(0.3)
            assert not first.done()  # held: not even its prefill ran
        chunk = await asyncio.wait_for(first, 30.0)
        rest = "".join([chunk, *[d async for d in stream]])
        assert rest == free  # holding changes when, never what
    finally:
        await worker.stop()


async def test_the_bound_keeps_decoding_going_under_a_flood(tiny: LoadedModel) -> None:
    """With the foreground never idle, decoding still proceeds, one step per bound."""
    fg = Foreground()
    worker = ModelWorker(tiny, ModelSettings(id="tiny:0", max_new_tokens=3, understanding_first_ms=20), fg)
    worker.start()
    prompt = list(tiny.tokenizer("hello there")["input_ids"])
    try:
        with fg.busy():
            text = "".join([d async for d in worker.submit(prompt)])
        assert text
    finally:
        await worker.stop()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priorities are Linux's")
def test_lower_priority_lowers_the_calling_thread_and_the_threads_it_starts_only() -> None:
    seen: dict[str, int] = {}

    def background() -> None:
        lower_priority()
        seen["thread"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

        def child() -> None:  # an OpenMP helper started later inherits it the same way
            seen["child"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

        helper = threading.Thread(target=child)
        helper.start()
        helper.join()

    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    worker = threading.Thread(target=background)
    worker.start()
    worker.join()
    assert seen == {"thread": 19, "child": 19}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before  # this thread untouched
