"""Taste (docs/LEARNING.md, "Taste"): reply features, the meta-learned prior and a person's taste, the
simulated people and the benchmark, and the engine path on the tiny model: a person's 👍/👎 make the
engine generate candidates in one batch and send the one their taste scores highest, ``/why`` shows
what of their profile chose it (to them only), and ``/forget me`` removes it, across restarts too."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncGenerator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from bots.cli import app
from engine import ChannelKey, Engine, Feedback, FeedbackKind, Turn
from engine.learning.preference import (
    FEATURES,
    Signal,
    Style,
    Taste,
    TastePrior,
    asker_vector,
    features,
    language,
    load_prior,
    style_vector,
)
from engine.reply import Reply
from engine.training.preference_data import (
    CONTENTS,
    TEST_CONTENTS,
    TRAIN_CONTENTS,
    Person,
    Preference,
    World,
    render,
    sample_person,
    split_combos,
)
from engine.training.preference_eval import LogisticScorer, PreferenceEvalConfig, run_preference_eval
from engine.training.preference_train import TorchPrior
from tests.conftest import MODELS_DIR

F = {name: i for i, name in enumerate(FEATURES)}


# -- features ------------------------------------------------------------------------------------


def test_features_of_known_strings() -> None:
    casual = features("Hey! The library opens at 9:00 on weekdays 📚 Hope that helps! 🙂", "when does it open? 🙂")
    assert casual[F["emoji"]] == 1.0 and casual[F["emoji_count"]] == pytest.approx(np.log1p(2))
    assert casual[F["words"]] == pytest.approx(np.log1p(12))  # "9:00" is two words
    assert casual[F["exclamations"]] == pytest.approx(np.log1p(2)) and casual[F["greeting"]] == 1.0
    assert casual[F["casual"]] > 0 and casual[F["formal"]] == 0 and casual[F["lang_en"]] == 1.0
    assert casual[F["emoji_mirror"]] == 1.0 and casual[F["same_language"]] == 1.0  # both use emoji; both English

    formal = features("Certainement. La bibliothèque ouvre à 9 heures en semaine.\n- Le samedi à 10 heures.\n"
                      "- Fermée le dimanche.\nCordialement.", "Quand ouvre la bibliothèque ? Merci.")
    assert formal[F["emoji"]] == 0 and formal[F["bullets"]] == pytest.approx(np.log1p(2))
    assert formal[F["formal"]] > 0 and formal[F["lang_fr"]] == 1.0 and formal[F["same_language"]] == 1.0
    assert formal[F["emoji_mirror"]] == 0.0  # no emoji in the reply: nothing to mirror

    assert features("The library opens at 9.", "¿Cuándo abre la biblioteca?")[F["same_language"]] == 0.0
    assert features("Hi!", "hey")[F["sentences"]] == pytest.approx(np.log1p(1))
    assert asker_vector("hey, when does it open? 🙂")[:2].tolist() == [1.0, 1.0]  # emoji, casual
    assert asker_vector("Good morning, when does it open? Thank you.")[:2].tolist() == [0.0, -1.0]  # formal


@pytest.mark.parametrize(("text", "lang"), [
    ("When does the library open on Saturdays?", "en"),
    ("Quand est-ce que la bibliothèque ouvre le samedi ?", "fr"),
    ("¿Cuándo abre la biblioteca los sábados?", "es"),
    ("Wann öffnet die Bibliothek am Samstag?", "de"),
    ("ok", "other"),
])
def test_language(text: str, lang: str) -> None:
    assert language(text) == lang


def test_every_rendered_style_is_told_apart_by_its_features() -> None:
    rng = random.Random(0)
    for content in CONTENTS[:4]:
        for lang in ("en", "fr", "es", "de"):
            brief, detailed = (style_vector(render(content, Style(length, "formal", False, lang), rng))
                               for length in ("brief", "detailed"))
            assert brief[F["words"]] < detailed[F["words"]] and brief[F["sentences"]] < detailed[F["sentences"]]
            emoji = style_vector(render(content, Style("brief", "casual", True, lang), rng))
            assert emoji[F["emoji"]] == 1.0 and emoji[F[f"lang_{lang}"]] == 1.0


# -- the scorer ------------------------------------------------------------------------------------


def _play(taste_or_scorer: Any, person: Person, world: World, turns: int, rng: np.random.Generator) -> None:
    """``turns`` on-policy signals: the scorer picks, the person judges by the rule."""
    played = world.turns([person], turns, rng)
    for t in range(turns):
        if isinstance(taste_or_scorer, Taste):
            scores = taste_or_scorer.score_features(played.features[0, t])
        else:
            scores = taste_or_scorer.scores(played.features[0, t])
        pick = int(np.argmax(scores))
        liked, raw = bool(played.matches[0, t, pick]), played.features[0, t, pick]
        if isinstance(taste_or_scorer, Taste):
            taste_or_scorer.add(Signal(f"turn:{t}", liked, raw))
        else:
            taste_or_scorer.learn(raw, liked, f"turn:{t}")


@pytest.mark.parametrize("length", ["brief", "detailed"])
def test_five_signals_teach_a_persons_length_for_held_out_content(length: str) -> None:
    prior = load_prior()
    person = Person(Preference("en", length, None, None), "en", 0.5, 0.25, "fr")
    grid = person.candidates()
    train = World(TRAIN_CONTENTS, held_out=False, renderings=4, seed=0)
    test = World(TEST_CONTENTS, held_out=True, renderings=4, seed=1)
    for seed in range(3):
        rng = np.random.default_rng(seed)
        taste = Taste(prior)
        _play(taste, person, train, 5, rng)
        assert len(taste) == 5
        fresh = test.turns([person], 10, rng)  # contents and phrasings training never rendered
        tops = [grid[int(np.argmax(taste.score_features(fresh.features[0, e])))] for e in range(10)]
        assert all(top.length == length and top.language == "en" for top in tops)


def test_without_signals_the_zero_prior_scorer_and_a_neutral_taste_are_neutral() -> None:
    prior = load_prior()
    turn = World(TEST_CONTENTS, held_out=True, renderings=2).turns([sample_person(random.Random(0))], 1,
                                                                  np.random.default_rng(0))
    candidates = turn.features[0, 0]
    assert np.ptp(LogisticScorer(prior.center, prior.spread).scores(candidates)) == 0.0
    assert np.all(Taste(TastePrior.neutral()).score_features(candidates) == 0.0)
    assert np.ptp(Taste(prior).score_features(candidates)) > 0  # the meta-learned prior already leans


def test_a_newer_judgement_of_the_same_reply_replaces_the_older() -> None:
    raw = features("Certainly. It opens at 9.", "When does it open?")
    taste = Taste(load_prior(), [Signal("thumb:1", False, raw)])
    taste.add(Signal("thumb:1", True, raw))
    assert (len(taste), taste.up, taste.down) == (1, 1, 0)
    taste.discard("thumb:1")
    assert len(taste) == 0 and taste.nbytes == 0


def test_the_torch_posterior_is_the_runtime_posterior() -> None:
    rng = np.random.default_rng(0)
    prior = TorchPrior(rng.normal(size=len(FEATURES)).astype(np.float32),
                       rng.uniform(0.5, 2.0, len(FEATURES)).astype(np.float32))
    with torch.no_grad():
        for p in prior.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    raw_signals = rng.normal(size=(4, len(FEATURES))).astype(np.float32)
    raw_candidates = rng.normal(size=(6, len(FEATURES))).astype(np.float32)
    liked = np.array([True, False, False, True])
    with torch.no_grad():
        expected = prior.scores(prior.standardise(torch.as_tensor(raw_candidates))[None],
                                prior.standardise(torch.as_tensor(raw_signals))[None], torch.as_tensor(liked)[None])[0]
    exported = prior.export(np.zeros((8, 15), np.float32), {}, "test")
    taste = Taste(exported, [Signal(f"s{i}", bool(liked[i]), raw_signals[i]) for i in range(4)])
    assert np.allclose(taste.score_features(raw_candidates), expected.numpy(), rtol=1e-4, atol=1e-4)


def test_held_out_combinations_never_meet_training_people() -> None:
    train, val, test = split_combos(0)
    assert not (train & test) and not (val & test) and not (train & val) and len(test) == 27
    rng = random.Random(0)
    from engine.training.preference_data import COMBOS
    for _ in range(200):
        p = sample_person(rng, train)
        assert COMBOS.index((p.preference.language, p.preference.length, p.preference.tone,
                             p.preference.emoji)) in train
        assert sum(p.preference.likes(s) for s in p.candidates()) >= 1  # a grid always has a reply they like


# -- the runs and their commands ---------------------------------------------------------------------


def test_meta_train_preference_writes_a_loadable_prior(tmp_path: Path) -> None:
    out = tmp_path / "prior.safetensors"
    result = CliRunner().invoke(app, ["meta-train", "preference", "--steps", "2", "--batch", "4", "--val-people", "8",
                                      "--eval-every", "1", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data["steps_run"] == 2 and set(data["val_match"]) == {"0", "1", "3", "5", "10"}
    prior = load_prior(out)
    assert prior.mean.shape == (len(FEATURES),) and prior.record["best_step"] in (0, 1, 2)


def test_eval_personal_preference_only_json(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HEEDFUL_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["eval", "personal", "--preference-only", "--preference-people", "20", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("preference_match", "preference_match_zero_prior", "preference_match_base"):
        assert set(data[key]) == {"0", "1", "3", "5", "10"} and all(0.0 <= v <= 1.0 for v in data[key].values())
    assert len(set(data["preference_match_base"].values())) == 1  # no scorer: no learning
    assert data["preference"]["people"] == 20 and data["preference"]["bytes_per_person"] > 0


def test_the_benchmark_is_seeded() -> None:
    config = PreferenceEvalConfig(people=10, seed=3)
    first, second = run_preference_eval(config), run_preference_eval(config)
    assert first["preference_match"] == second["preference_match"]


# -- the engine --------------------------------------------------------------------------------------


async def ask(engine: Engine, key: ChannelKey, text: str, author: str) -> Reply:
    reply = engine.reply(Turn(key, text, author_id=author))
    await reply.collect()
    return reply


async def rate(engine: Engine, key: ChannelKey, reply: Reply, author: str, up: bool) -> None:
    await engine.feedback(Feedback(key, FeedbackKind.UP if up else FeedbackKind.DOWN, author_id=author,
                                   reply_id=reply.reply_id))


async def test_a_persons_thumb_makes_the_engine_choose_among_candidates(tiny_engine: Engine,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    key = ChannelKey("test", "taste-batch", space="s")
    first = await ask(tiny_engine, key, "When does the library open?", "ana")
    assert first.explanation is not None and not first.explanation.preference  # no signal yet
    await rate(tiny_engine, key, first, "ana", up=False)

    worker = tiny_engine._worker
    assert worker is not None and tiny_engine._loaded is not None
    submitted: list[list[int]] = []
    original = worker.submit

    def counting(prompt: Any, *args: Any, **kwargs: Any) -> Any:
        submitted.append(list(prompt))
        return original(prompt, *args, **kwargs)

    monkeypatch.setattr(worker, "submit", counting)
    second = await ask(tiny_engine, key, "When does the library open?", "ana")
    assert len(submitted) == 3  # the plain prompt and two styles, submitted together
    prompts = [tiny_engine._loaded.tokenizer.decode(p) for p in submitted]
    assert sum("Answer in English." in p for p in prompts) == 2
    explanation = second.explanation
    assert explanation is not None
    taste = explanation.preference
    assert taste["person"] == "ana" and (taste["signals"], taste["up"], taste["down"]) == (1, 0, 1)
    assert taste["candidates"][0]["style"] == "plain" and len(taste["candidates"]) == 3
    assert set(taste["leanings"]) >= {"length", "tone", "emoji"}
    assert "your taste here, from 1 signal(s) (0 up, 1 down)" in explanation.summary()
    assert "sent candidate" in explanation.summary()

    stored = await tiny_engine.explain(key, reply_id=second.reply_id, viewer="ana")
    assert stored.preference == taste
    theirs = await tiny_engine.explain(key, reply_id=second.reply_id, viewer="ben")
    assert not theirs.preference and "asker's taste" in theirs.summary() and "your taste" not in theirs.summary()

    submitted.clear()
    other = await ask(tiny_engine, key, "When does the library open?", "ben")  # no signal of his: one row
    assert len(submitted) == 1 and other.explanation is not None and not other.explanation.preference


async def test_the_reply_sent_is_the_candidate_the_taste_scores_highest(tiny_engine: Engine,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    key = ChannelKey("test", "taste-pick", space="s")
    plain = "The library opens at 9:00 on weekdays, and on Saturdays it opens at 10:00."

    async def produce(channel: ChannelKey, text: str, question_id: int, explanation: Any, persona: str,
                      lora: Any, asker: str = "", submitted: Any = lambda: None) -> AsyncGenerator[str, None]:
        submitted()  # as Engine._produce: no model request, so nothing to wait for
        if "one short sentence" in persona:
            yield "Hey! It opens at 9:00 🙂" if "casual" in persona else "It opens at 9:00."
        elif "in detail" in persona:
            yield ("Certainly. The library opens at 9:00 on weekdays. On Saturdays it opens at 10:00. It is "
                   "closed on Sundays. I hope this information is helpful.")
        else:
            yield plain

    monkeypatch.setattr(tiny_engine, "_produce", produce)
    first = await ask(tiny_engine, key, "When does the library open?", "cleo")
    assert first.text == plain
    await rate(tiny_engine, key, first, "cleo", up=False)
    second = await ask(tiny_engine, key, "When does the library open?", "cleo")
    assert second.explanation is not None
    taste = second.explanation.preference
    scores = [c["score"] for c in taste["candidates"]]
    assert taste["chosen"] == int(np.argmax(scores)) != 0  # the 👎'd plain style lost
    assert second.text != plain
    await rate(tiny_engine, key, second, "cleo", up=True)
    profile = tiny_engine.profiles.peek(key, "cleo")
    assert profile is not None and profile.taste is not None and (profile.taste.up, profile.taste.down) == (1, 1)


async def test_only_the_asked_persons_judgements_and_corrections_are_their_taste(tiny_engine: Engine) -> None:
    key = ChannelKey("test", "taste-whose", space="s")
    hers = await ask(tiny_engine, key, "What is the boiling point of water?", "dana")
    await rate(tiny_engine, key, hers, "eli", up=True)  # someone else's thumb on her reply
    assert len(await _taste(tiny_engine, key, "dana")) == 0 and len(await _taste(tiny_engine, key, "eli")) == 0
    receipt = await tiny_engine.feedback(Feedback(key, FeedbackKind.CORRECTION, author_id="dana",
                                                  reply_id=hers.reply_id, text="100 °C at sea level.", personal=True))
    taste = await _taste(tiny_engine, key, "dana")
    assert [(s.key, s.liked) for s in taste.signals] == [(f"correction:{receipt.correction_id}", True)]


async def _taste(engine: Engine, key: ChannelKey, person: str) -> Taste:
    taste = await engine.profiles.taste(key, person)
    assert taste is not None
    return taste


async def test_forget_me_removes_the_taste_across_a_restart(
        make_engine: Callable[..., AbstractAsyncContextManager[Engine]], tmp_path: Path) -> None:
    key = ChannelKey("test", "taste-forget", space="s")
    data = tmp_path / "forget"
    async with make_engine(data_dir=data) as engine:
        for up in (False, True):
            await rate(engine, key, await ask(engine, key, "How do I reset my password?", "fay"), "fay", up)
        await rate(engine, key, await ask(engine, key, "How do I reset my password?", "gus"), "gus", True)
    async with make_engine(data_dir=data) as engine:  # read back from the store
        assert len(await _taste(engine, key, "fay")) == 2 and len(await _taste(engine, key, "gus")) == 1
        assert await engine.forget_person(key, "fay") == {"facts": 0, "corrections": 0}
        assert engine.profiles.peek(key, "fay") is None
        reply = await ask(engine, key, "How do I reset my password?", "fay")
        assert reply.explanation is not None and not reply.explanation.preference
        assert len(await _taste(engine, key, "fay")) == 0
    async with make_engine(data_dir=data) as engine:  # still forgotten; a new judgement counts again
        assert len(await _taste(engine, key, "fay")) == 0 and len(await _taste(engine, key, "gus")) == 1
        await rate(engine, key, await ask(engine, key, "How do I reset my password?", "fay"), "fay", True)
        assert len(await _taste(engine, key, "fay")) == 1


def test_one_candidate_turns_taste_off(tmp_path: Path) -> None:
    from tests.conftest import engine_settings

    settings = engine_settings(tmp_path, MODELS_DIR)
    assert Engine(settings).taste_prior is not None
    off = settings.model_copy(update={"dialog": settings.dialog.model_copy(update={"preference_candidates": 1})})
    assert Engine(off).taste_prior is None
