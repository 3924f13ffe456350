"""Voice-to-voice latency benchmark: this project's cascade against a naive cascade and the native
audio-token path, same clips, same models, same run; then a concurrency sweep. Saves JSON, a
markdown table and PNG plots.

    python -m benchmarks.latency                       # the full run
    python -m benchmarks.latency --quick               # one clip, one run, no sweep
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Coroutine
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import provenance, write_markdown, write_plots
from benchmarks.results_page import refresh
from benchmarks.servers import RunningServer, voice_server
from benchmarks.turns import STAGES, STALL_HEARD_MS, Clip, TurnResult, load_clip, run_session, sessions_at_once

DEFAULT_CLIPS = [
    "03_v2j_turn_on_living_room_lamp.wav",
    "04_v2j_would_you_please_turn_on_living_room_lamp.wav",
    "06_ps_goforward.wav",
    "18_rstt_LJ001-0004.wav",
]
PIPELINES: dict[str, list[str]] = {"cascade": [], "naive": ["--pipeline", "naive"], "native": ["--pipeline", "native"]}
OUT = Path(__file__).resolve().parent / "results"


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def summarise(results: list[TurnResult]) -> dict[str, Any]:
    import jiwer

    from voice.asr.hallucination import normalise

    ok = [r for r in results if r.ok]
    latencies = [r.voice_to_voice_ms for r in ok if r.voice_to_voice_ms is not None]
    stalls = [r.stall_ms for r in ok if r.stall_ms is not None]
    stages = {}
    for stage in STAGES:
        values = [r.stages[stage] for r in ok if stage in r.stages]
        stages[stage] = statistics.median(values) if values else None
    pairs = [(normalise(r.reference), normalise(r.transcript)) for r in results if normalise(r.reference)]
    wer = float(jiwer.wer([p[0] for p in pairs], [p[1] or "-" for p in pairs])) if pairs else None
    return {
        "turns": len(results),
        "failed": len(results) - len(ok),
        "failures": sorted({r.failure for r in results if r.failure}),
        "voice_to_voice_ms": {"median": percentile(latencies, 50), "p90": percentile(latencies, 90),
                              "p95": percentile(latencies, 95), "min": min(latencies, default=None),
                              "max": max(latencies, default=None)},
        "stages_median_ms": stages,
        "wer": wer,
        "stall_ms": {"median": percentile(stalls, 50), "p95": percentile(stalls, 95), "max": max(stalls, default=None)},
        "stalled_turns": sum(1 for stall in stalls if stall >= STALL_HEARD_MS),
    }


def asr_comparison(clips: list[Clip], repeats: int = 3) -> dict[str, Any]:
    """Whisper offline (faster-whisper's standard 30 s windows) against the short-window path the
    server uses, on the whole clips: word error rate and median time per clip."""
    import jiwer

    from voice.asr.hallucination import normalise
    from voice.asr.whisper import WhisperTranscriber
    from voice.audio import ASR_RATE, WIRE_RATE, pcm16_to_float, resample
    from voice.models import whisper_model

    result: dict[str, Any] = {}
    for name, short in (("offline_30s_window", False), ("short_window", True)):
        model = WhisperTranscriber(whisper_model(None), short_window=short)
        refs, hyps, times = [], [], []
        for clip in clips:
            audio = resample(pcm16_to_float(clip.pcm), WIRE_RATE, ASR_RATE)
            model.transcribe(audio)  # warm
            for _ in range(repeats):
                started = time.perf_counter()
                text = model.transcribe(audio)
                times.append((time.perf_counter() - started) * 1000)
            refs.append(normalise(clip.reference))
            hyps.append(normalise(text) or "-")
        result[name] = {"wer": float(jiwer.wer(refs, hyps)), "median_ms": statistics.median(times)}
    return result


def native_projector(spec: str, out: Path) -> tuple[Path, bool]:
    """The projector to benchmark and whether it is trained (an untrained one still measures latency)."""
    from voice.models import BUNDLED_PROJECTOR, ModelNotFoundError, native_projector
    from voice.native.projector import NumpyProjector, ProjectorConfig

    try:
        path = native_projector(spec)
        return path, path != BUNDLED_PROJECTOR or BUNDLED_PROJECTOR.is_file()
    except ModelNotFoundError:
        if spec != "bundled":
            raise
        print("no trained projector is bundled: the native path runs untrained (latency only)", flush=True)
        return NumpyProjector.init(ProjectorConfig()).save(out / "untrained-projector.npz"), False


async def measure(server: RunningServer, clips: list[Clip], runs: int, pause_s: float,
                  push_to_talk: bool = False, fresh_sessions: bool = False) -> list[TurnResult]:
    """`runs` sessions one after another, each speaking every clip in turn (with `fresh_sessions`,
    every turn on a session of its own: no reply follows, or repeats, an earlier one)."""
    results: list[TurnResult] = []
    for _ in range(runs):
        if fresh_sessions:
            for clip in clips:
                await asyncio.sleep(pause_s)
                results += await run_session(server.url, [clip], push_to_talk=push_to_talk)
        else:
            results += await run_session(server.url, clips, pause_s=pause_s, push_to_talk=push_to_talk)
    return results


async def measure_webrtc(server: RunningServer, clips: list[Clip], runs: int, pause_s: float,
                         fresh_sessions: bool = False) -> list[TurnResult]:
    """As `measure`, over WebRTC calls (Opus both ways) instead of websockets."""
    from benchmarks.webrtc_turns import run_webrtc_session  # aiortc: the webrtc extra

    results: list[TurnResult] = []
    for _ in range(runs):
        if fresh_sessions:
            for clip in clips:
                await asyncio.sleep(pause_s)
                results += await run_webrtc_session(server.url, [clip])
        else:
            results += await run_webrtc_session(server.url, clips, pause_s=pause_s)
    return results


async def sweep(server: RunningServer, clips: list[Clip], sessions: int, turns: int) -> list[TurnResult]:
    """`sessions` simultaneous sessions, each speaking `turns` clips with pauses between them."""
    return await sessions_at_once(server.url, clips, sessions, turns)


def cpu_ticks() -> tuple[int, int]:
    """Machine-wide (steal, total) CPU ticks from /proc/stat; (0, 0) where there is none.
    Steal is time the hypervisor gave this VM's CPUs to someone else: a run with much of it
    was slowed by its neighbours, not by this code."""
    try:
        with open("/proc/stat", encoding="utf-8") as handle:
            fields = [int(v) for v in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


async def measured(server: RunningServer, turns: Coroutine[Any, Any, list[TurnResult]],
                   ) -> tuple[list[TurnResult], dict[str, Any]]:
    """Run `turns` and summarise them with the server's CPU and memory and the machine's steal."""
    cpu_before, _ = server.usage()
    steal_before, total_before = cpu_ticks()
    started = time.monotonic()
    results = await turns
    elapsed = time.monotonic() - started
    cpu_after, rss = server.usage()
    steal_after, total_after = cpu_ticks()
    summary = summarise(results)
    summary["server_cpu_percent"] = 100 * (cpu_after - cpu_before) / elapsed
    summary["server_rss_mb"] = rss / 2**20
    summary["cpu_steal_percent"] = 100 * (steal_after - steal_before) / max(1, total_after - total_before)
    return results, summary


async def run(args: argparse.Namespace, argv: list[str] | None = None) -> dict[str, Any]:
    clips = [load_clip(name) for name in args.clips]
    report: dict[str, Any] = {
        **provenance("benchmarks.latency", argv),
        "clips": [c.name for c in clips],
        "runs": args.runs,
        "fresh_sessions": args.fresh_sessions,
        "llm_model": args.llm_model,
        "tts": args.tts,
        "pipelines": {},
        "concurrency": {},
        "turns": {},
    }
    for pipeline in args.pipelines:
        log = args.out / f"server-{pipeline}.log"
        extra: list[str] = ["--llm-model", args.llm_model] if args.llm_model else []
        extra += ["--tts", args.tts] if args.tts else []
        if pipeline == "native":
            projector, trained = native_projector(args.native_projector, args.out)
            extra += ["--native-projector", str(projector)]
            report["native"] = {"projector": str(projector), "trained": trained}
        with voice_server(*PIPELINES[pipeline], *extra, log=log) as server:
            await run_session(server.url, clips[:1])  # warm-up: first-call costs are not latency
            results, summary = await measured(server, measure(server, clips, args.runs, args.pause,
                                                              fresh_sessions=args.fresh_sessions))
            report["pipelines"][pipeline] = summary
            report["turns"][pipeline] = [r.as_dict() for r in results]
            print(f"{pipeline}: {json.dumps(summary['voice_to_voice_ms'])} failed={summary['failed']}", flush=True)
            if args.push_to_talk and pipeline != "naive":
                results, summary = await measured(server, measure(server, clips, args.runs, args.pause,
                                                                  push_to_talk=True,
                                                                  fresh_sessions=args.fresh_sessions))
                report["pipelines"][f"{pipeline}-ptt"] = summary
                report["turns"][f"{pipeline}-ptt"] = [r.as_dict() for r in results]
                print(f"{pipeline}, push-to-talk: {json.dumps(summary['voice_to_voice_ms'])} "
                      f"failed={summary['failed']}", flush=True)
            if pipeline == "cascade" and args.webrtc and find_spec("aiortc") is None:
                print("no WebRTC row: aiortc is not installed (the webrtc extra)", flush=True)
            elif pipeline == "cascade" and args.webrtc:
                results, summary = await measured(server, measure_webrtc(server, clips, args.runs, args.pause,
                                                                         fresh_sessions=args.fresh_sessions))
                report["pipelines"]["cascade-webrtc"] = summary
                report["turns"]["cascade-webrtc"] = [r.as_dict() for r in results]
                print(f"cascade, WebRTC: {json.dumps(summary['voice_to_voice_ms'])} failed={summary['failed']}",
                      flush=True)
            if pipeline == "cascade":
                for sessions in args.concurrency:
                    results, summary = await measured(server, sweep(server, clips, sessions, args.sweep_turns))
                    report["concurrency"][str(sessions)] = summary
                    report["turns"][f"cascade-x{sessions}"] = [r.as_dict() for r in results]
                    print(f"cascade x{sessions}: {json.dumps(summary['voice_to_voice_ms'])} "
                          f"failed={summary['failed']}", flush=True)
    if "native" in report and not args.skip_native_eval:
        from benchmarks.native_eval import evaluate
        from benchmarks.native_eval import markdown as eval_markdown

        evaluation = {**provenance("benchmarks.latency", argv), **evaluate(report["native"]["projector"])}
        (args.out / "native_eval.json").write_text(json.dumps(evaluation, indent=2) + "\n", encoding="utf-8")
        (args.out / "native_eval.md").write_text(eval_markdown(evaluation), encoding="utf-8")
        report["native"].update({k: v for k, v in evaluation.items() if k != "rows"})
    report["asr"] = asr_comparison(clips)
    report["offline_whisper_wer"] = report["asr"]["offline_30s_window"]["wer"]
    cascade = report["pipelines"].get("cascade", {}).get("voice_to_voice_ms", {}).get("median")
    naive = report["pipelines"].get("naive", {}).get("voice_to_voice_ms", {}).get("median")
    if cascade and naive:
        report["naive_over_cascade_median"] = naive / cascade
    native = report["pipelines"].get("native", {}).get("voice_to_voice_ms", {}).get("median")
    if cascade and native:
        report["native_over_cascade_median"] = native / cascade
    webrtc = report["pipelines"].get("cascade-webrtc", {}).get("voice_to_voice_ms", {}).get("median")
    if cascade and webrtc:
        report["webrtc_over_websocket_median"] = webrtc / cascade
    cascade_ptt = report["pipelines"].get("cascade-ptt", {}).get("voice_to_voice_ms", {}).get("median")
    native_ptt = report["pipelines"].get("native-ptt", {}).get("voice_to_voice_ms", {}).get("median")
    if cascade_ptt and native_ptt:
        report["native_over_cascade_push_to_talk_median"] = native_ptt / cascade_ptt
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.latency", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", nargs="+", default=DEFAULT_CLIPS, help="files in tests/data")
    parser.add_argument("--runs", type=int, default=5, help="sessions per pipeline, each speaking every clip")
    parser.add_argument("--pipelines", nargs="+", default=list(PIPELINES), choices=list(PIPELINES))
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",") if x], default=[1, 2, 4, 8],
                        help="comma-separated session counts for the sweep ('' for none)")
    parser.add_argument("--sweep-turns", type=int, default=4, help="turns per session in the sweep")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds of silence between turns")
    parser.add_argument("--fresh-sessions", action="store_true",
                        help="every turn of the pipelines' rows on a new session (SmolLM2 repeats its own "
                             "earlier replies, so in one session the first reply sets how later ones open)")
    parser.add_argument("--no-push-to-talk", dest="push_to_talk", action="store_false",
                        help="no push-to-talk rows (sessions without turn detection: the client commits "
                             "at the end of speech and asks for the reply, so no silence window is waited for)")
    parser.add_argument("--no-webrtc", dest="webrtc", action="store_false",
                        help="no WebRTC row (the cascade's turns over POST /v1/realtime/calls, Opus both ways; "
                             "it needs the webrtc extra)")
    parser.add_argument("--llm-model", default=None,
                        help="the servers' --llm-model (default: theirs); the native projector is trained for "
                             "the bundled LLM, so another one suits the cascade rows only")
    parser.add_argument("--tts", default=None,
                        help="the servers' --tts, the voice that speaks first (default: theirs, Piper), e.g. "
                             "kokoro:af_heart")
    parser.add_argument("--native-projector", default="bundled",
                        help="projector for the native pipeline ('bundled': the one trained here)")
    parser.add_argument("--skip-native-eval", action="store_true",
                        help="no offline understanding evaluation of the native model (benchmarks.native_eval)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--quick", action="store_true", help="one clip, one run, cascade only, no sweep")
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.clips, args.runs, args.pipelines, args.concurrency = args.clips[:1], 1, ["cascade"], []
    args.out.mkdir(parents=True, exist_ok=True)
    report = asyncio.run(run(args, argv))
    (args.out / "latency.json").write_text(json.dumps(report, indent=2))
    write_markdown(report, args.out / "latency.md")
    write_plots(report, args.out)
    print(f"results in {args.out}/latency.json, latency.md, latency.png, stages.png")
    refresh(args.out)
    return report


if __name__ == "__main__":
    main()
