"""Platform-independent parts every chat adapter needs, written once.

- ``split_message``: cut a long reply into platform-sized messages without breaking
  a word or a fenced code block.
- ``ReplyStreamer``: post a reply as it is generated: send once, then edit at most
  every ``interval`` seconds, skip edits that change nothing, continue in a new
  message at the length limit, and make sure the final text lands even after rate
  limits (``RateLimited`` carries the wait), waiting at most a ``WaitBudget`` in all;
  when it cannot, ``give_up`` ends the reply with a short notice instead. Or, with a
  ``preview`` (Telegram's drafts), show the unfinished part as a draft and send each
  message once, complete.
- ``AppendStreamer``: the same for platforms that stream natively (a message that
  grows as text is appended: Slack's ``chat.startStream``); it hands over to a
  ``ReplyStreamer`` when the platform refuses to start a stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from prometheus_client import Counter

__all__ = [
    "AppendCalls",
    "AppendStreamer",
    "EditFn",
    "PreviewFn",
    "RateLimited",
    "ReplyStreamer",
    "SendFn",
    "StreamResult",
    "StreamingUnavailable",
    "WaitBudget",
    "decoupled",
    "open_fence",
    "retry_rate_limited",
    "split_message",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

_FENCE = "```"


RATE_LIMITED = Counter("heedful_platform_rate_limited", "Platform calls answered 'slow down' (HTTP 429 and the like)")


class RateLimited(Exception):
    """Raised by an adapter's send/edit when the platform says "slow down" (counted for ``/metrics``)."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limited; retry after {retry_after:.1f} s")
        self.retry_after = max(0.0, float(retry_after))
        RATE_LIMITED.inc()


class StreamingUnavailable(Exception):
    """Raised by an ``AppendCalls.start`` when the platform will not stream here at all
    (an older workspace, a missing scope, a conversation type it does not support)."""


class WaitBudget:
    """How long one piece of work (a reply, a notice) may still wait on rate limits, in all.

    ``take(wanted)`` says how long to wait for a limit that asks ``wanted`` seconds: cut
    to what is left, and None once nothing is left (then the caller gives up). A platform
    may ask for an hour; no reply waits longer than its budget.
    """

    def __init__(self, seconds: float = float("inf")) -> None:
        self.left = max(0.0, float(seconds))
        self.waited = 0.0

    def take(self, wanted: float) -> float | None:
        if self.left <= 0.0:
            return None
        wait = min(max(0.0, wanted), self.left)
        self.left -= wait
        self.waited += wait
        return wait


async def retry_rate_limited(call: Callable[[], Awaitable[T]], *, max_retries: int,
                             on_limited: Callable[[RateLimited], None] | None = None, what: str = "",
                             budget: WaitBudget | None = None) -> T:
    """Await ``call()`` until it is not rate limited, sleeping as long as each ``RateLimited``
    asks (cut to what is left of ``budget``); after ``max_retries`` retries, or once the
    budget is spent, the last one is raised (logged as giving up on ``what``, when named).
    ``on_limited`` sees every one, and may raise to stop at once."""
    budget = budget or WaitBudget()
    for attempt in range(1, max_retries + 2):
        try:
            return await call()
        except RateLimited as limited:
            if on_limited is not None:
                on_limited(limited)
            wait = budget.take(limited.retry_after) if attempt <= max_retries else None
            if wait is None:
                if what:
                    log.warning("giving up on %s after %d rate-limited attempts (%.1f s waited)", what, attempt,
                                budget.waited)
                raise
            await asyncio.sleep(wait)
    raise AssertionError("unreachable")


