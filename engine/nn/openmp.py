"""One OpenMP team at a time: the model worker keeps its CPU threads, every other thread gives its back.

torch's CPU kernels run on an OpenMP runtime (libgomp in the Linux wheels) that gives each
thread which runs a parallel kernel a team of helper threads of its own, kept until that
thread exits. When the process holds more such threads than it has cores, libgomp stops
letting waiting helpers spin (its "throttled" spin count, which no setting raises), so each
of the ~120 matrix products of a decode step pays a thread wake-up. The engine has several
threads that touch torch: the model worker, the encoder's, and the short jobs it hands to
``asyncio.to_thread`` (loading, conversion, training a channel's encoder). One loaded model
left a helper thread behind in the default executor, and a SmolLM2 decode step took 37-44 ms
instead of 24 ms (docs/BENCHMARKS.md, "One OpenMP team").

So the model worker's thread keeps its team (except while it waits for a message being
understood: ``understanding/foreground.py``), and every other thread hands its team back
when its piece of work is done (``omp_pause_resource_all``, OpenMP 5.0): rebuilding a team
costs well under a millisecond, against an encoder call of 5 ms. Where the runtime lacks
the call (another OpenMP, a build without one) nothing happens and only speed differs.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import glob
import logging
import os
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

__all__ = ["release_team", "releasing", "to_thread"]

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

_OMP_PAUSE_SOFT = 1  # omp_pause_soft: free the threads, keep the runtime usable


@functools.cache
def _pause() -> Callable[[int], int] | None:
    """``omp_pause_resource_all`` of the OpenMP runtime torch loaded, if it has one."""
    import torch  # the runtime is the one shipped beside torch's libraries

    folder = os.path.join(os.path.dirname(torch.__file__), "lib")
    for pattern in ("libgomp*.so*", "libiomp5*", "libomp*"):
        for path in sorted(glob.glob(os.path.join(folder, pattern))):
            try:
                fn = ctypes.CDLL(path).omp_pause_resource_all
            except (OSError, AttributeError):
                continue
            fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
            return fn
    log.debug("no omp_pause_resource_all beside torch: side threads keep their OpenMP teams")
    return None


def release_team() -> None:
    """Free the calling thread's OpenMP helper threads (a no-op when it has none)."""
    pause = _pause()
    if pause is not None:
        pause(_OMP_PAUSE_SOFT)


def releasing(fn: Callable[P, T]) -> Callable[P, T]:
    """``fn``, then ``release_team()`` in the same thread, however ``fn`` ends."""

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        finally:
            release_team()

    return run


async def to_thread(fn: Callable[..., T], *args: Any) -> T:
    """``asyncio.to_thread`` for torch work: the executor's thread gives its OpenMP team back afterwards."""
    return await asyncio.to_thread(releasing(fn), *args)
