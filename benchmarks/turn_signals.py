"""Offline study of end-of-turn signals: at every labelled pause of the turn-taking data (internal
pauses and true ends) and at probe times into it, what each signal says.

Signals (columns of the table; add one to SIGNALS and it is computed, saved and summarised):
- smart_turn: Smart Turn v3.2's probability that the turn is complete (ONNX, BSD-2, from the
  pipecat-ai wheel), on the last 8 s of the turn's audio up to the probe time;
- lm_end: the bundled SmolLM2's probability that the user's message ends after the transcript
  (its end-of-turn token next, punctuation stripped: what the words alone say);
- reads_as_finished, final_punct: today's rule (voice.text.reads_as_finished) and its first half;
- last_word_class, pitch_slope_st_s, energy_slope_db_s: descriptive features.
The transcript is tiny.en's, as the server's speculative pass makes it (audio to the pause + 120 ms).

    python -m benchmarks.turn_signals                       # all data; saves results/turn_signals.csv
    python -m benchmarks.turn_signals --items list_numbers wh_weather jfk --no-lm
    python -m benchmarks.turn_signals --summarise benchmarks/results/turn_signals.csv   # again, from the table
    python -m benchmarks.turn_signals --rescore-lm benchmarks/results/turn_signals.csv  # lm_end again

The summary gives, per signal, threshold and probe time, the share of internal pauses (250 ms or
more) it would call "end" (false cut-offs) against the share of finished utterances' ends it calls
"end"; "by" columns count a pause as cut once any probe up to that time said "end".
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.turn_data import RATE, Utterance, utterances
from voice import models
from voice.end_of_turn import SmartTurn, TextEnd

PROBES_MS = (100, 150, 200, 300, 400, 600, 800)
MIN_PAUSE_MS = 250
LEAD_IN_MS = 500  # background before the first word: pipecat gives Smart Turn 500 ms before the speech start
TAIL_MS = 120  # as server/session.py gives the speculative transcription
OUT = Path(__file__).resolve().parent / "results"
THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)

CONJUNCTIONS = {"and", "but", "or", "so", "because", "then", "if", "when", "while", "that", "which", "who"}
ARTICLES = {"a", "an", "the", "my", "your", "his", "her", "our", "their", "this", "some"}
PREPOSITIONS = {"to", "of", "in", "on", "at", "for", "with", "from", "by", "about", "into", "like"}
FILLERS = {"um", "uh", "er", "erm", "hmm", "mm", "ah"}


def last_word_class(text: str) -> str:
    words = re.sub(r"[^\w\s']", " ", text.lower()).split()
    if not words:
        return "none"
    word = words[-1]
    for name, vocabulary in (("conjunction", CONJUNCTIONS), ("article", ARTICLES), ("preposition", PREPOSITIONS),
                             ("filler", FILLERS)):
        if word in vocabulary:
            return name
    return "number" if word.isdigit() else "other"


def pitch_track(audio: np.ndarray, frame_ms: int = 40, hop_ms: int = 10) -> list[tuple[float, float]]:
    """(time s, F0 Hz) of voiced frames: the autocorrelation peak in 70-400 Hz, kept when it holds
    at least 0.5 of the frame's energy."""
    frame, hop = RATE * frame_ms // 1000, RATE * hop_ms // 1000
    lo, hi = RATE // 400, RATE // 70
    track = []
    for start in range(0, audio.size - frame, hop):
        x = audio[start:start + frame].astype(np.float64)
        x = x - x.mean()
        energy = float(np.dot(x, x))
        if energy < 1e-6:
            continue
        corr = np.correlate(x, x, "full")[frame - 1:]
        lag = lo + int(np.argmax(corr[lo:hi]))
        if corr[lag] / energy >= 0.5:
            track.append(((start + frame / 2) / RATE, RATE / lag))
    return track


