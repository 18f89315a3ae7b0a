"""The direct forward's one-token decode step compiled by ``torch.compile`` (inductor, CPU).

Why: a one-token step of SmolLM2-135M is ~120 matrix products (the real work, ~16 ms on two
cores) and ~1,200 small ops (norms, rotary, dtype conversions, views, attention) that cost
their dispatch, ~9 ms and more on a busy machine. Inductor fuses the small ops into a few C++
loops around the same oneDNN products: a single stream decodes ~1.4-1.7x faster
(docs/BENCHMARKS.md, "Compiled decode step").

What it costs, and how the worker hides it: compiling takes ~30-60 s of CPU on two cores, in
every process (with the weights frozen into the graph, inductor's on-disk graph caches are
bypassed; only its compiled kernels are reused). So ``CompiledDecode.warm`` runs in a background
thread at the lowest CPU priority, the worker decodes through the eager direct forward until both
graphs are ready (one row; two rows or more, whose row count is symbolic), and a graph that would
have to compile again at serving time raises instead (``fail_on_recompile``), after which the
worker stays eager for good. A machine without a C++ compiler, or a torch that cannot compile,
logs why and stays eager.

Stopping mid-compile: Python 3.11 ends a daemon thread that is still running at interpreter exit
by unwinding it from inside whatever C++ it is in, and torch's C++ is ``noexcept`` there, so the
process aborted ("terminate called without an active exception", exit -6) instead of exiting. So
``cancel`` raises ``CompileCancelled`` in the compile thread (``PyThreadState_SetAsyncExc``: no cost
while it runs, delivered at its next Python instruction), and an ``atexit`` hook cancels every
compile still running and joins its thread before the interpreter starts to finalise.

Same arithmetic as ``DirectForward`` (float32 activations; the products on the weights the direct
forward already holds, packed bfloat16 on CPUs that have it, else float32, so no weight is copied):
logits within float rounding, greedy text identical on the tested prompts
(``tests/unit/test_compiled_decode.py``). On a CPU without bfloat16 (AVX2) the float32 products are most
of a step, so fusing the small ops around them gains little there (~1.05-1.2x); but a single row's
products are written as multiply-and-sum reductions that inductor turns into its own vectorised loops
over each weight, which read the weights about twice as fast as the libraries' products at one row, so a
single stream decodes ~2x faster (``_one_row``; docs/BENCHMARKS.md, "A single stream's products as
inductor's own loops").
Rows with a channel's LoRA version go through the same graphs: each LoRA part's per-row A and B are
inputs of the step (zeros for rows without a version), so a batch that mixes channels' versions does
not fall back to the eager step. Prefill stays on the direct forward.
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import shutil
import threading
import time
import types
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.lora import LoraLinear, rows_delta
from ..nn.openmp import releasing
from ..nn.packed_linear import packed_product
from ..settings import ModelSettings
from ..understanding.foreground import lower_priority
from .direct_forward import DirectForward, _rotate_half, side_by_side
from .kv_cache import from_layers, new_cache

if TYPE_CHECKING:
    from .model_loader import LoadedModel

__all__ = ["CompileCancelled", "CompiledDecode", "RecompileNeeded", "compile_applies", "compiler_available",
           "forced_steps", "why_eager"]

log = logging.getLogger(__name__)

# How long the exit hook waits for a cancelled compile to unwind: the exception lands at the compile
# thread's next Python instruction, which can be behind one C++ kernel's build (seconds).
EXIT_JOIN_S = 60.0


class RecompileNeeded(RuntimeError):
    """The compiled step cannot serve this batch without compiling again (or failed): decode eagerly."""


class CompileCancelled(BaseException):
    """Raised inside the compile thread by ``CompiledDecode.cancel``. A ``BaseException``, so that no
    ``except Exception`` in dynamo or inductor swallows it on its way out."""


_running: weakref.WeakSet[CompiledDecode] = weakref.WeakSet()  # compiles whose thread may be running


@atexit.register
def _cancel_running_compiles() -> None:
    """At interpreter exit, before daemon threads are torn down (see the module docstring)."""
    for compiled in list(_running):
        compiled.cancel(join_s=EXIT_JOIN_S)


def compiler_available() -> bool:
    """Whether a C++ compiler is on the PATH for inductor's CPU kernels."""
    return any(shutil.which(name) for name in ("g++", "c++", "clang++"))


