"""A support set's negatives: phrasings an answer was corrected on block it, never join its prototype."""

from __future__ import annotations

import dataclasses

import numpy as np

from engine.learning.support_set import Match, SupportSet
from engine.store import StoredCorrection


def row(i: int, answer: str, vector: list[float], *, origin: str = "taught",
        source_id: int | None = None) -> StoredCorrection:
    v = np.asarray(vector, dtype=np.float32)
    return StoredCorrection(i, f"q{i}", answer, "u", v / np.linalg.norm(v), "enc", float(i), origin, source_id)


def query(vector: list[float]) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float32)
    return v / np.linalg.norm(v)


def by_answer(matches: list[Match]) -> dict[str, Match]:
    return {m.correction.answer: m for m in matches}


def test_a_negative_blocks_its_answer_where_it_is_nearer_than_the_members() -> None:
    support = SupportSet([row(1, "A", [1, 0, 0]), row(2, "B", [0, 0, 1])],
                         negatives=[row(7, "A", [0.6, 0.8, 0], origin="negative", source_id=1)])
    near_negative = by_answer(support.match(query([0.5, 0.9, 0])))
    assert near_negative["A"].negative > near_negative["A"].nearest  # type: ignore[operator]
    assert near_negative["A"].blocked
    assert near_negative["B"].negative == -1.0 and not near_negative["B"].blocked  # another answer's: no effect
    near_member = by_answer(support.match(query([1, 0.1, 0])))["A"]
    assert near_member.negative >= 0.5 and not near_member.blocked  # the member is nearer
    far = by_answer(support.match(query([0, 0.2, 1])))["A"]
    assert not far.blocked  # below the floor, nothing blocks


def test_negatives_never_enter_prototypes_or_change_the_version() -> None:
    corrections = [row(1, "A", [1, 0, 0]), row(2, "A", [0.8, 0.6, 0]), row(3, "B", [0, 1, 0])]
    plain, with_negatives = SupportSet(corrections), SupportSet(corrections)
    version, tag = with_negatives.version, with_negatives.negatives_version
    with_negatives.add_negative(row(9, "A", [0, 0.6, 0.8], origin="negative", source_id=1))
    assert with_negatives.version == version and with_negatives.negatives_version != tag
    (slots, protos), (slots2, protos2) = plain.prototypes(), with_negatives.prototypes()
    assert np.array_equal(slots, slots2) and np.allclose(protos, protos2)
    assert len(with_negatives) == 3 and [n.id for n in with_negatives.negatives] == [9]
    q = query([0.3, 0.3, 0.9])
    assert [(m.correction.id, m.score) for m in plain.match(q)] == \
        [(m.correction.id, m.score) for m in with_negatives.match(q)]


def test_removing_a_source_takes_its_paraphrases_and_negatives_and_keeps_sums_exact() -> None:
    support = SupportSet([row(1, "A", [1, 0, 0]), row(2, "B", [0, 1, 0])])
    support.add(row(3, "A", [0.8, 0.6, 0], origin="confirmed", source_id=1))
    support.add_negative(row(4, "A", [0, 0.6, 0.8], origin="negative", source_id=1))
    support.add_negative(row(5, "B", [0, 0.8, 0.6], origin="negative", source_id=2))
    assert support.fingerprint == (5, 3 + 5)
    support.remove([1])
    assert [c.id for c in support] == [2]
    assert [n.id for n in support.negatives] == [5]
    fresh = SupportSet([row(2, "B", [0, 1, 0])])
    live, protos = support.prototypes()
    live2, protos2 = fresh.prototypes()
    assert len(live) == len(live2) == 1 and np.allclose(protos, protos2)
    support.remove_negatives(lambda n: n.author_id == "u")
    assert support.negatives == () and support.fingerprint == (1, 2)


