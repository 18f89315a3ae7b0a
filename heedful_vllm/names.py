"""The name a channel's LoRA version has on a vLLM server: ``<platform>:<space>:<channel>@v<version>``.

Each part of the learning scope is percent-encoded (everything but ASCII letters, digits and
``_.-~``), so the name is one line of safe characters whatever a channel is called (no ``/``,
no ``@`` inside the scope) and parses back to exactly that scope. The version is in the name
because vLLM caches adapters by name: a new version is a new name, never a stale adapter.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import quote, unquote

__all__ = ["lora_name", "parse_lora_name", "directory_name"]

_VERSION = re.compile(r"[1-9][0-9]{0,17}")


def _part(text: str) -> str:
    return quote(text, safe="")


def lora_name(platform: str, space: str, channel: str, version: int) -> str:
    """The served name of ``version`` of the scope ``platform:space:channel``."""
    if version < 1:
        raise ValueError(f"LoRA versions start at 1, not {version}")
    return f"{_part(platform)}:{_part(space)}:{_part(channel)}@v{version}"


def parse_lora_name(name: str) -> tuple[str, str, str, int] | None:
    """``(platform, space, channel, version)`` of a name ``lora_name`` wrote; None for any other name
    (the base model's, another resolver's adapters, or a name not in the canonical form)."""
    scope, sep, version = name.rpartition("@v")
    if not sep or not _VERSION.fullmatch(version):
        return None
    parts = scope.split(":")
    if len(parts) != 3:
        return None
    try:
        decoded = [unquote(p, errors="strict") for p in parts]
    except UnicodeDecodeError:
        return None
    if [_part(d) for d in decoded] != parts:  # one name per version: no alternative spellings
        return None
    return decoded[0], decoded[1], decoded[2], int(version)


def directory_name(name: str) -> str:
    """A file name for ``name`` (a served name is one already, unless it is very long)."""
    if len(name) <= 200 and name not in (".", "..") and "/" not in name:
        return name
    return "h-" + hashlib.sha256(name.encode()).hexdigest()
