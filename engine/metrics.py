"""The engine's Prometheus metrics (prometheus-client's default registry).

Counters and histograms are process-wide, as Prometheus expects; the queue depths are
read at scrape time from every running engine of the process (``track``), so a scrape
always shows the state now, not the state at the last change.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from prometheus_client import Metric


class HasQueues(Protocol):
    """What reports queue depths (the engine): ``{stage: items waiting or in progress}``."""

    def queue_depths(self) -> dict[str, float]: ...

__all__ = ["TURNS", "TURN_SECONDS", "CORRECTIONS", "LORA_JOBS", "track"]

TURNS = Counter("heedful_turns", "Replies started, by how they were produced", ["route"])
TURN_SECONDS = Histogram("heedful_turn_seconds", "From a turn's arrival to its reply's last chunk",
                         buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80, 160))
CORRECTIONS = Counter("heedful_corrections", "Corrections received, by outcome", ["outcome"])
LORA_JOBS = Counter("heedful_lora_jobs", "Background LoRA consolidations, by outcome", ["outcome"])

_ENGINES: weakref.WeakSet[HasQueues] = weakref.WeakSet()


def track(engine: HasQueues) -> None:
    """Report ``engine``'s queue depths while it lives (a weak reference: no need to untrack)."""
    _ENGINES.add(engine)


class _QueueDepths(Collector):
    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("heedful_queue_depth", "Work waiting or in progress, by stage", labels=["stage"])
        stages = {"model_pending": 0.0, "decoding": 0.0, "consolidation": 0.0}
        for engine in list(_ENGINES):
            for stage, value in engine.queue_depths().items():
                stages[stage] = stages.get(stage, 0.0) + value
        for stage, value in stages.items():
            depth.add_metric([stage], value)
        yield depth


REGISTRY.register(_QueueDepths())
