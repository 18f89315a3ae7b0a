"""Flood: one channel sends hundreds of questions at once; every other channel is still answered at once.

    .venv/bin/python benchmarks/bench_channel_flood.py [--channels 1000] [--flood 200] [--window 30] [--json]

The real Slack adapter (slack-bolt / slack_sdk over Socket Mode, default settings:
``concurrency`` 32, ``channel_concurrency`` 2, ``channel_backlog`` 8) against the local
fake Slack. At the start one channel sends ``--flood`` mentions back to back; meanwhile
``--channels`` other channels each ask one question, at moments spread at random over
``--window`` seconds (about half the answer slots' capacity). The engine is
``tests/fakes/engine.StandInEngine``: a 40-word answer streamed over ``--turn`` seconds
(this measures the runtime's scheduling, not a model).

- ``turn_s``: a single turn alone, from the moment its event is sent until its answer's
  final text has landed; ``first_post_alone_s``: until its first message.
- ``wait_*``: for the other channels' questions, from the moment the event is sent until
  the first message of the answer (p50, p99, max). The claim: p99 within 2x ``turn_s``.
- ``flood_answered``, ``flood_busy``, ``flood_silent``: the flooding channel's questions
  that got an answer, a "busy" note (an ephemeral message in their thread), neither.
  ``flood_silent`` must be 0.

``--code DIR`` runs the adapters (and engine) found in DIR instead (a checkout of an
older commit, without its tests/), to compare. Prints a table; ``--json``: the last line
is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _paths(code: str | None) -> None:
    sys.path.insert(0, str(ROOT))
    if code:
        sys.path.insert(0, str(Path(code).resolve()))  # its adapters and engine; tests/ still from here
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        os.environ.pop(proxy, None)  # slack_sdk honours proxies and ignores NO_PROXY


ANSWER = " ".join(f"word{i}" for i in range(40))
FLOOD = "CFLOOD0000"


def _first_posts(slack: Any) -> dict[tuple[str, str], float]:
    """When the first message of each thread's answer landed: (channel, thread ts) -> perf_counter."""
    first: dict[tuple[str, str], float] = {}
    for call in slack.calls:
        if call.status == 200 and call.method in ("chat.postMessage", "chat.startStream"):
            first.setdefault((str(call.args.get("channel")), str(call.args.get("thread_ts"))), float(call.at))
    return first


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(*, channels: int = 1000, flood: int = 200, window: float = 30.0, turn: float = 0.5, seed: int = 1,
              concurrency: int = 32) -> dict[str, Any]:
    """Run the flood once; the figures as a dict (see the module's docstring)."""
    from adapters.settings import SlackSettings
    from adapters.slack import create
    from tests.fakes.engine import StandInEngine
    from tests.fakes.slack import FakeSlack

    rng = random.Random(seed)
    engine = StandInEngine(turn_seconds=turn, chunks=5, answer=ANSWER)
    async with FakeSlack(echo=False, timeout=600) as slack:
        fields = {"bot_token": slack.bot_token, "app_token": slack.app_token, "api_url": slack.api_url,
                  "mode": "socket", "concurrency": concurrency, "edit_interval": 0.25}
        adapter = create(engine, SlackSettings(**fields))
        await adapter.start()

        async def settle() -> None:
            while True:
                await slack.quiet()
                await adapter.idle()
                if not slack.echoing:
                    return

        alone = "CALONE0000"
        sent = time.perf_counter()
        event = await slack.say(alone, f"<@{slack.bot_user_id}> a question alone?")
        await settle()
        assert len(slack.thread(alone, event["ts"])) == 1
        last = max(c.at for c in slack.calls if c.args.get("channel") == alone and c.status == 200
                   and c.method in ("chat.update", "chat.stopStream", "chat.postMessage", "chat.appendStream"))
        turn_s = last - sent
        first_alone = _first_posts(slack).get((alone, event["ts"]), sent) - sent

        asked: list[tuple[str, str, float]] = []
        flooded: list[str] = []

        async def flood_channel() -> None:
            for n in range(flood):
                event = await slack.say(FLOOD, f"<@{slack.bot_user_id}> flood question {n}?")
                flooded.append(event["ts"])

        async def others() -> None:
            start = time.perf_counter()
            for n, at in enumerate(sorted(rng.uniform(0, window) for _ in range(channels))):
                delay = start + at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                channel = f"C{n:09d}"
                before = time.perf_counter()
                event = await slack.say(channel, f"<@{slack.bot_user_id}> question {n}?")
                asked.append((channel, event["ts"], before))

        began = time.perf_counter()
        await asyncio.gather(flood_channel(), others())
        await settle()
        elapsed = time.perf_counter() - began
        await adapter.stop()

        waits = []
        unanswered = 0
        posts = _first_posts(slack)
        for channel, ts, before in asked:
            first = posts.get((channel, ts))
            if first is None:
                unanswered += 1
            else:
                waits.append(first - before)
        busy_threads = {e["thread_ts"] for e in slack.ephemerals if e["channel"] == FLOOD}
        answered = sum(1 for ts in flooded if slack.thread(FLOOD, ts))
        busy = sum(1 for ts in flooded if ts in busy_threads and not slack.thread(FLOOD, ts))
    return {
        "channels": channels, "flood": flood, "window_s": window, "concurrency": concurrency,
        "turn_s": round(turn_s, 3), "first_post_alone_s": round(first_alone, 3),
        "wait_p50_s": round(statistics.median(waits), 3), "wait_p99_s": round(_pct(waits, 0.99), 3),
        "wait_max_s": round(max(waits), 3), "p99_over_turn": round(_pct(waits, 0.99) / turn_s, 2),
        "others_unanswered": unanswered,
        "flood_answered": answered, "flood_busy": busy, "flood_silent": flood - answered - busy,
        "elapsed_s": round(elapsed, 1),
    }


def main() -> None:
    from report import print_result  # beside this script (benchmarks/ is on sys.path when run)

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channels", type=int, default=1000)
    parser.add_argument("--flood", type=int, default=200)
    parser.add_argument("--window", type=float, default=30.0, help="seconds over which the other channels ask")
    parser.add_argument("--turn", type=float, default=0.5, help="seconds the stand-in engine takes per reply")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--code", help="run the adapters found in this directory instead (to compare)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args()
    _paths(args.code)
    result = asyncio.run(run(channels=args.channels, flood=args.flood, window=args.window, turn=args.turn,
                             seed=args.seed, concurrency=args.concurrency))
    print_result(result, args.json)


if __name__ == "__main__":
    main()
