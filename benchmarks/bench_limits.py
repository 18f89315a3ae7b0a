"""The local backend's decode speed as a share of this machine's limits (issue 18).

    .venv/bin/python benchmarks/bench_limits.py [--dtype auto] [--tokens 64] [--repeat 3] [--json]

Measured in one run, so that the shares compare like with like on a shared, noisy box:

- **memory bandwidth**: a large tensor copy (``--copy-mib`` per buffer, far beyond the
  caches), counted as bytes read + bytes written (STREAM "copy"), best of ``--repeat``;
- **peak matmul FLOP/s** at the model's shapes, in the precision the engine uses: every
  linear layer of the model itself (q/k/v/o, gate/up/down, the LM head; packed bfloat16
  where the engine chose it) applied to ``M`` rows, for several ``M``; the best
  aggregate rate (and, for the frontier, the rate at 16 rows and the bytes/s at 1 row);
- **decode**: the engine's ``ModelWorker`` generating exactly ``--tokens`` new tokens per
  request (end-of-sequence ignored, so every row decodes the whole time), for 1 and 16
  concurrent requests (one continuous batch; ``--batches 1,4,16`` adds others), best of
  ``--repeat``; prefill included. With
  ``--compare-transformers`` (default) the same through transformers' forward on a second
  copy of the model, repetitions interleaved, and the speed-up of the engine's direct
  forward (``engine/generation/direct_forward.py``) over it (medians). Where the engine
  compiles its decode step (``engine/generation/compiled_decode.py``), timing starts once
  it is compiled (``compile_s``), and ``--compare-eager`` (default) also decodes through the
  eager direct forward on another copy, interleaved (``speedup_N_over_eager``).

Limits and shares:

- single stream: one token reads every weight once, so the bound is
  ``bandwidth / weight bytes`` tokens/s (weight bytes in the linear layers' precision);
  ``single_stream_share`` = measured / bound;
- batch of 16: the bound is ``peak FLOP/s / FLOPs per token`` (2 x the multiply-adds
  of all weight matrices, LM head included; attention over the short cache is left
  out, which flatters the share slightly); ``batch16_share`` = measured / bound;
- the roofline for 16 rows: each step still reads every weight once, so 16 rows are also
  bound by 16 x the single-stream bound; ``batch16_roofline_share`` = measured / the lower
  of the two (on a CPU whose bf16 peak is ~150 FLOP per byte of bandwidth, the bandwidth
  bound is the lower one until ~150 rows).

Prints a table; with ``--json`` the last line is one JSON object with every figure,
``single_stream_share`` and ``batch16_share`` among them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.offline import offline_environment

offline_environment(force=False)

import torch  # noqa: E402
from bench_foundation import QUESTIONS  # noqa: E402  (beside this script: the same prompts as the foundation bench)
from report import print_result  # noqa: E402

from engine.generation.direct_forward import transposed_product  # noqa: E402
from engine.generation.model_loader import LoadedModel, decoding, load_model  # noqa: E402
from engine.generation.worker import ModelWorker  # noqa: E402
from engine.nn.openmp import release_team  # noqa: E402
from engine.settings import ModelSettings  # noqa: E402


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def memory_bandwidth(mib: int, repeat: int) -> float:
    """Bytes/s of a large copy (read + write), best of ``repeat`` (after one warm-up)."""
    n = mib * 2**20 // 4
    src = torch.ones(n, dtype=torch.float32)
    dst = torch.empty_like(src)
    dst.copy_(src)  # touch every page first
    best = float("inf")
    for _ in range(max(repeat, 3)):
        started = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - started)
    return 2 * src.numel() * src.element_size() / best


def linear_modules(model: Any) -> list[torch.nn.Module]:
    """Every linear layer a token's forward pass runs, the LM head included (once, even when tied)."""
    mods = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    head = model.get_output_embeddings()
    if head is not None and not any(head is m for m in mods):
        mods.append(head)
    return mods


def weight_bytes(model: Any, mods: list[torch.nn.Module], matmul_bytes: int) -> int:
    """Bytes read per decoded token: every weight matrix once, in the precision the linear layers
    multiply in (``matmul_bytes`` per element), plus the small non-matrix parameters (norms).
    The input embedding is a lookup of one row per token, so a tied embedding counts once, as the head."""
    matrices = {id(m.weight) for m in mods}
    embedding = model.get_input_embeddings()
    skip = matrices | ({id(embedding.weight)} if embedding is not None else set())
    total = sum(m.weight.numel() * matmul_bytes for m in mods)
    seen: set[int] = set()
    for p in model.parameters():
        if id(p) not in skip and id(p) not in seen:
            seen.add(id(p))
            total += p.numel() * p.element_size()
    return total


