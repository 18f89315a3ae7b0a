"""The worker's repetition penalty is the usual one (transformers' RepetitionPenaltyLogitsProcessor,
over the prompt's last 256 tokens and the reply), applied as one mask per batch."""

from __future__ import annotations

import asyncio
from pathlib import Path

import torch

from engine.generation.model_loader import load_model
from engine.generation.worker import ModelWorker
from engine.settings import ModelSettings

PROMPTS = ["hello hello hello there", "the cat sat on the mat and the cat", "a b a b a b", "tell me a story"]


def test_greedy_text_equals_transformers_generate_with_the_same_penalty(models_dir: Path) -> None:
    settings = ModelSettings(id="tiny:4", matmul_dtype="float32", max_new_tokens=20, repetition_penalty=1.3)
    loaded = load_model(settings, models_dir)
    prompts = [list(loaded.tokenizer(p)["input_ids"]) for p in PROMPTS]

    async def worker_ids() -> list[list[int]]:
        worker = ModelWorker(loaded, settings)
        worker._stop_ids = set()  # fixed length, as generate below
        worker.start()
        try:
            streams = [worker.submit(p) for p in prompts]
            for stream in streams:
                async for _ in stream:
                    pass
            return [stream._request.generated for stream in streams]
        finally:
            await worker.stop()

    ours = asyncio.run(worker_ids())
    for prompt, got in zip(prompts, ours, strict=True):
        with torch.no_grad():
            ref = loaded.model.generate(torch.tensor([prompt]),
                                        attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                        do_sample=False, max_new_tokens=20, min_new_tokens=20,
                                        repetition_penalty=1.3, pad_token_id=0)
        assert got == ref[0, len(prompt):].tolist()


def test_exempt_tokens_are_not_penalised(models_dir: Path) -> None:
    settings = ModelSettings(id="tiny:4", matmul_dtype="float32", max_new_tokens=12, repetition_penalty=2.0)
    loaded = load_model(settings, models_dir)
    prompt = list(loaded.tokenizer(PROMPTS[1])["input_ids"])

    async def run(exempt: frozenset[int]) -> list[int]:
        worker = ModelWorker(loaded, settings)
        worker._stop_ids = set()
        worker.start()
        try:
            stream = worker.submit(prompt, exempt=exempt)
            async for _ in stream:
                pass
            return stream._request.generated
        finally:
            await worker.stop()

    plain, spared = asyncio.run(run(frozenset())), asyncio.run(run(frozenset(prompt)))
    with torch.no_grad():
        ref = loaded.model.generate(torch.tensor([prompt]),
                                    attention_mask=torch.ones(1, len(prompt), dtype=torch.long), do_sample=False,
                                    max_new_tokens=12, min_new_tokens=12, repetition_penalty=2.0, pad_token_id=0)
    assert plain == ref[0, len(prompt):].tolist()
    assert spared != plain  # sparing the prompt's tokens changes what the penalty pushes away
