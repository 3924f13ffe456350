"""Which Python allocations a server keeps across sessions (tracemalloc), in-process.

    python -m benchmarks.heap_growth --minutes 4

Rounds of N sessions, as in benchmarks.soak, against a server running in this process with
tracemalloc on after a warm-up round. After each round it prints the Python memory still
allocated, and at the end the allocation sites that grew most. If the soak's resident memory
grows while this stays flat, the growth is in the native libraries' heaps, not in Python objects.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
import tracemalloc

from benchmarks.latency import DEFAULT_CLIPS
from benchmarks.turns import load_clip, sessions_at_once
from server.app import ServerOptions, VoiceServer
from server.config import SessionConfig
from voice.engine import Engine, EngineConfig


async def run(args: argparse.Namespace) -> None:
    engine = Engine.load(EngineConfig())
    server = VoiceServer(engine, SessionConfig(), ServerOptions(port=0))
    listening = await server.start()
    url = f"ws://127.0.0.1:{server.port}/v1/realtime"
    clips = [load_clip(name) for name in DEFAULT_CLIPS]
    try:
        await sessions_at_once(url, clips, args.sessions, len(clips), stagger_s=0.7, pause_s=2.0)  # warm-up
        await asyncio.sleep(2)
        gc.collect()
        tracemalloc.start(12)
        before = tracemalloc.take_snapshot()
        started = time.monotonic()
        rounds = 0
        while time.monotonic() - started < args.minutes * 60:
            results = await sessions_at_once(url, clips, args.sessions, 5, first_clip=rounds, stagger_s=0.7,
                                             pause_s=2.0)
            rounds += 1
            await asyncio.sleep(2)
            gc.collect()
            current, _peak = tracemalloc.get_traced_memory()
            print(f"{time.monotonic() - started:5.0f} s: round {rounds}, {sum(not r.ok for r in results)} failed, "
                  f"Python memory allocated since the warm-up {current / 2**20:.2f} MB", flush=True)
        for stat in tracemalloc.take_snapshot().compare_to(before, "traceback")[: args.top]:
            print(f"{stat.size_diff / 1024:+.0f} KB in {stat.count_diff:+d} blocks at")
            for line in stat.traceback.format()[-6:]:
                print("   ", line)
    finally:
        listening.close()
        await listening.wait_closed()
        engine.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.heap_growth", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--top", type=int, default=5, help="allocation sites to show")
    asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
