"""A benchmark's provenance (date, command, machine) and JSON; the latency report's tables and plots."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.turns import STALL_HEARD_MS


def machine() -> dict[str, Any]:
    """The CPU model (from /proc/cpuinfo), its core count, Python and the system."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "system": platform.platform()}


def provenance(module: str, argv: list[str] | None = None) -> dict[str, Any]:
    """`date`, `command` (as typed from the repository root) and `machine` for a benchmark's JSON; `argv`
    is what its main was given (None: the command line)."""
    args = sys.argv[1:] if argv is None else argv
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "command": " ".join(["python -m", module, *map(shlex.quote, args)]), "machine": machine()}


def save_results(out: str | Path, name: str, result: dict[str, Any]) -> Path:
    """Write `result` as `out/name` (JSON), print its summary and refresh RESULTS.md; returns the file."""
    from benchmarks.results_page import refresh

    path = Path(out) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result["summary"], indent=1))
    refresh(path.parent)
    return path


_STAGE_PARTS = [
    ("end of turn (silence window)", None, "end_of_turn_ms"),
    ("final transcript", "end_of_turn_ms", "transcript_ms"),
    ("LLM first token", "transcript_ms", "llm_first_token_ms"),
    ("TTS first audio", "llm_first_token_ms", "tts_first_audio_ms"),
    ("to the client", "tts_first_audio_ms", None),
]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _row(name: str, summary: dict[str, Any]) -> str:
    v2v = summary["voice_to_voice_ms"]
    stages = summary["stages_median_ms"]
    wer = summary.get("wer")
    return (f"| {name} | {summary['turns']} | {summary['failed']} | {_ms(v2v['median'])} | {_ms(v2v['p90'])} | "
            f"{_ms(v2v['p95'])} | {_ms(stages.get('end_of_turn_ms'))} | {_ms(stages.get('transcript_ms'))} | "
            f"{_ms(stages.get('response_start_ms'))} | "
            f"{_ms(stages.get('llm_first_token_ms'))} | {_ms(stages.get('tts_first_audio_ms'))} | "
            f"{'-' if wer is None else f'{100 * wer:.1f}%'} | {summary.get('server_cpu_percent', 0):.0f}% | "
            f"{summary.get('server_rss_mb', 0):.0f} | {summary.get('cpu_steal_percent', 0):.1f}% | "
            f"{_stalls(summary)} |")


def _stalls(summary: dict[str, Any]) -> str:
    stall = summary.get("stall_ms") or {}
    if stall.get("max") is None:
        return "-"
    return f"{summary.get('stalled_turns', 0)} ({_ms(stall['max'])})"


LATENCY_HEADER = [
    "| pipeline | turns | failed | v2v median | p90 | p95 | end of turn | transcript | reply start | "
    "LLM 1st token | TTS 1st audio | WER | server CPU | RSS MB | CPU steal | stalls |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
]


def latency_rows(report: dict[str, Any]) -> list[str]:
    """The latency table's rows: each pipeline, then each concurrency of the cascade."""
    rows = [_row(name, summary) for name, summary in report["pipelines"].items()]
    return rows + [_row(f"cascade, {sessions} concurrent", summary)
                   for sessions, summary in report["concurrency"].items()]


def latency_ratios(report: dict[str, Any]) -> list[str]:
    """The median ratios a latency report holds, one sentence each."""
    names = [("naive_over_cascade_median", "Naive / cascade median voice-to-voice"),
             ("native_over_cascade_median", "Native / cascade median voice-to-voice"),
             ("native_over_cascade_push_to_talk_median", "Native / cascade median voice-to-voice, push-to-talk")]
    return [f"{label}: **{report[key]:.2f}x**." for key, label in names if key in report]


