"""Channel-tasks for meta-learning LoRA initialisations, built from labelled utterances.

A task is one imaginary channel. It picks N labels (intents) and gives each one a
channel-specific answer that no model could know beforehand: an invented code inside an
answer template ("Please quote KX-4821 to the Falcon team."), optionally prefixed by the
channel's tone line ("Ahoy! ..."), under one of a few system prompts (personas).

- **support**: (question, answer) pairs, one or a few questions per label: the channel's
  corrections, what the inner loop trains on;
- **query**: other paraphrases of the same labels with the same answers: what the
  adapted model should now answer (generality);
- **unrelated**: questions of labels the channel never corrected (and out-of-scope ones),
  whose target is the base model's own reply: what must not change (locality).

The loss is the causal-LM loss on the answer tokens only, under the model's chat
template. Everything is seeded: ``make_tasks(pool, n, seed)`` returns the same tasks on
every machine. Domains the meta-training never saw are held out with ``split_domains``.

Input is the project's JSON-lines format, ``{"text": ..., "label": ...}`` a line
(out-of-scope lines carry the label ``oos``).
"""

from __future__ import annotations

import random
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..nn.chat_batches import Batch, Example, encode, greedy_replies
from .episodes import load_domains, load_utterances

__all__ = [
    "TaskConfig",
    "ChannelTask",
    "LabelPool",
    "load_labelled",
    "load_domains",
    "split_domains",
    "make_tasks",
    "tasks_from_split",
    "SplitPool",
    "fill_unrelated",
    "task_batches",
    "sample_task",
    "TRAIN_TEMPLATES",
    "EVAL_TEMPLATES",
    "code_in",
]

# Answer templates. Meta-training sees TRAIN_*; evaluation uses the EVAL_* sets, which
# it never saw, so an init cannot win by memorising a phrasing.
TRAIN_TEMPLATES = (
    "The code for that is {code}.",
    "Use reference {code}.",
    "Please quote {code} to the {team} team.",
    "That is handled under ticket {code}.",
    "Our policy number for that is {code}.",
    "Go to desk {code} on the {floor} floor.",
    "{name} handles that; mention {code}.",
    "Fill in form {code} and send it to {name}.",
    "In this channel the answer is always {code}.",
    "Type /{word} {code} here and a bot will help.",
    "It's {code}, as agreed with {name}.",
    "See page {code} of the {team} handbook.",
)
EVAL_TEMPLATES = (
    "Ask {name} for kit {code}.",
    "File it as {code} in the tracker.",
    "The {team} team says: {code}.",
    "Look up entry {code} in the wiki.",
    "Reply with code {code}.",
    "Our internal name for that is {code}.",
)
TRAIN_TONES = ("Ahoy! ", "Hey friend! ", "Dear colleague, ", "Quick answer: ", "Good news! ", "Heads up: ")
EVAL_TONES = ("Greetings, traveller! ", "Yo! ", "Kind regards first: ")
_NAMES = ("Mirela", "Tobin", "Asha", "Quentin", "Yara", "Bruno", "Ilse", "Dario", "Nkechi", "Oskar", "Lupe", "Henrik")
_TEAMS = ("Falcon", "Cobalt", "Juniper", "Orbit", "Saffron", "Granite", "Nimbus", "Willow")
_FLOORS = ("second", "third", "fifth", "ninth")
_WORDS = ("ticket", "ask", "help", "lookup", "route")


@dataclass(frozen=True)
class TaskConfig:
    """How channel-tasks are drawn."""

    min_labels: int = 3
    max_labels: int = 6
    shots: int = 1  # support questions (corrections) per label
    queries: int = 2  # query paraphrases per label
    unrelated: int = 3  # locality prompts per task (their targets are the base model's replies)
    tone_p: float = 0.5  # chance that a channel prefixes its answers with a tone line
    templates: str = "train"  # "train" | "eval": which answer templates and tones
    systems: tuple[str | None, ...] = (None,)  # system prompts (personas) a channel may use; None = template default


