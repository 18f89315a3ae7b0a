"""The real SmolLM2 + MiniLM through the engine API."""

from __future__ import annotations

import asyncio

import pytest

from engine import ChannelKey, Engine, Feedback, FeedbackKind, Route, Turn

pytestmark = pytest.mark.real_model

FACTS = [
    ("What is the wifi password at the office?", "The office wifi password is pelican-4417.",
     "whats the password for the office wifi?", "pelican-4417"),
    ("Who approves vacation requests?", "Vacation requests are approved by Marguerite Okafor.",
     "who do I ask to approve my vacation?", "Okafor"),
    ("How do I reset my badge?", "Badge resets happen at desk Q-19 in the lobby.",
     "how can I get my badge reset?", "Q-19"),
]


async def test_corrections_generalise_to_paraphrases_and_stay_local(real_engine: Engine) -> None:
    key = ChannelKey("real", "facts", space="s")
    for question, answer, _, _ in FACTS:
        reply = real_engine.reply(Turn(key, question))
        await reply.collect()
        receipt = await real_engine.feedback(Feedback(key, FeedbackKind.CORRECTION, reply_id=reply.reply_id,
                                                      text=answer))
        assert receipt.accepted
    for _, _, paraphrase, marker in FACTS:
        reply = real_engine.reply(Turn(key, paraphrase))
        assert marker in await reply.collect()
        assert reply.explanation is not None and reply.explanation.route is Route.CORRECTION

    unrelated = real_engine.reply(Turn(key, "Write one sentence about the ocean."))
    text = await unrelated.collect()
    assert all(marker not in text for *_, marker in FACTS)
    assert text.strip()
    elsewhere = real_engine.reply(Turn(ChannelKey("real", "elsewhere", space="s"), FACTS[0][2]))
    assert "pelican-4417" not in await elsewhere.collect()


async def test_concurrent_channels_stream_real_text(real_engine: Engine) -> None:
    async def one(i: int) -> tuple[int, str]:
        reply = real_engine.reply(Turn(ChannelKey("real", f"conc-{i}", space="s"), "What is the capital of France?"))
        chunks = [c async for c in reply]
        return len(chunks), "".join(chunks)

    results = await asyncio.gather(*(one(i) for i in range(4)))
    assert all(n > 1 for n, _ in results)  # streamed in several chunks
    assert all("Paris" in text for _, text in results)
