"""Telegram adapter overhead per turn, against the local fake Bot API server, excluding the model.

    .venv/bin/python benchmarks/bench_telegram_adapter.py [--turns 200] [--concurrent 50] [--json]

A turn is timed from the moment the fake hands an update to the bot (its answer to a
waiting ``getUpdates`` long poll, or its webhook POST) until the fake receives the
first ``sendMessage`` (or ``sendMessageDraft``) for it, and until the answer's final
text has landed. Everything runs in this one process: the real python-telegram-bot
stack over HTTP, the adapter, and the fake server on the other side of every call, so
the numbers (and the CPU time per turn) include the fake's own work: an upper bound of
the adapter's cost.

- ``canned``: an engine stand-in that answers at once with a fixed 40-word text (no
  model, no store): what the adapter, the library and the Bot API round trips cost.
- ``engine``: the real engine (tiny random model, MiniLM, SQLite) answering from a
  learned correction, which needs no generation; the overhead is the turn through
  Telegram minus the same turn asked of the engine directly.

Prints a table and, last, one JSON line. Numbers are recorded in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adapters.settings import TelegramSettings
from adapters.telegram import TelegramAdapter, create
from bots.presets import PRESETS
from engine import (
    ChannelKey,
    Engine,
    EngineSettings,
    Feedback,
    FeedbackKind,
    FeedbackReceipt,
    Reply,
    Turn,
)
from engine.settings import ModelSettings
from tests.fakes.telegram import Call, FakeTelegram

TOKEN = "123456789:BENCH-token"
ANSWER = " ".join(f"word{i}" for i in range(40))
QUESTION = "What is the door code of lab 3?"
PARAPHRASE = "whats the door code for lab 3?"


class CannedEngine:
    """Stands in for the engine: answers every turn at once with ``ANSWER``, stores nothing."""

    settings = None

    def reply(self, turn: Turn) -> Reply:
        async def run(reply: Reply) -> AsyncIterator[str]:
            for index, word in enumerate(ANSWER.split(" ")):
                yield word if index == 0 else " " + word

        return Reply(run)

    async def link_message(self, channel: ChannelKey, reply_id: str, platform_message_id: str) -> None:
        return None

    async def feedback(self, feedback: Feedback) -> FeedbackReceipt:
        return FeedbackReceipt(True, "ok")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def first_send_at(calls: list[Call]) -> float:
    return min(c.at for c in calls if c.method in ("sendMessage", "sendMessageDraft") and c.status == 200)


def final_at(calls: list[Call]) -> float:
    return max(c.at for c in calls if c.method in ("sendMessage", "editMessageText") and c.status == 200)


class Bench:
    def __init__(self, tg: FakeTelegram) -> None:
        self.tg = tg
        self.next_chat = 1000

    def chat(self, group: bool) -> tuple[dict[str, Any], dict[str, Any]]:
        self.next_chat += 1
        user = FakeTelegram.user(self.next_chat, "Bench")
        return (self.tg.group(-self.next_chat) if group else self.tg.private(user)), user

    async def turn(self, group: bool, text: str = "Hello, how are you?",
                   chat: dict[str, Any] | None = None, user: dict[str, Any] | None = None) -> dict[str, float]:
        if chat is None or user is None:
            chat, user = self.chat(group)
        calls_before = len(self.tg.calls)
        asked = self.tg.say(chat, user, f"/ask {text}" if group else text)
        update_id = self.tg.pushed[-1]["update_id"]
        await self.tg.answer(chat["id"], asked["message_id"], timeout=120)
        delivered = self.tg.delivered_at[update_id]
        calls = [c for c in self.tg.calls[calls_before:] if c.params.get("chat_id") == chat["id"]]
        return {"first": first_send_at(calls) - delivered, "final": final_at(calls) - delivered, "calls": len(calls)}


def summary(name: str, rows: list[dict[str, float]]) -> dict[str, float]:
    first = [1000 * r["first"] for r in rows]
    final = [1000 * r["final"] for r in rows]
    return {
        f"{name}_first_send_ms_p50": round(statistics.median(first), 2),
        f"{name}_first_send_ms_p99": round(percentile(first, 0.99), 2),
        f"{name}_final_ms_p50": round(statistics.median(final), 2),
        f"{name}_api_calls_per_turn": round(statistics.mean(r["calls"] for r in rows), 2),
    }


async def run_canned(turns: int, concurrent: int) -> dict[str, float]:
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as state:
        for name, drafts, group in (("private_edits", False, False), ("private_drafts", True, False),
                                    ("group_edits", False, True)):
            async with FakeTelegram(TOKEN) as tg:
                settings = TelegramSettings(token=TOKEN, api_url=tg.api_url, drafts=drafts,
                                            state_file=Path(state) / f"{name}.json")
                adapter: TelegramAdapter = create(CannedEngine(), settings)  # type: ignore[arg-type]
                await adapter.start()
                bench = Bench(tg)
                try:
                    for _ in range(10):  # warm-up: connections, first-call paths
                        await bench.turn(group)
                    cpu = time.process_time()
                    results |= summary(f"canned_{name}", [await bench.turn(group) for _ in range(turns)])
                    results[f"canned_{name}_cpu_ms_per_turn"] = round(1000 * (time.process_time() - cpu) / turns, 2)
                    if name == "private_edits":
                        started = time.perf_counter()
                        rows = await asyncio.gather(*(bench.turn(False) for _ in range(concurrent)))
                        elapsed = time.perf_counter() - started
                        results |= summary(f"canned_{concurrent}_at_once", list(rows))
                        results[f"canned_{concurrent}_at_once_turns_per_s"] = round(concurrent / elapsed, 1)
                finally:
                    await adapter.stop()
    return results


async def run_engine(turns: int, models_dir: Path) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as data_dir:
        settings = EngineSettings(data_dir=Path(data_dir), models_dir=models_dir,
                                  model=ModelSettings(id="tiny:0", max_new_tokens=24))
        settings.dialog.personas.update(PRESETS)
        async with Engine(settings) as engine, FakeTelegram(TOKEN) as tg:
            bench = Bench(tg)
            chat, user = bench.chat(group=False)
            key = ChannelKey("telegram", str(chat["id"]))
            await engine.feedback(Feedback(key, FeedbackKind.CORRECTION, question=QUESTION,
                                           text="The door code of lab 3 is 4711."))
            adapter = create(engine, TelegramSettings(token=TOKEN, api_url=tg.api_url, drafts=False,
                                                      state_file=Path(data_dir) / "updates.json"))
            await adapter.start()
            direct, rows = [], []
            try:
                for index in range(turns + 5):  # the same turn, directly and through Telegram, alternately
                    started, first_chunk = time.perf_counter(), 0.0
                    async for _chunk in engine.reply(Turn(key, PARAPHRASE)):  # to the end: it holds the thread
                        first_chunk = first_chunk or time.perf_counter() - started
                    row = await bench.turn(False, PARAPHRASE, chat, user)
                    if index >= 5:  # the first few warm the encoder and the connections
                        direct.append(first_chunk)
                        rows.append(row)
            finally:
                await adapter.stop()
            assert "4711" in tg.bot_messages(chat["id"])[-1].text, "the learned answer did not come back"
    result = summary("engine_private_edits", rows)
    result["engine_direct_first_chunk_ms_p50"] = round(1000 * statistics.median(direct), 2)
    result["engine_adapter_overhead_ms_p50"] = round(
        1000 * statistics.median(row["first"] - alone for row, alone in zip(rows, direct, strict=True)), 2
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--concurrent", type=int, default=50, help="turns in distinct chats at once")
    parser.add_argument("--models-dir", type=Path, default=Path(".cache/models"))
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args()
    results: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}",
        "turns": args.turns,
    }
    results |= asyncio.run(run_canned(args.turns, args.concurrent))
    results |= asyncio.run(run_engine(args.turns, args.models_dir))
    if not args.json:
        for key, value in results.items():
            print(f"{key:44s} {value}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
