"""The learning-from-corrections benchmark run on files (``heedful eval corrections``).

Three modes, one result:

- ``metric``: ``correction_bench.run_benchmark`` on a throw-away engine with LoRA
  consolidation off: recall by the learned metric alone;
- ``lora``: ``lora_bench.eval_corrections_lora``: per-channel LoRA weights from the
  meta-learned init on channel-tasks of the same files, side by side with no adaptation
  and plain fine-tuning from the standard init;
- ``both``: the engine as it serves by default (metric answers within its radius, each
  channel's promoted LoRA version generates the rest) at top level, with the metric path
  alone under ``metric_path`` and the LoRA side-by-side under ``lora_path``.

With ``near_miss`` (``--near-miss``), the engine paths (``metric``, ``both``) also ask the
file's near misses (``load_near_misses``) and report ``near_miss_locality``.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine import Engine
from ..settings import EngineSettings, ModelSettings
from .correction_bench import BenchConfig, NearMiss, planned_questions, run_benchmark
from .curve_plot import plot_correction_curve
from .episodes import BadLine, Utterance, labelled_row, read_json_lines
from .eval_sets import load_eval_sets, skipped_report
from .lora_bench import SideBySideConfig, eval_corrections_lora
from .runs import Bars, Log, RunError, silent_bars, silent_log

__all__ = ["MODES", "CorrectionsRunConfig", "run_corrections_eval", "load_near_misses"]

MODES = ("metric", "lora", "both")


@dataclass(frozen=True)
class CorrectionsRunConfig:
    """One run of the corrections benchmark: the files, the mode, and each path's settings."""

    support: Path                        # the corrections to teach
    query: Path                          # other phrasings of them (generality)
    oos: Path | None = None              # out-of-scope questions (locality)
    mode: str = "metric"                 # metric | lora | both
    metric: str = "default"              # 'default' (shipped), 'none' (plain cosine) or an artifact path
    verifier: str = "default"            # 'default' (shipped), 'none' (the metric's radius alone) or a path
    model: str = ""                      # LLM id (empty: the configured one; lora: the default one)
    bench: BenchConfig = field(default_factory=BenchConfig)  # the metric path: channels, samples, curve, seed
    curve_support: Path | None = None    # fed one by one for the curve (default: ``support``)
    max_new_tokens: int = 32             # reply length cap for generated replies
    plot: Path | None = None             # draw the curve(s) into this PNG (``both``: one file per path)
    lora_init: Path | None = None        # the LoRA init to measure (default: the shipped one)
    tasks: int = 16                      # lora: channel-tasks (imaginary channels) to adapt
    inner_steps: int = 5                 # lora: inner-loop steps per channel (every method)
    max_steps: int = 20                  # lora: steps drawn in the query-loss curve
    lora_curve: tuple[int, ...] = (1, 2, 4, 8)  # lora: corrections per channel for the curve (empty: none)
    eval_domains: tuple[str, ...] = ()   # keep only these domains' labels (not in ``oos``)
    domains: Path | None = None          # {domain: [labels]}; default: domains.json beside ``support``
    systems: tuple[str | None, ...] = (None,)  # lora: system prompts (personas) a channel may use
    near_miss: Path | None = None        # near misses of taught questions (near-miss locality; engine paths)


def load_near_misses(path: Path, skipped: list[BadLine] | None = None) -> list[NearMiss]:
    """The near-miss lines of a JSON-lines file: ``text``, ``label`` (the taught label each
    mimics), optionally ``kind``; a line with ``"near_miss": false`` is not one. Unusable lines
    go to ``skipped`` when it is given (else ``ValueError`` naming the file and line)."""
    return read_json_lines(path, _near_miss, skipped)


def _near_miss(line: str) -> NearMiss:
    row, text = labelled_row(line)
    if row.get("near_miss", True) is False:
        raise ValueError("'near_miss' is false: not a near miss")
    return NearMiss(text, str(row["label"]), str(row.get("kind") or ""))


