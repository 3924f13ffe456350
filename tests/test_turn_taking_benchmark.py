"""The turn-taking benchmark's data is labelled consistently and the benchmark scores what it
streamed: a smoke run against a real server on a handful of items. No thresholds, no timings."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import turn_taking
from benchmarks.turn_data import RATE, read_manifest, recorded_utterances, render, voiced_frames

pytestmark = pytest.mark.slow

SMOKE_ITEMS = ["list_numbers-1", "comma_home-0", "command_music-0", "jfk"]


def _rendition(name: str):
    return next(r for r in read_manifest() if r.name == name)


def _check_labels(item) -> None:
    ends = [p.end_ms for p in item.pauses]
    starts = [p.start_ms for p in item.pauses]
    assert starts == sorted(starts) and all(e < s for e, s in zip(ends, starts[1:], strict=False))
    assert all(p.start_ms > 0 and p.duration_ms > 0 for p in item.pauses)
    assert not ends or ends[-1] < item.speech_end_ms <= item.audio.size * 1000 / RATE + 1


def test_synthetic_pauses_are_the_lengths_the_generator_inserted():
    for name in ("list_numbers-1", "comma_home-0", "hesitation_table-0"):
        rendition = _rendition(name)
        item = render(rendition)
        _check_labels(item)
        assert tuple(round(p.duration_ms) for p in item.pauses) == rendition.pauses_ms
        assert item.speech_end_ms == item.audio.size * 1000 / RATE  # it ends on its last voiced sample
        for pause in item.pauses:
            inside = item.audio[int(pause.start_ms * RATE / 1000):int(pause.end_ms * RATE / 1000)]
            level = 20 * np.log10(np.sqrt(np.mean(inside.astype(np.float64) ** 2)) + 1e-12)
            # Only the room noise (or digital silence) in the pause, speech right at both of its edges.
            assert (level < -200) if item.noise_dbfs is None else abs(level - item.noise_dbfs) < 1.5
            before = item.audio[int(pause.start_ms * RATE / 1000) - 160:int(pause.start_ms * RATE / 1000)]
            after = item.audio[int(pause.end_ms * RATE / 1000):int(pause.end_ms * RATE / 1000) + 160]
            assert voiced_frames(before).any() and voiced_frames(after).any()


def test_recording_labels_are_consistent():
    items = list(recorded_utterances())
    assert {"jfk", "sonnet001", "v2j-lamp"} <= {item.name for item in items}  # tests/data ones are always here
    for item in items:
        _check_labels(item)


def test_a_cut_is_put_on_the_pause_it_happened_in():
    item = render(_rendition("list_numbers-1"))
    mic = turn_taking.Microphone(client=None)  # type: ignore[arg-type] - only its clock is used
    mic.sent_at = [100.0 + k * turn_taking.FRAME_MS / 1000 for k in range(1000)]
    lead = turn_taking.LEAD_IN_MS
    speech_end = mic.time_of(lead + item.speech_end_ms)
    first, second = item.pauses
    events = [
        (mic.time_of(lead + first.start_ms + 500), {"type": "input_audio_buffer.speech_stopped",
                                                    "audio_end_ms": lead + first.start_ms + 40}),
        (speech_end + 0.4, {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": lead + item.speech_end_ms}),
        (speech_end + 0.5, {"type": "response.created", "response": {"id": "r"}}),
        (speech_end + 0.9, {"type": "response.output_audio.delta", "response_id": "r", "delta": ""}),
    ]
    result = turn_taking.score_utterance(item, events, mic)
    assert [cut["pause"] for cut in result["cuts"]] == [0]
    assert result["cuts"][0]["pause_ms"] == first.duration_ms
    assert abs(result["end_of_turn_ms"] - 400) < 1e-6 and abs(result["voice_to_voice_ms"] - 900) < 1e-6
    summary = turn_taking.summarise_utterances([result])
    assert summary["internal_pauses"] == 2 and summary["false_cut_offs"] == 1
    assert summary["false_cut_offs_per_100_pauses"] == 50.0


def test_a_smoke_run_scores_every_item_and_sound(voice_server, tmp_path):
    report = turn_taking.main(["--url", f"ws://127.0.0.1:{voice_server}/v1/realtime", "--items", *SMOKE_ITEMS,
                               "--sounds", "knock-synthetic", "backchannel_yeah", "interrupt_wait",
                               "--voices-per-sound", "1", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "turn_taking.json").read_text())["command"] == report["command"]
    assert "false cut-offs per 100" in (tmp_path / "turn_taking.md").read_text()
    per = report["per_utterance"]
    assert sorted(r["item"] for r in per) == sorted(SMOKE_ITEMS)
    for result in per:
        if result["source"] == "synthetic":  # the pauses it scored are the ones the generator inserted
            assert tuple(round(p["duration_ms"]) for p in result["pauses"]) == _rendition(result["item"]).pauses_ms
        assert (result["end_of_turn_ms"] is None) == (result["failure"] in ("no end of turn",
                                                                            "the utterance was not sent to its end"))
        for cut in result["cuts"]:
            assert cut["pause"] is None or result["pauses"][cut["pause"]]["duration_ms"] == cut["pause_ms"]
    summary = report["utterances"]
    assert summary["utterances"] == len(SMOKE_ITEMS)
    assert summary["internal_pauses"] == sum(1 for r in per for p in r["pauses"] if p["duration_ms"] >= 250)
    cuts = sum(len(r["cuts"]) for r in per)
    assert summary["false_cut_offs"] == cuts == sum(v["cuts"] for v in summary["by_pause_ms"].values()) \
        == sum(v["cuts"] for v in summary["by_kind"].values())
    assert sum(v["pauses"] for v in summary["by_pause_ms"].values()) == summary["internal_pauses"]
    assert summary["end_of_turn_ms"]["all"]["n"] + sum(
        n for f, n in summary["failures"].items() if f != "no reply audio") == len(SMOKE_ITEMS)
    trials = report["per_trial"]
    assert sorted(t["kind"] for t in trials) == ["backchannel", "interruption", "nonspeech"]
    for entry in report["interruptions"].values():
        assert entry["trials"] + entry["failed"] == 1
        assert entry["speech_started"] == entry["speech_started_ms"]["n"] <= entry["trials"]
        assert entry["reply_cancelled"] <= entry["trials"]


def test_rescoring_the_words_changes_only_their_column(tmp_path):
    from benchmarks import turn_signals
    from voice.end_of_turn import TextEnd
    from voice.models import gguf_model

    rows = turn_signals.read_rows(turn_signals.OUT / "turn_signals.csv")[:21]  # three pauses, seven probes each
    for row in rows:
        row["lm_end"] = "0.5"
    table = tmp_path / "in" / "turn_signals.csv"
    table.parent.mkdir()
    turn_signals.write_rows(table, rows)
    turn_signals.main(["--rescore-lm", str(table), "--out", str(tmp_path / "out"), "--signals", "lm_end"])
    rescored = turn_signals.read_rows(tmp_path / "out" / "turn_signals.csv")
    words = TextEnd(gguf_model(None))
    assert [float(r["lm_end"]) for r in rescored] == pytest.approx(
        [words.lm_probability(r["transcript"]) for r in rows], abs=0.02)
    assert [{k: v for k, v in r.items() if not k.startswith("lm_end")} for r in rescored] == \
        [{k: v for k, v in r.items() if not k.startswith("lm_end")} for r in rows]
    assert json.loads((tmp_path / "out" / "turn_signals.json").read_text())["command"].endswith("--signals lm_end")
