"""A local OpenAI-compatible chat completions server (the wire protocol vLLM, Ollama and
llama.cpp's server speak): ``POST /v1/chat/completions`` with ``stream: true`` answers in
server-sent events, ``data: {"choices": [{"delta": {"content": ...}}]}`` ... ``data: [DONE]``.

It answers ``Echo: <the last user message>`` in pieces of a few characters, records every
request, and can be told to fail: ``fail(status, times, retry_after)`` answers the next
requests with an HTTP error, ``drop_after(n)`` closes the connection after n deltas.
Like vLLM with runtime LoRA updating, ``POST /v1/load_lora_adapter`` ``{lora_name, lora_path}``
makes ``lora_name`` a model it serves (``loras``: name -> path; every load in ``lora_loads``);
``restart()`` forgets them, as a restarted server does; with ``refuse_loras`` set, loads fail with it.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["FakeOpenAI"]


@dataclass
class _Fault:
    status: int
    times: int
    retry_after: str | None


@dataclass
class FakeOpenAI:
    key: str = ""
    model: str = "fake-7b-instruct"
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    loras: dict[str, str] = field(default_factory=dict)
    lora_loads: list[dict[str, Any]] = field(default_factory=list)
    refuse_loras: str = ""
    _faults: list[_Fault] = field(default_factory=list)
    _drop_after: int | None = None
    _runner: web.AppRunner | None = None
    port: int = 0

    async def __aenter__(self) -> FakeOpenAI:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        app.router.add_post("/v1/load_lora_adapter", self._load_lora)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        assert site._server is not None
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def fail(self, status: int, times: int = 1, retry_after: str | None = None) -> None:
        self._faults.append(_Fault(status, times, retry_after))

    def drop_after(self, deltas: int) -> None:
        self._drop_after = deltas

    def restart(self) -> None:
        self.loras.clear()

    async def _load_lora(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.lora_loads.append(body)
        if self.refuse_loras:
            return web.json_response({"error": {"message": self.refuse_loras}}, status=400)
        if body["lora_name"] in self.loras:
            return web.json_response({"error": {"message": f"The lora adapter '{body['lora_name']}' has already "
                                                "been loaded."}}, status=400)
        self.loras[body["lora_name"]] = body["lora_path"]
        return web.Response(text=f"Success: LoRA adapter '{body['lora_name']}' added successfully.")

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        if self.key and request.headers.get("Authorization") != f"Bearer {self.key}":
            return web.json_response({"error": {"message": "invalid api key"}}, status=401)
        if self._faults:
            fault = self._faults[0]
            fault.times -= 1
            if fault.times <= 0:
                self._faults.pop(0)
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            return web.json_response({"error": {"message": "busy"}}, status=fault.status, headers=headers)
        if body.get("model") != self.model and body.get("model") not in self.loras:
            return web.json_response({"error": {"message": f"model {body.get('model')!r} not served"}}, status=404)
        last = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
        text = f"Echo: {last}"
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        pieces = [text[i:i + 5] for i in range(0, len(text), 5)]
        for n, piece in enumerate(pieces):
            if self._drop_after is not None and n >= self._drop_after:
                self._drop_after = None
                assert request.transport is not None
                request.transport.close()  # the server goes away mid-reply
                return response
            event = {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
            await response.write(f"data: {json.dumps(event)}\n\n".encode())
            await asyncio.sleep(0)
        await response.write(b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}\n\n')
        await response.write(b"data: [DONE]\n\n")
        return response
