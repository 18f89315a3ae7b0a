"""The metric: losses on hand-computed cases, incremental prototypes, radius calibration,
adapters that reproduce / merge exactly, the shipped artifact, per-channel adaptation."""

import asyncio
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from engine import ChannelKey, Feedback, FeedbackKind, Route, Turn
from engine.learning.adaptation import Adaptation, AdaptConfig, AdaptedSpace
from engine.learning.channel_encoder import ChannelEncoder, EncoderAdaptConfig, nbytes
from engine.learning.matching import Matching
from engine.learning.metric import DEFAULT_ARTIFACT, MetricArtifact, MetricEncoder, shot_threshold
from engine.learning.support_set import SupportSet, answer_scores
from engine.nn.encoder_top import (
    EncoderTop,
    MetricConfig,
    embed,
    hidden_states,
    load_encoder,
    lower_layers,
    merge_into,
)
from engine.nn.protonet import open_prototypical_loss, prototypes, prototypical_loss
from engine.settings import EncoderSettings, LearningSettings
from engine.store import StoredCorrection
from engine.training.episodes import OOS, Utterance, UtterancePool
from engine.training.metric_train import MetaTrainConfig, calibrate, equal_error_threshold, open_set_generality
from engine.training.siamese import SiameseConfig, contrastive_loss, siamese_loss

# -- losses -----------------------------------------------------------------------------------


def test_prototypical_loss_hand_computed() -> None:
    support = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])   # (N=2, K=2, D=2)
    query = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    labels = torch.tensor([0, 1])
    loss, accuracy = prototypical_loss(support, query, labels, scale=2.0)
    # q1: D = (0, 1)     -> logits (0, -2)      -> -log softmax_0 = log(1 + e^-2)
    # q2: D = (0.4, 0.2) -> logits (-0.8, -0.4) -> -log softmax_1 = log(1 + e^-0.4)
    expected = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-0.4))) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert accuracy.item() == 1.0


def test_open_prototypical_loss_hand_computed() -> None:
    support = torch.tensor([[[1.0, 0.0]]])                                           # (N=1, K=1, D=2)
    query, labels, oos = torch.tensor([[1.0, 0.0]]), torch.tensor([0]), torch.tensor([[0.0, 1.0]])
    boundary = torch.tensor(0.5, requires_grad=True)
    loss, accuracy = open_prototypical_loss(support, query, labels, oos, boundary, scale=2.0)
    # query: logits (2·1, 2·0.5) = (2, 1), target 0    -> log(1 + e^-1)
    # oos:   logits (2·0, 2·0.5) = (0, 1), target none -> log(1 + e^-1)
    assert loss.item() == pytest.approx(2 * math.log1p(math.exp(-1.0)), abs=1e-6)
    assert accuracy.item() == 1.0
    loss.backward()
    # the in-scope term pushes the boundary down, the out-of-scope term up: here they cancel
    assert boundary.grad is not None and boundary.grad.item() == pytest.approx(0.0, abs=1e-6)
    lone, _ = open_prototypical_loss(support, query, labels, torch.zeros(0, 2), torch.tensor(0.5), scale=2.0)
    assert lone.item() == pytest.approx(math.log1p(math.exp(-1.0)), abs=1e-6)  # no oos: the in-scope term alone


def test_prototypes_are_normalised_class_means() -> None:
    support = torch.tensor([[[1.0, 0.0], [0.6, 0.8]]])
    assert torch.allclose(prototypes(support), torch.tensor([[0.8, 0.4]]) / math.sqrt(0.8))


def test_contrastive_loss_hand_computed() -> None:
    distance, similar = torch.tensor([0.2, 0.7, 0.1]), torch.tensor([1, 0, 0])
    # y·D + (1−y)·max(0, m − D) with m = 0.5: 0.2, 0, 0.4
    assert contrastive_loss(distance, similar, 0.5, balance=False).item() == pytest.approx(0.6 / 3)
    assert contrastive_loss(distance, similar, 0.5, balance=True).item() == pytest.approx(0.2 + 0.4 / 2)


