"""Correction → effect, phase by phase: where a taught answer's latency goes (issue 18).

    .venv/bin/python benchmarks/bench_correction_effect.py [--corrections 150] [--json]

The engine as served (embedded encoder, metric and verifier, LoRA consolidation as configured),
in a throw-away data directory. One channel is taught CLINC150 corrections from held-out domains
one at a time, round robin over the labels (``curve_sequence``, what ``heedful eval corrections``
does for its curve); after each, a paraphrase of the same label is asked at once. Measured for
each correction that took effect (the paraphrase answered from it), as ``eval corrections``
reports ``correction_to_effect_ms``:

- ``feedback``: the ``Engine.feedback`` call (store write, embedding, support set);
- ``first_chunk``: from the paraphrase's turn to its first chunk, and inside it ``match`` (the
  message's embedding and the verifier's pass over the candidates, ``Matching.check``);
- ``effect``: feedback + first chunk, the figure whose p99 the issue bounds;
- whether a channel's background encoder training (``learning.adapt``) was running meanwhile
  (``--background N``: another channel is taught N corrections first, so that its training runs
  beside the measured channel's corrections).

p50 / p99 of each, and of ``effect`` split by background training running or not. Where the
engine compiles its decode step (``engine/generation/compiled_decode.py``), measuring starts once
that one-off compile is done. Prints a table;
``--json``: the last line is one JSON object. Numbers are in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import os
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engine.offline import offline_environment  # noqa: E402

offline_environment(force=False)

from report import print_result  # noqa: E402
from tqdm import tqdm  # noqa: E402

from engine.contract import ChannelKey, Feedback, FeedbackKind, Route, Turn  # noqa: E402
from engine.engine import Engine  # noqa: E402
from engine.settings import EngineSettings  # noqa: E402
from engine.training.correction_bench import curve_sequence  # noqa: E402
from engine.training.eval_sets import load_eval_sets  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "clinc150"
_phases: contextvars.ContextVar[dict[str, float] | None] = contextvars.ContextVar("phases", default=None)


def _timed(owner: Any, name: str, phase: str) -> None:
    """Wrap ``owner.name`` (a coroutine function) to add its seconds to the current probe's ``phase``."""
    inner = getattr(owner, name)

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        phases = _phases.get()
        started = time.perf_counter()
        try:
            return await inner(*args, **kwargs)
        finally:
            if phases is not None:
                phases[phase] = phases.get(phase, 0.0) + time.perf_counter() - started

    setattr(owner, name, wrapper)


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))], 1)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    sets = load_eval_sets({"--support": args.data / "support_5shot.jsonl", "--query": args.data / "test.jsonl"},
                          args.eval_domains.split(","))
    rng = random.Random(args.seed)
    sequence = curve_sequence(sets["--support"], rng)[: args.corrections]
    paraphrases: dict[str, list[str]] = defaultdict(list)
    for u in sets["--query"]:
        paraphrases[u.label].append(u.text)
    base = EngineSettings()
    samples: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="heedful-bench-") as tmp:
        settings = base.model_copy(update={"data_dir": Path(tmp), "models_dir": base.model_cache_dir})
        async with Engine(settings) as engine:
            compiled = engine._worker.compiled if engine._worker is not None else None
            if compiled is not None:  # steady state: not beside the decode step's one-off compile (~70 s)
                await asyncio.to_thread(compiled.wait)
            _timed(engine.matching, "check", "match_ms")
            _timed(engine.encoder, "embed", "embed_ms")
            if engine.matching.verifier is not None:
                _timed(engine.matching.verifier, "probabilities", "verifier_ms")
            for name in ("add_message", "add_correction_and_negative", "data_version"):
                _timed(engine.store, name, "store_ms")
            adaptation = engine.matching.adaptation
            channel = ChannelKey("bench", "effect", space="eval")
            if args.background and adaptation is not None:
                # Another channel, taught at once: its encoder training runs while this one learns.
                other = ChannelKey("bench", "busy", space="eval")
                for text, label in curve_sequence(sets["--support"], random.Random(args.seed + 1))[: args.background]:
                    await engine.feedback(Feedback(other, FeedbackKind.CORRECTION, text=f"Answer {label}.",
                                                   question=text))
                for _ in range(400):  # until its job starts (after the debounce)
                    if adaptation._lock.locked():
                        break
                    await asyncio.sleep(0.05)
            for n, (text, label) in enumerate(tqdm(sequence, desc="corrections", unit="correction"), 1):
                answer = f"The answer for {label} is code {n:04d}."
                phases: dict[str, float] = {}
                _phases.set(phases)
                started = time.perf_counter()
                await engine.feedback(Feedback(channel, FeedbackKind.CORRECTION, text=answer, question=text))
                taught = time.perf_counter()
                taught_phases = {f"feedback_{k}": v for k, v in phases.items()}
                training = adaptation is not None and adaptation._lock.locked()
                phases = {}
                _phases.set(phases)
                turn = Turn(ChannelKey(channel.platform, channel.channel, channel.space, thread=f"t{n}"),
                            rng.choice(paraphrases[label]))
                reply = engine.reply(turn)
                first = None
                async for _ in reply:
                    first = first or time.perf_counter()
                    if reply.explanation is not None and reply.explanation.route is not Route.CORRECTION:
                        break  # generated: not an effect of this correction, and no need to wait for it
                _phases.set(None)
                await asyncio.sleep(args.pause)
                explanation = reply.explanation
                if first is None or explanation is None or explanation.route is not Route.CORRECTION \
                        or explanation.corrections[0].answer != answer:
                    continue
                samples.append({"feedback_ms": (taught - started) * 1000, "first_chunk_ms": (first - taught) * 1000,
                                **{k: v * 1000 for k, v in (taught_phases | phases).items()},
                                "effect_ms": (first - started) * 1000, "training": float(training)})
            adapted_jobs = len(adaptation.reports) if adaptation is not None else 0
    result: dict[str, Any] = {"corrections": len(sequence), "took_effect": len(samples),
                              "adaptation_jobs": adapted_jobs, "cpus": os.cpu_count()}
    keys = ("effect_ms", "feedback_ms", "feedback_embed_ms", "feedback_store_ms", "first_chunk_ms", "match_ms",
            "embed_ms", "verifier_ms", "store_ms")
    for key in keys:
        values = [s.get(key, 0.0) for s in samples]
        result[f"{key}_p50"] = _pct(values, 0.5)
        result[f"{key}_p99"] = _pct(values, 0.99)
        result[f"{key}_max"] = round(max(values), 1) if values else None
    for state, flag in (("training", 1.0), ("idle", 0.0)):
        values = [s["effect_ms"] for s in samples if s["training"] == flag]
        result[f"effect_ms_while_{state}_n"] = len(values)
        result[f"effect_ms_while_{state}_p50"] = _pct(values, 0.5)
        result[f"effect_ms_while_{state}_p99"] = _pct(values, 0.99)
    slowest = sorted(samples, key=lambda s: -s["effect_ms"])[: args.slowest]
    result["slowest"] = [{k: round(s.get(k, 0.0), 1) for k in keys} for s in slowest]
    result["effect_ms_mean"] = round(statistics.fmean(s["effect_ms"] for s in samples), 1) if samples else None
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corrections", type=int, default=150, help="corrections taught, one paraphrase each")
    parser.add_argument("--data", type=Path, default=DATA, help="the CLINC150 folder (support_5shot.jsonl, test.jsonl)")
    parser.add_argument("--eval-domains", default="work,small_talk,meta", help="CLINC150 domains taught")
    parser.add_argument("--background", type=int, default=0,
                        help="first teach this many corrections to another channel, whose encoder training then "
                             "runs beside the measured one (0: none)")
    parser.add_argument("--pause", type=float, default=0.0, help="seconds between one probe and the next correction")
    parser.add_argument("--slowest", type=int, default=5, help="the slowest effects to show phase by phase")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args()
    print_result(asyncio.run(run(args)), args.json)


if __name__ == "__main__":
    main()
