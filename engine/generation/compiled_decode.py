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
logs why and stays eager. Opt-in (``model.compile_decode``): a process that exits while the compile
runs in its daemon thread aborts instead of exiting cleanly.

Same arithmetic as ``DirectForward`` (float32 activations, bfloat16 products on the packed
weights the direct forward already holds, so no weight is copied): logits within float
rounding, greedy text identical on the tested prompts (``tests/unit/test_compiled_decode.py``).
Rows with a channel's LoRA weights, and prefill, stay on the direct forward.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import types
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.openmp import releasing
from ..nn.packed_linear import packed_product
from ..settings import ModelSettings
from ..understanding.foreground import lower_priority
from .direct_forward import DirectForward, _rotate_half
from .kv_cache import from_layers, new_cache

if TYPE_CHECKING:
    from .model_loader import LoadedModel

__all__ = ["CompiledDecode", "RecompileNeeded", "compile_applies", "compiler_available", "forced_steps"]

log = logging.getLogger(__name__)


class RecompileNeeded(RuntimeError):
    """The compiled step cannot serve this batch without compiling again (or failed): decode eagerly."""


def compiler_available() -> bool:
    """Whether a C++ compiler is on the PATH for inductor's CPU kernels."""
    return any(shutil.which(name) for name in ("g++", "c++", "clang++"))


def compile_applies(settings: ModelSettings, loaded: LoadedModel, direct: DirectForward | None) -> bool:
    """Whether the worker compiles its decode step: asked for, on CPU, through the direct forward in
    packed bfloat16, with a C++ compiler here (otherwise it says why in the log, once)."""
    if not settings.compile_decode or direct is None:
        return False
    if loaded.device.type != "cpu" or loaded.matmul_dtype != "bfloat16":
        return False  # the step multiplies the direct forward's packed bfloat16 weights (CPU only)
    if not compiler_available():
        log.info("the decode step stays eager: no C++ compiler (g++, c++ or clang++) for torch.compile")
        return False
    return True


class _Step(nn.Module):
    """One new token per row through every layer, appending keys/values to the step's buffers."""

    def __init__(self, direct: DirectForward) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim, self.eps = direct.heads, direct.kv_heads, direct.head_dim, direct.eps
        self.embed, self.cos, self.sin, self.norm = direct.embed.weight, direct.cos, direct.sin, direct.norm
        # Per layer: (norm in, q/k/v, o, norm after attention, gate/up, down), the products' packed
        # weights as the direct forward holds them (plain attributes: frozen into the graph).
        self.layers = [(layer.norm_in, _packed(layer.qkv), _packed(layer.o), layer.norm_post,
                        _packed(layer.gate_up), _packed(layer.down)) for layer in direct.layers]
        self.head = _packed(direct.head)

    def forward(self, ids: torch.Tensor, positions: torch.Tensor, start: torch.Tensor, length: torch.Tensor,
                attend: torch.Tensor | None, keys: list[torch.Tensor], values: list[torch.Tensor]) -> torch.Tensor:
        """Logits (rows, vocab) of ``ids`` (rows, 1) at ``positions`` (rows,); their keys and values are
        written at time ``start`` (a (1,) tensor) of each layer's buffers, and attention reads the first
        ``len(length)`` (= start + 1) of them; ``attend`` (rows, 1, 1, start + 1) masks left padding
        (None: no row has any). ``length`` is a tensor only so that its size is symbolic (one graph for
        every length)."""
        rows, total = ids.shape[0], length.shape[0]
        heads, kv, dim = self.heads, self.kv_heads, self.head_dim
        groups = heads // kv
        x = F.embedding(ids, self.embed)                                          # (rows, 1, hidden)
        cos = self.cos[positions].view(rows, 1, 1, dim)
        sin = self.sin[positions].view(rows, 1, 1, dim)
        for i, (norm_in, qkv_w, o_w, norm_post, gate_up_w, down_w) in enumerate(self.layers):
            h = F.rms_norm(x, (x.shape[-1],), norm_in, self.eps)
            qkv = packed_product(h, qkv_w).view(rows, 1, heads + 2 * kv, dim)
            qk = qkv[:, :, : heads + kv]
            qk = (qk * cos + _rotate_half(qk) * sin).transpose(1, 2)
            keys[i].index_copy_(2, start, qk[:, heads:])
            values[i].index_copy_(2, start, qkv[:, :, heads + kv:].transpose(1, 2))
            folded = qk[:, :heads].reshape(rows, kv, groups, dim)  # query heads sharing a key/value head
            out = F.scaled_dot_product_attention(folded, keys[i][:, :, :total], values[i][:, :, :total],
                                                 attn_mask=attend)
            x = x + packed_product(out.reshape(rows, 1, heads * dim), o_w)
            h = F.rms_norm(x, (x.shape[-1],), norm_post, self.eps)
            gate, up = packed_product(h, gate_up_w).chunk(2, dim=-1)
            x = x + packed_product(F.silu(gate) * up, down_w)
        last = F.rms_norm(x, (x.shape[-1],), self.norm, self.eps)
        return packed_product(last, self.head)[:, -1]