def peak_matmul(mods: list[torch.nn.Module], dtype: torch.dtype, repeat: int) -> dict[int, float]:
    """Aggregate FLOP/s of the model's own linear layers applied to ``M`` rows, for several ``M``: {M: best
    FLOP/s}, the best of the path decoding takes (packed bfloat16, or oneDNN's float32 product where the
    engine chose it), torch's default product on the same weights and, in float32, the weights times the
    rows' transpose (``direct_forward.transposed_product``), so that the limit is the machine's best product
    and not only the one the engine picked."""
    rates: dict[int, float] = {}
    with torch.no_grad():
        for m in (1, 16, 64, 256, 1024):
            xs = {mod.in_features: torch.randn(m, mod.in_features, dtype=dtype) for mod in mods}  # type: ignore[union-attr]
            flops = sum(2 * m * mod.weight.numel() for mod in mods)
            best = 0.0
            paths = ["engine", "linear"] + (["transposed"] if dtype == torch.float32 else [])
            for path in paths:
                with decoding() if path == "engine" else contextlib.nullcontext():
                    times = torch.nn.functional.linear if path == "linear" else transposed_product
                    calls = [(mod if path == "engine" else functools.partial(times, weight=mod.weight),
                              xs[mod.in_features]) for mod in mods]  # type: ignore[union-attr]
                    for call, x in calls:  # warm-up
                        call(x)
                    for _ in range(max(repeat, 2)):
                        started = time.perf_counter()
                        for call, x in calls:
                            call(x)
                        best = max(best, flops / (time.perf_counter() - started))
            rates[m] = best
    return rates


def prompt_ids(loaded: LoadedModel, i: int) -> list[int]:
    tok = loaded.tokenizer
    messages = [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)] + " Answer at length."}]
    out = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


