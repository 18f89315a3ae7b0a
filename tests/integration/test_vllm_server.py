"""The real vLLM (its CPU build, from ``make vllm-venv``) on 127.0.0.1, serving the embedded SmolLM2.

- ``vllm`` backend, ``lora_loading = "resolver"``: the server's ``heedful_lora_resolver`` plugin reads
  a channel's LoRA version from heedful's store by name; its greedy reply is the local worker's with
  the same version (the first ``SAME_TOKENS`` tokens at least; all of them on the machine this was
  written on), and not the base model's.
- ``vllm`` backend, ``lora_loading = "load"``: the version written under ``model.lora_dir`` and loaded
  with ``POST /v1/load_lora_adapter``: the same.
- ``openai`` backend against the same server: a real OpenAI-compatible server; with no repetition
  penalty in that API, its reply is the local worker's without one.

Skipped without ``.vllm-venv`` (``make test`` does not build it: docs/deploy.md, "vLLM", says what
it costs). The server takes about 40 s to start on 2 cores and about 4.4 GB of memory.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from engine import ChannelKey, Engine, Turn
from engine.generation.model_loader import export_hf
from engine.nn.lora import random_weights, weights_to_bytes
from engine.settings import EMBEDDED_MODEL, EngineSettings
from heedful_vllm.names import lora_name
from tests.conftest import REPO, engine_settings

VLLM_VENV = REPO / ".vllm-venv"
SAME_TOKENS = 24
"""Greedy replies must agree on at least this many leading tokens (of NEW_TOKENS)."""
NEW_TOKENS = 32
QUESTION = "What should I pack for a weekend hiking trip?"

pytestmark = [
    pytest.mark.real_model,
    pytest.mark.skipif(not (VLLM_VENV / "bin" / "vllm").exists(),
                       reason="vLLM's CPU build is not installed: `make vllm-venv` (docs/deploy.md, 'vLLM')"),
]


@dataclass
class Served:
    base_url: str
    data_dir: Path
    models_dir: Path
    store: str
    log: Path
    local: dict[str, str] = field(default_factory=dict)  # channel -> the local worker's reply
    tokenizer: Any = None  # the local model's

    def settings(self, **model: object) -> EngineSettings:
        settings = engine_settings(self.data_dir, self.models_dir, EMBEDDED_MODEL, lora={"scope": "all"},
                                   max_new_tokens=NEW_TOKENS, matmul_dtype="float32", **model)
        assert str(settings.store_location) == self.store  # the store the server's resolver reads
        return settings


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _lora(engine: Engine, seed: int) -> bytes:
    """A LoRA version that changes the reply but keeps it fluent (B ~ N(0, 0.5²): the scale found by hand)."""
    assert engine._loaded is not None and engine.consolidator is not None
    generator = torch.Generator().manual_seed(seed)
    weights = random_weights(engine._loaded.model, generator)
    weights = {k: v if k.endswith("lora_A") else torch.randn(v.shape, generator=generator) * 0.5
               for k, v in weights.items()}
    return weights_to_bytes(weights, engine.consolidator.config)


async def _reply(engine: Engine, channel: str, thread: str) -> str:
    # Each run in its own thread: the same learning scope (LoRA version), its own history.
    return await engine.reply(Turn(ChannelKey("console", channel, thread=thread), QUESTION)).collect()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Served]:
    import asyncio

    root = tmp_path_factory.mktemp("vllm")
    hf = export_hf(engine_settings(root, models_dir, EMBEDDED_MODEL).model, root / "hf", models_dir)
    port = _free_port()
    served = Served(f"http://127.0.0.1:{port}/v1", root / "data", models_dir, "", root / "vllm.log")
    served.store = str(engine_settings(served.data_dir, models_dir).store_location)

    async def local_replies() -> None:
        async with Engine(served.settings()) as engine:  # the local worker
            for channel, seed in (("resolved", 5), ("loaded", 6)):
                await engine.store.add_lora_version(ChannelKey("console", channel), _lora(engine, seed), {}, "active")
            for channel in ("resolved", "loaded", "base"):
                served.local[channel] = await _reply(engine, channel, "local")
            assert engine._loaded is not None
            served.tokenizer = engine._loaded.tokenizer
        async with Engine(served.settings(repetition_penalty=1.0)) as engine:
            served.local["base, no repetition penalty"] = await _reply(engine, "plain", "local")

    asyncio.run(local_replies())
    env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "VLLM_PLUGINS": "heedful_lora_resolver",
           "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "HEEDFUL_STORE_URL": served.store,
           "HEEDFUL_VLLM_LORA_CACHE_DIR": str(root / "resolver-cache")}
    # `vllm serve` itself fails in vllm-cpu 0.32.0 (it asks for the version of a package called "vllm");
    # the same server started as a module does not.
    command = [str(VLLM_VENV / "bin" / "python"), "-m", "vllm.entrypoints.launchers.api_server.entry",
               "--model", str(hf), "--served-model-name", EMBEDDED_MODEL, "--host", "127.0.0.1", "--port", str(port),
               "--dtype", "float32", "--max-model-len", "2048", "--enable-lora", "--max-lora-rank", "16",
               "--max-loras", "4"]
    with served.log.open("wb") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while True:
            if server.poll() is not None:
                pytest.fail(f"vLLM exited ({server.returncode}):\n{served.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM did not start in 300 s:\n{served.log.read_text()[-3000:]}")
            time.sleep(1)
        yield served
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and the engine processes it started
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def _same_start(served: Served, ours: str, theirs: str) -> None:
    a, b = (served.tokenizer.encode(t, add_special_tokens=False) for t in (ours, theirs))
    assert len(a) >= SAME_TOKENS and a[:SAME_TOKENS] == b[:SAME_TOKENS], (ours, theirs)


async def test_the_resolver_serves_a_lora_version_as_the_local_worker_does(served: Served) -> None:
    async with Engine(served.settings(backend="vllm", base_url=served.base_url, lora_loading="resolver")) as engine:
        reply = engine.reply(Turn(ChannelKey("console", "resolved", thread="vllm"), QUESTION))
        lora = await reply.collect()
        base = await _reply(engine, "base", "vllm")
        _same_start(served, served.local["resolved"], lora)
        _same_start(served, served.local["base"], base)
        assert lora != base and served.local["resolved"] != served.local["base"]  # the version matters
        assert reply.explanation is not None and reply.explanation.lora_version == "1"
        assert f"served by vLLM as '{lora_name('console', '', 'resolved', 1)}'" in reply.explanation.summary()
    assert "Resolved and loaded LoRA adapter 'console::resolved@v1' using HeedfulLoraResolver" in served.log.read_text()


async def test_a_version_loaded_through_the_api_serves_as_the_local_worker_does(
    served: Served, tmp_path: Path
) -> None:
    settings = served.settings(backend="vllm", base_url=served.base_url, lora_loading="load",
                               lora_dir=tmp_path / "exports")
    async with Engine(settings) as engine:
        lora = await _reply(engine, "loaded", "vllm")
        _same_start(served, served.local["loaded"], lora)
        assert lora != served.local["base"]
    assert (tmp_path / "exports" / "console::loaded@v1" / "adapter_model.safetensors").is_file()
    assert "Resolved and loaded LoRA adapter 'console::loaded@v1'" not in served.log.read_text()


async def test_the_openai_backend_streams_from_the_real_server(served: Served) -> None:
    settings = served.settings(backend="openai", base_url=served.base_url)
    async with Engine(settings) as engine:
        reply = engine.reply(Turn(ChannelKey("console", "plain", thread="openai"), QUESTION))
        chunks = [chunk async for chunk in reply]
        assert len(chunks) > 3 and reply.explanation is not None
        assert reply.explanation.model == EMBEDDED_MODEL and reply.explanation.lora_version is None
        assert any("LoRA is off with the openai backend" in n for n in reply.explanation.notes)
        _same_start(served, served.local["base, no repetition penalty"], "".join(chunks))
