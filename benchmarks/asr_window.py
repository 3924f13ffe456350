"""Whisper's short-window fast path at several window sizes: word error rate and time on the 20
real recordings of native_eval, and how often it falls back to the 30 s pass on cuts of a short
command (what speculative passes see: the utterance cut at every 64 ms of its end).

    python -m benchmarks.asr_window --windows 10:3 6:2
"""

from __future__ import annotations

import argparse
import statistics
import time

import jiwer
import soundfile

import voice.asr.whisper as whisper
from benchmarks.native_eval import load_recordings
from benchmarks.turns import DATA
from voice.asr.hallucination import normalise
from voice.models import whisper_model

CUT_CLIP = "06_ps_goforward.wav"


def measure(model: whisper.WhisperTranscriber, min_window_s: float, pad_s: float) -> dict[str, float]:
    whisper._MIN_WINDOW_S, whisper._PAD_S = min_window_s, pad_s  # the module's knobs, for this probe only
    recordings = load_recordings()
    for recording in recordings:
        model.transcribe(recording.audio_16k)  # warm
    model.fallbacks = 0
    refs, hyps, times = [], [], []
    for recording in recordings:
        started = time.perf_counter()
        text = model.transcribe(recording.audio_16k)
        times.append((time.perf_counter() - started) * 1000)
        refs.append(normalise(recording.reference))
        hyps.append(normalise(text) or "-")
    result = {"min_window_s": min_window_s, "pad_s": pad_s, "wer": float(jiwer.wer(refs, hyps)),
              "median_ms": statistics.median(times), "fallbacks": model.fallbacks, "recordings": len(recordings)}
    samples, _rate = soundfile.read(str(DATA / CUT_CLIP), dtype="float32")
    model.fallbacks = 0
    cuts = [(start, end) for end in range(1200, 2800, 64) for start in (0, 300)]
    for start, end in cuts:
        model.transcribe(samples[start * 16:end * 16])
    result.update({"cuts": len(cuts), "cut_fallbacks": model.fallbacks})
    return result


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.asr_window", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", nargs="+", default=["10:3", "6:2"], help="MIN_WINDOW_S:PAD_S pairs")
    args = parser.parse_args(argv)
    model = whisper.WhisperTranscriber(whisper_model(None))
    defaults = whisper._MIN_WINDOW_S, whisper._PAD_S
    rows = []
    try:
        for spec in args.windows:
            min_window, pad = (float(x) for x in spec.split(":"))
            rows.append(measure(model, min_window, pad))
            row = rows[-1]
            print(f"window >= {min_window:g} s, pad {pad:g} s: WER {row['wer']:.1%}, {row['median_ms']:.0f} ms median, "
                  f"{row['fallbacks']} fallbacks on {row['recordings']} recordings, "
                  f"{row['cut_fallbacks']} on {row['cuts']} cuts of {CUT_CLIP}", flush=True)
    finally:
        whisper._MIN_WINDOW_S, whisper._PAD_S = defaults
    return rows


if __name__ == "__main__":
    main()
