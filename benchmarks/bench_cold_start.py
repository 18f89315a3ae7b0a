"""Cold start: converting the embedded model, and a fresh install's first answer.

    .venv/bin/python benchmarks/bench_cold_start.py [--rounds 2] [--json]

1. ``load_model`` of the embedded model into an empty models directory (the GGUF is converted:
   ``engine/generation/gguf_convert.py``), then again from that cache; and transformers' own
   conversion of the same file (the path used before), side by side.
2. ``heedful run`` as a fresh install meets it (empty data and models directories) and with the
   model cache warm: a question piped in at launch; seconds from launch to the first character of
   the answer, and to the process's end.

Prints a table and, last, one JSON line. Numbers are recorded in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engine.offline import offline_environment  # noqa: E402

offline_environment(force=False)


def load_times() -> dict[str, float]:
    from engine.generation.model_loader import embedded_gguf_path, load_model
    from engine.settings import ModelSettings

    with tempfile.TemporaryDirectory() as models:
        started = time.perf_counter()
        load_model(ModelSettings(), Path(models))
        cold = time.perf_counter() - started
        started = time.perf_counter()
        load_model(ModelSettings(), Path(models))
        cached = time.perf_counter() - started
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf_path()
    started = time.perf_counter()
    AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    transformers_s = time.perf_counter() - started
    return {"load_cold_s": round(cold, 2), "load_cached_s": round(cached, 2),
            "transformers_conversion_s": round(transformers_s, 2)}


def first_answer(models_dir: str | None) -> tuple[float, float]:
    """(seconds to the answer's first character, seconds to the end) of ``heedful run`` asked one question."""
    with tempfile.TemporaryDirectory() as data:
        env = dict(os.environ, HEEDFUL_DATA_DIR=data, PYTHONUNBUFFERED="1")
        if models_dir is not None:
            env["HEEDFUL_MODELS_DIR"] = models_dir
        started = time.perf_counter()
        process = subprocess.Popen([str(REPO / ".venv" / "bin" / "heedful"), "run"], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(b"Where is the exit?\n")
        process.stdin.close()
        process.stdout.read(1)
        first = time.perf_counter() - started
        process.stdout.read()
        process.wait()
        return first, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: dict[str, Any] = load_times()
    fresh, warm = [], []
    with tempfile.TemporaryDirectory() as shared:
        first_answer(shared)  # fills the shared cache
        for _ in range(args.rounds):
            with tempfile.TemporaryDirectory() as empty:
                fresh.append(first_answer(empty))
            warm.append(first_answer(shared))
    for name, runs in (("fresh_install", fresh), ("model_cached", warm)):
        results[name] = {"first_answer_s": round(statistics.median(r[0] for r in runs), 2),
                         "whole_run_s": round(statistics.median(r[1] for r in runs), 2)}
    if not args.json:
        print(f"load_model: cold {results['load_cold_s']} s (transformers' conversion alone "
              f"{results['transformers_conversion_s']} s), cached {results['load_cached_s']} s")
        for name in ("fresh_install", "model_cached"):
            r = results[name]
            print(f"heedful run, {name}: first answer {r['first_answer_s']} s after launch, done {r['whole_run_s']} s")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
