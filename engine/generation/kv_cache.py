"""The model worker's key/value cache: a transformers ``DynamicCache`` whose layers append in place.

``DynamicLayer`` concatenates the whole cache with each new token: a copy of every layer's keys and
values per decode step, growing with the context (about a tenth of a 16-row step at 100 cached
tokens). Here each layer keeps a buffer with headroom in time, writes new states into it, and shows
``keys`` / ``values`` as views of the filled part; the buffer doubles when full (amortised O(1) per
token). Numerics are unchanged: attention reads the same values from a view. The compiled decode
step (``compiled_decode.py``) writes into the same buffers (``reserve`` / ``advance``).
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["HEADROOM", "from_layers", "layers_of", "new_cache", "rebuild", "stack"]

def layers_of(cache: object) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(keys, values) of each layer: views of the filled part, (rows, heads, time, dim)."""
    return [(layer.keys, layer.values) for layer in cache.layers]  # type: ignore[attr-defined]


HEADROOM = 64  # time steps allocated ahead, so that decoding appends in place


_cache_classes: tuple[Any, Any] | None = None


def _growing_classes() -> tuple[Any, Any]:
    """The cache and layer classes (built once, importing transformers lazily)."""
    global _cache_classes
    if _cache_classes is None:
        from transformers import DynamicCache
        from transformers.cache_utils import Cache, DynamicLayer

        class _GrowingLayer(DynamicLayer):  # type: ignore[no-untyped-call]
            def fill(self, keys: torch.Tensor, values: torch.Tensor) -> None:
                """Start from these states (rows, heads, time, dim), with headroom to append."""
                self.device = keys.device
                self.is_initialized = True
                self._length = 0
                self.kbuf = keys.new_empty((*keys.shape[:2], keys.shape[2] + HEADROOM, keys.shape[3]))
                self.vbuf = values.new_empty((*values.shape[:2], values.shape[2] + HEADROOM, values.shape[3]))
                self._append(keys, values)

            def reserve(self, n: int) -> int:
                """Room for ``n`` more time steps in the buffers (doubling them when full); returns the
                length filled so far, where the next states go (``compiled_decode.py`` writes them)."""
                need = self._length + n
                if need > self.kbuf.shape[-2]:
                    size = max(need + HEADROOM, 2 * self.kbuf.shape[-2])
                    for name in ("kbuf", "vbuf"):
                        old = getattr(self, name)
                        new = old.new_empty((*old.shape[:2], size, old.shape[3]))
                        new[:, :, : self._length] = old[:, :, : self._length]
                        setattr(self, name, new)
                return self._length

            def advance(self, n: int) -> None:
                """``n`` more time steps of the buffers hold states: ``keys`` / ``values`` show them."""
                self._length += n
                self._views: list[torch.Tensor | None] | None = None  # made when read (the compiled step never does)

            # ``keys`` / ``values``: views of the filled part of the buffers, made when first read after
            # an ``advance`` (two views per layer a step, ~0.2 ms of a 30-layer step, that the compiled
            # step would otherwise pay for nothing). Assigning (transformers' own ``__init__``, ``reset``)
            # replaces them until the next ``advance``.
            @property
            def keys(self) -> torch.Tensor | None:
                return self._view(0)

            @keys.setter
            def keys(self, value: torch.Tensor | None) -> None:
                self._set_view(0, value)

            @property
            def values(self) -> torch.Tensor | None:
                return self._view(1)

            @values.setter
            def values(self, value: torch.Tensor | None) -> None:
                self._set_view(1, value)

            def _view(self, i: int) -> torch.Tensor | None:
                views = self.__dict__.get("_views")
                if views is None:
                    if "kbuf" not in self.__dict__:
                        return None
                    views = self._views = [self.kbuf[:, :, : self._length], self.vbuf[:, :, : self._length]]
                view: torch.Tensor | None = views[i]
                return view

            def _set_view(self, i: int, value: torch.Tensor | None) -> None:
                views: list[torch.Tensor | None] = self.__dict__.get("_views") or [None, None]
                views[i] = value
                self._views = views

            def _append(self, k: torch.Tensor, v: torch.Tensor) -> None:
                start = self.reserve(k.shape[-2])
                self.kbuf[:, :, start : start + k.shape[-2]] = k
                self.vbuf[:, :, start : start + k.shape[-2]] = v
                self.advance(k.shape[-2])

            def update(
                self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
            ) -> tuple[torch.Tensor, torch.Tensor]:
                if not self.is_initialized:
                    self.fill(key_states, value_states)
                else:
                    self._append(key_states, value_states)
                return self.keys, self.values  # type: ignore[return-value]

        class _GrowingCache(DynamicCache):
            def __init__(self) -> None:
                Cache.__init__(self, layer_class_to_replicate=_GrowingLayer)

        _cache_classes = (_GrowingCache, _GrowingLayer)
    return _cache_classes


def new_cache() -> object:
    """An empty cache; the first forward pass through it fills each layer."""
    return _growing_classes()[0]()


def from_layers(layers: list[tuple[torch.Tensor, torch.Tensor]]) -> object:
    cache_class, layer_class = _growing_classes()
    cache = cache_class()
    for k, v in layers:
        layer = layer_class()
        layer.fill(k, v)
        cache.layers.append(layer)
    return cache


def rebuild(cache: object, fn) -> object:  # type: ignore[no-untyped-def]
    """A cache of ``fn`` applied to each layer's keys and values (rows kept, padding dropped, ...)."""
    return from_layers([(fn(k), fn(v)) for k, v in layers_of(cache)])


def stack(a: object, b: object, pad_a: int, pad_b: int) -> object:
    """Stack two caches on the batch axis, left-padding the shorter in time."""

    def pad(t: torch.Tensor, n: int) -> torch.Tensor:
        return torch.nn.functional.pad(t, (0, 0, n, 0)) if n else t

    return from_layers(
        [
            (torch.cat([pad(ka, pad_a), pad(kb, pad_b)]), torch.cat([pad(va, pad_a), pad(vb, pad_b)]))
            for (ka, va), (kb, vb) in zip(layers_of(a), layers_of(b), strict=True)
        ]
    )
