"""Understanding first: background work waits while a message is understood (understanding/foreground.py)."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from engine import ChannelKey, Engine, Feedback, FeedbackKind, Route, Turn
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


def test_a_hold_ends_once_however_often_it_is_released() -> None:
    fg = Foreground()
    first, second = fg.hold(), fg.hold()
    first.release()
    first.release()  # a second release must not end the other call
    assert not fg.idle
    second.release()
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


async def test_a_running_prefill_pauses_between_its_layers_while_a_message_is_understood(tiny: LoadedModel) -> None:
    """A message that arrives while a prefill runs waits for one layer, not the whole prefill: the step
    goes on to its next layer only once the message is understood (or the bound passes)."""
    fg = Foreground()
    worker = ModelWorker(tiny, ModelSettings(id="tiny:0", max_new_tokens=4, understanding_first_ms=10_000), fg)
    assert worker._direct is not None and len(worker._direct.layers) >= 2
    first, second = worker._direct.layers[0], worker._direct.layers[1]
    down, qkv = first.down, second.qkv
    prompt = list(tiny.tokenizer("hello there, how are you today?")["input_ids"])
    worker.start()
    try:
        free = "".join([d async for d in worker.submit(prompt)])
        holds: list[Any] = []
        arrived, went_on = threading.Event(), threading.Event()

        def message_arrives(x: Any) -> Any:  # in the worker's thread, inside the first layer of the prefill
            if not holds:
                holds.append(fg.hold())
                arrived.set()
            return down(x)

        def next_layer(x: Any) -> Any:
            went_on.set()
            return qkv(x)

        first.down, second.qkv = message_arrives, next_layer  # type: ignore[assignment]
        stream = worker.submit(prompt)
        text = asyncio.ensure_future(_collect(stream))
        assert await asyncio.to_thread(arrived.wait, 30.0)
        await asyncio.sleep(0.3)
        assert not went_on.is_set()  # paused after the first layer
        holds[0].release()
        assert await asyncio.wait_for(text, 30.0) == free  # pausing changes when, never what
        assert went_on.is_set()
    finally:
        first.down, second.qkv = down, qkv  # type: ignore[assignment]
        await worker.stop()


async def _collect(stream: Any) -> str:
    return "".join([d async for d in stream])


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


def count_prefills(worker: ModelWorker) -> list[int]:
    """The rows of each prefill the worker runs, in order (observed, not replaced)."""
    sizes: list[int] = []
    join = worker._join

    def counted(batch: Any, joining: list[Any]) -> None:
        sizes.append(len(joining))
        join(batch, joining)

    worker._join = counted  # type: ignore[method-assign]
    return sizes


async def test_requests_that_arrive_while_the_foreground_is_busy_start_in_one_prefill(tiny: LoadedModel) -> None:
    """Rows submitted one by one while messages are understood start together once the foreground is
    idle: one prefill, not the first row alone and the rest after it, and the same text."""
    fg = Foreground()
    worker = ModelWorker(tiny, ModelSettings(id="tiny:0", max_new_tokens=4, understanding_first_ms=10_000), fg)
    worker.start()
    prefills = count_prefills(worker)
    prompts = [list(tiny.tokenizer(t)["input_ids"]) for t in ("hello there", "what time is it", "a b c d e f")]
    try:
        alone = ["".join([d async for d in worker.submit(p)]) for p in prompts]
        prefills.clear()
        holds = [fg.hold() for _ in prompts]
        streams = []
        for prompt, hold in zip(prompts, holds, strict=True):
            streams.append(worker.submit(prompt))
            hold.release()  # as a turn does once its request is with the worker
            await asyncio.sleep(0.05)  # the worker has long woken for the first by the last
        together = await asyncio.gather(*(text_of(s) for s in streams))
        assert prefills == [len(prompts)]
        assert together == alone
    finally:
        await worker.stop()


async def text_of(stream: AsyncIterator[str]) -> str:
    return "".join([d async for d in stream])


async def test_turns_that_arrive_together_share_a_prefill_and_leave_the_foreground(
        make_engine: Callable[..., AbstractAsyncContextManager[Engine]]) -> None:
    """Through the engine: a turn stays in the foreground until its request is with the model worker,
    so turns of several channels asked at once start in one prefill; once they are answered, whatever
    their route, nothing is left in the foreground (it would hold every later decode step)."""
    async with make_engine(max_new_tokens=4, understanding_first_ms=10_000) as engine:
        assert engine._worker is not None
        prefills = count_prefills(engine._worker)
        keys = [ChannelKey("test", f"together-{i}", space="s") for i in range(4)]
        replies = [engine.reply(Turn(key, "what is the wifi password?", author_id="u1")) for key in keys]
        await asyncio.gather(*(r.collect() for r in replies))
        assert prefills == [len(keys)]
        assert engine.encoder.foreground.idle

        receipt = await engine.feedback(Feedback(keys[0], FeedbackKind.CORRECTION, author_id="u1",
                                                 reply_id=replies[0].reply_id, text="It is pelican-4417."))
        assert receipt.accepted
        quoted = engine.reply(Turn(keys[0], "whats the password for the wifi?", author_id="u1"))
        assert "pelican-4417" in await quoted.collect()
        assert quoted.explanation is not None and quoted.explanation.route is Route.CORRECTION
        assert engine.encoder.foreground.idle
