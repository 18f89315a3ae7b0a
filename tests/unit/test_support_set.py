import numpy as np

from engine.learning.support_set import SupportSet
from engine.store import StoredCorrection


def correction(i: int, answer: str, vector: list[float]) -> StoredCorrection:
    v = np.asarray(vector, dtype=np.float32)
    return StoredCorrection(i, f"q{i}", answer, "u", v / np.linalg.norm(v), "enc", float(i))


def test_one_match_per_answer_by_its_nearest_member() -> None:
    support = SupportSet([correction(1, "A", [1, 0]), correction(2, "A", [0, 1]), correction(3, "B", [1, 1])])
    matches = support.match(np.asarray([0, 1], dtype=np.float32))
    assert [m.correction.answer for m in matches] == ["A", "B"]
    assert matches[0].correction.id == 2 and matches[0].score == 1.0


def test_incremental_add_and_remove() -> None:
    support = SupportSet()
    assert support.match(np.asarray([1, 0], dtype=np.float32)) == []
    support.add(correction(1, "A", [1, 0]))
    support.add(correction(2, "B", [0, 1]))
    support.remove([1])
    assert len(support) == 1
    assert [m.correction.id for m in support.match(np.asarray([1, 0], dtype=np.float32))] == [2]
    support.remove([2])
    assert support.match(np.asarray([1, 0], dtype=np.float32)) == []
