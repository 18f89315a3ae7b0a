"""Episodes: channel-tasks sampled from labelled utterances, for meta-training the metric.

A channel that corrects its bot is a few-shot task: N distinct answers (labels), each
taught with K phrasings (support), then new messages arrive: paraphrases of taught
questions (in-scope queries) and everything else (out-of-scope queries). An episode is
one such channel, drawn from a JSON-lines file of ``{"text": ..., "label": ...}`` lines
(``oos`` marks out-of-scope lines, as in CLINC150)::

    pool = UtterancePool(load_utterances("train.jsonl"))
    sampler = EpisodeSampler(pool, EpisodeConfig(n_way=10, k_shot=5), seed=0)
    episode = sampler.sample()      # indices into pool.texts; same seed, same episodes

Out-of-scope queries come from labels the episode did not draw (near misses from the
same data) and from the ``oos`` lines. Within an episode no utterance is used twice, so a
query is never in its own support set. Domains split data for honest transfer
measurement: ``split_by_domain`` keeps held-out domains' labels out entirely.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..dialog.sanitize import clean_text
from ..errors import InputError
from ..settings import DialogSettings

T = TypeVar("T")

DEFAULT_MAX_CHARS = DialogSettings().max_input_chars
"""The longest text the engine accepts by default: longer lines could not be asked."""

__all__ = [
    "OOS",
    "Utterance",
    "BadLine",
    "load_utterances",
    "read_json_lines",
    "labelled_row",
    "load_domains",
    "split_by_domain",
    "UtterancePool",
    "EpisodeConfig",
    "Episode",
    "EpisodeSampler",
]

OOS = "oos"
"""The label of out-of-scope lines."""


@dataclass(frozen=True, slots=True)
class Utterance:
    text: str
    label: str


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line of an input file that cannot be used, and why."""

    line: int
    why: str


def load_utterances(path: str | Path, skipped: list[BadLine] | None = None,
                    max_chars: int = DEFAULT_MAX_CHARS) -> list[Utterance]:
    """The lines of a JSON-lines file; each needs ``text`` and ``label``.

    Input files are user input: a line that is not a JSON object with both keys, or
    whose text the engine would refuse (blank after cleaning, longer than ``max_chars``),
    is appended to ``skipped`` when it is given, and otherwise raises ``ValueError``
    naming the file and line. Blank lines are ignored.

    A ``.json`` file in CLINC150's original layout (``data_full.json``: ``{"train": [[text,
    intent], ...], "oos_train": [...], ...}``) gives its ``train`` pairs, then its
    ``oos_train`` lines labelled ``oos``.
    """
    if Path(path).suffix == ".json":
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(data, dict) or "train" not in data:
            raise ValueError(f"{path}: expected JSON lines, or a CLINC150-style object with a 'train' split")
        return [Utterance(str(t), str(label)) for t, label in data["train"]] + [
            Utterance(str(t), OOS) for t, _ in data.get("oos_train", [])]
    return read_json_lines(path, lambda line: _utterance(line, max_chars), skipped)


def read_json_lines(path: str | Path, parse: Callable[[str], T], skipped: list[BadLine] | None = None) -> list[T]:
    """``parse`` of every non-blank line of ``path``. A line it refuses (``ValueError``) goes to
    ``skipped`` when that is given, and otherwise raises ``ValueError`` naming the file and line."""
    out: list[T] = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append(parse(line))
            except ValueError as err:
                if skipped is None:
                    raise ValueError(f"{path}:{n}: {err}") from None
                skipped.append(BadLine(n, str(err)))
    return out


