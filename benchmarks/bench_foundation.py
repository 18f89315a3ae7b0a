"""Foundation benchmark: load time, turn latency, batching throughput, correction-to-effect, RSS.

    .venv/bin/python benchmarks/bench_foundation.py [--turns 20] [--json]

Prints a table and, last, one JSON line. Numbers are recorded in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.offline import offline_environment

offline_environment(force=False)

from tqdm import tqdm  # noqa: E402

from bots.presets import PRESETS  # noqa: E402
from engine import ChannelKey, Engine, EngineSettings, Feedback, FeedbackKind, Turn  # noqa: E402
from engine.generation.model_loader import load_model  # noqa: E402
from engine.generation.worker import ModelWorker  # noqa: E402
from engine.settings import ModelSettings  # noqa: E402

QUESTIONS = [
    "What is the capital of France?", "How do I reset my password?", "Give me a tip for better sleep.",
    "What is a prime number?", "Explain what an API is.", "How many days are in a leap year?",
    "What does HTTP stand for?", "Suggest a name for a cat.", "Why is the sky blue?", "What is 12 times 12?",
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench_load(models_dir: Path) -> dict[str, float]:
    settings = ModelSettings()
    with tempfile.TemporaryDirectory() as cold_dir:
        started = time.perf_counter()
        load_model(settings, Path(cold_dir))
        cold = time.perf_counter() - started
    load_model(settings, models_dir)  # make sure the shared cache exists
    started = time.perf_counter()
    load_model(settings, models_dir)
    cached = time.perf_counter() - started
    return {"load_cold_s": round(cold, 2), "load_cached_s": round(cached, 2)}


async def bench_throughput(models_dir: Path, tokens: int) -> dict[str, float]:
    settings = ModelSettings(max_new_tokens=tokens, max_batch=16)
    loaded = await asyncio.to_thread(load_model, settings, models_dir)
    worker = ModelWorker(loaded, settings)
    worker.start()
    tok = loaded.tokenizer

    def prompt(i: int) -> list[int]:
        messages = [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)] + " Answer at length."}]
        out = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        return list(out["input_ids"] if hasattr(out, "keys") else out)

    async def run(i: int) -> int:
        stream = worker.submit(prompt(i))
        async for _ in stream:
            pass
        return stream.tokens

    results: dict[str, float] = {}
    await run(0)  # warm-up
    for n in tqdm((1, 4, 16), desc="throughput", leave=False):
        started = time.perf_counter()
        counts = await asyncio.gather(*(run(i) for i in range(n)))
        elapsed = time.perf_counter() - started
        results[f"tokens_per_s_{n}"] = round(sum(counts) / elapsed, 1)
    await worker.stop()
    for n in (4, 16):
        results[f"throughput_ratio_{n}_to_1"] = round(results[f"tokens_per_s_{n}"] / results["tokens_per_s_1"], 2)
    return results


async def bench_engine(models_dir: Path, turns: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as data_dir:
        settings = EngineSettings(data_dir=Path(data_dir), models_dir=models_dir)
        settings.dialog.personas.update(PRESETS)
        started = time.perf_counter()
        async with Engine(settings) as engine:
            start_s = time.perf_counter() - started
            latencies, first_chunk = [], []
            for i in tqdm(range(turns), desc="turns", leave=False):
                key = ChannelKey("bench", f"turn-{i}")
                t0 = time.perf_counter()
                reply = engine.reply(Turn(key, QUESTIONS[i % len(QUESTIONS)]))
                async for _ in reply:
                    if len(first_chunk) <= i:
                        first_chunk.append(time.perf_counter() - t0)
                latencies.append(time.perf_counter() - t0)
            effect = []
            for i in tqdm(range(5), desc="correction-to-effect", leave=False):
                key = ChannelKey("bench", f"effect-{i}")
                reply = engine.reply(Turn(key, "What is the door code of lab 3?"))
                await reply.collect()
                t0 = time.perf_counter()
                await engine.feedback(Feedback(key, FeedbackKind.CORRECTION, reply_id=reply.reply_id,
                                               text=f"The door code of lab 3 is {4000 + i}."))
                used = engine.reply(Turn(key, "whats the door code for lab 3?"))
                async for _ in used:
                    if len(effect) <= i:
                        effect.append(time.perf_counter() - t0)
                assert str(4000 + i) in used.text, "the correction did not take effect"
        return {
            "engine_start_s": round(start_s, 2),
            "turn_p50_s": round(statistics.median(latencies), 2),
            "turn_p99_s": round(percentile(latencies, 0.99), 2),
            "first_chunk_p50_s": round(statistics.median(first_chunk), 3),
            "correction_to_effect_ms_p50": round(1000 * statistics.median(effect), 1),
            "correction_to_effect_ms_max": round(1000 * max(effect), 1),
        }


def bench_bot_rss(models_dir: Path) -> dict[str, float]:
    """Peak RSS of a real `heedful chat` process serving a short scripted conversation."""
    with tempfile.TemporaryDirectory() as data_dir:
        env = dict(os.environ, HEEDFUL_DATA_DIR=data_dir, HEEDFUL_MODELS_DIR=str(models_dir))
        script = "\n".join([*QUESTIONS[:3], "/fix The answer is 42.", QUESTIONS[0]]) + "\n"
        subprocess.run([sys.executable, "-m", "bots.cli", "chat", "--channel", "rss"], input=script, text=True,
                       env=env, check=True, capture_output=True)
    return {"bot_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per request in the throughput run")
    parser.add_argument("--models-dir", type=Path, default=Path(".cache/models"))
    args = parser.parse_args()
    results: dict[str, object] = {"machine": f"{platform.machine()}, {os.cpu_count()} cpus, torch CPU"}
    results |= bench_load(args.models_dir)
    results |= asyncio.run(bench_throughput(args.models_dir, args.tokens))
    results |= asyncio.run(bench_engine(args.models_dir, args.turns))
    results |= bench_bot_rss(args.models_dir)
    for key, value in results.items():
        print(f"{key:32s} {value}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
