"""``heedful meta-train`` and ``heedful eval``: the learning commands (see docs/LEARNING.md)."""

from __future__ import annotations

import typer

meta_train_app = typer.Typer(help="Meta-train the learned artifacts (metric, LoRA initialisation).", no_args_is_help=True)
eval_app = typer.Typer(help="The two benchmarks: few-shot intents and learning from corrections.", no_args_is_help=True)