def _packed(product: Any) -> torch.Tensor:
    assert product.packed is not None, "the compiled step multiplies the direct forward's packed bfloat16 weights"
    packed: torch.Tensor = product.packed
    return packed


def _own_forward(step: _Step) -> Callable[..., torch.Tensor]:
    """``step.forward`` on a code object of its own. Dynamo keeps compiled graphs per code object (at
    most 8 per object): sharing ``_Step.forward``'s would let a process's fifth model fail to compile,
    and keep every stopped worker's graphs, with their frozen weights, alive."""
    fn = _Step.forward
    code = fn.__code__.replace()
    own = types.FunctionType(code, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    return types.MethodType(own, step)


class CompiledDecode:
    """The compiled one-token step for a ``DirectForward`` in bfloat16 (see the module docstring).

    Lifecycle, as ``state`` reports it: ``waiting`` (created), ``compiling`` (``warm`` running),
    ``compiled`` (serving), or ``eager: <why>`` (it failed to build, or a batch would have made it
    compile again; the worker decodes eagerly from then on)."""

    def __init__(self, direct: DirectForward) -> None:
        self._layers = len(direct.layers)
        self._step = _Step(direct)
        self._fn: Any = None  # torch.compile's wrapper, made by ``warm``: importing dynamo costs ~1 s
        self._done = threading.Event()
        self._cancelled = threading.Event()
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
            lower_priority()
            if not self._cancelled.wait(delay_s):
                releasing(self.warm)()

        thread = threading.Thread(target=run, name="heedful-compile-decode", daemon=True)
        thread.start()
        return thread

    def cancel(self) -> None:
        """Its worker stopped: a compile not yet started never starts (one under way runs to its end,
        in its daemon thread, which does not keep the process alive)."""
        self._cancelled.set()
        self._done.set()

    def warm(self) -> None:
        """Compile both graphs (one row; two or more) on a dummy cache. Blocking: ~30-90 s of CPU for
        SmolLM2-135M on two cores. Never raises: a failure leaves ``state`` saying why."""
        from torch._inductor import config as inductor_config

        self.state = "compiling"
        started = time.perf_counter()
        try:
            self._fn = torch.compile(_own_forward(self._step), fullgraph=True)
            # Frozen: the packed weights become constants of the graph (unfrozen, inductor cannot lower
            # the oneDNN product on them). A patch, not a setting: nothing else in the process changes.
            with torch.no_grad(), inductor_config.patch(freezing=True):
                for rows in (1, 2):
                    shape = (rows, self._step.kv_heads, 4, self._step.head_dim)
                    cache = from_layers([(torch.zeros(shape), torch.zeros(shape)) for _ in range(self._layers)])
                    ids = torch.ones((rows, 1), dtype=torch.long)
                    self._call(ids, torch.ones((rows, 5), dtype=torch.long), torch.full((rows,), 4), cache)
        except Exception as err:  # no compiler after all, an op inductor cannot lower, ...: stay eager
            self.state = f"eager: the compiled step failed to build ({type(err).__name__}: {str(err)[:200]})"
            log.warning("decoding stays on the eager direct forward: %s", self.state)
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
        """Whether the step serves this batch: ready, no row under a LoRA version, and one row only
        where it has no padding (its graph takes no mask)."""
        if not self.ready or any(getattr(r, "lora", None) for r in rows):
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
        logits: torch.Tensor = self._fn(ids, positions, torch.tensor([start]), length, attend,
                                        [layer.kbuf for layer in layers], [layer.vbuf for layer in layers])
        for layer in layers:
            layer.advance(1)
        return logits


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
