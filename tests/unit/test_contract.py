import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from engine import ChannelKey, CorrectionUse, Explanation, Feedback, FeedbackKind, Route, Turn

names = st.text(st.characters(blacklist_characters=":", blacklist_categories=("Cs",)), min_size=1, max_size=20)


@given(names, names, names, st.one_of(st.just(""), names))
def test_channel_key_round_trips_through_its_string(platform: str, space: str, channel: str, thread: str) -> None:
    key = ChannelKey(platform, channel, space=space, thread=thread)
    assert ChannelKey.parse(str(key)) == key
    assert key.scope == ChannelKey(platform, channel, space=space)


def test_every_contract_type_survives_json() -> None:
    key = ChannelKey("slack", "C1", space="T1", thread="1700000000.1")
    turn = Turn(key, "hello", author_id="U1", message_id="m1", extra={"team": "x"})
    feedback = Feedback(key, FeedbackKind.CORRECTION, author_id="U1", message_id="m2", text="better")
    explanation = Explanation("r1", key, Route.CORRECTION, "m", (CorrectionUse(3, "q", "a", 0.9),), 0.7, 0.4)
    for value in (turn, feedback, explanation):
        assert type(value).from_dict(json.loads(json.dumps(value.to_dict()))) == value


def test_malformed_payload_names_the_field() -> None:
    with pytest.raises(ValidationError, match="kind"):
        Feedback.from_dict({"channel": {"platform": "x", "channel": "y"}, "kind": "launch-missiles"})


def test_channel_key_needs_platform_and_channel() -> None:
    with pytest.raises(ValueError):
        ChannelKey("", "c")
    with pytest.raises(ValueError):
        ChannelKey.parse("just-one-part")


def test_an_explanation_stored_before_the_rename_still_reads() -> None:
    """Replies stored by 0.1 name the LoRA version ``adapter_version``; ``/why`` still shows it."""
    key = ChannelKey("console", "general")
    new = Explanation("r1", key, Route.EXAMPLES, "m", lora_version="3")
    old = {**new.to_dict(), "adapter_version": "3"}
    del old["lora_version"]
    assert Explanation.from_dict(old) == new
