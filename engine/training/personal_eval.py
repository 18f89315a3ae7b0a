"""The personal-scope benchmark (``heedful eval personal``): recall and isolation of what people tell
about themselves, and what it costs, through the whole engine.

Simulated people share channels. Each tells the bot facts about themselves through
``Engine.remember``, each carrying an invented code no model could know ("My locker code is
KD-4821."). Later, through ``Engine.reply`` (the path a chat message takes, generation and all),
the teller asks related questions in two phrasings, and right after each, other people of the
same channel ask the very same question, so that the teller's answers sit in the channel's
history when the others are answered. Judged on the freely generated replies:

- ``personal_recall``: the share of the teller's replies that carry the code;
- ``personal_leaks``: the number of other people's replies that carry it (must be 0);
- ``recall_before``: the same share before anyone told anything (what chance gives);
- ``latency_ms``: time to the first chunk of a reply, one turn at a time, for tellers asking
  about their facts (``with``) and, turn about, a person of the same channel who told nothing
  asking the same (``without``), p50 and p99, and the difference (``added``): looking the
  profile up, scoring the facts, the longer prompt;
- ``bytes_per_person``: what a person's profile holds in memory (``Profile.nbytes``), mean.

Then taste (docs/LEARNING.md, "Taste"): ``preference_match`` (and ``_zero_prior``, ``_base``,
``_same_signals``) after 0, 1, 3, 5, 10 👍/👎 of simulated people with hidden preferences, on rendered
candidates (``preference_eval``: no LLM), and what choosing among candidates costs through the
engine: ``preference_latency_ms``, one turn at a time, for people who gave one 👎 (``with``: the
engine generates ``dialog.preference_candidates`` candidates in one batch and sends the one their
taste scores highest, once all are done) and, turn about, people who gave none (``without``), time to
the first chunk and to the whole reply, p50 and p99; ``preference_bytes_per_person``: what such a
person's taste holds in memory (``Taste.nbytes``).
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..contract import ChannelKey, Feedback, FeedbackKind, Turn
from ..engine import Engine
from ..reply import Reply
from ..settings import EngineSettings
from .correction_bench import invented_code
from .preference_eval import PreferenceEvalConfig, run_preference_eval
from .runs import Bar, Bars, RunError, silent_bars

__all__ = ["FACTS", "PersonalEvalConfig", "Told", "plan", "run_personal_eval"]

T = TypeVar("T")

FACTS: tuple[tuple[str, str, str], ...] = (
    ("My plan is the {code} plan.", "Which plan am I on?", "what plan do I have"),
    ("I'm in level {code} of the course.", "What level am I in?", "which level of the course am I at"),
    ("My account number is {code}.", "What is my account number?", "can you tell me my account number"),
    ("My locker code is {code}.", "What's my locker code?", "what code opens my locker"),
    ("My student id is {code}.", "What is my student id?", "what's my student number"),
    ("My order number is {code}.", "What's my order number?", "which order number is mine"),
    ("My team is called {code}.", "What is my team called?", "what's the name of my team"),
    ("My seat number is {code}.", "Which seat is mine?", "what is my seat number"),
    ("My membership tier is {code}.", "What membership tier do I have?", "which tier is my membership"),
    ("My ticket reference is {code}.", "What's my ticket reference?", "what reference does my ticket have"),
)
"""(what a person tells, two ways they later ask about it); ``{code}`` is the invented token."""


@dataclass(frozen=True)
class PersonalEvalConfig:
    """One run: how many channels, people and facts, and the reply settings."""

    channels: int = 4              # shared channels
    people: int = 4                # people per channel
    facts: int = 2                 # facts each person tells (at most ``len(FACTS)``)
    others: int = 2                # other people of the channel who ask each question too (leaks)
    latency_turns: int = 20        # turns timed one at a time, with and without facts each
    max_new_tokens: int = 32       # reply length cap
    seed: int = 0                  # codes, who tells what, who else asks
    model: str = ""                # LLM id (empty: the configured one)
    preference_people: int = 1000  # simulated people of the taste benchmark (0: skip it)
    preference_prior: str = "default"  # the taste prior: 'default' (shipped) or an artifact path
    preference_only: bool = False  # only the taste benchmark (no LLM)


def run_personal_eval(config: PersonalEvalConfig, settings: EngineSettings, *,
                      bars: Bars = silent_bars) -> dict[str, Any]:
    """The benchmark on a throw-away engine built from ``settings`` (its model cache reused; LoRA
    consolidation off: personal items never train one). Raises ``RunError`` for impossible sizes."""
    if config.channels < 1 or config.people < 2:
        raise RunError("--channels must be at least 1 and --people at least 2 (someone must be able to leak to)")
    if not 1 <= config.facts <= len(FACTS):
        raise RunError(f"--facts must be between 1 and {len(FACTS)}")
    if not 0 <= config.others < config.people:
        raise RunError("--others must be below --people")
    if config.preference_only and config.preference_people < 1:
        raise RunError("--preference-only needs --preference-people of at least 1")
    started = time.perf_counter()
    taste: dict[str, Any] = {}
    if config.preference_people:
        taste = run_preference_eval(PreferenceEvalConfig(people=config.preference_people,
                                                         prior=config.preference_prior, seed=config.seed), bars=bars)
    if config.preference_only:
        return {**taste, "seconds": round(time.perf_counter() - started, 1)}
    with tempfile.TemporaryDirectory(prefix="heedful-personal-") as tmp:
        engine_settings = settings.model_copy(update={
            "data_dir": Path(tmp),
            "models_dir": settings.model_cache_dir,
            "model": settings.model.model_copy(update={"max_new_tokens": config.max_new_tokens,
                                                        **({"id": config.model} if config.model else {})}),
            "lora": settings.lora.model_copy(update={"enabled": False}),
        })
        try:
            result = asyncio.run(_run(config, engine_settings, bars))
        except FileNotFoundError as err:  # a model path that is not there
            raise RunError(str(err)) from None
    result.update(taste)
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


@dataclass(frozen=True)
class Told:
    """One fact of the run: where, who told it, how they ask about it, its code, who else asks."""

    channel: ChannelKey
    person: str
    statement: str
    questions: tuple[str, str]
    code: str
    others: tuple[str, ...]


def plan(config: PersonalEvalConfig) -> list[Told]:
    """Who tells what, with which code, and who else asks about it; seeded."""
    rng = random.Random(config.seed)
    told: list[Told] = []
    codes: set[str] = set()
    for c in range(config.channels):
        channel = ChannelKey("eval", f"shared-{c}", space="personal")
        people = [f"c{c}-p{p}" for p in range(config.people)]
        for person in people:
            for statement, *asked in rng.sample(FACTS, config.facts):
                code = invented_code(rng, codes)
                others = tuple(rng.sample([p for p in people if p != person], config.others))
                told.append(Told(channel, person, statement.format(code=code), (asked[0], asked[1]), code, others))
    return told


def _carries(text: str, code: str) -> bool:
    return code.casefold() in text.casefold()


async def _reply(engine: Engine, channel: ChannelKey, person: str, text: str) -> tuple[str, float]:
    """The reply's text and the seconds to its first chunk."""
    reply, first, _ = await _timed_reply(engine, channel, person, text)
    return reply.text, first


