"""What the slot check (engine/learning/slots.py) decides on a CLINC150 split, without the engine.

For each test question of the evaluated domains, whether it differs in a slot from every
support phrasing of its own label (a paraphrase the check would make related context), by
label; and for each near miss of a near-miss file, whether it differs from its label's
support phrasings (one the check turns away), by kind. No model runs: seconds.

    .venv/bin/python benchmarks/slot_check_offline.py --json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.learning.slots import differs_from_all  # noqa: E402

CLINC = ROOT.parent / "shared" / "data" / "clinc150"


def lines(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=CLINC, help="folder with support_5shot.jsonl, test.jsonl, "
                        "domains.json")
    parser.add_argument("--domains", default="work,small_talk,meta", help="the evaluated (held-out) domains")
    parser.add_argument("--near-miss", type=Path, default=ROOT / "benchmarks" / "data" / "near_miss" /
                        "clinc_heldout_near_miss.jsonl")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of every figure")
    args = parser.parse_args()

    domains = json.loads((args.data / "domains.json").read_text())
    labels = {label for d in args.domains.split(",") for label in domains[d]}
    support: dict[str, list[str]] = defaultdict(list)
    for row in lines(args.data / "support_5shot.jsonl"):
        if row["label"] in labels:
            support[row["label"]].append(row["text"])
    questions = [r for r in lines(args.data / "test.jsonl") if r["label"] in labels]
    differing = Counter(r["label"] for r in questions if differs_from_all(r["text"], support[r["label"]]))
    kinds, caught = Counter(), Counter()
    for row in lines(args.near_miss):
        kinds[row["kind"]] += 1
        caught[row["kind"]] += bool(differs_from_all(row["text"], support[row["label"]]))

    print(f"test questions of {args.domains}: {len(questions)}; differing from their own label's support: "
          f"{sum(differing.values())}")
    for label, n in differing.most_common():
        print(f"  {label}: {n}")
    print(f"near misses turned away by the slot check ({args.near_miss.name}):")
    for kind in sorted(kinds):
        print(f"  {kind}: {caught[kind]} of {kinds[kind]}")
    if args.json:
        print(json.dumps({"questions": len(questions), "differing": sum(differing.values()),
                          "differing_by_label": dict(differing),
                          "near_miss_caught": {k: [caught[k], kinds[k]] for k in sorted(kinds)}}))


if __name__ == "__main__":
    main()
