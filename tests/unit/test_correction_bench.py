"""The corrections benchmark's plan: which labels are taught, and in what order the curve teaches."""

from __future__ import annotations

import random

from engine.training.correction_bench import curve_sequence, split_labels
from engine.training.episodes import OOS, Utterance


def _utterances(labels: int, each: int) -> list[Utterance]:
    return [Utterance(f"{label} phrasing {i}", f"label{label}") for label in range(labels) for i in range(each)] + [
        Utterance("something else entirely", OOS)]


def test_split_labels_leaves_the_share_untaught_and_is_seeded() -> None:
    support = _utterances(10, 2)
    labels, taught, untaught = split_labels(support, 0.2, random.Random(3))
    assert sorted(labels) == [f"label{i}" for i in range(10)]  # oos lines are never a label
    assert len(untaught) == 2 and len(taught) == 8 and not taught & untaught
    assert split_labels(support, 0.2, random.Random(3))[1:] == (taught, untaught)


def test_curve_sequence_covers_every_label_before_going_deeper() -> None:
    support = _utterances(4, 3)[:-2]  # drops the oos line and one of label3's three phrasings
    sequence = curve_sequence(support, random.Random(0))
    assert sorted(sequence) == sorted((u.text, u.label) for u in support if u.label != OOS)
    rounds = [sequence[:4], sequence[4:8], sequence[8:]]  # round robin: each round one phrasing a label
    assert [len({label for _, label in r}) for r in rounds] == [4, 4, 3]
    assert [label for _, label in rounds[0]] == [label for _, label in rounds[1]]  # one label order
    assert curve_sequence(support, random.Random(0)) == sequence
