"""The `heedful` command's scriptable surface: --json prints one object on the last line."""

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bots.cli import app
from engine import ChannelKey
from engine.store import Store

runner = CliRunner()


def last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def test_config_json_redacts_secrets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HEEDFUL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HEEDFUL_DISCORD_TOKEN", "very-secret-token")
    result = runner.invoke(app, ["config", "--json"])
    assert result.exit_code == 0
    data = last_json(result.output)
    assert data["data_dir"] == str(tmp_path) and data["discord"]["token"] == "**********"
    assert "very-secret-token" not in result.output


def test_bad_config_exits_2_naming_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEEDFUL_MODEL_MAX_BATCH", "-3")
    result = runner.invoke(app, ["config"])
    assert result.exit_code == 2 and "model.max_batch" in result.output


async def seed(path: Path) -> None:
    store = Store(path)
    await store.open()
    await store.add_correction(ChannelKey("console", "ops", space="local"), question="q?", answer="a!", author_id="u",
                               embedding=np.zeros(3, dtype=np.float32), encoder="e", message_id=None)
    await store.close()


def test_learned_and_forget_json(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HEEDFUL_DATA_DIR", str(tmp_path))
    asyncio.run(seed(tmp_path / "heedful.sqlite3"))  # the CLI runs its own event loop, so this test has none
    listed = last_json(runner.invoke(app, ["learned", "ops", "--json"]).output)
    assert listed["channel"] == "console:local:ops" and listed["corrections"][0]["answer"] == "a!"
    assert last_json(runner.invoke(app, ["forget", "console:local:ops", "--json"]).output)["forgotten"] == 1
    assert last_json(runner.invoke(app, ["learned", "ops", "--json"]).output)["corrections"] == []


def test_version_and_help() -> None:
    assert "version" in last_json(runner.invoke(app, ["version", "--json"]).output)
    assert "chat" in runner.invoke(app, ["--help"]).output
