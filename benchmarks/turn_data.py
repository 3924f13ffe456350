"""The turn-taking benchmark's data: utterances whose internal pauses and true end are labelled, and
sounds that reach the microphone while the assistant speaks.

Synthetic utterances (scripts.tsv, rendered as listed in synthetic.tsv) are spoken by Piper,
espeak-ng and flite and cut at their pause points, where silence (or low room noise) of a known
length goes in: labelled by construction. "joined" renditions speak the whole text and stretch the
synthesiser's own phrase breaks (the voice says it will go on); "spliced" ones speak each phrase on
its own (every phrase ends as if finished: the hardest case). Recordings (recordings.tsv) come from
tests/data and, when present, from the git-ignored data/turn_taking/fetched/ (LICENSES.md says
where from); their labels come from `label`. Audio is made once into data/turn_taking/ (git-ignored).

    python -m benchmarks.turn_data manifest      # rewrite synthetic.tsv from scripts.tsv (seeded)
    python -m benchmarks.turn_data build         # synthesise everything into the cache, print a summary
    python -m benchmarks.turn_data collect DIR   # copy the fetched recordings out of a git mirror
    python -m benchmarks.turn_data label NAME... # label recordings (VAD pauses, Whisper words)
"""

from __future__ import annotations

import argparse
import csv
import functools
import hashlib
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile

from voice.audio import resample

RATE = 16_000
ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = Path(__file__).resolve().parent / "data" / "turn_taking"
CACHE = ROOT / "data" / "turn_taking"
FETCHED = CACHE / "fetched"
TEST_DATA = ROOT / "tests" / "data"
SEED = 38
SYNTH_VERSION = 1
"""Changes whenever the synthesis does: cached audio of another version is made again."""
PAUSE_MS = (250, 1500)
FINISHED_KINDS = ("command", "wh_question", "yn_question", "statement")
VOICES = ("piper:joe", "piper:joe@1.2", "espeak-ng:en-us", "espeak-ng:en-gb+f3", "espeak-ng:en-us+m7",
          "flite:kal", "flite:slt", "flite:awb", "flite:rms")
"""Voice specs: engine:name, with @length_scale for Piper (1.2: slower speech)."""
SPEECH_RMS_DBFS = -22.0
_FRAME = RATE // 200  # 5 ms frames for finding voiced edges
_EDGE_DB = 40.0  # a frame this far below the peak is silence (synthetic speech has clean silence)


@dataclass(frozen=True)
class Pause:
    start_ms: float
    duration_ms: float
    words_before: str = ""

    @property
    def end_ms(self) -> float:
        return self.start_ms + self.duration_ms


@dataclass(frozen=True)
class Utterance:
    """One thing a user says, with its pauses: a turn that must not end before `speech_end_ms`."""

    name: str
    kind: str
    source: str
    """'synthetic' or 'recording'."""
    voice: str
    text: str
    audio: np.ndarray = field(repr=False)
    """16 kHz mono float32, from the first voiced sample (recordings: from the file's start) to the
    end of speech plus whatever the file has after it."""
    speech_end_ms: float
    pauses: tuple[Pause, ...]
    licence: str
    prosody: str = ""
    noise_dbfs: float | None = None

    @property
    def finished(self) -> bool:
        """A finished utterance without internal pauses (its end is what the delay is measured on)."""
        return self.kind in FINISHED_KINDS

    @property
    def phrase_ends_ms(self) -> tuple[float, ...]:
        return tuple(p.start_ms for p in self.pauses) + (self.speech_end_ms,)

    def background(self, samples: int, offset: int = 0) -> np.ndarray:
        """What the microphone hears when nobody speaks: the item's room noise, else silence."""
        return room_noise(samples, self.noise_dbfs, seed=_seed(self.name) + offset)


@dataclass(frozen=True)
class Sound:
    """Something heard while the assistant speaks: `interruption`s must cut the reply, `nonspeech`
    sounds and `backchannel`s must not."""

    name: str
    kind: str
    source: str
    text: str
    audio: np.ndarray = field(repr=False)
    onset_ms: float
    """The first voiced sample (where a spoken interruption begins)."""
    licence: str


# ---------------------------------------------------------------------------------------------- audio


