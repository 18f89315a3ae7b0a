"""Mixed-adapter batched generation: what per-channel LoRA adapters cost the model worker.

    .venv/bin/python benchmarks/bench_mixed_adapters.py [--channels 16] [--tokens 32] [--reps 3] [--json]

On the embedded SmolLM2 (the engine's LoRA layout: the shipped init's rank, targets and top
layers), ``--channels`` concurrent requests decode as one continuous batch, side by side in
one run, repetitions interleaved (the order rotates each round):

- ``none``:     no row has an adapter (the served model, LoRA layers injected, all zero);
- ``distinct``: every row has its own adapter (per-row gather of A/B, Punica/S-LoRA style);
- ``shared``:   every row uses the same adapter;
- ``plain``:    (``--plain``) a second copy of the model without any LoRA layers, for reference.

Adapters are random (A ~ N(0, 1/in), B ~ N(0, 0.01²)): they change replies a little, as a
trained adapter does; cost does not depend on the values. Reports tokens/s of each (median
over repetitions), the ratio distinct/none (issue 4's goal: >= 0.8), adapter bytes per
channel in the store and on the device, and how many adapters one process holds.
Prints a table and, last, one JSON line. Numbers are recorded in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.offline import offline_environment

offline_environment(force=False)

import torch  # noqa: E402

from engine.generation.model_loader import LoadedModel, load_model  # noqa: E402
from engine.generation.worker import ModelWorker  # noqa: E402
from engine.learning.consolidation import DEFAULT_INIT_PATH  # noqa: E402
from engine.nn.lora import (  # noqa: E402
    LoraConfig,
    LoraWeights,
    inject_lora,
    lora_modules,
    random_weights,
    weights_from_bytes,
    weights_nbytes,
    weights_to_bytes,
)
from engine.settings import LoraSettings, ModelSettings  # noqa: E402
from engine.understanding.foreground import Foreground  # noqa: E402

QUESTIONS = [
    "What is the capital of France?", "How do I reset my password?", "Give me a tip for better sleep.",
    "What is a prime number?", "Explain what an API is.", "How many days are in a leap year?",
    "What does HTTP stand for?", "Suggest a name for a cat.", "Why is the sky blue?", "What is 12 times 12?",
    "How do plants make food?", "What is the tallest mountain?", "How do I boil an egg?",
    "What is a black hole?", "Name three fruits.", "How does a bicycle stay upright?",
]


def lora_config() -> LoraConfig:
    """The layout the engine serves: the shipped init's, else the default."""
    if DEFAULT_INIT_PATH.is_file():
        return weights_from_bytes(DEFAULT_INIT_PATH.read_bytes())[1]
    return LoraConfig()


def make_adapter(model: torch.nn.Module, seed: int) -> LoraWeights:
    g = torch.Generator().manual_seed(seed)
    adapter = random_weights(model, g)
    for k, v in adapter.items():
        if k.endswith("lora_B"):
            adapter[k] = (torch.randn(v.shape, generator=g) * 0.01).to(v)
    return adapter


class Runner:
    def __init__(self, loaded: LoadedModel, settings: ModelSettings, foreground: Foreground | None = None) -> None:
        self.loaded, self.worker = loaded, ModelWorker(loaded, settings, foreground)
        tok = loaded.tokenizer
        self.prompts = []
        for q in QUESTIONS:
            out = tok.apply_chat_template([{"role": "user", "content": q + " Answer at length."}],
                                          add_generation_prompt=True, tokenize=True)
            self.prompts.append(list(out["input_ids"] if hasattr(out, "keys") else out))

    async def batch(self, adapters: list[tuple[str, LoraWeights] | None]) -> tuple[int, float]:
        """All rows submitted at once; (tokens generated, seconds until the last row ended)."""

        async def drain(stream) -> int:  # type: ignore[no-untyped-def]
            async for _ in stream:
                pass
            return stream.tokens

        started = time.perf_counter()
        streams = [self.worker.submit(self.prompts[i % len(self.prompts)], lora=a) for i, a in enumerate(adapters)]
        counts = await asyncio.gather(*(drain(s) for s in streams))
        return sum(counts), time.perf_counter() - started


