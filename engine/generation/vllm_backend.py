"""Generation by a vLLM server, with each channel's LoRA version (``model.backend = "vllm"``).

The ``openai`` backend (``openai_compat``: streaming chat completions, retries) plus per-channel
LoRA. The engine decides which LoRA version serves a turn exactly as with the local worker
(``Consolidator.lora_for``, ``lora.scope``); a turn with one is sent with ``model`` set to
that version's served name, ``<platform>:<space>:<channel>@v<version>``
(``heedful_vllm.names``: the version is in the name because vLLM caches adapters by name).
Before a name's first use the server must know it, by one of two ways (``model.lora_loading``):

- ``load``: this process writes the version in PEFT's format under ``model.lora_dir`` and asks
  the server to load it (``POST /v1/load_lora_adapter``; the server reads that directory at the
  same path). A server that restarted has forgotten it: its 404 makes this load it again.
- ``resolver``: nothing is sent ahead; the server's ``heedful_lora_resolver`` plugin
  (``heedful_vllm.resolver``) reads the version from the same store when it first sees the name.

LoRA training stays in this process (the local model and its worker thread); only replies come
from the server. ``repetition_penalty`` goes with each request (a vLLM extension of the API), so
sampling matches the local worker's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from pathlib import Path
from typing import Any

import httpx

from heedful_vllm.names import directory_name, lora_name

from ..contract import ChannelKey
from ..errors import GenerationError
from ..nn.lora import LoraConfig, LoraWeights
from ..settings import ModelSettings
from .openai_compat import OpenAICompatible, ServerAnswered

__all__ = ["VllmBackend", "served_lora_name"]

log = logging.getLogger(__name__)

Lora = tuple[str, LoraWeights]
"""What ``Consolidator.lora_for`` returns: ``("<scope>@<version>", weights)``."""


def served_lora_name(scope: ChannelKey, lora: Lora) -> str:
    """The name vLLM serves ``scope``'s LoRA version ``lora`` under."""
    return lora_name(scope.platform, scope.space, scope.channel, int(lora[0].rsplit("@", 1)[1]))


class VllmBackend(OpenAICompatible):
    """Streaming chat completions from a vLLM server, each channel's LoRA version by name."""

    def __init__(self, settings: ModelSettings, *, lora_dir: Path, lora_config: LoraConfig | None = None) -> None:
        super().__init__(settings)
        self.lora_dir = lora_dir
        self.lora_config = lora_config  # of the versions this process trains (needed to write them, 'load')
        self._loaded: set[str] = set()
        self._loading: dict[str, asyncio.Lock] = {}

    def _sampling(self) -> dict[str, Any]:
        return {**super()._sampling(), "repetition_penalty": self.settings.repetition_penalty}

    async def stream_lora(self, messages: Sequence[dict[str, str]], scope: ChannelKey, lora: Lora
                          ) -> AsyncGenerator[str, None]:
        """The reply to ``messages`` from ``scope``'s LoRA version ``lora``, as text deltas."""
        name = served_lora_name(scope.scope, lora)
        for attempt in range(2):
            if self.settings.lora_loading == "load":
                await self._ensure_loaded(name, lora)
            try:
                async with aclosing(self.stream(messages, model=name)) as deltas:
                    async for delta in deltas:
                        yield delta
                return
            except ServerAnswered as err:  # always before any text
                if err.status != 404:
                    raise
                if self.settings.lora_loading == "resolver":
                    raise self._failed(
                        f"the vLLM server does not know LoRA {name!r}: start it with VLLM_PLUGINS including "
                        "heedful_lora_resolver, VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and this store's "
                        "HEEDFUL_STORE_URL (docs/deploy.md, 'vLLM')") from None
                if attempt:
                    raise
                log.info("the vLLM server no longer has LoRA %s (restarted?): loading it again", name)
                self._loaded.discard(name)

    async def _ensure_loaded(self, name: str, lora: Lora) -> None:
        """Write ``lora`` under ``lora_dir`` and have the server load it, once per name."""
        if name in self._loaded:
            return
        lock = self._loading.setdefault(name, asyncio.Lock())
        async with lock:
            if name in self._loaded:
                return
            if self._client is None:
                raise GenerationError("the model server client is not running")
            if self.lora_config is None:
                raise self._failed(f"LoRA {name!r} cannot be written for the server: no LoRA configuration")
            directory = self.lora_dir / directory_name(name)
            if not (directory / "adapter_model.safetensors").is_file():
                await asyncio.to_thread(self._write, lora[1], directory)
            await self._load(name, directory)
            self._loaded.add(name)

    def _write(self, weights: LoraWeights, directory: Path) -> None:
        import shutil
        import tempfile

        from ..nn.peft_format import save_peft

        assert self.lora_config is not None
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=directory.parent))
        try:
            save_peft(weights, self.lora_config, staging, base_model=self.model)
            staging.chmod(0o755)  # the server may run as another user
            try:
                staging.rename(directory)  # atomic: the server never reads a half-written version
            except OSError:
                if not (directory / "adapter_model.safetensors").is_file():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    async def _load(self, name: str, directory: Path) -> None:
        assert self._client is not None
        body = {"lora_name": name, "lora_path": str(directory.resolve())}
        for attempt in range(self.settings.max_retries + 1):
            last = attempt == self.settings.max_retries
            try:
                response = await self._client.post("load_lora_adapter", json=body)
            except httpx.TransportError as err:
                if last:
                    raise self._failed(f"the vLLM server at {self.settings.base_url} is unreachable "
                                       f"({type(err).__name__}); try again shortly") from None
                await asyncio.sleep(self._backoff(attempt))
                continue
            if response.status_code < 300 or "already been loaded" in response.text:
                log.info("the vLLM server loaded LoRA %s from %s", name, directory)
                return
            if response.status_code >= 500 and not last:
                await asyncio.sleep(self._backoff(attempt))
                continue
            raise self._failed(f"the vLLM server could not load LoRA {name!r} ({response.status_code}: "
                               f"{response.text[:200]}); is it started with --enable-lora and "
                               "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, and does it read "
                               f"{self.lora_dir} at that path?")
