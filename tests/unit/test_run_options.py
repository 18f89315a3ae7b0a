"""`heedful run --platform NAME --shards IDS/COUNT`: which platforms one process serves, and which
of the bot's Discord shards it connects (docs/deploy.md, "Scaling out")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bots import runner
from bots.cli import app
from bots.config import ConfigError, Settings, load_settings

TOKENS = {
    "HEEDFUL_TELEGRAM_TOKEN": "123:telegram-token",
    "HEEDFUL_SLACK_BOT_TOKEN": "xoxb-slack-token",
    "HEEDFUL_SLACK_APP_TOKEN": "xapp-slack-token",
    "HEEDFUL_DISCORD_TOKEN": "discord-token",
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No HEEDFUL_* variable and no heedful.toml of the machine's leaks in."""
    import os

    for name in [n for n in os.environ if n.startswith("HEEDFUL_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HEEDFUL_DATA_DIR", str(tmp_path / "data"))


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Settings, list[str]]]:
    """What `heedful run` would have started: (settings, platforms) per call; nothing is started."""
    calls: list[tuple[Settings, list[str]]] = []

    async def fake_run(settings: Settings, platforms: Any = None) -> None:
        calls.append((settings, runner.select_platforms(settings, platforms)))

    monkeypatch.setattr(runner, "run", fake_run)
    return calls


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, ["run", *args])


def test_platform_picks_only_the_named_platform_among_the_configured_ones(
    monkeypatch: pytest.MonkeyPatch, started: list[tuple[Settings, list[str]]]
) -> None:
    for name, value in TOKENS.items():
        monkeypatch.setenv(name, value)
    assert invoke().exit_code == 0
    assert invoke("--platform", "slack").exit_code == 0
    assert invoke("--platform", "telegram", "--platform", "discord").exit_code == 0
    assert [platforms for _, platforms in started] == [["telegram", "slack", "discord"], ["slack"],
                                                       ["telegram", "discord"]]
    assert started[0][0].discord.shard_count is None  # no --shards: one unsharded connection, as before


def test_a_platform_that_is_unknown_or_not_configured_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEEDFUL_TELEGRAM_TOKEN", TOKENS["HEEDFUL_TELEGRAM_TOKEN"])
    unknown = invoke("--platform", "matrix")
    assert unknown.exit_code == 2 and "'matrix' is not one of" in unknown.output
    missing = invoke("--platform", "slack")  # the real runner: refused before anything starts
    assert missing.exit_code == 2
    assert "--platform slack: slack is not configured (HEEDFUL_SLACK_BOT_TOKEN is not set)" in missing.output
    settings = load_settings()
    with pytest.raises(ConfigError, match="unknown platform 'irc'"):
        runner.select_platforms(settings, ["irc"])
    assert runner.select_platforms(settings, ["telegram", "telegram"]) == ["telegram"]


def test_shards_give_the_discord_adapter_its_slice(
    monkeypatch: pytest.MonkeyPatch, started: list[tuple[Settings, list[str]]]
) -> None:
    monkeypatch.setenv("HEEDFUL_DISCORD_TOKEN", TOKENS["HEEDFUL_DISCORD_TOKEN"])
    assert invoke("--platform", "discord", "--shards", "0,1/4").exit_code == 0
    assert invoke("--shards", " 3 /4").exit_code == 0
    (first, platforms), (second, _) = started
    assert platforms == ["discord"]
    assert (first.discord.shard_ids, first.discord.shard_count) == ([0, 1], 4)
    assert (second.discord.shard_ids, second.discord.shard_count) == ([3], 4)
    assert first.discord.token is not None  # --shards adds to the environment's Discord settings


@pytest.mark.parametrize(("value", "says"), [
    ("5/4", "must be within 0..3 for 4 shard(s), not 5"),
    ("0,1", "expected IDS/COUNT"),
    ("x", "expected IDS/COUNT"),
    ("0/0", "at least 1"),
    ("a,1/2", "numbers separated by commas, not 'a'"),
    ("/4", "numbers separated by commas"),
    ("1,1/2", "named twice"),
    ("0/-1", "expected IDS/COUNT"),
])
def test_a_bad_shards_value_is_a_clear_error_and_starts_nothing(
    monkeypatch: pytest.MonkeyPatch, started: list[tuple[Settings, list[str]]], value: str, says: str
) -> None:
    monkeypatch.setenv("HEEDFUL_DISCORD_TOKEN", TOKENS["HEEDFUL_DISCORD_TOKEN"])
    result = invoke("--platform", "discord", "--shards", value)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.replace("│", " ").split())  # the error box wraps its lines
    assert "Invalid value for '--shards'" in text and says in text
    assert started == []


def test_shards_without_discord_in_the_run_are_refused(
    monkeypatch: pytest.MonkeyPatch, started: list[tuple[Settings, list[str]]]
) -> None:
    monkeypatch.setenv("HEEDFUL_TELEGRAM_TOKEN", TOKENS["HEEDFUL_TELEGRAM_TOKEN"])
    monkeypatch.setenv("HEEDFUL_DISCORD_TOKEN", TOKENS["HEEDFUL_DISCORD_TOKEN"])
    result = invoke("--platform", "telegram", "--shards", "0/2")
    assert result.exit_code == 2 and "--shards applies to Discord" in result.output
    assert started == []


def test_shard_settings_come_from_the_environment_and_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEEDFUL_DISCORD_SHARD_COUNT", "4")
    assert (load_settings().discord.shard_ids, load_settings().discord.shard_count) == (None, 4)  # all 4 here
    monkeypatch.setenv("HEEDFUL_DISCORD_SHARD_IDS", "2, 3")
    assert load_settings().discord.shard_ids == [2, 3]
    monkeypatch.setenv("HEEDFUL_DISCORD_SHARD_IDS", "[0,1]")
    assert load_settings().discord.shard_ids == [0, 1]
    for ids, count, says in [("4", "4", r"within 0\.\.3"), ("1,x", "4", "numbers separated by commas"),
                             ("1", None, "need a shard count"), (None, "0", "at least 1")]:
        for name, value in (("HEEDFUL_DISCORD_SHARD_IDS", ids), ("HEEDFUL_DISCORD_SHARD_COUNT", count)):
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        with pytest.raises(ConfigError, match=says):
            load_settings()