def test_siamese_loss_over_episode_pairs() -> None:
    support = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])                         # (N=2, K=1, D=2)
    far = siamese_loss(support, torch.tensor([[1.0, 0.0]]), torch.tensor([0]), SiameseConfig(margin=0.5))
    assert far.item() == pytest.approx(0.0)  # on its own class, and 1.0 > m from the other
    near = siamese_loss(support, torch.tensor([[0.6, 0.8]]), torch.tensor([0]), SiameseConfig(margin=0.5))
    assert near.item() == pytest.approx(0.4 + (0.5 - 0.2))  # pull D=0.4, push m − 0.2


# -- prototypes -------------------------------------------------------------------------------


def correction(i: int, answer: str, vector: np.ndarray) -> StoredCorrection:
    v = np.asarray(vector, dtype=np.float32)
    return StoredCorrection(i, f"q{i}", answer, "u", v / np.linalg.norm(v), "enc", float(i))


def recomputed(items: list[StoredCorrection]) -> dict[str, np.ndarray]:
    out = {}
    for answer in {c.answer for c in items}:
        mean = np.mean([c.embedding for c in items if c.answer == answer], axis=0)
        out[answer] = mean / np.linalg.norm(mean)
    return out


def test_incremental_prototypes_equal_recomputed_ones() -> None:
    rng = np.random.default_rng(0)
    support, alive = SupportSet(), []
    for i in range(1, 61):
        c = correction(i, f"answer {rng.integers(4)}", rng.normal(size=8))
        support.add(c)
        alive.append(c)
        if i % 7 == 0:  # forget a few, sometimes a whole answer
            gone = {alive[j].id for j in rng.choice(len(alive), size=3, replace=False)}
            support.remove(gone)
            alive = [c for c in alive if c.id not in gone]
        live, protos = support.prototypes()
        expected = recomputed(alive)
        assert len(live) == len(expected) == support.answers
        by_answer = {}
        for c, slot in zip(support, support.answer_rows(), strict=True):
            by_answer[c.answer] = protos[list(live).index(slot)]
        for answer, proto in expected.items():
            np.testing.assert_allclose(by_answer[answer], proto, atol=1e-5)
    fresh = SupportSet(alive)
    q = rng.normal(size=8).astype(np.float32)
    assert [(m.correction.answer, round(m.score, 5)) for m in support.match(q)] == \
           [(m.correction.answer, round(m.score, 5)) for m in fresh.match(q)]


def test_match_scores_answers_by_prototype_and_keeps_exact_questions() -> None:
    support = SupportSet([correction(1, "A", [1, 0, 0]), correction(2, "A", [0, 1, 0]),
                                   correction(3, "B", [1, 1, 0.2])])
    near_b = np.asarray([0.72, 0.69, 0.0], dtype=np.float32)
    # nearest single member would say A (each A member ~0.7 away, B ~0.7 too); the A prototype (1,1,0)/√2 is
    # closer than B's: prototypes decide
    best = support.match(near_b / np.linalg.norm(near_b))
    assert best[0].correction.answer == "A"
    exact = support.match(np.asarray([1, 0, 0], dtype=np.float32))  # correction 1's own question
    assert exact[0].correction.id == 1 and exact[0].score == pytest.approx(1.0)
    support.remove([1, 2])
    assert [m.correction.answer for m in support.match(np.asarray([1, 0, 0], dtype=np.float32))] == ["B"]


def test_emptied_set_takes_new_corrections() -> None:
    """Regression: forgetting every correction, then learning again, indexed a stale prototype slot."""
    support = SupportSet([correction(1, "A", [1, 0])])
    support.remove([1])
    assert support.match(np.asarray([1, 0], dtype=np.float32)) == []
    support.add(correction(2, "B", [0, 1]))
    assert [m.correction.answer for m in support.match(np.asarray([0, 1], dtype=np.float32))] == ["B"]


def test_answer_scores_exact_clause() -> None:
    member = np.asarray([[0.97, 0.1, 0.5]], dtype=np.float32)
    proto = np.asarray([[0.8, 0.6]], dtype=np.float32)
    out = answer_scores(member, np.asarray([0, 0, 1]), proto, exact=0.95)
    np.testing.assert_allclose(out, [[0.97, 0.6]])


def test_newer_answer_wins_a_tie() -> None:
    v = np.asarray([1, 0], dtype=np.float32)
    support = SupportSet([correction(1, "old", v), correction(2, "new", v)])
    assert support.match(v)[0].correction.answer == "new"


# -- radius calibration -----------------------------------------------------------------------


