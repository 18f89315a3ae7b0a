"""The taste benchmark (part of ``heedful eval personal``): ``preference_match`` after 0, 1, 3, 5 and
10 signals, for the meta-learned prior, a scorer learned from zero, and no scorer.

Simulated people (``preference_data``: held-out preference combinations, held-out contents and
phrasings) each play ``turns`` turns: the bot offers the person's candidate grid (every length ×
tone × emoji style, in their language and in English: 16 replies), the scorer picks one, the person
judges it by the rule (👍 iff it matches every dimension they care about) and that is a signal:
*on-policy*, each scorer earning its own signals, as in the engine. After k signals (k in
``checkpoints``) the scorer picks on ``eval_turns`` fresh turns that give no signal, and
``preference_match[k]`` is the share of those picks the person would give a 👍.

- ``preference_match``: the meta-learned prior (``TastePrior``, the engine's ``Taste``);
- ``preference_match_zero_prior``: plain per-person logistic regression from zero (a Gaussian
  prior N(0, I/λ) on the weights of the same standardised features; λ chosen on validation
  people), fitted by Newton's method to the same kind of signals;
- ``preference_match_base``: no scorer, a random candidate (the exact expectation: the share of
  the grid the person likes), whatever the signals;
- ``preference_match_same_signals``: both scorers fed one and the same signal stream, the
  person's judgements of random candidates (the base model's replies), which isolates the prior
  from the signals each policy earns.

Ties (the zero-prior scorer before any signal) count as the expected match of the tied candidates.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..learning.preference import ARTIFACT, FEATURES, Signal, Taste, TastePrior, load_prior
from .preference_data import COMBOS, TEST_CONTENTS, TRAIN_CONTENTS, Person, World, sample_person, split_combos
from .runs import Bars, RunError, silent_bars

__all__ = ["LogisticScorer", "PreferenceEvalConfig", "run_preference_eval"]

RULE = ("👍 iff the reply matches the person's hidden preference on every dimension they care about "
        "(language always; length, tone, emoji unless indifferent)")


@dataclass(frozen=True)
class PreferenceEvalConfig:
    """One run of the taste benchmark."""

    people: int = 1000            # simulated people (held-out combinations)
    turns: int = 10               # signals each person gives
    eval_turns: int = 4           # fresh turns judged at each checkpoint
    checkpoints: tuple[int, ...] = (0, 1, 3, 5, 10)
    prior: str = "default"        # 'default' (shipped) or an artifact path
    renderings: int = 12
    split_seed: int = 0           # must be the meta-training's: which combinations are held out
    seed: int = 0


class Scorer(Protocol):
    def learn(self, raw: np.ndarray, liked: bool, key: str) -> None: ...

    def scores(self, raw: np.ndarray) -> np.ndarray: ...


class MetaScorer:
    """The engine's ``Taste`` under a prior."""

    def __init__(self, prior: TastePrior) -> None:
        self.taste = Taste(prior)

    def learn(self, raw: np.ndarray, liked: bool, key: str) -> None:
        self.taste.add(Signal(key, liked, raw))

    def scores(self, raw: np.ndarray) -> np.ndarray:
        return self.taste.score_features(raw)


class LogisticScorer:
    """Per-person logistic regression from zero: weights with a N(0, I/λ) prior (L2 penalty λ) on the
    features standardised by ``center`` / ``spread``, fitted by Newton's method."""

    def __init__(self, center: np.ndarray, spread: np.ndarray, penalty: float = 1.0) -> None:
        self.center, self.spread, self.penalty = center, spread, penalty
        self.rows: list[np.ndarray] = []
        self.labels: list[float] = []
        self.weights = np.zeros(len(FEATURES))

    def learn(self, raw: np.ndarray, liked: bool, key: str) -> None:
        self.rows.append((raw - self.center) / self.spread)
        self.labels.append(float(liked))
        x, y = np.stack(self.rows).astype(np.float64), np.asarray(self.labels)
        w = self.weights
        for _ in range(25):
            p = 0.5 * (1.0 + np.tanh(0.5 * (x @ w)))  # the logistic function, without overflow
            grad = x.T @ (p - y) + self.penalty * w
            hess = (x.T * (p * (1 - p))) @ x + self.penalty * np.eye(len(w))
            step = np.linalg.solve(hess, grad)
            w = w - step
            if np.abs(step).max() < 1e-6:
                break
        self.weights = w

    def scores(self, raw: np.ndarray) -> np.ndarray:
        return np.asarray(((raw - self.center) / self.spread) @ self.weights, dtype=np.float64)


