"""A 429 storm: every reply ends with its exact final text or a short notice; nothing waits on the platform
holding the engine's lock, and no wait is longer than ``rate_limit_cap``.

A small run of ``benchmarks/bench_rate_limit_storm.py`` (Slack: half of all reply calls
answered 429), and a Telegram private chat whose drafts' final message is refused past
the cap (before, a reply could be left with nothing at all, after waiting as long as
Telegram asked).
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from types import ModuleType

import pytest

from adapters.settings import TelegramSettings
from adapters.telegram import create
from adapters.texts import Texts
from tests.fakes.engine import StandInEngine
from tests.fakes.telegram import FakeTelegram

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*attribute `retry_after` will be of type `datetime.timedelta`:telegram.warnings.PTBDeprecationWarning"
)

ROOT = Path(__file__).resolve().parents[2]


def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_rate_limit_storm", ROOT / "benchmarks" /
                                                  "bench_rate_limit_storm.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_under_a_storm_of_429s_every_reply_ends_with_its_text_or_a_notice(monkeypatch: pytest.MonkeyPatch
                                                                                ) -> None:
    storm = bench()
    monkeypatch.setattr("adapters.base.WaitBudget", storm.WaitBudget)  # the run swaps in its recording one
    result = await storm.run(replies=40, share=0.5, cap=1.0, long=0.05, turn=0.1, seed=4)
    assert result["replies"] == 40 and result["limited"] > 0.3 * result["calls"]
    assert result["neither"] == 0, result
    assert result["exact"] + result["notice"] == 40 and result["exact"] > 0
    assert result["waited_max_s"] <= 1.0 + 1e-6, "no reply waited past rate_limit_cap"
    assert result["lock_held_max_s"] < 0.1 + 0.25, "the engine's lock was never held while the platform made us wait"


async def test_a_refused_final_message_after_drafts_ends_with_a_notice_within_the_cap(tmp_path: Path) -> None:
    answer = "The long and careful answer, previewed as a draft while it was written."
    engine = StandInEngine(turn_seconds=0.2, chunks=6, answer=answer)
    async with FakeTelegram() as tg:
        adapter = create(engine, TelegramSettings(token=tg.token, api_url=tg.api_url, state_file=tmp_path / "u.json",
                                                  drafts=True, rate_limit_cap=0.5))
        await adapter.start()
        try:
            ann = FakeTelegram.user(830_001, "Ann")
            chat = tg.private(ann)
            tg.fail("sendMessage", status=429, retry_after=3600, times=2)  # "come back in an hour", twice
            began = time.perf_counter()
            asked = tg.say(chat, ann, "Tell me, carefully.")
            notice = await tg.said(chat["id"], Texts.gave_up, after=asked["message_id"], timeout=30)
            assert time.perf_counter() - began < 10, "no wait past the cap (and the notice's few seconds)"
            assert notice.reply_to == asked["message_id"] and notice.buttons == []
            assert tg.drafts[chat["id"]], "the answer was previewed as a draft first"
        finally:
            await adapter.stop()
    assert engine.turns[0].lock_held < 0.2 + 0.25
