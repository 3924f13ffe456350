"""Soak: N sessions talking with real recordings for M minutes against one server; reports failed
turns, latency drift and memory growth.

    python -m benchmarks.soak --sessions 4 --minutes 10

The run is a series of rounds. In a round, N sessions open at once (staggered by 0.7 s), each
speaks a few recordings with pauses between them, and closes: sessions come and go as in real
use. Between rounds the server is idle for a moment and its resident memory is sampled: memory
retained by the server (a leak) shows there, while samples taken under load swing by hundreds of
MB with whatever the sessions happen to be doing. A first round warms the server up (every code
path, N sessions at once) and is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.latency import DEFAULT_CLIPS, OUT
from benchmarks.report import provenance
from benchmarks.results_page import refresh
from benchmarks.servers import voice_server
from benchmarks.turns import TurnResult, load_clip, sessions_at_once

IDLE_SETTLE_S = 2.0
"""How long the server rests after a round before its idle memory is read."""


def percent(before: float, after: float) -> float:
    return 100 * (after - before) / before


def idle_memory_growth(idle: list[tuple[float, float]]) -> dict[str, float]:
    """Growth of the idle RSS (MB) over the run: end against start, the largest sample against the
    start, and the least-squares trend per minute."""
    times = np.array([t for t, _ in idle]) / 60
    values = np.array([m for _, m in idle])
    slope = float(np.polyfit(times, values, 1)[0]) if len(idle) > 2 else 0.0
    return {
        "rss_idle_start_mb": float(values[0]),
        "rss_idle_end_mb": float(values[-1]),
        "rss_idle_max_mb": float(values.max()),
        "rss_idle_growth_percent": percent(values[0], values[-1]),
        "rss_idle_max_growth_percent": percent(values[0], values.max()),
        "rss_idle_trend_mb_per_minute": slope,
    }


def load_memory(samples: list[tuple[float, float]], seconds: float) -> dict[str, float]:
    """RSS under load (MB), first third of the run against the last: for information only, as it
    depends on what the sessions are doing at each sample."""
    first = [m for t, m in samples if t < seconds / 3] or [samples[0][1]]
    last = [m for t, m in samples if t >= 2 * seconds / 3] or [samples[-1][1]]
    return {
        "rss_load_median_first_third_mb": statistics.median(first),
        "rss_load_median_last_third_mb": statistics.median(last),
        "rss_load_max_mb": max(m for _, m in samples),
    }


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    clips = [load_clip(name) for name in args.clips]
    turns: list[tuple[float, TurnResult]] = []
    load_samples: list[tuple[float, float]] = []
    idle_samples: list[tuple[float, float]] = []
    anonymous: list[tuple[float, float | None]] = []  # the idle samples' heap share (not mapped model files)
    with voice_server(log=args.out / "server-soak.log") as server:
        def rss_mb() -> float:
            return server.usage()[1] / 2**20

        await sessions_at_once(server.url, clips, args.sessions, len(clips), stagger_s=0.7,
                               pause_s=args.pause)  # warm-up
        await asyncio.sleep(IDLE_SETTLE_S)
        started = time.monotonic()
        idle_samples.append((0.0, rss_mb()))
        anonymous.append((0.0, server.anonymous_mb()))
        deadline = started + args.minutes * 60
        rounds = 0
        while time.monotonic() < deadline:
            talking = asyncio.create_task(sessions_at_once(
                server.url, clips, args.sessions, args.turns_per_session, first_clip=rounds, stagger_s=0.7,
                pause_s=args.pause))
            while not talking.done():
                load_samples.append((time.monotonic() - started, rss_mb()))
                await asyncio.wait([talking], timeout=5)
            turns += [(time.monotonic() - started, result) for result in talking.result()]
            rounds += 1
            await asyncio.sleep(IDLE_SETTLE_S)
            at = time.monotonic() - started
            idle_samples.append((at, rss_mb()))
            anonymous.append((at, server.anonymous_mb()))
    seconds = idle_samples[-1][0]
    ok = [(t, r) for t, r in turns if r.ok]
    early = [r.voice_to_voice_ms for t, r in ok if t < seconds / 3]
    late = [r.voice_to_voice_ms for t, r in ok if t >= 2 * seconds / 3]
    return {
        **args.provenance,
        "sessions": args.sessions,
        "minutes": args.minutes,
        "rounds": rounds,
        "turns": len(turns),
        "failed": len(turns) - len(ok),
        "failures": sorted({r.failure for _, r in turns if r.failure}),
        "failed_turns": [{"at_s": t, **r.as_dict()} for t, r in turns if not r.ok],
        "latency_median_ms": statistics.median(r.voice_to_voice_ms for _, r in ok) if ok else None,
        "latency_median_first_third_ms": statistics.median(early) if early else None,
        "latency_median_last_third_ms": statistics.median(late) if late else None,
        **idle_memory_growth(idle_samples),
        **load_memory(load_samples or idle_samples, seconds),
        "idle_samples": idle_samples,
        "idle_anonymous_samples": anonymous,
        "load_samples": load_samples,
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
    args.provenance = provenance("benchmarks.soak", argv)
    args.out.mkdir(parents=True, exist_ok=True)
    report = asyncio.run(soak(args))
    (args.out / "soak.json").write_text(json.dumps(report, indent=2))
    refresh(args.out)
    summary = {k: v for k, v in report.items() if not k.endswith("_samples") and k != "failed_turns"}
    print(json.dumps(summary, indent=2))
    return report


if __name__ == "__main__":
    main()