def _judge(scores: np.ndarray, matches: np.ndarray) -> float:
    """The match of the top candidate; tied tops count as their expected match."""
    top = scores >= scores.max() - 1e-9
    return float(matches[top].mean())


def on_policy(factory: Callable[[], Scorer], people: list[Person], world: World, config: PreferenceEvalConfig,
              seed: int, same_signals: bool = False) -> dict[int, float]:
    """``preference_match`` per checkpoint: each person's scorer picks (ties at random), the person's
    judgement of the pick is the next signal (with ``same_signals``: their judgement of a random
    candidate instead), and fresh turns are judged after each checkpoint's number of signals."""
    rng = np.random.default_rng(seed)
    picker = random.Random(seed)
    checkpoints = sorted(config.checkpoints)
    found: dict[int, list[float]] = {k: [] for k in checkpoints}
    played = world.turns(people, config.turns, rng)
    fresh = world.turns(people, config.eval_turns * len(checkpoints), rng)
    for p in range(len(people)):
        scorer = factory()
        for t in range(config.turns + 1):
            if t in found:
                i = checkpoints.index(t)
                for e in range(i * config.eval_turns, (i + 1) * config.eval_turns):
                    found[t].append(_judge(scorer.scores(fresh.features[p, e]), fresh.matches[p, e]))
            if t == config.turns:
                break
            feats, matches = played.features[p, t], played.matches[p, t]
            if same_signals:
                pick = picker.randrange(len(matches))
            else:
                scores = scorer.scores(feats)
                pick = picker.choice(np.flatnonzero(scores >= scores.max() - 1e-9).tolist())
            scorer.learn(feats[pick], bool(matches[pick]), f"turn:{t}")
    return {k: round(float(np.mean(v)), 4) for k, v in found.items()}


def base(people: list[Person], world: World, config: PreferenceEvalConfig, seed: int) -> dict[int, float]:
    """No scorer: a random candidate, whose expected match is the share of the grid the person likes."""
    fresh = world.turns(people, config.eval_turns, np.random.default_rng(seed))
    share = round(float(fresh.matches.mean()), 4)
    return dict.fromkeys(sorted(config.checkpoints), share)


def tune_penalty(prior: TastePrior, config: PreferenceEvalConfig, bars: Bars) -> float:
    """The zero-prior scorer's L2 penalty, chosen on validation people (training contents and phrasings,
    validation combinations) by mean match over the checkpoints."""
    _, val_combos, _ = split_combos(config.split_seed)
    world = World(TRAIN_CONTENTS, held_out=False, renderings=config.renderings, seed=config.seed + 2000)
    people = [sample_person(random.Random(config.seed + 3000 + i), val_combos) for i in range(200)]
    best = (-1.0, 1.0)
    penalties = (0.01, 0.1, 1.0, 10.0, 100.0)
    with bars(total=len(penalties), desc="zero-prior penalty", unit="λ") as bar:
        for penalty in penalties:
            found = on_policy(functools.partial(LogisticScorer, prior.center, prior.spread, penalty), people, world,
                              config, seed=config.seed + 4000)
            best = max(best, (float(np.mean(list(found.values()))), penalty))
            bar.update()
    return best[1]


