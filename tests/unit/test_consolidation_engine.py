"""Background LoRA consolidation through the engine (tiny model, real store, real jobs)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from engine import ChannelKey, Engine, Feedback, FeedbackKind, Turn

pytestmark = pytest.mark.slow  # each test trains LoRA versions in the background

FACTS = [
    ("What is the wifi password?", "The wifi password is pelican-4417."),
    ("Who approves vacations?", "Vacations are approved by Marguerite."),
    ("Where is the printer?", "The printer is in room 4.12."),
    ("When is standup?", "Standup is at 9:30."),
    ("What is the door code?", "The door code is 7731."),
]
FAST = {"min_corrections": 4, "debounce_s": 0.0, "steps": 3, "min_locality": 0.0}


async def teach_all(engine: Engine, key: ChannelKey) -> None:
    for question, answer in FACTS:
        receipt = await engine.feedback(Feedback(key, FeedbackKind.CORRECTION, question=question, text=answer))
        assert receipt.accepted


async def settled(engine: Engine) -> None:
    assert engine.consolidator is not None
    await asyncio.sleep(0)  # let the debounce timers fire
    await asyncio.wait_for(engine.settle(), timeout=600)  # the public wait, as benchmarks use it


async def test_a_job_records_a_judged_version_and_serving_continues(make_engine: Callable) -> None:
    key = ChannelKey("test", "lora-a", space="s")
    other = ChannelKey("test", "lora-b", space="s")
    async with make_engine(lora=FAST | {"scope": "all"}) as engine:
        await teach_all(engine, key)
        # Turns are served while the job runs in the model thread.
        text = await engine.reply(Turn(other, "hello there")).collect()
        await settled(engine)
        versions = await engine.lora_versions(key)
        assert len(versions) >= 1
        newest = versions[0]
        assert newest.status in ("active", "rejected")
        assert {"held_out_loss", "base_held_out_loss", "locality", "decision"} <= set(newest.metrics)
        assert await engine.lora_versions(other) == []
        # Another channel's replies never change because of this channel's adapter.
        assert await engine.reply(Turn(other, "hello there")).collect() == text
        if newest.status == "active":
            reply = engine.reply(Turn(key, "tell me something"))
            await reply.collect()
            assert reply.explanation is not None and reply.explanation.lora_version == str(newest.version)
            previous = await engine.rollback_lora(key)  # an earlier version, or the base model
            again = engine.reply(Turn(key, "tell me something"))
            await again.collect()
            assert again.explanation is not None
            assert again.explanation.lora_version == (str(previous) if previous else None)


async def test_scoped_adapters_serve_only_messages_the_corrections_relate_to(make_engine: Callable) -> None:
    """``lora.scope = "related"`` (the default): an unrelated message gets the base model even in a
    channel with an active adapter, a related one (here: the examples route) gets the adapter, and
    the job judged locality only on the probes the adapter would serve."""
    key = ChannelKey("test", "lora-scope", space="s")
    # Never answered straight from a correction, so related messages are generated (with examples).
    learning = {"answer_threshold": 1.0, "example_threshold": 0.5, "adapt": False}
    async with make_engine(lora=FAST | {"min_locality": 0.0}, learning=learning) as engine:
        await teach_all(engine, key)
        await settled(engine)
        versions = await engine.lora_versions(key)
        assert versions and 0 <= versions[0].metrics["probes"] < 12  # "What is the capital of France?" and co.
        assert await engine._related(key, ["Can you tell me the wifi password?"]) == [True]
        assert await engine._related(key, ["Write a haiku about autumn rain."]) == [False]
        active = [v for v in versions if v.status == "active"]
        unrelated = engine.reply(Turn(key, "Write a haiku about autumn rain."))
        await unrelated.collect()
        assert unrelated.explanation is not None and unrelated.explanation.lora_version is None
        related = engine.reply(Turn(key, "Can you tell me the wifi password?"))
        await related.collect()
        assert related.explanation is not None and related.explanation.route.value == "examples"
        assert active and related.explanation.lora_version == str(active[0].version)  # promoted: no probe in scope


async def test_forget_retires_adapters_and_jobs_survive_restart(make_engine: Callable, tmp_path: Path) -> None:
    key = ChannelKey("test", "lora-c", space="s")
    slow = FAST | {"debounce_s": 3600.0}
    async with make_engine(data_dir=tmp_path / "d", lora=slow) as engine:
        await teach_all(engine, key)  # requested, but the debounce outlives this engine
        assert await engine.lora_versions(key) == []
    async with make_engine(data_dir=tmp_path / "d", lora=FAST) as engine:
        await settled(engine)  # the pending job was re-queued at start and ran
        assert len(await engine.lora_versions(key)) == 1
        await engine.forget(key)
        assert all(v.status != "active" for v in await engine.lora_versions(key))


async def test_changes_made_by_another_process_reach_the_running_engine(make_engine: Callable, tmp_path: Path) -> None:
    """``heedful forget`` / ``heedful adapters --rollback`` write the database from another
    process (here: another connection, as the CLI opens one); the running bot must follow."""
    from engine.store import Store

    key = ChannelKey("test", "elsewhere", space="s")

    async def served(text: str) -> tuple[str, str | None, str]:
        reply = engine.reply(Turn(key, text))
        answer = await reply.collect()
        assert reply.explanation is not None
        return reply.explanation.route.value, reply.explanation.lora_version, answer

    async with make_engine(data_dir=tmp_path / "d", lora=FAST | {"scope": "all"}) as engine:
        await teach_all(engine, key)
        await settled(engine)
        (job,) = [v for v in await engine.store.lora_versions(key, with_weights=True)][:1]
        assert job.weights is not None
        cli = Store(engine.settings.database_path)
        await cli.open()
        try:
            first = await cli.add_lora_version(key, job.weights, {}, "active")
            second = await cli.add_lora_version(key, job.weights, {}, "active")
            assert (await served("tell me something"))[1] == str(second)    # the newest active version serves
            assert await cli.rollback_lora(key) == first
            assert (await served("tell me something"))[1] == str(first)     # the rollback took effect at once
            assert (await served("what's the wifi password?"))[2] == FACTS[0][1]
            await cli.forget(key)
            route, _, answer = await served("what's the wifi password?")
            assert route != "correction" and "pelican-4417" not in answer  # forgotten means forgotten
            assert await engine.learned(key) == []
        finally:
            await cli.close()