async def _timed_reply(engine: Engine, channel: ChannelKey, person: str, text: str) -> tuple[Reply, float, float]:
    """The finished reply, the seconds to its first chunk and to its end."""
    started = time.perf_counter()
    first: float | None = None
    reply = engine.reply(Turn(channel, text, author_id=person, author_name=person))
    async for _ in reply:
        if first is None:
            first = time.perf_counter() - started
    total = time.perf_counter() - started
    return reply, first if first is not None else total, total


def _percentiles(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {"p50": 0.0, "p99": 0.0}
    ms = np.asarray(seconds) * 1000.0
    return {"p50": round(float(np.percentile(ms, 50)), 2), "p99": round(float(np.percentile(ms, 99)), 2)}


async def _run(config: PersonalEvalConfig, settings: EngineSettings, bars: Bars) -> dict[str, Any]:
    told = plan(config)
    timed = told[: config.latency_turns]
    tasting = timed if config.preference_people else []
    total = 2 * len(timed) + len(told) * 2 * (1 + config.others) + len(told) * 2 + 3 * len(tasting)
    async with Engine(settings) as engine:
        with bars(total=total, desc="personal benchmark", unit="reply") as bar:
            # Before anyone told anything: chance recall, and the latency without facts.
            before = await _by_channel(told, lambda t: _ask_teller(engine, t, bar))
            for t in told:
                await engine.remember(t.channel, t.person, t.statement)
            with_facts, without = [], []
            for t in timed:  # turn about, so that both see the same warm caches and the same load
                with_facts.append(await _timed(engine, t.channel, t.person, t.questions[0], bar))
                without.append(await _timed(engine, t.channel, f"{t.channel.channel}-quiet", t.questions[0], bar))
            rounds = await _by_channel(told, lambda t: _ask_round(engine, t, bar))
            taste = await _taste_cost(engine, tasting, bar)
        profiles = [engine.profiles.peek(t.channel, t.person) for t in told]
        sizes = {(p.scope, p.person): p.nbytes for p in profiles if p is not None}
    own = [hit for mine, _ in rounds for hit in mine]
    leaks = sum(hit for _, theirs in rounds for hit in theirs)
    asked_by_others = sum(len(theirs) for _, theirs in rounds)
    recall_before = [hit for hits in before for hit in hits]
    without_ms, with_ms = _percentiles(without), _percentiles(with_facts)
    return {
        "model": engine.model_name,
        "personal_recall": round(float(np.mean(own)), 4) if own else 0.0,
        "personal_leaks": int(leaks),
        "asked_by_teller": len(own),
        "asked_by_others": asked_by_others,
        "recall_before": round(float(np.mean(recall_before)), 4) if recall_before else 0.0,
        "latency_ms": {"without": without_ms, "with": with_ms,
                       "added": {k: round(with_ms[k] - without_ms[k], 2) for k in ("p50", "p99")},
                       "turns": len(timed), "measured": "time to the first chunk, one turn at a time"},
        "bytes_per_person": int(np.mean(list(sizes.values()))) if sizes else 0,
        **taste,
        "channels": config.channels, "people": config.channels * config.people, "facts": len(told),
        "max_new_tokens": config.max_new_tokens, "seed": config.seed,
    }


async def _taste_cost(engine: Engine, timed: list[Told], bar: Bar) -> dict[str, Any]:
    """What choosing among candidates costs, one turn at a time: for each timed question, a person asks
    it and gives the reply a 👎 (one signal), then asks it again (``with``: candidates), and turn about
    a person who gave nothing asks it (``without``). Neither told any fact."""
    if not timed:
        return {}
    firsts: dict[str, list[float]] = {"with": [], "without": []}
    totals: dict[str, list[float]] = {"with": [], "without": []}
    chosen = 0
    tasters = []
    for i, t in enumerate(timed):
        taster, plain = f"{t.channel.channel}-taster-{i}", f"{t.channel.channel}-plain-{i}"
        rated, _, _ = await _timed_reply(engine, t.channel, taster, t.questions[1])
        await engine.feedback(Feedback(t.channel, FeedbackKind.DOWN, author_id=taster, reply_id=rated.reply_id))
        bar.update()
        reply, first, whole = await _timed_reply(engine, t.channel, taster, t.questions[0])
        firsts["with"].append(first)
        totals["with"].append(whole)
        chosen += bool(reply.explanation is not None and reply.explanation.preference)
        tasters.append((t.channel, taster))
        bar.update()
        _, first, whole = await _timed_reply(engine, t.channel, plain, t.questions[0])
        firsts["without"].append(first)
        totals["without"].append(whole)
        bar.update()
    sizes = [p.taste.nbytes for p in (engine.profiles.peek(c, who) for c, who in tasters)
             if p is not None and p.taste is not None]
    latency: dict[str, Any] = {}
    for name, seconds in (("first_chunk", firsts), ("total", totals)):
        without, with_ = _percentiles(seconds["without"]), _percentiles(seconds["with"])
        latency[name] = {"without": without, "with": with_,
                         "added": {k: round(with_[k] - without[k], 2) for k in ("p50", "p99")}}
    latency.update(turns=len(timed), candidates=engine.settings.dialog.preference_candidates,
                   chosen_by_taste=chosen, measured="one turn at a time; with: after one 👎, candidates generated "
                   "in one batch, the reply sent once all are done")
    return {"preference_latency_ms": latency,
            "preference_bytes_per_person": int(np.mean(sizes)) if sizes else 0}


async def _by_channel(told: list[Told], work: Callable[[Told], Awaitable[T]]) -> list[T]:
    """``work(t)`` for every fact, in order within a channel (as people take turns there), the
    channels concurrently (their replies share model batches)."""
    channels: dict[ChannelKey, list[Told]] = {}
    for t in told:
        channels.setdefault(t.channel, []).append(t)

    async def one(items: list[Told]) -> list[T]:
        return [await work(t) for t in items]

    return [r for results in await asyncio.gather(*(one(items) for items in channels.values())) for r in results]


async def _ask_teller(engine: Engine, t: Told, bar: Bar) -> list[bool]:
    hits = []
    for question in t.questions:
        text, _ = await _reply(engine, t.channel, t.person, question)
        hits.append(_carries(text, t.code))
        bar.update()
    return hits


async def _timed(engine: Engine, channel: ChannelKey, person: str, question: str, bar: Bar) -> float:
    _, first = await _reply(engine, channel, person, question)
    bar.update()
    return first


async def _ask_round(engine: Engine, t: Told, bar: Bar) -> tuple[list[bool], list[bool]]:
    """The teller asks each phrasing, and right after, each of the others asks it too."""
    mine: list[bool] = []
    theirs: list[bool] = []
    for question in t.questions:
        text, _ = await _reply(engine, t.channel, t.person, question)
        mine.append(_carries(text, t.code))
        bar.update()
        for other in t.others:
            text, _ = await _reply(engine, t.channel, other, question)
            theirs.append(_carries(text, t.code))
            bar.update()
    return mine, theirs