def run_corrections_eval(run: CorrectionsRunConfig, settings: EngineSettings, *, bars: Bars = silent_bars,
                         log: Log = silent_log) -> dict[str, Any]:
    """Learning from corrections in ``run.mode``, with ``settings`` as the base of every
    throw-away engine (its model cache is reused). Raises ``RunError`` for a bad mode, missing
    or malformed files, unknown domains, a missing metric, and a LoRA init that is missing or
    does not fit the model."""
    if run.mode not in MODES:
        raise RunError(f"--mode must be metric, lora or both, not {run.mode!r}")
    if run.lora_init is not None and not run.lora_init.is_file():
        raise RunError(f"--lora-init: no such file {run.lora_init}")
    if run.near_miss is not None and not run.near_miss.is_file():
        raise RunError(f"--near-miss: no such file {run.near_miss}")
    skipped: dict[str, list[BadLine]] = {}
    sets = load_eval_sets({"--support": run.support, "--query": run.query, "--oos": run.oos,
                           "--curve-support": run.curve_support}, run.eval_domains, run.domains, skipped=skipped)
    near: list[NearMiss] | None = None
    if run.near_miss is not None:
        near = load_near_misses(run.near_miss, skipped.setdefault("--near-miss", []))
        if run.mode == "lora":
            log("--near-miss is measured on the engine paths (--mode metric or both), not with --mode lora")
    bad_lines = skipped_report(skipped, log)
    s, q, o = sets["--support"], sets["--query"], sets["--oos"]
    c = sets["--curve-support"] if run.curve_support else s
    if not s or not q:
        raise RunError("--support and --query need at least one utterance each (after --eval-domains)")
    plots = {"metric": run.plot, "lora": run.plot, "both": run.plot}
    if run.plot is not None and run.mode == "both":
        plot = run.plot
        plots = {p: plot.with_name(f"{plot.stem}-{p}{plot.suffix or '.png'}") for p in plots}
    result: dict[str, Any] = {"mode": run.mode, "skipped_lines": bad_lines}
    if run.mode in ("metric", "both"):
        metric_result = _through_the_engine(run, settings, s, q, o, c, plots["metric"], bars, near=near)
        if run.mode == "metric":
            result |= metric_result
        else:  # the engine as it serves: the metric answers within its radius, channels' LoRA versions generate
            result |= _through_the_engine(run, settings, s, q, o, c, plots["both"], bars, lora=True, near=near)
            result["metric_path"] = metric_result
    if run.mode in ("lora", "both"):
        started = time.perf_counter()
        side = SideBySideConfig(
            inits=(run.lora_init,) if run.lora_init else (), support=run.support, query=run.query, oos=run.oos,
            domains=run.domains, eval_domains=run.eval_domains, tasks=run.tasks, seed=run.bench.seed,
            final_steps=run.inner_steps, max_steps=max(run.max_steps, run.inner_steps), corrections=run.lora_curve,
            per_point=3, model=ModelSettings(id=run.model) if run.model else ModelSettings(),
            models_dir=settings.model_cache_dir, plot=plots["lora"], systems=run.systems)
        try:
            lora_result = eval_corrections_lora(side, run.mode, log)
        except (FileNotFoundError, ValueError) as err:  # an init for another model is a ValueError
            raise RunError(str(err)) from None
        lora_result["seconds"] = round(time.perf_counter() - started, 1)
        result |= lora_result if run.mode == "lora" else {"lora_path": lora_result}
    return result


def _through_the_engine(run: CorrectionsRunConfig, settings: EngineSettings, s: list[Utterance],
                        q: list[Utterance], o: list[Utterance], c: list[Utterance], plot: Path | None, bars: Bars,
                        lora: bool = False, near: list[NearMiss] | None = None) -> dict[str, Any]:
    """``correction_bench.run_benchmark``'s numbers from a throw-away engine: the metric path
    alone, or (``lora``) with per-channel LoRA consolidation on, as the engine serves by default;
    ``near``: the near misses to ask too."""
    with tempfile.TemporaryDirectory(prefix="heedful-eval-") as tmp:
        engine_settings = settings.model_copy(update={
            "data_dir": Path(tmp),
            "models_dir": settings.model_cache_dir,  # reuse the converted model
            "model": settings.model.model_copy(update={"max_new_tokens": run.max_new_tokens,
                                                        **({"id": run.model} if run.model else {})}),
            "learning": settings.learning.model_copy(update={"metric": run.metric, "verifier": run.verifier}),
            # Consolidate as soon as a channel has been taught (the benchmark teaches in one burst).
            "lora": settings.lora.model_copy(update={"enabled": lora, "debounce_s": 0.2}),
        })

        async def go() -> dict[str, Any]:
            async with Engine(engine_settings) as engine:
                total = planned_questions(s, q, o, c, run.bench, near or ())
                with bars(total=total, desc="corrections benchmark", unit="reply") as bar:
                    out = await run_benchmark(engine, s, q, o, c, run.bench, progress=bar.update, near_miss=near)
                verifier = engine.matching.verifier
                return {"metric": engine.matching.metric_name, "model": engine.model_name, "lora": lora,
                        "verifier": verifier.name if verifier else "none",
                        "floor": round(engine.matching.floor, 4) if verifier else None,
                        "answer_threshold": round(engine.matching.answer_threshold, 4),
                        "example_threshold": round(engine.matching.example_threshold, 4), **out}

        started = time.perf_counter()
        try:
            result = asyncio.run(go())
        except FileNotFoundError as err:  # a metric artifact or model path that is not there
            raise RunError(str(err)) from None
    result["seconds"] = round(time.perf_counter() - started, 1)
    if plot is not None and result["curve"]:
        plot_correction_curve(result["curve"], plot, result["metric"] + (" + LoRA" if lora else ""))
        result["plot"] = str(plot)
    return result
