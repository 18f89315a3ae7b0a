"""The shared reply streamer and splitter, driven through in-memory platform calls."""

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.streaming import (
    AppendCalls,
    AppendStreamer,
    RateLimited,
    ReplyStreamer,
    StreamingUnavailable,
    WaitBudget,
    decoupled,
    retry_rate_limited,
    split_message,
)


@settings(max_examples=300)
@given(st.lists(st.sampled_from(["ab", "cd ", "\n", "\n```\n", "\n\n", "wordwordword "]), max_size=300).map("".join),
       st.integers(16, 300))
def test_split_respects_limit_keeps_content_and_closes_fences(text: str, limit: int) -> None:
    parts = split_message(text, limit)
    assert all(len(p) <= limit for p in parts)
    squash = lambda s: "".join(s.replace("```", "").split())  # noqa: E731
    assert squash("".join(parts)) == squash(text)
    assert all(p.count("```") % 2 == 0 for p in parts[:-1])


def test_split_never_cuts_a_word_that_fits() -> None:
    text = " ".join(f"word{i}" for i in range(2000))
    parts = split_message(text, 4096)
    assert " ".join(parts).split() == text.split()


class Platform:
    """Messages as a platform would keep them; ``limited`` 429s the next N calls."""

    def __init__(self) -> None:
        self.messages: dict[str, str] = {}
        self.limited = 0
        self.calls = 0

    async def send(self, text: str) -> str:
        self._maybe_limit()
        mid = str(len(self.messages) + 1)
        self.messages[mid] = text
        return mid

    async def edit(self, mid: str, text: str) -> None:
        self._maybe_limit()
        assert self.messages[mid] != text, "no-op edit reached the platform"
        self.messages[mid] = text

    def _maybe_limit(self) -> None:
        self.calls += 1
        if self.limited:
            self.limited -= 1
            raise RateLimited(0.0)


async def chunks(text: str, size: int = 7) -> AsyncIterator[str]:
    for i in range(0, len(text), size):
        yield text[i : i + size]


async def test_final_text_lands_after_rate_limits_and_long_text_splits() -> None:
    platform = Platform()
    text = "lorem ipsum " * 700  # 8,400 characters
    clock = iter(range(10**6))
    streamer = ReplyStreamer(platform.send, platform.edit, limit=4096, interval=5, clock=lambda: float(next(clock)))
    platform.limited = 3
    result = await streamer.stream(chunks(text))
    assert len(result.message_ids) == 3
    assert " ".join(platform.messages[m] for m in result.message_ids).split() == text.split()
    assert result.retries >= 1


async def test_gives_up_only_after_max_retries() -> None:
    platform = Platform()
    platform.limited = 100
    with pytest.raises(RateLimited):
        await ReplyStreamer(platform.send, platform.edit, limit=100, max_retries=2).stream(chunks("hi"))


class Limited(Platform):
    """A platform that says "wait ``retry_after`` seconds" to every call while ``storm`` is on."""

    def __init__(self, retry_after: float) -> None:
        super().__init__()
        self.retry_after, self.storm = retry_after, False

    def _maybe_limit(self) -> None:
        self.calls += 1
        if self.storm:
            raise RateLimited(self.retry_after)


async def test_a_reply_waits_at_most_its_budget_then_ends_with_a_notice() -> None:
    platform = Limited(retry_after=3600.0)  # "come back in an hour"
    streamer = ReplyStreamer(platform.send, platform.edit, limit=100, interval=0, budget=WaitBudget(0.2))

    async def words() -> AsyncIterator[str]:
        yield "the first words"
        platform.storm = True
        yield " and the rest"

    began = time.perf_counter()
    with pytest.raises(RateLimited):
        await streamer.stream(words())
    assert time.perf_counter() - began < 1.0 and streamer.budget.waited == pytest.approx(0.2)
    platform.storm = False
    assert await streamer.give_up("(could not finish)")
    (message,) = platform.messages.values()
    assert message == "the first words\n\n(could not finish)", "what was shown, without the '…', then the notice"