async def bench(args: argparse.Namespace) -> dict[str, object]:
    settings = ModelSettings(max_new_tokens=args.tokens, max_batch=max(16, args.channels))
    config = lora_config()
    loaded = await asyncio.to_thread(load_model, settings, args.models_dir)
    inject_lora(loaded.model, config)
    served = Runner(loaded, settings)
    served.worker.start()
    n = args.channels
    distinct = [(f"bench:c{i}@1", make_adapter(loaded.model, i)) for i in range(n)]
    shared = ("bench:shared@1", make_adapter(loaded.model, 10_000))
    configs: dict[str, tuple[Runner, list[tuple[str, LoraWeights] | None]]] = {
        "none": (served, [None] * n),
        "distinct": (served, list(distinct)),
        "shared": (served, [shared] * n),
    }
    plain: Runner | None = None
    if args.plain:
        plain_loaded = await asyncio.to_thread(load_model, settings, args.models_dir)
        plain = Runner(plain_loaded, settings)
        plain.worker.start()
        configs["plain"] = (plain, [None] * n)

    names = list(configs)
    for name in names:  # warm-up (first forward, adapters made resident), not counted
        runner, adapters = configs[name]
        await runner.batch(adapters)
    rates: dict[str, list[float]] = {name: [] for name in names}
    tokens: dict[str, list[int]] = {name: [] for name in names}
    for rep in range(args.reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            runner, adapters = configs[name]
            count, seconds = await runner.batch(adapters)
            rates[name].append(count / seconds)
            tokens[name].append(count)
            print(f"  rep {rep + 1} {name:9s} {count:4d} tokens in {seconds:6.2f} s = {count / seconds:6.1f} tok/s",
                  file=sys.stderr)
    resident = served.worker.resident_loras()
    await served.worker.stop()
    if plain is not None:
        await plain.worker.stop()

    # Stacking the batch's adapters for the gather (done when the set of adapters in a batch changes).
    started = time.perf_counter()
    from engine.nn.lora import stack_weights

    for _ in range(10):
        stack_weights(loaded.model, [a for _, a in distinct])
    stack_ms = (time.perf_counter() - started) / 10 * 1000

    one = distinct[0][1]
    device_bytes = weights_nbytes(one)  # resident copy: the model's dtype on its device
    store_bytes = len(weights_to_bytes(one, config))  # what the store keeps per version (float32 safetensors)
    lora = LoraSettings()
    med = {name: statistics.median(v) for name, v in rates.items()}
    results: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, "
                   f"{loaded.device} {next(loaded.model.parameters()).dtype}".replace("torch.", ""),
        "channels": n,
        "new_tokens": args.tokens,
        "reps": args.reps,
        "lora": f"rank {config.rank}, {'/'.join(config.targets)}, top {config.top_layers} layers "
                f"({len(lora_modules(loaded.model))} modules)",
    }
    for name in names:
        results[f"tokens_per_s_{name}"] = round(med[name], 1)
        results[f"tokens_{name}"] = tokens[name][0]
    results["ratio_distinct_to_none"] = round(med["distinct"] / med["none"], 3)
    results["ratio_shared_to_none"] = round(med["shared"] / med["none"], 3)
    if "plain" in med:
        results["ratio_none_to_plain"] = round(med["none"] / med["plain"], 3)
        results["ratio_distinct_to_plain"] = round(med["distinct"] / med["plain"], 3)
    results |= {
        "stack_16_adapters_ms": round(stack_ms, 2),
        "adapter_params": sum(t.numel() for t in one.values()),
        "adapter_bytes_store": store_bytes,
        "adapter_bytes_device": device_bytes,
        "adapters_per_gb_store": int(1e9 // store_bytes),
        "device_lru_capacity": settings.max_resident_loras,
        "device_lru_bytes_full": settings.max_resident_loras * device_bytes,
        "host_cache_capacity": lora.cached_loras,
        "host_cache_bytes_full": lora.cached_loras * device_bytes,
        "resident_after_run": resident,
    }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per request")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--plain", action=argparse.BooleanOptionalAction, default=True,
                        help="also time a copy of the model without LoRA layers")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--models-dir", type=Path, default=Path(".cache/models"))
    parser.add_argument("--json", action="store_true", help="(the JSON line is always printed last)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = asyncio.run(bench(args))
    for key, value in results.items():
        print(f"{key:28s} {value}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
