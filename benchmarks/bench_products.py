"""A decode step's float32 products, one library against another, at several row counts (issue 18).

    .venv/bin/python benchmarks/bench_products.py [--rows 1,2,4,8,16,32] [--repeat 5] [--json]

Why: which product multiplies the model's weights fastest depends on the row count and the machine, and
the direct forward picks by row count (``engine/generation/direct_forward.py``, ``_Product.times``).
This times, on SmolLM2-135M's shapes (random float32 weights, ``--copies`` distinct weights per shape so
that no cache holds them; the LM head once), every product of one step, each way:

- ``linear``: torch's default ``x @ wᵀ`` (``F.linear``; MKL on x86);
- ``onednn``: oneDNN's float32 product on the same weight, not packed (``packed_linear.packed_product``);
- ``transposed``: ``(w @ xᵀ)ᵀ`` (``direct_forward.transposed_product``);
- ``engine``: what the direct forward's ``_Product.times`` picks for each shape at that row count.

Per row count: ms per call of each shape (best of ``--repeat``), and the whole step's products scaled to
the model (30 layers: q, k, v, o, gate, up, down; the head). ``--json``: the last line is one JSON object.
Numbers are in docs/BENCHMARKS.md ("A few rows as the weights times the rows' transpose").
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from report import print_result  # noqa: E402

from engine.generation.direct_forward import _Product, transposed_product  # noqa: E402
from engine.nn.packed_linear import onednn_available, pack_linears, packed_product  # noqa: E402

# SmolLM2-135M: (out, in) of each product and how many of it one step multiplies.
SHAPES = {"k_v": ((192, 576), 60), "q_o": ((576, 576), 60), "gate_up": ((1536, 576), 60),
          "down": ((576, 1536), 30), "head": ((49152, 576), 1)}

Times = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def engine_products(weights: dict[str, list[torch.Tensor]], onednn: bool) -> dict[str, _Product]:
    """Per shape, the direct forward's own product over a layer of that shape, prepared as the loader
    prepares the model (``pack_linears`` in float32 where torch has oneDNN), so that ``times`` picks as served."""
    products = {}
    for name, ws in weights.items():
        layer = torch.nn.Linear(ws[0].shape[1], ws[0].shape[0], bias=False)
        layer.weight = torch.nn.Parameter(ws[0], requires_grad=False)
        holder = torch.nn.Sequential(layer)
        if onednn:
            pack_linears(holder, torch.float32)
        products[name] = _Product([holder[0]], bf16=False, head=name == "head")
    return products


def best_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="1,2,4,8,16,32", help="row counts, comma-separated")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--copies", type=int, default=20, help="distinct weights per shape (the head: one)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of every figure")
    args = parser.parse_args()
    torch.manual_seed(0)
    onednn = onednn_available()
    ways: dict[str, Times] = {"linear": F.linear, "transposed": transposed_product}
    if onednn:
        ways["onednn"] = packed_product
    weights = {name: [torch.randn(shape) * 0.02 for _ in range(1 if name == "head" else args.copies)]
               for name, (shape, _) in SHAPES.items()}
    products = engine_products(weights, onednn)
    result: dict[str, object] = {"threads": torch.get_num_threads(), "onednn": onednn}
    for rows in (int(r) for r in args.rows.split(",")):
        step = dict.fromkeys([*ways, "engine"], 0.0)
        for name, ((_, width), count) in SHAPES.items():
            x = torch.randn(rows, width)
            per_call = {}
            for way, times in ways.items():
                ws = weights[name]
                per_call[way] = best_ms(lambda: [times(x, w) for w in ws], args.repeat) / len(ws)  # noqa: B023
                step[way] += per_call[way] * count
            picked = products[name].times(rows)
            step["engine"] += per_call[next(way for way, times in ways.items() if times is picked)] * count
            result[f"ms_{name}_{rows}_rows"] = {way: round(ms, 3) for way, ms in per_call.items()}
        result[f"step_ms_{rows}_rows"] = {way: round(ms, 1) for way, ms in step.items()}
    print_result(result, args.json)


if __name__ == "__main__":
    main()
