"""``python -m bots.lora_cli side-by-side | truncation``: the LoRA measurements behind docs/BENCHMARKS.md.

- ``side-by-side``: no adaptation vs standard-init fine-tuning vs each meta-learned init
  (``--init``, repeatable) on channel-tasks of held-out domains;
- ``truncation``: truncated backprop vs full forward vs LoRA on every layer.

Argument parsing only: the runs are ``engine.training.lora_bench``'s. The JSON report is
the last line of stdout (and, with ``--out``, a file); news goes to stderr. ``heedful
meta-train lora`` and ``heedful eval corrections --mode lora`` are in ``bots.learning_cli``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .cli_common import csv
from .presets import PRESETS

__all__ = ["main"]

_MODELS_DIR = Path(".cache/models")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bots.lora_cli", description="LoRA meta-learning measurements")
    sub = p.add_subparsers(dest="what", required=True)
    a_ = sub.add_parser("side-by-side", help="no adaptation vs standard-init fine-tuning vs meta-learned inits")
    a_.add_argument("--init", type=Path, action="append", required=True, help="init artifact (repeatable)")
    t_ = sub.add_parser("truncation", help="truncated backprop vs full forward vs LoRA on every layer")
    for q in (a_, t_):
        q.add_argument("--support", type=Path, required=True)
        q.add_argument("--query", type=Path, required=True)
        q.add_argument("--domains", type=Path)
        q.add_argument("--eval-domains", default="")
        q.add_argument("--tasks", type=int, default=24)
        q.add_argument("--seed", type=int, default=7)
        q.add_argument("--models-dir", type=Path)
        q.add_argument("--out", type=Path, help="also write the JSON report here")
    t_.add_argument("--steps", type=int, default=5)
    a_.add_argument("--oos", type=Path)
    a_.add_argument("--final-steps", type=int, default=5)
    a_.add_argument("--max-steps", type=int, default=20)
    a_.add_argument("--corrections", default="", help="e.g. 1,2,4,8,16")
    a_.add_argument("--per-point", type=int, default=6)
    a_.add_argument("--no-adam", action="store_true")
    a_.add_argument("--no-generate", action="store_true")
    a_.add_argument("--model", default="")
    a_.add_argument("--plot", type=Path)
    a_.add_argument("--anchor", type=float, default=0.0, help="also run each method anchored, with this KL weight")
    return p


def main(argv: list[str] | None = None) -> None:
    """Parse ``argv`` and run the chosen measurement."""
    a = _parser().parse_args(argv)
    from engine.settings import ModelSettings
    from engine.training.lora_bench import SideBySideConfig, TruncationConfig, side_by_side, truncation
    from engine.training.runs import stderr_log

    systems = (None, *PRESETS.values())
    result: dict[str, object]
    if a.what == "truncation":
        result = dict(truncation(TruncationConfig(
            support=a.support, query=a.query, domains=a.domains, eval_domains=tuple(csv(a.eval_domains)),
            tasks=a.tasks, seed=a.seed, steps=a.steps, models_dir=a.models_dir or _MODELS_DIR, systems=systems)))
    else:
        result = side_by_side(SideBySideConfig(
            inits=tuple(a.init), support=a.support, query=a.query, oos=a.oos, domains=a.domains,
            eval_domains=tuple(csv(a.eval_domains)), tasks=a.tasks, seed=a.seed, final_steps=a.final_steps,
            max_steps=a.max_steps, corrections=tuple(int(x) for x in csv(a.corrections)), per_point=a.per_point,
            adam=not a.no_adam, generate=not a.no_generate,
            model=ModelSettings(id=a.model) if a.model else ModelSettings(),
            models_dir=a.models_dir or _MODELS_DIR, plot=a.plot, anchor=a.anchor, systems=systems), stderr_log)
    if a.out:
        a.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
