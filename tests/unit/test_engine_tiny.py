"""The engine's turn / feedback cycle on the tiny model (real encoder, real SQLite)."""

from __future__ import annotations

from engine import ChannelKey, Engine, Feedback, FeedbackKind, Route, Turn


async def test_correction_is_used_for_a_paraphrase_and_not_elsewhere(tiny_engine: Engine) -> None:
    here = ChannelKey("test", "corr-a", space="s")
    there = ChannelKey("test", "corr-b", space="s")
    first = tiny_engine.reply(Turn(here, "What is the wifi password at the office?", author_id="u1"))
    await first.collect()
    receipt = await tiny_engine.feedback(
        Feedback(here, FeedbackKind.CORRECTION, author_id="u1", reply_id=first.reply_id,
                 text="The office wifi password is pelican-4417.")
    )
    assert receipt.accepted and receipt.correction_id is not None

    again = tiny_engine.reply(Turn(here, "whats the password for the office wifi?"))
    assert "pelican-4417" in await again.collect()
    assert again.explanation is not None and again.explanation.route is Route.CORRECTION

    other = tiny_engine.reply(Turn(there, "whats the password for the office wifi?"))
    assert "pelican-4417" not in await other.collect()
    assert other.explanation is not None and other.explanation.route is Route.BASE
