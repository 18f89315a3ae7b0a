"""Discord adapter overhead per turn, against the local fake Discord, excluding the model.

    .venv/bin/python benchmarks/bench_discord_adapter.py [--turns 200] [--concurrency 32] [--json]

The bot runs in a child process: the real adapter and discord.py, with a stand-in
engine that answers at once (no model, no store), so what is measured is the adapter,
discord.py and the wire: gateway event in -> typing, reply, edits out. The fake Discord
(``tests/fakes/discord.py``) runs in this process and times each turn from the moment it
dispatches MESSAGE_CREATE to the moment the answer's final text arrives; the child's
CPU time is read with psutil, so the fake's own work is not counted.

Phases: sequential short answers (one send + one final edit), the same with an edit per
chunk (``edit_interval = 0``: the cost of one streamed edit), a 5,000-character answer
(three messages), many channels at once, and a slash command answered ephemerally.
Last, with the real engine (tiny model answering from a learned correction, so no
generation), in this process: the same turn asked of the engine directly and through
Discord, interleaved; the paired difference is the adapter's share.
Prints a table and, last, one JSON line. Numbers are recorded in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TOKEN = "MTAwMDAwMDAwMDAwMDAwMDAw.bench.discord-token"
SHORT = "The office wifi password is tulip-00042; ask at the front desk if it changes."
LONG = " ".join(f"word{n}" for n in range(900))[:5000]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# -- the child: the adapter with a stand-in engine -------------------------------------------


class _Reply:
    def __init__(self, text: str, chunks: int) -> None:
        self.reply_id = uuid.uuid4().hex
        self.explanation = None
        self._text, self._chunks = text, chunks

    def __aiter__(self) -> AsyncIterator[str]:
        return self._stream()

    async def _stream(self) -> AsyncIterator[str]:
        size = -(-len(self._text) // self._chunks)  # ceil: exactly ``chunks`` chunks
        for start in range(0, len(self._text), size):
            yield self._text[start : start + size]
            await asyncio.sleep(0)


class StandInEngine:
    """Answers at once: the question "long ..." gets 5,000 characters, the rest a short answer."""

    def __init__(self, chunks: int) -> None:
        self.chunks = chunks

    def reply(self, turn: Any) -> _Reply:
        return _Reply(LONG if turn.text.startswith("long") else SHORT, self.chunks)

    async def link_message(self, channel: Any, reply_id: str, message_id: str) -> None:
        return None

    async def learned(self, channel: Any) -> list[Any]:
        return []

    def personas(self) -> dict[str, str]:
        return {"support": "", "tutor": ""}


async def serve(api_url: str, gateway_url: str, edit_interval: float, chunks: int) -> None:
    from adapters.discord import create
    from adapters.settings import DiscordSettings

    settings = DiscordSettings(token=TOKEN, api_url=api_url, gateway_url=gateway_url, edit_interval=edit_interval,
                               guild_ready_timeout=0.05, command_sync="off")
    adapter = create(StandInEngine(chunks), settings)  # type: ignore[arg-type]
    await adapter.start()
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.read)  # until the parent closes our stdin
    await adapter.stop()


# -- the parent: the fake Discord, users, and the clock ------------------------------------------


async def run_phase(args: argparse.Namespace, name: str, *, edit_interval: float = 1.0, chunks: int = 8,
                    turns: int, concurrency: int = 1, text: str = "what is the wifi password?",
                    command: bool = False) -> dict[str, Any]:
    import psutil

    from tests.fakes.discord import FakeDiscord

    async with FakeDiscord(TOKEN) as fake:
        fake.rate_limit = (100_000, 1.0)  # buckets never run dry: measure the overhead, not Discord's limits
        guild = fake.guild()
        user = fake.user("Ann")
        channels = [fake.text_channel(guild, f"c{i}") for i in range(concurrency)]
        child = subprocess.Popen(
            [sys.executable, __file__, "--serve", fake.api_url, fake.gateway_url, str(edit_interval), str(chunks)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )
        try:
            assert child.stdout is not None and child.stdin is not None
            line = await asyncio.to_thread(child.stdout.readline)
            assert line.strip() == "ready", f"the bot did not start: {line!r}"
            bot = psutil.Process(child.pid)

            async def one_turn(channel: dict[str, Any]) -> float:
                started = time.perf_counter()
                if command:
                    await fake.response(fake.slash(channel, user, "learned"), timeout=120)
                    return time.perf_counter() - started
                question = fake.say(channel, user, f"<@{fake.bot_id}> {text}", mentions=[fake.bot])
                expected = 3 if text.startswith("long") else 1

                def done() -> bool:
                    parts = fake.answer_to(question)
                    return len(parts) == expected and all(p.final for p in parts)

                await fake.wait_for(done, timeout=120, what=f"the answer in phase {name}")
                return time.perf_counter() - started

            for channel in channels:  # warm up every channel (caches, buckets, connections)
                await one_turn(channel)
            requests_before, cpu_before = len(fake.requests), sum(bot.cpu_times()[:2])
            latencies: list[float] = []
            started = time.perf_counter()
            for _ in range(max(1, turns // concurrency)):
                latencies += await asyncio.gather(*(one_turn(c) for c in channels))
            wall = time.perf_counter() - started
            cpu = sum(bot.cpu_times()[:2]) - cpu_before
            requests = len(fake.requests) - requests_before
        finally:
            if child.stdin is not None:
                child.stdin.close()
            await asyncio.to_thread(child.wait, 30)
    n = len(latencies)
    return {
        "phase": name, "turns": n, "concurrency": concurrency,
        "p50_ms": round(statistics.median(latencies) * 1000, 2), "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "bot_cpu_ms_per_turn": round(cpu / n * 1000, 2), "requests_per_turn": round(requests / n, 2),
        "turns_per_s": round(n / wall, 1),
    }


async def engine_phase(turns: int) -> dict[str, Any]:
    """The real engine (tiny model, MiniLM, SQLite) answering from a learned correction: no generation.

    In this one process, interleaved so that load from elsewhere hits both alike: the same
    turn asked of the engine directly, and asked through Discord (the fake and the adapter).
    """
    from adapters.discord import create
    from adapters.settings import DiscordSettings
    from bots.presets import PRESETS
    from engine import ChannelKey, Engine, EngineSettings, Feedback, FeedbackKind, Turn
    from engine.settings import ModelSettings
    from tests.fakes.discord import FakeDiscord

    question, paraphrase = "What is the wifi password at the office?", "whats the password for the office wifi?"
    answer = "The office wifi password is purple-otter-42."
    with tempfile.TemporaryDirectory() as data:
        settings = EngineSettings(data_dir=Path(data), models_dir=ROOT / ".cache" / "models",
                                  model=ModelSettings(id="tiny:0", max_new_tokens=24))
        settings.dialog.personas.update(PRESETS)
        async with Engine(settings) as engine, FakeDiscord(TOKEN) as fake:
            fake.rate_limit = (100_000, 1.0)
            guild, user = fake.guild(), fake.user("Ann")
            channel = fake.text_channel(guild, "bench")
            direct_key = ChannelKey("discord", "direct", space=guild.id)
            for key in (direct_key, ChannelKey("discord", channel["id"], space=guild.id)):
                await engine.feedback(Feedback(key, FeedbackKind.CORRECTION, question=question, text=answer))
            adapter = create(engine, DiscordSettings(token=TOKEN, api_url=fake.api_url, gateway_url=fake.gateway_url,
                                                     guild_ready_timeout=0.05, command_sync="off"))
            await adapter.start()
            direct: list[float] = []
            through: list[float] = []
            links: list[float] = []
            try:
                for i in range(turns + 3):
                    key = ChannelKey("discord", "direct", space=guild.id, thread=f"t{i}")
                    started = time.perf_counter()
                    reply = engine.reply(Turn(key, paraphrase, author_id="u", message_id=f"m{i}"))
                    assert await reply.collect() == answer
                    took = time.perf_counter() - started
                    started = time.perf_counter()
                    await engine.link_message(key, reply.reply_id, f"p{i}")
                    linked = time.perf_counter() - started
                    started = time.perf_counter()
                    asked = fake.say(channel, user, f"<@{fake.bot_id}> {paraphrase}", mentions=[fake.bot])
                    await fake.wait_for(lambda asked=asked: [p for p in fake.answer_to(asked)
                                                             if p.final and p.text == answer],
                                        timeout=120, what="the answer")
                    if i >= 3:  # the first turns warm caches up
                        direct.append(took)
                        links.append(linked)
                        through.append(time.perf_counter() - started)
                await adapter.idle()
            finally:
                await adapter.stop()
    paired = [t - d for t, d in zip(through, direct, strict=True)]
    return {
        "phase": "real engine, learned answer", "turns": turns,
        "engine_alone_p50_ms": round(statistics.median(direct) * 1000, 2),
        "through_discord_p50_ms": round(statistics.median(through) * 1000, 2),
        "paired_difference_p50_ms": round(statistics.median(paired) * 1000, 2),
        "link_message_p50_ms": round(statistics.median(links) * 1000, 2),
    }


async def bench(args: argparse.Namespace) -> list[dict[str, Any]]:
    n = args.turns
    return [
        await run_phase(args, "short answer (send + final edit)", turns=n),
        await run_phase(args, "edit per chunk (interval 0, 8 chunks)", turns=n // 2, edit_interval=0.0),
        await run_phase(args, "5,000 characters (3 messages)", turns=n // 4, text="long answer please"),
        await run_phase(args, f"{args.concurrency} channels at once", turns=n, concurrency=args.concurrency),
        await run_phase(args, "/learned (ephemeral interaction)", turns=n, command=True),
        await engine_phase(max(20, n // 4)),
    ]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        api_url, gateway_url, interval, chunks = sys.argv[2:6]
        asyncio.run(serve(api_url, gateway_url, float(interval), int(chunks)))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=200, help="turns per phase")
    parser.add_argument("--concurrency", type=int, default=32, help="channels answered at once in that phase")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    results = asyncio.run(bench(args))
    machine = {"python": platform.python_version(), "cpus": os.cpu_count(), "load": os.getloadavg()[0]}
    if not args.json:
        print(f"{'phase':40s} {'p50 ms':>8s} {'p99 ms':>8s} {'CPU ms/turn':>12s} {'req/turn':>9s} {'turns/s':>8s}")
        for r in results[:-1]:
            print(f"{r['phase']:40s} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['bot_cpu_ms_per_turn']:12.2f} "
                  f"{r['requests_per_turn']:9.2f} {r['turns_per_s']:8.1f}")
        e = results[-1]
        print(f"real engine, learned answer (no generation), interleaved: p50 {e['engine_alone_p50_ms']} ms asked "
              f"directly, {e['through_discord_p50_ms']} ms through Discord (paired difference p50 "
              f"{e['paired_difference_p50_ms']} ms); engine.link_message p50 {e['link_message_p50_ms']} ms")
    print(json.dumps({"machine": machine, "phases": results}))


if __name__ == "__main__":
    main()
