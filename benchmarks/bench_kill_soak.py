"""kill -9 soak: the store's operations land whole, whatever moment the process dies.

A child process runs ``--clients`` concurrent clients on one database, each on scopes
of its own: it teaches (a new answer to one of a few questions replaces the old one),
forgets, merges a channel into another (``move_channel``), promotes and rolls back
LoRA versions, and prints a line for every operation that returned (acknowledged). The
parent kills it with SIGKILL at a random moment, starts it again on the same file,
``--kills`` times, then checks the file:

- ``lost``: an acknowledged correction that is neither active nor replaced by a later one;
- ``duplicates``: a question with more than one active answer;
- ``split``: a moved channel whose rows are partly in the old scope and partly in the new;
- ``multi_active``: a scope with more than one active LoRA version.

All four must be 0. ``--piecemeal`` runs the old way of replacing an answer beside it
(forget, then add: two operations), which a kill between them shows as ``lost``.
Prints a table; ``--json``: the last line is one JSON object.

    .venv/bin/python benchmarks/bench_kill_soak.py --kills 100 --clients 50 --piecemeal
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from engine import ChannelKey  # noqa: E402
from engine.store import Store  # noqa: E402

QUESTIONS = 4
ROWS_PER_MOVE = 3


def scope(client: int, name: str) -> str:
    return f"c{client}-{name}"


async def client_loop(store: Store, client: int, rng: random.Random, emit: Callable[[str], None],
                      piecemeal: bool) -> None:
    teach = ChannelKey("soak", scope(client, "teach"))
    lora = ChannelKey("soak", scope(client, "lora"))
    vector = np.ones(8, dtype=np.float32)
    moves = 0
    while True:
        roll = rng.random()
        if roll < 0.55:
            q = rng.randrange(QUESTIONS)
            same = [c.id for c in await store.corrections(teach) if c.question == f"q{q}"]
            if piecemeal:  # how the engine replaced an answer before: two operations
                await store.forget(teach, same)
                same = []
            stored = await store.add_correction(
                teach, question=f"q{q}", answer=f"a{rng.random()}", author_id="u", embedding=vector, encoder="e",
                message_id=None, replaces=same)
            emit(f"ack {teach.channel} q{q} {stored.id}")
        elif roll < 0.65:
            scratch = ChannelKey("soak", scope(client, "scratch"))
            await store.add_correction(scratch, question="s", answer="s", author_id="u",
                                       embedding=vector, encoder="e", message_id=None)
            await store.forget(scratch)
        elif roll < 0.8:
            pid, moves = os.getpid(), moves + 1
            old = ChannelKey("soak", scope(client, f"old-{pid}-{moves}"))
            new = ChannelKey("soak", scope(client, f"new-{pid}-{moves}"))
            for i in range(ROWS_PER_MOVE):
                await store.add_correction(old, question=f"m{i}", answer="m", author_id="u",
                                           embedding=vector, encoder="e", message_id=None)
                await store.add_message(old, role="user", text=f"m{i}")
            await store.add_message(new, role="user", text="the new id spoke first")
            emit(f"moving {old.channel} {new.channel}")
            await store.move_channel(old, new)
            emit(f"moved {old.channel} {new.channel}")
        elif roll < 0.95:
            await store.add_lora_version(lora, b"w", {}, "active")
        else:
            await store.rollback_lora(lora)


async def child(db: Path, clients: int, seed: int, piecemeal: bool) -> None:
    store = Store(db)
    await store.open()

    def say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    say("ready")
    await asyncio.gather(*(client_loop(store, c, random.Random(seed * 1000 + c), say, piecemeal)
                           for c in range(clients)))


def check(db: Path, acks: list[str]) -> dict[str, int]:
    """The four invariants over the file and everything the children acknowledged."""
    raw = sqlite3.connect(db)
    ids = {(p, c): i for i, p, c in raw.execute("SELECT id, platform, channel FROM channels")}
    last_ack: dict[tuple[str, str], int] = {}
    moving: set[tuple[str, str]] = set()
    for line in acks:
        kind, *rest = line.split()
        if kind == "ack":
            channel, question, cid = rest
            last_ack[channel, question] = max(last_ack.get((channel, question), 0), int(cid))
        elif kind == "moving":
            moving.add((rest[0], rest[1]))
    active: dict[tuple[int, str], list[int]] = defaultdict(list)
    for cid, channel_id, question in raw.execute("SELECT id, channel_id, question FROM corrections WHERE active = 1"):
        active[channel_id, question].append(cid)
    lost = 0
    for (channel, question), acked in last_ack.items():
        now = active.get((ids.get(("soak", channel), -1), question), [])
        lost += not now or max(now) < acked
    duplicates = sum(len(v) > 1 for v in active.values())
    split = 0
    for old, new in moving:
        old_id, new_id = ids.get(("soak", old)), ids.get(("soak", new))
        if old_id is None or new_id is None:
            continue  # renamed whole, or never created: nothing to split
        rows = {table: [raw.execute(f"SELECT COUNT(*) FROM {table} WHERE channel_id = ?", (i,)).fetchone()[0]
                        for i in (old_id, new_id)] for table in ("corrections", "messages")}
        # Either everything still in the old scope, or everything (and the new id's own message) in the new one.
        whole_old = rows["corrections"][1] == 0 and rows["messages"][1] == 1
        whole_new = rows["corrections"][0] == 0 and rows["messages"][0] == 0
        split += not (whole_old or whole_new)
    multi_active = sum(n > 1 for (n,) in raw.execute(
        "SELECT COUNT(*) FROM lora_versions WHERE status = 'active' GROUP BY channel_id"))
    raw.close()
    return {"lost": lost, "duplicates": duplicates, "split": split, "multi_active": multi_active}


def soak(kills: int, clients: int, seed: int, min_s: float, max_s: float, piecemeal: bool = False) -> dict[str, object]:
    rng = random.Random(seed)
    acks: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "soak.sqlite3"
        started = time.perf_counter()
        for k in range(kills):
            proc = subprocess.Popen([sys.executable, __file__, "--child", str(db), "--clients", str(clients),
                                     "--seed", str(seed * 100_000 + k), *(["--piecemeal"] if piecemeal else [])],
                                    stdout=subprocess.PIPE, text=True)
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("the soak child did not start")
            time.sleep(rng.uniform(min_s, max_s))  # the kill lands at a random moment of the work
            os.kill(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            acks += [line for line in out.splitlines() if line and not line.startswith("ready")]
        result: dict[str, object] = dict(check(db, acks))
        result |= {"kills": kills, "clients": clients, "piecemeal": piecemeal,
                   "acknowledged": sum(a.startswith("ack") for a in acks),
                   "moves": sum(a.startswith("moving") for a in acks),
                   "seconds": round(time.perf_counter() - started, 1)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-s", type=float, default=0.05, help="shortest life of a child after it is ready")
    parser.add_argument("--max-s", type=float, default=0.6, help="longest life of a child after it is ready")
    parser.add_argument("--piecemeal", action="store_true",
                        help="also run the old way of replacing an answer (forget, then add: two operations)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        asyncio.run(child(args.child, args.clients, args.seed, args.piecemeal))
        return
    result = soak(args.kills, args.clients, args.seed, args.min_s, args.max_s)
    runs = [result]
    if args.piecemeal:
        runs.append(soak(args.kills, args.clients, args.seed, args.min_s, args.max_s, piecemeal=True))
        result = {**result, "piecemeal_run": runs[1]}
    for key in runs[0]:
        print(f"{key:>14}  " + "  ".join(f"{run[key]!s:>10}" for run in runs))
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
