"""Generation by an OpenAI-compatible server: vLLM, Ollama, llama.cpp's server, hosted APIs.

The engine sends the chat messages (``POST {base_url}/chat/completions`` with
``stream: true``) and streams the ``delta.content`` of the server-sent events back, so
a reply reaches the platform as it is written, as with the local worker. Failures
before the first text are retried with backoff (connection refused or reset, timeouts,
429 with its ``Retry-After`` capped, 5xx); after text has been sent a failure ends the
reply with a clear error instead (retrying would repeat what the user already saw).
The API key is a secret: sent only in the ``Authorization`` header, never logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import httpx

from ..errors import GenerationError
from ..settings import ModelSettings

__all__ = ["OpenAICompatible", "ServerAnswered"]

log = logging.getLogger(__name__)

_RETRY_STATUS = {429, 500, 502, 503, 504}
_MAX_WAIT_S = 10.0  # a server's Retry-After is honoured up to this; longer waits fail the turn instead


class ServerAnswered(GenerationError):
    """The model server answered a request with an HTTP error (``status``) before any text."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class OpenAICompatible:
    """Streaming chat completions from ``settings.base_url`` (``start`` before use, ``stop`` after)."""

    def __init__(self, settings: ModelSettings) -> None:
        self.settings = settings
        self.model = settings.served_model or settings.id
        self._client: httpx.AsyncClient | None = None
        self._in_flight = 0
        self._last_error: str | None = None
        self._last_ok: float | None = None

    async def start(self) -> None:
        key = self.settings.api_key.get_secret_value() if self.settings.api_key is not None else ""
        self._client = httpx.AsyncClient(
            base_url=self.settings.base_url.rstrip("/") + "/",
            headers={"Authorization": f"Bearer {key}"} if key else {},
            timeout=httpx.Timeout(self.settings.request_timeout_s, connect=min(5.0, self.settings.request_timeout_s)),
        )

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def health(self) -> dict[str, Any]:
        """Alive while started; ``last_error``: why the last request failed (None after a success)."""
        return {"alive": self._client is not None, "stalled": False, "backend": self.settings.backend,
                "pending": self._in_flight, "rows": 0, "last_error": self._last_error}

    def _sampling(self) -> dict[str, Any]:
        """What the request asks of the sampler, beyond the messages."""
        return {"max_tokens": self.settings.max_new_tokens, "temperature": self.settings.temperature,
                "top_p": self.settings.top_p}

    async def stream(self, messages: Sequence[dict[str, str]], *, model: str | None = None
                     ) -> AsyncGenerator[str, None]:
        """The reply to ``messages``, as text deltas (from ``model``, a name the server serves; default
        ``self.model``)."""
        if self._client is None:
            raise GenerationError("the model server client is not running")
        payload = {"model": model or self.model, "messages": list(messages), "stream": True, **self._sampling()}
        sent = False
        self._in_flight += 1
        try:
            for attempt in range(self.settings.max_retries + 1):
                last = attempt == self.settings.max_retries
                try:
                    async with self._client.stream("POST", "chat/completions", json=payload) as response:
                        if response.status_code in _RETRY_STATUS and not last:
                            await response.aread()
                            await asyncio.sleep(self._wait(response, attempt))
                            continue
                        if response.status_code >= 400:
                            body = (await response.aread()).decode("utf-8", "replace")[:200]
                            why = f"the model server answered {response.status_code}: {body}"
                            self._failed(why)
                            raise ServerAnswered(why, response.status_code)
                        async for delta in _deltas(response):
                            sent = True
                            yield delta
                        self._last_error, self._last_ok = None, time.monotonic()
                        return
                except httpx.TransportError as err:
                    if sent:
                        raise self._failed(f"the model server stopped mid-reply ({type(err).__name__})") from None
                    if last:
                        raise self._failed(f"the model server at {self.settings.base_url} is unreachable "
                                           f"({type(err).__name__}); try again shortly") from None
                    await asyncio.sleep(self._backoff(attempt))
        finally:
            self._in_flight -= 1

    def _failed(self, why: str) -> GenerationError:
        self._last_error = why
        log.warning("generation failed: %s", why)
        return GenerationError(why)

    def _wait(self, response: httpx.Response, attempt: int) -> float:
        try:
            asked = float(response.headers.get("retry-after", ""))
        except ValueError:
            asked = self._backoff(attempt)
        return min(max(asked, 0.0), _MAX_WAIT_S)

    def _backoff(self, attempt: int) -> float:
        return float(min(self.settings.retry_backoff_s * 2**attempt, _MAX_WAIT_S))


async def _deltas(response: httpx.Response) -> AsyncGenerator[str, None]:
    """``choices[0].delta.content`` of each server-sent event, until ``[DONE]``."""
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue  # blank separators, comments, "event:" lines
        data = line[len("data:"):].strip()
        if data == "[DONE]":
            return
        try:
            event = json.loads(data)
            content = event["choices"][0].get("delta", {}).get("content")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise GenerationError(f"the model server sent an unreadable event: {data[:120]!r}") from None
        if content:
            yield str(content)