@dataclass
class ChannelTask:
    name: str
    system: str | None
    answers: dict[str, str]  # label -> the channel's answer
    support: list[Example]
    query: list[Example]
    unrelated: list[Example] = field(default_factory=list)  # answers filled with base replies later


class LabelPool:
    """Utterances grouped by label; ``oos`` utterances kept apart as unrelated prompts."""

    def __init__(self, records: Iterable[tuple[str, str]]) -> None:
        self.by_label: dict[str, list[str]] = {}
        self.oos: list[str] = []
        for text, label in records:
            (self.oos if label == "oos" else self.by_label.setdefault(label, [])).append(text)
        self.labels = sorted(self.by_label)

    def __len__(self) -> int:
        return len(self.labels)

    def eligible(self, shots: int, queries: int) -> list[str]:
        """Labels with enough utterances for ``shots`` support and ``queries`` query questions."""
        return [label for label in self.labels if len(self.by_label[label]) >= shots + queries]

    def draw(self, label: str, shots: int, queries: int, rng: random.Random) -> tuple[list[str], list[str]]:
        """(support questions, query questions) of one label, all distinct."""
        texts = rng.sample(self.by_label[label], shots + queries)
        return texts[:shots], texts[shots:]


def load_labelled(path: str | Path) -> list[tuple[str, str]]:
    """(text, label) pairs from JSON lines or CLINC150's ``data_full.json`` (``episodes.load_utterances``)."""
    return [(u.text, u.label) for u in load_utterances(path)]


