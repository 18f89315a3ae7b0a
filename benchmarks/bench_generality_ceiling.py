"""How much generality an embedding space allows, whatever the radius: the ceiling behind
``heedful eval corrections``.

The engine answers a message from a correction when the best answer prototype's score
clears the radius. Generality can therefore never exceed the share of paraphrases whose
*best* prototype is the right one (the radius accepting everything, locality 0). This
script measures, on the same label split and curve order as the benchmark
(``engine.training.correction_bench.split_labels`` / ``curve_sequence``), with every paraphrase and
out-of-scope line instead of a sample and without generation (the metric path alone):

- ``accept all``: the ceiling, generality with no radius at all;
- ``shipped radius``: the artifact's per-shot calibrated thresholds, as the engine serves;
- ``oracle radius``: the single threshold that maximises generality while keeping
  locality ≥ 0.95, chosen *on the test messages themselves* (not a calibration: an upper
  bound for any one radius).

With ``--all-triples`` the frozen encoder (which saw none of CLINC150) is measured on
every combination of three CLINC150 domains, to tell whether a ceiling is the held-out
domains' or the encoder's.

Usage::

    .venv/bin/python benchmarks/bench_generality_ceiling.py [--data ../shared/data/clinc150] \\
        [--eval-domains work,small_talk,meta] [--all-triples] [--plot FILE.png] [--json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.learning.metric import MetricArtifact, MetricEncoder, resolve_artifact
from engine.learning.support_set import answer_scores
from engine.settings import EncoderSettings
from engine.training.correction_bench import BenchConfig, curve_sequence, split_labels
from engine.training.curve_plot import save_curve_plot
from engine.training.episodes import Utterance, load_domains, load_utterances
from engine.understanding.encoder import Encoder

LOCALITY_GOAL = 0.95


def best_answers(vectors: dict[str, np.ndarray], taught: Sequence[tuple[str, str]], texts: Sequence[str]
                 ) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Best score, best answer (label) and its number of corrections, per message, scored
    the way a channel scores them (``answer_scores``: prototypes, exact members)."""
    labels = list(dict.fromkeys(label for _, label in taught))
    slot = {label: i for i, label in enumerate(labels)}
    members = np.stack([vectors[t] for t, _ in taught])                                     # (n, D)
    rows = np.array([slot[label] for _, label in taught])                                  # (n,)
    protos = np.stack([members[rows == a].mean(0) for a in range(len(labels))])
    protos /= np.linalg.norm(protos, axis=1, keepdims=True)                                # (A, D)
    q = np.stack([vectors[t] for t in texts])                                               # (Q, D)
    scores = answer_scores(q @ members.T, rows, q @ protos.T)                              # (Q, A)
    best = scores.argmax(1)
    counts = np.bincount(rows, minlength=len(labels))
    return scores.max(1), [labels[i] for i in best], counts[best]


def measure(vectors: dict[str, np.ndarray], taught: Sequence[tuple[str, str]], paraphrases: Sequence[tuple[str, str]],
            unrelated: Sequence[str], threshold_for: Callable[[int], float]) -> dict[str, float]:
    """Generality and locality with no radius, the shipped radius and the oracle radius."""
    g_score, g_label, g_shots = best_answers(vectors, taught, [t for t, _ in paraphrases])
    u_score, _, u_shots = best_answers(vectors, taught, unrelated)
    right = np.array([got == want for got, (_, want) in zip(g_label, paraphrases, strict=True)])
    g_thr = np.array([threshold_for(int(k)) for k in g_shots])
    u_thr = np.array([threshold_for(int(k)) for k in u_shots])
    # The oracle: the lowest single threshold that turns away LOCALITY_GOAL of the unrelated messages.
    oracle = float(np.quantile(u_score, LOCALITY_GOAL, method="higher")) + 1e-6
    return {
        "ceiling": round(float(right.mean()), 4),
        "generality": round(float((right & (g_score >= g_thr)).mean()), 4),
        "locality": round(float((u_score < u_thr).mean()), 4),
        "oracle_generality": round(float((right & (g_score >= oracle)).mean()), 4),
        "oracle_locality": round(float((u_score < oracle).mean()), 4),
    }


def run_domains(vectors: dict[str, np.ndarray], sets: dict[str, list[Utterance]], oos: list[str],
                wanted: set[str], points: Sequence[int], threshold_for: Callable[[int], float], seed: int
                ) -> dict[str, object]:
    """The benchmark's 36-label setting and its curve, on the labels of the ``wanted`` domains."""
    support, query, curve_support = (sets[name] for name in ("support", "query", "curve"))
    support, query, curve_support = ([u for u in us if u.label in wanted] for us in (support, query, curve_support))
    _, taught, untaught = split_labels(support, BenchConfig().uncorrected, random.Random(seed))
    sequence = curve_sequence(curve_support, random.Random(seed))
    by_label: dict[str, list[str]] = defaultdict(list)
    for u in query:
        by_label[u.label].append(u.text)
    benchmark = measure(vectors, [(u.text, u.label) for u in support if u.label in taught],
                        [(u.text, u.label) for u in query if u.label in taught],
                        oos + [u.text for u in query if u.label in untaught], threshold_for)
    curve = []
    for n in (p for p in points if p <= len(sequence)):
        covered = dict.fromkeys(label for _, label in sequence[:n])
        paraphrases = [(t, label) for label in covered for t in by_label[label]]
        curve.append({"corrections": n, "labels": len(covered),
                      **measure(vectors, sequence[:n], paraphrases, oos, threshold_for)})
    return {"benchmark": benchmark, "curve": curve}


