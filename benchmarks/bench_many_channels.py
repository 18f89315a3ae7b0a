"""10,000 channels, each with its own LoRA version, served by one process (issue 18).

    .venv/bin/python benchmarks/bench_many_channels.py [--channels 10000] [--tokens 32] [--reps 5] [--json]

1. **The store.** A fresh data directory (a temporary one under ``--dir``) gets a real SQLite
   store holding ``--channels`` channels, each with one active LoRA version, written with
   ``Store.add_lora_version`` (what the consolidator calls when it promotes a version): random
   adapters of the engine's layout (``prepare_lora``: the shipped init's rank, targets and top
   layers; A ~ N(0, 1/in), B ~ N(0, 0.01²), as ``bench_mixed_adapters.py``), serialised with
   ``weights_to_bytes`` as the consolidator does. Reported: time to write, and the database's
   bytes per channel (file size / channels, the channel's row and audit row included).
2. **Serving.** A second ``Store`` opens the file afresh (as a restarted process would: no scope
   ids remembered). Each row of a batch takes the engine's own path for its channel's version:
   ``Consolidator.lora_for`` (host-memory LRU of decoded versions, ``lora.cached_loras``, else a
   read from the store and a decode) and then ``ModelWorker.submit(prompt, lora=(key, weights))``
   (the worker's device LRU, ``model.max_resident_loras``, and its per-row gather of A/B). The
   full ``Engine`` is not driven: its turn also embeds, matches and writes history, which would
   drown what is measured here; ``Engine._answer`` calls exactly ``lora_for`` and then the worker,
   and holds the worker's foreground (``understanding/foreground.py``) from the turn's start until
   its request is submitted, as each row here does from its lookup until its submit
   (``--no-foreground``: rows submit with no foreground, as before that existed; the worker admits
   each row as soon as it arrives). Cache sizes are the engine's defaults.
3. **Batches**, side by side in one run, repetitions interleaved (the order rotates each round):
   16 concurrent requests (``--batch``), ``--tokens`` new tokens each, end-of-sequence ignored so
   every row decodes every step (as ``bench_limits.py``; like for like across batches whose text
   differs); tokens/s counts from the first lookup until the last row ended. Reported: the median
   over rounds (and the best), the ratio of medians to ``none``, the median of the ratios taken
   within each round (``_paired``: steadier when other work comes and goes), the ratio of the bests,
   and for each kind how long until every row was submitted and how many prefills the worker ran:

   - ``none``: no row has a LoRA version (lookups skipped);
   - ``hot``:  16 distinct versions, the same 16 every round: in both caches;
   - ``cold``: 16 distinct versions never looked up before, drawn fresh each round: each comes
     from the store through the host cache onto the device while the batch starts;
   - ``zipf``: 16 distinct channels drawn from a Zipf stream (``--zipf-s``) over the remaining
     channels, after ``--zipf-lookups`` lookups of the same stream warmed the caches; hit rates of
     both caches are reported for the warm-up's second half and for the timed rounds.
4. **Latency and memory.** Store → device for one version (lookup + device copy), p50 / p99 over
   ``--latency-samples`` fresh channels (and the store read and decode apart); RSS growth per
   version held in the host LRU (``--memory-versions`` fresh versions looked up) and then per
   version made resident on the device (RSS read after ``malloc_trim``, so freed memory the
   allocator kept does not hide new allocations); the memory of an idle channel (its bytes in the store; in
   memory only the store's bounded cache of scope ids, sized per entry here).

Prints a table; ``--json``: the last line is one JSON object with every figure (``ratio_hot``,
``ratio_cold``, ``ratio_zipf``, ``bytes_per_idle_channel`` ...). Numbers are in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import itertools
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.offline import offline_environment

offline_environment(force=False)

import psutil  # noqa: E402
import torch  # noqa: E402
from bench_mixed_adapters import Runner, make_adapter  # noqa: E402  (beside this script)
from report import print_result  # noqa: E402
from tqdm import tqdm  # noqa: E402

from engine.contract import ChannelKey  # noqa: E402
from engine.generation.model_loader import LoadedModel, load_model  # noqa: E402
from engine.generation.worker import ModelWorker  # noqa: E402
from engine.learning.consolidator import Consolidator, prepare_lora  # noqa: E402
from engine.nn.lora import (  # noqa: E402
    LoraConfig,
    LoraWeights,
    lora_modules,
    stack_weights,
    weights_from_bytes,
    weights_nbytes,
    weights_to_bytes,
)
from engine.settings import LoraSettings, ModelSettings  # noqa: E402
from engine.store import Store  # noqa: E402
from engine.store.store import CACHED_CHANNEL_IDS  # noqa: E402
from engine.understanding.foreground import Foreground  # noqa: E402

# What the consolidator records beside a promoted version (its ``measured``), values made up.
METRICS = {"held_out_loss": 1.91, "base_held_out_loss": 2.43, "current_held_out_loss": 2.43, "locality": 0.99,
           "steps": 30, "seconds": 0.8, "corrections": 8, "held_out": 2, "probes": 3, "decision": "bench"}
Entry = tuple[str, LoraWeights] | None


def channel(i: int) -> ChannelKey:
    return ChannelKey(platform="bench", space="S1", channel=f"C{i:05d}")


def rss() -> int:
    """Resident bytes, after handing the allocator's free pages back to the OS (glibc), so that
    memory freed earlier (KV caches, dropped versions) does not hide what is allocated next."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return int(psutil.Process().memory_info().rss)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def db_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))  # the file, -wal, -shm


