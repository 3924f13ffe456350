"""Soak: N sessions talking with real recordings for M minutes against one server; reports failed
turns, latency drift and memory growth.

    python -m benchmarks.soak --sessions 4 --minutes 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.latency import DEFAULT_CLIPS, OUT, machine
from benchmarks.servers import voice_server
from benchmarks.turns import TurnResult, load_clip, run_session


def memory_growth(samples: list[tuple[float, float]], seconds: float) -> dict[str, float]:
    """RSS growth, as robust figures: the RSS swings by a few hundred MB as sessions come and go
    (freed memory goes back to the OS), so single samples say little. Compares the median and the
    floor (minimum) of the last third of the run with those of the first third (after the first
    minute, when the models have been through every code path)."""
    settled = [(t, m) for t, m in samples if t >= 60] or samples
    span = seconds - settled[0][0]
    first = [m for t, m in settled if t < settled[0][0] + span / 3]
    last = [m for t, m in settled if t >= seconds - span / 3] or [settled[-1][1]]

    def percent(before: float, after: float) -> float:
        return 100 * (after - before) / before

    return {
        "rss_median_first_third_mb": statistics.median(first),
        "rss_median_last_third_mb": statistics.median(last),
        "rss_median_growth_percent": percent(statistics.median(first), statistics.median(last)),
        "rss_floor_first_third_mb": min(first),
        "rss_floor_last_third_mb": min(last),
        "rss_floor_growth_percent": percent(min(first), min(last)),
    }


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    clips = [load_clip(name) for name in args.clips]
    deadline = time.monotonic() + args.minutes * 60
    turns: list[tuple[float, TurnResult]] = []
    memory: list[tuple[float, float]] = []
    with voice_server(log=args.out / "server-soak.log") as server:
        await run_session(server.url, clips[:1])  # warm-up
        started = time.monotonic()
        baseline_rss = server.usage()[1]

        async def talker(index: int) -> None:
            await asyncio.sleep(index * 0.7)
            turn = index
            while time.monotonic() < deadline:
                # A session of a few turns, then a fresh one: sessions come and go as in real use.
                chosen = [clips[(turn + k) % len(clips)] for k in range(args.turns_per_session)]
                turn += args.turns_per_session
                for result in await run_session(server.url, chosen, pause_s=args.pause):
                    turns.append((time.monotonic() - started, result))

        async def sampler() -> None:
            while time.monotonic() < deadline:
                memory.append((time.monotonic() - started, server.usage()[1] / 2**20))
                await asyncio.sleep(5)

        await asyncio.gather(sampler(), *(talker(i) for i in range(args.sessions)))
        final_rss = server.usage()[1]
    ok = [(t, r) for t, r in turns if r.ok]
    third = args.minutes * 60 / 3
    early = [r.voice_to_voice_ms for t, r in ok if t < third]
    late = [r.voice_to_voice_ms for t, r in ok if t >= 2 * third]
    settled = [m for t, m in memory if t >= 60] or [m for _, m in memory]
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join(["python -m benchmarks.soak", *sys.argv[1:]]),
        "machine": machine(),
        "sessions": args.sessions,
        "minutes": args.minutes,
        "turns": len(turns),
        "failed": len(turns) - len(ok),
        "failures": sorted({r.failure for _, r in turns if r.failure}),
        "latency_median_first_third_ms": statistics.median(early) if early else None,
        "latency_median_last_third_ms": statistics.median(late) if late else None,
        "rss_after_warmup_mb": baseline_rss / 2**20,
        "rss_first_minute_end_mb": settled[0],
        "rss_end_mb": final_rss / 2**20,
        "rss_growth_after_first_minute_percent": 100 * (final_rss / 2**20 - settled[0]) / settled[0],
        **memory_growth(memory, args.minutes * 60),
        "memory_samples": memory,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clips", nargs="+", default=DEFAULT_CLIPS)
    parser.add_argument("--turns-per-session", type=int, default=5)
    parser.add_argument("--pause", type=float, default=2.0, help="seconds of silence between turns")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    report = asyncio.run(soak(args))
    (args.out / "soak.json").write_text(json.dumps(report, indent=2))
    summary = {k: v for k, v in report.items() if k != "memory_samples"}
    print(json.dumps(summary, indent=2))
    return report


if __name__ == "__main__":
    main()
