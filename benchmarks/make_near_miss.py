"""Write the near-miss evaluation files (``benchmarks/data/near_miss/``) from CLINC150's held-out domains.

A taught answer must reach paraphrases of its question and nothing else, and the hardest
"else" is a question that differs in one meaningful word ("... open on Saturdays" taught,
"... open on Sundays" asked). CLINC150 has no such pairs, so this script makes them, and an
in-domain out-of-scope split, from the domains meta-training never saw (default: work,
small_talk, meta):

- ``clinc_heldout_near_miss.jsonl``: near misses of the 5-shot support utterances (what
  ``heedful eval corrections`` teaches), made by ``engine.learning.minimal_pairs.perturb``:
  ``{"text", "label": the taught utterance's label, "near_miss": true, "kind", "of": the
  taught utterance}``; up to ``--per-utterance`` per support line, of different kinds,
  negation only where nothing else can change; none equals any CLINC150 utterance;
- ``indomain_support.jsonl`` / ``indomain_query.jsonl`` / ``indomain_oos.jsonl``: in each
  held-out domain ``--untaught`` intents (seeded) are left untaught: the support lines and
  test lines of the taught intents, and the untaught intents' test lines labelled ``oos``
  (with ``"intent"`` keeping the real one), for locality against questions from the same
  domain rather than CLINC150's generic out-of-scope set;
- ``manifest.json``: the seed, the untaught intents and the counts.

The hand-written files beside them (``handwritten_*.jsonl``) are not touched.

Usage::

    .venv/bin/python benchmarks/make_near_miss.py [--data ../shared/data/clinc150] [--out DIR] \\
        [--domains work,small_talk,meta] [--per-utterance 2] [--untaught 3] [--seed 0] [--json]
    heedful eval corrections --support S --query Q --near-miss benchmarks/data/near_miss/clinc_heldout_near_miss.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import print_result

from engine.learning.minimal_pairs import KINDS, perturb

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/clinc150"
DEFAULT_OUT = Path(__file__).resolve().parent / "data" / "near_miss"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    lines = [json.dumps(row, ensure_ascii=False) for row in rows]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return len(lines)


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def known_texts(data: Path) -> set[str]:
    """Every CLINC150 utterance, normalised: a perturbation that is one of them is a real phrasing, not a miss."""
    full = json.loads((data / "data_full.json").read_text(encoding="utf-8"))
    return {_norm(str(text)) for split in full.values() for text, _ in split}


def near_misses(support: Sequence[dict[str, Any]], known: set[str], per_utterance: int, rng: random.Random
                ) -> tuple[list[dict[str, Any]], int, int]:
    """(near-miss lines, support lines with none, perturbations dropped as real CLINC150 utterances)."""
    others = [k for k in KINDS if k != "negation"]
    rows: list[dict[str, Any]] = []
    unperturbable = dropped = 0
    for line in support:
        text = str(line["text"])
        found = perturb(text, rng, limit=per_utterance, kinds=others) or perturb(text, rng, limit=1,
                                                                                   kinds=("negation",))
        kept = [p for p in found if _norm(p.text) not in known]
        dropped += len(found) - len(kept)
        unperturbable += not kept
        rows += [{"text": p.text, "label": line["label"], "near_miss": True, "kind": p.kind, "of": text}
                 for p in kept]
    return rows, unperturbable, dropped


def untaught_intents(domains: dict[str, list[str]], wanted: Sequence[str], n: int, rng: random.Random
                     ) -> dict[str, list[str]]:
    """``n`` intents of each wanted domain, drawn by ``rng``, to leave untaught."""
    return {domain: sorted(rng.sample(sorted(domains[domain]), n)) for domain in wanted}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the CLINC150 folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the files go")
    parser.add_argument("--domains", default="work,small_talk,meta", help="held-out domains, comma-separated")
    parser.add_argument("--per-utterance", type=int, default=3, help="near misses per support utterance (at most)")
    parser.add_argument("--untaught", type=int, default=3, help="intents per domain left untaught (in-domain oos)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args()

    domains: dict[str, list[str]] = json.loads((args.data / "domains.json").read_text(encoding="utf-8"))
    wanted = [d.strip() for d in args.domains.split(",") if d.strip()]
    unknown = sorted(set(wanted) - set(domains))
    if unknown:
        parser.error(f"unknown domains {unknown}; known: {sorted(domains)}")
    held = {label for d in wanted for label in domains[d]}
    support = [row for row in read_jsonl(args.data / "support_5shot.jsonl") if row["label"] in held]
    test = [row for row in read_jsonl(args.data / "test.jsonl") if row["label"] in held]
    args.out.mkdir(parents=True, exist_ok=True)

    # (a) near misses of what gets taught
    rows, unperturbable, dropped = near_misses(support, known_texts(args.data), args.per_utterance,
                                               random.Random(args.seed))
    n_near = write_jsonl(args.out / "clinc_heldout_near_miss.jsonl", rows)

    # (b) in-domain out-of-scope: some intents of each domain never taught
    untaught = untaught_intents(domains, wanted, args.untaught, random.Random(f"{args.seed}-untaught"))
    left_out = {label for labels in untaught.values() for label in labels}
    n_support = write_jsonl(args.out / "indomain_support.jsonl",
                            ({"text": r["text"], "label": r["label"]} for r in support if r["label"] not in left_out))
    n_query = write_jsonl(args.out / "indomain_query.jsonl",
                          ({"text": r["text"], "label": r["label"]} for r in test if r["label"] not in left_out))
    n_oos = write_jsonl(args.out / "indomain_oos.jsonl",
                        ({"text": r["text"], "label": "oos", "intent": r["label"]} for r in test
                         if r["label"] in left_out))

    kinds = Counter(str(r["kind"]) for r in rows)
    result: dict[str, Any] = {
        "out": str(args.out),
        "seed": args.seed,
        "domains": wanted,
        "near_miss_lines": n_near,
        "near_miss_by_kind": {k: kinds[k] for k in KINDS if kinds[k]},
        "support_utterances": len(support),
        "support_without_near_miss": unperturbable,
        "dropped_as_real_utterances": dropped,
        "untaught_intents": untaught,
        "indomain_support": n_support,
        "indomain_query": n_query,
        "indomain_oos": n_oos,
    }
    manifest = {"source": "CLINC150 (CC BY 3.0), Larson et al. 2019", "made_by": "benchmarks/make_near_miss.py",
                **{k: v for k, v in result.items() if k != "out"}}
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    print_result(result, args.json)


if __name__ == "__main__":
    main()
