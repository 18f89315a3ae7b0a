"""The shared reply streamer and splitter, driven through in-memory platform calls."""

from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.streaming import RateLimited, ReplyStreamer, split_message


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