def _seed(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def room_noise(samples: int, dbfs: float | None, seed: int) -> np.ndarray:
    """Pink noise at `dbfs` RMS (None: digital silence), the same for the same seed."""
    if dbfs is None or samples <= 0:
        return np.zeros(max(0, samples), np.float32)
    spectrum = np.fft.rfft(np.random.default_rng(seed).standard_normal(samples))
    spectrum /= np.sqrt(np.maximum(np.arange(spectrum.size), 1.0))
    noise = np.fft.irfft(spectrum, samples)
    noise *= 10 ** (dbfs / 20) / max(float(np.sqrt(np.mean(noise ** 2))), 1e-12)
    return noise.astype(np.float32)


def frame_levels_db(audio: np.ndarray, frame: int = _FRAME) -> np.ndarray:
    frames = audio[: audio.size // frame * frame].reshape(-1, frame).astype(np.float64)
    return 20 * np.log10(np.sqrt(np.mean(frames ** 2, axis=1)) + 1e-10)


def voiced_frames(audio: np.ndarray) -> np.ndarray:
    """Which 5 ms frames of clean synthetic speech are not silence."""
    level = frame_levels_db(audio)
    return level > max(level.max() - _EDGE_DB, -70.0)


def trim(audio: np.ndarray) -> np.ndarray:
    """Clean synthetic speech without its leading and trailing silence."""
    voiced = np.nonzero(voiced_frames(audio))[0]
    if not voiced.size:
        raise ValueError("the synthesiser produced no audible speech")
    return audio[voiced[0] * _FRAME:(voiced[-1] + 1) * _FRAME]


def silent_gaps(audio: np.ndarray, min_ms: float = 40.0) -> list[tuple[int, int]]:
    """(start, end) samples of the silences of at least `min_ms` inside trimmed speech."""
    voiced = voiced_frames(audio)
    gaps, start = [], None
    for index, is_voiced in enumerate(voiced):
        if not is_voiced and start is None:
            start = index
        elif is_voiced and start is not None:
            if (index - start) * _FRAME * 1000 / RATE >= min_ms and start > 0:
                gaps.append((start * _FRAME, index * _FRAME))
            start = None
    return gaps


@functools.cache
def _piper(length_scale: float):  # noqa: ANN202 - piper.PiperVoice, imported lazily
    from piper import PiperVoice

    from voice.models import piper_voice

    model, config = piper_voice("bundled")
    return PiperVoice.load(model, config_path=config), length_scale


def synthesize(text: str, voice: str, seed: int) -> np.ndarray:
    """`text` spoken by `voice` (VOICES' form), 16 kHz float32, deterministic for a seed."""
    engine, _, name = voice.partition(":")
    if engine == "piper":
        import onnxruntime
        from piper.config import SynthesisConfig

        _, _, scale = name.partition("@")
        piper, length_scale = _piper(float(scale or 1.0))
        onnxruntime.set_seed(seed)  # the voice's noise comes from the graph's random ops
        chunks = list(piper.synthesize(text, syn_config=SynthesisConfig(length_scale=length_scale)))
        audio = np.concatenate([c.audio_float_array for c in chunks])
        return resample(audio, piper.config.sample_rate, RATE)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.wav"
        if engine == "espeak-ng":
            command = ["espeak-ng", "-v", name, "-s", "165", "-w", str(out), text]
        elif engine == "flite":
            command = ["flite", "-voice", name, "-t", text, "-o", str(out)]
        else:
            raise ValueError(f"unknown voice {voice!r}: expected piper:, espeak-ng: or flite:")
        subprocess.run(command, check=True, capture_output=True)
        audio, rate = soundfile.read(str(out), dtype="float32")
    return resample(audio, rate, RATE)


def _level(audio: np.ndarray, dbfs: float = SPEECH_RMS_DBFS) -> np.ndarray:
    voiced = np.repeat(voiced_frames(audio), _FRAME)[: audio.size]
    rms = float(np.sqrt(np.mean(audio[: voiced.size][voiced] ** 2))) if voiced.any() else 1.0
    return np.clip(audio * (10 ** (dbfs / 20) / max(rms, 1e-6)), -0.98, 0.98).astype(np.float32)


# ------------------------------------------------------------------------------------- synthetic


@dataclass(frozen=True)
class Rendition:
    """One row of synthetic.tsv: a script spoken by a voice, with the pause lengths it gets."""

    name: str
    script: str
    kind: str
    voice: str
    prosody: str
    pauses_ms: tuple[int, ...]
    noise_dbfs: float | None
    text: str

    @property
    def pieces(self) -> list[str]:
        return [p.strip() for p in self.text.split("|")]


def read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def write_tsv(path: Path, rows: list[dict[str, object]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def make_manifest(seed: int = SEED) -> list[Rendition]:
    """Renditions of every script: paused ones three times (joined, spliced, joined), finished ones
    twice, each by another voice; pause lengths log-uniform over PAUSE_MS; room noise on 40%."""
    rng = np.random.default_rng(seed)
    renditions = []
    for row in read_tsv(MANIFESTS / "scripts.tsv"):
        paused = "|" in row["text"]
        prosodies = ("joined", "spliced", "joined") if paused else ("joined", "joined")
        voices = rng.choice(len(VOICES), size=len(prosodies), replace=False)
        for k, (prosody, voice) in enumerate(zip(prosodies, voices, strict=True)):
            pauses = tuple(int(round(np.exp(rng.uniform(*np.log(PAUSE_MS))), -1))
                           for _ in range(row["text"].count("|")))
            noise = float(round(rng.uniform(-62, -48))) if rng.random() < 0.4 else None
            renditions.append(Rendition(f"{row['script']}-{k}", row["script"], row["kind"], VOICES[voice], prosody,
                                        pauses, noise, row["text"]))
    return renditions


def read_manifest() -> list[Rendition]:
    return [Rendition(row["name"], row["script"], row["kind"], row["voice"], row["prosody"],
                      tuple(int(v) for v in row["pauses_ms"].split(",") if v),
                      float(row["noise_dbfs"]) if row["noise_dbfs"] else None, row["text"])
            for row in read_tsv(MANIFESTS / "synthetic.tsv")]


def _joined_pieces(text_pieces: list[str], voice: str, seed: int) -> list[np.ndarray] | None:
    """The whole text spoken at once, cut at the synthesiser's own breaks where the pauses go;
    None when those breaks cannot be found (then the pieces are spoken one by one)."""
    spoken = " ".join(p if p[-1] in ",.?!" or k == len(text_pieces) - 1 else p + ","
                      for k, p in enumerate(text_pieces))
    whole = trim(synthesize(spoken, voice, seed))
    wanted = len(text_pieces) - 1
    gaps = sorted(sorted(silent_gaps(whole), key=lambda g: g[0] - g[1])[:wanted])
    if len(gaps) < wanted:
        return None
    # Each cut must sit near where the pieces, spoken alone, say it should (not at a stop consonant).
    alone = [trim(synthesize(p, voice, seed)).size for p in text_pieces]
    expected = np.cumsum(alone)[:-1] / sum(alone) * whole.size
    if any(abs((a + b) / 2 - e) > 0.2 * whole.size for (a, b), e in zip(gaps, expected, strict=True)):
        return None
    edges = [0, *[v for gap in gaps for v in gap], whole.size]
    return [whole[edges[2 * k]:edges[2 * k + 1]] for k in range(wanted + 1)]


def render(rendition: Rendition) -> Utterance:
    """The rendition's audio and labels, from the cache or synthesised into it."""
    key = json.dumps([SYNTH_VERSION, rendition.voice, rendition.text, rendition.prosody, rendition.pauses_ms,
                      rendition.noise_dbfs])
    stem = CACHE / "synthetic" / f"{rendition.name}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"
    wav, labels_path = stem.with_suffix(".wav"), stem.with_suffix(".json")
    if wav.is_file() and labels_path.is_file():
        audio, _ = soundfile.read(str(wav), dtype="float32")
        labels = json.loads(labels_path.read_text(encoding="utf-8"))
    else:
        audio, labels = _synthesise_rendition(rendition)
        stem.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(str(wav), audio, RATE, subtype="FLOAT")
        labels_path.write_text(json.dumps(labels, indent=1) + "\n", encoding="utf-8")
    pauses = tuple(Pause(p["start_ms"], p["duration_ms"], p["words_before"]) for p in labels["pauses"])
    return Utterance(rendition.name, rendition.kind, "synthetic", rendition.voice, rendition.text.replace(" | ", " "),
                     audio, labels["speech_end_ms"], pauses, "synthetic (this project)", labels["prosody"],
                     rendition.noise_dbfs)


def _synthesise_rendition(rendition: Rendition) -> tuple[np.ndarray, dict]:
    seed = _seed(rendition.name)
    texts = rendition.pieces
    prosody = rendition.prosody
    pieces = _joined_pieces(texts, rendition.voice, seed) if prosody == "joined" and len(texts) > 1 else None
    if pieces is None:
        if prosody == "joined" and len(texts) > 1:
            prosody = "spliced-fallback"
        pieces = [trim(synthesize(t, rendition.voice, seed)) for t in texts]
    parts, pauses, position = [], [], 0
    for k, piece in enumerate(pieces):
        parts.append(piece)
        position += piece.size
        if k < len(rendition.pauses_ms):
            gap = rendition.pauses_ms[k] * RATE // 1000
            pauses.append({"start_ms": position * 1000 / RATE, "duration_ms": gap * 1000 / RATE,
                           "words_before": " ".join(texts[:k + 1])})
            parts.append(np.zeros(gap, np.float32))
            position += gap
    audio = _level(np.concatenate(parts))
    audio = audio + room_noise(audio.size, rendition.noise_dbfs, seed)
    return audio.astype(np.float32), {"speech_end_ms": audio.size * 1000 / RATE, "pauses": pauses,
                                      "prosody": prosody}


def synthetic_utterances(names: set[str] | None = None) -> Iterator[Utterance]:
    for rendition in read_manifest():
        if names is None or rendition.name in names or rendition.script in names:
            yield render(rendition)


# ------------------------------------------------------------------------------------- recordings


def recording_path(file: str) -> Path | None:
    """Where a recording is on this machine: tests/data, else the fetched folder; None if nowhere."""
    for folder in (TEST_DATA, FETCHED):
        if (folder / file).is_file():
            return folder / file
    return None


def load_audio(path: Path) -> np.ndarray:
    audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    return resample(audio.mean(axis=1), rate, RATE)


def recorded_utterances(names: set[str] | None = None) -> Iterator[Utterance]:
    """The labelled recordings present on this machine (those fetched may be absent)."""
    for row in read_tsv(MANIFESTS / "recordings.tsv"):
        if names is not None and row["name"] not in names:
            continue
        path = recording_path(row["file"])
        if path is None:
            continue
        pauses = tuple(Pause(float(start), float(duration), words)
                       for start, duration, words in (p.split("+", 2) for p in row["pauses"].split(";") if p))
        yield Utterance(row["name"], row["kind"], "recording", row["speaker"], row["reference"], load_audio(path),
                        float(row["speech_end_ms"]), pauses, row["licence"])


def utterances(names: set[str] | None = None, sources: tuple[str, ...] = ("synthetic", "recording"),
               ) -> list[Utterance]:
    items: list[Utterance] = []
    if "synthetic" in sources:
        items += synthetic_utterances(names)
    if "recording" in sources:
        items += recorded_utterances(names)
    return items


def label_recording(path: Path, min_pause_ms: float = 150.0) -> dict[str, str]:
    """Pauses of a recording: the silences between Silero VAD's speech segments (no padding) of at
    least `min_pause_ms`, each with the last words Whisper heard before it (word timestamps), and the
    end of speech (benchmarks.turns.last_voiced_ms: the earlier of an energy and a VAD estimate)."""
    from faster_whisper import WhisperModel
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    from benchmarks.turns import last_voiced_ms
    from voice.models import whisper_model

    audio = load_audio(path)
    segments = get_speech_timestamps(audio, VadOptions(min_silence_duration_ms=int(min_pause_ms), speech_pad_ms=0))
    speech_end = last_voiced_ms(audio, RATE)
    model = WhisperModel(whisper_model(None), device="cpu", compute_type="int8", cpu_threads=2)
    words = [w for s in model.transcribe(audio, language="en", word_timestamps=True, vad_filter=False)[0]
             for w in s.words]
    pauses = []
    for before, after in zip(segments, segments[1:], strict=False):
        start, end = before["end"] * 1000 / RATE, after["start"] * 1000 / RATE
        if end - start >= min_pause_ms and end <= speech_end:
            said = " ".join([w.word.strip() for w in words if (w.start + w.end) / 2 * 1000 < start][-10:])
            pauses.append(f"{start:.0f}+{end - start:.0f}+{said}")
    return {"speech_end_ms": f"{speech_end:.0f}", "pauses": ";".join(pauses),
            "whisper": " ".join(w.word.strip() for w in words)}


# ----------------------------------------------------------------------------------------- sounds


def _knock(rng: np.random.Generator) -> np.ndarray:
    """Three knocks on a door: short decaying resonances (synthetic)."""
    out = np.zeros(int(1.2 * RATE), np.float32)
    t = np.arange(int(0.12 * RATE)) / RATE
    for k in range(3):
        freq = rng.uniform(150, 260)
        hit = np.sin(2 * np.pi * freq * t) * np.exp(-t * 45) + 0.3 * rng.standard_normal(t.size) * np.exp(-t * 200)
        start = int((0.05 + 0.28 * k + rng.uniform(0, 0.04)) * RATE)
        out[start:start + hit.size] += hit
    return out


def _claps(rng: np.random.Generator) -> np.ndarray:
    """Hand claps: bursts of decaying noise (synthetic)."""
    out = np.zeros(int(1.5 * RATE), np.float32)
    t = np.arange(int(0.08 * RATE)) / RATE
    for k in range(5):
        start = int((0.05 + 0.26 * k + rng.uniform(0, 0.03)) * RATE)
        out[start:start + t.size] += rng.standard_normal(t.size) * np.exp(-t * 60)
    return out


def _typing(rng: np.random.Generator) -> np.ndarray:
    """Keyboard typing: clicks at irregular intervals (synthetic)."""
    out = np.zeros(int(2.0 * RATE), np.float32)
    t = np.arange(int(0.015 * RATE)) / RATE
    position = 0.05
    while position < 1.9:
        start = int(position * RATE)
        out[start:start + t.size] += rng.standard_normal(t.size) * np.exp(-t * 400) * rng.uniform(0.5, 1.0)
        position += rng.uniform(0.08, 0.25)
    return out


def _music(rng: np.random.Generator) -> np.ndarray:
    """Two seconds of chords with harmonics and a beat (synthetic)."""
    t = np.arange(int(2.0 * RATE)) / RATE
    out = np.zeros(t.size)
    for k, root in enumerate(rng.choice([220.0, 246.9, 261.6, 293.7], size=4)):
        span = slice(k * t.size // 4, (k + 1) * t.size // 4)
        for ratio in (1.0, 1.26, 1.5):
            for harmonic in (1, 2, 3):
                out[span] += np.sin(2 * np.pi * root * ratio * harmonic * t[span]) / harmonic
    beat = (np.sin(2 * np.pi * 2 * t) > 0.95) * rng.standard_normal(t.size) * 2
    return (out + beat).astype(np.float32)


_NONSPEECH = {"knock": _knock, "claps": _claps, "typing": _typing, "music": _music}


def sounds(kinds: tuple[str, ...] = ("nonspeech", "backchannel", "interruption"), voices_per_text: int = 2,
           ) -> list[Sound]:
    """Backchannels and interruptions spoken by `voices_per_text` voices each (seeded), synthetic
    non-speech sounds, and the fetched real ones listed in sounds_recorded.tsv when present."""
    rng = np.random.default_rng(SEED)
    out: list[Sound] = []
    for row in read_tsv(MANIFESTS / "sounds.tsv"):
        voices = rng.choice(len(VOICES), size=voices_per_text, replace=False)
        if row["kind"] not in kinds:
            continue
        for voice in (VOICES[v] for v in voices):
            name = f"{row['sound']}-{voice.replace(':', '_')}"
            audio = _level(trim(synthesize(row["text"], voice, _seed(name))))
            audio = np.concatenate([np.zeros(RATE // 10, np.float32), audio])
            out.append(Sound(name, row["kind"], voice, row["text"], audio, 100.0, "synthetic (this project)"))
    if "nonspeech" in kinds:
        for name, make in _NONSPEECH.items():
            audio = make(np.random.default_rng(_seed(name)))
            audio = (0.5 * audio / max(float(np.abs(audio).max()), 1e-6)).astype(np.float32)
            out.append(Sound(f"{name}-synthetic", "nonspeech", "synthetic", name, audio, _onset_ms(audio),
                             "synthetic (this project)"))
        for row in read_tsv(MANIFESTS / "sounds_recorded.tsv"):
            path = recording_path(row["file"])
            if path is None:
                continue
            audio = load_audio(path)
            start = int(float(row["start_s"]) * RATE)
            audio = audio[start:start + int(float(row["duration_s"]) * RATE)]
            out.append(Sound(row["name"], "nonspeech", row["source_repo"], row["description"], audio,
                             _onset_ms(audio), row["licence"]))
    return out


def _onset_ms(audio: np.ndarray) -> float:
    level = frame_levels_db(audio)
    return float(np.argmax(level > level.max() - 30.0) * _FRAME * 1000 / RATE)


# -------------------------------------------------------------------------------------------- CLI


def collect(mirror: Path) -> None:
    """Copy the fetched recordings listed in the manifests out of a git mirror of their repository
    (as the `fetch` tool leaves one) into FETCHED."""
    FETCHED.mkdir(parents=True, exist_ok=True)
    rows = read_tsv(MANIFESTS / "recordings.tsv") + read_tsv(MANIFESTS / "sounds_recorded.tsv")
    for row in rows:
        if (TEST_DATA / row["file"]).is_file() or not row.get("source_repo"):
            continue
        repo = row["source_repo"].replace("/", "+")
        if repo not in str(mirror):
            continue
        blob = subprocess.run(["git", "-C", str(mirror), "show", f"{row['commit']}:{row['source_path']}"],
                              check=True, capture_output=True).stdout
        (FETCHED / row["file"]).write_bytes(blob)
        print(f"{row['file']}: {len(blob)} bytes")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.turn_data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    manifest = sub.add_parser("manifest", help="rewrite synthetic.tsv from scripts.tsv")
    manifest.add_argument("--seed", type=int, default=SEED)
    sub.add_parser("build", help="synthesise every item and sound into the cache")
    collect_parser = sub.add_parser("collect", help="copy fetched recordings out of a git mirror")
    collect_parser.add_argument("mirror", type=Path)
    label = sub.add_parser("label", help="label recordings.tsv's rows (all, or those named) in place")
    label.add_argument("names", nargs="*")
    args = parser.parse_args(argv)
    if args.command == "manifest":
        rows = [{"name": r.name, "script": r.script, "kind": r.kind, "voice": r.voice, "prosody": r.prosody,
                 "pauses_ms": ",".join(map(str, r.pauses_ms)),
                 "noise_dbfs": "" if r.noise_dbfs is None else f"{r.noise_dbfs:.0f}", "text": r.text}
                for r in make_manifest(args.seed)]
        write_tsv(MANIFESTS / "synthetic.tsv", rows)
        print(f"{len(rows)} renditions")
    elif args.command == "build":
        items = utterances()
        pauses = [p for u in items for p in u.pauses]
        fallback = sum(1 for u in items if u.prosody == "spliced-fallback")
        print(f"{len(items)} utterances ({sum(u.source == 'recording' for u in items)} recorded), "
              f"{len(pauses)} internal pauses ({sum(p.duration_ms >= 250 for p in pauses)} of 250 ms or more), "
              f"{sum(u.finished for u in items)} finished; {fallback} joined renditions spliced instead")
        print(f"{len(sounds())} sounds")
    elif args.command == "collect":
        collect(args.mirror)
    else:
        rows = read_tsv(MANIFESTS / "recordings.tsv")
        for row in rows:
            if args.names and row["name"] not in args.names:
                continue
            path = recording_path(row["file"])
            if path is None:
                sys.exit(f"{row['file']}: not in tests/data or {FETCHED} (collect it first)")
            labels = label_recording(path)
            row.update(speech_end_ms=labels["speech_end_ms"], pauses=labels["pauses"])
            print(row["name"], labels)
        write_tsv(MANIFESTS / "recordings.tsv", rows)


if __name__ == "__main__":
    main()