def synthetic_pool(seed: int = 0) -> tuple[UtterancePool, np.ndarray]:
    """12 labels, tight clusters in 32-D, and out-of-scope lines in random directions."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(12, 32))
    items, vectors = [], []
    for li, centre in enumerate(centres):
        for i in range(20):
            items.append(Utterance(f"l{li} u{i}", f"label{li}"))
            vectors.append(centre + 0.6 * rng.normal(size=32))
    for i in range(200):
        items.append(Utterance(f"oos {i}", OOS))
        vectors.append(rng.normal(size=32))
    pool = UtterancePool(items)
    v = np.asarray(vectors, dtype=np.float32)
    return pool, v / np.linalg.norm(v, axis=1, keepdims=True)


def test_radius_calibration_hits_its_out_of_scope_target() -> None:
    pool, vectors = synthetic_pool()
    config = MetaTrainConfig(calib_episodes=60, calib_n_way=3, calib_n_way_max=8, k_shot=3, example_oos=0.8)
    loose = calibrate(vectors, pool, dataclasses.replace(config, oos_target=0.8))
    strict = calibrate(vectors, pool, dataclasses.replace(config, oos_target=0.99))
    assert strict["calib_oos_recall"] >= 0.98
    assert strict["example_threshold"] <= strict["answer_threshold"]
    assert strict["answer_threshold"] >= loose["answer_threshold"] - 1e-6
    assert strict["calib_in_scope_recall"] > 0.9  # separable clusters: most in-scope queries stay inside
    again = calibrate(vectors, pool, dataclasses.replace(config, oos_target=0.99))
    assert again == strict  # seeded
    # the scope threshold balances the two errors against the out-of-scope *lines*
    assert abs(strict["calib_scope_in_scope_recall"] - strict["calib_scope_oos_recall"]) < 0.1


def test_answer_thresholds_are_calibrated_per_support_size() -> None:
    pool, vectors = synthetic_pool()
    config = MetaTrainConfig(calib_episodes=60, calib_n_way=3, calib_n_way_max=8, k_shot=3, calib_shots=(1, 3, 10))
    result = calibrate(vectors, pool, config)
    table = result["answer_thresholds"]
    assert set(table) == {"1", "3", "10"} and table["3"] == result["answer_threshold"]
    assert len(set(table.values())) == 3 and all(-1.0 < t < 1.0 for t in table.values())
    assert result["example_threshold"] <= min(table.values())
    assert shot_threshold({1: 0.5, 3: 0.6}, 2, 0.9) == 0.5 and shot_threshold({1: 0.5, 3: 0.6}, 7, 0.9) == 0.6
    assert shot_threshold(None, 7, 0.9) == 0.9


def test_open_set_generality_ranks_separable_above_collapsed_spaces() -> None:
    pool, vectors = synthetic_pool()
    separable = open_set_generality(vectors, pool, episodes=30, n_way=6, shots=(1, 3), seed=0)
    assert separable == open_set_generality(vectors, pool, episodes=30, n_way=6, shots=(1, 3), seed=0)  # seeded
    assert separable > 0.8
    # every utterance on one direction: all scores tie, so only chance (the first of 6 answers) is right
    collapsed = np.tile(vectors[:1], (len(vectors), 1))
    assert open_set_generality(collapsed, pool, episodes=30, n_way=6, shots=(1, 3), seed=0) == pytest.approx(1 / 6)


def test_equal_error_threshold_on_a_hand_computed_case() -> None:
    inside = np.array([0.5, 0.6, 0.7, 0.8, 0.9])
    outside = np.array([0.1, 0.2, 0.3, 0.4, 0.65])
    # at 0.6: one of five in-scope below (0.5), one of five out-of-scope at or above (0.65)
    assert equal_error_threshold(inside, outside) == pytest.approx(0.6)
    # separable sets: a threshold in the gap makes no error at all
    t = equal_error_threshold(np.array([0.8, 0.9]), np.array([0.1, 0.2]))
    assert 0.2 < t <= 0.8


# -- the adapters on the real encoder ---------------------------------------------------------

TEXTS = ["how do i reset my password", "what's the weather tomorrow", "book a table for two at eight",
         "my card was declined at the store", "play some jazz"]


@pytest.fixture(scope="module")
def encoder_model():  # type: ignore[no-untyped-def]
    return load_encoder()


def test_zero_adapters_reproduce_the_plain_encoder(encoder_model) -> None:  # type: ignore[no-untyped-def]
    bert = encoder_model[0].auto_model
    top = EncoderTop(bert, MetricConfig(top_layers=2, rank=4))
    states = hidden_states(encoder_model, TEXTS, top.first)
    plain = encoder_model.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    np.testing.assert_allclose(embed(top, states), plain, atol=1e-4)


def test_lower_layers_are_the_full_forwards_hidden_states(encoder_model) -> None:  # type: ignore[no-untyped-def]
    bert = encoder_model[0].auto_model.eval()
    enc = encoder_model.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        full = bert(**enc, output_hidden_states=True).hidden_states[4]
        lower = lower_layers(bert, enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids"), 4)
    tokens = enc["attention_mask"].bool()
    torch.testing.assert_close(lower[tokens], full[tokens], atol=1e-5, rtol=1e-5)


def test_merged_adapters_equal_unmerged(encoder_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import copy

    bert = encoder_model[0].auto_model
    torch.manual_seed(0)
    top = EncoderTop(bert, MetricConfig(top_layers=2, rank=4))
    tensors = {k: (torch.randn_like(v) * 0.05 if k.endswith(".B") else v) for k, v in top.lora_tensors().items()}
    tensors = {k: v.half().float() for k, v in tensors.items()}  # what an fp16 artifact holds
    top.load_lora_tensors(tensors)
    states = hidden_states(encoder_model, TEXTS, top.first)
    unmerged = embed(top, states)

    artifact = MetricArtifact(top.config, tensors, 0.7, 0.5, 0.72, 0.45, {"note": "test"})
    loaded = MetricArtifact.load(artifact.save(tmp_path / "m.safetensors"))
    assert loaded.digest == artifact.digest and loaded.meta == {"note": "test"} and loaded.answer_threshold == 0.7

    merged_bert = copy.deepcopy(bert)
    merge_into(merged_bert, loaded.config, loaded.tensors)
    enc = encoder_model.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = merged_bert(**enc).last_hidden_state
        mask = enc["attention_mask"][..., None].float()
        merged = torch.nn.functional.normalize((h * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    np.testing.assert_allclose(merged, unmerged, atol=1e-4)
    assert not np.allclose(merged, encoder_model.encode(TEXTS, normalize_embeddings=True), atol=1e-3)


def test_shipped_artifact_is_small_calibrated_and_loaded_by_default() -> None:
    assert DEFAULT_ARTIFACT.exists() and DEFAULT_ARTIFACT.stat().st_size < 2_000_000
    artifact = MetricArtifact.load(DEFAULT_ARTIFACT)
    assert 0.0 < artifact.example_threshold <= artifact.answer_threshold < 1.0
    meta = artifact.meta
    assert meta["data_sha256"] and meta["hyperparameters"]["loss"] in ("proto", "contrastive")
    assert "calibration" in meta and meta["calibration"]["calib_oos_recall"] >= 0.9
    matching = Matching(LearningSettings(), EncoderSettings())
    assert matching.artifact is not None and matching.encoder.name.endswith(artifact.digest)
    assert matching.answer_threshold == artifact.answer_threshold
    explicit = Matching(LearningSettings(answer_threshold=0.9), EncoderSettings())
    assert explicit.answer_threshold == 0.9 and explicit.example_threshold == artifact.example_threshold
    plain = Matching(LearningSettings(metric="none"), EncoderSettings())
    assert plain.artifact is None and plain.answer_threshold == LearningSettings().answer_threshold


# -- per-channel adaptation -------------------------------------------------------------------


ANSWERS = {
    "Refunds: use the blue form, ref ZX-1234.": ["how do i get a refund", "i want my money back",
                                                "can i return this and be refunded", "refund please",
                                                "how are refunds handled here", "give me a refund for my order"],
    "The office wifi password is pelican-4417.": ["what is the wifi password", "wifi code please",
                                                  "how do i get on the office wifi", "password for the wireless",
                                                  "which password does the wifi use", "tell me the wifi key"],
    "Standup is at 9:30 in room Kestrel.": ["when is standup", "what time is the daily meeting",
                                            "where is the standup held", "standup room and time",
                                            "is standup in the morning", "when do we meet every day"],
}


@pytest.fixture(scope="module")
def channel_encoder() -> ChannelEncoder:
    encoder = MetricEncoder(EncoderSettings(), MetricArtifact.load(DEFAULT_ARTIFACT))
    encoder.load()
    return ChannelEncoder(encoder)


def test_channel_encoder_starts_at_the_metric_and_stays_small(channel_encoder: ChannelEncoder) -> None:
    """Step 0 of the inner loop is the meta-learned metric itself; a channel's state is < 1 MB."""
    texts = [t for questions in ANSWERS.values() for t in questions]
    shared = channel_encoder.encoder.encode_blocking(texts)
    start = channel_encoder.embed_blocking(texts, channel_encoder.meta_tensors())
    np.testing.assert_allclose(start, shared, atol=2e-3)  # fp16 hidden states, otherwise the same model
    rows = np.repeat(np.arange(len(ANSWERS)), 6)
    states = channel_encoder.hidden_states_blocking(texts)
    tensors = channel_encoder.train_blocking(states, rows, EncoderAdaptConfig(steps=5, lr=1e-3))
    assert nbytes(tensors) < 1_000_000
    moved = channel_encoder.embed_states_blocking(states, tensors)
    assert not np.allclose(moved, start, atol=1e-4)  # it trained
    np.testing.assert_allclose(np.linalg.norm(moved, axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="two answers"):
        channel_encoder.train_blocking(states[:2], np.array([0, 1]), EncoderAdaptConfig(steps=1))


async def test_background_adaptation_serves_its_version_only(channel_encoder: ChannelEncoder) -> None:
    """A judged candidate is installed for the set's version; the matcher uses it, and the next
    change (a new correction) sends the channel back to the instant path until the next job."""
    config = AdaptConfig(min_corrections=12, min_answers=3, debounce_s=0.0, max_shift=1.0,
                         inner=EncoderAdaptConfig(steps=3))
    manager = Adaptation(config, channel_encoder)
    matching = Matching(LearningSettings(), EncoderSettings())
    matching.encoder, matching.channel_encoder = channel_encoder.encoder, channel_encoder  # one loaded copy
    support = SupportSet()
    manager.watch(support)
    i = 0
    for answer, questions in ANSWERS.items():
        vectors = channel_encoder.encoder.encode_blocking(questions)
        for question, vector in zip(questions, vectors, strict=True):
            i += 1
            support.add(StoredCorrection(i, question, answer, "u", vector, "enc", float(i)))
    for _ in range(1200):
        if support.adapted is not None or (manager.reports and not manager._tasks):
            break
        await asyncio.sleep(0.05)
    assert manager.reports, "no adaptation job ran"
    report = manager.reports[-1]
    assert report["held_out"] == 4 and report["adapted_accuracy"] >= report["base_accuracy"]
    adapted = support.adapted
    assert adapted is not None and adapted.version == support.version and adapted.nbytes < 1_000_000
    matches = await matching.match(support, "could i get refunded for this")
    assert matches[0].correction.answer.startswith("Refunds")
    assert len(adapted.support) == len(support)
    support.add(StoredCorrection(99, "who cleans the kitchen", "Rota on the fridge.", "u",
                                 channel_encoder.encoder.encode_blocking(["who cleans the kitchen"])[0], "enc", 99.0))
    assert support.adapted.version != support.version  # stale: the instant path serves
    (vector,) = channel_encoder.encoder.encode_blocking(["who cleans the kitchen"])
    assert (await matching.match(support, "who cleans the kitchen"))[0].score == support.match(vector)[0].score
    await manager.stop()


def test_adapted_spaces_are_held_least_recently_used_first(channel_encoder: ChannelEncoder) -> None:
    """Beyond ``max_channels`` the least recently *used* channel loses its adapted space (and
    serves from the shared metric); serving a message refreshes a channel's place."""
    manager = Adaptation(AdaptConfig(max_channels=2), channel_encoder)
    tensors = channel_encoder.meta_tensors()
    sets = [SupportSet() for _ in range(3)]
    spaces = [AdaptedSpace(s.version, tensors, SupportSet(), {}) for s in sets]
    manager.install(sets[0], spaces[0])
    manager.install(sets[1], spaces[1])
    manager.used(sets[0])                     # channel 0 answered a message: channel 1 is now the oldest
    manager.install(sets[2], spaces[2])
    assert [s.adapted for s in sets] == [spaces[0], None, spaces[2]] and manager.installed == 2
    manager.install(sets[1], spaces[1])       # adapted again after its next change
    assert sets[0].adapted is None and sets[1].adapted is spaces[1] and manager.installed == 2


async def test_a_released_support_set_keeps_no_adaptation_state(channel_encoder: ChannelEncoder) -> None:
    """The engine dropped the set from its cache: its pending job and adapted space go too."""
    manager = Adaptation(AdaptConfig(min_corrections=4, min_answers=2, debounce_s=60.0), channel_encoder)
    rng = np.random.default_rng(0)
    support = SupportSet([correction(i, a, rng.normal(size=8)) for i, a in enumerate("AABB")])
    manager.watch(support)
    assert manager._timers  # eligible: a job is scheduled
    manager.install(support, AdaptedSpace(support.version, channel_encoder.meta_tensors(), SupportSet(), {}))
    manager.release(support)
    assert not manager._timers and manager.installed == 0 and support.adapted is None
    support.add(correction(9, "A", rng.normal(size=8)))  # no longer watched: no new job
    assert not manager._timers
    await manager.stop()


# -- through the engine -----------------------------------------------------------------------


async def test_engine_matches_with_the_metric_and_explains_its_radius(tiny_engine) -> None:  # type: ignore[no-untyped-def]
    engine = tiny_engine
    key = ChannelKey("test", "metric-radius", space="t")
    assert engine.matching.artifact is not None  # the shipped metric is on by default
    await engine.feedback(Feedback(key, FeedbackKind.CORRECTION, text="Use the blue form, ref ZX-1234.",
                                   question="how do i apply for a refund"))
    await engine.feedback(Feedback(key, FeedbackKind.CORRECTION, text="Use the blue form, ref ZX-1234.",
                                   question="i want to request a refund"))
    reply = engine.reply(Turn(key, "how can i get my money back with a refund"))
    text = await reply.collect()
    assert reply.explanation is not None
    # two corrections teach this answer: the radius calibrated for a two-correction prototype
    assert reply.explanation.answer_threshold == engine.matching.answer_threshold_for(2)
    table = engine.matching.artifact.answer_thresholds
    assert table and table[1] < table[2] < table[5] == engine.matching.answer_threshold
    assert reply.explanation.route is Route.CORRECTION and "ZX-1234" in text
    far = engine.reply(Turn(key, "what is the tallest mountain on earth"))
    await far.collect()
    assert far.explanation is not None and far.explanation.route is not Route.CORRECTION
    assert all(u.score < engine.matching.answer_threshold for u in far.explanation.corrections)


@pytest.mark.slow  # trains a channel encoder in the background: half a minute
async def test_engine_serves_a_channel_from_its_adapted_space_once_ready(
    tmp_path: Path, models_dir: Path
) -> None:
    """Through the engine: a channel taught enough corrections adapts in the background
    (``Engine.settle`` waits for it); its messages are then matched in its own space, and
    another channel, taught nothing, is untouched."""
    from engine import Engine
    from tests.conftest import engine_settings

    settings = engine_settings(tmp_path / "data", models_dir)
    settings = settings.model_copy(update={
        "learning": settings.learning.model_copy(update={"adapt_min_corrections": 12}),
        "lora": settings.lora.model_copy(update={"enabled": False}),
    })
    key, other = ChannelKey("test", "adapting", space="a"), ChannelKey("test", "quiet", space="a")
    async with Engine(settings) as engine:
        assert engine.matching.adaptation is not None  # on by default, with the shipped metric
        engine.matching.adaptation.config = dataclasses.replace(
            engine.matching.adaptation.config, debounce_s=0.0, max_shift=1.0)
        for answer, questions in ANSWERS.items():
            for question in questions:
                receipt = await engine.feedback(Feedback(key, FeedbackKind.CORRECTION, text=answer, question=question))
                assert receipt.accepted
        await asyncio.wait_for(engine.settle(), timeout=600)
        report = engine.matching.adaptation.reports[-1]
        assert report["corrections"] == 18 and report.get("installed") == 1.0, report
        support = await engine._support_set(key)
        assert support.adapted is not None and support.adapted.version == support.version
        reply = engine.reply(Turn(key, "could i get refunded for this purchase"))
        text = await reply.collect()
        assert reply.explanation is not None and reply.explanation.route is Route.CORRECTION, reply.explanation
        assert "ZX-1234" in text
        quiet = engine.reply(Turn(other, "could i get refunded for this purchase"))
        assert "ZX-1234" not in await quiet.collect()