def write_markdown(report: dict[str, Any], path: Path) -> None:
    machine = report["machine"]
    lines = [
        f"Run {report['date']} on {machine['cpu']} ({machine['cores']} cores), Python {machine['python']}.",
        f"Command: `{report['command']}`",
        f"Clips: {', '.join(report['clips'])}; {report['runs']} sessions per pipeline.",
        "",
        "Voice-to-voice: from the last voiced sample of the user's recording (found from the audio) leaving the "
        "client, streamed at real-time pace, to the first reply audio reaching the client. Stage columns: "
        "server-side medians in ms after the end of speech (reply start: when the reply's work began, in the "
        "silence window for a reply started on the speculative transcript). CPU steal: the share of the "
        "machine's CPU time the hypervisor gave to other guests while the row ran (a noisy neighbour, not this "
        "code). Stalls: turns whose reply, played from its first audio in real time, waits "
        f"{STALL_HEARD_MS} ms or more for audio that has not arrived (a gap inside the reply), and the longest "
        "wait in ms. Push-to-talk rows (-ptt): the session has no turn detection; the client commits the audio "
        "and asks for the reply right after the last voiced frame (a button released), so no silence window "
        "is waited for and nothing can be prepared in one: each path's own speed.",
        "",
        *LATENCY_HEADER,
        *latency_rows(report),
        "",
        *latency_ratios(report),
    ]
    if "native" in report:
        native = report["native"]
        state = "trained" if native["trained"] else "UNTRAINED (latency only; its words mean nothing)"
        lines.append(f"Native projector: {native['projector']} ({state}). In the native rows, WER is the "
                     "cascade ASR's transcript running beside the reply.")
        if "native_transcription_wer" in native:
            lines.append(f"Native understanding on {native['recordings']} real recordings (native_eval.md): "
                         f"its own transcription WER {native['native_transcription_wer']:.1%} (Whisper "
                         f"{native['whisper_wer']:.1%}); replies on topic {native['native_reply_on_topic']:.0%} "
                         f"(cascade {native['cascade_reply_on_topic']:.0%}); same request as the cascade's reply "
                         f"{native['native_agrees_with_cascade'] or 0:.0%} of "
                         f"{native['cascade_on_topic_recordings']}.")
    offline, short = report["asr"]["offline_30s_window"], report["asr"]["short_window"]
    lines.append(f"Whisper on the whole clips: offline (30 s windows) WER {100 * offline['wer']:.1f}%, "
                 f"{offline['median_ms']:.0f} ms median per clip; short window (the server's) "
                 f"WER {100 * short['wer']:.1f}%, {short['median_ms']:.0f} ms.")
    failures = {name: s["failures"] for name, s in {**report["pipelines"], **{
        f"x{k}": v for k, v in report["concurrency"].items()}}.items() if s["failures"]}
    if failures:
        lines.append(f"Failures: {failures}")
    path.write_text("\n".join(lines) + "\n")


def write_plots(report: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {name: [t["voice_to_voice_ms"] for t in turns if t["ok"]] for name, turns in report["turns"].items()}
    series = {name: values for name, values in series.items() if values}
    if not series:
        return
    figure, axis = plt.subplots(figsize=(8, 4.5))
    axis.boxplot(list(series.values()), showfliers=True)
    axis.set_xticks(range(1, len(series) + 1), list(series), rotation=20)
    axis.set_ylabel("voice-to-voice latency (ms)")
    axis.set_title(f"Latency distribution ({report['machine']['cores']} cores, {report['date']})")
    axis.axhline(500, color="tab:green", linestyle="--", linewidth=1, label="500 ms target (median)")
    axis.axhline(800, color="tab:orange", linestyle="--", linewidth=1, label="800 ms target (p95)")
    axis.legend(loc="upper left")
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(out / "latency.png", dpi=110)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(8, 3.8))
    names = list(report["pipelines"]) + [f"cascade x{k}" for k in report["concurrency"]]
    summaries = list(report["pipelines"].values()) + list(report["concurrency"].values())
    colors = ["tab:gray", "tab:blue", "tab:purple", "tab:orange", "tab:green"]
    for row, summary in enumerate(summaries):
        stages = summary["stages_median_ms"]
        total = summary["voice_to_voice_ms"]["median"]
        left = 0.0
        for index, (label, start_key, end_key) in enumerate(_STAGE_PARTS):
            end = stages.get(end_key) if end_key else total
            start = stages.get(start_key) if start_key else 0.0
            if end is None or start is None:
                continue
            width = max(0.0, end - start)
            axis.barh(row, width, left=left, color=colors[index], label=label if row == 0 else None)
            left += width
    axis.set_yticks(range(len(names)), names)
    axis.invert_yaxis()
    axis.set_xlabel("median ms after the end of the user's speech")
    axis.set_title("Where the time goes")
    axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(out / "stages.png", dpi=110)
    plt.close(figure)