async def write_store(path: Path, model: torch.nn.Module, config: LoraConfig, n: int) -> dict[str, Any]:
    """N channels, one active version each, through ``Store.add_lora_version``."""
    store = Store(path)
    await store.open()
    started = time.perf_counter()
    making = 0.0
    for i in tqdm(range(n), desc="writing LoRA versions", unit="version", mininterval=1.0):
        t = time.perf_counter()
        blob = weights_to_bytes(make_adapter(model, i), config)
        making += time.perf_counter() - t
        await store.add_lora_version(channel(i), blob, METRICS, "active")
    elapsed = time.perf_counter() - started
    await store.close()  # the last connection checkpoints the WAL into the file
    size = db_bytes(path)
    return {
        "write_s": round(elapsed, 1),
        "write_ms_per_version": round((elapsed - making) / n * 1000, 2),
        "store_bytes": size,
        "store_bytes_per_channel": round(size / n),
    }


class Serving:
    """One process's serving path: the consolidator's host LRU over the store, the worker's device LRU."""

    def __init__(self, loaded: LoadedModel, settings: ModelSettings, store: Store, config: LoraConfig,
                 job: Any, foreground: Foreground | None) -> None:
        self.foreground = foreground  # as the engine's turns hold it (module docstring, 2.)
        self.runner = Runner(loaded, settings, foreground)
        self.worker: ModelWorker = self.runner.worker
        self.worker._stop_ids = set()  # fixed-length decoding: every row runs all its tokens
        self.lora = LoraSettings()
        self.consolidator = Consolidator(store, self.worker, self.lora, config, job)  # not started: no jobs
        self.host_hits = self.device_hits = self.lookups = 0
        self.prefills = 0  # prefills the worker ran (rows that arrive apart join in several)
        join = self.worker._join

        def counted(batch: Any, joining: Any) -> None:
            self.prefills += 1
            join(batch, joining)

        self.worker._join = counted  # type: ignore[method-assign]
        self.last_submit = 0.0

    def reset_counts(self) -> None:
        self.host_hits = self.device_hits = self.lookups = self.prefills = 0

    async def lookup(self, key: ChannelKey) -> Entry:
        """The engine's order: the consolidator's lookup, then the worker makes it resident."""
        host_hit = key.scope in self.consolidator._cache
        entry = await self.consolidator.lora_for(key)
        assert entry is not None, key
        self.lookups += 1
        self.host_hits += host_hit
        self.device_hits += entry[0] in self.worker._resident
        return entry

    async def batch(self, keys: list[ChannelKey | None]) -> tuple[int, float]:
        """Every row: look its version up, then submit; (tokens, seconds from the first lookup to the
        last token). ``last_submit``: seconds from the start until the last row was submitted."""

        async def row(i: int, key: ChannelKey | None) -> int:
            with self.foreground.busy() if self.foreground is not None else contextlib.nullcontext():
                entry = await self.lookup(key) if key is not None else None
                stream = self.worker.submit(self.runner.prompts[i % len(self.runner.prompts)], lora=entry)
            self.last_submit = max(self.last_submit, time.perf_counter() - started)
            async for _ in stream:
                pass
            return stream.tokens

        started, self.last_submit = time.perf_counter(), 0.0
        counts = await asyncio.gather(*(row(i, k) for i, k in enumerate(keys)))
        return sum(counts), time.perf_counter() - started


