"""Linear layers multiplied by oneDNN: in bfloat16 on CPUs that have it (the LLM when it decodes, the
encoder and the verifier), else in float32 on the LLM's own weights; the float32 weights are always kept.

On a CPU with AMX or AVX-512 BF16, oneDNN multiplies bfloat16 weights pre-packed once into its
blocked layout several times faster than float32 at the sizes an LLM decodes and an encoder
embeds (docs/BENCHMARKS.md). ``pack_linears`` gives every ``nn.Linear`` of a module such a copy;
the copy is used only inside ``packed()`` (the model worker's steps, the encoder thread's calls)
and only without gradients, so training, LoRA and evaluation scripts compute exactly as before.

Without bfloat16, the model worker's ``pack_linears(..., torch.float32)`` routes the same calls through
oneDNN's float32 product on the weight itself (no copy): torch's default float32 product is MKL's, which
on an AVX2 AMD EPYC ran a prefill's products 1.4x and the LM head 1.8x slower than oneDNN's
(docs/BENCHMARKS.md, "A single stream's products as inductor's own loops"). ``pick_matmul_kernel``
chooses; ``model.matmul_kernel`` overrides. The encoder and the verifier keep torch's float32 product:
at their sizes (~20 rows of 384-wide layers) oneDNN's was slower.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import torch

__all__ = ["cpu_has_bf16", "onednn_available", "pick_matmul_dtype", "pick_matmul_kernel", "packed", "pack_linears",
           "packed_weight", "unpack_linear", "packed_product"]


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AMX or AVX-512 BF16) and torch can use it (oneDNN)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    return bool({"amx_bf16", "avx512_bf16"} & flags) and onednn_available()


def pick_matmul_dtype(requested: str, device: torch.device, dtype: torch.dtype) -> torch.dtype:
    """The precision of the linear layers' weights for decoding on ``device`` (see ``pack_linears``)."""
    if device.type != "cpu" or dtype != torch.float32:
        return dtype  # accelerators and explicit low-precision models run as loaded
    if requested == "auto":
        return torch.bfloat16 if cpu_has_bf16() else torch.float32
    chosen: torch.dtype = getattr(torch, requested)
    return chosen


def onednn_available() -> bool:
    """Whether this torch build has oneDNN's linear ops (x86 and arm64 builds do)."""
    return bool(torch.backends.mkldnn.is_available())  # type: ignore[no-untyped-call]


def pick_matmul_kernel(requested: str, device: torch.device, dtype: torch.dtype, matmul_dtype: torch.dtype) -> str:
    """Which library multiplies a ``dtype`` model's linear layers when decoding on ``device`` in ``matmul_dtype``
    (``pick_matmul_dtype``): ``onednn`` (always, for packed bfloat16; by default for float32 on a CPU where
    torch has it; the layers are then given to ``pack_linears``) or ``blas`` (torch's default product: MKL
    on x86 CPUs, the device's own library elsewhere, and any model loaded in another dtype than float32)."""
    if device.type != "cpu" or dtype != torch.float32 or matmul_dtype not in (torch.float32, torch.bfloat16) \
            or not onednn_available():
        return "blas"
    if matmul_dtype == torch.bfloat16:
        return "onednn"
    return "blas" if requested == "blas" else "onednn"


_packed = threading.local()


@contextmanager
def packed() -> Iterator[None]:
    """Within this block, in this thread, packed linear layers use their bfloat16 copy: the model
    worker's prefill and decode steps, and the encoder thread's embeddings and verifier passes;
    everywhere else (LoRA training, its cached activations, evaluation) they compute in float32
    exactly as before."""
    previous = getattr(_packed, "on", False)
    _packed.on = True
    try:
        yield
    finally:
        _packed.on = previous


class _PackedLinear(torch.nn.Linear):
    """``nn.Linear`` that, when no gradient is wanted, multiplies through oneDNN: by a bfloat16 copy of
    its weight pre-packed for it (AMX / AVX-512 BF16 kernels; packing once instead of at every call is
    what makes bfloat16 pay on CPU), or by its float32 weight itself. The fp32 weight stays the
    parameter: training, LoRA and ``functional_call`` substitutions use it (the packed copy is used
    only while ``weight`` is still the parameter it was packed from). Input and output keep their dtype."""

    _packed: torch.Tensor
    _packed_from: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or not getattr(_packed, "on", False) or self.weight is not self._packed_from:
            return torch.nn.functional.linear(x, self.weight, self.bias)
        y = packed_product(x, self._packed)
        return y if self.bias is None else y + self.bias

    def __deepcopy__(self, memo: dict[int, Any]) -> torch.nn.Linear:
        """A plain ``nn.Linear`` copy: a copy is made to be changed (LoRA merges, training), which would
        leave a packed copy stale; and oneDNN's packed tensors cannot be deep-copied anyway."""
        clone = torch.nn.Linear.__new__(torch.nn.Linear)
        memo[id(self)] = clone
        for key, value in self.__dict__.items():
            if key not in ("_packed", "_packed_from"):
                clone.__dict__[key] = copy.deepcopy(value, memo)
        return clone


def pack_linears(model: torch.nn.Module, dtype: torch.dtype = torch.bfloat16) -> int:
    """Give every ``nn.Linear`` of ``model`` a weight for oneDNN's product when decoding: a packed bfloat16
    copy, or (``dtype`` float32) the float32 weight itself, no copy made; returns how many layers.

    Raises ``RuntimeError`` where torch lacks the oneDNN ops (the caller then stays on torch's product).
    """
    linears = [m for m in model.modules() if type(m) is torch.nn.Linear]
    probe = torch.ones(1, 8, dtype=dtype)
    weight = torch.ops.mkldnn._reorder_linear_weight(probe, 1) if dtype == torch.bfloat16 else probe
    torch.ops.mkldnn._linear_pointwise(probe, weight, None, "none", [], "")
    for m in linears:
        with torch.no_grad():
            if dtype == torch.bfloat16:
                packed = torch.ops.mkldnn._reorder_linear_weight(m.weight.detach().to(torch.bfloat16), 1)
            else:
                packed = m.weight.detach()
        m.__class__ = _PackedLinear
        # Plain attributes, not Module.__setattr__: the weight is a Parameter, and assigning it would
        # register it a second time (an extra ``_packed_from`` entry in every state_dict).
        object.__setattr__(m, "_packed", packed)
        object.__setattr__(m, "_packed_from", m.weight)
    return len(linears)


def packed_weight(module: torch.nn.Module) -> torch.Tensor | None:
    """The weight ``pack_linears`` gave ``module`` for oneDNN (None: it has none, or it is stale)."""
    if isinstance(module, _PackedLinear) and module.weight is module._packed_from:
        return module._packed
    return None


def unpack_linear(module: torch.nn.Module) -> None:
    """Drop ``module``'s weight for oneDNN (its decoding moved to a fused copy elsewhere, see
    ``direct_forward.py``); the layer then computes with torch's own product everywhere."""
    if isinstance(module, _PackedLinear):
        del module._packed, module._packed_from
        cast(Any, module).__class__ = torch.nn.Linear


def packed_product(x: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
    """``x`` times a weight given by ``pack_linears`` (bfloat16, packed by
    ``torch.ops.mkldnn._reorder_linear_weight``, or a plain float32 weight), by oneDNN, in the weight's
    dtype; in and out in ``x``'s dtype."""
    y: torch.Tensor = torch.ops.mkldnn._linear_pointwise(x.to(packed.dtype), packed, None, "none", [], "")
    return y.to(x.dtype)
