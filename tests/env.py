"""The environment for a ``heedful`` process a test starts: none of the developer's ``HEEDFUL_*`` settings,
and the decode step left eager, as in the test process itself (``tests/conftest.py``): a compile costs
each process about a minute of CPU. A test that wants it passes ``HEEDFUL_MODEL_COMPILE_DECODE``."""

from __future__ import annotations

import os


def heedful_env(**settings: str) -> dict[str, str]:
    """``os.environ`` without ``HEEDFUL_*``, then ``HEEDFUL_MODEL_COMPILE_DECODE=false`` and ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEEDFUL_")}
    env["HEEDFUL_MODEL_COMPILE_DECODE"] = "false"
    env.update(settings)
    return env
