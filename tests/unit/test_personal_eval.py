"""``heedful eval personal``: the personal-scope benchmark through the real engine (tiny LLM, real
encoder, real SQLite); its last stdout line is one JSON object. The tiny model's replies are noise,
so recall is not asserted here (docs/BENCHMARKS.md has the real model's); isolation is: no reply to
anyone else carries a code someone told about themselves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bots.cli import app
from engine.training.personal_eval import FACTS, PersonalEvalConfig, plan
from tests.conftest import MODELS_DIR


def test_eval_personal_json(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HEEDFUL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HEEDFUL_MODELS_DIR", str(MODELS_DIR))
    result = CliRunner().invoke(app, ["eval", "personal", "--model", "tiny:0", "--channels", "2", "--people", "3",
                                      "--facts", "1", "--others", "2", "--latency-turns", "3",
                                      "--max-new-tokens", "4", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data["model"] == "tiny:0" and data["people"] == 6 and data["facts"] == 6
    assert data["asked_by_teller"] == 12 and data["asked_by_others"] == 24
    assert data["personal_leaks"] == 0 and 0.0 <= data["personal_recall"] <= 1.0
    latency = data["latency_ms"]
    assert latency["turns"] == 3 and latency["with"]["p50"] > 0 and latency["without"]["p99"] > 0
    assert data["bytes_per_person"] >= 384 * 4  # at least one fact's embedding


def test_the_plan_gives_each_fact_a_unique_code_and_others_of_its_channel() -> None:
    told = plan(PersonalEvalConfig(channels=2, people=3, facts=2, others=2, seed=3))
    assert len(told) == 12 and len({t.code for t in told}) == 12
    assert all(t.code in t.statement and t.person not in t.others for t in told)
    assert all(o.startswith(t.person.split("-")[0] + "-") for t in told for o in t.others)  # same channel
    assert told == plan(PersonalEvalConfig(channels=2, people=3, facts=2, others=2, seed=3))  # seeded


def test_impossible_sizes_are_refused_naming_the_option(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HEEDFUL_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["eval", "personal", "--facts", str(len(FACTS) + 1)])
    assert result.exit_code == 2 and "--facts" in result.output
