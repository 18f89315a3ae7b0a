"""Plots along sequential corrections: the corrections benchmark's curve, and the frame every
such plot shares (``heedful eval corrections --plot``, ``benchmarks/bench_generality_ceiling.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["plot_correction_curve", "save_curve_plot"]


def plot_correction_curve(curve: Sequence[dict[str, Any]], path: Path, title: str) -> Path:
    """Draw the corrections benchmark's ``curve`` (generality, reliability and locality after
    each checkpoint) into the PNG ``path``."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, and no GUI backend probing on a server
    import matplotlib.pyplot as plt

    xs = [p["corrections"] for p in curve]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, style in (("generality", "o-"), ("reliability", "s--"), ("locality", "^:")):
        ax.plot(xs, [p[key] for p in curve], style, label=key)
    save_curve_plot(fig, ax, path, ylabel="share of replies", title=f"learning from corrections ({title})",
                    legend="lower left")
    return path


def save_curve_plot(fig: Any, ax: Any, path: Path, *, ylabel: str, title: str, legend: str,
                    legend_size: float | None = None) -> None:
    """Finish a plot along sequential corrections (log x, shares on y) and write it to ``path``."""
    import matplotlib.pyplot as plt

    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("sequential corrections in one channel")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc=legend, fontsize=legend_size)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
