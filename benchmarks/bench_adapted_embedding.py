"""What embedding a message costs in a channel with its own adapted metric, against a plain one.

    .venv/bin/python benchmarks/bench_adapted_embedding.py [--messages 256] [--rounds 5] [--json]

An adapted channel (``learning.adapt``) embeds each message with its own copy of the
metric's top layers: the frozen layers below run once (``metric_train.lower_layers``),
then the channel's adapted layers. Measured side by side in one run, interleaved round
by round, one message at a time as the engine embeds them:

- ``shared``: the shared metric (adapters merged into MiniLM: one ordinary forward pass);
- ``adapted``: a channel's adapted space as served now (lower layers, then the copy);
- ``adapted_full_forward``: what it cost before — the whole of MiniLM with
  ``output_hidden_states``, then the adapted copy of the top layers again.

Prints a table and, last, one JSON line. Numbers are recorded in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.offline import offline_environment  # noqa: E402

offline_environment(force=False)

TEXTS = [
    "how do i reset my password", "what's the weather tomorrow", "book a table for two at eight",
    "my card was declined at the store", "play some jazz", "when is my next meeting",
    "can you tell me the wifi password", "who approves vacation requests",
]


def main() -> None:
    from engine.learning.channel_encoder import ChannelEncoder
    from engine.learning.metric import DEFAULT_ARTIFACT, MetricArtifact, MetricEncoder
    from engine.settings import EncoderSettings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    encoder = MetricEncoder(EncoderSettings(), MetricArtifact.load(DEFAULT_ARTIFACT))
    encoder.load()
    channel = ChannelEncoder(encoder)
    tensors = channel.meta_tensors()  # a channel's adapters (their values do not change the cost)
    model = encoder.sentence_transformer
    bert, tokenizer = model[0].auto_model.eval(), model.tokenizer
    first = len(bert.encoder.layer) - encoder.artifact.config.top_layers
    messages = [TEXTS[i % len(TEXTS)] + f" ({i})" for i in range(args.messages)]

    def full_forward(text: str) -> None:  # the previous serving path
        enc = tokenizer([text], return_tensors="pt")
        with torch.no_grad():
            h = bert(**enc, output_hidden_states=True).hidden_states[first]
        channel.embed_states_blocking([h[0].to(torch.float16)], tensors)

    ways = {
        "shared": lambda text: encoder.encode_blocking([text]),
        "adapted": lambda text: channel.embed_blocking([text], tensors),
        "adapted_full_forward": full_forward,
    }
    for fn in ways.values():  # warm up
        fn(messages[0])
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name, fn in ways.items():
            started = time.perf_counter()
            for text in messages:
                fn(text)
            seconds[name].append(time.perf_counter() - started)
    ms = {name: round(1000 * statistics.median(v) / len(messages), 3) for name, v in seconds.items()}
    result = {
        "ms_per_message": ms,
        "adapted_vs_shared": round(ms["adapted"] / ms["shared"], 2),
        "full_forward_vs_adapted": round(ms["adapted_full_forward"] / ms["adapted"], 2),
        "messages": len(messages), "rounds": args.rounds, "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if not args.json:
        print("| path | ms / message |\n| --- | --- |")
        for name, value in ms.items():
            print(f"| {name} | {value} |")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
