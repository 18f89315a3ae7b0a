"""The learning-from-corrections benchmark (``heedful eval corrections``), run through the engine.

Everything goes the way a chat message goes: ``Engine.feedback`` teaches, ``Engine.reply``
answers, and success is judged on the freely produced reply text. Each label gets, in
each channel, an invented answer carrying a random code no model could know beforehand
(channels teach *different* codes for the same labels), so a reply is right exactly
when it contains the code its own channel taught:

- ``reliability``: the corrected questions themselves, asked again;
- ``generality``: other phrasings (the query file) of corrected labels;
- ``locality``: out-of-scope questions and labels never corrected get no taught code;
- ``near_miss_locality`` (with near misses given): questions that differ from a taught one
  in one meaningful word ("... on Sundays" for "... on Saturdays"), asked in the channels
  that taught the label they mimic, get no taught code; ``near_miss_n`` replies judged,
  ``near_miss_missed_by_route`` the routes of those that got the code anyway,
  ``near_miss_skipped`` lines whose label was not taught, ``near_miss_by_kind`` per kind
  of change (lines with a ``kind``);
- ``isolation_violations``: replies carrying a code another channel taught (near misses included);
- ``correction_to_effect_ms``: from the ``feedback`` call to the first chunk of a reply
  to a paraphrase that uses the new correction (only corrections that took effect);
- ``curve``: generality, reliability and locality after 1, 10, 100, 1000 sequential
  corrections in one fresh channel;
- ``routes``: how replies were made (from a correction, with corrections as examples, by
  the base model; ``with_lora_version``: generated with one of the channel's LoRA versions),
  ``lora_versions``: the channels' LoRA versions by status, and
  ``channel_adaptations``: the reports of the channels' channel-encoder adaptation jobs.
  For one release the two LoRA counts are also under their old names, ``routes.with_adapter``
  and ``adapters``;
- ``feedback_sim`` (with ``BenchConfig.feedback_sim`` rounds, last): simulated askers' 👍 and
  corrections, with generality and locality after each round (``feedback_sim.py``).

With LoRA consolidation on, the benchmark waits (``Engine.settle``) for the channels'
consolidation jobs after teaching and before each curve point, so it measures both paths
together: corrections within the radius answer directly, the rest are generated with
the channel's LoRA version once one is promoted.

Each question is asked in its own thread of the channel (the learning scope is the
channel), so replies run concurrently and share model batches, and no reply sees
another's history.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import string
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..contract import ChannelKey, Feedback, FeedbackKind, Route, Turn
from ..engine import Engine
from .episodes import OOS, Utterance

__all__ = ["BenchConfig", "NearMiss", "run_benchmark", "planned_questions", "code_in", "invented_code", "split_labels",
           "curve_sequence"]


@dataclass(frozen=True, slots=True)
class BenchConfig:
    channels: int = 2                      # channels teaching different answers for the same labels
    limit: int = 0                         # questions per measured set and channel (0: all)
    uncorrected: float = 0.2               # share of labels never taught (their queries measure locality)
    curve: tuple[int, ...] = (1, 10, 100, 1000)
    curve_queries: int = 100               # questions per set at each curve point
    concurrency: int = 16                  # replies in flight (the model worker batches them)
    seed: int = 0
    feedback_sim: int = 0                  # rounds of simulated askers' 👍 / corrections at the end (0: none)


@dataclass(frozen=True, slots=True)
class NearMiss:
    """A question one meaningful word away from a taught one: ``label`` is the taught label it
    mimics, whose answer would be wrong for it; ``kind`` says what was changed (may be empty)."""

    text: str
    label: str
    kind: str = ""


def invented_code(rng: random.Random, used: set[str]) -> str:
    """An invented token no model could know, unique in ``used`` (added to it): two capitals,
    a dash, four digits ("KD-4821"); a reply carries it or it does not."""
    while True:
        code = "".join(rng.choices(string.ascii_uppercase, k=2)) + "-" + "".join(rng.choices(string.digits, k=4))
        if code not in used:
            used.add(code)
            return code


def _squash(text: str) -> str:
    return "".join(ch for ch in text.upper() if ch.isalnum())


def code_in(code: str, text: str) -> bool:
    """Did a reply convey the code? (case- and separator-tolerant)"""
    return _squash(code) in _squash(text)


def _answer(code: str) -> str:
    return f"Please quote reference {code} for that; it is how we handle it here."


@dataclass
class _Asked:
    channel: int
    text: str
    reply: str
    route: str
    first_chunk_s: float


class _Bench:
    def __init__(self, engine: Engine, config: BenchConfig, progress: Callable[[int], None] | None) -> None:
        self.engine, self.config, self.progress = engine, config, progress
        self.rng = random.Random(config.seed)
        self.gate = asyncio.Semaphore(config.concurrency)
        self.threads = 0
        self.routes: dict[str, int] = defaultdict(int)

    def key(self, name: str) -> ChannelKey:
        return ChannelKey("bench", name, space="eval")

    async def ask(self, channel: ChannelKey, index: int, text: str) -> _Asked:
        async with self.gate:
            self.threads += 1
            turn = Turn(ChannelKey(channel.platform, channel.channel, channel.space, thread=f"t{self.threads}"), text)
            started = time.perf_counter()
            reply = self.engine.reply(turn)
            first = 0.0
            async for _ in reply:
                first = first or time.perf_counter() - started
            assert reply.explanation is not None
            self.routes[reply.explanation.route.value] += 1
            with_lora = reply.explanation.lora_version is not None
            self.routes["with_lora_version"] += with_lora
            self.routes["with_adapter"] += with_lora  # the old name, kept for one release
            if self.progress:
                self.progress(1)
            return _Asked(index, text, reply.text, reply.explanation.route.value, first)

    async def ask_all(self, channel: ChannelKey, index: int, texts: Sequence[str]) -> list[_Asked]:
        return list(await asyncio.gather(*(self.ask(channel, index, t) for t in texts)))

    async def teach(self, channel: ChannelKey, question: str, answer: str) -> None:
        receipt = await self.engine.feedback(Feedback(channel, FeedbackKind.CORRECTION, text=answer, question=question))
        assert receipt.accepted, receipt.message

    def sample(self, items: Sequence[Any], n: int, rng: random.Random | None = None) -> list[Any]:
        items = list(items)
        return items if n <= 0 or len(items) <= n else (rng or self.rng).sample(items, n)


def _rate(flags: Sequence[bool]) -> float | None:
    return round(sum(flags) / len(flags), 4) if flags else None


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def planned_questions(support: Sequence[Utterance], query: Sequence[Utterance], oos: Sequence[Utterance],
                      curve_support: Sequence[Utterance], config: BenchConfig, near_miss: Sequence[NearMiss] = ()
                      ) -> int:
    """About how many replies a run asks for (the progress bar's total)."""
    def lim(n: int) -> int:
        return n if config.limit <= 0 else min(n, config.limit)

    top = min(max(config.curve, default=0), len([u for u in curve_support if u.label != OOS]))
    points = len({p for p in config.curve if p <= top} | ({top} if top else set()))
    asked = config.channels * (lim(len(support)) + lim(len(query)) + lim(len(oos)) + lim(len(near_miss)))
    if config.feedback_sim:
        from .feedback_sim import planned_feedback_questions

        asked += planned_feedback_questions(len(query), len(oos), config.channels, config.feedback_sim, config.limit)
    return asked + top + points * 3 * config.curve_queries


def split_labels(support: Sequence[Utterance], uncorrected: float, rng: random.Random
                 ) -> tuple[list[str], set[str], set[str]]:
    """(all labels, taught, never taught): ``uncorrected`` of the support's labels, drawn by ``rng``, stay untaught."""
    labels = sorted({u.label for u in support if u.label != OOS})
    rng.shuffle(labels)
    n_uncorrected = round(uncorrected * len(labels))
    return labels, set(labels[n_uncorrected:]), set(labels[:n_uncorrected])


def curve_sequence(curve_support: Sequence[Utterance], rng: random.Random) -> list[tuple[str, str]]:
    """The curve's corrections in teaching order, (text, label) each: round robin over the
    labels in an ``rng`` order, so coverage comes first, then depth."""
    by_label: dict[str, list[str]] = defaultdict(list)
    for u in curve_support:
        if u.label != OOS:
            by_label[u.label].append(u.text)
    for texts in by_label.values():
        rng.shuffle(texts)
    order = sorted(by_label)
    rng.shuffle(order)
    sequence: list[tuple[str, str]] = []
    for depth in range(max((len(v) for v in by_label.values()), default=0)):
        sequence += [(by_label[label][depth], label) for label in order if depth < len(by_label[label])]
    return sequence


async def run_benchmark(
    engine: Engine,
    support: Sequence[Utterance],
    query: Sequence[Utterance],
    oos: Sequence[Utterance],
    curve_support: Sequence[Utterance] = (),
    config: BenchConfig = BenchConfig(),
    progress: Callable[[int], None] | None = None,
    near_miss: Sequence[NearMiss] | None = None,
) -> dict[str, Any]:
    """Teach, ask, judge. Returns the benchmark's measures (see the module docstring); the
    ``near_miss_*`` ones only when ``near_miss`` is given."""
    bench = _Bench(engine, config, progress)
    rng = bench.rng
    labels, taught, untaught = split_labels(support, config.uncorrected, rng)
    used: set[str] = set()
    codes = [{label: invented_code(rng, used) for label in sorted(labels)} for _ in range(config.channels)]
    channels = [bench.key(f"channel-{i + 1}") for i in range(config.channels)]

    # -- teach: every support line of a taught label, in every channel ----------------------------
    lessons = [u for u in support if u.label in taught]
    for i, channel in enumerate(channels):
        for u in lessons:
            await bench.teach(channel, u.text, _answer(codes[i][u.label]))
    await engine.settle()  # with LoRA on: the channels' LoRA versions are trained (and judged) first

    # -- ask --------------------------------------------------------------------------------------
    reliability: list[bool] = []
    generality: list[bool] = []
    locality: list[bool] = []
    near_local: list[bool] = []
    near_by_kind: dict[str, list[bool]] = defaultdict(list)
    near_missed_by_route: dict[str, int] = defaultdict(int)  # near misses that got the code, by route
    near_asked = [m for m in near_miss or () if m.label in taught]  # taught in every channel
    near_rng = random.Random(f"{config.seed}-near-miss")  # the other sets' samples stay as without near misses
    violations = 0
    for i, channel in enumerate(channels):
        others = [code for j, table in enumerate(codes) if j != i for code in table.values()]
        own = list(codes[i].values())
        sets = {
            "reliability": bench.sample([(u.text, u.label) for u in lessons], config.limit),
            "generality": bench.sample([(u.text, u.label) for u in query if u.label in taught], config.limit),
            "locality": bench.sample([(u.text, None) for u in oos] + [(u.text, None) for u in query
                                                                        if u.label in untaught], config.limit),
        }
        if near_miss is not None:  # asked last; the label's code (or any of the channel's) is a miss
            sets["near_miss"] = bench.sample([(m.text, m.kind) for m in near_asked], config.limit, near_rng)
        for name, items in sets.items():
            asked = await bench.ask_all(channel, i, [t for t, _ in items])
            for (_, label), a in zip(items, asked, strict=True):
                violations += any(code_in(c, a.reply) for c in others)
                if name == "locality":
                    locality.append(not any(code_in(c, a.reply) for c in own))
                elif name == "near_miss":
                    kept = not any(code_in(c, a.reply) for c in own)
                    near_local.append(kept)
                    if not kept:
                        near_missed_by_route[a.route] += 1
                    if label:
                        near_by_kind[label].append(kept)
                else:
                    (reliability if name == "reliability" else generality).append(code_in(codes[i][label], a.reply))

    # -- the sequential curve, and correction-to-effect, in one fresh channel ---------------------
    curve, effect_ms = await _curve(bench, curve_support, query, oos, config)
    feedback_sim = None
    if config.feedback_sim:  # last: it changes what the channels learned (feedback_sim.py)
        from .feedback_sim import simulate_feedback

        feedback_sim = await simulate_feedback(bench, channels, codes, query, oos, taught, untaught,
                                               config.feedback_sim, answer=_answer, code_in=code_in)
    lora_versions = await _lora_version_counts(engine, [*channels, bench.key("curve")])

    near: dict[str, Any] = {} if near_miss is None else {
        "near_miss_locality": _rate(near_local),
        "near_miss_n": len(near_local),
        "near_miss_skipped": len(near_miss) - len(near_asked),
        "near_miss_missed_by_route": dict(near_missed_by_route),
        **({"near_miss_by_kind": {kind: {"locality": _rate(flags), "n": len(flags)}
                                  for kind, flags in sorted(near_by_kind.items())}} if near_by_kind else {}),
    }
    return {
        "labels": len(labels),
        "taught_labels": len(taught),
        "channels": config.channels,
        "corrections_per_channel": len(lessons),
        "reliability": _rate(reliability),
        "generality": _rate(generality),
        "locality": _rate(locality),
        "isolation_violations": violations,
        "n_reliability": len(reliability),
        "n_generality": len(generality),
        "n_locality": len(locality),
        **near,
        "correction_to_effect_ms": {
            "p50": round(statistics.median(effect_ms), 1) if effect_ms else None,
            "p99": round(_percentile(effect_ms, 0.99) or 0.0, 1) if effect_ms else None,
            "n": len(effect_ms),
        },
        "curve": curve,
        "routes": dict(bench.routes),
        "lora_versions": lora_versions,
        "adapters": dict(lora_versions),  # the old name, kept for one release
        "channel_adaptations": _adaptation_reports(engine),
        **({"feedback_sim": feedback_sim} if feedback_sim is not None else {}),
    }


def _adaptation_reports(engine: Engine) -> list[dict[str, Any]]:
    """The channel-encoder adaptation jobs the benchmark's channels ran (judged candidates)."""
    adaptation = engine.matching.adaptation
    return list(adaptation.reports) if adaptation is not None else []


async def _lora_version_counts(engine: Engine, channels: Sequence[ChannelKey]) -> dict[str, int]:
    """LoRA versions the benchmark's channels got, by status (empty with LoRA off)."""
    counts: dict[str, int] = defaultdict(int)
    for channel in channels:
        for version in await engine.lora_versions(channel):
            counts[version.status] += 1
    return dict(counts)


async def _curve(bench: _Bench, curve_support: Sequence[Utterance], query: Sequence[Utterance],
                 oos: Sequence[Utterance], config: BenchConfig) -> tuple[list[dict[str, Any]], list[float]]:
    rng, engine = bench.rng, bench.engine
    sequence = curve_sequence(curve_support, rng)
    if not sequence:
        return [], []
    top = min(max(config.curve, default=0), len(sequence))
    points = sorted({p for p in config.curve if p <= top} | ({top} if top else set()))
    used: set[str] = set()
    codes = {label: invented_code(rng, used) for label in dict.fromkeys(label for _, label in sequence)}
    paraphrases: dict[str, list[str]] = defaultdict(list)
    for u in query:
        paraphrases[u.label].append(u.text)
    channel = bench.key("curve")
    curve: list[dict[str, Any]] = []
    effect_ms: list[float] = []
    taught: list[tuple[str, str]] = []
    for n, (text, label) in enumerate(sequence[:top], 1):
        answer = _answer(codes[label])
        started = time.perf_counter()
        await bench.teach(channel, text, answer)
        if paraphrases.get(label):  # the effect: a paraphrase's reply uses the new correction
            probe = rng.choice(paraphrases[label])
            async with bench.gate:
                bench.threads += 1
                reply = engine.reply(Turn(ChannelKey(channel.platform, channel.channel, channel.space,
                                                     thread=f"t{bench.threads}"), probe))
                first = None
                async for _ in reply:
                    first = first or time.perf_counter() - started
                    if reply.explanation is not None and reply.explanation.route is not Route.CORRECTION:
                        break  # not answered from a correction: this one did not take effect (yet)
                explanation = reply.explanation
            if bench.progress:
                bench.progress(1)
            if explanation is not None and explanation.route is Route.CORRECTION and first is not None \
                    and explanation.corrections and explanation.corrections[0].answer == answer:
                effect_ms.append(first * 1000.0)
        taught.append((text, label))
        if n in points:
            await engine.settle()
            covered = {lab for _, lab in taught}
            gen_items = bench.sample([(t, lab) for lab in covered for t in paraphrases.get(lab, [])],
                                     config.curve_queries)
            rel_items = bench.sample(taught, config.curve_queries)
            loc_items = bench.sample([u.text for u in oos], config.curve_queries)
            gen = await bench.ask_all(channel, 0, [t for t, _ in gen_items])
            rel = await bench.ask_all(channel, 0, [t for t, _ in rel_items])
            loc = await bench.ask_all(channel, 0, loc_items)
            curve.append({
                "corrections": n,
                "labels": len(covered),
                "generality": _rate([code_in(codes[lab], a.reply)
                                     for (_, lab), a in zip(gen_items, gen, strict=True)]),
                "reliability": _rate([code_in(codes[lab], a.reply)
                                      for (_, lab), a in zip(rel_items, rel, strict=True)]),
                "locality": _rate([not any(code_in(c, a.reply) for c in codes.values()) for a in loc]),
            })
    return curve, effect_ms