def why_eager(settings: ModelSettings, device: str, matmul_dtype: str) -> str:
    """Why the decode step would stay eager with these settings on a ``device`` decoding its products in
    ``matmul_dtype``; "" where it compiles (``heedful config`` says the same without loading the model)."""
    for applies, why in (
        (settings.compile_decode, "model.compile_decode is off"),
        (settings.direct_forward, "model.direct_forward is off"),
        (device == "cpu", f"the compiled step is for CPUs; this model runs on {device}"),
        # inductor's CPU backend, on the products the direct forward holds
        (matmul_dtype in ("bfloat16", "float32"),
         f"the compiled step multiplies bfloat16 or float32, not {matmul_dtype}"),
        (compiler_available(), "no C++ compiler (g++, c++ or clang++) for torch.compile"),
    ):
        if not applies:
            return why
    return ""


def compile_applies(settings: ModelSettings, loaded: LoadedModel, direct: DirectForward | None) -> bool:
    """Whether the worker compiles its decode step: asked for, on CPU, through the direct forward (packed
    bfloat16 or float32 products), with a C++ compiler here (where it was asked for and is not, it says
    why in the log, once)."""
    if direct is None:
        return False
    why = why_eager(settings, loaded.device.type, loaded.matmul_dtype)
    if why:
        if settings.compile_decode:
            log.info("the decode step stays eager: %s", why)
        return False
    if direct.head.loras:
        log.info("the decode step stays eager: the compiled step does not cover a LoRA on the LM head")
        return False
    return True


class _Step(nn.Module):
    """One new token per row through every layer, appending keys/values to the step's buffers."""

    def __init__(self, direct: DirectForward) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim, self.eps = direct.heads, direct.kv_heads, direct.head_dim, direct.eps
        self.embed, self.cos, self.sin, self.norm = direct.embed.weight, direct.cos, direct.sin, direct.norm
        # Per layer: (norm in, q/k/v, o, norm after attention, gate/up, down), the products' weights as
        # the direct forward holds them (plain attributes: frozen into the graph), no copy made: one
        # packed bfloat16 tensor per product, or the float32 weights of its layers side by side.
        self.layers = [(layer.norm_in, _weights(layer.qkv), _weights(layer.o), layer.norm_post,
                        _weights(layer.gate_up), _weights(layer.down)) for layer in direct.layers]
        self.head = _weights(direct.head)
        self.bf16 = direct.head.packed is not None
        # The LoRA-wrapped parts of each product, in the order the step visits them: (output columns,
        # scaling) per part. The step takes every part's per-row A and B as inputs, so one graph
        # serves rows of any channels' versions, and rows without one (A = B = 0).
        self.lora_modules: list[LoraLinear] = []
        self.lora_parts: list[list[list[tuple[int, int, float]]]] = []
        for layer in direct.layers:
            parts = []
            for product in (layer.qkv, layer.o, layer.gate_up, layer.down):
                parts.append([(start, end, float(m.scaling)) for start, end, m in product.loras])
                self.lora_modules += [m for _, _, m in product.loras]
            self.lora_parts.append(parts)
        if direct.head.loras:
            raise ValueError("the compiled step does not cover a LoRA on the LM head")

    def forward(self, ids: torch.Tensor, positions: torch.Tensor, start: torch.Tensor, length: torch.Tensor,
                attend: torch.Tensor | None, keys: list[torch.Tensor], values: list[torch.Tensor],
                lora: list[torch.Tensor]) -> torch.Tensor:
        """Logits (rows, vocab) of ``ids`` (rows, 1) at ``positions`` (rows,); their keys and values are
        written at time ``start`` (a (1,) tensor) of each layer's buffers, and attention reads the first
        ``len(length)`` (= start + 1) of them; ``attend`` (rows, 1, 1, start + 1) masks left padding
        (None: no row has any). ``length`` is a tensor only so that its size is symbolic (one graph for
        every length). ``lora``: each LoRA part's per-row A (rows, rank, in) and B (rows, out, rank), in
        ``lora_modules``' order."""
        rows, total = ids.shape[0], length.shape[0]
        heads, kv, dim = self.heads, self.kv_heads, self.head_dim
        groups = heads // kv
        ab = iter(lora)

        def product(h: torch.Tensor, weight: _Weights, parts: list[tuple[int, int, float]]) -> torch.Tensor:
            y = _times(h, weight)
            for first, end, scaling in parts:  # as LoraLinear.row_delta
                y[..., first:end] += rows_delta(h, next(ab), next(ab), scaling)
            return y

        x = F.embedding(ids, self.embed)                                          # (rows, 1, hidden)
        cos = self.cos[positions].view(rows, 1, 1, dim)
        sin = self.sin[positions].view(rows, 1, 1, dim)
        for i, (norm_in, qkv_w, o_w, norm_post, gate_up_w, down_w) in enumerate(self.layers):
            qkv_parts, o_parts, gate_up_parts, down_parts = self.lora_parts[i]
            h = F.rms_norm(x, (x.shape[-1],), norm_in, self.eps)
            qkv = product(h, qkv_w, qkv_parts).view(rows, 1, heads + 2 * kv, dim)
            qk = qkv[:, :, : heads + kv]
            qk = (qk * cos + _rotate_half(qk) * sin).transpose(1, 2)
            keys[i].index_copy_(2, start, qk[:, heads:])
            values[i].index_copy_(2, start, qkv[:, :, heads + kv:].transpose(1, 2))
            folded = qk[:, :heads].reshape(rows, kv, groups, dim)  # query heads sharing a key/value head
            out = F.scaled_dot_product_attention(folded, keys[i][:, :, :total], values[i][:, :, :total],
                                                 attn_mask=attend)
            x = x + product(out.reshape(rows, 1, heads * dim), o_w, o_parts)
            h = F.rms_norm(x, (x.shape[-1],), norm_post, self.eps)
            gate, up = product(h, gate_up_w, gate_up_parts).chunk(2, dim=-1)
            x = x + product(F.silu(gate) * up, down_w, down_parts)
        last = F.rms_norm(x, (x.shape[-1],), self.norm, self.eps)
        return _times(last, self.head)[:, -1]


