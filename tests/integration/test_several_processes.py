"""Several bot processes on one PostgreSQL: two real ``heedful run`` processes, each serving the
same Slack workspace through its own fake Slack (Socket Mode), both on one PostgreSQL the test
started. A correction taught through one is used by the other at its next turn."""

from __future__ import annotations

import asyncio
import html
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from tests.env import heedful_env
from tests.fakes.slack import FakeSlack, Posted

QUESTION = "What is the wifi password at the office?"
PARAPHRASE = "whats the password for the office wifi?"
ANSWER = "The office wifi password is purple-otter-42 (ask Dana at reception)."
REPO = Path(__file__).resolve().parents[2]


def text_of(posts: list[Posted]) -> str:
    return "\n".join(html.unescape(p.text) for p in posts if not p.deleted)


async def bot_process(slack: FakeSlack, name: str, store_url: str, tmp_path: Path,
                      models_dir: Path) -> asyncio.subprocess.Process:
    env = heedful_env()
    env.update(HEEDFUL_DATA_DIR=str(tmp_path / name), HEEDFUL_MODELS_DIR=str(models_dir), HEEDFUL_MODEL_ID="tiny:0",
               HEEDFUL_MODEL_MAX_NEW_TOKENS="8", HEEDFUL_LOG_LEVEL="INFO", HEEDFUL_HTTP_PORT="0",
               HEEDFUL_STORE_URL=store_url, HEEDFUL_LORA_ENABLED="false",
               HEEDFUL_SLACK_BOT_TOKEN=slack.bot_token, HEEDFUL_SLACK_APP_TOKEN=slack.app_token,
               HEEDFUL_SLACK_API_URL=slack.api_url, HEEDFUL_SLACK_NATIVE_STREAMING="false",
               HEEDFUL_SLACK_EDIT_INTERVAL="0")
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bots.cli", "run", "--platform", "slack", env=env, cwd=REPO,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)


async def stop(process: asyncio.subprocess.Process) -> str:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(process.communicate(), timeout=120)
    return err.decode(errors="replace")


@pytest.fixture
async def two_workspaces() -> AsyncIterator[tuple[FakeSlack, FakeSlack]]:
    """One Slack workspace as two processes see it: the same team and channels, a fake each."""
    async with FakeSlack() as a, FakeSlack() as b:
        yield a, b


async def ask(slack: FakeSlack, channel: str, text: str, **kwargs: object) -> tuple[dict[str, object], str]:
    """Mention the bot; returns the message event and the bot's answer once it stops growing."""
    before = len(slack.posts)
    event = await slack.say(channel, f"<@{slack.bot_user_id}> {text}", **kwargs)  # type: ignore[arg-type]

    def answer() -> str:
        return text_of([p for p in slack.posts[before:] if p.channel == channel])

    # A streaming reply ends its text with an ellipsis until its last edit.
    await slack.wait_for(lambda: answer() and not answer().endswith("…"), timeout=120)
    return event, answer()


@pytest.mark.slow
async def test_a_correction_taught_through_one_process_is_used_by_the_other(
    two_workspaces: tuple[FakeSlack, FakeSlack], postgres_url: str, tmp_path: Path, models_dir: Path
) -> None:
    first, second = two_workspaces
    channel = "C" + uuid.uuid4().hex[:10].upper()
    async with AsyncExitStack() as stack:
        processes = [await bot_process(slack, name, postgres_url, tmp_path, models_dir)
                     for slack, name in ((first, "one"), (second, "two"))]
        logs: list[str] = []

        async def stop_all() -> None:
            logs.extend([await stop(p) for p in processes])

        stack.push_async_callback(stop_all)
        for slack in (first, second):
            await slack.wait_for(lambda s=slack: s.socket_connections >= 1, timeout=300)

        # The second process answers the channel first: it now holds the channel's (empty) learning in memory.
        _, before = await ask(second, channel, PARAPHRASE)
        assert "purple-otter" not in before

        question, _ = await ask(first, channel, QUESTION)
        await first.say(channel, f"correction: {ANSWER}", thread_ts=str(question["ts"]), user="U0BOB")
        await first.wait_for(lambda: any(e["text"].startswith("Learned") for e in first.ephemerals), timeout=60)

        _, after = await ask(second, channel, PARAPHRASE)
        assert after == ANSWER, "the other process answers from the correction at its next turn"
        _, elsewhere = await ask(second, "C" + uuid.uuid4().hex[:10].upper(), PARAPHRASE)
        assert "purple-otter" not in elsewhere, "and still only in that channel"
    assert all(p.returncode == 0 for p in processes), "\n---\n".join(log[-2000:] for log in logs)
    assert all("postgresql" in log.lower() for log in logs)  # each said where its store is