def report(name: str, result: dict[str, Any]) -> None:
    print(f"\n{name}: 36-label benchmark", result["benchmark"])
    print(f"{'corrections':>11} {'labels':>6} {'ceiling':>8} {'shipped':>8} {'locality':>8} {'oracle':>7}")
    for row in result["curve"]:
        print(f"{row['corrections']:>11} {row['labels']:>6} {row['ceiling']:>8} {row['generality']:>8} "
              f"{row['locality']:>8} {row['oracle_generality']:>7}")


def all_triples(vectors: dict[str, np.ndarray], sets: dict[str, list[Utterance]], oos: list[str],
                domains: dict[str, set[str]], points: Sequence[int], threshold_for: Callable[[int], float],
                seed: int, ours: set[str]) -> dict[str, Any]:
    """Ceiling and oracle generality on every three-domain combination, summarised."""
    rows = []
    for triple in tqdm(list(itertools.combinations(sorted(domains), 3)), desc="domain triples", file=sys.stderr):
        labels = set().union(*(domains[d] for d in triple))
        rows.append((triple, run_domains(vectors, sets, oos, labels, points, threshold_for, seed)))

    def stats(values: list[float]) -> dict[str, float]:
        return {"mean": round(float(np.mean(values)), 4), "min": round(min(values), 4), "max": round(max(values), 4)}

    summary: dict[str, Any] = {"triples": len(rows)}
    for key in ("ceiling", "oracle_generality"):
        summary[f"benchmark_{key}"] = stats([r["benchmark"][key] for _, r in rows])  # type: ignore[index]
        for i, n in enumerate(points):
            summary[f"curve_{n}_{key}"] = stats([r["curve"][i][key] for _, r in rows])  # type: ignore[index]
    oracle = sorted(r["benchmark"]["oracle_generality"] for _, r in rows)  # type: ignore[index]
    mine = [r for t, r in rows if set(t) == ours]
    if mine:
        summary["eval_domains_oracle_rank_from_lowest"] = oracle.index(mine[0]["benchmark"]["oracle_generality"]) + 1
    return summary


def plot(result: dict[str, Any], path: Path) -> None:
    """Generality along the curve: the ceiling, the best single radius and the shipped one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for space, colour in (("metric", "tab:blue"), ("frozen", "tab:gray")):
        curve = result[space]["curve"]
        xs = [row["corrections"] for row in curve]
        for key, style, what in (("ceiling", "o-", "ceiling (any radius)"),
                                 ("oracle_generality", "s--", "best radius, locality 0.95"),
                                 ("generality", "^:", "shipped radius")):
            ax.plot(xs, [row[key] for row in curve], style, color=colour, label=f"{space}: {what}")
    ax.axhline(0.80, color="tab:red", linewidth=1, label="issue goal (0.80)")
    save_curve_plot(fig, ax, path, ylabel="paraphrases answered right", legend="lower right", legend_size=7,
                    title=f"generality ceiling, held-out {', '.join(result['eval_domains'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/clinc150")
    parser.add_argument("--eval-domains", default="work,small_talk,meta")
    parser.add_argument("--metric", default="default", help="metric artifact (default: the shipped one)")
    parser.add_argument("--curve", default="1,10,100,1000")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--all-triples", action="store_true",
                        help="also the frozen encoder on every three-domain combination")
    parser.add_argument("--plot", type=Path, help="draw the curve's ceiling, best and shipped radius to this PNG")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args()

    domains = load_domains(args.data / "domains.json")
    wanted = set(args.eval_domains.split(","))

    def held(path: Path, keep: set[str]) -> list[Utterance]:
        return [u for u in load_utterances(path) if domains.get(u.label) in keep]

    everything = set(domains.values()) if args.all_triples else wanted
    sets = {"support": held(args.data / "support_5shot.jsonl", everything),
            "query": held(args.data / "test.jsonl", everything),
            "curve": held(args.data / "data_full.json", everything)}
    oos = [u.text for u in load_utterances(args.data / "oos_test.jsonl")]
    texts = sorted({u.text for us in sets.values() for u in us} | set(oos))
    points = [int(p) for p in args.curve.split(",")]
    wanted_labels = {label for label, domain in domains.items() if domain in wanted}

    artifact = MetricArtifact.load(resolve_artifact(args.metric))
    spaces: dict[str, tuple[Encoder, Callable[[int], float]]] = {
        "metric": (MetricEncoder(EncoderSettings(), artifact), artifact.threshold_for),
        "frozen": (Encoder(EncoderSettings()), lambda k: artifact.threshold_for(k, cosine=True)),
    }
    result: dict[str, Any] = {"eval_domains": sorted(wanted), "locality_goal": LOCALITY_GOAL}
    for name, (encoder, threshold_for) in spaces.items():
        encoder.load()
        vectors = dict(zip(texts, encoder.encode_blocking(texts), strict=True))
        result[name] = run_domains(vectors, sets, oos, wanted_labels, points, threshold_for, args.seed)
        report(name, result[name])
        if args.all_triples and name == "frozen":  # the metric saw the other domains: only its held-out ones are fair
            by_domain: dict[str, set[str]] = defaultdict(set)
            for label, domain in domains.items():
                by_domain[domain].add(label)
            result["all_triples"] = all_triples(vectors, sets, oos, by_domain, points, threshold_for, args.seed,
                                                wanted)
            print("\nevery three-domain combination, frozen encoder:")
            for key, value in result["all_triples"].items():
                print(f"  {key}: {value}")
    if args.plot:
        plot(result, args.plot)
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