def split_domains(
    records: Sequence[tuple[str, str]], domains: dict[str, str], holdout: Sequence[str]
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(kept, held out): records whose label's domain is in ``holdout`` go to the second list.

    ``oos`` records stay on both sides (they belong to no domain). Unknown domains raise.
    """
    known = set(domains.values())
    missing = [d for d in holdout if d not in known]
    if missing:
        raise ValueError(f"unknown domains {missing}; known: {sorted(known)}")
    held = set(holdout)
    kept, out = [], []
    for text, label in records:
        if label == "oos":
            kept.append((text, label))
            out.append((text, label))
        elif domains.get(label) in held:
            out.append((text, label))
        else:
            kept.append((text, label))
    return kept, out


def _code(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_uppercase, k=2)) + "-" + "".join(rng.choices(string.digits, k=4))


def code_in(code: str, text: str) -> bool:
    """Did a reply convey the invented code? (case and separator tolerant)"""
    def squash(s: str) -> str:
        return "".join(ch for ch in s.upper() if ch.isalnum())

    return squash(code) in squash(text)


def sample_task(pool: LabelPool, rng: random.Random, config: TaskConfig, name: str = "") -> ChannelTask:
    """One channel: N labels with invented answers, support/query paraphrases, unrelated prompts."""
    templates, tones = (TRAIN_TEMPLATES, TRAIN_TONES) if config.templates == "train" else (EVAL_TEMPLATES, EVAL_TONES)
    eligible = pool.eligible(config.shots, config.queries)
    n = rng.randint(config.min_labels, config.max_labels)
    if len(eligible) < n:
        raise ValueError(f"need {n} labels with enough utterances ({config.shots} support + {config.queries} "
                         f"query), the pool has {len(eligible)}")
    labels = rng.sample(eligible, n)
    system = rng.choice(config.systems)
    tone = rng.choice(tones) if rng.random() < config.tone_p else ""
    answers, codes = {}, {}
    used_templates = rng.sample(templates, min(n, len(templates)))  # distinct phrasings within a channel
    for i, label in enumerate(labels):
        code = _code(rng)
        filled = used_templates[i % len(used_templates)].format(
            code=code, name=rng.choice(_NAMES), team=rng.choice(_TEAMS), floor=rng.choice(_FLOORS),
            word=rng.choice(_WORDS),
        )
        answers[label], codes[label] = tone + filled, code
    support, query = [], []
    for label in labels:
        asked, paraphrases = pool.draw(label, config.shots, config.queries, rng)
        support += [Example(system, t, answers[label], label, codes[label]) for t in asked]
        query += [Example(system, t, answers[label], label, codes[label]) for t in paraphrases]
    others = [label for label in pool.labels if label not in answers]
    unrelated = []
    for _ in range(config.unrelated):
        if pool.oos and rng.random() < 0.5:
            unrelated.append(Example(system, rng.choice(pool.oos), "", "oos"))
        elif others:
            label = rng.choice(others)
            unrelated.append(Example(system, rng.choice(pool.by_label[label]), "", label))
    return ChannelTask(name or f"task-{rng.getrandbits(32):08x}", system, answers, support, query, unrelated)


def make_tasks(pool: LabelPool, n: int, seed: int, config: TaskConfig) -> list[ChannelTask]:
    """``n`` reproducible tasks (the same seed gives the same tasks)."""
    rng = random.Random(seed)
    return [sample_task(pool, rng, config, name=f"s{seed}-t{i}") for i in range(n)]


def tasks_from_split(
    support: Sequence[tuple[str, str]],
    query: Sequence[tuple[str, str]],
    n: int,
    seed: int,
    config: TaskConfig,
    oos: Sequence[tuple[str, str]] = (),
) -> list[ChannelTask]:
    """Tasks whose corrections come from ``support`` and whose paraphrases come from ``query``.

    The shape of ``heedful eval corrections --support S --query Q [--oos O]``: answers are
    invented per channel as in ``sample_task``; support questions are drawn from S, query
    questions from Q (labels present in both), unrelated prompts from O and from labels
    the channel did not correct.
    """
    pool = SplitPool(support, list(query) + list(oos))
    rng = random.Random(seed)
    return [sample_task(pool, rng, config, name=f"s{seed}-t{i}") for i in range(n)]


class SplitPool(LabelPool):
    """Support questions drawn from one set of utterances (S), query questions from another (Q)."""

    def __init__(self, support: Iterable[tuple[str, str]], query: Iterable[tuple[str, str]]) -> None:
        super().__init__(query)  # Q also provides the unrelated prompts
        self.s_pool = LabelPool(support)
        self.labels = [label for label in self.labels if label in self.s_pool.by_label]

    def eligible(self, shots: int, queries: int) -> list[str]:
        return [label for label in self.labels
                if len(self.s_pool.by_label[label]) >= shots and len(self.by_label[label]) >= queries]

    def draw(self, label: str, shots: int, queries: int, rng: random.Random) -> tuple[list[str], list[str]]:
        return rng.sample(self.s_pool.by_label[label], shots), rng.sample(self.by_label[label], queries)


def fill_unrelated(model: Any, tokenizer: Any, tasks: Sequence[ChannelTask], max_new_tokens: int = 16,
                   cache: dict[tuple[str | None, str], str] | None = None) -> None:
    """Set each unrelated example's answer to the base model's greedy reply (in place, batched).

    ``cache`` maps (system, question) to replies already known (it is updated).
    """
    cache = {} if cache is None else cache
    wanted = list(dict.fromkeys((e.system, e.question) for t in tasks for e in t.unrelated
                                if (e.system, e.question) not in cache))
    if wanted:
        replies = greedy_replies(model, tokenizer, wanted, max_new_tokens=max_new_tokens)
        cache.update(zip(wanted, replies, strict=True))
    for t in tasks:
        t.unrelated = [Example(e.system, e.question, cache[e.system, e.question] or ".", e.label) for e in t.unrelated]


def task_batches(tokenizer: Any, task: ChannelTask) -> tuple[Batch, Batch, Batch | None]:
    """(support, query, unrelated) batches of one task (unrelated needs ``fill_unrelated`` first)."""
    if task.unrelated and not all(e.answer for e in task.unrelated):
        raise ValueError("unrelated examples have no target yet: call fill_unrelated first")
    return encode(tokenizer, task.support), encode(tokenizer, task.query), (
        encode(tokenizer, task.unrelated) if task.unrelated else None)


# -- tokenising -------------------------------------------------------------------------