async def test_retry_rate_limited_cuts_every_wait_to_what_the_budget_has_left() -> None:
    calls = 0

    async def call() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise RateLimited(0.15)
        return "done"

    budget = WaitBudget(0.2)
    assert await retry_rate_limited(call, max_retries=5, budget=budget) == "done"
    assert budget.waited == pytest.approx(0.2) and budget.left == 0.0  # 0.15, then the 0.05 left
    calls = 0
    with pytest.raises(RateLimited):
        await retry_rate_limited(call, max_retries=5, budget=WaitBudget(0.1))


async def test_decoupled_reads_ahead_of_a_slow_reader_and_hands_on_what_it_missed_at_once() -> None:
    produced: list[str] = []

    async def engine() -> AsyncIterator[str]:
        for n in range(10):
            produced.append(str(n))
            yield str(n)
            await asyncio.sleep(0)

    got = []
    async for chunk in decoupled(engine()):
        got.append(chunk)
        if len(got) == 1:
            await asyncio.sleep(0.05)  # the platform makes the reader wait
            assert len(produced) == 10, "the engine finished meanwhile: it never waited on the platform"
    assert "".join(got) == "0123456789" and len(got) == 2


async def test_decoupled_raises_an_error_after_the_text_before_it_and_stops_reading_when_left() -> None:
    async def failing() -> AsyncIterator[str]:
        yield "some words"
        raise RuntimeError("the engine stopped")

    got = []
    with pytest.raises(RuntimeError):
        async for chunk in decoupled(failing()):
            got.append(chunk)
    assert got == ["some words"]

    closed = asyncio.Event()

    async def endless() -> AsyncIterator[str]:
        try:
            while True:
                yield "x"
                await asyncio.sleep(0.001)
        finally:
            closed.set()

    reader = decoupled(endless())
    assert await reader.__anext__()
    await reader.aclose()
    assert closed.is_set(), "leaving early stops the generation"


# -- previews (Telegram's drafts) ---------------------------------------------------------------


class Drafts(Platform):
    """A platform with a draft preview: ``refuse_after`` previews, then it says it cannot show them."""

    def __init__(self, refuse_after: int = 10**6) -> None:
        super().__init__()
        self.previews: list[str] = []
        self.refuse_after = refuse_after

    async def preview(self, text: str) -> bool:
        self.previews.append(text)
        return len(self.previews) < self.refuse_after

    async def edit(self, mid: str, text: str) -> None:
        raise AssertionError("a previewed reply is never edited")


async def test_a_preview_shows_the_unfinished_part_and_each_message_is_sent_once_complete() -> None:
    platform = Drafts()
    text = " ".join(f"word{i}" for i in range(150))  # ~1,000 characters: three messages of 400
    streamer = ReplyStreamer(platform.send, platform.edit, limit=400, interval=0, preview=platform.preview)
    result = await streamer.stream(chunks(text))
    assert len(result.message_ids) == 3 and result.edits == 0
    assert " ".join(platform.messages[m] for m in result.message_ids).split() == text.split()
    assert platform.previews[0].endswith(" …") and all(len(p) <= 400 for p in platform.previews)
    assert not any(text.startswith(p.removesuffix(" …")) for p in platform.previews[-3:]), "the last part previewed"


async def test_a_refused_preview_is_not_asked_again_and_the_reply_still_lands() -> None:
    platform = Drafts(refuse_after=2)
    text = "a short answer that grows word by word until it is done"
    streamer = ReplyStreamer(platform.send, platform.edit, limit=400, interval=0, preview=platform.preview)
    result = await streamer.stream(chunks(text, 3))
    assert len(platform.previews) == 2 and not streamer.previewing
    assert [platform.messages[m] for m in result.message_ids] == [text]


# -- native (append) streaming -----------------------------------------------------------------


