"""What every training or benchmark run shares with its caller: progress bars, a log, its error.

The runs (``metric_run``, ``lora_run``, ``lora_bench``, ``intents_run``, ``corrections_run``)
never write to a terminal themselves. A caller passes a ``Bars`` factory and a ``Log``: the
CLI passes ``stderr_bars`` and ``stderr_log`` (so that stdout keeps only the result), a
library caller or a test the silent defaults. A problem with the caller's inputs (a missing
file, an unknown domain, too little data) is a ``RunError``, whose message is meant for
the person who typed the command; anything else is a bug and propagates as it is.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol

__all__ = ["Bar", "Bars", "Log", "RunError", "silent_bars", "silent_log", "stderr_bars", "stderr_log"]


class RunError(Exception):
    """The run cannot go on with these inputs; the message says why, naming the option at fault."""


class Bar(Protocol):
    """The part of a ``tqdm`` bar that the runs use."""

    def update(self, n: int = 1) -> None: ...

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> object: ...

    def close(self) -> object: ...

    def __enter__(self) -> Bar: ...

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> object: ...


class Bars(Protocol):
    """Opens a progress bar of ``total`` units named ``desc``."""

    def __call__(self, *, total: int, desc: str, unit: str = "it", leave: bool = True,
                 mininterval: float = 0.1) -> Bar: ...


Log = Callable[[str], None]
"""One line of news about a run (what it is doing now, what it found)."""


class _SilentBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _SilentBar:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        pass


def silent_bars(*, total: int, desc: str, unit: str = "it", leave: bool = True, mininterval: float = 0.1) -> Bar:
    """Bars that show nothing."""
    return _SilentBar()


def stderr_bars(*, total: int, desc: str, unit: str = "it", leave: bool = True, mininterval: float = 0.1) -> Bar:
    """``tqdm`` bars on stderr."""
    from tqdm import tqdm

    bar: Bar = tqdm(total=total, desc=desc, unit=unit, leave=leave, mininterval=mininterval, file=sys.stderr)
    return bar


def silent_log(message: str) -> None:
    """A log that keeps nothing."""


def stderr_log(message: str) -> None:
    """A log on stderr, flushed at once (runs take minutes; the news should not wait)."""
    print(message, file=sys.stderr, flush=True)
