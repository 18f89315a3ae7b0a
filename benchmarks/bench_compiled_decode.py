"""The compiled decode step against the eager direct forward: compile time, step time, agreement (issue 18).

    .venv/bin/python benchmarks/bench_compiled_decode.py [--rounds 3] [--steps 40] [--json]

The embedded model as the engine loads it (packed bfloat16 on a CPU that has it, else float32), its
``DirectForward`` and the ``CompiledDecode`` built on it (engine/generation/compiled_decode.py):

- ``compile_s``: ``CompiledDecode.warm`` (both graphs: one row; two rows or more), in this thread;
- step time: the median of ``--steps`` one-token steps after a chat prompt's prefill, eager and
  compiled alternating for ``--rounds`` rounds, at 1 row and at 16 left-padded rows; the ratio
  eager / compiled per round;
- ``--lora``: also a second copy of the model with the engine's per-channel LoRA layers injected
  (``prepare_lora``), whose compiled step takes every LoRA part's per-row A and B: timed beside the
  plain one with no row under a version (zeros, what a served batch without versions runs;
  ``lora_zero_*``) and with each row under a distinct random version (``lora_rows_*``);
- agreement: ``forced_steps`` over ``--agree-steps`` steps for each of four chat prompts alone and
  all four together (left-padded): the largest and the largest mean logit difference of a step as a
  share of that step's logit spread (std), and how many greedy choices differ, with the direct
  forward's gap between its two best logits there (0.0: an exact tie in bfloat16).

Prints a table; ``--json``: the last line is one JSON object. Numbers are in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engine.offline import offline_environment  # noqa: E402

offline_environment(force=False)

import psutil  # noqa: E402
import torch  # noqa: E402
from report import print_result  # noqa: E402

from engine.generation.compiled_decode import CompiledDecode, forced_steps  # noqa: E402
from engine.generation.direct_forward import DirectForward  # noqa: E402
from engine.generation.kv_cache import new_cache  # noqa: E402
from engine.generation.model_loader import LoadedModel, load_model  # noqa: E402
from engine.generation.padding import left_pad  # noqa: E402
from engine.learning.consolidator import prepare_lora  # noqa: E402
from engine.nn.lora import gather_rows, random_weights, stack_weights, use_rows  # noqa: E402
from engine.nn.openmp import release_team  # noqa: E402
from engine.settings import LoraSettings, ModelSettings  # noqa: E402

CHATS = ["What is the capital of France? Tell me about it.", "how do I reset my password",
         "Write a short poem about the sea and the wind, please.", "Explain photosynthesis to a ten-year-old."]


def padded(loaded: LoadedModel, rows: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``rows`` chat prompts (the four above, repeated), left-padded: ids, mask, positions."""
    tok = loaded.tokenizer
    prompts = []
    for i in range(rows):
        out = tok.apply_chat_template([{"role": "user", "content": CHATS[i % len(CHATS)]}],
                                      add_generation_prompt=True, tokenize=True)
        prompts.append(list(out["input_ids"] if hasattr(out, "keys") else out))
    return left_pad(prompts)


def step_ms(step: Any, direct: DirectForward, loaded: LoadedModel, rows: int, steps: int) -> float:
    """Median milliseconds of ``steps`` one-token steps of ``step`` after a prefill by the direct forward."""
    ids, mask, positions = padded(loaded, rows)
    cache = new_cache()
    times = []
    with torch.no_grad():
        logits = direct(ids, mask, positions, cache)
        position = positions[:, -1:]
        for _ in range(steps):
            token = logits.argmax(-1, keepdim=True)
            mask = torch.cat([mask, torch.ones_like(token)], dim=1)
            position = position + 1
            started = time.perf_counter()
            logits = step(token, mask, position, cache)
            times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def agreement(direct: DirectForward, compiled: CompiledDecode, loaded: LoadedModel, steps: int) -> dict[str, Any]:
    worst, worst_mean, flips, gaps, choices = 0.0, 0.0, 0, [], 0
    for rows in ([0], [1], [2], [3], [0, 1, 2, 3]):
        ids, mask, positions = padded(loaded, len(CHATS))
        pick = torch.tensor(rows)
        keep = int((mask[pick].sum(0) > 0).nonzero()[0])  # drop columns that are padding for every row kept
        for a, b in forced_steps(direct, compiled, ids[pick, keep:], mask[pick, keep:], positions[pick, keep:],
                                 steps):
            spread = a.std().item()
            worst = max(worst, (a - b).abs().max().item() / spread)
            worst_mean = max(worst_mean, (a - b).abs().mean().item() / spread)
            top = a.topk(2, dim=-1).values
            differ = a.argmax(-1) != b.argmax(-1)
            flips += int(differ.sum())
            gaps += [round(float(g), 3) for g in (top[:, 0] - top[:, 1])[differ]]
            choices += a.shape[0]
    return {"agree_max_diff_of_spread": round(worst, 4), "agree_mean_diff_of_spread": round(worst_mean, 4),
            "greedy_choices": choices, "greedy_differing": flips, "greedy_differing_gaps": gaps}