def cost(prior: TastePrior, signals: int = 10, candidates: int = 3, repeat: int = 200) -> dict[str, float]:
    """What the taste costs on top of generating the candidates: scoring ``candidates`` replies with
    ``signals`` signals (features of the texts, the posterior refitted), and memory per person."""
    from ..learning.preference import features

    rng = np.random.default_rng(0)
    texts = ["Certainly. The library opens at 9:00 on weekdays. I hope this information is helpful.",
             "Hey! The library opens at 9:00 on weekdays 📚 Cheers!", "La bibliothèque ouvre à 9 heures en semaine."]
    raw = np.stack([features(t, "when does the library open?") for t in texts])
    noise = rng.normal(0.0, 0.1, size=(signals, raw.shape[1])).astype(np.float32)
    taste = Taste(prior, [Signal(f"thumb:{i}", bool(i % 2), raw[i % 3] + noise[i]) for i in range(signals)])
    started = time.perf_counter()
    for i in range(repeat):
        taste.add(Signal(f"thumb:{i % signals}", bool(i % 2), raw[i % 3]))  # refit every time
        taste.scores(texts[:candidates], "when does the library open?")
    per_turn = (time.perf_counter() - started) / repeat * 1000.0
    return {"scoring_ms_per_turn": round(per_turn, 3), "bytes_per_person": taste.nbytes,
            "signals": signals, "candidates": candidates, "prior_bytes": prior.nbytes}


def run_preference_eval(config: PreferenceEvalConfig, bars: Bars = silent_bars) -> dict[str, Any]:
    """The taste benchmark; ``RunError`` for an unusable prior or sizes."""
    if config.people < 1 or config.turns < max(config.checkpoints) or config.eval_turns < 1:
        raise RunError("--preference-people must be positive (and the turns cover the checkpoints)")
    started = time.perf_counter()
    path = ARTIFACT if config.prior == "default" else Path(config.prior)
    try:
        prior = load_prior(path)
    except (OSError, ValueError) as err:
        raise RunError(f"--preference-prior: {err}") from None
    if prior.record.get("config", {}).get("split_seed", config.split_seed) != config.split_seed:
        raise RunError("the prior was meta-trained with another split of the preference combinations")
    _, _, test_combos = split_combos(config.split_seed)
    world = World(TEST_CONTENTS, held_out=True, renderings=config.renderings, seed=config.seed + 1000)
    people = [sample_person(random.Random(config.seed * 100_003 + i), test_combos) for i in range(config.people)]
    penalty = tune_penalty(prior, config, bars)
    runs: dict[str, Callable[[], dict[int, float]]] = {
        "meta": lambda: on_policy(lambda: MetaScorer(prior), people, world, config, seed=config.seed),
        "zero_prior": lambda: on_policy(lambda: LogisticScorer(prior.center, prior.spread, penalty), people, world,
                                        config, seed=config.seed),
        "meta_same": lambda: on_policy(lambda: MetaScorer(prior), people, world, config, seed=config.seed + 1,
                                       same_signals=True),
        "zero_same": lambda: on_policy(lambda: LogisticScorer(prior.center, prior.spread, penalty), people, world,
                                       config, seed=config.seed + 1, same_signals=True),
    }
    found: dict[str, dict[int, float]] = {}
    with bars(total=len(runs), desc="taste benchmark", unit="scorer") as bar:
        for name, run in runs.items():
            found[name] = run()
            bar.update()

    def keyed(values: dict[int, float]) -> dict[str, float]:
        return {str(k): v for k, v in values.items()}

    return {
        "preference_match": keyed(found["meta"]),
        "preference_match_zero_prior": keyed(found["zero_prior"]),
        "preference_match_base": keyed(base(people, world, config, seed=config.seed)),
        "preference_match_same_signals": {"meta": keyed(found["meta_same"]), "zero_prior": keyed(found["zero_same"]),
                                          "signals_from": "judgements of random candidates (the base model's)"},
        "preference": {
            "people": config.people, "combinations_held_out": len(test_combos), "of_combinations": len(COMBOS),
            "contents_held_out": len(TEST_CONTENTS), "candidates_per_turn": 16, "signals": config.turns,
            "judged_per_checkpoint": config.people * config.eval_turns, "rule": RULE,
            "prior": prior.name, "prior_trained": prior.record.get("trained", ""),
            "zero_prior_penalty": penalty, **cost(prior), "seed": config.seed,
            "seconds": round(time.perf_counter() - started, 1),
        },
    }
