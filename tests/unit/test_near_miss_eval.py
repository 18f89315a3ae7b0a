"""``heedful eval corrections --near-miss``: near misses are asked where their label was taught and
must not get its code. Fast: an engine stand-in answers (no model), the way the benchmark sees one."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from typer.testing import CliRunner

from engine import ChannelKey, Engine, Feedback, Route, Turn
from engine.settings import EngineSettings
from engine.training import corrections_run
from engine.training.correction_bench import BenchConfig, NearMiss, run_benchmark
from engine.training.corrections_run import CorrectionsRunConfig, load_near_misses, run_corrections_eval
from engine.training.episodes import OOS, BadLine, Utterance
from engine.training.runs import RunError

SUPPORT = [Utterance(f"when does the {place} office open on {day}", f"{place}_{day}")
           for place in ("lisbon", "oslo", "lima") for day in ("saturdays", "mondays")]
QUERY = [Utterance(f"what are the opening hours of the {u.label.replace('_', ' office on ')}", u.label)
         for u in SUPPORT]
OOS_LINES = [Utterance("what is the capital of peru", OOS), Utterance("tell me a joke", OOS)]
NEAR = [NearMiss(u.text.replace("open", "close"), u.label, "opposite") for u in SUPPORT] + [
    NearMiss(u.text.replace("lisbon", "porto"), u.label, "place") for u in SUPPORT if "lisbon" in u.label] + [
    NearMiss("when does the rome office open on sundays", "rome_sundays", "place")]  # never taught


@dataclass
class _Explanation:
    route: Route
    lora_version: str | None = None
    corrections: tuple[Any, ...] = ()


@dataclass
class _Reply:
    text: str
    explanation: _Explanation

    async def __aiter__(self) -> Any:
        yield self.text


@dataclass
class StandIn:
    """Answers from a correction when a question shares at least ``overlap`` of its words with a
    taught one (1.0: only the very question); otherwise says it does not know."""

    overlap: float = 1.0
    taught: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    asked: list[tuple[str, str]] = field(default_factory=list)
    matching: Any = field(default_factory=lambda: type("M", (), {"adaptation": None, "metric_name": "stand-in",
                                                                 "answer_threshold": 0.5, "example_threshold": 0.4,
                                                                 "verifier": None, "floor": 0.0})())
    model_name: str = "stand-in"

    async def feedback(self, fb: Feedback) -> Any:
        self.taught.setdefault(fb.channel.channel, []).append((fb.question, fb.text))
        return type("Receipt", (), {"accepted": True, "message": ""})()

    def reply(self, turn: Turn) -> _Reply:
        self.asked.append((turn.channel.channel, turn.text))
        words = set(turn.text.split())
        best = max(self.taught.get(turn.channel.channel, []), default=None,
                   key=lambda qa: len(words & set(qa[0].split())) / len(set(qa[0].split())))
        if best is not None and len(words & set(best[0].split())) / len(set(best[0].split())) >= self.overlap:
            return _Reply(best[1], _Explanation(Route.CORRECTION))
        return _Reply("I don't know that one.", _Explanation(Route.BASE))

    async def settle(self) -> None:
        return None

    async def lora_versions(self, channel: ChannelKey) -> list[Any]:
        return []

    async def __aenter__(self) -> StandIn:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


async def bench(engine: StandIn, near: list[NearMiss] | None, limit: int = 0) -> dict[str, Any]:
    config = BenchConfig(channels=2, limit=limit, uncorrected=0.0, curve=(), seed=1)
    return await run_benchmark(cast(Engine, engine), SUPPORT, QUERY, OOS_LINES, (), config, near_miss=near)


async def test_near_misses_of_a_strict_engine_stay_local() -> None:
    engine = StandIn(overlap=1.0)
    result = await bench(engine, NEAR)
    assert result["reliability"] == 1.0 and result["locality"] == 1.0
    assert result["near_miss_locality"] == 1.0 and result["near_miss_missed_by_route"] == {}
    assert result["near_miss_n"] == 2 * (len(NEAR) - 1)  # every taught near miss, in both channels
    assert result["near_miss_skipped"] == 1  # rome_sundays was never taught
    assert result["near_miss_by_kind"] == {"opposite": {"locality": 1.0, "n": 12}, "place": {"locality": 1.0, "n": 4}}
    # asked in the channels that taught the label they mimic
    assert {c for c, t in engine.asked if t == NEAR[0].text} == {"channel-1", "channel-2"}


async def test_a_loose_engine_answers_near_misses_and_is_caught() -> None:
    result = await bench(StandIn(overlap=0.8), NEAR)
    assert result["reliability"] == 1.0
    assert result["near_miss_locality"] == 0.0  # one word changed: the taught code came back
    assert result["near_miss_missed_by_route"] == {"correction": result["near_miss_n"]}  # ... as its answer
    assert result["isolation_violations"] == 0  # ... its own channel's code, not another's


async def test_without_near_misses_nothing_changes() -> None:
    plain = await bench(StandIn(overlap=0.8), None, limit=3)
    with_near = await bench(StandIn(overlap=0.8), NEAR, limit=3)
    assert not any(k.startswith("near_miss") for k in plain)
    assert with_near["near_miss_n"] == 2 * 3  # --limit samples near misses too
    for key in ("reliability", "generality", "locality", "n_reliability", "n_generality", "n_locality"):
        assert plain[key] == with_near[key]  # the other samples are drawn as before
    assert "near_miss_by_kind" not in await bench(StandIn(), [NearMiss(m.text, m.label) for m in NEAR])


def write(path: Path, rows: list[dict[str, Any] | str]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_load_near_misses_keeps_kinds_and_reports_bad_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "near.jsonl", [
        {"text": "is the oslo office open on sundays", "label": "oslo_saturdays", "near_miss": True, "kind": "time"},
        {"text": "is the oslo office closed on saturdays", "label": "oslo_saturdays"},
        "not json", {"text": "no label"}, {"text": "a paraphrase", "label": "x", "near_miss": False}, "",
    ])
    skipped: list[BadLine] = []
    assert load_near_misses(path, skipped) == [NearMiss("is the oslo office open on sundays", "oslo_saturdays", "time"),
                                               NearMiss("is the oslo office closed on saturdays", "oslo_saturdays")]
    assert [b.line for b in skipped] == [3, 4, 5]
    with pytest.raises(ValueError, match=":3: not JSON"):
        load_near_misses(path)


def test_the_option_reaches_the_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(corrections_run, "Engine", lambda settings: StandIn())
    support = write(tmp_path / "s.jsonl", [{"text": u.text, "label": u.label} for u in SUPPORT])
    query = write(tmp_path / "q.jsonl", [{"text": u.text, "label": u.label} for u in QUERY])
    near = write(tmp_path / "n.jsonl", [{"text": m.text, "label": m.label, "near_miss": True, "kind": m.kind}
                                        for m in NEAR] + ["broken"])
    settings = EngineSettings(data_dir=tmp_path / "data", models_dir=tmp_path / "models")
    run = CorrectionsRunConfig(support=support, query=query, near_miss=near,
                               bench=BenchConfig(channels=1, uncorrected=0.0, curve=()))
    result = run_corrections_eval(run, settings)
    assert result["near_miss_locality"] == 1.0 and result["near_miss_n"] == len(NEAR) - 1
    assert result["near_miss_skipped"] == 1 and result["skipped_lines"] == {"--near-miss": [
        {"line": len(NEAR) + 1, "why": "not JSON"}]}
    assert "near_miss_n" not in run_corrections_eval(
        CorrectionsRunConfig(support=support, query=query, bench=BenchConfig(channels=1, curve=())), settings)
    with pytest.raises(RunError, match="--near-miss: no such file"):
        run_corrections_eval(CorrectionsRunConfig(support=support, query=query, near_miss=tmp_path / "none.jsonl"),
                             settings)


def test_the_command_has_the_option(tmp_path: Path) -> None:
    from bots.cli import app

    support = write(tmp_path / "s.jsonl", [{"text": u.text, "label": u.label} for u in SUPPORT])
    result = CliRunner().invoke(app, ["eval", "corrections", "--support", str(support), "--query", str(support),
                                      "--near-miss", str(tmp_path / "nope.jsonl")])
    assert result.exit_code == 2 and "--near-miss: no such file" in result.output
    assert "--near-miss" in CliRunner().invoke(app, ["eval", "corrections", "--help"]).output


def test_the_committed_near_miss_files_load() -> None:
    folder = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "near_miss"
    for name in ("clinc_heldout_near_miss.jsonl", "handwritten_near_miss.jsonl"):
        skipped: list[BadLine] = []
        lines = load_near_misses(folder / name, skipped)
        assert lines and not skipped and all(m.kind for m in lines)
    taught = {json.loads(line)["label"] for line in (folder / "handwritten_support.jsonl").read_text().splitlines()}
    assert {m.label for m in load_near_misses(folder / "handwritten_near_miss.jsonl")} == taught
