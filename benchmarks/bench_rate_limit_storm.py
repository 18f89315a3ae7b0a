"""429 storm: every reply ends with its exact final text or a short notice, and no lock waits on the platform.

    .venv/bin/python benchmarks/bench_rate_limit_storm.py [--replies 1000] [--share 0.5] [--cap 5] [--json]

The real Slack adapter (slack-bolt / slack_sdk over Socket Mode) answers ``--replies``
mentions, one in each of as many channels, against the local fake Slack, which answers
``--share`` of all reply calls (``chat.postMessage``, ``chat.update``, the
``chat.*Stream`` trio, ``chat.postEphemeral``) with a 429 at random. Its ``Retry-After``
is short (0.05-0.5 s) for most, and an hour for ``--long`` of them: a wait no reply may
take (``rate_limit_cap``, ``--cap`` seconds, bounds each reply's waiting in all).

The engine is ``tests/fakes/engine.StandInEngine``: a fixed 60-word answer streamed
over ``--turn`` seconds, holding a per-thread lock while it writes, as the real engine
does (this measures the adapters' runtime, not a model). Half of the replies stream by
``chat.postMessage`` + ``chat.update``, half natively (``chat.startStream``...).

For every reply, what the thread shows at the end is one of:

- ``exact``: the messages' text is the answer, exactly;
- ``notice``: the reply ends with the short notice that it could not be finished;
- ``neither``: anything else (a truncated answer, nothing at all). Must be 0.

Also reported: the longest time the engine's lock was held for one reply (it must not
grow with the platform's waits: the reply is read apart from the platform calls), the
most one reply waited on rate limits in all (at most ``--cap``, plus at most 3 s for a
notice), and the longest one reply held its channel's answer slot.
Prints a table; ``--json``: the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
for _proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
    os.environ.pop(_proxy, None)  # slack_sdk honours proxies and ignores NO_PROXY

import adapters.base  # noqa: E402
from adapters.settings import SlackSettings  # noqa: E402
from adapters.slack import SlackAdapter, create  # noqa: E402
from adapters.streaming import WaitBudget  # noqa: E402
from adapters.texts import Texts  # noqa: E402
from tests.fakes.engine import StandInEngine  # noqa: E402
from tests.fakes.slack import FakeSlack, Posted  # noqa: E402

ANSWER = " ".join(f"word{i}" for i in range(60))
NOTICE = Texts.gave_up


class _Budgets(list[WaitBudget]):
    """Every reply's rate-limit budget, kept to read how long each waited."""

    def install(self) -> None:
        budgets = self

        class Recorded(WaitBudget):
            def __init__(self, seconds: float = float("inf")) -> None:
                super().__init__(seconds)
                budgets.append(self)

        adapters.base.WaitBudget = Recorded  # type: ignore[misc]


def _outcome(posts: list[Posted]) -> str:
    shown = [html.unescape(p.text) for p in posts]
    if shown and " ".join(t.strip() for t in shown) == ANSWER:
        return "exact"
    if shown and shown[-1].rstrip().endswith(NOTICE):
        return "notice"
    return "neither"


async def run(*, replies: int = 1000, share: float = 0.5, cap: float = 5.0, long: float = 0.02,
              turn: float = 0.2, concurrency: int = 32, seed: int = 1) -> dict[str, Any]:
    """Run the storm once; the figures as a dict (see the module's docstring)."""
    rng = random.Random(seed)
    budgets = _Budgets()
    budgets.install()
    engine = StandInEngine(turn_seconds=turn, chunks=6, answer=ANSWER)
    holds: list[float] = []
    started = time.perf_counter()
    async with FakeSlack(echo=False, timeout=600) as slack:
        halves: list[SlackAdapter] = []
        for native in (False, True):
            settings = SlackSettings(bot_token=slack.bot_token, app_token=slack.app_token, api_url=slack.api_url,
                                     mode="socket", rate_limit_cap=cap, edit_interval=0.1, native_streaming=native,
                                     concurrency=concurrency, channel_backlog=replies)
            adapter = create(engine, settings)
            answer = adapter._answer

            async def timed(turn_: Any, *, thread_ts: str, answer: Any = answer) -> None:
                began = time.perf_counter()
                try:
                    await answer(turn_, thread_ts=thread_ts)
                finally:
                    holds.append(time.perf_counter() - began)

            adapter._answer = timed  # type: ignore[method-assign]
            halves.append(adapter)
        slack.storm(share, lambda: 3600.0 if rng.random() < long else rng.uniform(0.05, 0.5), seed=seed)
        asked: list[tuple[str, str]] = []
        for index, adapter in enumerate(halves):
            await adapter.start()
            count = replies // 2 + (replies % 2 if index else 0)
            for n in range(count):
                channel = f"C{index}{n:07d}"
                event = await slack.say(channel, f"<@{slack.bot_user_id}> question {n}?")
                asked.append((channel, event["ts"]))
            while True:
                await slack.quiet()
                await adapter.idle()
                if not slack.echoing:
                    break
            await adapter.stop()
        slack.storm(0)
        outcomes = [_outcome(slack.thread(channel, ts)) for channel, ts in asked]
        calls = [c for c in slack.calls if c.method.startswith("chat.")]
    elapsed = time.perf_counter() - started
    locks = [t.lock_held for t in engine.turns]
    waited = [b.waited for b in budgets]
    return {
        "replies": len(asked), "share": share, "cap_s": cap, "long_share": long, "turn_s": turn,
        "exact": outcomes.count("exact"), "notice": outcomes.count("notice"), "neither": outcomes.count("neither"),
        "calls": len(calls), "limited": sum(1 for c in calls if c.status == 429),
        "lock_held_max_s": round(max(locks), 3), "lock_held_p50_s": round(statistics.median(locks), 3),
        "waited_max_s": round(max(waited), 3), "waited_p50_s": round(statistics.median(waited), 3),
        "slot_held_max_s": round(max(holds), 3), "elapsed_s": round(elapsed, 1),
    }


def main() -> None:
    from report import print_result  # beside this script (benchmarks/ is on sys.path when run)

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replies", type=int, default=1000)
    parser.add_argument("--share", type=float, default=0.5, help="share of reply calls answered 429")
    parser.add_argument("--cap", type=float, default=5.0, help="rate_limit_cap: seconds a reply may wait in all")
    parser.add_argument("--long", type=float, default=0.02, help="share of 429s asking to wait an hour")
    parser.add_argument("--turn", type=float, default=0.2, help="seconds the stand-in engine takes per reply")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args()
    result = asyncio.run(run(replies=args.replies, share=args.share, cap=args.cap, long=args.long, turn=args.turn,
                             concurrency=args.concurrency, seed=args.seed))
    print_result(result, args.json)


if __name__ == "__main__":
    main()