def prosody_slopes(speech: np.ndarray, window_ms: int = 400) -> tuple[float | None, float | None]:
    """Pitch slope (semitones/s) and energy slope (dB/s) over the last `window_ms` of speech."""
    tail = speech[-RATE * window_ms // 1000:]
    track = pitch_track(tail)
    pitch = None
    if len(track) >= 4:
        t, f0 = np.array(track).T
        pitch = float(np.polyfit(t, 12 * np.log2(f0 / f0.mean()), 1)[0])
    hop = RATE // 100
    frames = tail[: tail.size // hop * hop].reshape(-1, hop).astype(np.float64)
    level = 20 * np.log10(np.sqrt(np.mean(frames ** 2, axis=1)) + 1e-9)
    energy = float(np.polyfit(np.arange(level.size) / 100, level, 1)[0]) if level.size >= 4 else None
    return pitch, energy


@dataclass(frozen=True)
class Boundary:
    """A place where the speaker stops: an internal pause (`end` False) or the true end."""

    item: Utterance
    start_ms: float
    duration_ms: float
    end: bool


def boundaries(item: Utterance) -> list[Boundary]:
    return [Boundary(item, p.start_ms, p.duration_ms, False) for p in item.pauses] + \
        [Boundary(item, item.speech_end_ms, math.inf, True)]


@dataclass
class Context:
    """What a signal may look at, at one probe: the turn's audio up to the probe time (with its
    lead-in), the transcript up to the pause, and the probe's place."""

    boundary: Boundary
    probe_ms: int
    audio: np.ndarray
    transcript: str


Signal = Callable[[Context], float | str | None]


def build_signals(smart_turn: SmartTurn | None, lm: TextEnd | None) -> dict[str, Signal]:
    """The signals at a pause: Smart Turn on the audio, and the words' (the LLM's end probability,
    as the server computes them: voice/end_of_turn.py)."""
    from voice.text import reads_as_finished

    signals: dict[str, Signal] = {}
    if smart_turn is not None:
        signals["smart_turn"] = lambda c: smart_turn.probability(c.audio)
    if lm is not None:
        signals["lm_end"] = _per_boundary(lambda c: lm.lm_probability(c.transcript))
    signals["reads_as_finished"] = lambda c: float(reads_as_finished(c.transcript))
    signals["final_punct"] = lambda c: float(c.transcript.strip()[-1:] in (".", "?", "!"))
    signals["last_word_class"] = lambda c: last_word_class(c.transcript)
    return signals


def _per_boundary(signal: Signal) -> Signal:
    """A signal that depends only on the boundary (the transcript), computed once per boundary."""
    cache: dict[tuple[str, float], Any] = {}

    def once(context: Context) -> float | str | None:
        key = (context.boundary.item.name, context.boundary.start_ms)
        if key not in cache:
            cache[key] = signal(context)
        return cache[key]

    return once


def study(items: list[Utterance], signals: dict[str, Signal], transcriber, probes: tuple[int, ...] = PROBES_MS,
          ) -> list[dict[str, Any]]:
    """One row per (boundary, probe), with every signal's value and how long each took."""
    rows = []
    lead = LEAD_IN_MS * RATE // 1000
    for number, item in enumerate(items, 1):
        after = max(probes) * RATE // 1000 + RATE
        audio = np.concatenate([item.background(lead, offset=1), item.audio,
                                item.background(after, offset=2)])
        for boundary in boundaries(item):
            start = lead + int(boundary.start_ms * RATE / 1000)
            began = time.perf_counter()
            transcript = transcriber.transcribe(audio[lead:start + TAIL_MS * RATE // 1000])
            asr_ms = (time.perf_counter() - began) * 1000
            pitch, energy = prosody_slopes(audio[max(lead, start - RATE):start])
            for probe in probes:
                if probe >= boundary.duration_ms:
                    break
                context = Context(boundary, probe, audio[:start + probe * RATE // 1000], transcript)
                row: dict[str, Any] = {
                    "item": item.name, "source": item.source, "kind": item.kind, "voice": item.voice,
                    "prosody": item.prosody, "noise_dbfs": item.noise_dbfs,
                    "boundary": "end" if boundary.end else "internal", "finished": item.finished,
                    "pause_start_ms": round(boundary.start_ms), "pause_ms": None if boundary.end
                    else round(boundary.duration_ms), "probe_ms": probe, "transcript": transcript,
                    "asr_ms": round(asr_ms, 1), "pitch_slope_st_s": pitch, "energy_slope_db_s": energy,
                }
                for name, signal in signals.items():
                    began = time.perf_counter()
                    row[name] = signal(context)
                    row[f"{name}_ms"] = round((time.perf_counter() - began) * 1000, 2)
                rows.append(row)
        print(f"[{number}/{len(items)}] {item.name}: {len(boundaries(item))} boundaries", flush=True)
    return rows


def numeric_signals(rows: list[dict[str, Any]]) -> list[str]:
    """Columns that hold a probability-like value on every row (the signals a threshold applies to)."""
    skip = {"pause_start_ms", "pause_ms", "probe_ms", "asr_ms", "noise_dbfs", "pitch_slope_st_s",
            "energy_slope_db_s", "finished"}
    names = []
    for name in rows[0]:
        if name in skip or name.endswith("_ms"):
            continue
        try:
            values = [float(r[name]) for r in rows]
        except (TypeError, ValueError):
            continue
        if all(0.0 <= v <= 1.0 for v in values):
            names.append(name)
    return names


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


COMBINED = (("smart_turn", "lm_end"), ("smart_turn", "reads_as_finished"))
"""Pairs summarised together as "a&b" (the smaller of the two: both must say "end")."""


def add_combined(rows: list[dict[str, Any]]) -> None:
    for a, b in COMBINED:
        if rows and a in rows[0] and b in rows[0]:
            for row in rows:
                row[f"{a}&{b}"] = min(float(row[a]), float(row[b]))


def summarise(rows: list[dict[str, Any]], signals: list[str] | None = None,
              thresholds: tuple[float, ...] = THRESHOLDS) -> dict[str, Any]:
    """Per signal, threshold and probe time: the share of internal pauses of MIN_PAUSE_MS or more
    called "end" at that probe (`false_cut_at`) and by it (`false_cut_by`: at any probe up to it),
    and the same for the ends of finished utterances (`end_at`, `end_by`) and of all utterances."""
    add_combined(rows)
    signals = signals or numeric_signals(rows)
    groups: dict[tuple[str, float, str], dict[int, float]] = {}
    for row in rows:
        pause = row["pause_ms"]
        if row["boundary"] == "internal" and (pause in (None, "") or float(pause) < MIN_PAUSE_MS):
            continue
        group = "internal" if row["boundary"] == "internal" else ("finished" if _truthy(row["finished"]) else "other")
        key = (row["item"], float(row["pause_start_ms"]), group)
        groups.setdefault(key, {})[int(row["probe_ms"])] = row
    summary: dict[str, Any] = {"min_pause_ms": MIN_PAUSE_MS, "signals": {}}
    counts = {g: sum(1 for k in groups if k[2] == g) for g in ("internal", "finished", "other")}
    summary["boundaries"] = counts
    for name in signals:
        table = []
        for threshold in thresholds:
            for probe in PROBES_MS:
                line: dict[str, Any] = {"threshold": threshold, "probe_ms": probe}
                for group, label in (("internal", "false_cut"), ("finished", "end"), ("other", "end_other")):
                    at = by = total = 0
                    for (_, _, g), probes in groups.items():
                        if g != group or probe not in probes:
                            continue
                        total += 1
                        at += float(probes[probe][name]) >= threshold
                        by += any(float(probes[p][name]) >= threshold for p in probes if p <= probe)
                    line[f"{label}_at"] = at / total if total else None
                    line[f"{label}_by"] = by / total if total else None
                    line[f"{label}_n"] = total
                table.append(line)
        summary["signals"][name] = table
    timings = {}
    for name in [*signals, "asr"]:
        # The transcript and what depends on it alone are computed once per boundary (its first probe).
        once = name in ("asr", "lm_end")
        values = [float(r[f"{name}_ms"]) for r in rows if r.get(f"{name}_ms") not in (None, "")
                  and (not once or int(r["probe_ms"]) == PROBES_MS[0])]
        if values and name not in ("reads_as_finished", "final_punct"):
            timings[name] = {"median_ms": statistics.median(values), "p95_ms": float(np.percentile(values, 95)),
                             "n": len(values)}
    summary["timings"] = timings
    return summary


def print_summary(summary: dict[str, Any], probes: tuple[int, ...] = (150, 300, 600)) -> None:
    counts = summary["boundaries"]
    print(f"\nboundaries: {counts['internal']} internal pauses >= {summary['min_pause_ms']} ms, "
          f"{counts['finished']} finished ends, {counts['other']} other ends")
    print(f"{'signal':<18} {'thr':>4} {'probe':>5}  {'false cut at/by':>16}  {'finished end at/by':>19}  "
          f"{'other end at':>12}")
    for name, table in summary["signals"].items():
        for line in table:
            if line["probe_ms"] not in probes:
                continue
            def pct(v: float | None) -> str:
                return "   -" if v is None else f"{100 * v:4.0f}"
            print(f"{name:<18} {line['threshold']:>4} {line['probe_ms']:>5}  "
                  f"{pct(line['false_cut_at'])}% / {pct(line['false_cut_by'])}%  "
                  f"{pct(line['end_at'])}% / {pct(line['end_by'])}%     {pct(line['end_other_at'])}%")
    for name, timing in summary["timings"].items():
        print(f"{name}: median {timing['median_ms']:.1f} ms, p95 {timing['p95_ms']:.1f} ms per call "
              f"({timing['n']} calls)")


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def read_rows(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def rescore_lm(table: Path, out: Path, signals: list[str] | None, command: str) -> dict[str, Any]:
    """The saved table with `lm_end` computed again by today's `TextEnd` on each pause's transcript
    (the other columns, and the measuring run's record, stay as they were)."""
    from benchmarks.report import machine

    rows = read_rows(table)
    lm = TextEnd(models.gguf_model(None))
    scored: dict[str, float] = {}
    for row in rows:
        text = row["transcript"]
        began = time.perf_counter()
        if text not in scored:
            scored[text] = lm.lm_probability(text)
        row["lm_end"], row["lm_end_ms"] = scored[text], round((time.perf_counter() - began) * 1000, 2)
    saved = table.with_suffix(".json")
    measured = json.loads(saved.read_text(encoding="utf-8")) if saved.is_file() else {}
    out.mkdir(parents=True, exist_ok=True)
    write_rows(out / "turn_signals.csv", rows)
    summary = summarise(rows, signals)
    summary.update(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), command=command, machine=machine(),
                   measured={k: measured[k] for k in ("date", "command", "items", "smart_turn_threads", "machine")
                             if k in measured})
    (out / "turn_signals.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    print_summary(summary)
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.turn_signals", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", nargs="*", help="item or script names (default: all)")
    parser.add_argument("--sources", nargs="+", default=["synthetic", "recording"], choices=["synthetic", "recording"])
    parser.add_argument("--no-smart-turn", action="store_true")
    parser.add_argument("--no-lm", action="store_true", help="skip the LLM's end-of-turn probability")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads for Smart Turn")
    parser.add_argument("--turn-model", default="bundled", help="Smart Turn's ONNX file ('bundled': pipecat-ai's)")
    parser.add_argument("--summarise", type=Path, help="summarise a saved table instead of measuring")
    parser.add_argument("--signals", nargs="*", help="columns to summarise (default: every probability column)")
    parser.add_argument("--rescore-lm", type=Path, metavar="TABLE",
                        help="compute lm_end again on a saved table's transcripts (after a change to the words model)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    command = " ".join(["python -m benchmarks.turn_signals", *(sys.argv[1:] if argv is None else argv)])
    if args.rescore_lm:
        return rescore_lm(args.rescore_lm, args.out, args.signals, command)
    if args.summarise:  # (the measuring run's date, command and machine stay in the JSON beside the table)
        summary = summarise(read_rows(args.summarise), args.signals)
        saved = args.summarise.with_suffix(".json")
        measured = json.loads(saved.read_text(encoding="utf-8")) if saved.is_file() else {}
        summary.update({k: measured[k] for k in ("date", "command", "items", "smart_turn_threads", "machine")
                        if k in measured})
        saved.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
        print_summary(summary)
        return summary
    from voice.asr.whisper import WhisperTranscriber
    from voice.models import whisper_model

    items = utterances(set(args.items) if args.items else None, tuple(args.sources))
    if not items:
        sys.exit("no items matched")
    smart_turn = None if args.no_smart_turn else SmartTurn(models.smart_turn_model(args.turn_model), args.threads)
    lm = None if args.no_lm else TextEnd(models.gguf_model(None))
    transcriber = WhisperTranscriber(whisper_model(None))
    rows = study(items, build_signals(smart_turn, lm), transcriber)
    args.out.mkdir(parents=True, exist_ok=True)
    write_rows(args.out / "turn_signals.csv", rows)
    summary = summarise(rows, args.signals)
    summary.update(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), command=command,
                   items=len(items), smart_turn_threads=args.threads)
    from benchmarks.report import machine

    summary["machine"] = machine()
    (args.out / "turn_signals.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    print_summary(summary)
    return summary


if __name__ == "__main__":
    main()
