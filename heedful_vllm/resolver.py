"""The vLLM plugin: a ``LoRAResolver`` that serves heedful's channel LoRA versions by name.

vLLM loads it from the entry point ``heedful_lora_resolver`` in the ``vllm.general_plugins``
group (heedful's pyproject.toml) when ``VLLM_PLUGINS`` is unset or names it. With
``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``, a request for a model name the server does not
know goes to the registered resolvers; this one answers names of the form
``<platform>:<space>:<channel>@v<version>`` (``heedful_vllm.names``) by reading that version
from heedful's store (``HEEDFUL_STORE_URL``, or ``HEEDFUL_DATA_DIR``'s SQLite file), writing it
as a PEFT directory under ``HEEDFUL_VLLM_LORA_CACHE_DIR`` and returning the ``LoRARequest``.
"""

from __future__ import annotations

import logging
import os

from vllm.lora.request import LoRARequest
from vllm.lora.resolver import LoRAResolver, LoRAResolverRegistry

from .exports import LoraExports, default_cache_dir
from .store import is_postgres, store_location

__all__ = ["HeedfulLoraResolver", "register"]

log = logging.getLogger("vllm.heedful_lora_resolver")  # under vLLM's logger: its handler shows these lines

RESOLVER_NAME = "heedful"


class HeedfulLoraResolver(LoRAResolver):  # type: ignore[misc,unused-ignore]  # Any where vLLM is absent
    def __init__(self, exports: LoraExports) -> None:
        self.exports = exports

    async def resolve_lora(self, base_model_name: str, lora_name: str) -> LoRARequest | None:
        path = await self.exports.path_for(lora_name, base_model=base_model_name)
        if path is None:
            return None
        # vLLM replaces the id with its own counter when it loads a resolved adapter.
        return LoRARequest(lora_name=lora_name, lora_int_id=1, lora_path=str(path))


def register() -> None:
    """Register the resolver (vLLM calls this in each of its processes). It needs to know where
    heedful's store is: ``HEEDFUL_STORE_URL`` or ``HEEDFUL_DATA_DIR`` must be set."""
    if not (os.environ.get("HEEDFUL_STORE_URL") or os.environ.get("HEEDFUL_DATA_DIR")):
        log.warning("heedful_lora_resolver: neither HEEDFUL_STORE_URL nor HEEDFUL_DATA_DIR is set; "
                    "heedful's LoRA versions will not be served")
        return
    location = store_location()
    exports = LoraExports(location, default_cache_dir())
    LoRAResolverRegistry.register_resolver(RESOLVER_NAME, HeedfulLoraResolver(exports))
    where = "PostgreSQL" if is_postgres(location) else location
    log.info("heedful_lora_resolver: LoRA versions from heedful's store (%s), exported under %s",
             where, exports.cache_dir)
