"""Meta-training the taste prior (``heedful meta-train preference``; docs/LEARNING.md, "Taste").

The prior (``engine.learning.preference.TastePrior``: the mean and covariance of a Gaussian
process over reply features, its narrow part, the noise and what a 👍 / 👎 observes) is fitted
across many simulated people (``preference_data``) by what it is for: after k signals, does the
candidate it ranks first earn the person's 👍?

One outer step draws a batch of training people (training preference combinations, training
contents and phrasings). Each plays an *episode*: ``turns`` turns in which the current prior's
posterior picks a reply among the person's candidate grid (greedily, or for half the people at
random with probability ``explore``) and the person judges it by the rule: the signals are
on-policy, as in the engine. Then, for each number of signals k in ``shots``, the posterior after
the first k signals ranks the candidates of ``queries`` fresh turns, and the loss is the
listwise cross-entropy of the candidates the person would like (-log of their softmax mass).
The posterior is closed form (a k×k solve), so the loss differentiates through it into every
parameter of the prior; Adam updates them. Every ``eval_every`` steps the prior is validated by
the same on-policy protocol as the benchmark on people of the validation combinations, and the
best step is kept. The held-out combinations, contents and phrasings are never drawn.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..learning.preference import FEATURES, STYLE_FEATURES, TastePrior, save_prior
from .preference_data import GRID, TRAIN_CONTENTS, Person, World, sample_person, split_combos
from .runs import Bars, Log, RunError, silent_bars, silent_log

__all__ = ["PreferenceTrainConfig", "TorchPrior", "run_preference_training"]


@dataclass(frozen=True)
class PreferenceTrainConfig:
    """One meta-training run."""

    steps: int = 1500              # outer steps
    batch: int = 64                # people per step
    turns: int = 10                # on-policy signals per episode
    shots: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 8, 10)  # signal counts the loss is taken after
    queries: int = 2               # fresh turns ranked per signal count
    explore: float = 0.3           # rollout: random pick rate, for half the people
    lr: float = 0.02               # Adam
    eval_every: int = 100
    val_people: int = 400
    renderings: int = 12           # renderings per content and style in the pools
    split_seed: int = 0            # which preference combinations are held out (shared with the benchmark)
    seed: int = 0
    minutes: float = 0.0           # stop after this many minutes (0: no limit)
    threads: int = 1               # torch CPU threads
    out: Path = Path("preference.safetensors")


class TorchPrior(torch.nn.Module):
    """The prior's parameters, and the batched posterior in torch (the same maths as ``TastePrior``)."""

    center: torch.Tensor
    spread: torch.Tensor
    lower: torch.Tensor

    def __init__(self, center: np.ndarray, spread: np.ndarray) -> None:
        super().__init__()
        dims = len(FEATURES)
        self.register_buffer("center", torch.as_tensor(center, dtype=torch.float32))
        self.register_buffer("spread", torch.as_tensor(spread, dtype=torch.float32))
        self.register_buffer("lower", torch.tril(torch.ones(dims, dims)))
        self.mean = torch.nn.Parameter(torch.zeros(dims))
        self.factor = torch.nn.Parameter(0.3 * torch.eye(dims))
        self.log_rbf_scale = torch.nn.Parameter(torch.tensor(0.0))
        self.log_rbf_width = torch.nn.Parameter(torch.full((dims,), -1.0))
        self.log_noise = torch.nn.Parameter(torch.tensor(-1.0))
        self.up = torch.nn.Parameter(torch.tensor(1.0))
        self.down = torch.nn.Parameter(torch.tensor(-1.0))

    def standardise(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw - self.center) / self.spread

    def _kernel(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        factor = self.factor * self.lower
        linear = (a @ factor) @ (b @ factor).transpose(-1, -2)
        width = self.log_rbf_width.exp()
        diff = (a.unsqueeze(-2) - b.unsqueeze(-3)) * width
        return linear + self.log_rbf_scale.exp() * torch.exp(-0.5 * (diff ** 2).sum(-1))

    def scores(self, candidates: torch.Tensor, signals: torch.Tensor, liked: torch.Tensor) -> torch.Tensor:
        """Posterior mean utility of standardised ``candidates`` (B, ..., G, D) flattened per person to
        (B, N, D), given standardised ``signals`` (B, k, D) and their labels ``liked`` (B, k)."""
        shape = candidates.shape
        flat = candidates.reshape(shape[0], -1, shape[-1])
        base = flat @ self.mean
        if signals.shape[1] == 0:
            return base.reshape(shape[:-1])
        target = torch.where(liked, self.up, self.down) - signals @ self.mean
        gram = self._kernel(signals, signals) + self.log_noise.exp() * torch.eye(signals.shape[1])
        alpha = torch.linalg.solve(gram, target.unsqueeze(-1))
        found: torch.Tensor = (base + (self._kernel(flat, signals) @ alpha).squeeze(-1)).reshape(shape[:-1])
        return found

    def export(self, prototypes: np.ndarray, record: dict[str, Any], name: str) -> TastePrior:
        with torch.no_grad():
            def arr(t: torch.Tensor) -> np.ndarray:
                return t.detach().float().numpy().astype(np.float32)

            return TastePrior(arr(self.mean), arr(self.factor * self.lower), float(self.log_rbf_scale.exp()),
                              arr(self.log_rbf_width.exp()), float(self.log_noise.exp()), float(self.up),
                              float(self.down), arr(self.center), arr(self.spread), prototypes, record=record,
                              name=name)


def rollout(prior: TorchPrior, features: torch.Tensor, matches: torch.Tensor, explore: torch.Tensor,
            generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """On-policy signals: at each of the T turns of standardised ``features`` (B, T, G, D) the posterior so
    far picks a candidate (at random with probability ``explore`` (B,), ties broken at random), and the
    person's judgement of it (``matches`` (B, T, G)) is the signal. Returns (signals (B, T, D), liked (B, T))."""
    batch, turns = features.shape[:2]
    signals = features.new_zeros((batch, 0, features.shape[-1]))
    liked = torch.zeros((batch, 0), dtype=torch.bool)
    rows = torch.arange(batch)
    with torch.no_grad():
        for t in range(turns):
            scores = prior.scores(features[:, t], signals, liked)
            scores = scores + 1e-6 * torch.rand(scores.shape, generator=generator)  # ties: at random
            pick = scores.argmax(-1)
            wander = torch.rand(batch, generator=generator) < explore
            pick = torch.where(wander, torch.randint(0, scores.shape[-1], (batch,), generator=generator), pick)
            signals = torch.cat([signals, features[rows, t, pick].unsqueeze(1)], 1)
            liked = torch.cat([liked, matches[rows, t, pick].unsqueeze(1)], 1)
    return signals, liked


def listwise_loss(scores: torch.Tensor, matches: torch.Tensor) -> torch.Tensor:
    """-log of the softmax mass on the candidates the person would like, averaged."""
    liked = scores.masked_fill(~matches, float("-inf"))
    return (torch.logsumexp(scores, -1) - torch.logsumexp(liked, -1)).mean()


def prototypes_of(world: World) -> np.ndarray:
    """The mean style vector of each (length, tone, emoji) style over ``world``'s renderings (language
    columns zero: the language is set when a prototype is used)."""
    protos = world.replies.mean(axis=(0, 1, 3))  # (G, S)
    lang = STYLE_FEATURES.index("lang_en")
    protos[:, lang:] = 0.0
    return np.asarray(protos, dtype=np.float32)


def standardisation(world: World, people: list[Person], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Mean and spread of every feature over candidates of ``people``'s turns (unlabelled: no preference
    is read); constant features get spread 1."""
    sample = world.turns(people, 4, rng).features.reshape(-1, len(FEATURES))
    spread = sample.std(0)
    return sample.mean(0).astype(np.float32), np.where(spread < 1e-3, 1.0, spread).astype(np.float32)


def validate(prior: TorchPrior, world: World, people: list[Person], turns: int, checkpoints: tuple[int, ...],
             eval_turns: int, seed: int) -> dict[int, float]:
    """The benchmark's on-policy protocol, batched: greedy picks earn signals; after k of them (each k of
    ``checkpoints``) the share of ``eval_turns`` fresh turns whose top candidate the person likes."""
    rng = np.random.default_rng(seed)
    played = world.turns(people, turns, rng)
    fresh = world.turns(people, eval_turns * len(checkpoints), rng)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        feats = prior.standardise(torch.as_tensor(played.features))
        signals, liked = rollout(prior, feats, torch.as_tensor(played.matches), torch.zeros(len(people)), generator)
        queries = prior.standardise(torch.as_tensor(fresh.features))
        found = {}
        for i, k in enumerate(checkpoints):
            part = slice(i * eval_turns, (i + 1) * eval_turns)
            scores = prior.scores(queries[:, part], signals[:, :k], liked[:, :k])
            pick = scores.argmax(-1, keepdim=True)
            found[k] = float(torch.as_tensor(fresh.matches[:, part]).gather(-1, pick).float().mean())
    return found


def run_preference_training(config: PreferenceTrainConfig, bars: Bars = silent_bars,
                            log: Log = silent_log) -> dict[str, Any]:
    """Meta-train the prior and write it to ``config.out``; returns the run's record."""
    if config.steps < 1 or config.batch < 1 or config.turns < max(config.shots, default=0):
        raise RunError("--steps and --batch must be positive and --turns at least the largest shot count")
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    rng = random.Random(config.seed)
    nprng = np.random.default_rng(config.seed)
    train_combos, val_combos, test_combos = split_combos(config.split_seed)
    log(f"preference combinations: {len(train_combos)} training, {len(val_combos)} validation, "
        f"{len(test_combos)} held out")
    world = World(TRAIN_CONTENTS, held_out=False, renderings=config.renderings, seed=config.seed)
    val_people = [sample_person(random.Random(config.seed + 1 + i), val_combos) for i in range(config.val_people)]
    center, spread = standardisation(world, [sample_person(rng, train_combos) for _ in range(256)], nprng)
    prior = TorchPrior(center, spread)
    optimiser = torch.optim.Adam(prior.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    checkpoints = (0, 1, 3, 5, 10)
    best: tuple[float, dict[str, torch.Tensor], int, dict[int, float]] | None = None
    curve: list[dict[str, Any]] = []
    shots = tuple(k for k in config.shots if k <= config.turns)
    deadline = started + 60 * config.minutes if config.minutes > 0 else float("inf")
    losses: list[float] = []

    def check(step: int) -> None:
        nonlocal best
        found = validate(prior, world, val_people, config.turns, checkpoints, 2, seed=config.seed + 7)
        score = float(np.mean(list(found.values())))
        curve.append({"step": step, "loss": round(float(np.mean(losses[-config.eval_every:])), 4) if losses else None,
                      "val_match": {str(k): round(v, 4) for k, v in found.items()}})
        if best is None or score > best[0]:
            best = (score, {k: v.detach().clone() for k, v in prior.state_dict().items()}, step, found)

    check(0)
    step = 0
    with bars(total=config.steps, desc="meta-train preference", unit="step") as bar:
        for step in range(1, config.steps + 1):
            people = [sample_person(rng, train_combos) for _ in range(config.batch)]
            played = world.turns(people, config.turns, nprng)
            fresh = world.turns(people, config.queries, nprng)
            explore = torch.where(torch.arange(config.batch) % 2 == 0, config.explore, 0.0)
            feats = prior.standardise(torch.as_tensor(played.features))
            signals, liked = rollout(prior, feats, torch.as_tensor(played.matches), explore, generator)
            queries = prior.standardise(torch.as_tensor(fresh.features))
            matches = torch.as_tensor(fresh.matches)
            loss = torch.stack([listwise_loss(prior.scores(queries, signals[:, :k], liked[:, :k]), matches)
                                for k in shots]).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
            bar.update()
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
            if step % config.eval_every == 0 or step == config.steps:
                check(step)
            if time.perf_counter() > deadline:
                log(f"stopping after {step} steps: --minutes {config.minutes:g} reached")
                check(step)
                break
    assert best is not None
    score, state, best_step, found = best
    prior.load_state_dict(state)
    record = {
        "trained": time.strftime("%Y-%m-%d"), "config": {k: str(v) if isinstance(v, Path) else v
                                                          for k, v in asdict(config).items()},
        "steps_run": step, "best_step": best_step,
        "val_match": {str(k): round(v, 4) for k, v in found.items()}, "val_score": round(score, 4),
        "combinations": {"train": len(train_combos), "validation": len(val_combos), "held_out": len(test_combos)},
        "grid": len(GRID) * 2, "curve": curve, "seconds": round(time.perf_counter() - started, 1),
    }
    exported = prior.export(prototypes_of(world), record, name=Path(config.out).stem)
    save_prior(exported, config.out)
    log(f"best step {best_step}: validation match {record['val_match']}; wrote {config.out}")
    return {"out": str(config.out), **{k: v for k, v in record.items() if k != "curve"},
            "rbf_scale": round(exported.rbf_scale, 4), "noise": round(exported.noise, 4),
            "up": round(exported.up, 4), "down": round(exported.down, 4)}
