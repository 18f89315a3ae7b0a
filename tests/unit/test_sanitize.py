import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import InputError
from engine.dialog.sanitize import MentionGuard, clean_text, defuse_mentions


@pytest.mark.parametrize("raw", ["", "   ", "\n\t\n", b"", b"\x00\x01\x02", "\x1b[31m\x1b[0m"])
def test_blank_input_is_refused_clearly(raw: str | bytes) -> None:
    with pytest.raises(InputError, match="empty"):
        clean_text(raw, limit=100)


def test_huge_input_is_refused_with_its_size() -> None:
    with pytest.raises(InputError, match="100,000 characters"):
        clean_text("x" * 100_000, limit=8000)


def test_invalid_utf8_and_controls_are_cleaned() -> None:
    assert clean_text(b"caf\xc3\xa9 \xff\xfe ok\x00\x07", limit=100) == "café \ufffd\ufffd ok"
    assert clean_text("\x1b[1mbold\x1b[0m\r\nnext\ud800", limit=100) == "bold\nnext"


def test_mass_mentions_are_defused() -> None:
    assert "@everyone" not in defuse_mentions("hey @everyone and @here, @Channel")
    assert defuse_mentions("mail me at a@b.c") == "mail me at a@b.c"


@given(st.text(alphabet="@everyonhr x", max_size=60), st.lists(st.integers(0, 60), max_size=8))
def test_streaming_guard_equals_whole_text_guard(text: str, cuts: list[int]) -> None:
    bounds = sorted({min(c, len(text)) for c in cuts} | {0, len(text)})
    guard = MentionGuard()
    streamed = "".join(guard.feed(text[a:b]) for a, b in itertools.pairwise(bounds)) + guard.flush()
    assert streamed == defuse_mentions(text)
