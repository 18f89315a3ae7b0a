"""What the verification stage costs per message, against the metric alone, side by side.

    .venv/bin/python benchmarks/bench_verifier.py [--answers 40] [--shots 5] [--messages 200] [--json]

A channel is taught ``answers`` answers with ``shots`` phrasings each (CLINC150's
held-out domains, ../shared/data/clinc150). Each message then goes through the engine's
matching exactly as a turn does (``Matching``), one message at a time, interleaved:

- ``metric``: embed + score against the channel's prototypes (``Matching.match``);
- ``verified``: the same, then the pair model on the best ``learning.verify_answers``
  candidates above the floor, each against its ``learning.verify_members`` nearest
  phrasings, in the encoder's thread (``Matching.check``: the best candidate first and
  alone, the rest in one more batch when it does not apply).

Prints p50 / p99 milliseconds of both, the added cost, and the answers checked per
message; last, with ``--json``, one JSON line. Numbers are in docs/BENCHMARKS.md.

The messages are paraphrases of taught answers, then (``--untaught``) questions of the same domains'
labels nobody taught; both are reported apart too (``taught_*``, ``untaught_*``), because the metric's
best candidate is checked first and alone and the rest only when it does not apply.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.offline import offline_environment  # noqa: E402

offline_environment(force=False)

from benchmarks.report import print_result  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "clinc150"
HELD_OUT = ("work", "small_talk", "meta")


def _quantile(values: list[float], q: float) -> float:
    return round(float(np.quantile(values, q)), 2)


async def run(args: argparse.Namespace) -> dict[str, object]:
    from engine.learning.matching import Matching
    from engine.settings import EncoderSettings, LearningSettings
    from engine.store import StoredCorrection

    domains = json.loads((DATA / "domains.json").read_text())
    labels = [label for d in HELD_OUT for label in domains[d]][: args.answers]
    rows = [json.loads(line) for line in (DATA / "test.jsonl").read_text().splitlines() if line.strip()]
    by_label: dict[str, list[str]] = {}
    for row in rows:
        by_label.setdefault(row["label"], []).append(row["text"])
    taught = [(text, label) for label in labels for text in by_label[label][: args.shots]]
    messages = [text for label in labels for text in by_label[label][args.shots:]][: args.messages]
    untaught = [label for d in HELD_OUT for label in domains[d] if label not in labels]
    kinds = ["taught"] * len(messages)
    others = [text for label in untaught for text in by_label[label]][: args.untaught]
    messages, kinds = messages + others, kinds + ["untaught"] * len(others)

    matching = Matching(LearningSettings(adapt=False), EncoderSettings())
    if matching.verifier is None:
        raise SystemExit("no verifier: train one (heedful meta-train verifier) or ship the default")
    await matching.start()
    vectors = await matching.encoder.embed([t for t, _ in taught])
    corrections = [StoredCorrection(i + 1, t, f"answer {label}", "u", vectors[i], matching.encoder.name, 0.0)
                   for i, (t, label) in enumerate(taught)]
    support = await matching.support_set(corrections)
    for text in messages[:10]:  # warm both paths
        await matching.match(support, text)
        await matching.check(support, text)
    metric_ms, verified_ms, pairs = [], [], []
    for text in messages:
        started = time.perf_counter()
        await matching.match(support, text)
        metric_ms.append(1000 * (time.perf_counter() - started))
        started = time.perf_counter()
        _, checks = await matching.check(support, text)
        verified_ms.append(1000 * (time.perf_counter() - started))
        pairs.append(sum(1 for c in checks if c is not None))
    await matching.stop()
    await matching.encoder.stop()
    apart = {}
    for kind in ("taught", "untaught"):
        picked = [k == kind for k in kinds]
        if any(picked):
            verified = [v for v, p in zip(verified_ms, picked, strict=True) if p]
            apart |= {f"{kind}_messages": len(verified), f"{kind}_verified_p50_ms": _quantile(verified, 0.5),
                      f"{kind}_verified_p99_ms": _quantile(verified, 0.99),
                      f"{kind}_answers_checked_mean": round(float(np.mean(
                          [n for n, p in zip(pairs, picked, strict=True) if p])), 2)}
    return {
        "answers": len(labels), "corrections": len(corrections), "messages": len(messages),
        "verifier": matching.verifier.name, "floor": round(matching.floor, 4),
        "metric_p50_ms": _quantile(metric_ms, 0.5), "metric_p99_ms": _quantile(metric_ms, 0.99),
        "verified_p50_ms": _quantile(verified_ms, 0.5), "verified_p99_ms": _quantile(verified_ms, 0.99),
        "added_p50_ms": round(statistics.median(v - m for v, m in zip(verified_ms, metric_ms, strict=True)), 2),
        "answers_checked_mean": round(float(np.mean(pairs)), 2),
        "pairs_per_message_max": matching.verify_answers * matching.verify_members, **apart,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=40)
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--messages", type=int, default=200, help="paraphrases of taught answers")
    parser.add_argument("--untaught", type=int, default=100,
                        help="questions of the held-out domains' labels beyond --answers, which nobody taught")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    print_result(asyncio.run(run(args)), args.json)


if __name__ == "__main__":
    main()
