"""heedful's side of a vLLM server: each channel's LoRA version served by name.

- ``names``: how a channel's LoRA version is called on the server (``<scope>@v<version>``);
  the engine's ``vllm`` backend and the resolver agree on it.
- ``peft``: a LoRA version as heedful stores it (safetensors, its ``LoraConfig`` in the
  metadata) written as a PEFT directory, what vLLM loads.
- ``store``: one version's weights read from heedful's store (SQLite or PostgreSQL).
- ``exports``: the two together, with a cache directory (what the resolver calls).
- ``resolver``: the vLLM plugin (entry point group ``vllm.general_plugins``, name
  ``heedful_lora_resolver``): a ``LoRAResolver`` that vLLM asks for a model name it
  does not know. docs/deploy.md, "vLLM", says how to start a server with it.

It runs inside vLLM's own environment, which has none of heedful's dependencies: nothing
here imports heedful's engine, and everything but ``resolver`` (which imports vLLM) and
the PostgreSQL reader (asyncpg, imported when a ``postgresql://`` store is named) is the
standard library alone.
"""

from .names import lora_name, parse_lora_name

__all__ = ["lora_name", "parse_lora_name"]
