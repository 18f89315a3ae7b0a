"""Understanding a message: the encoder's embedding and the verifier's pass, float32 vs packed bfloat16.

    .venv/bin/python benchmarks/bench_understanding.py [--repeat 30] [--json]

The engine's own encoder (the embedded MiniLM with the shipped metric merged) and the shipped
verifier, loaded twice: ``encoder.matmul_dtype = "float32"`` and the automatic choice (packed
bfloat16 where the CPU has AMX / AVX-512 BF16). Side by side in one process, alternating:

- milliseconds (median and 90th percentile of ``--repeat`` calls) to embed one message, and for
  the verifier to score 1, 2, 4 and 6 (message, taught question) pairs (the engine checks at most
  ``verify_answers`` x ``verify_members`` = 6);
- the same embedding right after the process slept ``--idle`` seconds (what a message meets on a
  quiet bot: the cores were idle), and after the same time spent spinning instead;
- how far bfloat16 moves the results on CLINC150 texts: the smallest cosine between the two
  vectors of a text, and the largest and mean difference of the verifier's probabilities.

Prints a table; ``--json``: the last line is one JSON object. Numbers are in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engine.offline import offline_environment  # noqa: E402

offline_environment(force=False)

import numpy as np  # noqa: E402
from report import print_result  # noqa: E402

from engine.learning.matching import Matching  # noqa: E402
from engine.settings import EncoderSettings, LearningSettings  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "clinc150"
MESSAGE = "how do i book a meeting room for thursday at four"
QUESTION = "can you reserve a conference room for me tomorrow"


def _times(fn: Callable[[], Any], repeat: int, before: Callable[[], None] = lambda: None) -> tuple[float, float]:
    """(median, 90th percentile) milliseconds of ``fn``, each call after ``before``."""
    for _ in range(3):
        fn()
    samples = []
    for _ in range(repeat):
        before()
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return round(statistics.median(samples), 2), round(samples[min(len(samples) - 1, int(0.9 * len(samples)))], 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=30, help="calls timed per figure")
    parser.add_argument("--idle", type=float, default=0.5, help="seconds idle (or spinning) before a cold call")
    parser.add_argument("--data", type=Path, default=DATA, help="the CLINC150 folder (test.jsonl)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args()
    loaded: dict[str, Matching] = {}
    for dtype in ("float32", "auto"):
        matching = Matching(LearningSettings(), EncoderSettings(matmul_dtype=dtype))  # type: ignore[arg-type]
        matching.encoder.load()
        assert matching.verifier is not None, "the shipped verifier is missing"
        matching.verifier.load()
        loaded[dtype] = matching
    result: dict[str, Any] = {"auto_chose": loaded["auto"].encoder.matmul_dtype}
    counter = iter(range(10**9))

    def embed(m: Matching) -> Callable[[], Any]:  # a new text each call: no cache between calls
        return lambda: m.encoder.encode_blocking([f"{MESSAGE} {next(counter)}"])

    def spin() -> None:
        until = time.perf_counter() + args.idle
        while time.perf_counter() < until:
            pass

    for name, dtype in (("float32", "float32"), ("auto", "auto")):
        m = loaded[dtype]
        assert m.verifier is not None
        result[f"{name}_embed_ms"] = _times(embed(m), args.repeat)
        for k in (1, 2, 4, 6):
            verifier = m.verifier
            result[f"{name}_verifier_{k}_pairs_ms"] = _times(
                lambda v=verifier, k=k: v.probabilities_blocking([MESSAGE] * k, [QUESTION] * k), args.repeat)
        cold = max(3, args.repeat // 3)
        result[f"{name}_embed_after_idle_ms"] = _times(embed(m), cold, lambda: time.sleep(args.idle))
        result[f"{name}_embed_after_spin_ms"] = _times(embed(m), cold, spin)
    texts = [json.loads(line)["text"] for line in (args.data / "test.jsonl").open()][:400]
    exact, fast = loaded["float32"], loaded["auto"]
    assert exact.verifier is not None and fast.verifier is not None
    ref, low = exact.encoder.encode_blocking(texts[:200]), fast.encoder.encode_blocking(texts[:200])
    result["min_cosine_to_float32"] = round(float((ref * low).sum(axis=1).min()), 6)
    p_ref = exact.verifier.probabilities_blocking(texts[:200], texts[200:400])
    p_low = fast.verifier.probabilities_blocking(texts[:200], texts[200:400])
    result["verifier_max_abs_diff"] = round(float(np.abs(p_low - p_ref).max()), 4)
    result["verifier_mean_abs_diff"] = round(float(np.abs(p_low - p_ref).mean()), 5)
    print_result(result, args.json)


if __name__ == "__main__":
    main()