def rss_mb() -> int:
    """This process's resident memory (MiB): what the compiled graphs' constants add shows here."""
    return psutil.Process().memory_info().rss >> 20


def lora_copy(args: argparse.Namespace) -> tuple[LoadedModel, DirectForward, CompiledDecode]:
    """A second copy of the model with the engine's LoRA layers, its direct forward and compiled step."""
    loaded = load_model(ModelSettings(id=args.model, compile_decode=False), args.models_dir)
    prepare_lora(loaded.model, loaded.tokenizer, LoraSettings())
    direct = DirectForward.build(loaded.model, bf16=loaded.matmul_dtype == "bfloat16")
    assert direct is not None
    compiled = CompiledDecode(direct)
    compiled.warm()
    if not compiled.ready:
        sys.exit(f"the compiled step with LoRA layers did not build: {compiled.state}")
    return loaded, direct, compiled


def random_version(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """A channel's version with both A and B non-zero, so that its rows do the whole LoRA work."""
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randn(m.shape, generator=generator) * 0.01
            for name, m in random_weights(model, generator).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=ModelSettings().id)
    parser.add_argument("--models-dir", type=Path, default=Path(".cache/models"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40, help="timed steps per measurement")
    parser.add_argument("--agree-steps", type=int, default=60, help="forced steps per prompt for agreement")
    parser.add_argument("--lora", action="store_true", help="also time a copy with the engine's LoRA layers")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of every figure")
    args = parser.parse_args()

    loaded = load_model(ModelSettings(id=args.model, compile_decode=False), args.models_dir)
    direct = DirectForward.build(loaded.model, bf16=loaded.matmul_dtype == "bfloat16")
    if direct is None:
        sys.exit(f"{args.model}: the direct forward does not cover it")
    step_ms(direct, direct, loaded, 1, 1)  # every weight read once: mmapped float32 pages count from here
    release_team()
    rss_before = rss_mb()
    compiled = CompiledDecode(direct)
    compiled.warm()
    if not compiled.ready:
        sys.exit(f"the compiled step did not build: {compiled.state}")
    results: dict[str, Any] = {"model": args.model, "threads": torch.get_num_threads(),
                               "matmul_dtype": loaded.matmul_dtype, "rss_mb_before_compile": rss_before,
                               "rss_mb_after_compile": rss_mb(),
                               "compile_s": round(compiled.compile_s or 0.0, 1)}
    with_lora = lora_copy(args) if args.lora else None
    for rows in (1, 16):
        eager, fast, zero, versions = [], [], [], []
        for _ in range(args.rounds):
            eager.append(step_ms(direct, direct, loaded, rows, args.steps))
            fast.append(step_ms(compiled, direct, loaded, rows, args.steps))
            if with_lora is not None:
                lora_loaded, lora_direct, lora_compiled = with_lora
                zero.append(step_ms(lora_compiled, lora_direct, lora_loaded, rows, args.steps))
                stacks = stack_weights(lora_loaded.model, [random_version(lora_loaded.model, i) for i in range(rows)])
                with use_rows(lora_loaded.model, gather_rows(stacks, torch.arange(1, rows + 1))):
                    versions.append(step_ms(lora_compiled, lora_direct, lora_loaded, rows, args.steps))
        results |= {f"eager_ms_{rows}": [round(x, 2) for x in eager],
                    f"compiled_ms_{rows}": [round(x, 2) for x in fast],
                    f"ratio_{rows}": [round(e / c, 2) for e, c in zip(eager, fast, strict=True)]}
        if with_lora is not None:
            results |= {f"lora_zero_compiled_ms_{rows}": [round(x, 2) for x in zero],
                        f"lora_rows_compiled_ms_{rows}": [round(x, 2) for x in versions]}
    if with_lora is not None:
        results["lora_state_after"] = with_lora[2].state
    results |= agreement(direct, compiled, loaded, args.agree_steps)
    results["state_after"] = compiled.state  # still "compiled": nothing compiled again
    print_result(results, args.json)


if __name__ == "__main__":
    main()
