"""Served names to PEFT directories: parse the name, read the version from the store, write it once."""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from .names import directory_name, parse_lora_name
from .peft import write_peft
from .store import read_version, store_location

__all__ = ["LoraExports", "default_cache_dir"]

log = logging.getLogger(__name__)


def default_cache_dir(env: Mapping[str, str] = os.environ) -> Path:
    """``HEEDFUL_VLLM_LORA_CACHE_DIR``, else ``heedful-vllm-loras`` in the temporary directory."""
    return Path(env.get("HEEDFUL_VLLM_LORA_CACHE_DIR") or Path(tempfile.gettempdir()) / "heedful-vllm-loras")


class LoraExports:
    """PEFT directories of heedful's LoRA versions, written on first request under ``cache_dir``.

    A version's weights never change once stored, so a directory written once is served from
    then on (the name carries the version). Two requests for one name write it once.
    """

    def __init__(self, location: str | None = None, cache_dir: Path | None = None) -> None:
        self.location = location or store_location()
        self.cache_dir = cache_dir or default_cache_dir()
        self._locks: dict[str, asyncio.Lock] = {}

    async def path_for(self, name: str, *, base_model: str) -> Path | None:
        """The PEFT directory of the LoRA version called ``name``; None when ``name`` is not one of
        heedful's names or the store has no such version (another resolver may know it)."""
        parsed = parse_lora_name(name)
        if parsed is None:
            return None
        target = self.cache_dir / directory_name(name)
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            if (target / "adapter_model.safetensors").is_file():
                return target
            platform, space, channel, version = parsed
            blob = await read_version(self.location, platform, space, channel, version)
            if blob is None:
                log.info("heedful's store has no LoRA version %s", name)
                return None
            await asyncio.to_thread(write_peft, blob, target, base_model=base_model)
            log.info("exported heedful LoRA version %s to %s", name, target)
            return target
