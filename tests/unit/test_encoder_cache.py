"""The encoder keeps the vectors of recently embedded texts: a question corrected right after it
was asked is not embedded again, and what comes from memory is what the model would compute."""

from __future__ import annotations

import numpy as np

from engine import Engine


async def test_recent_texts_come_from_memory_unchanged_and_keep_no_text(tiny_engine: Engine) -> None:
    encoder = tiny_engine.encoder
    texts = ["Where is the recycling bin for glass?", "Is the canteen open on Sundays?",
             "Where is the recycling bin for glass?"]
    first = await encoder.embed(texts)
    computed = await encoder.run(encoder.encode_blocking, texts)
    assert np.allclose(first, computed, atol=1e-6)
    assert np.array_equal(first[0], first[2])
    again = await encoder.embed(texts[1:2])
    assert np.array_equal(again[0], first[1])
    again[0, 0] += 1.0  # callers get their own copy: what is remembered does not change
    assert np.array_equal((await encoder.embed(texts[1:2]))[0], first[1])
    assert not any(isinstance(k, str) for k in encoder._recent)  # digests only: no text is kept


async def test_the_memory_is_bounded_and_forgotten_on_request(tiny_engine: Engine) -> None:
    encoder = tiny_engine.encoder
    keep = encoder.settings.cache_texts
    await encoder.embed([f"message number {n}" for n in range(keep + 10)])
    assert len(encoder._recent) == keep
    encoder.forget_recent()
    assert len(encoder._recent) == 0
