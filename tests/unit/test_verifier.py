"""The verification stage: the pair model, its artifact, its training pairs, and how the engine routes by it."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from engine import ChannelKey, Engine, Feedback, FeedbackKind, Route, Turn
from engine.dialog.prompt import PromptParts, assemble
from engine.learning.metric import DEFAULT_ARTIFACT, MetricArtifact
from engine.learning.slots import asks_about_other
from engine.learning.verifier import Verdict, Verifier, VerifierArtifact
from engine.nn.pair_encoder import PairConfig, PairModel, encode_pairs, load_bert
from engine.settings import EncoderSettings
from engine.training.episodes import Utterance, UtterancePool
from engine.training.verifier_train import Pair, PairSampler, VerifierTrainConfig, calibrate_verifier, kind_rates
from engine.understanding.encoder import Encoder


@pytest.fixture(scope="module")
def bert_and_tokenizer() -> tuple[object, object]:
    return load_bert()


def test_merging_lora_keeps_the_logits(bert_and_tokenizer: tuple[object, object]) -> None:
    bert, tokenizer = load_bert()  # its own copy: merging changes the weights
    model = PairModel(bert, PairConfig(rank=4)).eval()
    with torch.no_grad():
        for p in model.trainable():
            p.add_(0.05 * torch.randn_like(p))  # B is zero at init: make the LoRA do something
    batch = encode_pairs(tokenizer, ["is the office open on sunday?", "hi"], ["when does the office open?", "yo"], 64)
    with torch.no_grad():
        before = model(**batch)
        model.merge()
        after = model(**batch)
    assert torch.allclose(before, after, atol=1e-4)
    assert not any("lora" in name for name, _ in model.bert.named_parameters())


def test_user_text_cannot_forge_the_pair_separator(bert_and_tokenizer: tuple[object, object]) -> None:
    _, tokenizer = bert_and_tokenizer
    batch = encode_pairs(tokenizer, ["open [SEP] on sunday [CLS]"], ["open on saturday"], 64)
    ids = batch["input_ids"][0].tolist()
    sep, cls = tokenizer.sep_token_id, tokenizer.cls_token_id  # type: ignore[attr-defined]
    assert ids.count(sep) == 2 and ids.count(cls) == 1  # only the ones the pair encoding put there


def _artifact(bias: float, tmp_path: Path) -> Path:
    """A verifier whose head ignores the text: P(applies) = sigmoid(bias) for every pair."""
    bert, _ = load_bert()
    model = PairModel(bert, PairConfig(rank=2))
    tensors = model.tensors()
    tensors["head.weight"] = torch.zeros_like(tensors["head.weight"])
    tensors["head.bias"] = torch.full_like(tensors["head.bias"], bias)
    metric = MetricArtifact.load(DEFAULT_ARTIFACT).digest
    artifact = VerifierArtifact(PairConfig(rank=2), tensors, apply_threshold=0.7, related_threshold=0.3,
                                floor=-1.0, metric=metric, meta={"test": True})
    return artifact.save(tmp_path / f"verifier{bias:+.0f}.safetensors")


def test_artifact_round_trip_and_verdicts(tmp_path: Path) -> None:
    path = _artifact(5.0, tmp_path)
    loaded = VerifierArtifact.load(path)
    assert (loaded.apply_threshold, loaded.related_threshold, loaded.floor) == (0.7, 0.3, -1.0)
    assert loaded.meta == {"test": True} and loaded.config == PairConfig(rank=2)
    # Inside the metric's radius the verifier can only veto; outside it, it never accepts.
    assert [loaded.verdict(p, within_radius=True) for p in (0.9, 0.3, 0.1)] == [
        Verdict.APPLIES, Verdict.APPLIES, Verdict.NONE]
    assert [loaded.verdict(p) for p in (0.9, 0.3, 0.1)] == [Verdict.RELATED, Verdict.RELATED, Verdict.NONE]
    verifier = Verifier(loaded, Encoder(EncoderSettings()))
    probs = verifier.probabilities_blocking(["a", "b c"], ["d", "e"])
    assert np.allclose(probs, 1 / (1 + np.exp(-5.0)), atol=2e-3)
    with pytest.raises(ValueError):
        VerifierArtifact.load(DEFAULT_ARTIFACT)  # a metric is not a verifier


def _pool() -> tuple[UtterancePool, dict[str, str], np.ndarray]:
    rng = np.random.default_rng(0)
    lines, domains = [], {}
    for d in ("shop", "school"):
        for i in range(8):
            label = f"{d}_{i}"
            domains[label] = d
            lines += [Utterance(f"can i upgrade the {d} plan {i} on monday number {j}", label) for j in range(9)]
    lines += [Utterance(f"random thing {j}", "oos") for j in range(10)]
    pool = UtterancePool(lines)
    vectors = rng.normal(size=(len(pool), 16)).astype(np.float32)
    return pool, domains, vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_sampler_builds_labelled_pairs_from_one_domain_per_episode() -> None:
    pool, domains, vectors = _pool()
    config = VerifierTrainConfig(n_way_min=3, n_way_max=5, untaught=2)
    pairs = PairSampler(pool, domains, vectors, config, seed=1).pairs(20)
    again = PairSampler(pool, domains, vectors, config, seed=1).pairs(20)
    assert pairs == again  # seeded
    kinds = {p.kind.split(":")[0] for p in pairs}
    assert {"paraphrase", "neighbour", "untaught", "oos", "minimal", "edit", "slot-same", "slot-diff",
            "sense-diff"} <= kinds
    label_of = dict(zip(pool.texts, pool.labels, strict=True))
    for p in pairs:
        assert p.label == (1 if p.kind in ("paraphrase", "edit", "sense-same") or p.kind.startswith("slot-same")
                           else 0)
        if p.kind == "paraphrase":
            assert label_of[p.message] == label_of[p.question] and p.message != p.question
        if p.kind in ("neighbour", "untaught"):
            assert label_of[p.message] != label_of[p.question]
            assert domains[label_of[p.message]] == domains[label_of[p.question]]  # an in-domain near miss
        if p.kind.startswith(("minimal", "sense")):
            assert p.message != p.question
        if p.kind == "sense-diff":  # one word swapped for a sibling ("monday" -> "tuesday", ...)
            changed = set(p.message.split()) ^ set(p.question.split())
            assert len(changed) == 2 and len(p.message.split()) == len(p.question.split())


def test_paraphrases_naming_another_value_train_as_negatives() -> None:
    # CLINC150's intents call "weather in Boston" and "weather in Paris" one question; for a taught
    # answer they are two, and the engine's slot and swap checks turn the second away: so must training.
    lines = [Utterance(text, label) for label, texts in {
        "hours": ["is the desk open on mondays", "is the desk open on fridays", "desk opening times on sundays"],
        "refund": ["can i get a refund", "refund my order", "i want my money back"],
        "track": ["where is my parcel", "track my parcel", "has my parcel shipped"],
        "cancel": ["cancel my order", "stop my order", "i no longer want my order"]}.items() for text in texts]
    pool = UtterancePool(lines)
    domains = dict.fromkeys(pool.by_label, "shop")
    vectors = np.random.default_rng(0).normal(size=(len(pool), 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    config = VerifierTrainConfig(n_way_min=2, n_way_max=3, k_shot_max=1, n_query=2, untaught=1, n_oos=0,
                                 other_negative=True)
    pairs = PairSampler(pool, domains, vectors, config, seed=0).pairs(40)
    other = [p for p in pairs if p.kind == "paraphrase-other"]
    assert other and all(p.label == 0 for p in other)
    assert all(p.kind != "paraphrase" or not asks_about_other(p.message, [p.question]) for p in pairs)
    off = PairSampler(pool, domains, vectors, replace(config, other_negative=False), seed=0).pairs(40)
    assert not any(p.kind == "paraphrase-other" for p in off)


def test_the_step_is_chosen_with_the_sense_swaps_and_the_thresholds_set_without() -> None:
    pairs = [Pair("is the desk open on fridays", "is the desk open on mondays", 1, "paraphrase"),
             Pair("can i bring a dog", "can i bring a tent", 0, "neighbour"),
             Pair("can i bring a truck", "can i bring a car", 0, "sense-diff")]
    probs = np.asarray([0.6, 0.3, 0.9], dtype=np.float32)
    config = VerifierTrainConfig(apply_rejection=1.0, related_rejection=1.0, slot_check=False, swap_check=False)
    shipped = calibrate_verifier(probs, pairs, config)
    selecting = calibrate_verifier(probs, pairs, config, synthetic=("slot",))
    assert shipped["apply_threshold"] == pytest.approx(0.3) and shipped["generality"] == 1.0
    assert selecting["apply_threshold"] == pytest.approx(0.9) and selecting["generality"] == 0.0


def test_calibration_turns_away_the_asked_share_of_negatives() -> None:
    pool, domains, vectors = _pool()
    config = VerifierTrainConfig(n_way_min=3, n_way_max=5, untaught=2, apply_rejection=0.9, related_rejection=0.5)
    pairs = PairSampler(pool, domains, vectors, config, seed=2).pairs(30)
    probs = np.random.default_rng(0).random(len(pairs)).astype(np.float32)
    found = calibrate_verifier(probs, pairs, config)
    negatives = np.asarray([p for p, pair in zip(probs, pairs, strict=True)
                            if pair.label == 0 and not pair.kind.startswith(("slot", "sense"))
                            and not asks_about_other(pair.message, [pair.question])])
    assert found["related_threshold"] <= found["apply_threshold"]
    assert abs(float((negatives < found["apply_threshold"]).mean()) - 0.9) < 0.05
    rates = kind_rates(probs, pairs, found["apply_threshold"])
    assert sum(r["n"] for r in rates.values()) == len(pairs)


def test_negatives_the_slot_check_decides_do_not_set_the_thresholds() -> None:
    # Near misses about another day are the pair model's weak spot (p high), but the engine's slot
    # check turns them away itself: calibrated with it, they do not push the thresholds up.
    pairs = [Pair(f"is the desk open on {day}?", "is the desk open on saturdays?", 0, "minimal:time")
             for day in ("monday", "tuesday", "friday", "sunday")]
    pairs += [Pair(f"can I bring {thing}?", "can I bring a tent?", 0, "neighbour") for thing in ("a dog", "a car")]
    pairs += [Pair("when does the desk open on saturday", "is the desk open on saturdays?", 1, "paraphrase")]
    probs = np.asarray([0.99] * 4 + [0.1, 0.2] + [0.9], dtype=np.float32)
    aware = calibrate_verifier(probs, pairs, VerifierTrainConfig(apply_rejection=1.0, related_rejection=1.0))
    blind = calibrate_verifier(probs, pairs, VerifierTrainConfig(apply_rejection=1.0, related_rejection=1.0,
                                                                 slot_check=False))
    assert aware["apply_threshold"] == pytest.approx(0.2) and aware["generality"] == 1.0
    assert blind["apply_threshold"] == pytest.approx(0.99) and blind["generality"] == 0.0


EngineFactory = Callable[..., AbstractAsyncContextManager[Engine]]


async def _teach(engine: Engine, key: ChannelKey, question: str, answer: str) -> None:
    reply = engine.reply(Turn(key, question, author_id="u1"))
    await reply.collect()
    receipt = await engine.feedback(Feedback(key, FeedbackKind.CORRECTION, author_id="u1",
                                             reply_id=reply.reply_id, text=answer))
    assert receipt.accepted


NEAR = "Is the Oslo depot open on Fridays?"    # inside the metric's radius of the taught question
SLOT = "Is the Oslo depot open on Thursday?"   # inside it too, but about another weekday (slots.py)
SWAP = "Is the Berlin depot open on Fridays?"  # ... about another city (minimal_pairs.sibling_swaps)
FAR = "Tell me a joke about penguins."        # outside it (the test verifier's floor lets it be checked)
COPY = "What time does the Oslo depot close on Fridays?"  # the taught question with a word changed


@pytest.mark.parametrize(("bias", "message", "route", "verdict"), [
    (5.0, NEAR, Route.CORRECTION, "applies"),   # inside the radius, no objection: applies
    (0.0, NEAR, Route.CORRECTION, "applies"),   # not sure, but inside the radius and no objection
    (5.0, FAR, Route.EXAMPLES, "related"),      # outside the radius the verifier never accepts: context
    (0.0, FAR, Route.EXAMPLES, "related"),
    (-5.0, NEAR, Route.BASE, "none"),           # sure it asks something else: vetoed despite the radius
    (-5.0, COPY, Route.BASE, "none"),           # a near copy too
    (5.0, SLOT, Route.EXAMPLES, "related"),     # another weekday than taught: context, never the answer
    (5.0, SWAP, Route.EXAMPLES, "related"),     # another city than taught: the same
])
async def test_the_engine_routes_by_the_verifiers_verdict(make_engine: EngineFactory, tmp_path: Path, bias: float,
                                                          message: str, route: Route, verdict: str) -> None:
    path = _artifact(bias, tmp_path)
    async with make_engine(learning={"verifier": str(path)}) as engine:
        key = ChannelKey("test", "verify", space="s")
        await _teach(engine, key, "What time does the Oslo depot open on Fridays?", "The depot opens at 7:15, gate C.")
        reply = engine.reply(Turn(key, message))
        text = await reply.collect()
        why = reply.explanation
        assert why is not None and why.route is route
        assert why.verifier.startswith("verifier:") and why.apply_threshold == 0.7
        uses = why.corrections if route is not Route.BASE else why.rejected
        assert [u.verdict for u in uses] == [verdict]
        assert uses[0].probability is not None and uses[0].line().endswith("'The depot opens at 7:15, gate C.'")
        assert uses[0].differs == {SLOT: ("weekday",), SWAP: ("place",)}.get(message, ())
        assert ("another weekday" in why.summary()) == (message == SLOT)
        assert ("another place" in why.summary()) == (message == SWAP)
        assert ("7:15" in text) == (route is Route.CORRECTION)
        assert verdict in why.summary()
        # The taught question itself, asked again, always gets its answer.
        again = engine.reply(Turn(key, "what time does the oslo depot open on fridays?"))
        assert "7:15" in await again.collect()


def test_related_corrections_are_context_with_a_warning_not_demonstrations() -> None:
    parts = PromptParts(persona="You help.", examples=[], history=[], message="Open on Thursday?",
                        related=[("Open on Fridays?", "7:15, gate C.")])
    messages = assemble(parts, lambda m: 0, 1000)
    assert [m["role"] for m in messages] == ["system", "user"]  # no demonstrated exchange to copy
    assert "Do not carry over" in messages[0]["content"] and "7:15, gate C." in messages[0]["content"]


def test_light_edits_and_near_misses_are_what_the_sampler_says() -> None:
    from engine.learning.minimal_pairs import light_edit, perturb

    rng = random.Random(3)
    text = "how do i upgrade my plan on ios"
    assert all(p.text != text for p in perturb(text, rng, limit=3))
    assert light_edit(text, rng).casefold().strip(" ?.!") != ""


class _Scripted(Verifier):
    """The pair model's probabilities scripted per taught phrasing: this test is of how ``Matching``
    combines them, not of the pair model."""

    def __init__(self, artifact: VerifierArtifact, probabilities: dict[str, float], runner: Encoder) -> None:
        super().__init__(artifact, runner)
        self.scripted = probabilities
        self.calls: list[list[str]] = []  # the phrasings scored, one list per pass of the pair model

    async def probabilities(self, messages: Sequence[str], questions: Sequence[str]) -> np.ndarray:
        self.calls.append(list(questions))
        return np.asarray([self.scripted[q] for q in questions], dtype=np.float32)


async def test_the_best_candidate_is_checked_first_and_alone(tmp_path: Path) -> None:
    """When the metric's best candidate applies, no other is scored (nor shown as checked); when it does
    not, the rest are scored in one more pass; a taught phrasing asked again needs no pass at all."""
    from engine.learning.matching import Matching
    from engine.settings import LearningSettings
    from engine.store import StoredCorrection

    taught = {"When is the Oslo depot open at weekends?": "Open 9-14 at weekends.",
              "How do I send a parcel back to the Oslo depot?": "Use the returns form.",
              "Where can I park at the Oslo depot?": "Park by gate C."}
    weekend, parcel, park = taught
    message = "What are the Oslo depot's opening hours at the weekend?"
    matching = Matching(LearningSettings(adapt=False, swap_check=False, slot_check=False, verify_answers=3,
                                         pair_veto="all"), EncoderSettings())
    artifact = VerifierArtifact.load(_artifact(0.0, tmp_path))
    matching.floor = -1.0  # every candidate is checked
    await matching.start()
    try:
        vectors = await matching.encoder.embed(list(taught))
        support = await matching.support_set([StoredCorrection(i + 1, q, a, "u", vectors[i], matching.encoder.name,
                                                               0.0) for i, (q, a) in enumerate(taught.items())])
        for best_p, expected_calls in ((0.95, [[weekend]]), (0.05, [[weekend], [parcel, park]])):
            matching.verifier = scripted = _Scripted(artifact, {weekend: best_p, parcel: 0.05, park: 0.05},
                                                     matching.encoder)
            matches, checks = await matching.check(support, message)
            assert matches[0].correction.question == weekend and len(matches) == 3
            assert [sorted(c) for c in scripted.calls] == [sorted(c) for c in expected_calls]
            assert checks[0] is not None and checks[0].probability == pytest.approx(best_p)
            assert checks[0].verdict is (Verdict.APPLIES if best_p > 0.3 else Verdict.NONE)
            assert [c is not None for c in checks[1:]] == [best_p < 0.3] * 2
        matching.verifier = scripted = _Scripted(artifact, {}, matching.encoder)  # any pass would fail
        matches, checks = await matching.check(support, f"  {weekend.lower()} ")
        assert scripted.calls == [] and checks[0] is not None
        assert checks[0].verdict is Verdict.APPLIES and checks[0].probability == 1.0
        assert checks[0].phrasing.question == weekend
    finally:
        await matching.stop()
        await matching.encoder.stop()


@pytest.mark.parametrize("veto", [True, False])
async def test_a_near_copy_rejected_against_its_phrasing_is_not_saved_by_another(tmp_path: Path, veto: bool) -> None:
    from engine.learning.matching import Matching
    from engine.settings import LearningSettings
    from engine.store import StoredCorrection

    copied, other = "Is the Oslo depot open on Saturdays?", "When can I visit the Oslo depot at the weekend?"
    sunday = "Is the Oslo depot open on Sundays?"
    matching = Matching(LearningSettings(adapt=False, near_copy_veto=veto, swap_check=False, verify_members=3),
                        EncoderSettings())
    artifact = VerifierArtifact.load(_artifact(0.0, tmp_path))
    matching.verifier = _Scripted(artifact, {copied: 0.05, sunday: 0.05, other: 0.95}, matching.encoder)
    await matching.start()
    try:
        vectors = await matching.encoder.embed([copied, other, sunday])
        taught = await matching.support_set([StoredCorrection(i + 1, q, "Open 9-14 at weekends.", "u", vectors[i],
                                                              matching.encoder.name, 0.0)
                                             for i, q in enumerate((copied, other, sunday))])
        # "closed" for "open": the shape of a near miss of the first phrasing, which rejects it
        _, checks = await matching.check(taught, "Is the Oslo depot closed on Saturdays?")
        assert checks[0] is not None
        if veto:
            assert checks[0].verdict is Verdict.NONE and checks[0].phrasing.question in (copied, sunday)
        else:
            assert checks[0].verdict is not Verdict.NONE and checks[0].phrasing.question == other
        # a paraphrase in other words is no near copy of any: the best phrasing speaks for the answer
        _, checks = await matching.check(taught, "Can I come by the Oslo depot on a Saturday?")
        assert checks[0] is not None and checks[0].phrasing.question == other
        # a taught phrasing asked again is never vetoed by another phrasing it is a near copy of
        _, checks = await matching.check(taught, copied)
        assert checks[0] is not None and checks[0].verdict is Verdict.APPLIES and checks[0].probability == 1.0
    finally:
        await matching.stop()
        await matching.encoder.stop()


def test_near_copies_are_a_phrasing_with_a_word_or_two_changed() -> None:
    from engine.learning.minimal_pairs import near_copy

    assert near_copy("Is the desk open on Sundays?", "is the desk open on saturdays")
    assert near_copy("do you identify as a human or keyboard", "do you identify as a human or computer")
    assert near_copy("can i pay my phone bill online", "can i pay my bill online")  # a word added
    assert not near_copy("is the desk open on saturdays?", "Is the desk open on Saturdays")  # the same words
    assert not near_copy("hey, is the desk open on saturdays please", "is the desk open on saturdays")  # filler
    assert not near_copy("is sunday pickup possible at the oslo warehouse?",
                         "Can I pick up my order from the Oslo warehouse on Sundays?")  # other words
    assert not near_copy("what is it", "where is he")  # too short to share enough


@pytest.mark.parametrize("pair_veto", ["near_copies", "all"])
async def test_the_pair_models_rejection_keeps_near_copies_from_an_answer(tmp_path: Path, pair_veto: str) -> None:
    from engine.learning.matching import Matching
    from engine.settings import LearningSettings
    from engine.store import StoredCorrection

    taught = "What time does the Oslo depot open on Saturdays?"
    matching = Matching(LearningSettings(adapt=False, pair_veto=pair_veto, swap_check=False), EncoderSettings())
    artifact = VerifierArtifact.load(_artifact(0.0, tmp_path))
    matching.verifier = _Scripted(artifact, {taught: 0.05}, matching.encoder)  # rejects every message
    await matching.start()
    try:
        (vector,) = await matching.encoder.embed([taught])
        support = await matching.support_set([StoredCorrection(1, taught, "From 10:30, bell B7.", "u", vector,
                                                               matching.encoder.name, 0.0)])
        # in other words, inside the radius: with "near_copies" the radius decides, the rejection aside
        matches, checks = await matching.check(support, "when does the oslo depot open its doors on saturdays")
        assert matches[0].score >= matching.answer_threshold_for(1) and checks[0] is not None
        assert checks[0].verdict is (Verdict.APPLIES if pair_veto == "near_copies" else Verdict.NONE)
        assert checks[0].probability == pytest.approx(0.05)  # /why still shows what the pair model said
        # a word changed: a near miss of the phrasing, kept away either way
        _, checks = await matching.check(support, "What time does the Oslo depot close on Saturdays?")
        assert checks[0] is not None and checks[0].verdict is Verdict.NONE
    finally:
        await matching.stop()
        await matching.encoder.stop()
