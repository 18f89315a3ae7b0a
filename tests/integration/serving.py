"""Helpers for tests that run `heedful run` in a subprocess."""

from __future__ import annotations

import asyncio
import subprocess

import httpx

__all__ = ["wait_until_ready"]


async def wait_until_ready(http: httpx.AsyncClient, proc: subprocess.Popen[str], attempts: int = 600) -> None:
    """Poll ``/readyz`` until the bot says its platforms are connected; fail with its stderr if it died."""
    for _ in range(attempts):
        try:
            if (await http.get("/readyz")).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        assert proc.poll() is None, proc.communicate()[1]
        await asyncio.sleep(0.1)
    raise AssertionError("heedful run did not become ready")