class Growing:
    """Natively streamed messages as a platform keeps them: start, append, stop."""

    def __init__(self, *, refuse: bool = False) -> None:
        self.messages: dict[str, str] = {}
        self.open: set[str] = set()
        self.limited = 0
        self.refuse = refuse
        self.calls: list[str] = []

    def calls_for(self) -> AppendCalls:
        return AppendCalls(self.start, self.append, self.stop)

    async def start(self, text: str) -> str:
        self.calls.append("start")
        if self.refuse:
            raise StreamingUnavailable("unknown_method")
        self._maybe_limit()
        mid = f"s{len(self.messages) + 1}"
        self.messages[mid] = text
        self.open.add(mid)
        return mid

    async def append(self, mid: str, text: str) -> None:
        self.calls.append("append")
        assert mid in self.open and text, "appends go to an open stream and carry text"
        self._maybe_limit()
        self.messages[mid] += text

    async def stop(self, mid: str, text: str) -> None:
        self.calls.append("stop")
        assert mid in self.open
        self.messages[mid] += text
        self.open.discard(mid)

    def _maybe_limit(self) -> None:
        if self.limited:
            self.limited -= 1
            raise RateLimited(0.0)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(["ab", "cd ", "\n", "\n```py\n", "\n\n", "wordwordword ", "x" * 40, "  "]),
                max_size=200).map("".join), st.integers(60, 400), st.integers(1, 9))
async def test_native_streams_stay_within_the_limit_and_keep_every_word(text: str, limit: int, size: int) -> None:
    platform = Growing()
    clock = iter(range(10**6))
    result = await AppendStreamer(platform.calls_for(), limit=limit, interval=3,
                                  clock=lambda: float(next(clock))).stream(chunks(text, size))
    shown = [platform.messages[m] for m in result.message_ids]
    assert not platform.open, "every stream was stopped"
    assert all(m.strip() for m in shown), "no message is blank"
    assert all(len(m) <= limit for m in shown)
    squash = lambda s: "".join(s.replace("```py", "").replace("```", "").split())  # noqa: E731
    assert squash("".join(shown)) == squash(text) or (not text.strip() and shown == ["…"])
    assert all(m.count("```") % 2 == 0 for m in shown[:-1]), "a message cut inside code closes it"
    assert result.text == text


async def test_a_rate_limited_append_is_skipped_and_the_final_text_still_lands() -> None:
    platform = Growing()
    text = " ".join(f"word{i}" for i in range(60))
    clock = iter(range(10**6))
    streamer = AppendStreamer(platform.calls_for(), limit=4000, interval=0, clock=lambda: float(next(clock)))
    platform.limited = 0
    original = platform.append

    async def flaky(mid: str, piece: str) -> None:  # every other append is told to wait
        if len(platform.calls) % 2:
            platform.calls.append("append")
            raise RateLimited(0.0)
        await original(mid, piece)

    platform.append = flaky  # type: ignore[method-assign]
    streamer.calls = platform.calls_for()
    result = await streamer.stream(chunks(text, 5))
    assert platform.messages[result.message_ids[0]].split() == text.split()
    assert platform.calls.count("start") == 1 and platform.calls[-1] == "stop"


async def test_when_streaming_is_refused_the_same_reply_goes_by_edits() -> None:
    growing, plain = Growing(refuse=True), Platform()
    fallback = ReplyStreamer(plain.send, plain.edit, limit=4096, interval=0)
    streamer = AppendStreamer(growing.calls_for(), limit=4096, fallback=fallback)
    text = "the first words were read before the refusal, and the rest after it"
    result = await streamer.stream(chunks(text, 4))
    assert streamer.unavailable == "unknown_method" and growing.calls == ["start"]
    assert [plain.messages[m] for m in result.message_ids] == [text]


async def test_an_error_mid_reply_stops_the_open_stream() -> None:
    platform = Growing()

    async def failing() -> AsyncIterator[str]:
        yield "some words and "
        raise RuntimeError("the engine stopped")

    with pytest.raises(RuntimeError):
        await AppendStreamer(platform.calls_for(), limit=4096).stream(failing())
    assert platform.messages and not platform.open and platform.calls[-1] == "stop"


def test_every_slow_down_answer_is_counted_for_metrics() -> None:
    from prometheus_client import REGISTRY

    from adapters.streaming import RateLimited

    before = REGISTRY.get_sample_value("heedful_platform_rate_limited_total") or 0.0
    RateLimited(1.5)
    RateLimited(0.0)
    assert REGISTRY.get_sample_value("heedful_platform_rate_limited_total") == before + 2