def zipf_stream(pool: list[int], s: float, seed: int) -> Iterator[int]:
    """Endless draws from ``pool``, its i-th channel with weight 1 / i**s."""
    rng = random.Random(seed)
    cum = list(itertools.accumulate(1.0 / (i + 1) ** s for i in range(len(pool))))
    while True:
        yield from rng.choices(pool, cum_weights=cum, k=4096)


def scope_id_entry_bytes(count: int = 10_000) -> int:
    """Python heap bytes per entry of the store's scope-id cache (``OrderedDict[ChannelKey, int]``): the
    key the caller made (the store keeps it alive), its own strings, the row id and the dict's slot."""
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    table: OrderedDict[ChannelKey, int] = OrderedDict()
    for i in range(count):
        table[ChannelKey(platform="bench", space="S1", channel=f"X{i:07d}")] = 1_000_000 + i
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return round(used / count)


async def bench(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    n, size = args.channels, args.batch
    settings = ModelSettings(max_new_tokens=args.tokens, max_batch=max(16, size), compile_decode=args.compile,
                             compile_delay_s=0.0)
    loaded = await asyncio.to_thread(load_model, settings, args.models_dir)
    setup = prepare_lora(loaded.model, loaded.tokenizer, LoraSettings())  # the engine's own injection
    config = setup.config
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads, {loaded.device} "
                   f"{str(next(loaded.model.parameters()).dtype).removeprefix('torch.')}, "
                   f"matmul {loaded.matmul_dtype}",
        "channels": n,
        "batch": size,
        "new_tokens": args.tokens,
        "reps": args.reps,
        "lora": f"rank {config.rank}, {'/'.join(config.targets)}, top {config.top_layers} layers "
                f"({len(lora_modules(loaded.model))} modules), init {setup.source}",
        "data_dir": str(data_dir),
    }

    path = data_dir / "heedful.db"
    results |= await write_store(path, loaded.model, config, n)

    # Channels for each phase, disjoint where a phase needs versions nobody looked up yet.
    order = list(range(n))
    random.Random(1).shuffle(order)
    take = iter(order)
    hot = [next(take) for _ in range(size)]
    cold = [next(take) for _ in range(size * (args.reps + 1))]
    rest = list(take)
    latency_pool = rest[: min(args.latency_samples, len(rest) // 3)]
    memory_pool = rest[len(latency_pool): len(latency_pool) + min(args.memory_versions, len(rest) // 3)]
    if len(rest) < size or not latency_pool or not memory_pool:
        raise SystemExit(f"--channels {n} is too few for batches of {size} and {args.reps} reps")

    store = Store(path)  # a fresh handle, as a restarted process: nothing about the channels in memory
    await store.open()
    serving = Serving(loaded, settings, store, config, setup.job, Foreground() if args.foreground else None)
    serving.worker.start()
    # Which forward pass the worker runs: the engine's own (direct_forward.py) or transformers'.
    results["forward"] = "direct" if getattr(serving.worker, "_direct", None) is not None else "transformers"
    compiled = serving.worker.compiled
    if compiled is not None:  # time the step the engine serves once it is ready, not while it compiles
        await asyncio.to_thread(compiled.wait)
    results["decode_step"] = compiled.state if compiled is not None else "eager"
    try:
        await serving.runner.batch([None] * size)  # first forward, not counted

        # Store -> device, one version at a time (nothing else running).
        total, read, decode = [], [], []
        for i in latency_pool:
            key = channel(i)
            t0 = time.perf_counter()
            entry = await serving.consolidator.lora_for(key)
            assert entry is not None
            serving.worker._make_resident(*entry)
            total.append(time.perf_counter() - t0)
        for i in memory_pool[: len(latency_pool)]:  # the parts apart, on other channels (then dropped)
            t0 = time.perf_counter()
            stored = await store.active_lora_version(channel(i))
            t1 = time.perf_counter()
            assert stored is not None and stored.weights is not None
            await asyncio.to_thread(weights_from_bytes, stored.weights)
            read.append(t1 - t0)
            decode.append(time.perf_counter() - t1)
        t0 = time.perf_counter()
        for _ in range(10):
            stack_weights(loaded.model, [serving.worker._resident[f"{channel(i)}@1"] for i in latency_pool[:size]])
        stack_ms = (time.perf_counter() - t0) / 10 * 1000
        results |= {
            "store_to_device_ms_p50": round(pct(total, 0.5) * 1000, 2),
            "store_to_device_ms_p99": round(pct(total, 0.99) * 1000, 2),
            "store_read_ms_p50": round(pct(read, 0.5) * 1000, 2),
            "decode_ms_p50": round(pct(decode, 0.5) * 1000, 2),
            f"stack_{size}_versions_ms": round(stack_ms, 2),
        }

        # Memory: versions held in the host LRU, then the same made resident on the device.
        for i in latency_pool:  # the latency phase's versions leave both caches first
            serving.consolidator.drop_cached(channel(i))
            serving.worker._resident.pop(f"{channel(i)}@1", None)
        before = rss()
        held = [await serving.consolidator.lora_for(channel(i)) for i in memory_pool]
        after_host = rss()
        for entry in held:
            assert entry is not None
            serving.worker._make_resident(*entry)
        after_device = rss()
        m = len(memory_pool)
        sample = held[-1]  # still resident: the device LRU keeps the most recent
        assert sample is not None
        shares = all(a is b for a, b in zip(sample[1].values(), serving.worker._resident[sample[0]].values(),
                                            strict=True))
        results |= {
            "version_bytes": weights_nbytes(sample[1]),
            "rss_per_host_cached_version": round((after_host - before) / m),
            "rss_per_device_resident_version": round((after_device - after_host) / min(m, settings.max_resident_loras)),
            "device_copy_shares_host_tensors": shares,
            "host_cache_full_mb": round(LoraSettings().cached_loras * (after_host - before) / m / 2**20),
        }
        del held, sample

        # Idle channel: its store bytes; in memory, the store's scope-id cache entry (bounded).
        results |= {
            "bytes_per_idle_channel": results["store_bytes_per_channel"],
            "scope_id_cache_bytes_per_entry": scope_id_entry_bytes(),
            "scope_id_cache_capacity": CACHED_CHANNEL_IDS,
        }

        # The Zipf stream warms the caches at their default sizes.
        zipf_pool = list(rest)
        random.Random(2).shuffle(zipf_pool)
        stream = zipf_stream(zipf_pool, args.zipf_s, seed=3)
        half = args.zipf_lookups // 2
        for j in tqdm(range(args.zipf_lookups), desc="zipf warm-up lookups", unit="lookup", mininterval=1.0):
            if j == half:
                serving.reset_counts()
            entry = await serving.lookup(channel(next(stream)))
            assert entry is not None
            serving.worker._make_resident(*entry)
        warm = (serving.lookups, serving.host_hits, serving.device_hits)
        results |= {
            "zipf_warmup_lookups": args.zipf_lookups,
            "zipf_warmup_host_hit_rate": round(warm[1] / max(1, warm[0]), 3),  # its second half
            "zipf_warmup_device_hit_rate": round(warm[2] / max(1, warm[0]), 3),
            "host_cache_entries": len(serving.consolidator._cache),
            "device_resident": serving.worker.resident_loras(),
        }

        def zipf_batch() -> list[ChannelKey | None]:
            chosen: dict[int, None] = {}
            while len(chosen) < size:
                chosen[next(stream)] = None
            return [channel(i) for i in chosen]

        cold_rounds = iter(cold[k: k + size] for k in range(0, len(cold), size))
        plans: dict[str, Callable[[], list[ChannelKey | None]]] = {
            "none": lambda: [None] * size,
            "hot": lambda: [channel(i) for i in hot],
            "cold": lambda: [channel(i) for i in next(cold_rounds)],
            "zipf": zipf_batch,
        }
        names = list(plans)
        rates: dict[str, list[float]] = {name: [] for name in names}
        hits: dict[str, list[int]] = {name: [0, 0, 0] for name in names}
        submit_ms: dict[str, list[float]] = {name: [] for name in names}
        prefills: dict[str, list[int]] = {name: [] for name in names}
        for name in names:  # warm-up round of each, not counted (hot: makes its 16 resident)
            await serving.batch(plans[name]())
        for rep in range(args.reps):
            for name in names[rep % len(names):] + names[: rep % len(names)]:
                keys = plans[name]()
                serving.reset_counts()
                count, seconds = await serving.batch(keys)
                assert count == size * args.tokens, count
                for k, v in enumerate((serving.lookups, serving.host_hits, serving.device_hits)):
                    hits[name][k] += v
                rates[name].append(count / seconds)
                submit_ms[name].append(serving.last_submit * 1000)
                prefills[name].append(serving.prefills)
                print(f"  rep {rep + 1} {name:5s} {count:4d} tokens in {seconds:6.2f} s = {count / seconds:6.1f} "
                      f"tok/s (host hits {serving.host_hits}/{serving.lookups}, device {serving.device_hits}; "
                      f"all submitted after {serving.last_submit * 1000:.1f} ms, {serving.prefills} prefills)",
                      file=sys.stderr)
        med = {name: statistics.median(v) for name, v in rates.items()}
        for name in names:
            results[f"tokens_per_s_{name}"] = round(med[name], 1)
        for name in names:
            results[f"{name}_all_submitted_ms"] = round(statistics.median(submit_ms[name]), 1)
            results[f"{name}_prefills"] = statistics.median(prefills[name])
        for name in names:
            results[f"tokens_per_s_{name}_best"] = round(max(rates[name]), 1)
        for name in names[1:]:
            results[f"ratio_{name}"] = round(med[name] / med["none"], 3)
            # The same ratio taken within each round (against that round's `none`), then the median:
            # less exposed to load from other work that comes and goes between rounds.
            results[f"ratio_{name}_paired"] = round(statistics.median(
                r / base for r, base in zip(rates[name], rates["none"], strict=True)), 3)
            results[f"ratio_{name}_best"] = round(max(rates[name]) / max(rates["none"]), 3)
            lookups, host, device = hits[name]
            results[f"{name}_host_hit_rate"] = round(host / max(1, lookups), 3)
            results[f"{name}_device_hit_rate"] = round(device / max(1, lookups), 3)
        results |= {
            "device_lru_capacity": settings.max_resident_loras,
            "host_cache_capacity": serving.lora.cached_loras,
            "rss_mb_end": round(rss() / 2**20),
        }
    finally:
        await serving.worker.stop()
        await store.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channels", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=16, help="concurrent requests, distinct versions per batch")
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per request")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                        help="decode through the compiled step where the engine would (default), or eagerly")
    parser.add_argument("--foreground", action=argparse.BooleanOptionalAction, default=True,
                        help="each row holds the worker's foreground from its lookup until its submit, as a turn does")
    parser.add_argument("--zipf-s", type=float, default=1.0, help="exponent of the channels' popularity")
    parser.add_argument("--zipf-lookups", type=int, default=20_000, help="lookups warming the caches")
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--memory-versions", type=int, default=1000, help="fresh versions held for the RSS figures")
    parser.add_argument("--dir", type=Path, default=None, help="where the temporary data directory goes")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    parser.add_argument("--models-dir", type=Path, default=Path(".cache/models"))
    parser.add_argument("--json", action="store_true", help="end with one JSON line of every figure")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="heedful-many-channels-", dir=args.dir))
    free = shutil.disk_usage(data_dir).free
    need = args.channels * 260_000
    if free < need * 1.2:
        raise SystemExit(f"{data_dir}: {free / 1e9:.1f} GB free, the store needs ~{need / 1e9:.1f} GB; use --dir")
    try:
        results = asyncio.run(bench(args, data_dir))
    finally:
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    print_result(results, args.json)


if __name__ == "__main__":
    main()
