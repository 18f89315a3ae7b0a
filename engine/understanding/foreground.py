"""Understanding first: CPU-heavy background work waits while a message is being understood.

A reply's first chunk waits for its message's embedding and the verifier's pass over the
candidates (``Matching.check``); a correction's effect waits for the same, after the
correction's own embedding. On a small machine those few milliseconds of encoder work share
the cores with the model worker's decode steps and a channel's encoder training, which each
take as many cores as there are: measured on two cores, an embedding took 7 ms alone and
20-30 ms beside a decode step (docs/BENCHMARKS.md, "Correction → effect, phase by phase").

Background threads that train (a channel's encoder) also run at the lowest CPU priority
(``lower_priority``): a step of theirs already running when a message arrives cannot be paused,
but the scheduler then gives the cores to the message's threads first.

So the encoder marks its calls as *foreground* while they are queued or running, and the
background's units of work (the next decode step or LoRA job step, the next step of a
channel's encoder training) start only once the foreground is idle — waiting at most a
bounded time, so a flood of messages slows decoding instead of stopping it. The model worker's
eager forward also waits between two of its layers (``ModelWorker._pause_between_layers``), so a
long step already running (a prefill) shares the cores with the message for one layer only; other
steps already running (a compiled decode step, a training step) are not interrupted.

A turn holds the foreground (``hold``) from its start until its request is with the model worker,
not only while its encoder calls run: the worker, once the foreground is idle, then finds every
turn that arrived together in its inbox and starts them in one prefill.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["Foreground", "Hold", "lower_priority"]

log = logging.getLogger(__name__)

_LOWEST = 19  # the largest nice value: runs when nothing else wants the core


class Foreground:
    """A count of foreground calls in flight, safe to read and wait on from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy = 0
        self._idle = threading.Event()
        self._idle.set()

    @contextmanager
    def busy(self) -> Iterator[None]:
        """Mark one foreground call in flight for the duration of the block."""
        hold = self.hold()
        try:
            yield
        finally:
            hold.release()

    def hold(self) -> Hold:
        """Mark one foreground call in flight until ``release()`` (for spans that are not one block:
        a turn is foreground until its request reaches the model worker)."""
        with self._lock:
            self._busy += 1
            self._idle.clear()
        return Hold(self)

    def _done(self) -> None:
        with self._lock:
            self._busy -= 1
            if not self._busy:
                self._idle.set()

    @property
    def idle(self) -> bool:
        """No foreground call is in flight."""
        return self._idle.is_set()

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until no foreground call is in flight, or ``timeout_s`` passed (then False).
        For background threads, between their units of work; never call it on the event loop."""
        if timeout_s <= 0:
            return self._idle.is_set()
        return self._idle.wait(timeout_s)


class Hold:
    """One foreground call in flight (``Foreground.hold``); ``release`` ends it, once."""

    def __init__(self, foreground: Foreground) -> None:
        self._foreground: Foreground | None = foreground

    def release(self) -> None:
        """End the call; later calls do nothing (safe from ``finally`` blocks on every path)."""
        foreground, self._foreground = self._foreground, None
        if foreground is not None:
            foreground._done()


def lower_priority() -> None:
    """Give the calling thread, and the CPU threads it will start (an OpenMP team inherits it), the
    lowest scheduling priority. Linux only (elsewhere the call could lower the whole process): a
    no-op there. A thread cannot raise its priority back without privileges, so call it only in a
    thread that does nothing but background work (an executor's ``initializer``)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _LOWEST)  # Linux: this thread alone
    except OSError as err:  # a sandbox that forbids it: background work keeps the default priority
        log.debug("could not lower a background thread's priority: %s", err)
