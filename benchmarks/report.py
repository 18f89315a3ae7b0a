"""How a benchmark script prints its result: a two-column table, then (``--json``) one JSON line last."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["print_result"]


def print_result(result: dict[str, Any], as_json: bool) -> None:
    """``key  value`` lines, keys aligned; with ``as_json`` the whole result as the last line of stdout."""
    width = max((len(k) for k in result), default=0)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    if as_json:
        print(json.dumps(result))