# The rows the many-row graph picks its products for (``_Product.times``): its row count is symbolic, so it
# cannot branch on it; a full batch at the default ``model.max_batch``.
BATCH_ROWS = 16

# A product's packed bfloat16, or its float32 weights and the product that multiplies them at two rows or more.
_Weights = tuple[torch.Tensor | None, tuple[torch.Tensor, ...], Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]


def _weights(product: Any) -> _Weights:
    return product.packed, tuple(product.weights), product.times(BATCH_ROWS)


def _times(x: torch.Tensor, weight: _Weights) -> torch.Tensor:
    """``x`` times a product's weights (``_weights``), as ``DirectForward``'s product computes it; one row in
    float32 as a multiply-and-sum that inductor fuses into one pass over each weight (see ``_one_row``).
    Beyond one row the row count is symbolic, so the product is the one chosen for a full batch."""
    packed, weights, times = weight
    if packed is not None:
        return packed_product(x, packed)
    return side_by_side(_one_row if x.shape[0] == 1 else times, x, weights)


def _one_row(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x`` (1, 1, in) times ``weight`` (out, in)ᵀ as inductor's own vectorised reduction. Why: a single
    row's product reads every weight once and does little else, and inductor's loop over the weight
    reads it at ~15 GB/s on two AVX2 cores where MKL's product reached ~7 and oneDNN's ~11
    (docs/BENCHMARKS.md, "A single stream's products as inductor's own loops"). Never run eagerly (it
    would build the whole (out, in) product in memory): only inside the compiled graph."""
    return (x.unsqueeze(-2) * weight).sum(-1)


def _own_forward(step: _Step) -> Callable[..., torch.Tensor]:
    """``step.forward`` on a code object of its own. Dynamo keeps compiled graphs per code object (at
    most 8 per object): sharing ``_Step.forward``'s would let a process's fifth model fail to compile,
    and keep every stopped worker's graphs, with their frozen weights, alive."""
    fn = _Step.forward
    code = fn.__code__.replace()
    own = types.FunctionType(code, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    return types.MethodType(own, step)


class CompiledDecode:
    """The compiled one-token step for a ``DirectForward`` (see the module docstring).

    Lifecycle, as ``state`` reports it: ``waiting`` (created), ``compiling`` (``warm`` running),
    ``compiled`` (serving), or ``eager: <why>`` (it failed to build, or a batch would have made it
    compile again; the worker decodes eagerly from then on)."""

    def __init__(self, direct: DirectForward) -> None:
        self._layers = len(direct.layers)
        self._step = _Step(direct)
        self._fn: Any = None  # torch.compile's wrapper, made by ``warm``: importing dynamo costs ~1 s
        self._done = threading.Event()
        self._cancelled = threading.Event()
        self._thread: threading.Thread | None = None
        self._zeros: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}  # (LoRA part, rows): A, B
        self.state = "waiting"
        self.compile_s: float | None = None  # how long ``warm`` took

    @property
    def ready(self) -> bool:
        """Both graphs are compiled and nothing has gone wrong since."""
        return self.state == "compiled"

    def warm_in_background(self, delay_s: float) -> threading.Thread:
        """``warm`` in a daemon thread after ``delay_s`` (short-lived processes never pay for a compile
        they would not use), at the lowest CPU priority, handing its OpenMP team back afterwards."""

        def run() -> None:
            try:
                try:
                    lower_priority()
                    if not self._cancelled.wait(delay_s):
                        releasing(self.warm)()
                    else:
                        self.state = "eager: its worker stopped before the compile started"
                except CompileCancelled:
                    self.state = "eager: the compile was cancelled (its worker stopped)"
                    log.info("the decode step's compile was cancelled: its worker stopped")
                finally:
                    self._done.set()
                    _running.discard(self)
            except CompileCancelled:
                pass  # it landed just after the compile ended: nothing left to stop

        thread = threading.Thread(target=run, name="heedful-compile-decode", daemon=True)
        self._thread = thread
        _running.add(self)
        thread.start()
        return thread

    def cancel(self, join_s: float = 0.0) -> None:
        """Its worker stopped (or the process exits): a compile not yet started never starts, and one
        under way in ``warm_in_background``'s thread is interrupted (``CompileCancelled``); waits up
        to ``join_s`` for that thread to end."""
        self._cancelled.set()  # a compile still waiting out its delay never starts
        thread = self._thread
        if self.state == "compiling" and thread is not None and thread.is_alive() and thread.ident is not None:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident),
                                                       ctypes.py_object(CompileCancelled))
            if join_s > 0:
                thread.join(join_s)
        self._done.set()

    def warm(self) -> None:
        """Compile both graphs (one row; two or more) on a dummy cache. Blocking: ~30-90 s of CPU for
        SmolLM2-135M on two cores. Never raises: a failure leaves ``state`` saying why."""
        from torch._inductor import config as inductor_config

        self.state = "compiling"
        log.info("compiling the decode step (torch.compile; about a minute of CPU on two cores)")
        started = time.perf_counter()
        try:
            self._fn = torch.compile(_own_forward(self._step), fullgraph=True)
            # Frozen: the packed weights become constants of the graph (unfrozen, inductor cannot lower
            # the oneDNN product on them). A patch, not a setting: nothing else in the process changes.
            # Float32 weights are multiplied where they are: inductor's own prepacking would add a
            # packed copy of every weight (+2 GB for SmolLM2, measured).
            # No automatic dynamic shapes: dynamo remembers the sizes it saw per function name, not per code
            # object, so after another model's step (other sizes) it made this model's weight sizes
            # symbolic, and inductor's float32 one-row graph then failed to build ("name 's21' is not
            # defined"). Every size meant to vary is marked dynamic in ``_call``.
            with torch.no_grad(), inductor_config.patch({"freezing": True, "cpp.weight_prepack": self._step.bf16}), \
                    torch._dynamo.config.patch(automatic_dynamic_shapes=False):
                for rows in (1, 2):
                    shape = (rows, self._step.kv_heads, 4, self._step.head_dim)
                    cache = from_layers([(torch.zeros(shape), torch.zeros(shape)) for _ in range(self._layers)])
                    ids = torch.ones((rows, 1), dtype=torch.long)
                    self._call(ids, torch.ones((rows, 5), dtype=torch.long), torch.full((rows,), 4), cache)
        except Exception as err:  # no compiler after all, an op inductor cannot lower, ...: stay eager
            self.state = f"eager: the compiled step failed to build ({type(err).__name__}: {str(err)[:200]})"
            log.warning("decoding stays on the eager direct forward: %s", self.state, exc_info=True)
        else:
            self.compile_s = time.perf_counter() - started
            self.state = "compiled"
            log.info("compiled decode step ready in %.1f s", self.compile_s)
        self._done.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until ``warm`` has finished; True when the step is ready."""
        self._done.wait(timeout)
        return self.ready

    def covers(self, rows: Sequence[Any], mask: torch.Tensor) -> bool:
        """Whether the step serves this batch: ready, and one row only where it has no padding (its
        graph takes no mask). Rows under channels' LoRA versions are served alike (``_lora_inputs``)."""
        if not self.ready:
            return False
        return len(rows) > 1 or bool(mask.all())

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any) -> torch.Tensor:
        """One step, as ``DirectForward.__call__`` for ``ids`` (rows, 1): logits (rows, vocab), the
        new keys/values appended to ``cache``. Raises ``RecompileNeeded`` (and stays so: ``state``
        says why) where a graph would have to compile again, or failed; ``cache`` then holds what
        it held before, ready for the eager step."""
        try:
            with torch.compiler.set_stance("fail_on_recompile"):
                return self._call(ids, mask, positions[:, -1], cache)
        except Exception as err:
            self.state = f"eager: {type(err).__name__}: {str(err)[:200]}"
            log.warning("decoding turns back to the eager direct forward for good: %s", self.state)
            raise RecompileNeeded(self.state) from err

    def _call(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any) -> torch.Tensor:
        layers = cache.layers
        # Room for one more than this token: the attended part is then never the whole buffer, which
        # the graph would have to treat apart (a view of all of it is contiguous, of a part is not).
        start = layers[0].reserve(2)
        for layer in layers[1:]:
            layer.reserve(2)
        rows = ids.shape[0]
        length = torch.empty(start + 1, dtype=torch.int8)
        # Symbolic sizes, so that one graph serves them all: the length attended, the buffers'
        # capacity (they double as a reply grows) and, beyond one row, the row count.
        torch._dynamo.mark_dynamic(length, 0)
        attend = None
        if rows > 1:
            attend = mask.bool()[:, None, None, :]
            for t in (ids, positions, attend):
                torch._dynamo.mark_dynamic(t, 0)
            torch._dynamo.mark_dynamic(attend, 3)
        for layer in layers:
            for buf in (layer.kbuf, layer.vbuf):
                if not hasattr(buf, "_dynamo_dynamic_indices"):  # a new buffer (it grew, or a new batch)
                    torch._dynamo.mark_dynamic(buf, 2)
                    if rows > 1:
                        torch._dynamo.mark_dynamic(buf, 0)
        lora = self._lora_inputs(rows)
        if rows > 1:
            for t in lora:
                torch._dynamo.mark_dynamic(t, 0)
        logits: torch.Tensor = self._fn(ids, positions, torch.tensor([start]), length, attend,
                                        [layer.kbuf for layer in layers], [layer.vbuf for layer in layers], lora)
        for layer in layers:
            layer.advance(1)
        return logits

    def _lora_inputs(self, rows: int) -> list[torch.Tensor]:
        """Each LoRA part's per-row A and B, as ``use_rows`` set them for this step (the worker's rows'
        versions, slot 0 for rows without one), or zeros where no row of the batch has a version."""
        inputs: list[torch.Tensor] = []
        for m in self._step.lora_modules:
            if m.rows is not None:
                inputs += m.rows
                continue
            zeros = self._zeros.get((id(m), rows))
            if zeros is None:
                (rank, fan_in), fan_out = m.lora_A.shape, m.lora_B.shape[0]
                zeros = (m.lora_A.new_zeros(rows, rank, fan_in), m.lora_B.new_zeros(rows, fan_out, rank))
                self._zeros[(id(m), rows)] = zeros
            inputs += zeros
        return inputs


def forced_steps(direct: DirectForward, step: Any, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
                 steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(direct forward's, ``step``'s) logits of each of ``steps`` one-token steps after one prefill of
    ``ids`` (rows, prompt; left-padded per ``mask``), both fed the direct forward's greedy tokens, so
    that a difference in one step does not change what the next is asked: how the tests and
    ``benchmarks/bench_compiled_decode.py`` measure the compiled step's tolerance."""
    ours, theirs = new_cache(), new_cache()
    pairs = []
    with torch.no_grad():
        logits = direct(ids, mask, positions, ours)
        direct(ids, mask, positions, theirs)
        position = positions[:, -1:]
        for _ in range(steps):
            token = logits.argmax(-1, keepdim=True)
            mask = torch.cat([mask, torch.ones_like(token)], dim=1)
            position = position + 1
            logits = direct(token, mask, position, ours)
            pairs.append((logits, step(token, mask, position, theirs)))
    return pairs
