"""Fuzz soak: every platform event and interaction handler, 100,000 hypothesis cases and more.

    .venv/bin/python benchmarks/bench_fuzz_events.py [--cases 100000] [--batch 5000] [--seed 1] [--json]

Draws cases from ``tests/fakes/fuzz.py`` (Slack events, commands, shortcuts and modal
submissions; Telegram messages, commands, edits, button presses and reactions; Discord
gateway messages, reactions, deletions and interactions; well-formed with random
content, or malformed: a field heedful relies on missing or of the wrong type) in
batches of ``--batch`` (one hypothesis run each, seeded ``--seed``, ``--seed`` + 1, ...),
and hands each to the real platform library in front of the running adapter
(``FuzzRig``; the engine is the stand-in, so what would be stored is seen). Counts:

- ``errors``: cases after which an exception reached a platform library, the event
  loop, or an ERROR log line. Must be 0.
- ``malformed_stored``: malformed cases after which something was stored. Must be 0.
- ``rejected``: cases the platform library itself could not read (discord.py's parsers
  raise; bolt raises, and the transport logs and acknowledges), so no handler of
  heedful's saw them; ``stored``: well-formed cases that reached the engine.

Prints a table per platform; ``--json``: the last line is one JSON object (with up to
ten failing cases, when there are any).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
for _proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
    os.environ.pop(_proxy, None)  # slack_sdk honours proxies and ignores NO_PROXY

from hypothesis import HealthCheck, given, seed, settings  # noqa: E402

from tests.fakes.fuzz import Case, FuzzRig, cases  # noqa: E402


async def soak(total: int, batch: int, first_seed: int) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    failures: list[str] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as state:
        rig = FuzzRig(Path(state))
        await rig.__aenter__()
        loop = asyncio.get_running_loop()
        pending: list[Case] = []
        try:
            strategy = cases(rig.bot_id, rig.guild.id, rig.channel["id"])
            number = 0
            while counts["cases"] < total:
                pending.clear()

                @seed(first_seed + number)
                @settings(max_examples=min(batch, total - counts["cases"]), deadline=None, database=None,
                          suppress_health_check=list(HealthCheck))
                @given(strategy)
                def draw(case: Case) -> None:
                    pending.append(case)

                await loop.run_in_executor(None, draw)  # hypothesis is synchronous: draw the batch aside
                number += 1
                for case in pending:
                    outcome = await rig.deliver(case)
                    where = f"{case.platform}"
                    counts["cases"] += 1
                    counts[f"{where}:cases"] += 1
                    counts[f"{where}:malformed"] += case.malformed
                    counts[f"{where}:rejected"] += bool(outcome.rejected)
                    counts[f"{where}:stored"] += bool(outcome.writes) and not case.malformed
                    if outcome.errors:
                        counts["errors"] += 1
                        counts[f"{where}:errors"] += 1
                        failures.append(f"{case!r} -> {outcome.errors[:3]}")
                    if case.malformed and outcome.writes:
                        counts["malformed_stored"] += 1
                        counts[f"{where}:malformed_stored"] += 1
                        failures.append(f"{case!r} -> stored {outcome.writes[:2]}")
                print(f"... {counts['cases']} cases, {counts['errors']} errors, "
                      f"{counts['malformed_stored']} malformed stored", file=sys.stderr, flush=True)
        finally:
            await rig.__aexit__(None, None, None)
    platforms = {p: {k: counts[f"{p}:{k}"] for k in ("cases", "malformed", "rejected", "stored", "errors",
                                                      "malformed_stored")} for p in ("slack", "telegram", "discord")}
    return {"cases": counts["cases"], "errors": counts["errors"], "malformed_stored": counts["malformed_stored"],
            "platforms": platforms, "elapsed_s": round(time.perf_counter() - started, 1), "failures": failures[:10]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    logging.basicConfig(level=logging.CRITICAL)  # the rig counts ERROR records itself
    result = asyncio.run(soak(args.cases, args.batch, args.seed))
    print(f"{'platform':<10} {'cases':>8} {'malformed':>10} {'rejected':>9} {'stored':>8} {'errors':>7} "
          f"{'malformed stored':>17}")
    for name, row in result["platforms"].items():
        print(f"{name:<10} {row['cases']:>8} {row['malformed']:>10} {row['rejected']:>9} {row['stored']:>8} "
              f"{row['errors']:>7} {row['malformed_stored']:>17}")
    print(f"{result['cases']} cases in {result['elapsed_s']} s: {result['errors']} with an error, "
          f"{result['malformed_stored']} malformed ones stored")
    for failure in result["failures"]:
        print("FAIL", failure[:1000])
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
