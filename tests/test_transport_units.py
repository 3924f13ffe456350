"""The connection's sans-I/O decisions: unread output over time, message size in bytes, idle and expiry.
Each is checked at the server's default limits (ConnectionLimits(), which `voice serve` passes on)."""

from __future__ import annotations

import json

from server.cli import build_parser
from server.connection import ConnectionLimits
from server.deadlines import EXPIRED, IDLE, SessionDeadlines
from server.message_size import message_bytes, oversized, peek_event_id
from server.slow_reader import SlowReaderWatch

DEFAULTS = ConnectionLimits()
MIB = 1024 * 1024


def test_voice_serve_passes_these_defaults_on():
    args = build_parser().parse_args(["serve"])
    assert (args.max_message_bytes, args.idle_timeout, args.max_session, args.max_send_buffer,
            args.max_buffer_seconds) == (DEFAULTS.max_message_bytes, DEFAULTS.idle_timeout_s, DEFAULTS.max_session_s,
                                         DEFAULTS.max_send_buffer_bytes, DEFAULTS.max_buffer_seconds)
    assert (DEFAULTS.max_message_bytes, DEFAULTS.idle_timeout_s, DEFAULTS.max_session_s,
            DEFAULTS.max_send_buffer_bytes, DEFAULTS.max_buffer_seconds) == (MIB, 300.0, 3600.0, 16 * MIB, 120.0)


# ---------------------------------------------------------------- unread output
def test_a_burst_that_drains_is_never_too_slow():
    watch = SlowReaderWatch(DEFAULTS.max_send_buffer_bytes, DEFAULTS.slow_client_grace_s)
    now = 0.0
    for _ in range(10_000):  # a burst far over the limit at every other sample, drained by the next
        assert not watch.too_slow(100 * MIB, now)
        assert not watch.too_slow(0, now + 0.25)
        now += 0.5


def test_unread_output_over_the_limit_for_the_grace_time_is_too_slow():
    watch = SlowReaderWatch(DEFAULTS.max_send_buffer_bytes, DEFAULTS.slow_client_grace_s)
    over = DEFAULTS.max_send_buffer_bytes + 1
    assert not watch.too_slow(over, 100.0)
    assert not watch.too_slow(over * 2, 100.0 + DEFAULTS.slow_client_grace_s - 0.01)
    assert watch.too_slow(over, 100.0 + DEFAULTS.slow_client_grace_s)


def test_a_dip_under_the_limit_starts_the_count_again():
    watch = SlowReaderWatch(64 * 1024, 5.0)
    assert not watch.too_slow(100_000, 0.0)
    assert not watch.too_slow(1_000, 4.0)
    assert not watch.too_slow(100_000, 6.0)
    assert not watch.too_slow(100_000, 10.9)
    assert watch.too_slow(100_000, 11.0)


# ---------------------------------------------------------------- message size
def test_the_message_limit_counts_utf8_bytes_not_characters():
    limit = DEFAULTS.max_message_bytes
    wide = json.dumps({"type": "session.update", "session": {"instructions": "é" * (limit // 2 + 1)}},
                      ensure_ascii=False)
    assert len(wide) < limit < message_bytes(wide, limit)
    assert oversized(wide, limit) is not None
    three_mb = json.dumps({"type": "session.update", "event_id": "big", "session": {
        "instructions": "語" * 1_000_000}}, ensure_ascii=False)  # 3 MB of UTF-8 in 1 M characters
    assert len(three_mb) < limit < len(three_mb.encode())
    error = oversized(three_mb, limit)
    assert error is not None and error.code == "message_too_large" and error.event_id == "big"
    assert oversized("é" * (limit // 2), limit) is None
    assert oversized(b"x" * (limit + 1), limit) is not None


def test_the_event_id_of_a_message_too_large_is_read_from_either_end():
    audio = "A" * 2 * MIB
    assert peek_event_id(json.dumps({"event_id": "first", "type": "x", "audio": audio})) == "first"
    assert peek_event_id(json.dumps({"type": "x", "audio": audio, "event_id": "last"})) == "last"
    assert peek_event_id(json.dumps({"type": "x", "audio": audio, "more": audio, "event_id": None})) is None
    assert peek_event_id(json.dumps({"type": "x", "audio": audio})) is None
    assert peek_event_id(b'{"event_id": "binary", "audio": "' + b"A" * MIB) == "binary"


# ---------------------------------------------------------------- idle and expiry
def test_an_idle_session_is_closed_after_the_default_300_s():
    deadlines = SessionDeadlines(DEFAULTS.idle_timeout_s, DEFAULTS.max_session_s, started=1000.0)
    assert deadlines.wait_s(1000.0) == 300.0
    assert deadlines.due(1299.9, busy=False) is None
    assert deadlines.due(1300.0, busy=False) == IDLE
    deadlines.heard(1300.0)  # had a message come just then
    assert deadlines.due(1599.0, busy=False) is None


def test_a_session_listening_to_a_reply_is_not_idle():
    deadlines = SessionDeadlines(DEFAULTS.idle_timeout_s, DEFAULTS.max_session_s, started=0.0)
    assert deadlines.due(300.0, busy=True) is None  # a reply under way: the idle clock starts again
    assert deadlines.wait_s(300.0) == 300.0
    assert deadlines.due(450.0, busy=False) is None
    assert deadlines.due(600.0, busy=False) == IDLE


def test_a_session_expires_at_the_default_3600_s_however_busy():
    deadlines = SessionDeadlines(DEFAULTS.idle_timeout_s, DEFAULTS.max_session_s, started=0.0)
    now = 0.0
    while now < 3599.0:
        deadlines.heard(now)
        assert deadlines.due(now, busy=True) is None
        now += 60.0
    assert deadlines.wait_s(3590.0) == 10.0  # the wait ends at the expiry, not a whole idle period later
    assert deadlines.due(3600.0, busy=True) == EXPIRED
    assert "3600 s" in deadlines.message(EXPIRED)
