"""Paired A/B latency: two source trees of the server (a git revision against the working tree),
both running, their turns interleaved on the same clips.

This machine's speed drifts by more than most changes are worth (the same code measured a
cascade median of 542 and of 429 ms in runs fifteen minutes apart), so two separate benchmark runs
cannot tell a 30 ms change from the drift. Here both servers are loaded at once and take turns:
each round speaks every clip to A and then to B (B first in odd rounds), one turn at a time, so a
slow minute slows both. Reported: each side's median, and the paired differences (B - A) of the
same clip in the same round.

    python -m benchmarks.ab --base HEAD --rounds 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.latency import DEFAULT_CLIPS, percentile, summarise
from benchmarks.report import provenance
from benchmarks.results_page import refresh
from benchmarks.servers import ROOT, voice_server
from benchmarks.turns import FRAME_BYTES, FRAME_MS, Clip, TurnResult, load_clip, run_turn
from clients.python.client import RealtimeClient


def worktree(revision: str, into: Path) -> Path:
    """A checkout of `revision` (a detached git worktree) under `into`."""
    path = into / "base"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), revision], check=True,
                   capture_output=True)
    return path


async def interleaved(urls: tuple[str, str], clips: list[Clip], rounds: int, pause_s: float,
                      push_to_talk: bool = False, fresh_sessions: bool = False,
                      ) -> tuple[list[TurnResult], list[TurnResult]]:
    """One session per server; every round speaks each clip to both, alternating which goes first
    (with `push_to_talk`: sessions without turn detection, the client commits each turn). With
    `fresh_sessions`, each turn has a new session: no reply follows (or copies) an earlier one."""
    clients = [await _session(url, push_to_talk) for url in urls]
    results: tuple[list[TurnResult], list[TurnResult]] = ([], [])
    pause = bytes(FRAME_BYTES * int(pause_s * 1000 / FRAME_MS))
    try:
        for side in (0, 1):  # warm-up: first-call costs are not latency
            await run_turn(clients[side], clips[0], push_to_talk=push_to_talk)
        for number in range(rounds):
            for clip in clips:
                for side in ((0, 1) if number % 2 == 0 else (1, 0)):
                    if fresh_sessions:
                        await clients[side].close()
                        clients[side] = await _session(urls[side], push_to_talk)
                    if push_to_talk:
                        await asyncio.sleep(pause_s)
                    else:
                        await clients[side].stream_audio(pause, frame_ms=FRAME_MS)
                    results[side].append(await run_turn(clients[side], clip, push_to_talk=push_to_talk))
    finally:
        for client in clients:
            await client.close()
    return results


async def _session(url: str, push_to_talk: bool) -> RealtimeClient:
    client = await RealtimeClient.connect(url)
    if push_to_talk:
        await client.send({"type": "session.update", "session": {"audio": {"input": {"turn_detection": None}}}})
    return client


def paired(a: list[TurnResult], b: list[TurnResult], measure: str = "voice_to_voice_ms") -> dict[str, Any]:
    """B - A of a measure (voice-to-voice, or a server stage such as `llm_first_token_ms`) of the
    same clip in the same round, where both turns succeeded."""
    def value(turn: TurnResult) -> float | None:
        return turn.voice_to_voice_ms if measure == "voice_to_voice_ms" else turn.stages.get(measure)

    diffs = [value(y) - value(x) for x, y in zip(a, b, strict=True)
             if x.ok and y.ok and value(x) is not None and value(y) is not None]
    return {"pairs": len(diffs), "median_ms": percentile(diffs, 50), "p25_ms": percentile(diffs, 25),
            "p75_ms": percentile(diffs, 75), "mean_ms": statistics.fmean(diffs) if diffs else None,
            "b_faster": sum(1 for d in diffs if d < 0)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    clips = [load_clip(name) for name in args.clips]
    with tempfile.TemporaryDirectory(prefix="voice-ab-") as scratch:
        base = args.base_tree or worktree(args.base, Path(scratch))
        try:
            with voice_server(*args.serve_args, root=base, log=args.out / "server-a.log") as a, \
                    voice_server(*args.serve_args, root=args.candidate, log=args.out / "server-b.log") as b:
                turns_a, turns_b = await interleaved((a.url, b.url), clips, args.rounds, args.pause,
                                                     args.push_to_talk, args.fresh_sessions)
        finally:
            if not args.base_tree:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False,
                               capture_output=True)
    return {
        **args.provenance,
        "a": {"tree": args.base if not args.base_tree else str(args.base_tree), **summarise(turns_a)},
        "b": {"tree": str(args.candidate), **summarise(turns_b)},
        "b_minus_a": paired(turns_a, turns_b),
        "b_minus_a_first_token": paired(turns_a, turns_b, "llm_first_token_ms"),
        "turns": {"a": [t.as_dict() for t in turns_a], "b": [t.as_dict() for t in turns_b]},
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="HEAD", help="git revision for side A (default: the last commit)")
    parser.add_argument("--base-tree", type=Path, help="a source tree for side A instead of a revision")
    parser.add_argument("--candidate", type=Path, default=ROOT, help="source tree for side B (default: this one)")
    parser.add_argument("--clips", nargs="+", default=DEFAULT_CLIPS, help="files in tests/data")
    parser.add_argument("--rounds", type=int, default=6, help="times every clip is spoken to each side")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds of silence before each turn")
    parser.add_argument("--push-to-talk", action="store_true",
                        help="no turn detection: the client commits each turn at its last voiced frame")
    parser.add_argument("--fresh-sessions", action="store_true",
                        help="a new session for every turn: no reply follows an earlier one (a small LLM "
                             "copies its own earlier replies, so a change that alters one reply alters all)")
    parser.add_argument("--serve-args", nargs=argparse.REMAINDER, default=[],
                        help="options for both `voice serve` commands (last on the line)")
    parser.add_argument("--out", type=Path, default=Path("ab-results"))
    args = parser.parse_args(argv)
    args.provenance = provenance("benchmarks.ab", argv)
    args.out.mkdir(parents=True, exist_ok=True)
    report = asyncio.run(run(args))
    (args.out / "ab.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    refresh(args.out)
    for side in ("a", "b"):
        v2v = report[side]["voice_to_voice_ms"]
        print(f"{side} ({report[side]['tree']}): median {v2v['median']:.0f} p90 {v2v['p90']:.0f} "
              f"p95 {v2v['p95']:.0f} ms, failed {report[side]['failed']} of {report[side]['turns']}")
    diff = report["b_minus_a"]
    print(f"b - a, paired by clip and round: median {diff['median_ms']:+.0f} ms (quartiles {diff['p25_ms']:+.0f} "
          f"to {diff['p75_ms']:+.0f}), b faster in {diff['b_faster']} of {diff['pairs']}; {args.out / 'ab.json'}")
    token = report["b_minus_a_first_token"]
    if token["pairs"]:
        print(f"first token (server), b - a paired: median {token['median_ms']:+.0f} ms (quartiles "
              f"{token['p25_ms']:+.0f} to {token['p75_ms']:+.0f})")
    return report


if __name__ == "__main__":
    main()
