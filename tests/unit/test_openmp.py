"""The OpenMP team a thread's torch work starts is handed back (engine/nn/openmp.py)."""

from __future__ import annotations

import os
import threading

import pytest
import torch

from engine.nn import openmp

pytestmark = pytest.mark.skipif(
    not os.path.isdir("/proc/self/task") or openmp._pause() is None or torch.get_num_threads() < 2,
    reason="needs Linux, an OpenMP runtime with omp_pause_resource_all, and two CPU threads",
)


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _parallel_work() -> None:
    a = torch.randn(1500, 1500)
    (a @ a).sum()


def _in_thread(fn) -> list[int]:  # type: ignore[no-untyped-def]
    counts: list[int] = []
    t = threading.Thread(target=fn, args=(counts,))
    t.start()
    t.join()
    return counts


def test_a_threads_team_stays_until_released() -> None:
    def body(counts: list[int]) -> None:
        counts.append(_threads())
        _parallel_work()
        counts.append(_threads())
        openmp.release_team()
        counts.append(_threads())

    before, during, after = _in_thread(body)
    assert during > before  # the runtime started helper threads for this thread ...
    assert after == before  # ... and gave them back


def test_releasing_gives_the_team_back_however_the_work_ends() -> None:
    def failing() -> None:
        _parallel_work()
        raise ValueError("boom")

    def body(counts: list[int]) -> None:
        counts.append(_threads())
        openmp.releasing(_parallel_work)()
        counts.append(_threads())
        with pytest.raises(ValueError):
            openmp.releasing(failing)()
        counts.append(_threads())

    before, after_ok, after_error = _in_thread(body)
    assert after_ok == before and after_error == before


async def test_to_thread_returns_the_result_and_releases() -> None:
    before = _threads()
    assert await openmp.to_thread(lambda n: (_parallel_work(), n * 2)[1], 21) == 42
    # The executor's thread stays alive for reuse; its OpenMP helpers do not.
    assert _threads() <= before + 1
