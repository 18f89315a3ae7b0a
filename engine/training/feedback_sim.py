"""Simulated askers for the corrections benchmark (``heedful eval corrections --feedback-sim``).

After teaching, each channel's paraphrases of taught labels are split, seeded, into a
*feedback pool* and *held-back* ones. In each round every pool paraphrase is asked by its
own simulated asker through ``Engine.reply``, who then reacts through ``Engine.feedback``
as a person would:

- the reply carries the channel's right code and was served from a correction: 👍 (the
  engine makes the asker's phrasing a confirmed paraphrase of that correction);
- it carries a wrong code (another label's of this channel, or another channel's): a
  correction with the right answer (the engine learns it and, when the wrong answer was
  served from a correction, keeps the phrasing as a negative of that correction);
- no code: nothing (a person might teach here too, but that is the plain benchmark's job).

Before the first round and after each, generality (held-back paraphrases get their right
code) and locality (the locality probes get none of the channel's codes) are measured, so
what feedback does to them is a number: ``feedback_sim.rounds``, with the paraphrases
confirmed and negatives added so far (counted in the store, through ``Engine.learned`` and
``Engine.negatives``).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ..contract import ChannelKey, Feedback, FeedbackKind, Route, Turn
from ..engine import Engine
from .episodes import Utterance

__all__ = ["simulate_feedback", "planned_feedback_questions"]


class _Asked(Protocol):
    reply: str


class _Bench(Protocol):
    """What the simulation uses of ``correction_bench._Bench`` (no import back: no cycle)."""

    engine: Engine
    gate: asyncio.Semaphore
    threads: int
    progress: Callable[[int], None] | None

    @property
    def config(self) -> Any: ...  # a BenchConfig: ``seed`` and ``limit``

    async def ask_all(self, channel: ChannelKey, index: int, texts: Sequence[str]) -> Sequence[_Asked]: ...


def _rate(flags: Sequence[bool]) -> float | None:
    return round(sum(flags) / len(flags), 4) if flags else None


def _split(query: Sequence[Utterance], taught: set[str], rng: random.Random, limit: int
           ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(feedback pool, held back): the taught labels' paraphrases, halved (each at most ``limit``)."""
    items = [(u.text, u.label) for u in query if u.label in taught]
    rng.shuffle(items)
    pool, held = items[: len(items) // 2], items[len(items) // 2:]
    return (pool[:limit], held[:limit]) if limit > 0 else (pool, held)


def planned_feedback_questions(n_query: int, n_oos: int, channels: int, rounds: int, limit: int) -> int:
    """About how many replies the simulation asks for (for the progress bar)."""
    def lim(n: int) -> int:
        return n if limit <= 0 else min(n, limit)

    half = lim(n_query // 2 + 1)
    return channels * (rounds * half + (rounds + 1) * (half + lim(n_oos + n_query)))


async def _ask(bench: _Bench, channel: ChannelKey, text: str, asker: str) -> tuple[str, str, Route | None]:
    """(reply text, reply id, route) of ``text`` asked by ``asker`` in its own thread of ``channel``."""
    async with bench.gate:
        bench.threads += 1
        reply = bench.engine.reply(Turn(ChannelKey(channel.platform, channel.channel, channel.space,
                                                   thread=f"t{bench.threads}"), text, author_id=asker))
        await reply.collect()
        if bench.progress:
            bench.progress(1)
        return reply.text, reply.reply_id, reply.explanation.route if reply.explanation else None


async def simulate_feedback(bench: _Bench, channels: Sequence[ChannelKey], codes: Sequence[dict[str, str]],
                            query: Sequence[Utterance], oos: Sequence[Utterance], taught: set[str],
                            untaught: set[str], rounds: int, *, answer: Callable[[str], str],
                            code_in: Callable[[str, str], bool]) -> dict[str, Any]:
    """The rounds of simulated feedback in every channel (see the module docstring); ``answer``
    makes the taught answer of a code, ``code_in`` tells whether a reply carries a code."""
    engine, config = bench.engine, bench.config
    rng = random.Random(config.seed + 7919)  # its own draws: the plain benchmark's stay as they were
    plans = []
    for i, channel in enumerate(channels):
        pool, held = _split(query, taught, rng, config.limit)
        probes = [u.text for u in oos] + [u.text for u in query if u.label in untaught]  # as the plain locality
        probes = probes if config.limit <= 0 or len(probes) <= config.limit else rng.sample(probes, config.limit)
        plans.append((i, channel, pool, held, probes))

    async def measure() -> dict[str, Any]:
        gen: list[bool] = []
        loc: list[bool] = []
        for i, channel, _, held, probes in plans:
            own = list(codes[i].values())
            held_replies = await bench.ask_all(channel, i, [t for t, _ in held])
            gen += [code_in(codes[i][label], a.reply) for (_, label), a in zip(held, held_replies, strict=True)]
            loc += [not any(code_in(c, a.reply) for c in own) for a in await bench.ask_all(channel, i, probes)]
        confirmed = negatives = 0
        for _, channel, _, _, _ in plans:
            confirmed += sum(c.origin == "confirmed" for c in await engine.learned(channel))
            negatives += len(await engine.negatives(channel))
        return {"generality": _rate(gen), "locality": _rate(loc), "confirmed": confirmed, "negatives": negatives}

    history = [{"round": 0, **await measure()}]
    for n in range(1, rounds + 1):
        thumbs = corrected = right = 0
        for i, channel, pool, _, _ in plans:
            others = [code for j, table in enumerate(codes) if j != i for code in table.values()]
            askers = [f"asker-{i}-{k}" for k in range(len(pool))]
            asked = await asyncio.gather(*(_ask(bench, channel, text, who)
                                           for (text, _), who in zip(pool, askers, strict=True)))
            for (_, label), who, (reply, reply_id, route) in zip(pool, askers, asked, strict=True):
                good = codes[i][label]
                wrong = [c for c in [*codes[i].values(), *others] if c != good and code_in(c, reply)]
                if code_in(good, reply) and not wrong:
                    right += 1
                    if route is Route.CORRECTION:
                        await engine.feedback(Feedback(channel, FeedbackKind.UP, author_id=who, reply_id=reply_id))
                        thumbs += 1
                elif wrong:
                    await engine.feedback(Feedback(channel, FeedbackKind.CORRECTION, author_id=who,
                                                   reply_id=reply_id, text=answer(good)))
                    corrected += 1
        await engine.settle()  # background learning catches up before measuring, as in the curve
        pool_size = sum(len(p[2]) for p in plans)
        history.append({"round": n, **await measure(), "thumbs_up": thumbs, "corrections_sent": corrected,
                        "pool_right": round(right / pool_size, 4) if pool_size else None})
    return {
        "rounds": history,
        "confirmed": history[-1]["confirmed"],
        "negatives": history[-1]["negatives"],
        "thumbs_up": sum(r.get("thumbs_up", 0) for r in history),
        "corrections_sent": sum(r.get("corrections_sent", 0) for r in history),
        "n_pool": sum(len(p[2]) for p in plans),
        "n_held_back": sum(len(p[3]) for p in plans),
        "n_locality": sum(len(p[4]) for p in plans),
    }
