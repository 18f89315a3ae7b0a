"""The operator's endpoints: /healthz, /readyz and Prometheus /metrics, in process and through `heedful run`."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from bots.http_server import HealthServer
from engine import ChannelKey, Engine, Turn
from tests.fakes.telegram import FakeTelegram
from tests.integration.serving import wait_until_ready
from tests.integration.test_run_command import env_for


async def test_health_readiness_and_metrics_of_an_engine(tiny_engine: Engine) -> None:
    ready = False
    server = HealthServer(tiny_engine, "127.0.0.1", 0, lambda: ready)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            health = await http.get("/healthz")
            assert health.status_code == 200 and health.json()["healthy"]
            assert (await http.get("/readyz")).status_code == 503  # platforms not connected yet
            ready = True
            assert (await http.get("/readyz")).status_code == 200
            before = await http.get("/metrics")
            await tiny_engine.reply(Turn(ChannelKey("test", "http"), "hello there")).collect()
            after = (await http.get("/metrics")).text
            assert before.headers["content-type"].startswith("text/plain")
            assert 'heedful_queue_depth{stage="model_pending"}' in after
            assert _value(after, 'heedful_turns_total{route="base"}') > _value(before.text, 'heedful_turns_total{'
                                                                                         'route="base"}')
            assert "heedful_turn_seconds_bucket" in after
    finally:
        await server.stop()


async def test_a_port_in_use_is_a_clear_error(tiny_engine: Engine) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = HealthServer(tiny_engine, "127.0.0.1", taken.getsockname()[1], lambda: True)
        with pytest.raises(OSError, match="HEEDFUL_HTTP_PORT"):
            await server.start()


@pytest.mark.slow
async def test_heedful_run_serves_health_and_metrics_while_a_platform_runs(tmp_path: Path, models_dir: Path) -> None:
    token = "123:health"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with FakeTelegram(token) as tg:
        env = env_for(tmp_path, models_dir, HEEDFUL_TELEGRAM_TOKEN=token, HEEDFUL_TELEGRAM_API_URL=tg.api_url,
                      HEEDFUL_TELEGRAM_STATE_FILE=str(tmp_path / "updates.json"), HEEDFUL_HTTP_PORT=str(port),
                      HEEDFUL_LOG_FORMAT="json", HEEDFUL_LOG_LEVEL="INFO",
                      # As shipped: the decode step compiles, from the start, so that SIGTERM lands mid-compile
                      # (a process that exited then used to abort instead of exiting 0).
                      HEEDFUL_MODEL_COMPILE_DECODE="true", HEEDFUL_MODEL_COMPILE_DELAY_S="0")
        proc = subprocess.Popen([sys.executable, "-m", "bots.cli", "run"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                await wait_until_ready(http, proc)
                assert (await http.get("/healthz")).json()["healthy"]
                chat, user = tg.private(FakeTelegram.user(4242)), FakeTelegram.user(4242)
                asked = tg.say(chat, user, "hello")
                await tg.answer(chat["id"], asked["message_id"])
                metrics = (await http.get("/metrics")).text
                assert _value(metrics, 'heedful_turns_total{route="base"}') >= 1
                check = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "bots.cli", "health"], env=env,
                                                capture_output=True, text=True, timeout=60)
                assert check.returncode == 0 and "healthy" in check.stdout
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "terminate called" not in err
    assert '"level": "WARNING"' in err and "health and metrics on http://127.0.0.1" in err  # JSON log lines


def _value(metrics: str, name: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0

