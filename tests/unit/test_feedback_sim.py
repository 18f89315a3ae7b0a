"""``eval corrections --feedback-sim``: simulated askers' feedback, measured per round (tiny model, fast)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from engine import ChannelKey, Engine
from engine.training.correction_bench import BenchConfig, planned_questions, run_benchmark
from engine.training.episodes import OOS, Utterance

TOPICS = {
    "wifi": ["What is the wifi password at the office?", "how do I get on the office wifi",
             "tell me the office wireless password", "office wifi password pls",
             "what's the password to the office network", "wifi login at the office?"],
    "lunch": ["When does the canteen serve lunch?", "what time is lunch in the canteen",
              "when can I eat lunch at the canteen", "canteen lunch hours?",
              "until when is the canteen open for lunch", "lunch times at the canteen"],
    "parking": ["Where can visitors park their car?", "where do guests park", "visitor parking location?",
                "where should my visitor leave their car", "is there parking for visitors", "guest car park where"],
    "printer": ["How do I fix a paper jam in the printer?", "the printer is jammed, what do I do",
                "paper stuck in the printer", "how to clear a printer jam", "printer jam help",
                "my printout is stuck in the printer"],
    "holiday": ["How many vacation days do I get?", "how much annual leave do I have",
                "number of holiday days per year", "vacation allowance?", "how many days off a year",
                "what is my paid leave entitlement"],
    "guest_wifi": ["How do visitors get on the guest wifi?", "what's the wifi code for visitors",  # near "wifi":
                   "guest wifi password?", "wifi for guests how", "can my visitor use the wifi",  # some replies
                   "is there a wifi network for visitors"],                                       # go wrong
}
OUT_OF_SCOPE = ["What is the capital of Peru?", "Write me a haiku about rain", "How tall is Mount Everest?"]


def sets() -> tuple[list[Utterance], list[Utterance], list[Utterance]]:
    support = [Utterance(texts[0], label) for label, texts in TOPICS.items()]
    query = [Utterance(t, label) for label, texts in TOPICS.items() for t in texts[1:]]
    return support, query, [Utterance(t, OOS) for t in OUT_OF_SCOPE]


async def test_feedback_rounds_confirm_paraphrases_and_are_measured(
        make_engine: Callable[..., AbstractAsyncContextManager[Engine]]) -> None:
    support, query, oos = sets()
    config = BenchConfig(channels=1, curve=(), feedback_sim=2, concurrency=4, seed=6)
    async with make_engine(lora={"enabled": False}) as engine:  # the metric path, as --mode metric
        result = await run_benchmark(engine, support, query, oos, (), config)
        sim: dict[str, Any] = result["feedback_sim"]
        assert [r["round"] for r in sim["rounds"]] == [0, 1, 2]
        for r in sim["rounds"]:
            assert 0.0 <= r["generality"] <= 1.0 and 0.0 <= r["locality"] <= 1.0
        assert sim["n_pool"] > 0 and sim["n_held_back"] > 0 and sim["n_locality"] > 0
        assert sim["rounds"][0]["confirmed"] == 0 and sim["rounds"][0]["negatives"] == 0
        # The first round's 👍 made paraphrases; a later round adds only newly answered phrasings.
        first, second = sim["rounds"][1], sim["rounds"][2]
        assert first["thumbs_up"] > 0 and 0 < first["confirmed"] <= first["thumbs_up"]
        assert first["confirmed"] <= second["confirmed"] == sim["confirmed"]
        assert sim["thumbs_up"] == first["thumbs_up"] + second["thumbs_up"]
        assert sim["negatives"] <= sim["corrections_sent"]  # a negative comes only with a correction
        # What the store holds agrees with what the simulation reports.
        key = ChannelKey("bench", "channel-1", space="eval")
        stored = [c for c in await engine.learned(key) if c.origin == "confirmed"]
        assert len(stored) == sim["confirmed"] and len(await engine.negatives(key)) == sim["negatives"]
        assert all(c.source_id is not None for c in stored)
    assert planned_questions(support, query, oos, (), config) > planned_questions(
        support, query, oos, (), BenchConfig(channels=1, curve=(), concurrency=4, seed=6))


def test_the_option_reaches_the_benchmark(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from bots.cli import app
    from engine.training import corrections_run

    seen: dict[str, Any] = {}

    def fake_run(run: Any, settings: Any, **_: Any) -> dict[str, Any]:
        seen["bench"] = run.bench
        return {"mode": run.mode}

    monkeypatch.setattr(corrections_run, "run_corrections_eval", fake_run)
    monkeypatch.setenv("HEEDFUL_DATA_DIR", str(tmp_path))
    files = {name: tmp_path / f"{name}.jsonl" for name in ("support", "query")}
    for path in files.values():
        path.write_text('{"text": "hi", "label": "a"}\n')
    args = ["eval", "corrections", "--support", str(files["support"]), "--query", str(files["query"]), "--json"]
    runner = CliRunner()
    assert runner.invoke(app, args).exit_code == 0 and seen["bench"].feedback_sim == 0
    assert runner.invoke(app, [*args, "--feedback-sim"]).exit_code == 0 and seen["bench"].feedback_sim == 2
    assert runner.invoke(app, [*args, "--feedback-sim", "--feedback-rounds", "3"]).exit_code == 0
    assert seen["bench"].feedback_sim == 3