async def decode_rates(paths: dict[str, tuple[LoadedModel, ModelSettings]], tokens: int,
                       repeat: int, batches: tuple[int, ...] = (1, 16)) -> dict[str, Any]:
    """Tokens/s of each of ``batches`` concurrent requests through a ``ModelWorker`` per decode path
    (``{suffix: (model, settings)}``), repetitions interleaved across the paths; best and median."""
    workers = {}
    for suffix, (loaded, settings) in paths.items():
        worker = ModelWorker(loaded, settings)
        worker._stop_ids = set()  # fixed-length decoding: every row runs all `tokens` steps
        worker.start()
        workers[suffix] = (worker, loaded)
    out: dict[str, Any] = {}
    for suffix, (worker, _) in workers.items():
        compiled = worker.compiled
        if compiled is not None:  # time the step the engine serves once ready, not while it compiles
            await asyncio.to_thread(compiled.wait)
            out[f"decode_step{suffix}"] = compiled.state
            out[f"compile_s{suffix}"] = round(compiled.compile_s or 0.0, 1)
        else:
            out[f"decode_step{suffix}"] = "eager"

    async def run(worker: ModelWorker, loaded: LoadedModel, i: int) -> int:
        stream = worker.submit(prompt_ids(loaded, i), max_new_tokens=tokens)
        async for _ in stream:
            pass
        return stream.tokens

    try:
        for worker, loaded in workers.values():
            await run(worker, loaded, 0)  # warm-up
        for n in batches:
            rates: dict[str, list[float]] = {suffix: [] for suffix in workers}
            for _ in range(repeat):
                for suffix, (worker, loaded) in workers.items():
                    started = time.perf_counter()
                    counts = await asyncio.gather(*(run(worker, loaded, i) for i in range(n)))
                    elapsed = time.perf_counter() - started
                    assert all(c == tokens for c in counts), counts
                    rates[suffix].append(sum(counts) / elapsed)
            for suffix, r in rates.items():
                out[f"tokens_per_s_{n}{suffix}"] = round(max(r), 1)
                out[f"tokens_per_s_{n}{suffix}_median"] = round(statistics.median(r), 1)
    finally:
        for worker, _ in workers.values():
            await worker.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="auto", help="auto (what the engine chooses) | float32 | bfloat16")
    parser.add_argument("--matmul-dtype", default="auto", help="auto (what the engine chooses) | float32 | bfloat16")
    parser.add_argument("--model", default=ModelSettings().id)
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per request")
    parser.add_argument("--batches", default="1,16",
                        help="concurrent requests to decode, comma-separated (1 and 16 are always among them)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement; the best is reported")
    parser.add_argument("--copy-mib", type=int, default=1024, help="size of each buffer of the bandwidth copy")
    parser.add_argument("--models-dir", type=Path, default=Path(".cache/models"))
    parser.add_argument("--direct-forward", action=argparse.BooleanOptionalAction, default=True,
                        help="decode through the engine's direct forward (default) or transformers' forward")
    parser.add_argument("--compare-transformers", action=argparse.BooleanOptionalAction, default=True,
                        help="also decode through transformers' forward (a second model copy), interleaved")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                        help="decode through the compiled step where the engine would (default), or eagerly")
    parser.add_argument("--compare-eager", action=argparse.BooleanOptionalAction, default=True,
                        help="also decode through the eager direct forward (a model copy), interleaved")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of every figure")
    args = parser.parse_args()

    settings = ModelSettings(id=args.model, dtype=args.dtype, matmul_dtype=args.matmul_dtype,
                             max_new_tokens=args.tokens, max_batch=16, direct_forward=args.direct_forward,
                             compile_decode=args.compile, compile_delay_s=0.0)
    loaded = load_model(settings, args.models_dir)
    model = loaded.model
    dtype = next(model.parameters()).dtype
    flags = cpu_flags()
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads",
        "cpu_bf16": bool({"avx512_bf16", "amx_bf16"} & flags),
        "dtype": str(dtype).removeprefix("torch."),
        "matmul_dtype": loaded.matmul_dtype,
        "device": str(loaded.device),
    }
    mods = linear_modules(model)
    wbytes = weight_bytes(model, mods, getattr(torch, loaded.matmul_dtype).itemsize)
    flops_per_token = sum(2 * m.weight.numel() for m in mods)
    bandwidth = memory_bandwidth(args.copy_mib, args.repeat)
    rates = peak_matmul(mods, dtype, args.repeat)
    peak_m = max(rates, key=rates.__getitem__)
    results |= {
        "weight_mb": round(wbytes / 1e6, 1),
        "gflop_per_token": round(flops_per_token / 1e9, 3),
        "bandwidth_gb_s": round(bandwidth / 1e9, 1),
        "peak_gflop_s": round(rates[peak_m] / 1e9, 1),
        "peak_at_rows": peak_m,
        "matmul_gflop_s_at_16_rows": round(rates[16] / 1e9, 1),
        "matmul_gb_s_at_1_row": round(rates[1] / flops_per_token * wbytes / 1e9, 1),
        "single_stream_limit_tokens_per_s": round(bandwidth / wbytes, 1),
        "batch_limit_tokens_per_s": round(rates[peak_m] / flops_per_token, 1),
    }
    paths = {"": (loaded, settings)}
    if args.compare_eager and args.compile and settings.direct_forward:
        eager = settings.model_copy(update={"compile_decode": False})
        paths["_eager"] = (load_model(eager, args.models_dir), eager)
    if args.compare_transformers and settings.direct_forward:
        # A second copy of the model, so that the direct forward's fused weights leave its layers alone.
        plain = settings.model_copy(update={"direct_forward": False})
        paths["_transformers"] = (load_model(plain, args.models_dir), plain)
    release_team()  # the worker threads decode with the cores' OpenMP team to themselves, as in the engine
    batches = tuple(sorted({1, 16} | {int(n) for n in args.batches.split(",") if n.strip()}))
    results |= asyncio.run(decode_rates(paths, args.tokens, args.repeat, batches))
    results["single_stream_share"] = round(results["tokens_per_s_1"] / results["single_stream_limit_tokens_per_s"], 3)
    results["batch16_share"] = round(results["tokens_per_s_16"] / results["batch_limit_tokens_per_s"], 3)
    # Roofline: 16 rows still read every weight once per step, so a batch of 16 can go no faster
    # than 16 x the single-stream bound either; on this kind of machine that bound is the lower one.
    roofline = min(results["batch_limit_tokens_per_s"], 16 * results["single_stream_limit_tokens_per_s"])
    results["batch16_roofline_limit_tokens_per_s"] = round(roofline, 1)
    results["batch16_roofline_share"] = round(results["tokens_per_s_16"] / roofline, 3)
    for other in ("transformers", "eager"):
        if f"tokens_per_s_1_{other}" in results:
            for n in batches:
                results[f"speedup_{n}_over_{other}"] = round(
                    results[f"tokens_per_s_{n}_median"] / results[f"tokens_per_s_{n}_{other}_median"], 2)
    print_result(results, args.json)


if __name__ == "__main__":
    main()
