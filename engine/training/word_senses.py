"""Word senses for training: siblings and synonyms of common English words, from WordNet 3.0.

``data/word_senses.json.gz`` is made by ``benchmarks/make_word_senses.py`` (how, and what counts as
a sibling or a synonym, is said there); WordNet's license is beside it. Only the verifier's
training reads it, to make open-class minimal pairs beyond the hand-made lexicons: never the
engine at run time, where a sibling rule turned away too many paraphrases (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import functools
import gzip
import json
from dataclasses import dataclass
from pathlib import Path

__all__ = ["WordSenses", "word_senses"]

_FILE = Path(__file__).parent / "data" / "word_senses.json.gz"


@dataclass(frozen=True, slots=True)
class WordSenses:
    """Lower-case word -> its siblings / synonyms, each in its own case ("monday" -> ["Friday", ...])."""

    siblings: dict[str, tuple[str, ...]]
    synonyms: dict[str, tuple[str, ...]]


@functools.cache
def word_senses(path: Path = _FILE) -> WordSenses:
    """The shipped tables (read once)."""
    raw = json.loads(gzip.decompress(path.read_bytes()))

    def lowered(table: dict[str, list[str]]) -> dict[str, tuple[str, ...]]:
        out: dict[str, list[str]] = {}
        for word, others in table.items():
            out.setdefault(word.lower(), []).extend(others)
        return {w: tuple(dict.fromkeys(o)) for w, o in out.items()}

    return WordSenses(lowered(raw["siblings"]), lowered(raw["synonyms"]))
