"""The admin console in a real browser (Debian's chromium, driven by Playwright) against a real
``heedful run`` with the tiny model: sign in, see a correction taught in the console chat,
forget it, approve one from the review queue, roll back a LoRA version, and check that a
signed-out visitor and a manager of another space see nothing. Screenshots go to a temporary
directory, or to docs/admin/ (the README's pictures) with HEEDFUL_UPDATE_SCREENSHOTS=1.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine import ChannelKey, Engine, Feedback, FeedbackKind
from tests.conftest import REPO, engine_settings
from tests.fakes.telegram import FakeTelegram
from tests.integration.serving import wait_until_ready
from tests.integration.test_run_command import env_for

CHROMIUM = "/usr/bin/chromium"
DOCS_SHOTS = REPO / "docs" / "admin"
OFFICE = ChannelKey("console", "office", space="local")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no chromium at {CHROMIUM} (make install adds Debian's "
                                                            "package when run as root; never a downloaded browser)"),
]


def _cli(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "bots.cli", *args], env=env, input=stdin, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done


async def _seed(data_dir: Path, models_dir: Path) -> None:
    """Before the bot starts: a correction waiting for review and two LoRA versions to roll back between."""
    async with Engine(engine_settings(data_dir, models_dir)) as engine:
        receipt = await engine.feedback(Feedback(OFFICE, FeedbackKind.CORRECTION, author_id="newcomer",
                                                 question="When is lunch?", text="Lunch is at noon.",
                                                 needs_review=True))
        assert receipt.pending
        for version, metrics in ((1, {"held_out_gain": 0.21, "locality": 0.98}),
                                 (2, {"held_out_gain": 0.34, "locality": 0.97})):
            assert await engine.store.add_lora_version(OFFICE, None, {**metrics, "decision": "promoted"},
                                                       "active") == version


@pytest.fixture
async def bot(tmp_path: Path, models_dir: Path) -> AsyncIterator[dict[str, Any]]:
    """A running ``heedful run`` (a fake Telegram as its platform) and the console's address."""
    await _seed(tmp_path, models_dir)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    token = "123:admin"
    async with FakeTelegram(token) as tg:
        env = env_for(tmp_path, models_dir, HEEDFUL_TELEGRAM_TOKEN=token, HEEDFUL_TELEGRAM_API_URL=tg.api_url,
                      HEEDFUL_TELEGRAM_STATE_FILE=str(tmp_path / "updates.json"), HEEDFUL_HTTP_PORT=str(port))
        tokens = {name: json.loads(_cli(env, "admin", "create", name, *extra, "--json").stdout.splitlines()[-1])
                  for name, extra in (("ops", ()), ("mod", ("--space", "telegram:999")))}
        proc = subprocess.Popen([sys.executable, "-m", "bots.cli", "run"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        try:
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=base) as http:
                await wait_until_ready(http, proc)
            yield {"base": base, "env": env, "ops": tokens["ops"]["token"], "mod": tokens["mod"]["token"]}
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    for value in tokens.values():
        assert value["token"] not in err  # no secret in the logs


async def test_managers_steer_learning_in_a_browser(bot: dict[str, Any], tmp_path: Path) -> None:
    from playwright.async_api import Page, async_playwright, expect

    chat = await asyncio.to_thread(_cli, bot["env"], "chat", "--channel", "office",
                                   stdin="Where is the exit?\n/fix Door B, past the kitchen.\n"
                                         "where is the exit?\n/good\n/stats\n")
    assert "Learned:" in chat.stdout and "answers from corrections: 1 of 2 (👍 1, 👎 0)" in chat.stdout
    base = bot["base"]
    # A test run must not rewrite the repository's files; refreshing the README's pictures is asked for.
    shots = DOCS_SHOTS if os.environ.get("HEEDFUL_UPDATE_SCREENSHOTS") else tmp_path / "shots"
    shots.mkdir(parents=True, exist_ok=True)

    async def sign_in(page: Page, token: str) -> None:
        await page.goto(f"{base}/admin/")
        await page.get_by_label("Admin token").fill(token)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_role("heading", name="Overview")).to_be_visible()

    async with async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            str(tmp_path / "profile-ops"), executable_path=CHROMIUM, headless=True, args=ARGS,
            viewport={"width": 1200, "height": 900})
        page = context.pages[0] if context.pages else await context.new_page()
        page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))

        # Signed out: every page is the sign-in form, and no channel name shows.
        for path in ("/admin/", f"/admin/channel?c={OFFICE}", "/admin/audit"):
            await page.goto(base + path)
            await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
            assert "office" not in await page.content()
        await page.screenshot(path=str(shots / "sign-in.png"))

        await sign_in(page, bot["ops"])
        await expect(page.get_by_role("link", name="office")).to_be_visible()
        await page.screenshot(path=str(shots / "overview.png"), full_page=True)

        # The correction taught in the console chat, with its author.
        await page.get_by_role("link", name="office").click()
        row = page.locator("#corrections-table tbody tr", has_text="Door B, past the kitchen.")
        await expect(row).to_contain_text("you")  # its author, and the one answer it served
        await page.get_by_label("Search corrections").fill("kitchen")
        await expect(row).to_be_visible()
        await page.get_by_label("Search corrections").fill("")
        await page.screenshot(path=str(shots / "channel.png"), full_page=True)

        # Approve the correction waiting for review: it becomes a correction of the channel.
        await page.locator("#review").get_by_role("button", name="Approve").click()
        await expect(page.get_by_role("status")).to_have_text("Approved.")
        await expect(page.locator("#corrections-table")).to_contain_text("Lunch is at noon.")

        # Roll back the LoRA version: v2 stops serving, v1 serves again.
        await page.locator("#lora").get_by_role("button", name="Roll back").click()
        await expect(page.get_by_role("status")).to_have_text("Rolled back.")
        await expect(page.locator("#lora tbody tr", has_text="v2")).to_contain_text("rolled_back")
        await expect(page.locator("#lora tbody tr", has_text="v1")).to_contain_text("active")

        # Forget the console chat's correction (the channel's LoRA versions stop serving too).
        await row.get_by_role("button", name="Forget").click()
        await expect(page.get_by_role("status")).to_have_text("Forgotten.")
        await expect(page.locator("#corrections-table")).not_to_contain_text("Door B")

        await page.get_by_role("link", name="Audit log").first.click()
        await page.get_by_label("Author").fill("admin:ops")
        await page.get_by_role("button", name="Filter").click()
        for action in ("forget", "approve", "rollback"):
            await expect(page.locator("table")).to_contain_text(action)
        await page.screenshot(path=str(shots / "audit.png"), full_page=True)
        await context.close()

        # A manager of another space sees no channel, and gets "not found" for this one.
        context = await pw.chromium.launch_persistent_context(
            str(tmp_path / "profile-mod"), executable_path=CHROMIUM, headless=True, args=ARGS)
        page = context.pages[0] if context.pages else await context.new_page()
        await sign_in(page, bot["mod"])
        assert "office" not in await page.content()
        answer = await page.goto(f"{base}/admin/channel?c={OFFICE}")
        assert answer is not None and answer.status == 404
        assert "Lunch" not in await page.content()
        await page.goto(f"{base}/admin/audit")
        assert "office" not in await page.content()
        await context.close()
    shutil.rmtree(tmp_path / "profile-ops", ignore_errors=True)
