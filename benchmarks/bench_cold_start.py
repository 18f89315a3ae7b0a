"""Cold start: converting the embedded model, and a fresh install's first answer.

    .venv/bin/python benchmarks/bench_cold_start.py [--rounds 2] [--other-tree PATH] [--json]

1. ``load_model`` of the embedded model into an empty models directory (the GGUF is converted:
   ``engine/generation/gguf_convert.py``), then again from that cache; and transformers' own
   conversion of the same file (the path used before), side by side.
2. ``heedful run`` as a fresh install meets it (empty data and models directories) and with the
   model cache warm: a question piped in at launch; seconds from launch to the first character of
   the answer, and to the process's end.

``--other-tree PATH`` instead times step 2 for this tree and another source tree (a git worktree
of another commit) side by side, alternating, each with its own model cache.

Prints a table and, last, one JSON line. Numbers are recorded in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engine.offline import offline_environment  # noqa: E402

offline_environment(force=False)


def load_times() -> dict[str, float]:
    from engine.generation.model_loader import embedded_gguf_path, load_model
    from engine.settings import ModelSettings

    with tempfile.TemporaryDirectory() as models:
        started = time.perf_counter()
        load_model(ModelSettings(), Path(models))
        cold = time.perf_counter() - started
        started = time.perf_counter()
        load_model(ModelSettings(), Path(models))
        cached = time.perf_counter() - started
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf_path()
    started = time.perf_counter()
    AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    transformers_s = time.perf_counter() - started
    return {"load_cold_s": round(cold, 2), "load_cached_s": round(cached, 2),
            "transformers_conversion_s": round(transformers_s, 2)}


def first_answer(models_dir: str | None, tree: Path | None = None) -> tuple[float, float]:
    """(seconds to the answer's first character, seconds to the end) of ``heedful run`` asked one question;
    ``tree``: run that source tree's ``heedful`` (its ``engine`` and ``bots``) on this environment."""
    with tempfile.TemporaryDirectory() as data:
        env = dict(os.environ, HEEDFUL_DATA_DIR=data, PYTHONUNBUFFERED="1")
        if models_dir is not None:
            env["HEEDFUL_MODELS_DIR"] = models_dir
        command = [str(REPO / ".venv" / "bin" / "heedful"), "run"]
        if tree is not None:
            env["PYTHONPATH"] = str(tree)
            command = [str(REPO / ".venv" / "bin" / "python"), "-c",
                       "import sys; from bots.cli import main; sys.argv[0] = 'heedful'; sys.exit(main())", "run"]
        started = time.perf_counter()
        process = subprocess.Popen(command, stdin=subprocess.PIPE, cwd=tempfile.gettempdir(),
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(b"Where is the exit?\n")
        process.stdin.close()
        process.stdout.read(1)
        first = time.perf_counter() - started
        process.stdout.read()
        process.wait()
        return first, time.perf_counter() - started


def side_by_side(other: Path, rounds: int) -> dict[str, Any]:
    """Fresh-install and cached first answers of this tree and ``other``, alternating (the order flips each
    round), each tree with its own model cache: medians of ``rounds``."""
    trees = {"this": REPO, "other": other}
    runs: dict[str, dict[str, list[float]]] = {name: {"fresh_install": [], "model_cached": []} for name in trees}
    with tempfile.TemporaryDirectory() as cache_this, tempfile.TemporaryDirectory() as cache_other:
        caches = {"this": cache_this, "other": cache_other}
        for name, tree in trees.items():
            first_answer(caches[name], tree)  # fills its cache
        for r in range(rounds):
            for name in (("this", "other") if r % 2 else ("other", "this")):
                with tempfile.TemporaryDirectory() as empty:
                    runs[name]["fresh_install"].append(first_answer(empty, trees[name])[0])
                runs[name]["model_cached"].append(first_answer(caches[name], trees[name])[0])
                print(f"round {r + 1} {name}: fresh {runs[name]['fresh_install'][-1]:.2f} s, "
                      f"cached {runs[name]['model_cached'][-1]:.2f} s", flush=True)
    return {"other_tree": str(other), "rounds": rounds,
            **{f"{name}_{kind}_first_answer_s": round(statistics.median(values), 2)
               for name, kinds in runs.items() for kind, values in kinds.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--other-tree", type=Path, default=None,
                        help="also time this source tree's heedful (e.g. a git worktree of another commit), "
                             "alternating with this one round by round")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.other_tree is not None:
        print(json.dumps(side_by_side(args.other_tree.resolve(), args.rounds)))
        return
    results: dict[str, Any] = load_times()
    fresh, warm = [], []
    with tempfile.TemporaryDirectory() as shared:
        first_answer(shared)  # fills the shared cache
        for _ in range(args.rounds):
            with tempfile.TemporaryDirectory() as empty:
                fresh.append(first_answer(empty))
            warm.append(first_answer(shared))
    for name, runs in (("fresh_install", fresh), ("model_cached", warm)):
        results[name] = {"first_answer_s": round(statistics.median(r[0] for r in runs), 2),
                         "whole_run_s": round(statistics.median(r[1] for r in runs), 2)}
    if not args.json:
        print(f"load_model: cold {results['load_cold_s']} s (transformers' conversion alone "
              f"{results['transformers_conversion_s']} s), cached {results['load_cached_s']} s")
        for name in ("fresh_install", "model_cached"):
            r = results[name]
            print(f"heedful run, {name}: first answer {r['first_answer_s']} s after launch, done {r['whole_run_s']} s")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