def test_forgetting_a_paraphrase_keeps_its_source() -> None:
    support = SupportSet([row(1, "A", [1, 0, 0])])
    support.add(row(3, "A", [0.8, 0.6, 0], origin="confirmed", source_id=1))
    support.add_negative(row(4, "A", [0, 0.6, 0.8], origin="negative", source_id=1))
    support.remove([3])
    assert [c.id for c in support] == [1] and [n.id for n in support.negatives] == [4]


def test_an_adapted_copy_takes_negatives_with_the_version_they_mirror() -> None:
    source = SupportSet([row(1, "A", [1, 0, 0])], negatives=[row(4, "A", [0, 1, 0], origin="negative", source_id=1)])
    copy = SupportSet([row(1, "A", [1, 0, 0])])
    assert copy.negatives_version != source.negatives_version  # a fresh set never looks in sync
    copy.replace_negatives(source.negatives, source.negatives_version)
    assert copy.negatives_version == source.negatives_version and copy.negatives == source.negatives
    assert by_answer(copy.match(query([0.1, 1, 0])))["A"].blocked


async def test_an_adapted_space_blocks_with_negatives_embedded_in_its_own_space() -> None:
    """A channel served from its adapted encoder: negatives are embedded there too (once per change
    of the negatives, without retraining or leaving the adapted space)."""
    from engine.learning.adaptation import AdaptedSpace
    from engine.learning.channel_encoder import ChannelEncoder
    from engine.learning.matching import Matching
    from engine.learning.metric import DEFAULT_ARTIFACT, MetricArtifact, MetricEncoder
    from engine.settings import EncoderSettings, LearningSettings

    encoder = MetricEncoder(EncoderSettings(), MetricArtifact.load(DEFAULT_ARTIFACT))
    encoder.load()
    channel = ChannelEncoder(encoder)
    matching = Matching(LearningSettings(), EncoderSettings())
    matching.encoder, matching.channel_encoder = encoder, channel  # one loaded copy
    questions = ["What is the wifi password at the office?", "When does the canteen serve lunch?"]
    answers = ["pelican-4417", "Lunch is at noon."]
    shared = encoder.encode_blocking(questions)
    support = SupportSet([StoredCorrection(i + 1, q, a, "u", v, encoder.name, 0.0)
                          for i, (q, a, v) in enumerate(zip(questions, answers, shared, strict=True))])
    tensors = channel.meta_tensors()
    own = await channel.embed(questions, tensors)
    space = SupportSet([dataclasses.replace(c, embedding=v) for c, v in zip(support, own, strict=True)])
    support.adapted = AdaptedSpace(support.version, tensors, space, {})

    wrong = "what's the wifi code here"
    assert not {m.correction.answer: m for m in await matching.match(support, wrong)}["pelican-4417"].blocked
    support.add_negative(StoredCorrection(9, wrong, "pelican-4417", "fixer", encoder.encode_blocking([wrong])[0],
                                          encoder.name, 1.0, "negative", 1))
    assert support.adapted.version == support.version  # the adapted space still serves
    blocked = {m.correction.answer: m for m in await matching.match(support, wrong)}["pelican-4417"]
    assert blocked.blocked and blocked.negative > 0.99
    assert space.negatives_version == support.negatives_version and len(space.negatives) == 1
    support.remove_negatives(lambda n: True)
    assert not {m.correction.answer: m for m in await matching.match(support, wrong)}["pelican-4417"].blocked
    assert space.negatives == ()

    # Stored in another space (a metric switch): negatives are re-embedded with the corrections.
    zeros = np.zeros(len(shared[0]), dtype=np.float32)
    stale = await matching.support_set(
        [dataclasses.replace(c, embedding=zeros, encoder="older") for c in support],
        [StoredCorrection(9, wrong, "pelican-4417", "fixer", zeros, "older", 1.0, "negative", 1)])
    assert [n.encoder for n in stale.negatives] == [encoder.name] and [c.encoder for c in stale] == [encoder.name] * 2
    np.testing.assert_allclose(stale.negatives[0].embedding, encoder.encode_blocking([wrong])[0], atol=1e-4)
