"""Decode speed against how long torch's CPU threads spin when they wait, with busy neighbours.

libgomp (torch's OpenMP on Linux) lets a waiting helper thread spin ``GOMP_SPINCOUNT`` times
(~100 a microsecond) before it sleeps. Spinning long starves other work on a small shared box;
not spinning makes every matrix product of a decode step pay a wake-up. This script decodes
through a ``ModelWorker`` (the engine's path: the worker thread keeps the OpenMP team, see
``engine/nn/openmp.py``) with 0, 1 and 2 busy neighbour processes (``while True: pass``), for
each spin count in a fresh process (the runtime reads it once), rounds alternated:

    .venv/bin/python benchmarks/bench_cpu_threads.py --spins 0,10000,300000 --json

``0`` is ``OMP_WAIT_POLICY=PASSIVE`` alone, ``10000`` heedful's default, ``300000`` libgomp's
own default. Prints tokens/s (median of the rounds) for 1 and 16 concurrent requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child(tokens: int) -> None:
    """Load the embedded model, decode 1 and 16 requests through a worker, print one JSON line."""
    sys.path.insert(0, str(ROOT))
    from engine.generation.model_loader import load_model
    from engine.generation.worker import ModelWorker
    from engine.nn.openmp import release_team
    from engine.settings import ModelSettings

    settings = ModelSettings(max_new_tokens=tokens, max_batch=16)
    loaded = load_model(settings, ROOT / ".cache" / "models")
    release_team()
    worker = ModelWorker(loaded, settings)
    worker._stop_ids = set()  # fixed-length decoding
    tok = loaded.tokenizer
    prompt = tok.apply_chat_template([{"role": "user", "content": "Tell me about the sea at length."}],
                                     add_generation_prompt=True, tokenize=True)
    ids = list(prompt["input_ids"] if hasattr(prompt, "keys") else prompt)

    async def rate(n: int) -> float:
        async def one() -> int:
            stream = worker.submit(ids, max_new_tokens=tokens)
            async for _ in stream:
                pass
            return stream.tokens
        started = time.perf_counter()
        counts = await asyncio.gather(*(one() for _ in range(n)))
        return sum(counts) / (time.perf_counter() - started)

    async def main() -> dict[str, float]:
        worker.start()
        try:
            await rate(1)  # warm-up
            return {"tokens_per_s_1": await rate(1), "tokens_per_s_16": await rate(16)}
        finally:
            await worker.stop()

    print(json.dumps(asyncio.run(main())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spins", default="0,10000,300000", help="GOMP_SPINCOUNT values to compare")
    parser.add_argument("--neighbours", default="0,1,2", help="numbers of busy neighbour processes")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--json", action="store_true", help="end with one JSON line of every figure")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.tokens)
        return
    spins = [s.strip() for s in args.spins.split(",")]
    results: dict[str, dict[str, float]] = {}
    for neighbours in (int(n) for n in args.neighbours.split(",")):
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(neighbours)]
        try:
            runs: dict[str, list[dict[str, float]]] = {s: [] for s in spins}
            for _ in range(args.rounds):
                for spin in spins:
                    env = os.environ | {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": spin}
                    out = subprocess.run([sys.executable, __file__, "--child", "--tokens", str(args.tokens)],
                                         env=env, capture_output=True, text=True, check=True)
                    runs[spin].append(json.loads(out.stdout.strip().splitlines()[-1]))
            for spin, got in runs.items():
                key = f"neighbours_{neighbours}_spin_{spin}"
                results[key] = {k: round(statistics.median(r[k] for r in got), 1) for k in got[0]}
                print(f"{neighbours} busy neighbours, GOMP_SPINCOUNT={spin:>7}: "
                      f"{results[key]['tokens_per_s_1']:6.1f} tok/s (1 request), "
                      f"{results[key]['tokens_per_s_16']:6.1f} tok/s (16)", flush=True)
        finally:
            for p in busy:
                p.kill()
                p.wait()
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