def labelled_row(line: str, max_chars: int = DEFAULT_MAX_CHARS) -> tuple[dict[str, Any], str]:
    """(the JSON object of a ``{text, label}`` line, its text cleaned as the engine would);
    ``ValueError`` for a line that is not such an object or whose text the engine would refuse."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        raise ValueError("not JSON") from None
    if not isinstance(row, dict) or "text" not in row or "label" not in row:
        raise ValueError("each line must be an object with 'text' and 'label'")
    try:
        text = clean_text(str(row["text"]), limit=max_chars, what="text")
    except InputError as err:
        raise ValueError(str(err)) from None
    return row, text


def _utterance(line: str, max_chars: int) -> Utterance:
    row, text = labelled_row(line, max_chars)
    return Utterance(text, str(row["label"]))


def load_domains(path: str | Path) -> dict[str, str]:
    """label -> domain, from a JSON object ``{domain: [labels]}`` (CLINC150's ``domains.json``)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return {label: domain for domain, labels in data.items() for label in labels}


def split_by_domain(
    utterances: Sequence[Utterance], domains: dict[str, str], holdout: Sequence[str]
) -> tuple[list[Utterance], list[Utterance]]:
    """(kept, held out): utterances whose label's domain is in ``holdout`` go to the second list.

    ``oos`` lines stay on the kept side (they are training material for the scope
    radius). A label with no domain is kept; an unknown held-out domain is an error.
    """
    known = set(domains.values())
    unknown = sorted(set(holdout) - known)
    if unknown:
        raise ValueError(f"unknown domains {unknown}; known: {sorted(known)}")
    held = set(holdout)
    kept = [u for u in utterances if domains.get(u.label) not in held]
    out = [u for u in utterances if domains.get(u.label) in held]
    return kept, out


class UtterancePool:
    """Utterances indexed by label; episodes refer to them by position in ``texts``."""

    def __init__(self, utterances: Sequence[Utterance]) -> None:
        seen: set[tuple[str, str]] = set()
        self.texts: list[str] = []
        self.labels: list[str] = []
        for u in utterances:
            key = (" ".join(u.text.split()).casefold(), u.label)
            if key in seen:  # a duplicate line could otherwise be its own paraphrase
                continue
            seen.add(key)
            self.texts.append(u.text)
            self.labels.append(u.label)
        by_label: dict[str, list[int]] = {}
        for i, label in enumerate(self.labels):
            by_label.setdefault(label, []).append(i)
        self.oos = np.asarray(by_label.pop(OOS, []), dtype=np.int64)
        self.by_label = {label: np.asarray(ix, dtype=np.int64) for label, ix in sorted(by_label.items())}

    def __len__(self) -> int:
        return len(self.texts)

    def label_names(self, min_count: int = 1) -> list[str]:
        """In-scope labels with at least ``min_count`` utterances, sorted."""
        return [label for label, ix in self.by_label.items() if len(ix) >= min_count]


@dataclass(frozen=True, slots=True)
class EpisodeConfig:
    n_way: int = 10              # labels (distinct answers) in the channel
    n_way_max: int = 0           # > n_way: draw N uniformly from [n_way, n_way_max] per episode
    k_shot: int = 5              # support utterances per label
    k_shot_min: int = 0          # > 0: draw K uniformly from [k_shot_min, k_shot] per episode
    n_query: int = 5             # in-scope queries per label
    n_oos: int = 20              # out-of-scope queries per episode
    oos_lines: float = 0.5       # share of out-of-scope queries taken from 'oos' lines (rest: undrawn labels)


@dataclass(frozen=True, slots=True)
class Episode:
    """One channel-task; all arrays index ``UtterancePool.texts``."""

    labels: tuple[str, ...]      # (N,)
    support: np.ndarray          # (N, K) utterance indices, row i teaches labels[i]
    query: np.ndarray            # (Q,) in-scope query indices, Q = N * n_query
    query_labels: np.ndarray     # (Q,) row of ``support`` each query belongs to
    oos: np.ndarray              # (O,) out-of-scope query indices


class EpisodeSampler:
    """Seeded, reproducible episodes from a pool: the same seed gives the same sequence."""

    def __init__(self, pool: UtterancePool, config: EpisodeConfig, seed: int = 0) -> None:
        self.pool, self.config = pool, config
        self.rng = np.random.default_rng(seed)
        self.eligible = pool.label_names(config.k_shot + config.n_query)
        top = max(config.n_way, config.n_way_max)
        assert config.n_way >= 1 and config.k_shot >= 1, "an episode needs at least one label and one shot"
        assert config.k_shot_min <= config.k_shot, "k_shot_min must not exceed k_shot"
        if len(self.eligible) < top:
            raise ValueError(f"episodes of {top} labels need that many labels with {config.k_shot} + "
                             f"{config.n_query} utterances; the data has {len(self.eligible)}")

    def sample(self) -> Episode:
        c, rng = self.config, self.rng
        n = int(rng.integers(c.n_way, c.n_way_max + 1)) if c.n_way_max > c.n_way else c.n_way
        chosen = rng.choice(len(self.eligible), size=n, replace=False)
        labels = tuple(self.eligible[i] for i in chosen)
        k = int(rng.integers(c.k_shot_min, c.k_shot + 1)) if 0 < c.k_shot_min < c.k_shot else c.k_shot
        support = np.empty((n, k), dtype=np.int64)
        query = np.empty((n, c.n_query), dtype=np.int64)
        for row, label in enumerate(labels):
            # distinct draws: a query is never one of its own label's support utterances
            picks = rng.choice(self.pool.by_label[label], size=k + c.n_query, replace=False)
            support[row], query[row] = picks[:k], picks[k:]
        query_labels = np.repeat(np.arange(n), c.n_query)
        return Episode(labels, support, query.reshape(-1), query_labels, self._oos(set(labels)))

    def _oos(self, drawn: set[str]) -> np.ndarray:
        c, rng, pool = self.config, self.rng, self.pool
        n_lines = min(len(pool.oos), round(c.n_oos * c.oos_lines))
        lines = rng.choice(pool.oos, size=n_lines, replace=False) if n_lines else np.empty(0, dtype=np.int64)
        others = [label for label in pool.by_label if label not in drawn]
        n_other = c.n_oos - n_lines if others else 0
        picked = (rng.choice(len(others), size=n_other, replace=n_other > len(others)) if n_other
                  else np.empty(0, np.int64))
        near = [int(rng.choice(pool.by_label[others[i]])) for i in picked]
        return np.unique(np.concatenate([lines, np.asarray(near, dtype=np.int64)]))

    def __iter__(self) -> Iterator[Episode]:
        while True:
            yield self.sample()

    def take(self, n: int) -> list[Episode]:
        return [self.sample() for _ in range(n)]
