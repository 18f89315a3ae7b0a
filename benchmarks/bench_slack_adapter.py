"""Slack adapter overhead per turn, against the local fake Slack, excluding the model.

    .venv/bin/python benchmarks/bench_slack_adapter.py [--turns 200] [--concurrent 25] [--json]

A turn is timed from the moment the fake starts delivering a channel mention (as
Slack does: a ``message`` and an ``app_mention`` event) until the fake has recorded
the reply's final text. Everything runs in this one process: the real slack-bolt /
slack_sdk stack, the adapter, and the fake's own HTTP and websocket servers (so
the numbers include the fake's work on the other side of every call, and are an
upper bound of the adapter's own cost).

- ``canned``: an engine stand-in that answers at once with a fixed 40-chunk text
  (no model, no store): what the adapter, bolt and the Web API round trips cost.
  Streamed natively (chat.startStream / appendStream / stopStream) unless the row
  says ``edits`` (chat.postMessage, then chat.update: ``native_streaming = false``).
- ``engine``: the real engine (tiny random model, MiniLM, SQLite) answering from a
  learned correction, which needs no generation; the overhead is the turn through
  Slack minus the same turn asked of the engine directly.

Prints a table and, last, one JSON line. Numbers are recorded in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
for _proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
    os.environ.pop(_proxy, None)  # slack_sdk honours proxies and ignores NO_PROXY
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from adapters.settings import SlackSettings  # noqa: E402
from adapters.slack import SlackAdapter, create  # noqa: E402
from engine import ChannelKey, Engine, EngineSettings, Feedback, FeedbackKind, NotFound, Reply, Turn  # noqa: E402
from tests.fakes.slack import FakeSlack, Posted  # noqa: E402

ANSWER = " ".join(f"word{i}" for i in range(40))  # 40 chunks, ~300 characters, nothing to escape
LONG = " ".join(f"token{i:05d}" for i in range(840))  # ~10,000 characters: three messages


class CannedEngine:
    """Stands in for the engine: every turn is answered at once with ``text``, in word chunks."""

    def __init__(self, text: str) -> None:
        self.text = text

    def reply(self, turn: Turn) -> Reply:
        async def run(reply: Reply) -> AsyncIterator[str]:
            words = self.text.split(" ")
            for i, word in enumerate(words):
                yield word if i == len(words) - 1 else word + " "

        return Reply(run)

    async def link_message(self, channel: ChannelKey, reply_id: str, platform_message_id: str) -> None:
        return None

    async def explain(self, channel: ChannelKey, **ids: str) -> Any:
        raise NotFound("canned")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def settings(slack: FakeSlack, mode: str, native: bool = True) -> SlackSettings:
    fields: dict[str, Any] = {"bot_token": slack.bot_token, "api_url": slack.api_url, "mode": mode,
                              "native_streaming": native}
    if mode == "socket":
        fields["app_token"] = slack.app_token
    else:
        fields |= {"signing_secret": slack.signing_secret, "host": "127.0.0.1", "port": 0}
    return SlackSettings(**fields)


async def one_turn(slack: FakeSlack, channel: str, question: str, expected: str) -> float:
    started = time.perf_counter()
    event = await slack.say(channel, f"<@{slack.bot_user_id}> {question}")
    thread = event["ts"]

    def landed() -> bool:
        posts: list[Posted] = slack.thread(channel, thread)
        return (bool(posts) and " ".join(p.text for p in posts).split() == expected.split()
                and not any(p.streaming for p in posts))

    await slack.wait_for(landed)
    return time.perf_counter() - started


async def run_turns(slack: FakeSlack, adapter: SlackAdapter, turns: int, concurrent: int, question: str,
                    expected: str) -> dict[str, float]:
    # warm-up: connections, bolt's auth.test, first-call costs
    for i in range(3):
        await one_turn(slack, f"CWARM{i}", question, expected)
    calls_before, cpu_before = len(slack.calls), time.process_time()
    latencies = [await one_turn(slack, f"CSEQ{i:05d}", question, expected) for i in range(turns)]
    cpu = time.process_time() - cpu_before
    calls = len(slack.calls) - calls_before
    started = time.perf_counter()
    for batch in range(0, turns, concurrent):
        await asyncio.gather(*(one_turn(slack, f"CPAR{batch + i:05d}", question, expected)
                               for i in range(min(concurrent, turns - batch))))
    wall = time.perf_counter() - started
    await slack.quiet()
    await adapter.idle()
    return {
        "p50_ms": round(1000 * statistics.median(latencies), 2),
        "p99_ms": round(1000 * pct(latencies, 0.99), 2),
        "cpu_ms_per_turn": round(1000 * cpu / turns, 2),
        "api_calls_per_turn": round(calls / turns, 2),
        "turns_per_s_concurrent": round(turns / wall, 1),
    }


async def bench_canned(mode: str, text: str, turns: int, concurrent: int, native: bool = True) -> dict[str, float]:
    async with FakeSlack() as slack:
        adapter = create(CannedEngine(text), settings(slack, mode, native))  # type: ignore[arg-type]
        await adapter.start()
        if mode == "http":
            slack.request_url = adapter.url
        try:
            return await run_turns(slack, adapter, turns, concurrent, "what is the plan?", text)
        finally:
            await adapter.stop()


async def bench_engine(turns: int) -> dict[str, float]:
    from bots.presets import PRESETS
    from engine.settings import ModelSettings

    question, paraphrase = "What is the wifi password at the office?", "whats the password for the office wifi?"
    answer = "The office wifi password is purple-otter-42."
    with tempfile.TemporaryDirectory() as data:
        engine_settings = EngineSettings(data_dir=Path(data), models_dir=REPO / ".cache" / "models",
                                         model=ModelSettings(id="tiny:0", max_new_tokens=24))
        engine_settings.dialog.personas.update(PRESETS)
        async with Engine(engine_settings) as engine, FakeSlack() as slack:
            for channel in ("CDIRECT", "CSLACK"):
                await engine.feedback(Feedback(ChannelKey("slack", channel, space=slack.team_id),
                                               FeedbackKind.CORRECTION, question=question, text=answer))
            adapter = create(engine, settings(slack, "socket"))
            await adapter.start()
            direct, through, links = [], [], []
            try:
                for _ in range(3):
                    await one_turn(slack, "CSLACK", paraphrase, answer)
                # Interleaved, so that load from elsewhere on the machine hits both sides alike.
                for i in range(turns):
                    key = ChannelKey("slack", "CDIRECT", space=slack.team_id, thread=f"t{i}")
                    started = time.perf_counter()
                    reply = engine.reply(Turn(key, paraphrase, author_id="U1", message_id=f"m{i}"))
                    text = await reply.collect()
                    direct.append(time.perf_counter() - started)
                    assert text == answer, text
                    started = time.perf_counter()
                    await engine.link_message(key, reply.reply_id, f"p{i}")
                    links.append(time.perf_counter() - started)
                    through.append(await one_turn(slack, "CSLACK", paraphrase, answer))
                await slack.quiet()
                await adapter.idle()
            finally:
                await adapter.stop()
    return {
        "engine_alone_p50_ms": round(1000 * statistics.median(direct), 2),
        "through_slack_p50_ms": round(1000 * statistics.median(through), 2),
        "difference_p50_ms": round(1000 * (statistics.median(through) - statistics.median(direct)), 2),
        "link_message_p50_ms": round(1000 * statistics.median(links), 2),
    }


async def main(turns: int, concurrent: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for mode in ("socket", "http"):
        results[f"canned_{mode}"] = await bench_canned(mode, ANSWER, turns, concurrent)
    results["canned_socket_edits"] = await bench_canned("socket", ANSWER, turns, concurrent, native=False)
    results["canned_socket_10k"] = await bench_canned("socket", LONG, max(20, turns // 10), concurrent)
    results["canned_socket_10k_edits"] = await bench_canned("socket", LONG, max(20, turns // 10), concurrent,
                                                            native=False)
    results["engine_socket"] = await bench_engine(max(20, turns // 4))
    return results


def table(results: dict[str, Any]) -> str:
    lines = ["| run | p50 ms | p99 ms | CPU ms/turn | API calls/turn | turns/s (concurrent) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        if "p50_ms" in r:
            lines.append(f"| {name} | {r['p50_ms']} | {r['p99_ms']} | {r['cpu_ms_per_turn']} | "
                         f"{r['api_calls_per_turn']} | {r['turns_per_s_concurrent']} |")
    e = results["engine_socket"]
    lines.append(f"\nreal engine, learned answer (no generation), socket mode, interleaved: p50 "
                 f"{e['engine_alone_p50_ms']} ms asked directly, {e['through_slack_p50_ms']} ms through Slack "
                 f"(difference {e['difference_p50_ms']} ms); engine.link_message p50 {e['link_message_p50_ms']} ms")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--concurrent", type=int, default=25)
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args()
    found = asyncio.run(main(args.turns, args.concurrent))
    found["machine"] = f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}"
    if not args.json:
        print(table(found))
    print(json.dumps(found))
