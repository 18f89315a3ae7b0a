"""What the slot and swap checks (engine/learning/slots.py, asks_about_other) decide on a CLINC150
split, without the engine.

For each test question of the evaluated domains, whether it differs in a slot from every support
phrasing of its own label, or names a sibling of what one names (a paraphrase by CLINC150's labels
that the checks would make related context), by label; and for each near miss of a near-miss file,
whether the checks turn it away, by kind. ``differing`` / ``near_miss_caught``: either check, as the
engine serves; ``*_slots`` / ``*_swaps``: each alone. No model runs: seconds.

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

from engine.learning.slots import asks_about_other  # noqa: E402

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
    checks = {"": {}, "_slots": {"swaps": False}, "_swaps": {"slots": False}}
    differing = {name: Counter(r["label"] for r in questions if asks_about_other(r["text"], support[r["label"]], **kw))
                 for name, kw in checks.items()}
    kinds: Counter[str] = Counter()
    caught: dict[str, Counter[str]] = {name: Counter() for name in checks}
    for row in lines(args.near_miss):
        kinds[row["kind"]] += 1
        for name, kw in checks.items():
            caught[name][row["kind"]] += bool(asks_about_other(row["text"], support[row["label"]], **kw))

    print(f"test questions of {args.domains}: {len(questions)}; differing from their own label's support: "
          f"{sum(differing[''].values())} (slots {sum(differing['_slots'].values())}, "
          f"swaps {sum(differing['_swaps'].values())})")
    for label, n in differing[""].most_common():
        print(f"  {label}: {n}")
    print(f"near misses turned away ({args.near_miss.name}): either check (slots / swaps alone)")
    for kind in sorted(kinds):
        print(f"  {kind}: {caught[''][kind]} ({caught['_slots'][kind]} / {caught['_swaps'][kind]}) of {kinds[kind]}")
    if args.json:
        out: dict[str, object] = {"questions": len(questions)}
        for name in checks:
            out[f"differing{name}"] = sum(differing[name].values())
            out[f"near_miss_caught{name}"] = {k: [caught[name][k], kinds[k]] for k in sorted(kinds)}
        out["differing_by_label"] = dict(differing[""])
        print(json.dumps(out))

if __name__ == "__main__":
    main()