async def decoupled(chunks: AsyncIterable[str]) -> AsyncGenerator[str, None]:
    """``chunks`` read in a task of their own, as fast as they come, and handed on joined.

    The engine holds its channel lock while it generates; reading its reply here means a
    platform that makes the reader wait (a rate limit) never makes the engine wait, so the
    lock is held only as long as the generation takes. What arrives while the reader is
    away comes as one chunk. An error of ``chunks`` is raised here, after the text before
    it; leaving early cancels the reading (which stops the generation).
    """
    pending: list[str] = []
    ready = asyncio.Event()
    finished = False
    failure: BaseException | None = None

    async def pump() -> None:
        nonlocal finished, failure
        try:
            async for chunk in chunks:
                pending.append(chunk)
                ready.set()
        except Exception as err:
            failure = err
        finally:
            finished = True
            ready.set()

    reader = asyncio.create_task(pump())
    try:
        while True:
            while not pending and not finished:
                ready.clear()
                await ready.wait()
            if pending:
                text = "".join(pending)
                pending.clear()
                yield text
            elif finished:
                if failure is not None:
                    raise failure
                return
    finally:
        if not reader.done():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


def split_message(text: str, limit: int) -> list[str]:
    """Split ``text`` into parts of at most ``limit`` characters.

    Cuts prefer a paragraph break, then a line break, then a space; a word is cut
    only when it alone exceeds the limit. A fenced code block that spans a cut is
    closed at the end of one part and reopened (with its language tag) at the start
    of the next, so every part renders on its own. Joining the parts gives back the
    text, up to those added fences and the whitespace at the cuts.
    """
    if limit < 16:
        raise ValueError("limit too small to split sensibly")
    parts: list[str] = []
    rest = text
    reopen = ""  # the fence line to reopen with, when a code block spans the cut
    while rest:
        rest, reopen = reopen + rest, ""
        if len(rest) <= limit:
            parts.append(rest)
            break
        budget = limit - len(_FENCE) - 1  # room to close a fence at the cut
        cut = _best_cut(rest, budget)
        head, rest = rest[:cut].rstrip(), rest[cut:].lstrip(" \n")
        fence_open = open_fence(head)
        if fence_open is not None:
            head += "\n" + _FENCE
            # A fence line too long to repeat is not worth reopening (and could never fit).
            reopen = fence_open + "\n" if len(fence_open) < limit // 4 else ""
        parts.append(head)
    return [p for p in parts if p.strip()]


def _best_cut(text: str, budget: int) -> int:
    window = text[: budget + 1]
    for separator in ("\n\n", "\n", " "):
        at = window.rfind(separator)
        if at > budget // 3:
            return at
    cut = budget
    while cut > 1 and text[cut - 1] == "`" and text[cut] == "`":
        cut -= 1  # never split a fence's backticks
    return cut


def open_fence(text: str) -> str | None:
    """The opening fence line (e.g. ```python) if ``text`` ends inside a code block."""
    opened: str | None = None
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped.startswith(_FENCE):
            opened = None if opened is not None else stripped
    return opened


@dataclass
class StreamResult:
    """What a finished stream left on the platform."""

    message_ids: list[str] = field(default_factory=list)
    text: str = ""
    edits: int = 0
    retries: int = 0


SendFn = Callable[[str], Awaitable[str]]  # text -> new platform message id
EditFn = Callable[[str, str], Awaitable[None]]  # (message id, text)
PreviewFn = Callable[[str], Awaitable[bool]]  # text -> shown (False: stop previewing this reply)


