"""The OpenMP team a thread's torch work starts is handed back (engine/nn/openmp.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.nn import openmp

pytestmark = pytest.mark.skipif(
    not os.path.isdir("/proc/self/task") or openmp._pause() is None or torch.get_num_threads() < 2,
    reason="needs Linux, an OpenMP runtime with omp_pause_resource_all, and two CPU threads",
)


# Run in a process of its own: in the test run's process, threads of earlier tests (a compile's worker
# pool, an executor) may start or end while these ones count, and did once.
ISOLATED = """
import json, os, threading
import torch
from engine.nn import openmp

def threads():
    return set(os.listdir("/proc/self/task"))

def work(seen):
    a = torch.randn(1500, 1500)
    (a @ a).sum()
    seen.append(threads())

def failing(seen):
    work(seen)
    raise ValueError("boom")

def body(seen):
    seen.append(threads())
    work(seen)                                  # the thread's team, kept ...
    openmp.release_team()                       # ... until released
    seen.append(threads())
    openmp.releasing(work)(seen)                # released after success
    seen.append(threads())
    try:
        openmp.releasing(failing)(seen)         # ... and after an error
    except ValueError:
        pass
    seen.append(threads())

seen = []
t = threading.Thread(target=body, args=(seen,))
t.start()
t.join()

import asyncio

def doubled(n):
    a = torch.randn(1500, 1500)
    (a @ a).sum()
    seen.extend([threads(), {str(threading.get_native_id())}])
    return n * 2

seen.append(threads())
result = asyncio.run(openmp.to_thread(doubled, 21))
seen.append(threads())
print(json.dumps({"result": result, "seen": [sorted(s) for s in seen]}))
"""


@pytest.fixture(scope="module")
def isolated() -> tuple[int, list[set[str]]]:
    done = subprocess.run([sys.executable, "-c", ISOLATED], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return out["result"], [set(s) for s in out["seen"]]


def test_a_threads_team_stays_until_released_however_the_work_ends(isolated: tuple[int, list[set[str]]]) -> None:
    before, during, released, during_ok, after_ok, during_error, after_error = isolated[1][:7]
    helpers = during - before
    assert helpers  # the runtime started helper threads for this thread ...
    assert not helpers & released  # ... kept them until release_team, then gave them back
    assert during_ok - before and during_error - before  # releasing(): helpers ran each time ...
    assert not (during_ok - before) & after_ok  # ... and were given back, after success
    assert not (during_error - before) & after_error  # ... and after an error


def test_to_thread_returns_the_result_and_releases(isolated: tuple[int, list[set[str]]]) -> None:
    result, seen = isolated
    before, during, executor, after = seen[7:]
    assert result == 42
    # The executor's thread stays alive for reuse; its OpenMP helpers do not.
    helpers = during - before - executor
    assert helpers and not helpers & after
