"""Turn-taking benchmark: a real `voice serve` driven through the websocket at real-time pace, as a
microphone would (audio never stops: silence or the item's room noise after each utterance).

Utterances (benchmarks/turn_data.py) measure:
- false cut-offs: `input_audio_buffer.speech_stopped` arriving before the utterance's last voiced
  sample was sent, per 100 internal pauses of 250 ms or more, by pause length and kind; each is
  put on the labelled pause nearest its `audio_end_ms` (or "unlabelled" past 300 ms from any);
- end-of-turn delay: from the moment the last voiced sample was sent to the arrival of the final
  `speech_stopped`, and voice-to-voice: to the first audio of the reply that turn gets.
Interruption trials ask for a long reply by text and, one second into its audio, send a sound into
the microphone: non-speech sounds and backchannels must neither start a turn (`speech_started`) nor
cancel the reply; spoken interruptions must get `speech_started` within 200 ms of their onset
(measured from when the onset sample was sent) and cancel the reply.

    python -m benchmarks.turn_taking                              # all data, a server of its own
    python -m benchmarks.turn_taking --per-script 1 --max-seconds 15   # a shorter run
    python -m benchmarks.turn_taking --url ws://127.0.0.1:8000/v1/realtime --turn-detection '{"type":"server_vad"}'
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.turn_data import RATE, Sound, Utterance, sounds, utterances
from clients.python.client import RealtimeClient
from voice.audio import WIRE_RATE, float_to_pcm16, resample

FRAME_MS = 20
FRAME_BYTES = WIRE_RATE * 2 * FRAME_MS // 1000
LEAD_IN_MS = 600  # background before the first word (the VAD learns the noise floor)
END_WAIT_S = 5.0  # after the last word: a turn not ended by then did not end
REPLY_WAIT_S = 12.0  # after the end of turn: the first reply audio
MIN_PAUSE_MS = 250
NEAREST_PAUSE_MS = 300
PAUSE_BINS_MS = ((250, 400), (400, 700), (700, 1000), (1000, 1500), (1500, math.inf))
LONG_REPLY = "Tell me a long story about a dragon who learns to bake bread. Make it at least ten sentences long."
ONSET_AFTER_S = 1.0  # into the reply's audio, the sound starts
LISTEN_AFTER_S = 2.0  # after the sound ends, how long the trial still watches
SPEECH_STARTED_WITHIN_MS = 200
OUT = Path(__file__).resolve().parent / "results"


def pcm_frames(samples16k: np.ndarray) -> list[bytes]:
    """16 kHz float audio as the wire's 24 kHz PCM16 in FRAME_MS frames."""
    pcm = float_to_pcm16(resample(samples16k, RATE, WIRE_RATE))
    return [pcm[i:i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]


@dataclass
class Microphone:
    """Sends frames at real-time pace and keeps when each left, so that the time any stream
    position was sent is known (the moment its frame left, less the rest of the frame after it)."""

    client: RealtimeClient
    sent_at: list[float] = field(default_factory=list)
    _start: float | None = None

    async def send(self, frame: bytes) -> None:
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + len(self.sent_at) * FRAME_MS / 1000
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await self.client.append_audio(frame)
        self.sent_at.append(time.monotonic())

    @property
    def position_ms(self) -> float:
        return len(self.sent_at) * FRAME_MS

    def time_of(self, position_ms: float) -> float | None:
        """When the sample at stream position `position_ms` was sent (None: not yet)."""
        index = int(position_ms // FRAME_MS)
        if index >= len(self.sent_at):
            return None
        return self.sent_at[index] - (FRAME_MS * (index + 1) - position_ms) / 1000


class EventLog:
    """Every server event with its arrival time, gathered by a background task."""

    def __init__(self, client: RealtimeClient) -> None:
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.changed = asyncio.Event()
        self._task = asyncio.create_task(self._receive(client))

    async def _receive(self, client: RealtimeClient) -> None:
        async for received in client.events():
            self.events.append((received.at, received.event))
            self.changed.set()

    def of(self, kind: str, since: float = 0.0) -> list[tuple[float, dict[str, Any]]]:
        return [(at, e) for at, e in self.events if e["type"] == kind and at >= since]

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def _open(url: str, session: dict[str, Any] | None) -> tuple[RealtimeClient, EventLog]:
    client = await RealtimeClient.connect(url)
    log = EventLog(client)
    if session:
        await client.send({"type": "session.update", "session": session})
    return client, log


async def _close(client: RealtimeClient, log: EventLog) -> None:
    """Cancel whatever reply still runs, then hang up."""
    active = {e["response"]["id"] for _, e in log.of("response.created")} - \
        {e["response"]["id"] for _, e in log.of("response.done")}
    if active:
        try:
            await client.send({"type": "response.cancel"})
            await asyncio.sleep(0.2)
        except Exception:  # noqa: BLE001 - the session may be closing already
            pass
    await log.stop()
    await client.close()


# ------------------------------------------------------------------------------------- utterances


async def run_utterance(url: str, item: Utterance, session: dict[str, Any] | None) -> dict[str, Any]:
    """Stream one utterance on a session of its own; score it."""
    lead = LEAD_IN_MS * RATE // 1000
    tail = int((END_WAIT_S + REPLY_WAIT_S + 1) * RATE)
    frames = pcm_frames(np.concatenate([item.background(lead, offset=1), item.audio,
                                        item.background(tail, offset=2)]))
    client, log = await _open(url, session)
    mic = Microphone(client)
    end_position = LEAD_IN_MS + item.speech_end_ms
    try:
        for frame in frames:
            await mic.send(frame)
            speech_end = mic.time_of(end_position)
            if speech_end is None:
                continue
            now = time.monotonic()
            stopped = log.of("input_audio_buffer.speech_stopped", since=speech_end)
            if not stopped:
                if now - speech_end > END_WAIT_S:
                    break
                continue
            created = {e["response"]["id"] for _, e in log.of("response.created", since=stopped[0][0])}
            audio = [at for at, e in log.of("response.output_audio.delta", since=stopped[0][0])
                     if e["response_id"] in created]
            done = [e for _, e in log.of("response.done", since=stopped[0][0]) if e["response"]["id"] in created]
            if audio or done or now - stopped[0][0] > REPLY_WAIT_S:
                break
    finally:
        await _close(client, log)
    return score_utterance(item, log.events, mic)


def _nearest_pause(item: Utterance, position_ms: float) -> int | None:
    distances = [abs(p.start_ms - position_ms) for p in item.pauses]
    if not distances or min(distances) > NEAREST_PAUSE_MS:
        return None
    return int(np.argmin(distances))


def score_utterance(item: Utterance, events: list[tuple[float, dict[str, Any]]], mic: Microphone) -> dict[str, Any]:
    """Cut-offs, end-of-turn delay and voice-to-voice of one streamed utterance: `events` are the
    server's (arrival time, event); `mic` says when each stream position was sent."""
    speech_end = mic.time_of(LEAD_IN_MS + item.speech_end_ms)
    result: dict[str, Any] = {
        "item": item.name, "kind": item.kind, "source": item.source, "voice": item.voice, "prosody": item.prosody,
        "noise_dbfs": item.noise_dbfs, "speech_end_ms": item.speech_end_ms,
        "pauses": [{"start_ms": p.start_ms, "duration_ms": p.duration_ms, "words_before": p.words_before}
                   for p in item.pauses],
        "cuts": [], "end_of_turn_ms": None, "voice_to_voice_ms": None, "failure": None,
    }
    final_stop = None
    for at, event in events:
        if event["type"] != "input_audio_buffer.speech_stopped":
            continue
        if speech_end is None or at < speech_end:
            position = event["audio_end_ms"] - LEAD_IN_MS
            pause = _nearest_pause(item, position)
            result["cuts"].append({"audio_end_ms": position, "pause": pause,
                                   "pause_ms": None if pause is None else item.pauses[pause].duration_ms})
        elif final_stop is None:
            final_stop = at
    result["speech_started"] = sum(1 for _, e in events if e["type"] == "input_audio_buffer.speech_started")
    result["responses"] = [e["response"]["status"] for _, e in events if e["type"] == "response.done"]
    transcripts = [e["transcript"] for _, e in events
                   if e["type"] == "conversation.item.input_audio_transcription.completed"]
    result["transcripts"] = transcripts
    if speech_end is None:
        result["failure"] = "the utterance was not sent to its end"
    elif final_stop is None:
        result["failure"] = "no end of turn"
    else:
        result["end_of_turn_ms"] = (final_stop - speech_end) * 1000
        created = {e["response"]["id"] for at, e in events if e["type"] == "response.created" and at >= final_stop}
        first_audio = next((at for at, e in events if e["type"] == "response.output_audio.delta"
                            and e["response_id"] in created), None)
        if first_audio is None:
            result["failure"] = "no reply audio"
        else:
            result["voice_to_voice_ms"] = (first_audio - speech_end) * 1000
    return result


def _distribution(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "median": None, "p95": None, "max": None}
    return {"n": len(values), "median": statistics.median(values), "p95": float(np.percentile(values, 95)),
            "max": max(values)}


def _bin(duration_ms: float) -> str:
    for low, high in PAUSE_BINS_MS:
        if low <= duration_ms < high:
            return f"{low}-{high:.0f}" if high != math.inf else f"{low}+"
    return "under-250"


def _bin_order(label: str) -> float:
    if label.startswith("under"):
        return 0.0
    head = label.split("-")[0].rstrip("+")
    return float(head) if head.isdigit() else math.inf


def summarise_utterances(results: list[dict[str, Any]]) -> dict[str, Any]:
    """False cut-offs per 100 internal pauses of MIN_PAUSE_MS or more (a cut on a shorter or an
    unlabelled pause counts too: it is a cut inside the utterance), by pause length and by kind;
    end-of-turn delay and voice-to-voice on finished utterances and on all."""
    from benchmarks.turn_data import FINISHED_KINDS

    by_bin: dict[str, dict[str, int]] = {}
    by_kind: dict[str, dict[str, int]] = {}
    pauses = cuts = 0
    for result in results:
        kind = by_kind.setdefault(result["kind"], {"pauses": 0, "cuts": 0})
        for pause in result["pauses"]:
            if pause["duration_ms"] >= MIN_PAUSE_MS:
                pauses += 1
                kind["pauses"] += 1
                by_bin.setdefault(_bin(pause["duration_ms"]), {"pauses": 0, "cuts": 0})["pauses"] += 1
        for cut in result["cuts"]:
            cuts += 1
            kind["cuts"] += 1
            label = "unlabelled" if cut["pause_ms"] is None else _bin(cut["pause_ms"])
            by_bin.setdefault(label, {"pauses": 0, "cuts": 0})["cuts"] += 1
    finished = [r for r in results if r["kind"] in FINISHED_KINDS]
    return {
        "utterances": len(results),
        "internal_pauses": pauses,
        "false_cut_offs": cuts,
        "false_cut_offs_per_100_pauses": 100 * cuts / pauses if pauses else None,
        "utterances_cut": sum(1 for r in results if r["cuts"]),
        "by_pause_ms": dict(sorted(by_bin.items(), key=lambda kv: _bin_order(kv[0]))),
        "by_kind": dict(sorted(by_kind.items())),
        "end_of_turn_ms": {"finished": _distribution([r["end_of_turn_ms"] for r in finished
                                                      if r["end_of_turn_ms"] is not None]),
                           "all": _distribution([r["end_of_turn_ms"] for r in results
                                                 if r["end_of_turn_ms"] is not None])},
        "voice_to_voice_ms": {"finished": _distribution([r["voice_to_voice_ms"] for r in finished
                                                         if r["voice_to_voice_ms"] is not None]),
                              "all": _distribution([r["voice_to_voice_ms"] for r in results
                                                    if r["voice_to_voice_ms"] is not None])},
        "failures": {f: sum(1 for r in results if r["failure"] == f) for f in sorted({r["failure"] for r in results
                                                                                      if r["failure"]})},
    }


# ---------------------------------------------------------------------------------- interruptions


async def run_interruption(url: str, sound: Sound, session: dict[str, Any] | None) -> dict[str, Any]:
    """Ask for a long reply by text; ONSET_AFTER_S into its audio, play `sound` into the microphone."""
    client, log = await _open(url, session)
    mic = Microphone(client)
    silence = bytes(FRAME_BYTES)
    result: dict[str, Any] = {"sound": sound.name, "kind": sound.kind, "source": sound.source, "text": sound.text,
                              "failure": None}
    try:
        await client.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": LONG_REPLY}]}})
        await client.send({"type": "response.create"})
        asked = time.monotonic()
        while not log.of("response.output_audio.delta"):
            if time.monotonic() - asked > 2 * REPLY_WAIT_S:
                result["failure"] = "no reply audio"
                return result
            await mic.send(silence)
        first_audio = log.of("response.output_audio.delta")[0][0]
        while time.monotonic() < first_audio + ONSET_AFTER_S:
            await mic.send(silence)
        sound_start = mic.position_ms
        for frame in pcm_frames(sound.audio):
            await mic.send(frame)
        listen_until = time.monotonic() + LISTEN_AFTER_S
        while time.monotonic() < listen_until:
            await mic.send(silence)
        result.update(score_interruption(sound, log.events, mic, sound_start))
    finally:
        await _close(client, log)
    return result


def score_interruption(sound: Sound, events: list[tuple[float, dict[str, Any]]], mic: Microphone,
                       sound_start_ms: float) -> dict[str, Any]:
    """Whether the reply was playing and still being made at the sound's onset, the delay of
    `speech_started` after it, and how the reply ended."""
    onset = mic.time_of(sound_start_ms + sound.onset_ms)
    reply = next(e["response"]["id"] for _, e in events if e["type"] == "response.created")
    deltas = [(at, len(base64.b64decode(e["delta"])) / (2 * WIRE_RATE)) for at, e in events
              if e["type"] == "response.output_audio.delta" and e["response_id"] == reply]
    received_by_onset = sum(d for at, d in deltas if at <= onset)
    done = [(at, e["response"]) for at, e in events if e["type"] == "response.done" and e["response"]["id"] == reply]
    sound_start = mic.time_of(sound_start_ms)
    started = [at for at, e in events if e["type"] == "input_audio_buffer.speech_started" and at >= sound_start]
    return {
        "onset_stream_ms": sound_start_ms + sound.onset_ms,
        "reply_playing_at_onset": received_by_onset > onset - deltas[0][0],
        "reply_generating_at_onset": not done or done[0][0] > onset,
        "speech_started_ms": (started[0] - onset) * 1000 if started else None,
        "reply_status": done[0][1]["status"] if done else "in_progress",
        "cancel_reason": ((done[0][1].get("status_details") or {}).get("reason") if done else None),
    }


def summarise_interruptions(trials: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for kind in ("nonspeech", "backchannel", "interruption"):
        group = [t for t in trials if t["kind"] == kind and t["failure"] is None]
        if not group and not any(t["kind"] == kind for t in trials):
            continue
        delays = [t["speech_started_ms"] for t in group if t["speech_started_ms"] is not None]
        entry = {
            "trials": len(group),
            "failed": sum(1 for t in trials if t["kind"] == kind and t["failure"] is not None),
            "speech_started": len(delays),
            "reply_cancelled": sum(1 for t in group if t["reply_status"] == "cancelled"),
            "generating_at_onset": sum(1 for t in group if t["reply_generating_at_onset"]),
            "speech_started_ms": _distribution(delays),
        }
        if kind == "interruption":
            entry["within_200_ms"] = sum(1 for d in delays if d <= SPEECH_STARTED_WITHIN_MS)
            entry["delays_ms"] = sorted(round(d) for d in delays)
        else:
            entry["reply_kept"] = sum(1 for t in group if t["speech_started_ms"] is None
                                      and t["reply_status"] != "cancelled")
        summary[kind] = entry
    return summary


# ------------------------------------------------------------------------------------------ report


def markdown(report: dict[str, Any]) -> str:
    u = report["utterances"]

    def ms(d: dict[str, Any], key: str) -> str:
        return "-" if d.get(key) is None else f"{d[key]:.0f}"

    per_100 = u["false_cut_offs_per_100_pauses"]
    rate = "-" if per_100 is None else f"{per_100:.1f}"
    lines = [f"# Turn-taking benchmark ({report['date']})", "", f"`{report['command']}`", "",
             f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores; "
             f"turn detection: `{json.dumps(report['turn_detection'])}`; "
             f"CPU steal {report['cpu_steal_percent']:.0f}%, load average {report['load_average']}.", "",
             "| measure | value |", "| --- | --- |",
             f"| utterances | {u['utterances']} ({u['utterances_cut']} cut at least once) |",
             f"| false cut-offs per 100 internal pauses >= 250 ms | {rate} "
             f"({u['false_cut_offs']} in {u['internal_pauses']}) |"]
    for group in ("finished", "all"):
        eot, v2v = u["end_of_turn_ms"][group], u["voice_to_voice_ms"][group]
        lines.append(f"| end of turn after the last word, {group} (median / p95, n) | "
                     f"{ms(eot, 'median')} / {ms(eot, 'p95')} ms ({eot['n']}) |")
        lines.append(f"| voice-to-voice, {group} (median / p95, n) | "
                     f"{ms(v2v, 'median')} / {ms(v2v, 'p95')} ms ({v2v['n']}) |")
    if u["failures"]:
        lines.append(f"| failures | {', '.join(f'{k}: {v}' for k, v in u['failures'].items())} |")
    lines += ["", "| pause length (ms) | pauses | cuts |", "| --- | --- | --- |"]
    lines += [f"| {name} | {v['pauses']} | {v['cuts']} |" for name, v in u["by_pause_ms"].items()]
    lines += ["", "| kind | pauses | cuts |", "| --- | --- | --- |"]
    lines += [f"| {name} | {v['pauses']} | {v['cuts']} |" for name, v in u["by_kind"].items()]
    if report.get("interruptions"):
        lines += ["", "| sounds during a reply | trials | speech_started | reply cancelled | "
                  "speech_started delay median / p95 / max (ms) |", "| --- | --- | --- | --- | --- |"]
        for kind, v in report["interruptions"].items():
            delay = v["speech_started_ms"]
            extra = f" ({v['within_200_ms']} within 200 ms)" if kind == "interruption" else ""
            lines.append(f"| {kind} | {v['trials']} | {v['speech_started']}{extra} | {v['reply_cancelled']} | "
                         f"{ms(delay, 'median')} / {ms(delay, 'p95')} / {ms(delay, 'max')} |")
    return "\n".join(lines) + "\n"


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text(encoding="utf-8").split()[:3])
    except OSError:
        return "?"


async def run(args: argparse.Namespace, url: str) -> dict[str, Any]:
    from benchmarks.latency import cpu_ticks
    from benchmarks.report import machine

    session: dict[str, Any] = {}
    if args.turn_detection:
        session = {"audio": {"input": {"turn_detection": json.loads(args.turn_detection)}}}
    items = select_items(args)
    trial_sounds = [] if args.no_interruptions else select_sounds(args)
    print(f"{len(items)} utterances, {len(trial_sounds)} interruption trials", flush=True)
    if items:  # warm-up: first-call costs are not turn-taking
        await run_utterance(url, items[0], session)
    steal_before, total_before = cpu_ticks()
    results = []
    for number, item in enumerate(items, 1):
        result = await run_utterance(url, item, session)
        results.append(result)
        print(f"[{number}/{len(items)}] {item.name} ({item.kind}, {len(item.pauses)} pauses): "
              f"{len(result['cuts'])} cuts, end {_fmt(result['end_of_turn_ms'])}, "
              f"v2v {_fmt(result['voice_to_voice_ms'])}{' ' + result['failure'] if result['failure'] else ''}",
              flush=True)
    trials = []
    for number, sound in enumerate(trial_sounds, 1):
        trial = await run_interruption(url, sound, session)
        trials.append(trial)
        print(f"[{number}/{len(trial_sounds)}] {sound.name} ({sound.kind}): speech_started "
              f"{_fmt(trial.get('speech_started_ms'))}, reply {trial.get('reply_status')}"
              f"{' ' + trial['failure'] if trial['failure'] else ''}", flush=True)
    steal_after, total_after = cpu_ticks()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join(["python -m benchmarks.turn_taking", *args.argv]),
        "label": args.label,
        "machine": machine(),
        "cpu_steal_percent": 100 * (steal_after - steal_before) / max(1, total_after - total_before),
        "load_average": load_average(),
        "turn_detection": json.loads(args.turn_detection) if args.turn_detection else "server default",
        "utterances": summarise_utterances(results),
        "interruptions": summarise_interruptions(trials),
        "per_utterance": results,
        "per_trial": trials,
    }


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def select_items(args: argparse.Namespace) -> list[Utterance]:
    items = utterances(set(args.items) if args.items else None, tuple(args.sources))
    chosen = []
    for item in items:
        rendition = item.name.rsplit("-", 1)[-1]
        if item.source == "synthetic" and rendition.isdigit() and int(rendition) >= args.per_script:
            continue
        if item.audio.size / RATE > args.max_seconds:
            continue
        chosen.append(item)
    return chosen


def select_sounds(args: argparse.Namespace) -> list[Sound]:
    return [s for s in sounds(voices_per_text=args.voices_per_sound) if s.kind in args.sound_kinds
            and (not args.sounds or s.name in args.sounds or s.name.split("-")[0] in args.sounds)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.turn_taking", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running server's /v1/realtime (default: start one)")
    parser.add_argument("--label", default="", help="what was measured, for the results page (a server's revision)")
    parser.add_argument("--server-args", default="", help="extra `voice serve` arguments for the server it starts")
    parser.add_argument("--turn-detection", help="a turn_detection object (JSON) to set; default: the server's")
    parser.add_argument("--items", nargs="*", help="utterance or script names (default: all)")
    parser.add_argument("--sources", nargs="+", default=["synthetic", "recording"], choices=["synthetic", "recording"])
    parser.add_argument("--per-script", type=int, default=3, help="synthetic renditions per script (1-3)")
    parser.add_argument("--max-seconds", type=float, default=math.inf, help="skip longer utterances")
    parser.add_argument("--no-interruptions", action="store_true")
    parser.add_argument("--sound-kinds", nargs="+", default=["nonspeech", "backchannel", "interruption"])
    parser.add_argument("--sounds", nargs="*", help="sound names, or their sounds.tsv names for every voice "
                        "(default: all of the kinds)")
    parser.add_argument("--voices-per-sound", type=int, default=2, help="voices speaking each backchannel/interruption")
    parser.add_argument("--out", type=Path, default=OUT)
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.url:
        report = asyncio.run(run(args, args.url))
    else:
        from benchmarks.servers import voice_server

        with voice_server(*args.server_args.split(), log=args.out / "server-turn-taking.log") as server:
            report = asyncio.run(run(args, server.url))
    (args.out / "turn_taking.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    (args.out / "turn_taking.md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