class ReplyStreamer:
    """Streams one reply into one or more platform messages.

    ``send``/``edit`` are the adapter's platform calls; they raise ``RateLimited``
    when told to wait. Intermediate edits are best-effort (a rate-limited one is
    simply skipped); the final text of every message is retried until it lands, or
    ``max_retries`` is exhausted, or the reply has waited its ``budget`` (then
    ``RateLimited`` is raised, and ``give_up`` ends the reply with a notice).
    ``on_message`` is awaited with each new message id (adapters link it to the
    engine's reply there).

    With ``preview``, the unfinished end of the reply is shown through it (an
    ephemeral draft) instead of being sent and edited: every message is sent once,
    when its text is complete. When ``preview`` returns False, this reply goes on
    without previews.
    """

    def __init__(
        self,
        send: SendFn,
        edit: EditFn,
        *,
        limit: int,
        interval: float = 1.0,
        placeholder: str = "…",
        max_retries: int = 30,
        on_message: Callable[[str], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        preview: PreviewFn | None = None,
        budget: WaitBudget | None = None,
    ) -> None:
        self.send, self.edit, self.preview = send, edit, preview
        self.limit, self.interval = limit, interval
        self.placeholder, self.max_retries = placeholder, max_retries
        self.budget = budget or WaitBudget()
        self.on_message = on_message
        self.clock = clock
        self.result = StreamResult()
        self.previewing = preview is not None
        self._shown: list[str] = []  # text currently visible in each message
        self._last_edit: float | None = None  # None: nothing shown yet
        self._blocked_until = 0.0

    async def stream(self, chunks: AsyncIterable[str]) -> StreamResult:
        """Consume ``chunks`` and leave the full text on the platform."""
        text = ""
        async for chunk in chunks:
            text += chunk
            now = self.clock()
            if self._last_edit is None or (now - self._last_edit >= self.interval and now >= self._blocked_until):
                await self._show(text, final=False)
        await self._show(text, final=True)
        self.result.text = text
        return self.result

    def _unfinished(self, part: str) -> str:
        """Until the reply is done, its last part keeps a marker that more is coming."""
        return part + " " + self.placeholder if len(part) + 2 <= self.limit else part

    async def _show(self, text: str, *, final: bool) -> None:
        if self.preview is not None and not final:
            await self._preview(text)
            return
        parts = split_message(text, self.limit) if text.strip() else [self.placeholder]
        if not final:
            parts[-1] = self._unfinished(parts[-1])
        for index, part in enumerate(parts):
            if index < len(self._shown) and self._shown[index] == part:
                continue  # a no-op edit is an error on some platforms and wasted quota on all
            done = await self._deliver(index, part, final=final or index < len(parts) - 1)
            if not done:
                return
        self._last_edit = self.clock()

    async def _preview(self, text: str) -> None:
        assert self.preview is not None
        parts = split_message(text, self.limit) if text.strip() else []
        for index in range(len(self._shown), len(parts) - 1):  # complete now: sent once, never edited
            await self._deliver(index, parts[index], final=True)
        if parts and self.previewing:
            self.previewing = await self.preview(self._unfinished(parts[-1]))
        self._last_edit = self.clock()

    async def _deliver(self, index: int, part: str, *, final: bool) -> bool:
        attempts = 0
        while True:
            try:
                if index < len(self._shown):
                    await self.edit(self.result.message_ids[index], part)
                    self.result.edits += 1
                else:
                    message_id = await self.send(part)
                    self.result.message_ids.append(message_id)
                    self._shown.append(part)
                    if self.on_message is not None:
                        await self.on_message(message_id)
                self._shown[index] = part
                return True
            except RateLimited as limited:
                self._blocked_until = self.clock() + limited.retry_after
                if not final and index < len(self._shown):
                    return False  # skip this intermediate edit; a later one carries the text
                attempts += 1
                self.result.retries += 1
                wait = self.budget.take(limited.retry_after) if attempts <= self.max_retries else None
                if wait is None:
                    log.warning("giving up on a message after %d rate-limited attempts (%.1f s waited)", attempts,
                                self.budget.waited)
                    raise
                await asyncio.sleep(wait)

    async def give_up(self, notice: str, send: SendFn | None = None) -> bool:
        """End a reply whose text could not land with ``notice``: appended to its last message
        (whatever it shows, the unfinished marker dropped), else in a message of its own (sent
        with ``send``, default the streamer's). A few quick tries; True when it landed."""
        send = send or self.send
        tries: list[Callable[[], Awaitable[None]]] = []
        if self._shown:
            index = len(self._shown) - 1
            shown = self._shown[index].removesuffix(" " + self.placeholder).rstrip()
            text = _with_notice(shown, notice, self.limit)
            message_id = self.result.message_ids[index]

            async def amend() -> None:
                await self.edit(message_id, text)
                self._shown[index] = text

            tries.append(amend)

        async def announce() -> None:
            self.result.message_ids.append(await send(notice))

        tries.append(announce)
        return await _notify(tries)


def _with_notice(shown: str, notice: str, limit: int) -> str:
    """``shown`` with ``notice`` after it, ``shown`` cut (and any code block closed) to fit ``limit``."""
    room = limit - len(notice) - len(_FENCE) - 4
    if len(shown) > room:
        shown = shown[: max(room - 1, 0)].rstrip() + "…"
    if open_fence(shown) is not None:
        shown += "\n" + _FENCE
    return f"{shown}\n\n{notice}" if shown.strip() else notice


NOTICE_TRIES = 10
NOTICE_WAIT = 3.0
"""A failure notice gets ``NOTICE_TRIES`` quick tries (half a second apart at most) and waits at
most ``NOTICE_WAIT`` seconds in all: it is short, and the reader is owed it."""


async def _notify(tries: list[Callable[[], Awaitable[None]]]) -> bool:
    """Try each way of showing a notice in turn, cycling, within ``NOTICE_TRIES`` and ``NOTICE_WAIT``."""
    budget = WaitBudget(NOTICE_WAIT)
    for attempt in range(NOTICE_TRIES):
        try:
            await tries[attempt % len(tries)]()
            return True
        except RateLimited as limited:
            wait = budget.take(min(limited.retry_after, 0.5))
            if wait is None:
                break
            await asyncio.sleep(wait)
    log.warning("could not even post a notice that a reply failed")
    return False


@dataclass(frozen=True)
class AppendCalls:
    """A platform's native streaming: ``start(text) -> message id`` opens a message that
    grows, ``append(id, text)`` adds to it, ``stop(id, text)`` ends it (``text`` may be
    empty). They raise ``RateLimited`` to be retried, ``start`` ``StreamingUnavailable``
    when the platform will not stream."""

    start: Callable[[str], Awaitable[str]]
    append: Callable[[str, str], Awaitable[None]]
    stop: Callable[[str, str], Awaitable[None]]


class AppendStreamer:
    """Streams one reply into natively streamed messages.

    Text goes out in whole words, at most every ``interval`` seconds (a rate-limited
    append is skipped: the next one carries its words). A message stays within
    ``limit`` characters: when the next words would pass it, that stream is stopped
    there (a code block open at the cut is closed, and reopened in the next message)
    and the reply goes on in a new stream. When the first ``start`` raises
    ``StreamingUnavailable``, nothing has been shown yet, and the whole reply goes
    through ``fallback`` instead (``ReplyStreamer``: post, then edit).
    """

    def __init__(
        self,
        calls: AppendCalls,
        *,
        limit: int,
        interval: float = 1.0,
        fallback: ReplyStreamer | None = None,
        placeholder: str = "…",
        max_retries: int = 30,
        on_message: Callable[[str], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        budget: WaitBudget | None = None,
    ) -> None:
        self.calls, self.limit, self.interval, self.fallback = calls, limit, interval, fallback
        self.placeholder, self.max_retries, self.on_message, self.clock = placeholder, max_retries, on_message, clock
        self.budget = budget or WaitBudget()
        self.result = StreamResult()
        self.unavailable: str | None = None  # why streaming was refused, when it was
        self._open: str | None = None  # the message being streamed into
        self._base = 0                 # where in the reply the current message begins
        self._sent = 0                 # how much of the reply has been streamed
        self._prefix = ""              # a fence reopened at the top of the current message
        self._last = 0.0
        self._blocked_until = 0.0

    async def stream(self, chunks: AsyncIterable[str]) -> StreamResult:
        """Consume ``chunks`` and leave the full text on the platform."""
        text = ""
        iterator = aiter(chunks)
        try:
            async for chunk in iterator:
                text += chunk
                now = self.clock()
                if self._open is None or (now - self._last >= self.interval and now >= self._blocked_until):
                    await self._flush(text, final=False)
            await self._flush(text, final=True)
        except StreamingUnavailable as refused:
            if self.fallback is None or self.result.message_ids:
                raise
            self.unavailable = str(refused)
            self.result = await self.fallback.stream(_resume(text, iterator))
            return self.result
        finally:
            if self._open is not None:  # an error mid-reply: end the stream, keep what it shows
                with contextlib.suppress(Exception):
                    await self.calls.stop(self._open, "")
                self._open = None
        self.result.text = text
        return self.result

    async def _flush(self, text: str, *, final: bool) -> None:
        target = len(text) if final else max(text.rfind(" "), text.rfind("\n")) + 1  # whole words only
        if self._open is None and not text[self._sent:target].strip():
            target = self._sent  # a message never opens with blanks alone
        while target > self._sent:
            if self._open is None and self._sent == self._base:  # nor with blanks in front
                self._base = self._sent = min(target, len(text) - len(text[self._sent:].lstrip(" \n")))
                if self._sent >= target:
                    break
            shown = len(self._prefix) + self._sent - self._base
            room = self.limit - len(_FENCE) - 1 - shown  # keep room to close a fence
            fresh = text[self._sent:target]
            if len(fresh) > room:
                window = fresh[:max(room, 0) + 1]
                cut = max(window.rfind(" "), window.rfind("\n"))  # the last whole word that fits
                if cut <= 0 and self._sent == self._base:
                    cut = _best_cut(fresh, max(room, 1))  # one word longer than a message: cut it
                if cut > 0 and not await self._deliver(fresh[:cut], final=True):
                    return
                self._sent += max(cut, 0)
                await self._next_message(text)
                continue
            if not await self._deliver(fresh, final=final):
                return
            self._sent = target
        if final:
            if self._open is None and not self.result.message_ids:
                await self._deliver(self.placeholder, final=True)
            if self._open is not None:
                await self._retrying(lambda: self.calls.stop(self._open or "", ""))
                self._open = None

    async def _next_message(self, text: str) -> None:
        """Stop the current stream at the cut; the next words open a new one."""
        body = self._prefix + text[self._base:self._sent]
        fence = open_fence(body)
        if self._open is not None:
            opened = self._open
            await self._retrying(lambda: self.calls.stop(opened, "\n" + _FENCE if fence else ""))
            self._open = None
        while self._sent < len(text) and text[self._sent] in " \n":
            self._sent += 1
        self._base = self._sent
        self._prefix = fence + "\n" if fence and len(fence) < self.limit // 4 else ""

    async def _deliver(self, piece: str, *, final: bool) -> bool:
        """Append ``piece`` (opening the message first if needed); False when skipped for a rate limit."""
        if self._open is None:
            opened = await self._retrying(lambda: self.calls.start(self._prefix + piece))
            self._open = opened
            self.result.message_ids.append(opened)
            if self.on_message is not None:
                await self.on_message(opened)
        else:
            opened = self._open
            try:
                await self._retrying(lambda: self.calls.append(opened, piece), skip=not final)
            except _Skipped:
                return False
            self.result.edits += 1
        self._last = self.clock()
        return True

    async def _retrying(self, call: Callable[[], Awaitable[T]], *, skip: bool = False) -> T:
        def limited(wait: RateLimited) -> None:
            self._blocked_until = self.clock() + wait.retry_after
            if skip:
                raise _Skipped
            self.result.retries += 1

        return await retry_rate_limited(call, max_retries=self.max_retries, on_limited=limited,
                                        what="a streamed message", budget=self.budget)

    async def give_up(self, notice: str, send: SendFn) -> bool:
        """End a reply whose text could not land with ``notice``, in a message of its own (``send``):
        the stream it was in is stopped already. True when it landed."""
        if self.fallback is not None and self.unavailable is not None:
            return await self.fallback.give_up(notice, send)

        async def announce() -> None:
            self.result.message_ids.append(await send(notice))

        return await _notify([announce])


class _Skipped(Exception):
    """An intermediate append was rate limited; a later one carries its text."""


async def _resume(seen: str, rest: AsyncIterator[str]) -> AsyncIterator[str]:
    """The chunks of a reply again: what was already read, then the rest."""
    if seen:
        yield seen
    async for chunk in rest:
        yield chunk
