"""The latency benchmark runs end to end (once, on one short clip); it asserts no timing."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.slow


def test_the_benchmark_runs_and_saves_its_results(tmp_path):
    result = subprocess.run([sys.executable, "-m", "benchmarks.latency", "--quick", "--out", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "latency.json").read_text())
    cascade = report["pipelines"]["cascade"]
    assert cascade["turns"] == 1 and cascade["failed"] == 0
    assert cascade["voice_to_voice_ms"]["median"] > 0
    assert set(cascade["stages_median_ms"]) >= {"end_of_turn_ms", "transcript_ms", "llm_first_token_ms"}
    assert cascade["wer"] is not None and report["offline_whisper_wer"] is not None
    assert "| cascade |" in (tmp_path / "latency.md").read_text()
    push_to_talk = report["pipelines"]["cascade-ptt"]  # committed at the end of speech, no silence window
    assert push_to_talk["turns"] == 1 and push_to_talk["failed"] == 0
    assert push_to_talk["voice_to_voice_ms"]["median"] > 0
    webrtc = report["pipelines"]["cascade-webrtc"]  # the same turns over WebRTC, beside the websocket's
    assert webrtc["turns"] == 1 and webrtc["failed"] == 0 and report["webrtc_over_websocket_median"] > 0
    for name in ("latency.png", "stages.png"):
        assert (tmp_path / name).stat().st_size > 1000


def test_the_soak_runs_and_reports_memory_between_rounds(tmp_path):
    clip = "06_ps_goforward.wav"
    result = subprocess.run([sys.executable, "-m", "benchmarks.soak", "--sessions", "2", "--minutes", "0.01",
                             "--clips", clip, "--turns-per-session", "1", "--out", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "soak.json").read_text())
    assert report["rounds"] == 1 and report["turns"] == 2 and report["failed"] == 0
    assert len(report["idle_samples"]) == 2  # after the warm-up round and after the round
    assert report["rss_idle_start_mb"] > 0 and "rss_idle_growth_percent" in report


def test_the_ab_comparison_serves_a_revision_beside_this_tree(tmp_path):
    clip = "06_ps_goforward.wav"
    result = subprocess.run([sys.executable, "-m", "benchmarks.ab", "--base", "HEAD", "--rounds", "1", "--clips", clip,
                             "--fresh-sessions", "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "ab.json").read_text())
    assert report["a"]["turns"] == report["b"]["turns"] == 1
    assert report["a"]["failed"] == report["b"]["failed"] == 0
    assert report["b_minus_a"]["pairs"] == report["b_minus_a_first_token"]["pairs"] == 1
    worktrees = subprocess.run(["git", "-C", str(ROOT), "worktree", "list"], capture_output=True, text=True).stdout
    assert len(worktrees.strip().splitlines()) == 1  # the base's checkout is removed again


def test_playback_stalls_are_the_waits_for_audio_not_yet_arrived():
    from benchmarks.turns import playback_stall_ms

    assert playback_stall_ms([]) == 0.0
    # 1 s of audio at t=0, the next second at t=0.5: playback never waits.
    assert playback_stall_ms([(0.0, 1.0), (0.5, 1.0)]) == 0.0
    # 0.3 s at t=0, then 0.2 s at t=0.5 and at t=0.6: a 200 ms wait, then none.
    assert abs(playback_stall_ms([(0.0, 0.3), (0.5, 0.2), (0.6, 0.2)]) - 200.0) < 1e-6


def test_the_adapter_benchmark_times_the_native_model_with_and_without_its_lora(tmp_path):
    from benchmarks import native_adapter
    from voice.native.adapter import write_adapter
    from voice.native.projector import NumpyProjector, ProjectorConfig

    a, b = np.full((2, 1536), 0.01, np.float32), np.full((576, 2), 0.01, np.float32)
    lora = {f"model.layers.{layer}.mlp.down_proj": (a, b) for layer in range(30)}
    write_adapter(tmp_path / "p.lora.gguf", lora, alpha=2.0, n_head=9, n_head_kv=3)
    projector = NumpyProjector.init(ProjectorConfig(hidden_dim=16, adapter="p.lora.gguf")).save(tmp_path / "p.npz")
    result = native_adapter.main(["--projector", str(projector), "--clips", "2", "--tokens", "4", "--repeats", "1",
                                  "--out", str(tmp_path)])
    assert (tmp_path / "native_adapter.json").is_file() and result["clips"] == 2
    for row in result["rows"]:
        assert row["plain"]["prompt_ms"] > 0 and row["adapter"]["per_token_ms"] > 0 and row["merged"]["prompt_ms"] > 0
    with pytest.raises(SystemExit, match="no LoRA adapter"):
        native_adapter.main(["--projector", str(NumpyProjector.init(ProjectorConfig(hidden_dim=16)).save(
            tmp_path / "plain.npz")), "--clips", "1", "--out", str(tmp_path)])


def test_the_llama_threads_benchmark_runs_every_case_and_saves(tmp_path):
    from benchmarks import llama_threads

    result = llama_threads.main(["--tokens", "4", "--repeats", "1", "--out", str(tmp_path)])
    assert (tmp_path / "llama_threads.json").is_file()
    assert set(result["summary"]) == set(llama_threads.CASES)
    assert all(case["per_token_ms"] > 0 and case["replies"] >= 1 for case in result["summary"].values())


def test_the_native_prefill_benchmark_compares_early_and_whole_turn_audio(tmp_path):
    from benchmarks import native_prefill

    result = native_prefill.main(["--clips", "2", "--synthetic", "1", "--repeats", "1", "--margins", "1.0",
                                  "--left-contexts", "1.5", "--out", str(tmp_path)])
    assert (tmp_path / "native_prefill.json").is_file()
    assert [row["kind"] for row in result["clips"]] == ["real", "real", "synthetic"]
    for row in result["clips"]:
        assert 0 < row["margin_1.0"]["early_positions"] < row["positions"]
        windowed = row[f"margin_{result['margin_in_use_s']}_left_1.5"]
        assert windowed["early_positions"] == row["margin_1.0"]["early_positions"] and windowed["repeat_loss"] > 0
        assert row["whole"]["repeat_loss"] > 0 and row["first_token_ms"]["early"] > 0


def test_fresh_sessions_give_every_turn_a_session_of_its_own(monkeypatch):
    import asyncio

    from benchmarks import latency

    calls: list[list[str]] = []

    async def run_session(url, clips, **options):
        calls.append(list(clips))
        return []

    monkeypatch.setattr(latency, "run_session", run_session)
    server = type("Server", (), {"url": "ws://unused"})()
    asyncio.run(latency.measure(server, ["a", "b"], 2, 0.0))
    assert calls == [["a", "b"], ["a", "b"]]  # one session a run, speaking every clip
    calls.clear()
    asyncio.run(latency.measure(server, ["a", "b"], 2, 0.0, fresh_sessions=True))
    assert calls == [["a"], ["b"], ["a"], ["b"]]


def test_the_tts_stream_benchmark_compares_both_variants_and_saves(tmp_path):
    from benchmarks import tts_stream

    replies = {"turns": {"cascade": [{"reply": "I'm glad to hear that. The lamp is on now, enjoy your evening."},
                                     {"reply": "Sure, I can help with that."}]}}
    (tmp_path / "latency.json").write_text(json.dumps(replies))
    assert tts_stream.reply_chunks(tmp_path / "latency.json", 5) == {
        "first": ["I'm glad to", "Sure,"], "later": ["hear that.", "The lamp is on now, enjoy your evening.",
                                                     "I can help with that."]}
    result = tts_stream.main(["--replies", str(tmp_path / "latency.json"), "--chunks", "2", "--repeats", "1",
                              "--out", str(tmp_path)])
    assert (tmp_path / "tts_stream.json").is_file()
    streamed, whole = result["summary"]["streamed"], result["summary"]["whole"]
    assert streamed["first"]["pieces_max_difference"] < 1e-4 and "pieces_max_difference" not in whole["first"]
    assert streamed["later"]["chunks"] == whole["later"]["chunks"] == 2
